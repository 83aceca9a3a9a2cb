//! CloudEvents 1.0 over HTTP on the standard library alone: binary and structured content
//! mode in (attributes in `ce-*` headers, or `application/cloudevents+json`), binary mode
//! out. Edit `src/handler.rs`; this file rarely needs a change.

// Helpers here are for handlers, which need not use them all.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::http::{percent_decode, Request, Response};

/// A CloudEvent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CloudEvent {
    pub id: String,
    pub source: String,
    /// The `type` attribute.
    pub ty: String,
    pub specversion: String,
    pub datacontenttype: Option<String>,
    pub dataschema: Option<String>,
    pub subject: Option<String>,
    pub time: Option<String>,
    /// Extension attributes: lower-case names, values as text.
    pub extensions: BTreeMap<String, String>,
    /// The data's bytes: JSON text when `datacontenttype` is JSON.
    pub data: Vec<u8>,
}

impl CloudEvent {
    /// A new event of type `ty` from `source`, with a fresh id.
    pub fn new(ty: impl Into<String>, source: impl Into<String>) -> CloudEvent {
        CloudEvent {
            id: new_id(),
            source: source.into(),
            ty: ty.into(),
            specversion: "1.0".into(),
            ..Default::default()
        }
    }

    /// The data as text (lossy).
    pub fn data_text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

/// A unique enough id: time, process and a counter.
fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{nanos:x}-{:x}-{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn is_json(content_type: Option<&str>) -> bool {
    let media = content_type
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    media == "application/json" || media == "text/json" || media.ends_with("+json")
}

/// Serves one request: a CloudEvent in, `handle`'s event out (200, binary mode), or 204
/// when it answers none; 400 for a request that is no valid event, 405 for other methods.
pub fn serve(request: &Request, handle: fn(&CloudEvent) -> Option<CloudEvent>) -> Response {
    if request.method != "POST" {
        return Response::text(405, "send CloudEvents with POST\n").header("allow", "POST");
    }
    match from_http(request) {
        Err(message) => Response::text(400, format!("{message}\n")),
        Ok(event) => match handle(&event) {
            None => Response::new(204),
            Some(reply) => to_http(&reply),
        },
    }
}

/// The event of a request.
pub fn from_http(request: &Request) -> Result<CloudEvent, String> {
    let content_type = request.header("content-type").map(str::to_string);
    let media = content_type
        .as_deref()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media == "application/cloudevents-batch+json" {
        return Err("batched content mode is not supported: send one event per request".into());
    }
    let mut event = CloudEvent::default();
    if media.starts_with("application/cloudevents") {
        let text = std::str::from_utf8(&request.body).map_err(|_| "the body is not UTF-8")?;
        let mut data = None;
        for (name, value) in json::object(text)? {
            match (name.as_str(), value) {
                ("data", value) => data = Some(value),
                ("data_base64", json::Value::String(b64)) => event.data = base64_decode(&b64)?,
                (name, json::Value::String(text)) => set(&mut event, name, text),
                (name, json::Value::Other(raw)) => set(&mut event, name, raw),
            }
        }
        event.data = match data {
            // A string of text data is the text; JSON data stays JSON text.
            Some(json::Value::String(text)) if !is_json(event.datacontenttype.as_deref()) => {
                text.into_bytes()
            }
            Some(json::Value::String(text)) => json::quote(&text).into_bytes(),
            Some(json::Value::Other(raw)) => raw.into_bytes(),
            None => event.data,
        };
    } else {
        for (name, value) in &request.headers {
            if let Some(attribute) = name.strip_prefix("ce-") {
                set(&mut event, attribute, percent_decode(value));
            }
        }
        event.datacontenttype = content_type;
        event.data = request.body.clone();
    }
    let missing: Vec<&str> = [
        ("specversion", &event.specversion),
        ("id", &event.id),
        ("source", &event.source),
        ("type", &event.ty),
    ]
    .into_iter()
    .filter(|(_, value)| value.is_empty())
    .map(|(name, _)| name)
    .collect();
    if !missing.is_empty() {
        return Err(format!("not a CloudEvent: missing {}", missing.join(", ")));
    }
    if event.specversion != "1.0" {
        return Err(format!(
            "specversion {:?} is not supported (1.0 is)",
            event.specversion
        ));
    }
    Ok(event)
}

fn set(event: &mut CloudEvent, name: &str, value: String) {
    match name {
        "id" => event.id = value,
        "source" => event.source = value,
        "type" => event.ty = value,
        "specversion" => event.specversion = value,
        "datacontenttype" => event.datacontenttype = Some(value),
        "dataschema" => event.dataschema = Some(value),
        "subject" => event.subject = Some(value),
        "time" => event.time = Some(value),
        other => {
            event.extensions.insert(other.to_string(), value);
        }
    }
}

/// `event` as a binary-mode response (200).
pub fn to_http(event: &CloudEvent) -> Response {
    let mut response = Response::new(200).body(event.data.clone());
    let specversion = if event.specversion.is_empty() {
        "1.0"
    } else {
        &event.specversion
    };
    let id = if event.id.is_empty() {
        new_id()
    } else {
        event.id.clone()
    };
    let attributes = [
        ("specversion", Some(specversion)),
        ("id", Some(id.as_str())),
        ("source", Some(event.source.as_str())),
        ("type", Some(event.ty.as_str())),
        ("dataschema", event.dataschema.as_deref()),
        ("subject", event.subject.as_deref()),
        ("time", event.time.as_deref()),
    ];
    let extensions = event
        .extensions
        .iter()
        .map(|(k, v)| (k.as_str(), Some(v.as_str())));
    for (name, value) in attributes.into_iter().chain(extensions) {
        if let Some(value) = value {
            response = response.header(&format!("ce-{name}"), &header_value(value));
        }
    }
    if !event.data.is_empty() {
        let content_type = event
            .datacontenttype
            .as_deref()
            .unwrap_or("application/json");
        response = response.header("content-type", content_type);
    }
    response
}

/// A `ce-*` header value: space, `"`, `%` and what is not printable ASCII percent-encoded.
fn header_value(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte > b' ' && byte <= b'~' && byte != b'"' && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    };
    let (mut out, mut bits, mut count) = (Vec::new(), 0u32, 0);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        bits = bits << 6 | u32::from(value(c).ok_or("data_base64 is not base64")?);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Ok(out)
}

/// Just enough JSON to read a structured event: a top-level object whose string values are
/// decoded and whose other values are kept as their JSON text.
mod json {
    pub enum Value {
        String(String),
        Other(String),
    }

    pub fn object(text: &str) -> Result<Vec<(String, Value)>, String> {
        let mut p = Parser {
            s: text.as_bytes(),
            at: 0,
        };
        let mut members = Vec::new();
        p.ws();
        p.expect(b'{')?;
        p.ws();
        if p.peek() == Some(b'}') {
            p.at += 1;
        } else {
            loop {
                p.ws();
                let name = p.string()?;
                p.ws();
                p.expect(b':')?;
                p.ws();
                let value = if p.peek() == Some(b'"') {
                    Value::String(p.string()?)
                } else {
                    let start = p.at;
                    p.skip_value()?;
                    Value::Other(text[start..p.at].to_string())
                };
                members.push((name, value));
                p.ws();
                match p.next() {
                    Some(b',') => continue,
                    Some(b'}') => break,
                    _ => return Err(p.error("',' or '}'")),
                }
            }
        }
        p.ws();
        if p.at != p.s.len() {
            return Err(p.error("the end of the event"));
        }
        Ok(members)
    }

    /// `s` as a JSON string.
    pub fn quote(s: &str) -> String {
        let mut out = String::from("\"");
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    struct Parser<'a> {
        s: &'a [u8],
        at: usize,
    }

    impl Parser<'_> {
        fn peek(&self) -> Option<u8> {
            self.s.get(self.at).copied()
        }

        fn next(&mut self) -> Option<u8> {
            let b = self.peek();
            self.at += 1;
            b
        }

        fn ws(&mut self) {
            while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
                self.at += 1;
            }
        }

        fn error(&self, wanted: &str) -> String {
            format!(
                "the body is not a JSON event: expected {wanted} at byte {}",
                self.at
            )
        }

        fn expect(&mut self, b: u8) -> Result<(), String> {
            if self.next() == Some(b) {
                Ok(())
            } else {
                Err(self.error(&format!("'{}'", b as char)))
            }
        }

        fn hex4(&mut self) -> Result<u32, String> {
            let digits = self
                .s
                .get(self.at..self.at + 4)
                .ok_or_else(|| self.error("four hex digits"))?;
            let n = std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u32::from_str_radix(d, 16).ok());
            self.at += 4;
            n.ok_or_else(|| self.error("four hex digits"))
        }

        fn string(&mut self) -> Result<String, String> {
            self.expect(b'"')?;
            let mut out = Vec::new();
            loop {
                match self.next().ok_or_else(|| self.error("'\"'"))? {
                    b'"' => return String::from_utf8(out).map_err(|_| self.error("UTF-8")),
                    b'\\' => {
                        let c = match self.next() {
                            Some(b'"') => '"',
                            Some(b'\\') => '\\',
                            Some(b'/') => '/',
                            Some(b'b') => '\u{8}',
                            Some(b'f') => '\u{c}',
                            Some(b'n') => '\n',
                            Some(b'r') => '\r',
                            Some(b't') => '\t',
                            Some(b'u') => {
                                let mut n = self.hex4()?;
                                if (0xd800..0xdc00).contains(&n)
                                    && self.s.get(self.at..self.at + 2) == Some(b"\\u")
                                {
                                    self.at += 2;
                                    let low = self.hex4()?;
                                    n = 0x10000
                                        + ((n - 0xd800) << 10)
                                        + (low.wrapping_sub(0xdc00) & 0x3ff);
                                }
                                char::from_u32(n).unwrap_or('\u{fffd}')
                            }
                            _ => return Err(self.error("an escape")),
                        };
                        out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                    b => out.push(b),
                }
            }
        }

        /// Steps over one value of any kind.
        fn skip_value(&mut self) -> Result<(), String> {
            match self.peek() {
                Some(b'"') => self.string().map(drop),
                Some(open @ (b'{' | b'[')) => {
                    let close = if open == b'{' { b'}' } else { b']' };
                    self.at += 1;
                    self.ws();
                    if self.peek() == Some(close) {
                        self.at += 1;
                        return Ok(());
                    }
                    loop {
                        self.ws();
                        if open == b'{' {
                            self.string()?;
                            self.ws();
                            self.expect(b':')?;
                            self.ws();
                        }
                        self.skip_value()?;
                        self.ws();
                        match self.next() {
                            Some(b',') => continue,
                            Some(c) if c == close => return Ok(()),
                            _ => return Err(self.error("',' or the end of a list or object")),
                        }
                    }
                }
                _ => {
                    let start = self.at;
                    while self
                        .peek()
                        .is_some_and(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
                    {
                        self.at += 1;
                    }
                    let word = &self.s[start..self.at];
                    let number = word
                        .first()
                        .is_some_and(|b| b.is_ascii_digit() || *b == b'-');
                    if number || matches!(word, b"true" | b"false" | b"null") {
                        Ok(())
                    } else {
                        self.at = start;
                        Err(self.error("a value"))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_structured_requests_give_the_same_event() {
        let mut binary = Request::new("POST", "/");
        for (name, value) in [
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "/shop"),
            ("ce-type", "com.example.order"),
            ("ce-note", "a%20b"),
            ("content-type", "application/json"),
        ] {
            binary.headers.insert(name.into(), value.into());
        }
        binary.body = br#"{"item": "book"}"#.to_vec();
        let mut structured = Request::new("POST", "/");
        structured
            .headers
            .insert("content-type".into(), "application/cloudevents+json".into());
        structured.body =
            br#"{"specversion": "1.0", "id": "1", "source": "/shop", "type": "com.example.order",
            "note": "a b", "datacontenttype": "application/json", "data": {"item": "book"}}"#
                .to_vec();
        let event = from_http(&binary).expect("binary");
        assert_eq!(event.extensions["note"], "a b");
        assert_eq!(from_http(&structured).expect("structured"), event);
    }

    #[test]
    fn structured_text_and_base64_data() {
        let mut request = Request::new("POST", "/");
        request.headers.insert(
            "content-type".into(),
            "application/cloudevents+json; charset=utf-8".into(),
        );
        request.body = br#"{"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"text/plain","data":"h\u00e9\n"}"#.to_vec();
        assert_eq!(from_http(&request).expect("text").data_text(), "h\u{e9}\n");
        request.body =
            br#"{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"aGk="}"#
                .to_vec();
        assert_eq!(from_http(&request).expect("base64").data, b"hi");
        request.body =
            br#"{"specversion":"1.0","id":"1","source":"s","type":"t","data":[1,{"a":null}]}"#
                .to_vec();
        assert_eq!(
            from_http(&request).expect("json").data_text(),
            r#"[1,{"a":null}]"#
        );
    }

    #[test]
    fn invalid_events_are_refused_with_a_reason() {
        let mut request = Request::new("POST", "/");
        assert_eq!(
            from_http(&request),
            Err("not a CloudEvent: missing specversion, id, source, type".into())
        );
        request
            .headers
            .insert("content-type".into(), "application/cloudevents+json".into());
        request.body = b"{\"id\": ".to_vec();
        assert!(from_http(&request)
            .expect_err("cut short")
            .contains("not a JSON event"));
        assert_eq!(serve(&Request::new("GET", "/"), |_| None).status, 405);
    }
}
