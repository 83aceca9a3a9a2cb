//! How a request is rewritten on its way from a client to an instance, and when it may be
//! sent again: the rules both paths of the data plane follow — the HTTP/1.1 relay
//! ([`crate::relay`], on raw header bytes) and the hyper path ([`crate::proxy`], on header
//! maps). Each rule is a small pure function of names and values, so that the relay applies
//! it without building a header map and the hyper path without a second copy of it:
//!
//! - which fields stay behind: the hop-by-hop ones, those a `Connection` field lists (but
//!   never a framing field), and a client's forwarding claims ([`drops_request_field`]);
//! - what the gateway adds: `x-forwarded-for`, `x-forwarded-host`, `x-forwarded-proto`
//!   ([`Forwarding`]), and the `Host` of a request that came without one ([`upstream_host`]);
//! - the target an instance sees under path routing (`/f/<ns>/<service>` stripped,
//!   [`stripped_target`]);
//! - which requests go out again on a new connection when a kept-alive one fails before
//!   any byte of an answer ([`may_retry`]).
//!
//! Sans-IO: nothing here reads, writes or allocates per field.

/// Header fields that describe one connection and are never forwarded (RFC 9110 §7.6.1),
/// lowercase.
pub(crate) const HOP_BY_HOP: [&str; 9] = [
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

/// Fields that frame or address a message. A `Connection` field that lists one of them
/// removes nothing: dropping `content-length` after reading a body by it would hand the
/// body to the instance as a request of its own (request smuggling).
const NEVER_LISTED: [&str; 4] = ["content-length", "transfer-encoding", "host", "upgrade"];

/// Whether `name` is a hop-by-hop field ([`HOP_BY_HOP`]), in any case.
pub(crate) fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// The tokens of comma-separated field values (`Connection`, `Transfer-Encoding`), trimmed.
pub(crate) fn list_tokens<'v>(values: impl IntoIterator<Item = &'v [u8]>) -> impl Iterator<Item = &'v str> {
    values
        .into_iter()
        .flat_map(|v| std::str::from_utf8(v).unwrap_or_default().split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// What a message's `Connection` fields say.
#[derive(Debug, Default)]
pub(crate) struct ConnectionOptions<'v> {
    /// The field names listed besides `close` and `keep-alive` (hop-by-hop anyway) and the
    /// framing fields no listing removes ([`NEVER_LISTED`]); in the case they were sent.
    pub(crate) listed: Vec<&'v str>,
    /// `close`: the sender closes the connection after this message.
    pub(crate) close: bool,
}

impl<'v> ConnectionOptions<'v> {
    /// Reads the values of a message's `Connection` fields (allocates only when one lists a
    /// field).
    pub(crate) fn parse(values: impl IntoIterator<Item = &'v [u8]>) -> Self {
        let mut options = ConnectionOptions::default();
        for token in list_tokens(values) {
            if token.eq_ignore_ascii_case("close") {
                options.close = true;
            } else if !token.eq_ignore_ascii_case("keep-alive")
                && !NEVER_LISTED.iter().any(|f| f.eq_ignore_ascii_case(token))
            {
                options.listed.push(token);
            }
        }
        options
    }

    /// Whether the `Connection` fields listed `name` (so that it stays behind).
    pub(crate) fn lists(&self, name: &str) -> bool {
        self.listed.iter().any(|l| l.eq_ignore_ascii_case(name))
    }
}

/// Whether `name` is a claim about earlier hops: `forwarded` (RFC 7239) or `x-forwarded-*`.
/// The gateway is where clients' connections end, so it believes no client's claims: an
/// instance reads the gateway's own `x-forwarded-*` ([`Forwarding`]) and nothing a client
/// made up (a forged `x-forwarded-for` beside the gateway's would pass for an earlier hop).
pub(crate) fn is_forwarding_field(name: &str) -> bool {
    const X_FORWARDED: &str = "x-forwarded-";
    name.eq_ignore_ascii_case("forwarded")
        || name.get(..X_FORWARDED.len()).is_some_and(|p| p.eq_ignore_ascii_case(X_FORWARDED))
}

/// Whether a field of a client's request stays behind: hop-by-hop, listed by the request's
/// `Connection` fields, or a forwarding claim. (An upgrade's own `Upgrade` and `Connection`
/// are put back by the path that tunnels it.)
pub(crate) fn drops_request_field(name: &str, connection: &ConnectionOptions<'_>) -> bool {
    is_hop_by_hop(name) || connection.lists(name) || is_forwarding_field(name)
}

/// Whether a field of an instance's response stays behind: hop-by-hop or listed by the
/// response's `Connection` fields. (How the body is framed for the client is up to the
/// path: the relay keeps the instance's framing, hyper frames anew.)
pub(crate) fn drops_response_field(name: &str, connection: &ConnectionOptions<'_>) -> bool {
    is_hop_by_hop(name) || connection.lists(name)
}

/// The forwarding fields the gateway adds to every request it forwards to an instance,
/// after the client's fields (which carry none: see [`is_forwarding_field`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Forwarding<'a> {
    /// `x-forwarded-for`: the client's address, as the gateway's connection saw it.
    pub(crate) client: &'a str,
    /// `x-forwarded-host`: the host the client asked for (see [`original_host`]); none when
    /// it named none.
    pub(crate) host: Option<&'a str>,
}

/// The scheme of every request the gateway receives: its listeners speak plain HTTP (and
/// h2c); TLS, if any, ends before them.
pub(crate) const FORWARDED_PROTO: &str = "http";

impl<'a> Forwarding<'a> {
    /// The fields, in the order they go out.
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&'static str, &'a str)> {
        [
            Some(("x-forwarded-for", self.client)),
            self.host.map(|h| ("x-forwarded-host", h)),
            Some(("x-forwarded-proto", FORWARDED_PROTO)),
        ]
        .into_iter()
        .flatten()
    }
}

/// The host a client asked for: the authority of its request target when it has one
/// (HTTP/2's `:authority`, an HTTP/1.1 absolute-form target: RFC 9112 §3.2.2 has a proxy
/// ignore the `Host` field then, RFC 9113 §8.3.1 has the two agree), else its `Host` field;
/// `None` when it named none (HTTP/1.0). Requests are routed by it, and it is the `Host`
/// (or `:authority`) the instance gets.
pub(crate) fn original_host<'a>(host_field: Option<&'a str>, authority: Option<&'a str>) -> Option<&'a str> {
    authority.or(host_field)
}

/// The `Host` an instance gets: the host the client asked for ([`original_host`]), else
/// (HTTP/1.0 without one) the instance's own address — HTTP/1.1 requires a `Host`.
pub(crate) fn upstream_host<'a>(original: Option<&'a str>, instance: &'a str) -> &'a str {
    original.unwrap_or(instance)
}

/// The request target an instance gets under path routing, as two pieces to join: what is
/// left after the `/f/<ns>/<service>` prefix (query included), with a `/` in front when it
/// does not start with one (`/f/ns/svc` and `/f/ns/svc?q` are `/` and `/?q`).
pub(crate) fn stripped_target(rest: &str) -> (&'static str, &str) {
    if rest.starts_with('/') { ("", rest) } else { ("/", rest) }
}

/// Methods whose requests can be repeated without a different effect (RFC 9110 §9.2.2).
pub(crate) fn is_idempotent(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE")
}

/// How far a request got on a connection that then failed before any byte of an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unanswered {
    /// Nothing of it was written: the connection was found closed first, or the first
    /// write failed.
    NotSent,
    /// Some or all of it went out; the instance may have acted on it.
    Sent,
}

/// Whether a request goes out again, on another connection, after `failure`: only when the
/// connection was a kept-alive one (`reused`: an instance closes those when it likes, and a
/// request can meet the close); a new connection's failure is the instance's answer. A
/// request nothing of which was sent always goes again; one that went out only when its
/// method is idempotent ([`is_idempotent`]) and its whole body is still at hand
/// (`body_in_hand`: none, or all of it read before sending), so that the same request can
/// be sent.
pub(crate) fn may_retry(reused: bool, failure: Unanswered, idempotent: bool, body_in_hand: bool) -> bool {
    reused
        && match failure {
            Unanswered::NotSent => true,
            Unanswered::Sent => body_in_hand && idempotent,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_lists_remove_fields_but_never_framing() {
        let options = ConnectionOptions::parse([&b"keep-alive, X-Secret"[..], b"close,Content-Length, host,, Upgrade"]);
        assert!(options.close);
        assert_eq!(options.listed, ["X-Secret"]);
        assert!(drops_request_field("x-secret", &options));
        for kept in ["content-length", "host", "x-kept"] {
            assert!(!drops_request_field(kept, &options), "{kept}");
        }
        for hop in ["Connection", "TE", "transfer-encoding", "upgrade", "Keep-Alive"] {
            assert!(drops_request_field(hop, &options) && drops_response_field(hop, &options), "{hop}");
        }
    }

    #[test]
    fn every_forwarding_claim_of_a_client_stays_behind() {
        let none = ConnectionOptions::default();
        for claim in ["X-Forwarded-For", "x-forwarded-host", "x-forwarded-proto", "X-FORWARDED-PORT", "Forwarded"] {
            assert!(drops_request_field(claim, &none), "{claim}");
            assert!(!drops_response_field(claim, &none), "{claim}: an instance's answer is its own");
        }
        for kept in ["x-forwarded", "forwarded-for", "x-real-ip", "x"] {
            assert!(!drops_request_field(kept, &none), "{kept}");
        }
    }

    #[test]
    fn forwarding_fields_and_host_fallback() {
        let host = original_host(None, Some("svc.ns.localhost"));
        let fields: Vec<_> = Forwarding { client: "192.0.2.7", host }.fields().collect();
        assert_eq!(
            fields,
            [("x-forwarded-for", "192.0.2.7"), ("x-forwarded-host", "svc.ns.localhost"), ("x-forwarded-proto", "http")]
        );
        assert_eq!(original_host(Some("a"), Some("b")), Some("b"), "the target's authority wins");
        assert_eq!(original_host(Some("a"), None), Some("a"));
        let without: Vec<_> = Forwarding { client: "::1", host: original_host(None, None) }.fields().collect();
        assert_eq!(without, [("x-forwarded-for", "::1"), ("x-forwarded-proto", "http")]);
        assert_eq!(upstream_host(None, "127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(upstream_host(Some("a"), "127.0.0.1:8080"), "a");
    }

    #[test]
    fn stripped_targets_start_with_a_slash() {
        assert_eq!(stripped_target("/a?b"), ("", "/a?b"));
        assert_eq!(stripped_target(""), ("/", ""));
        assert_eq!(stripped_target("?q=1"), ("/", "?q=1"));
    }

    #[test]
    fn retries() {
        use Unanswered::{NotSent, Sent};
        let may_retry =
            |reused, failure, method, body_in_hand| may_retry(reused, failure, is_idempotent(method), body_in_hand);
        assert!(may_retry(true, NotSent, "POST", false), "nothing went out: anything goes again");
        assert!(may_retry(true, Sent, "GET", true));
        assert!(may_retry(true, Sent, "PUT", true));
        assert!(!may_retry(true, Sent, "POST", true), "a POST may have had effects");
        assert!(!may_retry(true, Sent, "PATCH", true));
        assert!(!may_retry(true, Sent, "PUT", false), "a streamed body cannot be sent again");
        assert!(!may_retry(false, NotSent, "GET", true), "a new connection's failure is an answer");
        assert!(!may_retry(false, Sent, "GET", true));
    }
}
