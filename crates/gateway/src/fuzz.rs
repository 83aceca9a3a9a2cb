//! Property tests of the HTTP/1.1 relay's head parsers on untrusted input: request heads
//! come from any client, response heads from any instance (user code).
//!
//! Heads are built from parts — `content-length` fields that agree, disagree or do not
//! parse, transfer codings, `Connection` lists naming framing fields, zero, one or two
//! hosts, more fields than the relay takes — then mutated (bytes deleted, inserted,
//! duplicated, replaced, the head cut short), and fed whole and in pieces. Checks that
//! nothing panics and that what the relay passes on is what it promises: a response in the
//! framing it tells the client, never with both `content-length` and `transfer-encoding`,
//! its end-to-end fields intact; a request only with exactly one host and with its
//! `content-length` intact (a `Connection` field listing it removes nothing), without
//! hop-by-hop fields; the same answer however the bytes arrive.
//!
//! Deterministic: a fixed seed and no failure files (see [`config`]). The byte mutations
//! are shared with the property tests of [`crate::chunked`].

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed};

use crate::relay::{Framing, MAX_HEAD, MAX_HEADERS, Parsed, parse_request, parse_response};
use crate::{
    Gateway, GatewayError, GatewayMetrics, PoolConfig, RequestTimeouts, RevisionLabels, RevisionPool, Route, RouteKey,
    RoutingTable, Target,
};

/// A fixed seed, no failure files: the same cases on every run.
pub(crate) fn config(seed: u64, cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    }
}

/// Fragments inserted by mutations: line ends, separators, framing fields and bytes no
/// head may hold.
const FRAGMENTS: [&[u8]; 20] = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b":",
    b" ",
    b"\t",
    b",",
    b";",
    b"\0",
    b"\xff",
    b"0",
    b"f",
    b"chunked",
    b"content-length: 5\r\n",
    b"transfer-encoding: chunked\r\n",
    b"host: svc.ns.localhost\r\n",
    b"connection: content-length, host\r\n",
    b"0\r\n\r\n",
    b"ffffffffffffffff\r\n",
];

/// One change to a byte string; positions are taken modulo its length. `ReplaceDelimiter`
/// replaces the `nth` line end, colon, comma, semicolon or space.
#[derive(Debug, Clone)]
pub(crate) enum Mutation {
    Delete { at: usize, len: usize },
    Insert { at: usize, fragment: &'static [u8] },
    Duplicate { at: usize, len: usize },
    Replace { at: usize, byte: u8 },
    ReplaceDelimiter { nth: usize, byte: u8 },
    Truncate { at: usize },
}

const DELIMITERS: &[u8] = b"\r\n:,; ";

pub(crate) fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1usize..8).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), prop::sample::select(FRAGMENTS.to_vec()))
            .prop_map(|(at, fragment)| Mutation::Insert { at, fragment }),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| Mutation::Duplicate { at, len }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Replace { at, byte }),
        (any::<usize>(), prop::sample::select(b"\r\n\t :;,x0".to_vec()))
            .prop_map(|(nth, byte)| Mutation::ReplaceDelimiter { nth, byte }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

pub(crate) fn mutate(bytes: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    for mutation in mutations {
        let at = |at: usize, len: usize| at % (len + 1);
        match *mutation {
            Mutation::Delete { at: pos, len } => {
                let pos = at(pos, bytes.len());
                let end = (pos + len).min(bytes.len());
                bytes.drain(pos..end);
            }
            Mutation::Insert { at: pos, fragment } => {
                let pos = at(pos, bytes.len());
                bytes.splice(pos..pos, fragment.iter().copied());
            }
            Mutation::Duplicate { at: pos, len } => {
                let pos = at(pos, bytes.len());
                let end = (pos + len).min(bytes.len());
                let slice = bytes[pos..end].to_vec();
                bytes.splice(end..end, slice);
            }
            Mutation::Replace { at: pos, byte } => {
                if !bytes.is_empty() {
                    let pos = pos % bytes.len();
                    bytes[pos] = byte;
                }
            }
            Mutation::ReplaceDelimiter { nth, byte } => {
                let delimiters: Vec<usize> = (0..bytes.len()).filter(|&i| DELIMITERS.contains(&bytes[i])).collect();
                if !delimiters.is_empty() {
                    bytes[delimiters[nth % delimiters.len()]] = byte;
                }
            }
            Mutation::Truncate { at: pos } => bytes.truncate(at(pos, bytes.len())),
        }
    }
    bytes
}

/// Where to cut a byte string into pieces: sorted positions strictly inside it.
pub(crate) fn cuts(len: usize, at: &[Index]) -> Vec<usize> {
    let mut cuts: Vec<usize> = at.iter().map(|i| i.index(len + 1)).filter(|&c| c > 0 && c < len).collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

// ---------------------------------------------------------------------------------------
// Heads from parts.

/// `name` in a random mix of cases.
fn cased(name: &'static str) -> impl Strategy<Value = String> {
    (any::<u64>(), any::<bool>()).prop_map(move |(bits, lower)| {
        if lower {
            return name.to_owned();
        }
        name.chars()
            .enumerate()
            .map(|(i, c)| if (bits >> (i % 64)) & 1 == 1 { c.to_ascii_uppercase() } else { c })
            .collect()
    })
}

fn length_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0u64..100).prop_map(|n| n.to_string().into_bytes()),
        prop::sample::select(vec![
            "0",
            "5",
            "007",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999999",
            "-1",
            "+5",
            "5,5",
            "5, 6",
            " 5 ",
            "0x5",
            "5.0",
            "",
        ])
        .prop_map(|v| v.as_bytes().to_vec()),
    ]
}

fn codings() -> impl Strategy<Value = Vec<u8>> {
    let coding = prop::sample::select(vec!["chunked", "CHUNKED", "Chunked", "gzip", "identity", "deflate", "x", ""]);
    (prop::collection::vec(coding, 0..4), prop::sample::select(vec![",", ", ", " , ", ",,"]))
        .prop_map(|(codings, separator)| codings.join(separator).into_bytes())
}

const CONNECTION_TOKENS: [&str; 14] = [
    "close",
    "CLOSE",
    "keep-alive",
    "upgrade",
    "content-length",
    "Content-Length",
    "transfer-encoding",
    "host",
    "x-a",
    "x-forwarded-host",
    "te",
    "date",
    "expect",
    "",
];

fn connection_list() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(prop::sample::select(CONNECTION_TOKENS.to_vec()), 0..4),
        prop::sample::select(vec![",", ", "]),
    )
        .prop_map(|(tokens, separator)| tokens.join(separator).into_bytes())
}

fn plain_value() -> impl Strategy<Value = Vec<u8>> {
    "[ -~]{0,12}".prop_map(String::into_bytes)
}

/// Fields other than host that the relay takes: a `content-length` of `length`,
/// `Connection` lists, hop-by-hop and end-to-end fields.
fn field(length: u64) -> impl Strategy<Value = (String, Vec<u8>)> {
    let other = prop::sample::select(vec![
        "x-forwarded-host",
        "x-forwarded-for",
        "X-Forwarded-Proto",
        "forwarded",
        "te",
        "trailer",
        "keep-alive",
        "proxy-connection",
        "proxy-authorization",
        "x-a",
        "date",
        "accept",
    ]);
    prop_oneof![
        4 => (cased("content-length"), Just(length.to_string().into_bytes())),
        4 => (cased("connection"), connection_list()),
        1 => (cased("upgrade"), prop::sample::select(vec!["websocket", "h2c", ""]).prop_map(|v| v.as_bytes().to_vec())),
        8 => (other.prop_map(str::to_owned), plain_value()),
    ]
}

/// Framing fields the relay leaves to hyper (requests) or refuses (responses) — or, for a
/// response, frames the body by.
fn framing_field() -> impl Strategy<Value = (String, Vec<u8>)> {
    prop_oneof![
        2 => (cased("content-length"), length_value()),
        2 => (cased("transfer-encoding"), codings()),
        1 => (cased("expect"), Just(b"100-continue".to_vec())),
    ]
}

fn host_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => Just(b"svc.ns.localhost".to_vec()),
        1 => prop::sample::select(vec![
            "SVC.NS.LocalHost:8080",
            "svc.ns.localhost.",
            "svc.ns.localhost:x",
            "down.ns.localhost",
            "nope.ns.localhost",
            "example.com",
            "",
            "svc.ns.localhost, svc.ns.localhost",
        ])
        .prop_map(|v| v.as_bytes().to_vec()),
        1 => Just(b"svc\xff.ns.localhost".to_vec()),
    ]
}

/// Fields: some generated, `padding` filler fields (to pass the relay's limit of
/// [`MAX_HEADERS`]), and `inserted` ones at random places.
fn fields(inserted: Vec<((String, Vec<u8>), Index)>) -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let field = |length| prop_oneof![8 => field(length), 1 => framing_field()];
    let generated = (0u64..100).prop_flat_map(move |length| prop::collection::vec(field(length), 0..7));
    (generated, prop_oneof![8 => Just(0usize), 1 => 90usize..130]).prop_map(move |(mut fields, padding)| {
        for i in 0..padding {
            fields.push((format!("x-pad-{i}"), i.to_string().into_bytes()));
        }
        for (field, at) in &inserted {
            let at = at.index(fields.len() + 1);
            fields.insert(at, field.clone());
        }
        fields
    })
}

/// A head: start line, fields, empty line (bare LF line ends sometimes), then a few body bytes.
fn head(start_line: &str, fields: &[(String, Vec<u8>)], bare_lf: bool, after: &[u8]) -> Vec<u8> {
    let eol: &[u8] = if bare_lf { b"\n" } else { b"\r\n" };
    let mut head = start_line.as_bytes().to_vec();
    head.extend_from_slice(eol);
    for (name, value) in fields {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(eol);
    }
    head.extend_from_slice(eol);
    head.extend_from_slice(after);
    head
}

fn after_head() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..16),
        Just(b"5\r\nhello\r\n0\r\n\r\n".to_vec()),
        Just(b"GET /next HTTP/1.1\r\nhost: svc.ns.localhost\r\n\r\n".to_vec()),
    ]
}

/// Request heads, mostly for the routed service, with 0–2 hosts among the fields.
fn request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        8 => prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "get"]),
        1 => Just("CONNECT"),
    ];
    let target = prop_oneof![
        8 => prop::sample::select(vec![
            "/",
            "/a/b?c=d",
            "/f/ns/svc",
            "/f/ns/svc/x?y",
            "/f/ns/svc?q",
            "/f/ns/down/x",
            "/f//svc",
            "/b/ns/broker",
            "//x",
        ]),
        1 => prop::sample::select(vec!["*", "http://svc.ns.localhost/"]),
    ];
    let version = prop_oneof![6 => Just("HTTP/1.1"), 1 => Just("HTTP/1.0")];
    let hosts = prop_oneof![
        1 => Just(0usize),
        6 => Just(1usize),
        2 => Just(2usize),
    ]
    .prop_flat_map(|n| prop::collection::vec(((cased("host"), host_value()), any::<Index>()), n..=n));
    (method, target, version, hosts, any::<bool>(), after_head()).prop_flat_map(
        |(method, target, version, hosts, bare_lf, after)| {
            let start_line = format!("{method} {target} {version}");
            fields(hosts).prop_map(move |fields| head(&start_line, &fields, bare_lf, &after))
        },
    )
}

/// Requests the relay forwards, with `Connection` lists naming the framing fields (the
/// request smuggling that dropping a listed `content-length` allowed).
fn smuggling_attempt() -> impl Strategy<Value = Vec<u8>> {
    let method = prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]);
    let target = prop::sample::select(vec!["/", "/x", "/f/ns/svc/y"]);
    let listing = prop::collection::vec(
        prop::sample::select(vec![
            "content-length",
            "Content-Length",
            "CONTENT-LENGTH",
            "host",
            "transfer-encoding",
            "upgrade",
            "x-forwarded-host",
            "close",
            "keep-alive",
            "x-a",
        ]),
        1..4,
    )
    .prop_map(|tokens| (String::from("connection"), tokens.join(", ").into_bytes()));
    let others = prop::collection::vec((prop::sample::select(vec!["x-a", "accept", "te"]), plain_value()), 0..3)
        .prop_map(|fields| fields.into_iter().map(|(n, v)| (n.to_owned(), v)).collect::<Vec<_>>());
    (method, target, 0u64..10_000, 1usize..3, prop::collection::vec(listing, 1..3), others, any::<u64>()).prop_map(
        |(method, target, length, copies, listings, others, order)| {
            let mut fields = vec![(String::from("host"), b"svc.ns.localhost".to_vec())];
            fields.extend((0..copies).map(|_| (String::from("content-length"), length.to_string().into_bytes())));
            fields.extend(listings);
            fields.extend(others);
            // Some order of the fields (a rotation is enough to move the listings around).
            let rotation = (order % fields.len() as u64) as usize;
            fields.rotate_left(rotation);
            let mut input = head(&format!("{method} {target} HTTP/1.1"), &fields, false, b"");
            input.extend(std::iter::repeat_n(b'b', length.min(64) as usize));
            input
        },
    )
}

/// Response heads from an instance.
fn response() -> impl Strategy<Value = Vec<u8>> {
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]);
    let code = prop_oneof![
        3 => prop::sample::select(vec![100u16, 101, 103, 200, 200, 200, 204, 206, 304, 404, 500, 599]),
        1 => 0u16..1000,
    ];
    (version, code, "[A-Za-z ]{0,12}", any::<bool>(), after_head()).prop_flat_map(
        |(version, code, reason, bare_lf, after)| {
            let start_line = format!("{version} {code:03} {reason}");
            fields(Vec::new()).prop_map(move |fields| head(&start_line, &fields, bare_lf, &after))
        },
    )
}

/// Response heads that are mostly framing: several `content-length` (agreeing or not) and
/// `transfer-encoding` fields, and `Connection` lists naming them.
fn framed_response() -> impl Strategy<Value = Vec<u8>> {
    let version = prop_oneof![4 => Just("HTTP/1.1"), 1 => Just("HTTP/1.0")];
    let code = prop::sample::select(vec![200u16, 200, 200, 206, 404, 500, 204, 304, 101, 100]);
    let fields = (0u64..100).prop_flat_map(|length| {
        let field = prop_oneof![
            3 => (cased("content-length"), Just(length.to_string().into_bytes())),
            1 => (cased("content-length"), length_value()),
            4 => (cased("transfer-encoding"), codings()),
            2 => (cased("connection"), connection_list()),
            1 => (Just(String::from("x-a")), plain_value()),
        ];
        prop::collection::vec(field, 1..6)
    });
    (version, code, fields, after_head())
        .prop_map(|(version, code, fields, after)| head(&format!("{version} {code} Whatever"), &fields, false, &after))
}

// ---------------------------------------------------------------------------------------
// What a head says, read independently of the relay.

/// The tokens of comma-separated field values (none from a value that is not UTF-8).
fn tokens<'v>(values: impl IntoIterator<Item = &'v [u8]>) -> Vec<String> {
    values
        .into_iter()
        .flat_map(|v| std::str::from_utf8(v).unwrap_or_default().split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// A head's fields, names lower-cased, in order.
struct Fields(Vec<(String, Vec<u8>)>);

impl Fields {
    fn new(headers: &[httparse::Header<'_>]) -> Fields {
        Fields(headers.iter().map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec())).collect())
    }

    fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.0.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_slice())
    }

    fn has(&self, name: &str) -> bool {
        self.values(name).next().is_some()
    }

    /// `Some(None)`: no `content-length`; `Some(Some(n))`: all of them say `n`; `None`: one
    /// does not parse, or they disagree.
    fn content_length(&self) -> Option<Option<u64>> {
        let mut length = None;
        for value in self.values("content-length") {
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let n: u64 = std::str::from_utf8(value).ok()?.parse().ok()?;
            if length.is_some_and(|m| m != n) {
                return None;
            }
            length = Some(n);
        }
        Some(length)
    }

    /// The field names `Connection` lists (besides `close` and `keep-alive`), and whether
    /// it says `close`.
    fn connection(&self) -> (Vec<String>, bool) {
        let tokens = tokens(self.values("connection"));
        let close = tokens.iter().any(|t| t == "close");
        (tokens.into_iter().filter(|t| t != "close" && t != "keep-alive").collect(), close)
    }

    /// Whether the transfer codings end with chunked: read as one list (RFC 9110 §5.3),
    /// and as the last field alone (as hyper reads them). `None` without codings.
    fn chunked(&self) -> Option<(bool, bool)> {
        let last = self.values("transfer-encoding").last()?;
        let as_list = tokens(self.values("transfer-encoding")).last().is_some_and(|c| c == "chunked");
        let last_field = tokens([last]).last().is_some_and(|c| c == "chunked");
        Some((as_list, last_field))
    }
}

/// Hop-by-hop fields (RFC 9110 §7.6.1 and the usual extras).
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Fields a `Connection` list never removes: they frame or address the message.
const FRAMING: [&str; 4] = ["content-length", "transfer-encoding", "host", "upgrade"];

/// Whether a field listed by `Connection` (or hop-by-hop) stays behind.
fn dropped(name: &str, listed: &[String]) -> bool {
    HOP_BY_HOP.contains(&name) || (listed.iter().any(|l| l == name) && !FRAMING.contains(&name))
}

/// Whether a request field is a client's claim about earlier hops, which never passes.
fn forwarding_claim(name: &str) -> bool {
    name == "forwarded" || name.starts_with("x-forwarded-")
}

// ---------------------------------------------------------------------------------------
// Responses.

/// What [`parse_response`] made of a buffer, for comparing runs.
#[derive(Debug, PartialEq)]
enum ResponseOutcome {
    Incomplete,
    Refused,
    Head { code: u16, framing: Framing, reusable: bool, out: Vec<u8>, rest: Vec<u8> },
}

fn run_response(input: &[u8], head_only: bool) -> ResponseOutcome {
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    match parse_response(&mut buf, head_only, &mut out) {
        Ok(None) => ResponseOutcome::Incomplete,
        Err(_) => ResponseOutcome::Refused,
        Ok(Some(head)) => ResponseOutcome::Head {
            code: head.code,
            framing: head.framing,
            reusable: head.reusable,
            out,
            rest: buf.to_vec(),
        },
    }
}

/// Parses the response head in `input` whole, checks the result against the head's own
/// fields, then feeds the same bytes in pieces (as they come off a socket): each prefix is
/// incomplete or gets the same answer.
fn check_response(input: &[u8], head_only: bool, pieces: &[Index]) -> Result<(), TestCaseError> {
    let mut buf = BytesMut::from(input);
    let mut out = Vec::new();
    let result = parse_response(&mut buf, head_only, &mut out);

    let mut slots = vec![httparse::EMPTY_HEADER; 4096];
    let mut model = httparse::Response::new(&mut slots);
    let head_len = match model.parse(input) {
        Err(_) => {
            prop_assert!(result.is_err(), "a response head that does not parse was taken");
            return Ok(());
        }
        Ok(httparse::Status::Partial) => {
            let lines = input.iter().filter(|&&b| b == b'\n').count();
            match result {
                Ok(None) => prop_assert!(input.len() < MAX_HEAD, "an incomplete head past {} bytes waits", MAX_HEAD),
                Ok(Some(_)) => return Err(TestCaseError::fail("an incomplete head was taken")),
                Err(_) => prop_assert!(
                    input.len() >= MAX_HEAD || lines > MAX_HEADERS,
                    "an incomplete head that may still turn out fine was refused"
                ),
            }
            prop_assert_eq!(&buf[..], input, "nothing is consumed before the head is complete");
            prop_assert!(out.is_empty(), "nothing is written before the head is complete");
            return Ok(());
        }
        Ok(httparse::Status::Complete(n)) => n,
    };
    let code = model.code.unwrap_or_default();
    let version = model.version;
    let fields = Fields::new(model.headers);
    let length = fields.content_length();
    let head = match result {
        Err(_) => {
            prop_assert!(
                fields.0.len() > MAX_HEADERS || length.is_none() || code < 100,
                "a response head with at most {} fields, a sound content-length and a valid status was refused",
                MAX_HEADERS
            );
            prop_assert_eq!(&buf[..], input, "a refused head is not consumed");
            return Ok(());
        }
        Ok(None) => return Err(TestCaseError::fail("a complete response head reported incomplete")),
        Ok(Some(head)) => head,
    };
    prop_assert!(fields.0.len() <= MAX_HEADERS, "a head with {} fields was taken", fields.0.len());
    prop_assert!(code >= 100, "status {} was taken", code);
    let Some(length) = length else {
        return Err(TestCaseError::fail("a response with an invalid or conflicting content-length was taken"));
    };
    prop_assert_eq!(head.code, code);
    prop_assert_eq!(&buf[..], &input[head_len..], "exactly the head is consumed");

    // The framing the relay copies the body by follows from the fields.
    let no_body = head_only || code == 204 || code == 304 || (100..200).contains(&code);
    let chunked = fields.chunked();
    match head.framing {
        Framing::Empty => prop_assert!(no_body, "a body-less framing for a response with a body"),
        Framing::Chunked => {
            prop_assert!(!no_body, "a chunked body for a response without one");
            prop_assert_eq!(chunked, Some((true, true)), "chunked framing when the last coding is not chunked");
        }
        Framing::Length(n) => {
            prop_assert!(!no_body, "a body for a response without one");
            prop_assert!(chunked.is_none(), "content-length framing beside a transfer coding");
            prop_assert_eq!(length, Some(n));
        }
        Framing::UntilClose => {
            prop_assert!(!no_body, "a close-delimited body for a response without one");
            // Read until close when the codings do not end with chunked however they are
            // read, or when nothing frames the body.
            prop_assert!(chunked != Some((true, true)), "a chunked body taken as close-delimited");
            prop_assert!(chunked.is_some() || length.is_none(), "a content-length body taken as close-delimited");
        }
    }
    let (listed, close) = fields.connection();
    prop_assert_eq!(head.reusable, version == Some(1) && !close && head.framing != Framing::UntilClose);

    // The head the client gets: well-formed, the instance's end-to-end fields in order, the
    // framing fields the relay copies by, nothing hop-by-hop.
    let mut client = out.clone();
    client.extend_from_slice(b"\r\n");
    let mut slots = vec![httparse::EMPTY_HEADER; 4096];
    let mut rewritten = httparse::Response::new(&mut slots);
    prop_assert_eq!(
        rewritten.parse(&client).ok(),
        Some(httparse::Status::Complete(client.len())),
        "the rewritten head does not parse: {:?}",
        String::from_utf8_lossy(&client)
    );
    prop_assert_eq!(rewritten.code, Some(code));
    prop_assert_eq!(rewritten.version, Some(1));
    let sent = Fields::new(rewritten.headers);
    prop_assert!(
        !(sent.has("content-length") && sent.has("transfer-encoding")),
        "content-length and transfer-encoding both sent: {:?}",
        String::from_utf8_lossy(&client)
    );
    let mut expected: Vec<(String, Vec<u8>)> = fields
        .0
        .iter()
        .filter(|(name, _)| match name.as_str() {
            "transfer-encoding" => true,
            "content-length" => chunked.is_none(),
            "upgrade" => code == 101,
            name => !dropped(name, &listed),
        })
        .cloned()
        .collect();
    if code == 101 {
        expected.push(("connection".into(), b"upgrade".to_vec()));
    }
    prop_assert_eq!(&sent.0, &expected, "fields sent: {:?}", String::from_utf8_lossy(&client));
    // The client reads the body the way the relay copies it.
    if !no_body {
        let client_framing = match (sent.chunked(), sent.content_length()) {
            (Some((true, true)), _) => Framing::Chunked,
            (Some(_), _) => Framing::UntilClose,
            (None, Some(Some(n))) => Framing::Length(n),
            (None, _) => Framing::UntilClose,
        };
        prop_assert_eq!(client_framing, head.framing);
    }
    prop_assert!(out.len() <= 2 * head_len + 64, "{} bytes written for a head of {}", out.len(), head_len);

    // The same bytes as they come: each prefix waits, or gets the same answer.
    let whole = run_response(input, head_only);
    let mut upto = cuts(input.len(), pieces);
    upto.push(input.len());
    for end in upto {
        let outcome = run_response(&input[..end], head_only);
        if outcome == ResponseOutcome::Incomplete {
            continue;
        }
        if outcome == ResponseOutcome::Refused && end < input.len() && end >= MAX_HEAD {
            break; // still incomplete at the limit: refused as it would be off a socket
        }
        // A head cut inside its fields' count may be refused for them; otherwise the answer
        // is the one for the whole input, up to the body bytes that had come.
        if let (ResponseOutcome::Head { rest, .. }, ResponseOutcome::Head { rest: whole_rest, .. }) = (&outcome, &whole)
        {
            prop_assert!(whole_rest.starts_with(rest));
            let trimmed = |o: &ResponseOutcome| match o {
                ResponseOutcome::Head { code, framing, reusable, out, .. } => {
                    Some((*code, *framing, *reusable, out.clone()))
                }
                _ => None,
            };
            prop_assert_eq!(trimmed(&outcome), trimmed(&whole), "a prefix of {} bytes", end);
        } else {
            prop_assert_eq!(&outcome, &whole, "a prefix of {} bytes", end);
        }
        break;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Requests.

/// A gateway routing `svc.ns.localhost` (and `/f/ns/svc/…`) to a pool with no instances,
/// and `down` to nothing.
fn gateway() -> Arc<Gateway> {
    let routes = Arc::new(RoutingTable::new("localhost"));
    let pool = RevisionPool::new(
        RevisionLabels::new("ns", "svc", "svc-00001"),
        PoolConfig {
            container_concurrency: 0,
            nominal_capacity: 100,
            timeouts: RequestTimeouts::total(Duration::from_secs(5)),
            h2c: false,
            in_process: false,
        },
    );
    routes.set(RouteKey { namespace: "ns".into(), service: "svc".into() }, Some(Route::single(Target::Pool(pool))));
    routes.set(
        RouteKey { namespace: "ns".into(), service: "down".into() },
        Some(Route::single(Target::Unavailable("no instances".into()))),
    );
    Arc::new(Gateway::new(routes, Arc::new(GatewayMetrics::default())))
}

const FORWARDED_FOR: &str = "192.0.2.7";

/// What [`parse_request`] made of a buffer, for comparing runs.
#[derive(Debug, PartialEq)]
enum RequestOutcome {
    Incomplete,
    HandOff,
    /// Answered by the gateway (status), the head and body length skipped.
    Answered {
        head_len: usize,
        status: u16,
        body_len: u64,
        close: bool,
    },
    Forwarded {
        head_len: usize,
        upstream: Vec<u8>,
        body_len: u64,
        close: bool,
        head_only: bool,
        upgrade: bool,
    },
}

fn run_request(gateway: &Gateway, input: &[u8]) -> RequestOutcome {
    let mut upstream = Vec::new();
    match parse_request(gateway, input, FORWARDED_FOR, &mut upstream) {
        Parsed::Incomplete => RequestOutcome::Incomplete,
        Parsed::HandOff => RequestOutcome::HandOff,
        Parsed::Request(r) => match r.route {
            Ok(_) => RequestOutcome::Forwarded {
                head_len: r.head_len,
                upstream,
                body_len: r.facts.body_len,
                close: r.facts.close,
                head_only: r.facts.head_only,
                upgrade: r.facts.upgrade,
            },
            Err(unrouted) => RequestOutcome::Answered {
                head_len: r.head_len,
                status: unrouted.0.status().as_u16(),
                body_len: r.facts.body_len,
                close: r.facts.close,
            },
        },
    }
}

/// Whether `host` names the routed service (`svc.ns.localhost`, any case, a port, a final dot).
fn names_svc(host: &[u8]) -> bool {
    let Ok(host) = std::str::from_utf8(host) else { return false };
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    host.strip_suffix('.').unwrap_or(host).eq_ignore_ascii_case("svc.ns.localhost")
}

/// Parses the request head in `input` whole, checks the result against the head's own
/// fields, then feeds the same bytes in pieces: each prefix is incomplete or gets the same
/// answer.
fn check_request(gateway: &Gateway, input: &[u8], pieces: &[Index]) -> Result<(), TestCaseError> {
    let mut upstream = Vec::new();
    let parsed = parse_request(gateway, input, FORWARDED_FOR, &mut upstream);

    let mut slots = vec![httparse::EMPTY_HEADER; 4096];
    let mut model = httparse::Request::new(&mut slots);
    let modelled = model.parse(input);
    let request = match parsed {
        Parsed::Incomplete => {
            prop_assert_eq!(modelled.ok(), Some(httparse::Status::Partial), "a complete or broken head waits");
            return Ok(());
        }
        Parsed::HandOff => {
            // Anything may go to hyper; but a plain request for the service must not.
            if let Ok(httparse::Status::Complete(_)) = modelled {
                let fields = Fields::new(model.headers);
                let hosts: Vec<&[u8]> = fields.values("host").collect();
                let plain = model.version == Some(1)
                    && model.method.is_some_and(|m| m != "CONNECT")
                    && model.path.is_some_and(|p| p.starts_with('/'))
                    && fields.0.len() <= MAX_HEADERS
                    && hosts.len() == 1
                    && names_svc(hosts[0])
                    && !fields.has("transfer-encoding")
                    && !fields.has("expect")
                    && fields.content_length().is_some_and(|l| !fields.has("upgrade") || l.unwrap_or(0) == 0);
                prop_assert!(!plain, "a plain request for the service was handed off");
            }
            return Ok(());
        }
        Parsed::Request(request) => request,
    };
    let Ok(httparse::Status::Complete(head_len)) = modelled else {
        return Err(TestCaseError::fail(format!("a head that is not complete was taken: {modelled:?}")));
    };
    prop_assert_eq!(request.head_len, head_len);
    let fields = Fields::new(model.headers);
    let hosts: Vec<&[u8]> = fields.values("host").collect();
    let facts = request.facts;
    match request.route {
        Err(unrouted) => {
            if matches!(unrouted.0, GatewayError::BadRequest(_)) {
                prop_assert!(hosts.len() != 1, "a request with one host refused: {}", unrouted.0);
                // Its body is never read, so none of it can be taken for a request.
                prop_assert!(facts.close && facts.body_len == 0, "a refused request's body would be read");
            }
        }
        Ok(_) => {
            // Only HTTP/1.1 requests with exactly one host, framed by a content-length, go on.
            prop_assert_eq!(model.version, Some(1), "an HTTP/1.0 request was forwarded");
            prop_assert_eq!(hosts.len(), 1, "a request with {} host fields was forwarded", hosts.len());
            prop_assert!(!fields.has("transfer-encoding"), "a request with a transfer coding was forwarded");
            prop_assert!(!fields.has("expect"), "a request with expect was forwarded");
            let Some(length) = fields.content_length() else {
                return Err(TestCaseError::fail(
                    "a request with an invalid or conflicting content-length was forwarded",
                ));
            };
            prop_assert_eq!(facts.body_len, length.unwrap_or(0));
            let method = model.method.unwrap_or_default();
            let upgrade = fields.values("upgrade").last();
            let (listed, close) = fields.connection();
            prop_assert_eq!(facts.close, close);
            prop_assert_eq!(facts.head_only, method == "HEAD");
            prop_assert_eq!(facts.upgrade, upgrade.is_some());
            prop_assert!(upgrade.is_none() || facts.body_len == 0, "an upgrade with a body was forwarded");

            let mut sent = upstream.clone();
            sent.extend_from_slice(b"\r\n");
            let mut slots = vec![httparse::EMPTY_HEADER; 4096];
            let mut rewritten = httparse::Request::new(&mut slots);
            prop_assert_eq!(
                rewritten.parse(&sent).ok(),
                Some(httparse::Status::Complete(sent.len())),
                "the instance's head does not parse: {:?}",
                String::from_utf8_lossy(&sent)
            );
            prop_assert_eq!(rewritten.method, Some(method));
            prop_assert_eq!(rewritten.version, Some(1));
            prop_assert!(rewritten.path.is_some_and(|p| p.starts_with('/')));
            let sent_fields = Fields::new(rewritten.headers);
            // The smuggling hole: a `Connection` listing never removes the framing.
            prop_assert_eq!(
                sent_fields.content_length(),
                Some(length),
                "content-length changed on the way: {:?}",
                String::from_utf8_lossy(&sent)
            );
            prop_assert_eq!(
                sent_fields.values("content-length").count(),
                fields.values("content-length").count(),
                "content-length fields dropped"
            );
            prop_assert_eq!(sent_fields.values("host").collect::<Vec<_>>(), hosts.clone(), "host changed");
            let mut expected: Vec<(String, Vec<u8>)> = fields
                .0
                .iter()
                .filter(|(name, _)| !dropped(name, &listed) && !forwarding_claim(name))
                .cloned()
                .collect();
            if let Some(protocols) = upgrade {
                expected.push(("upgrade".into(), protocols.to_vec()));
                expected.push(("connection".into(), b"upgrade".to_vec()));
            }
            expected.push(("x-forwarded-for".into(), FORWARDED_FOR.as_bytes().to_vec()));
            expected.push(("x-forwarded-host".into(), hosts[0].to_vec()));
            expected.push(("x-forwarded-proto".into(), b"http".to_vec()));
            prop_assert_eq!(&sent_fields.0, &expected, "fields sent: {:?}", String::from_utf8_lossy(&sent));
        }
    }

    // The same bytes as they come: each prefix waits, or gets the same answer.
    let whole = run_request(gateway, input);
    let mut upto = cuts(input.len(), pieces);
    upto.push(input.len());
    for end in upto {
        let outcome = run_request(gateway, &input[..end]);
        if outcome != RequestOutcome::Incomplete {
            prop_assert_eq!(&outcome, &whole, "a prefix of {} bytes", end);
            break;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(0x5E_2E1A, 256))]

    #[test]
    fn generated_requests(input in request(), pieces in prop::collection::vec(any::<Index>(), 0..4)) {
        check_request(&gateway(), &input, &pieces)?;
    }

    #[test]
    fn mutated_requests(
        input in request(),
        mutations in prop::collection::vec(mutation(), 1..6),
        pieces in prop::collection::vec(any::<Index>(), 0..4),
    ) {
        check_request(&gateway(), &mutate(&input, &mutations), &pieces)?;
    }

    #[test]
    fn connection_lists_never_unframe_requests(
        input in smuggling_attempt(),
        pieces in prop::collection::vec(any::<Index>(), 0..4),
    ) {
        let gateway = gateway();
        check_request(&gateway, &input, &pieces)?;
        let forwarded = matches!(run_request(&gateway, &input), RequestOutcome::Forwarded { .. });
        prop_assert!(forwarded, "not forwarded: {:?}", String::from_utf8_lossy(&input));
    }

    #[test]
    fn arbitrary_request_bytes(
        start in prop::sample::select(vec!["", "GET / HTTP/1.1\r\n", "GET / HTTP/1.1\r\nhost: svc.ns.localhost\r\n"]),
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut input = start.as_bytes().to_vec();
        input.extend_from_slice(&bytes);
        check_request(&gateway(), &input, &[])?;
    }

    #[test]
    fn generated_responses(
        input in response(),
        head_only in any::<bool>(),
        pieces in prop::collection::vec(any::<Index>(), 0..4),
    ) {
        check_response(&input, head_only, &pieces)?;
    }

    #[test]
    fn response_framing(
        input in framed_response(),
        head_only in any::<bool>(),
        pieces in prop::collection::vec(any::<Index>(), 0..4),
    ) {
        check_response(&input, head_only, &pieces)?;
    }

    #[test]
    fn mutated_responses(
        input in response(),
        head_only in any::<bool>(),
        mutations in prop::collection::vec(mutation(), 1..6),
        pieces in prop::collection::vec(any::<Index>(), 0..4),
    ) {
        check_response(&mutate(&input, &mutations), head_only, &pieces)?;
    }

    #[test]
    fn arbitrary_response_bytes(
        start in prop::sample::select(vec!["", "HTTP/1.1 200 OK\r\n"]),
        bytes in prop::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut input = start.as_bytes().to_vec();
        input.extend_from_slice(&bytes);
        check_response(&input, false, &[])?;
    }
}

proptest! {
    #![proptest_config(config(0x5E_2E1B, 32))]

    /// Heads around the relay's size limit, complete or not: a response head never makes
    /// the relay wait for more than [`MAX_HEAD`] bytes.
    #[test]
    fn heads_around_the_size_limit(
        size in (MAX_HEAD - 64)..(MAX_HEAD + 64),
        complete in any::<bool>(),
        pieces in prop::collection::vec(any::<Index>(), 0..3),
    ) {
        let mut response = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-big: ".to_vec();
        response.resize(size, b'a');
        if complete {
            response.extend_from_slice(b"\r\n\r\n");
        }
        check_response(&response, false, &pieces)?;
        let mut request = b"GET / HTTP/1.1\r\nhost: svc.ns.localhost\r\nx-big: ".to_vec();
        request.resize(size, b'a');
        if complete {
            request.extend_from_slice(b"\r\n\r\n");
        }
        check_request(&gateway(), &request, &pieces)?;
    }
}
