//! The HTTP protocol binding (CloudEvents HTTP binding 1.0.2 §3), sans-IO: headers and
//! a body in, events out, and back.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::Value;
use serde_json::value::RawValue;

use super::json::{from_json_str, kind, to_json_string};
use super::{CloudEvent, Data, ExtensionValue, SPEC_VERSION, validate};
use crate::EventError;

/// The media type of structured content mode in the JSON event format.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// The media type of batched content mode in the JSON batch format.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// How a message carries its event(s), decided by its Content-Type (§3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentMode {
    /// Attributes in `ce-` headers, data as the body.
    Binary,
    /// One event in the JSON format as the body.
    Structured,
    /// A JSON array of events as the body.
    Batched,
}

/// The content mode of a message: `application/cloudevents+json` is structured,
/// `application/cloudevents-batch+json` batched, and any other Content-Type (or none)
/// binary. Parameters are allowed, but a `charset` must be UTF-8.
///
/// Fails for a Content-Type that is not printable ASCII, a non-UTF-8 charset on a JSON
/// format, and a CloudEvents event format other than JSON (`application/cloudevents+avro`
/// ...): such a sender expects structured mode, which this crate cannot read, and reading
/// the message as binary would only report missing `ce-` headers.
pub fn content_mode(headers: &HeaderMap) -> Result<ContentMode, EventError> {
    let Some(content_type) = headers.get(CONTENT_TYPE) else {
        return Ok(ContentMode::Binary);
    };
    let content_type = header_str(CONTENT_TYPE.as_str(), content_type)?;
    let essence = validate::essence(content_type);
    let mode = match essence.as_str() {
        STRUCTURED_CONTENT_TYPE => ContentMode::Structured,
        BATCH_CONTENT_TYPE => ContentMode::Batched,
        other if other == "application/cloudevents" || other.starts_with("application/cloudevents+") => {
            return Err(EventError::UnsupportedFormat(other.to_owned()));
        }
        other if other.starts_with("application/cloudevents-batch") => {
            return Err(EventError::UnsupportedFormat(other.to_owned()));
        }
        _ => return Ok(ContentMode::Binary),
    };
    for param in content_type.split(';').skip(1) {
        let Some((name, value)) = param.split_once('=') else { continue };
        let value = value.trim().trim_matches('"');
        if name.trim().eq_ignore_ascii_case("charset") && !value.eq_ignore_ascii_case("utf-8") {
            return Err(EventError::InvalidHeader {
                name: CONTENT_TYPE.as_str().to_owned(),
                reason: format!("unsupported charset '{value}': CloudEvents in JSON must be UTF-8"),
            });
        }
    }
    Ok(mode)
}

/// Whether a message (a request, or a subscriber's reply) carries a CloudEvent at all:
/// a structured or batched Content-Type, or a `ce-specversion` header.
pub fn is_cloudevent(headers: &HeaderMap) -> bool {
    headers.contains_key("ce-specversion")
        || headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| validate::essence(ct).starts_with("application/cloudevents"))
}

/// Decodes the event(s) of an HTTP message in any content mode (see [`content_mode`]).
///
/// Binary and structured messages yield one event, a batch zero or more. Every failure is
/// an [`EventError`] whose message is fit for a 400 answer; among them, an attribute value
/// longer than [`MAX_ATTRIBUTE_LEN`](super::MAX_ATTRIBUTE_LEN) bytes (the body, which
/// carries `data`, is bounded by the caller).
pub fn decode_request(headers: &HeaderMap, body: Bytes) -> Result<Vec<CloudEvent>, EventError> {
    match content_mode(headers)? {
        ContentMode::Binary => Ok(vec![decode_binary(headers, body)?]),
        ContentMode::Structured => Ok(vec![decode_structured(&body)?]),
        ContentMode::Batched => decode_batch(&body),
    }
}

/// Decodes a structured-mode body: one event in the JSON format, UTF-8.
pub fn decode_structured(body: &[u8]) -> Result<CloudEvent, EventError> {
    from_json_str(utf8(body, "structured body")?)
}

/// Decodes a batched-mode body: a JSON array of events in the JSON format (may be empty).
/// An invalid item fails the whole batch, naming its index.
pub fn decode_batch(body: &[u8]) -> Result<Vec<CloudEvent>, EventError> {
    let text = utf8(body, "batch body")?;
    // The items are read as events one by one, from their text.
    let items: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| match serde_json::from_str::<Value>(text) {
        Ok(other) if !other.is_array() => EventError::NotAnArray(kind(&other)),
        _ => EventError::InvalidJson(e.to_string()),
    })?;
    items
        .iter()
        .enumerate()
        .map(|(index, item)| from_json_str(item.get()).map_err(|e| EventError::InBatch { index, source: Box::new(e) }))
        .collect()
}

/// The body as text. Checked apart from parsing so that the answer says "not UTF-8" rather
/// than whatever the JSON parser makes of the bad byte.
fn utf8<'a>(body: &'a [u8], what: &'static str) -> Result<&'a str, EventError> {
    std::str::from_utf8(body).map_err(|e| EventError::InvalidUtf8 { what, offset: e.valid_up_to() })
}

/// Decodes a binary-mode message: attributes from `ce-` headers (names are
/// case-insensitive; values unquoted if double-quoted, then percent-decoded, and must be
/// UTF-8), `datacontenttype` from Content-Type, data from the body.
///
/// Extensions arrive as `String`s (headers carry no type). A `ce-datacontenttype` header
/// and a repeated `ce-` header are errors. The body becomes data as [`Data`] describes;
/// an empty body means no data.
pub fn decode_binary(headers: &HeaderMap, body: Bytes) -> Result<CloudEvent, EventError> {
    let mut known: BTreeMap<&str, String> = BTreeMap::new();
    let mut extensions = BTreeMap::new();
    // `keys` yields each name once; `get_all` finds repeats.
    for header in headers.keys() {
        let Some(name) = header.as_str().strip_prefix("ce-") else { continue };
        let mut values = headers.get_all(header).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(invalid_header(header.as_str(), "appears more than once; an attribute has one value"));
        };
        validate::attribute_name(name)?;
        let value = decode_header_value(value.as_bytes()).map_err(|reason| invalid_header(header.as_str(), reason))?;
        match validate::KNOWN_ATTRIBUTES.iter().find(|&&known| known == name) {
            Some(&"datacontenttype") => {
                return Err(invalid_header(
                    header.as_str(),
                    "not allowed in binary content mode; the Content-Type header carries datacontenttype",
                ));
            }
            Some(known_name) => {
                known.insert(known_name, value);
            }
            None => {
                validate::string_chars(name, &value)?;
                extensions.insert(name.to_owned(), ExtensionValue::String(value));
            }
        }
    }

    validate::specversion(known.remove("specversion").ok_or(EventError::MissingHeader("specversion"))?)?;
    let id = known.remove("id").ok_or(EventError::MissingHeader("id"))?;
    validate::non_empty_string("id", &id)?;
    let source = known.remove("source").ok_or(EventError::MissingHeader("source"))?;
    validate::uri_reference("source", &source)?;
    let ty = known.remove("type").ok_or(EventError::MissingHeader("type"))?;
    validate::non_empty_string("type", &ty)?;
    let dataschema = known.remove("dataschema");
    if let Some(uri) = &dataschema {
        validate::uri("dataschema", uri)?;
    }
    let subject = known.remove("subject");
    if let Some(subject) = &subject {
        validate::non_empty_string("subject", subject)?;
    }
    let time = known.remove("time");
    if let Some(time) = &time {
        validate::timestamp("time", time)?;
    }
    let datacontenttype = match headers.get(CONTENT_TYPE) {
        None => None,
        Some(value) => {
            let ct = header_str(CONTENT_TYPE.as_str(), value)?.trim();
            validate::media_type("datacontenttype", ct)?;
            Some(ct.to_owned())
        }
    };
    let data = Data::of_body(datacontenttype.as_deref(), &body, || body.clone());
    Ok(CloudEvent { id, source, ty, datacontenttype, dataschema, subject, time, extensions, data })
}

fn invalid_header(name: &str, reason: impl Into<String>) -> EventError {
    EventError::InvalidHeader { name: name.to_owned(), reason: reason.into() }
}

fn header_str<'a>(name: &str, value: &'a HeaderValue) -> Result<&'a str, EventError> {
    value.to_str().map_err(|_| invalid_header(name, "must be printable ASCII"))
}

/// §3.1.3.2 decoding: optional whitespace trimmed, a double-quoted value unquoted
/// (RFC 7230 §3.2.6, backslash escapes), then one round of percent-decoding; the result
/// must be UTF-8 (which also rejects overlong forms such as `%C0%A0`).
fn decode_header_value(raw: &[u8]) -> Result<String, String> {
    let raw = raw.trim_ascii();
    let unquoted;
    let raw = if raw.first() == Some(&b'"') {
        unquoted = unquote(raw)?;
        &unquoted[..]
    } else {
        raw
    };
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        if b == b'%' {
            let hex = |j: usize| raw.get(j).and_then(|&d| char::from(d).to_digit(16));
            let (Some(hi), Some(lo)) = (hex(i + 1), hex(i + 2)) else {
                let seq = String::from_utf8_lossy(&raw[i..raw.len().min(i + 3)]);
                return Err(format!(
                    "invalid percent-encoding '{seq}' at byte {i}: '%' must be followed by two hex digits"
                ));
            };
            // Both digits are below 16, so the byte fits.
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|e| {
        format!("not valid UTF-8 after percent-decoding (bad byte at offset {})", e.utf8_error().valid_up_to())
    })
}

/// Unquotes a value that starts with `"`: it must end with the closing quote.
fn unquote(raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter().skip(1);
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => out.push(*bytes.next().ok_or("unterminated quoted string")?),
            b'"' if bytes.len() == 0 => return Ok(out),
            b'"' => return Err("text after the closing quote of a quoted string".into()),
            _ => out.push(b),
        }
    }
    Err("unterminated quoted string".into())
}

/// What §3.1.3.2 requires to be percent-encoded: space, `"`, `%`, and everything outside
/// printable ASCII (`utf8_percent_encode` always encodes non-ASCII; `CONTROLS` adds
/// U+0000–U+001F and U+007F).
const HEADER_VALUE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

fn encode_header_value(value: &str) -> HeaderValue {
    // Borrowed when nothing needs escaping (the usual case): one copy, into the header.
    let encoded: std::borrow::Cow<'_, str> = utf8_percent_encode(value, HEADER_VALUE).into();
    HeaderValue::from_str(&encoded).expect("a percent-encoded value is printable ASCII, a valid header value")
}

/// Encodes an event in binary content mode: one `ce-` header per attribute (values
/// percent-encoded), Content-Type from `datacontenttype`, the data as the body (see
/// [`CloudEvent::data_bytes`]).
///
/// JSON data without `datacontenttype` is sent as `application/json`, the content type
/// the JSON format implies (JSON format §3.1.2), so it reads back with that attribute set.
pub fn encode_binary(event: &CloudEvent) -> (HeaderMap, Bytes) {
    // Names built at compile time: a `&str` name would be parsed on every insert.
    const SPECVERSION: HeaderName = HeaderName::from_static("ce-specversion");
    const ID: HeaderName = HeaderName::from_static("ce-id");
    const SOURCE: HeaderName = HeaderName::from_static("ce-source");
    const TYPE: HeaderName = HeaderName::from_static("ce-type");
    const DATASCHEMA: HeaderName = HeaderName::from_static("ce-dataschema");
    const SUBJECT: HeaderName = HeaderName::from_static("ce-subject");
    const TIME: HeaderName = HeaderName::from_static("ce-time");
    let mut headers = HeaderMap::with_capacity(6 + event.extensions.len());
    headers.insert(SPECVERSION, HeaderValue::from_static(SPEC_VERSION));
    headers.insert(ID, encode_header_value(&event.id));
    headers.insert(SOURCE, encode_header_value(&event.source));
    headers.insert(TYPE, encode_header_value(&event.ty));
    let optional = [(DATASCHEMA, &event.dataschema), (SUBJECT, &event.subject), (TIME, &event.time)];
    for (name, value) in optional {
        if let Some(value) = value {
            headers.insert(name, encode_header_value(value));
        }
    }
    for (name, value) in &event.extensions {
        let mut header = String::with_capacity(3 + name.len());
        header.push_str("ce-");
        header.push_str(name);
        let header = HeaderName::try_from(header)
            .expect("extension names are lowercase alphanumerics, so ce-<name> is a valid header name");
        let value = match value {
            ExtensionValue::String(s) => encode_header_value(s),
            ExtensionValue::Integer(i) => HeaderValue::from(*i),
            ExtensionValue::Boolean(b) => HeaderValue::from_static(if *b { "true" } else { "false" }),
        };
        headers.insert(header, value);
    }
    let content_type = match (&event.datacontenttype, &event.data) {
        (Some(ct), _) => Some(ct.as_str()),
        (None, Some(Data::Json(_))) => Some("application/json"),
        (None, _) => None,
    };
    if let Some(ct) = content_type {
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::try_from(ct).expect("datacontenttype is validated as a printable-ASCII media type"),
        );
    }
    (headers, event.data_bytes().unwrap_or_default())
}

/// Encodes an event in structured content mode: `application/cloudevents+json` and the
/// event in the JSON format ([`to_json`](super::to_json)) as the body.
pub fn encode_structured(event: &CloudEvent) -> (HeaderMap, Bytes) {
    (json_headers(STRUCTURED_CONTENT_TYPE), Bytes::from(to_json_string(event)))
}

/// Encodes events in batched content mode: `application/cloudevents-batch+json` and a
/// JSON array of the events in the JSON format.
pub fn encode_batch(events: &[CloudEvent]) -> (HeaderMap, Bytes) {
    (json_headers(BATCH_CONTENT_TYPE), Bytes::from(super::json::to_json_array(events)))
}

fn json_headers(media_type: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(1);
    let value = HeaderValue::try_from(format!("{media_type}; charset=utf-8"))
        .expect("a constant media type is a valid header value");
    headers.insert(CONTENT_TYPE, value);
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::try_from(*name).expect("test header name"),
                HeaderValue::from_bytes(value.as_bytes()).expect("test header value"),
            );
        }
        map
    }

    /// The binary-mode example of HTTP binding §3.1.4.
    const SPEC_BINARY: [(&str, &str); 6] = [
        ("ce-specversion", "1.0"),
        ("ce-type", "com.example.someevent"),
        ("ce-time", "2018-04-05T03:56:24Z"),
        ("ce-id", "1234-1234-1234"),
        ("ce-source", "/mycontext/subcontext"),
        ("Content-Type", "application/json; charset=utf-8"),
    ];

    fn decode_one(headers: &HeaderMap, body: &'static [u8]) -> Result<CloudEvent, EventError> {
        let mut events = decode_request(headers, Bytes::from_static(body))?;
        assert_eq!(events.len(), 1);
        Ok(events.remove(0))
    }

    fn full_event(data: Option<Data>, content_type: Option<&str>) -> CloudEvent {
        let mut builder = CloudEvent::builder()
            .id("B234-1234-1234")
            .source("https://example.com/mycontext")
            .event_type("com.example.someevent")
            .subject("Euro € 😀 \"quoted\" 100%")
            .time("2018-04-05T17:31:00Z")
            .dataschema("https://example.com/schema.json")
            .extension("comexampleextension1", "value with spaces")
            .extension("comexampleothervalue", 5)
            .extension("flag", false);
        if let Some(ct) = content_type {
            builder = builder.datacontenttype(ct);
        }
        if let Some(data) = data {
            builder = builder.data(data);
        }
        builder.build().expect("valid")
    }

    /// Binary mode carries extension values as strings.
    fn stringly(event: &CloudEvent) -> CloudEvent {
        let mut event = event.clone();
        let names: Vec<String> = event.extensions().map(|(n, _)| n.to_owned()).collect();
        for name in names {
            let text = event.extension(&name).expect("present").to_string();
            event.set_extension(name, text).expect("valid");
        }
        event
    }

    #[test]
    fn spec_binary_example_decodes() {
        let e = decode_one(&headers(&SPEC_BINARY), br#"{"appinfoA":"abc"}"#).expect("valid");
        assert_eq!(e.id(), "1234-1234-1234");
        assert_eq!(e.source(), "/mycontext/subcontext");
        assert_eq!(e.event_type(), "com.example.someevent");
        assert_eq!(e.time(), Some("2018-04-05T03:56:24Z"));
        assert_eq!(e.datacontenttype(), Some("application/json; charset=utf-8"));
        assert_eq!(e.data(), Some(&Data::from(json!({"appinfoA": "abc"}))));
        assert_eq!(e.extensions().len(), 0);
    }

    #[test]
    fn binary_headers_are_case_insensitive_and_extensions_are_strings() {
        let h = headers(&[
            ("CE-SpecVersion", "1.0"),
            ("Ce-Id", "1"),
            ("ce-SOURCE", "/s"),
            ("ce-type", "t"),
            ("CE-COMEXAMPLEOTHERVALUE", "5"),
            ("ce-flag", "true"),
            ("x-other", "ignored"),
        ]);
        let e = decode_one(&h, b"").expect("valid");
        assert_eq!(e.extension("comexampleothervalue"), Some(&ExtensionValue::from("5")));
        assert_eq!(e.extension("flag"), Some(&ExtensionValue::from("true")));
        assert_eq!(e.extensions().len(), 2);
        assert_eq!(e.data(), None);
        assert_eq!(e.datacontenttype(), None);
    }

    #[test]
    fn binary_body_becomes_data_by_content_type() {
        let with_ct = |ct: Option<&str>| {
            let mut pairs = vec![("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "/s"), ("ce-type", "t")];
            if let Some(ct) = ct {
                pairs.push(("content-type", ct));
            }
            headers(&pairs)
        };
        let data =
            |ct: Option<&str>, body: &'static [u8]| decode_one(&with_ct(ct), body).expect("valid").data().cloned();
        assert_eq!(data(Some("application/json"), b"[1,2]"), Some(Data::from(json!([1, 2]))));
        assert_eq!(data(Some("application/cloudevents-extra+json"), b"{}"), Some(Data::from(json!({}))));
        assert_eq!(data(Some("text/json"), b"\"s\""), Some(Data::from(json!("s"))));
        // A body that is not what its JSON content type claims is kept byte for byte.
        assert_eq!(data(Some("application/json"), b"{nope"), Some(Data::Binary(Bytes::from_static(b"{nope"))));
        assert_eq!(data(Some("text/plain; charset=utf-8"), "grüße".as_bytes()), Some(Data::Text("grüße".into())));
        assert_eq!(data(Some("text/plain"), b"\xff\xfe"), Some(Data::Binary(Bytes::from_static(b"\xff\xfe"))));
        assert_eq!(data(Some("application/octet-stream"), b"\x00"), Some(Data::Binary(Bytes::from_static(b"\x00"))));
        assert_eq!(data(Some("application/xml"), b"<a/>"), Some(Data::Binary(Bytes::from_static(b"<a/>"))));
        assert_eq!(data(None, b"{}"), Some(Data::Binary(Bytes::from_static(b"{}"))));
        assert_eq!(data(Some("application/json"), b""), None);
        let e = decode_one(&with_ct(Some("application/json")), b"").expect("valid");
        assert_eq!(e.datacontenttype(), Some("application/json"), "datacontenttype may appear without data");
    }

    #[test]
    fn binary_round_trips() {
        let cases = [
            full_event(Some(Data::from(json!({"appinfoA": "abc", "appinfoB": 123}))), Some("application/json")),
            full_event(Some(Data::Text("<much wow=\"xml\"/>".into())), Some("text/xml")),
            full_event(Some(Data::Binary(Bytes::from_static(&[0, 159, 146, 150]))), Some("application/octet-stream")),
            full_event(Some(Data::Binary(Bytes::from_static(b"raw"))), None),
            full_event(None, Some("application/json")),
            full_event(None, None),
        ];
        for event in cases {
            let (h, body) = encode_binary(&event);
            let decoded = decode_request(&h, body).expect("decodes");
            assert_eq!(decoded, vec![stringly(&event)]);
        }
        // JSON data with no datacontenttype gets the implied application/json.
        let event = full_event(Some(Data::from(json!("I'm just a string"))), None);
        let (h, body) = encode_binary(&event);
        assert_eq!(h[CONTENT_TYPE], "application/json");
        assert_eq!(&body[..], b"\"I'm just a string\"");
        let decoded = decode_binary(&h, body).expect("decodes");
        assert_eq!(
            decoded,
            stringly(&event).into_builder().datacontenttype("application/json").build().expect("valid")
        );
    }

    #[test]
    fn binary_encoding_percent_encodes_header_values() {
        let event = full_event(Some(Data::Text("x".into())), Some("text/plain; charset=utf-8"));
        let (h, body) = encode_binary(&event);
        assert_eq!(h["ce-specversion"], "1.0");
        assert_eq!(h["ce-id"], "B234-1234-1234");
        assert_eq!(h["ce-source"], "https://example.com/mycontext");
        assert_eq!(h["ce-type"], "com.example.someevent");
        assert_eq!(h["ce-time"], "2018-04-05T17:31:00Z");
        assert_eq!(h["ce-dataschema"], "https://example.com/schema.json");
        // The spec's example: "Euro € 😀" → "Euro%20%E2%82%AC%20%F0%9F%98%80".
        assert_eq!(h["ce-subject"], "Euro%20%E2%82%AC%20%F0%9F%98%80%20%22quoted%22%20100%25");
        assert_eq!(h["ce-comexampleextension1"], "value%20with%20spaces");
        assert_eq!(h["ce-comexampleothervalue"], "5");
        assert_eq!(h["ce-flag"], "false");
        assert_eq!(h[CONTENT_TYPE], "text/plain; charset=utf-8");
        assert!(!h.contains_key("ce-datacontenttype"));
        assert_eq!(&body[..], b"x");
        assert_eq!(encode_header_value("ä").to_str().expect("ascii"), "%C3%A4");
        assert_eq!(encode_header_value("a\tb\u{7f}\u{85}").to_str().expect("ascii"), "a%09b%7F%C2%85");
        assert_eq!(encode_header_value("!#$&'()*+,/:;=?@[]~").to_str().expect("ascii"), "!#$&'()*+,/:;=?@[]~");
    }

    #[test]
    fn percent_decoding_edge_cases() {
        let decode = |raw: &str| decode_header_value(raw.as_bytes());
        assert_eq!(decode("100%25").as_deref(), Ok("100%"));
        assert_eq!(decode("say%20%22hi%22").as_deref(), Ok("say \"hi\""));
        assert_eq!(decode("%C3%A4").as_deref(), Ok("ä"));
        assert_eq!(decode("%c3%a4").as_deref(), Ok("ä"), "lower-case hex is accepted");
        assert_eq!(decode("Euro%20%E2%82%AC%20%F0%9F%98%80").as_deref(), Ok("Euro € 😀"));
        assert_eq!(decode("%41%42c").as_deref(), Ok("ABc"), "unnecessary encoding is accepted");
        assert_eq!(decode("  padded\t").as_deref(), Ok("padded"), "optional whitespace is trimmed");
        assert_eq!(decode("plain space").as_deref(), Ok("plain space"));
        // Quoted strings of older senders, with backslash escapes, then percent-decoding.
        assert_eq!(decode(r#""a \"quoted\" \\ value%21""#).as_deref(), Ok(r#"a "quoted" \ value!"#));
        assert_eq!(decode(r#""""#).as_deref(), Ok(""));
        for (bad, why) in [
            ("%ZZ", "invalid percent-encoding '%ZZ' at byte 0"),
            ("abc%2", "invalid percent-encoding '%2' at byte 3"),
            ("abc%", "invalid percent-encoding '%' at byte 3"),
            ("%FF", "not valid UTF-8 after percent-decoding"),
            ("%C0%A0", "not valid UTF-8 after percent-decoding"),
            ("%E2%82", "not valid UTF-8 after percent-decoding"),
            (r#""open"#, "unterminated quoted string"),
            (r#""a\"#, "unterminated quoted string"),
            (r#""a" b"#, "text after the closing quote"),
        ] {
            let err = decode(bad).expect_err(bad);
            assert!(err.starts_with(why), "{bad}: {err:?} should start with {why:?}");
        }
        // Raw UTF-8 (obs-text) is tolerated; raw invalid UTF-8 is not.
        assert_eq!(decode_header_value("ä".as_bytes()).as_deref(), Ok("ä"));
        assert!(decode_header_value(b"\xff").is_err());
    }

    #[test]
    fn binary_validation_failures() {
        let base = || vec![("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "/s"), ("ce-type", "t")];
        let without = |name: &str| headers(&base().into_iter().filter(|(n, _)| *n != name).collect::<Vec<_>>());
        let with = |name: &'static str, value: &'static str| {
            let mut pairs = base().into_iter().filter(|(n, _)| *n != name).collect::<Vec<_>>();
            pairs.push((name, value));
            headers(&pairs)
        };
        let cases = [
            (
                without("ce-specversion"),
                "missing required attribute 'specversion': binary content mode needs a 'ce-specversion' header",
            ),
            (without("ce-id"), "missing required attribute 'id': binary content mode needs a 'ce-id' header"),
            (without("ce-source"), "missing required attribute 'source'"),
            (without("ce-type"), "missing required attribute 'type'"),
            (with("ce-specversion", "0.3"), "unsupported specversion '0.3'"),
            (with("ce-id", ""), "invalid value for attribute 'id': must not be empty"),
            (with("ce-source", "/a b"), "invalid value for attribute 'source'"),
            (
                with("ce-time", "2018-04-05"),
                "invalid value for attribute 'time': '2018-04-05' is not an RFC 3339 timestamp",
            ),
            (with("ce-dataschema", "schema.json"), "invalid value for attribute 'dataschema'"),
            (with("ce-subject", "%ZZ"), "invalid header 'ce-subject': invalid percent-encoding '%ZZ' at byte 0"),
            (with("ce-subject", "%FF"), "invalid header 'ce-subject': not valid UTF-8 after percent-decoding"),
            (
                with("ce-subject", "line%0Abreak"),
                "invalid value for attribute 'subject': contains the disallowed character U+000A",
            ),
            (with("ce-myext", "%00"), "invalid value for attribute 'myext': contains the disallowed character U+0000"),
            (
                with("ce-my-ext", "x"),
                "invalid attribute name 'my-ext': attribute names must consist of lowercase letters",
            ),
            (with("ce-my_ext", "x"), "invalid attribute name 'my_ext'"),
            (with("ce-", "x"), "invalid attribute name '': attribute names must not be empty"),
            (with("ce-data", "x"), "invalid attribute name 'data': 'data' is reserved"),
            (
                with("ce-datacontenttype", "text/plain"),
                "invalid header 'ce-datacontenttype': not allowed in binary content mode",
            ),
            (with("content-type", "nonsense"), "invalid value for attribute 'datacontenttype'"),
        ];
        for (h, expected) in cases {
            let err = decode_binary(&h, Bytes::new()).expect_err(expected).to_string();
            assert!(err.starts_with(expected), "{err:?} should start with {expected:?}");
        }
        let encoded_offset = with("ce-time", "2018-04-05T17:31:00%2B02:00");
        let e = decode_binary(&encoded_offset, Bytes::new()).expect("a percent-encoded '+' decodes");
        assert_eq!(e.time(), Some("2018-04-05T17:31:00+02:00"));
        let mut twice = headers(&base());
        twice.append("ce-id", HeaderValue::from_static("2"));
        assert_eq!(
            decode_binary(&twice, Bytes::new()).expect_err("duplicate").to_string(),
            "invalid header 'ce-id': appears more than once; an attribute has one value"
        );
        let mut non_ascii_ct = headers(&base());
        non_ascii_ct.insert(CONTENT_TYPE, HeaderValue::from_bytes(b"text/pl\xe4in").expect("obs-text"));
        assert_eq!(
            decode_request(&non_ascii_ct, Bytes::new()).expect_err("non-ASCII").to_string(),
            "invalid header 'content-type': must be printable ASCII"
        );
    }

    #[test]
    fn structured_round_trips_and_spec_example() {
        let cases = [
            full_event(
                Some(Data::from(json!({"appinfoA": "abc", "appinfoB": 123, "appinfoC": true}))),
                Some("application/json"),
            ),
            full_event(Some(Data::from(json!("I'm just a string"))), None),
            full_event(Some(Data::from(Value::Null)), None),
            full_event(Some(Data::Text("<much wow=\"xml\"/>".into())), Some("application/xml")),
            full_event(
                Some(Data::Binary(Bytes::from_static(&[0, 1, 2, 255]))),
                Some("application/vnd.apache.thrift.binary"),
            ),
            full_event(None, None),
        ];
        for event in cases {
            let (h, body) = encode_structured(&event);
            assert_eq!(h[CONTENT_TYPE], "application/cloudevents+json; charset=utf-8");
            assert_eq!(decode_request(&h, body).expect("decodes"), vec![event]);
        }
        let (_, body) = encode_structured(&full_event(Some(Data::Binary(Bytes::from_static(b"hello"))), None));
        let v: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v["data_base64"], "aGVsbG8=");
        assert!(v.get("data").is_none());
        assert_eq!(v["comexampleothervalue"], 5);
        assert_eq!(v["flag"], false);

        // HTTP binding §3.2.4, with the elided attributes filled in.
        let h = headers(&[("Content-Type", "application/cloudevents+json; charset=utf-8")]);
        let body = br#"{
            "specversion" : "1.0",
            "type" : "com.example.someevent",
            "id" : "1234-1234-1234",
            "source" : "/mycontext/subcontext",
            "data" : { "appinfoA" : "abc" }
        }"#;
        let e = decode_one(&h, body).expect("valid");
        assert_eq!(e.event_type(), "com.example.someevent");
        assert_eq!(e.data(), Some(&Data::from(json!({"appinfoA": "abc"}))));
        // Structured mode ignores ce- headers: the body carries every attribute.
        let mut h = h;
        h.insert("ce-id", HeaderValue::from_static("other"));
        assert_eq!(decode_one(&h, body).expect("valid").id(), "1234-1234-1234");
    }

    #[test]
    fn structured_failures() {
        let h = headers(&[("content-type", "application/cloudevents+json")]);
        let fail = |body: &[u8]| decode_request(&h, Bytes::copy_from_slice(body)).expect_err("invalid").to_string();
        assert!(fail(b"not json").starts_with("body is not valid JSON: "), "{}", fail(b"not json"));
        assert!(fail(b"").starts_with("body is not valid JSON: "));
        assert_eq!(
            fail(b"{\"id\": \"\xff\"}"),
            "structured body is not valid UTF-8 (invalid byte sequence at offset 8)"
        );
        assert_eq!(fail(b"[1]"), "an event in JSON format must be a JSON object, found an array");
        assert_eq!(
            fail(br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1,"data_base64":"AA=="}"#),
            "'data' and 'data_base64' are both present; an event carries at most one of them"
        );
        assert_eq!(fail(br#"{"specversion":"1.0","source":"/s","type":"t"}"#), "missing required attribute 'id'");
        let latin1 = headers(&[("content-type", "application/cloudevents+json; charset=ISO-8859-1")]);
        assert_eq!(
            decode_request(&latin1, Bytes::from_static(b"{}")).expect_err("charset").to_string(),
            "invalid header 'content-type': unsupported charset 'ISO-8859-1': CloudEvents in JSON must be UTF-8"
        );
        let quoted = headers(&[("content-type", "Application/CloudEvents+JSON;charset=\"UTF-8\"")]);
        assert_eq!(content_mode(&quoted), Ok(ContentMode::Structured));
        let avro = headers(&[("content-type", "application/cloudevents+avro")]);
        assert_eq!(
            decode_request(&avro, Bytes::new()),
            Err(EventError::UnsupportedFormat("application/cloudevents+avro".into()))
        );
    }

    #[test]
    fn batched_mode() {
        let h = headers(&[("content-type", "application/cloudevents-batch+json; charset=utf-8")]);
        assert_eq!(decode_request(&h, Bytes::from_static(b"[]")), Ok(vec![]));
        assert_eq!(decode_request(&h, Bytes::from_static(b" [ ] ")), Ok(vec![]));

        // JSON format §4.3, with a concrete base64 payload.
        let body = br#"[
          {
              "specversion" : "1.0",
              "type" : "com.example.someevent",
              "source" : "/mycontext/4",
              "id" : "B234-1234-1234",
              "time" : "2018-04-05T17:31:00Z",
              "comexampleextension1" : "value",
              "comexampleothervalue" : 5,
              "datacontenttype" : "application/vnd.apache.thrift.binary",
              "data_base64" : "AAECAwQ="
          },
          {
              "specversion" : "1.0",
              "type" : "com.example.someotherevent",
              "source" : "/mycontext/9",
              "id" : "C234-1234-1234",
              "time" : "2018-04-05T17:31:05Z",
              "comexampleextension1" : "value",
              "comexampleothervalue" : 5,
              "datacontenttype" : "application/json",
              "data" : { "appinfoA" : "abc", "appinfoB" : 123, "appinfoC" : true }
          }
        ]"#;
        let events = decode_request(&h, Bytes::from_static(body)).expect("valid");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].data(), Some(&Data::Binary(Bytes::from_static(&[0, 1, 2, 3, 4]))));
        assert_eq!(events[1].event_type(), "com.example.someotherevent");
        assert_eq!(events[1].data(), Some(&Data::from(json!({"appinfoA": "abc", "appinfoB": 123, "appinfoC": true}))));

        let (eh, ebody) = encode_batch(&events);
        assert_eq!(eh[CONTENT_TYPE], "application/cloudevents-batch+json; charset=utf-8");
        assert_eq!(decode_request(&eh, ebody).expect("round trip"), events);
        let (eh, ebody) = encode_batch(&[]);
        assert_eq!(&ebody[..], b"[]");
        assert_eq!(decode_request(&eh, ebody), Ok(vec![]));

        let fail = |body: &[u8]| decode_request(&h, Bytes::copy_from_slice(body)).expect_err("invalid").to_string();
        let valid = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#;
        assert_eq!(
            fail(format!("[{valid}, {valid}, \"oops\"]").as_bytes()),
            "event 2 of the batch: an event in JSON format must be a JSON object, found a string"
        );
        assert_eq!(
            fail(format!("[{valid}, {{\"specversion\":\"1.0\"}}]").as_bytes()),
            "event 1 of the batch: missing required attribute 'id'"
        );
        assert_eq!(fail(valid.as_bytes()), "a batch must be a JSON array of events, found an object");
        assert!(fail(b"[").starts_with("body is not valid JSON"));
        assert_eq!(fail(b"[\"\xc3\x28\"]"), "batch body is not valid UTF-8 (invalid byte sequence at offset 2)");
    }

    #[test]
    fn modes_across_encodings() {
        // Structured → binary → JSON format → structured: the event survives every hop.
        let event = full_event(Some(Data::from(json!({"k": [1, 2, 3]}))), Some("application/json"));
        let (h, body) = encode_structured(&event);
        let structured = decode_request(&h, body).expect("structured").remove(0);
        let (h, body) = encode_binary(&structured);
        let binary = decode_request(&h, body).expect("binary").remove(0);
        let stored = crate::to_json(&binary);
        let back = CloudEvent::try_from(stored).expect("JSON format");
        let (h, body) = encode_structured(&back);
        assert_eq!(decode_request(&h, body).expect("structured"), vec![stringly(&event)]);
    }

    /// No attribute value over [`MAX_ATTRIBUTE_LEN`] gets in, in any content mode, and the
    /// answer names it; data of any size within the body limit still does.
    #[test]
    fn attribute_values_are_bounded_in_every_mode() {
        use crate::MAX_ATTRIBUTE_LEN;
        // A valid value of `len` bytes: a prefix and suffix around digits.
        let sized = |prefix: &str, suffix: &str, len: usize| {
            format!("{prefix}{}{suffix}", "1".repeat(len - prefix.len() - suffix.len()))
        };
        let over = sized("", "", MAX_ATTRIBUTE_LEN + 1);
        let too_long = |name: &str| {
            format!(
                "invalid value for attribute '{name}': is {} bytes long; an attribute value may be at most {MAX_ATTRIBUTE_LEN} bytes",
                MAX_ATTRIBUTE_LEN + 1
            )
        };
        let base = [("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "/s"), ("ce-type", "t")];
        let binary = |name: &str, value: &str| {
            let mut pairs: Vec<(&str, &str)> = base.iter().copied().filter(|(n, _)| *n != name).collect();
            pairs.push((name, value));
            decode_binary(&headers(&pairs), Bytes::from(vec![b'd'; 3 * MAX_ATTRIBUTE_LEN]))
        };
        // Percent-decoding comes first: the bound is on the attribute's value.
        let encoded_at_limit = "%41".repeat(MAX_ATTRIBUTE_LEN);
        assert!(binary("ce-subject", &sized("", "", MAX_ATTRIBUTE_LEN)).is_ok());
        assert!(binary("ce-myext", &encoded_at_limit).is_ok());
        for (header, attribute, prefix, suffix) in [
            ("ce-specversion", "specversion", "", ""),
            ("ce-id", "id", "", ""),
            ("ce-source", "source", "/", ""),
            ("ce-type", "type", "", ""),
            ("ce-subject", "subject", "", ""),
            ("ce-time", "time", "2018-04-05T17:31:00.", "Z"),
            ("ce-dataschema", "dataschema", "https://e/", ""),
            ("content-type", "datacontenttype", "text/plain; p=", ""),
            ("ce-myext", "myext", "", ""),
        ] {
            let err = binary(header, &sized(prefix, suffix, MAX_ATTRIBUTE_LEN + 1)).expect_err(header).to_string();
            assert_eq!(err, too_long(attribute), "{header}");
        }
        let err = binary("ce-myext", &format!("{encoded_at_limit}%41")).expect_err("one more").to_string();
        assert_eq!(err, too_long("myext"));

        let valid = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data": over});
        let with = |name: &str, value: &str| {
            let mut event = valid.clone();
            event[name] = json!(value);
            event
        };
        let structured = headers(&[("content-type", STRUCTURED_CONTENT_TYPE)]);
        let batched = headers(&[("content-type", BATCH_CONTENT_TYPE)]);
        let body = |value: &Value| Bytes::from(value.to_string());
        let at_limit = sized("", "", MAX_ATTRIBUTE_LEN);
        assert!(decode_request(&structured, body(&with("myext", &at_limit))).is_ok(), "data is no attribute");
        let time_over = sized("2018-04-05T17:31:00.", "Z", MAX_ATTRIBUTE_LEN + 1);
        for (name, value) in [("id", &over), ("subject", &over), ("myext", &over), ("time", &time_over)] {
            let err = decode_request(&structured, body(&with(name, value))).expect_err(name).to_string();
            assert_eq!(err, too_long(name));
            let batch = json!([valid.clone(), with(name, value)]);
            let err = decode_request(&batched, body(&batch)).expect_err(name).to_string();
            assert_eq!(err, format!("event 1 of the batch: {}", too_long(name)));
        }
    }

    #[test]
    fn detects_whether_a_message_is_an_event() {
        assert!(is_cloudevent(&headers(&[("ce-specversion", "1.0")])));
        assert!(is_cloudevent(&headers(&[("content-type", "application/cloudevents+json")])));
        assert!(is_cloudevent(&headers(&[("content-type", "application/cloudevents-batch+json")])));
        assert!(!is_cloudevent(&headers(&[("content-type", "application/json")])));
        assert!(!is_cloudevent(&HeaderMap::new()));
        assert_eq!(content_mode(&HeaderMap::new()), Ok(ContentMode::Binary));
        assert_eq!(content_mode(&headers(&[("content-type", "text/plain")])), Ok(ContentMode::Binary));
        assert_eq!(
            content_mode(&headers(&[("content-type", "application/cloudevents-batch+json")])),
            Ok(ContentMode::Batched)
        );
    }
}
