//! Property tests of the CloudEvents HTTP decoding, which reads whatever senders post
//! to a broker (and whatever subscribers reply).
//!
//! Checks that decoding in every content mode (binary, structured, batched) never
//! panics on generated events encoded and then mutated — headers removed, repeated,
//! rewritten or added, bodies cut, spliced and bit-flipped — nor on generated JSON and
//! arbitrary bytes; that an encoded event decodes back to itself (exactly in the JSON
//! format; in binary mode with extensions as strings, as headers carry them); and that
//! every event decoding accepts is a fixed point of encoding and decoding again in its
//! mode.
//!
//! Deterministic: a fixed seed and no failure files (see [`config`]).

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, RngSeed};
use serde_json::{Value, json};
use serval_eventing::{
    BATCH_CONTENT_TYPE, CloudEvent, ContentMode, Data, ExtensionValue, STRUCTURED_CONTENT_TYPE, content_mode,
    decode_request, encode_batch, encode_binary, encode_structured,
};

fn config() -> Config {
    Config {
        cases: 256,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(0xE7E_0001),
        ..Config::default()
    }
}

/// A value of a `String` attribute: spaces, quotes, percent signs and non-ASCII included.
fn text() -> impl Strategy<Value = String> {
    r#"[a-zA-Z0-9 é€😀"'%+/:#?=&\\-]{1,16}"#
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[a-z é\"\\\\]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 12, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn data() -> impl Strategy<Value = Data> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..24).prop_map(Data::from),
        "[a-z é<>/\"]{0,16}".prop_map(Data::Text),
        json_value().prop_map(Data::from),
    ]
}

fn extension_value() -> impl Strategy<Value = ExtensionValue> {
    prop_oneof![
        text().prop_map(ExtensionValue::String),
        any::<i32>().prop_map(ExtensionValue::Integer),
        any::<bool>().prop_map(ExtensionValue::Boolean),
    ]
}

/// Media types an event may carry in any mode. (`application/cloudevents+json` is left
/// out: as the Content-Type of a binary-mode message it means structured mode, so such
/// an event cannot travel in binary mode at all.)
const CONTENT_TYPES: [&str; 6] = [
    "application/json",
    "text/plain; charset=utf-8",
    "application/xml",
    "application/octet-stream",
    "application/ld+json",
    "Text/CSV",
];

/// Valid events: the builder rejects some combinations (an extension named like a
/// context attribute), which are skipped.
fn event() -> impl Strategy<Value = CloudEvent> {
    let source = r"(https://example\.com|urn:x|/a|rel)(/[a-zA-Z0-9._~é-]{0,6}){0,3}(%2F|%c3%a9)?(#[a-z]{0,3})?";
    let time = r"20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?([Zz]|[+-](0[0-9]|1[0-9]|2[0-3]):[0-5][0-9])";
    (
        (text(), source, text(), proptest::option::of(text()), proptest::option::of(time)),
        (
            proptest::option::of(prop::sample::select(CONTENT_TYPES.to_vec())),
            proptest::option::of(prop::sample::select(vec!["https://example.com/s.json", "urn:schema:1"])),
            prop::collection::vec(("[a-z][a-z0-9]{0,8}", extension_value()), 0..4),
            proptest::option::of(data()),
        ),
    )
        .prop_filter_map(
            "the builder rejects it",
            |((id, source, ty, subject, time), (content_type, schema, extensions, data))| {
                let mut builder = CloudEvent::builder().id(id).source(source).event_type(ty);
                if let Some(subject) = subject {
                    builder = builder.subject(subject);
                }
                if let Some(time) = time {
                    builder = builder.time(time);
                }
                if let Some(content_type) = content_type {
                    builder = builder.datacontenttype(content_type);
                }
                if let Some(schema) = schema {
                    builder = builder.dataschema(schema);
                }
                for (name, value) in extensions {
                    builder = builder.extension(name, value);
                }
                if let Some(data) = data {
                    builder = builder.data(data);
                }
                builder.build().ok()
            },
        )
}

/// The context attributes other than `datacontenttype`, and the extensions as strings.
fn attributes(event: &CloudEvent) -> Vec<(String, String)> {
    let mut attributes: Vec<(String, String)> = ["id", "source", "type", "subject", "time", "dataschema"]
        .into_iter()
        .filter_map(|name| Some((name.to_owned(), event.attribute_string(name)?.into_owned())))
        .collect();
    attributes.extend(event.extensions().map(|(name, value)| (name.to_owned(), value.to_string())));
    attributes
}

/// The data as a binary-mode body, with no data and an empty body the same.
fn body_of(event: &CloudEvent) -> Bytes {
    event.data_bytes().unwrap_or_default()
}

/// Decodes one event (or a batch) from a message, as the broker's ingress does.
fn decode(headers: &HeaderMap, body: Bytes) -> Result<Vec<CloudEvent>, TestCaseError> {
    decode_request(headers, body).map_err(|e| TestCaseError::fail(format!("does not decode: {e}")))
}

/// An event decoding accepted reads back the same after encoding it again in `mode`.
fn assert_fixed_point(mode: ContentMode, event: &CloudEvent) -> Result<(), TestCaseError> {
    let (headers, body) = match mode {
        ContentMode::Binary => encode_binary(event),
        ContentMode::Structured => encode_structured(event),
        ContentMode::Batched => encode_batch(std::slice::from_ref(event)),
    };
    prop_assert_eq!(content_mode(&headers), Ok(mode));
    let mut again = decode(&headers, body)?;
    prop_assert_eq!(again.len(), 1);
    let mut expected = event.clone();
    let (data, expected_data) = (again[0].take_data(), expected.take_data());
    prop_assert_eq!(&again[0], &expected, "{:?}", mode);
    match (&data, &expected_data) {
        // JSON data travels as its text: byte for byte the same.
        (Some(Data::Json(data)), Some(Data::Json(expected))) => {
            prop_assert_eq!(data.as_str(), expected.as_str(), "{:?}", mode);
        }
        _ => prop_assert_eq!(data, expected_data, "{:?}", mode),
    }
    Ok(())
}

/// Decodes any message; whatever is accepted must be a fixed point in its mode.
fn decode_anything(headers: &HeaderMap, body: Bytes) -> Result<(), TestCaseError> {
    let Ok(mode) = content_mode(headers) else { return Ok(()) };
    if let Ok(events) = decode_request(headers, body) {
        for event in &events {
            assert_fixed_point(mode, event)?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum HeaderMutation {
    Remove(usize),
    Repeat(usize),
    SetValue(usize, Vec<u8>),
    Add(String, Vec<u8>),
    ContentType(String),
}

/// Header value bytes, including the quoting, escaping and non-ASCII decoding handles
/// (values `HeaderValue` refuses are skipped when applied).
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..12),
        r#"[ a-zA-Z0-9"\\%:+._-]{0,12}"#.prop_map(String::into_bytes),
        prop::sample::select(vec!["1.0", "%", "%2", "%ZZ", "%C3%A9", "%FF", "\"q\\\"x\"", "\"open", " 1.0 ", ""])
            .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

fn header_mutation() -> impl Strategy<Value = HeaderMutation> {
    let names = prop_oneof![
        prop::sample::select(vec![
            "ce-specversion",
            "ce-id",
            "ce-source",
            "ce-type",
            "ce-time",
            "ce-subject",
            "ce-dataschema",
            "ce-datacontenttype",
            "ce-data",
            "ce-",
            "CE-Ext",
        ])
        .prop_map(str::to_owned),
        "ce-[a-zA-Z0-9_-]{0,6}",
    ];
    let content_types = prop_oneof![
        prop::sample::select(vec![
            STRUCTURED_CONTENT_TYPE,
            BATCH_CONTENT_TYPE,
            "application/cloudevents+json; charset=latin1",
            "application/cloudevents+avro",
            "application/cloudevents",
            "application/cloudevents-batch+xml",
            "application/json",
            "text/plain",
            "nonsense",
            "",
        ])
        .prop_map(str::to_owned),
        "[a-z/+;= -]{0,20}",
    ];
    // Removing and repeating headers make an invalid message whatever else happens, so
    // they are rarer: more mutated messages get far enough to be decoded.
    prop_oneof![
        1 => any::<usize>().prop_map(HeaderMutation::Remove),
        1 => any::<usize>().prop_map(HeaderMutation::Repeat),
        4 => (any::<usize>(), header_bytes()).prop_map(|(i, v)| HeaderMutation::SetValue(i, v)),
        4 => (names, header_bytes()).prop_map(|(n, v)| HeaderMutation::Add(n, v)),
        2 => content_types.prop_map(HeaderMutation::ContentType),
    ]
}

fn mutate_headers(headers: &HeaderMap, mutations: &[HeaderMutation]) -> HeaderMap {
    let mut pairs: Vec<(HeaderName, HeaderValue)> =
        headers.iter().map(|(name, value)| (name.clone(), value.clone())).collect();
    for mutation in mutations {
        let pick = |i: usize, len: usize| (len > 0).then(|| i % len);
        match mutation {
            HeaderMutation::Remove(i) => {
                if let Some(i) = pick(*i, pairs.len()) {
                    pairs.remove(i);
                }
            }
            HeaderMutation::Repeat(i) => {
                if let Some(i) = pick(*i, pairs.len()) {
                    pairs.push(pairs[i].clone());
                }
            }
            HeaderMutation::SetValue(i, bytes) => {
                if let (Some(i), Ok(value)) = (pick(*i, pairs.len()), HeaderValue::from_bytes(bytes)) {
                    pairs[i].1 = value;
                }
            }
            HeaderMutation::Add(name, bytes) => {
                if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(bytes))
                {
                    pairs.push((name, value));
                }
            }
            HeaderMutation::ContentType(content_type) => {
                pairs.retain(|(name, _)| name != CONTENT_TYPE);
                if let Ok(value) = HeaderValue::from_str(content_type) {
                    pairs.push((CONTENT_TYPE, value));
                }
            }
        }
    }
    let mut mutated = HeaderMap::new();
    for (name, value) in pairs {
        mutated.append(name, value);
    }
    mutated
}

#[derive(Debug, Clone)]
enum BodyMutation {
    Flip(usize, u8),
    Delete(usize, usize),
    Insert(usize, &'static str),
    Duplicate(usize, usize),
    Truncate(usize),
}

/// JSON fragments (and bytes that break UTF-8) spliced into bodies.
const BODY_FRAGMENTS: [&str; 16] = [
    "\"",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "null",
    "\"data\":1,",
    "\"data_base64\":\"AA==\",",
    "\\u0000",
    "\\ud800",
    "\u{0}",
    "1e999",
    "\"specversion\":\"0.3\",",
    "\"x\":{\"y\":[]},",
];

fn body_mutation() -> impl Strategy<Value = BodyMutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(at, bits)| BodyMutation::Flip(at, bits)),
        (any::<usize>(), 1usize..8).prop_map(|(at, len)| BodyMutation::Delete(at, len)),
        (any::<usize>(), prop::sample::select(BODY_FRAGMENTS.to_vec()))
            .prop_map(|(at, fragment)| BodyMutation::Insert(at, fragment)),
        (any::<usize>(), 1usize..16).prop_map(|(at, len)| BodyMutation::Duplicate(at, len)),
        any::<usize>().prop_map(BodyMutation::Truncate),
    ]
}

fn mutate_body(body: &[u8], mutations: &[BodyMutation]) -> Bytes {
    let mut body = body.to_vec();
    for mutation in mutations {
        let at = |at: usize, body: &Vec<u8>| at % (body.len() + 1);
        match *mutation {
            BodyMutation::Flip(i, bits) => {
                if !body.is_empty() {
                    let i = i % body.len();
                    body[i] ^= bits;
                }
            }
            BodyMutation::Delete(i, len) => {
                let i = at(i, &body);
                let end = (i + len).min(body.len());
                body.drain(i..end);
            }
            BodyMutation::Insert(i, fragment) => {
                let i = at(i, &body);
                body.splice(i..i, fragment.bytes());
            }
            BodyMutation::Duplicate(i, len) => {
                let i = at(i, &body);
                let end = (i + len).min(body.len());
                let slice = body[i..end].to_vec();
                body.splice(end..end, slice);
            }
            BodyMutation::Truncate(len) => {
                let len = at(len, &body);
                body.truncate(len);
            }
        }
    }
    body.into()
}

/// JSON objects with the members the format names (of any JSON type) and extensions.
fn json_event() -> impl Strategy<Value = Value> {
    let member = prop_oneof![
        prop::sample::select(vec![
            "specversion",
            "id",
            "source",
            "type",
            "datacontenttype",
            "dataschema",
            "subject",
            "time",
            "data",
            "data_base64",
            "Ext",
            "ext-1",
        ])
        .prop_map(str::to_owned),
        "[a-z0-9]{1,6}",
    ];
    let value = prop_oneof![
        json_value(),
        prop::sample::select(vec!["1.0", "/s", "x", "application/json", "text/plain", "2018-04-05T17:31:00Z", "AA=="])
            .prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (i64::from(i32::MAX) - 2..i64::from(i32::MAX) + 2).prop_map(Value::from),
    ];
    prop::collection::vec((member, value), 0..10).prop_map(|members| {
        let mut event = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"});
        let map = event.as_object_mut().expect("an object");
        for (name, value) in members {
            map.insert(name, value);
        }
        event
    })
}

fn structured_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(STRUCTURED_CONTENT_TYPE));
    headers
}

fn batch_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(BATCH_CONTENT_TYPE));
    headers
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn structured_round_trip(event in event()) {
        let (headers, body) = encode_structured(&event);
        let decoded = decode(&headers, body)?;
        prop_assert_eq!(decoded.len(), 1);
        let decoded = &decoded[0];
        // The JSON format keeps every attribute with its type; data may change form
        // (text under a JSON type travels as base64) but not its bytes.
        prop_assert_eq!(attributes(decoded), attributes(&event));
        prop_assert_eq!(decoded.extensions().collect::<Vec<_>>(), event.extensions().collect::<Vec<_>>());
        prop_assert_eq!(decoded.datacontenttype(), event.datacontenttype());
        prop_assert_eq!(body_of(decoded), body_of(&event));
        assert_fixed_point(ContentMode::Structured, decoded)?;
    }

    #[test]
    fn batch_round_trip(events in prop::collection::vec(event(), 0..4)) {
        let (headers, body) = encode_batch(&events);
        let decoded = decode(&headers, body)?;
        prop_assert_eq!(decoded.len(), events.len());
        for (decoded, event) in decoded.iter().zip(&events) {
            prop_assert_eq!(attributes(decoded), attributes(event));
            prop_assert_eq!(body_of(decoded), body_of(event));
        }
        let (headers, body) = encode_batch(&decoded);
        prop_assert_eq!(decode(&headers, body)?, decoded);
    }

    #[test]
    fn binary_round_trip(event in event()) {
        let (headers, body) = encode_binary(&event);
        let decoded = decode(&headers, body)?;
        prop_assert_eq!(decoded.len(), 1);
        let decoded = &decoded[0];
        // Headers carry every value as a string, so compare the string forms.
        prop_assert_eq!(attributes(decoded), attributes(&event));
        let implied = matches!(event.data(), Some(Data::Json(_))).then_some("application/json");
        prop_assert_eq!(decoded.datacontenttype(), event.datacontenttype().or(implied));
        prop_assert_eq!(body_of(decoded), body_of(&event));
        assert_fixed_point(ContentMode::Binary, decoded)?;
    }

    #[test]
    fn mutated_binary_messages(
        event in event(),
        mutations in prop::collection::vec(header_mutation(), 1..4),
        body in prop_oneof![Just(None), prop::collection::vec(any::<u8>(), 0..32).prop_map(Some)],
    ) {
        let (headers, original) = encode_binary(&event);
        let headers = mutate_headers(&headers, &mutations);
        decode_anything(&headers, body.map_or(original, Bytes::from))?;
    }

    #[test]
    fn mutated_structured_and_batched_bodies(
        events in prop::collection::vec(event(), 1..3),
        mutations in prop::collection::vec(body_mutation(), 1..3),
    ) {
        let (_, structured) = encode_structured(&events[0]);
        decode_anything(&structured_headers(), mutate_body(&structured, &mutations))?;
        let (_, batch) = encode_batch(&events);
        decode_anything(&batch_headers(), mutate_body(&batch, &mutations))?;
    }

    #[test]
    fn generated_json_events(events in prop::collection::vec(json_event(), 1..3)) {
        decode_anything(&structured_headers(), Bytes::from(events[0].to_string()))?;
        decode_anything(&batch_headers(), Bytes::from(Value::from(events).to_string()))?;
    }

    #[test]
    fn arbitrary_bodies(body in prop::collection::vec(any::<u8>(), 0..64), mutations in prop::collection::vec(header_mutation(), 0..4)) {
        let headers = mutate_headers(&HeaderMap::new(), &mutations);
        decode_anything(&headers, Bytes::from(body.clone()))?;
        decode_anything(&structured_headers(), Bytes::from(body.clone()))?;
        decode_anything(&batch_headers(), Bytes::from(body))?;
    }
}
