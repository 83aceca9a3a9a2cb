//! The JSON event format (CloudEvents JSON format 1.0.2 §2–3).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{CloudEvent, Data, ExtensionValue, JsonData, SPEC_VERSION, validate};
use crate::EventError;

/// The event as a JSON object in the JSON event format (see [`CloudEvent`]'s `Serialize`).
pub fn to_json(event: &CloudEvent) -> Value {
    serde_json::to_value(event).expect("an event serializes to a JSON object")
}

/// The event in the JSON event format, as text (what broker logs store), written straight
/// from the event without an intermediate [`Value`].
pub fn to_json_string(event: &CloudEvent) -> String {
    let mut text = Vec::with_capacity(json_len_hint(event));
    serde_json::to_writer(&mut text, event).expect("an event serializes to a JSON object");
    String::from_utf8(text).expect("serde_json writes UTF-8")
}

/// Events as a JSON array of objects in the JSON event format (the batched content mode),
/// as text.
pub(crate) fn to_json_array(events: &[CloudEvent]) -> Vec<u8> {
    let mut text = Vec::with_capacity(2 + events.iter().map(|e| json_len_hint(e) + 1).sum::<usize>());
    serde_json::to_writer(&mut text, events).expect("events serialize to JSON objects");
    text
}

/// About how long an event is in the JSON format (a little more for plain attributes and
/// data): room made at once for the text, which otherwise grows by doubling, copying what
/// it holds each time (for large data, most of the work of writing it).
fn json_len_hint(event: &CloudEvent) -> usize {
    /// Names, quotes, colons and commas of the attributes, and `specversion`.
    const FRAME: usize = 128;
    let optional = [&event.datacontenttype, &event.dataschema, &event.subject, &event.time];
    let attributes: usize = [&event.id, &event.source, &event.ty].iter().map(|a| a.len() + 16).sum::<usize>()
        + optional.iter().filter_map(|a| a.as_ref()).map(|a| a.len() + 20).sum::<usize>()
        + event.extensions.iter().map(|(name, value)| name.len() + extension_len(value) + 8).sum::<usize>();
    let data = match &event.data {
        None => 0,
        Some(Data::Json(json)) => json.as_str().len() + 8,
        Some(Data::Text(text)) => text.len() + text.len() / 8 + 10,
        Some(Data::Binary(bytes)) => bytes.len().div_ceil(3) * 4 + 16,
    };
    FRAME + attributes + data
}

/// The length of an extension's value, or more.
fn extension_len(value: &ExtensionValue) -> usize {
    match value {
        ExtensionValue::String(s) => s.len(),
        ExtensionValue::Integer(_) => 11,
        ExtensionValue::Boolean(_) => 5,
    }
}

/// Reads an event in the JSON event format from text, checking every rule (read straight
/// into the event's members, without building a JSON object first).
pub fn from_json_str(text: &str) -> Result<CloudEvent, EventError> {
    match serde_json::from_str::<Members>(text) {
        Ok(members) => from_members(members),
        // Not an object: say what it is instead.
        Err(e) => Err(match serde_json::from_str::<Value>(text) {
            Ok(other) if !other.is_object() => EventError::NotAnObject(kind(&other)),
            _ => EventError::InvalidJson(e.to_string()),
        }),
    }
}

/// The JSON event format, checking every rule.
impl<'de> serde::Deserialize<'de> for CloudEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        from_members(Members::deserialize(deserializer)?).map_err(serde::de::Error::custom)
    }
}

/// The members the JSON format names, in this order in [`Members::known`] (`data` apart).
const KNOWN: [&str; 9] =
    ["specversion", "id", "source", "type", "datacontenttype", "dataschema", "subject", "time", "data_base64"];

/// The members of an event object: those the format names by slot, `data` as its text, the
/// rest (extensions) in arrival order. A repeated member keeps its last value, as in a
/// JSON object.
#[derive(Default)]
struct Members {
    known: [Option<Value>; KNOWN.len()],
    data: Option<JsonData>,
    others: Vec<(String, Value)>,
}

impl Members {
    fn insert(&mut self, name: &str, value: Value) {
        if name == "data" {
            self.data = Some(value.into());
        } else if let Some(i) = KNOWN.iter().position(|k| *k == name) {
            self.known[i] = Some(value);
        } else if let Some(other) = self.others.iter_mut().find(|(n, _)| n == name) {
            other.1 = value;
        } else {
            self.others.push((name.to_owned(), value));
        }
    }

    fn remove(&mut self, name: &'static str) -> Option<Value> {
        let i = KNOWN.iter().position(|k| *k == name).expect("only members the format names are removed");
        self.known[i].take()
    }
}

impl From<Map<String, Value>> for Members {
    fn from(map: Map<String, Value>) -> Members {
        let mut members = Members::default();
        for (name, value) in map {
            members.insert(&name, value);
        }
        members
    }
}

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an event (a JSON object)")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Members, M::Error> {
                let mut members = Members::default();
                while let Some(name) = map.next_key::<Name<'de>>()? {
                    if name.as_str() == "data" {
                        // Kept as text: only checked, never built into a tree.
                        let raw = map.next_value::<Box<RawValue>>()?;
                        members.data = Some(JsonData::checked(raw).map_err(serde::de::Error::custom)?);
                    } else {
                        members.insert(name.as_str(), map.next_value()?);
                    }
                }
                Ok(members)
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// A member name, borrowed from the input when it has no escapes.
enum Name<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Name<'_> {
    fn as_str(&self) -> &str {
        match self {
            Name::Borrowed(s) => s,
            Name::Owned(s) => s,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Name<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Name<'de>, E> {
                Ok(Name::Borrowed(s))
            }
            fn visit_str<E>(self, s: &str) -> Result<Name<'de>, E> {
                Ok(Name::Owned(s.to_owned()))
            }
            fn visit_string<E>(self, s: String) -> Result<Name<'de>, E> {
                Ok(Name::Owned(s))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// The JSON event format.
///
/// Attributes are top-level members (extensions too, Integer and Boolean as JSON numbers
/// and booleans). `Binary` data is `data_base64`; `Json` data is `data` as a value;
/// `Text` data is a `data` string under a non-JSON `datacontenttype`, and `data_base64`
/// of its UTF-8 bytes when `datacontenttype` is JSON or absent (a JSON string would
/// change its meaning there).
impl serde::Serialize for CloudEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("specversion", SPEC_VERSION)?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("source", &self.source)?;
        map.serialize_entry("type", &self.ty)?;
        let optional = [
            ("datacontenttype", &self.datacontenttype),
            ("dataschema", &self.dataschema),
            ("subject", &self.subject),
            ("time", &self.time),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                map.serialize_entry(name, value)?;
            }
        }
        for (name, value) in &self.extensions {
            match value {
                ExtensionValue::String(s) => map.serialize_entry(name, s)?,
                ExtensionValue::Integer(i) => map.serialize_entry(name, i)?,
                ExtensionValue::Boolean(b) => map.serialize_entry(name, b)?,
            }
        }
        match &self.data {
            None => {}
            Some(Data::Binary(bytes)) => map.serialize_entry("data_base64", &STANDARD.encode(bytes))?,
            Some(Data::Text(text)) if self.data_is_json() => {
                map.serialize_entry("data_base64", &STANDARD.encode(text))?
            }
            Some(Data::Text(text)) => map.serialize_entry("data", text)?,
            Some(Data::Json(value)) => map.serialize_entry("data", value)?,
        }
        map.end()
    }
}

/// Reads an event in the JSON event format, checking every rule.
///
/// `null` members count as absent. Extensions must be strings, booleans or integers in
/// the 32-bit range. Use `CloudEvent::try_from(value)` to avoid copying `data`.
pub fn from_json(value: &Value) -> Result<CloudEvent, EventError> {
    match value {
        Value::Object(map) => from_map(map.clone()),
        other => Err(EventError::NotAnObject(kind(other))),
    }
}

pub(crate) fn from_json_owned(value: Value) -> Result<CloudEvent, EventError> {
    match value {
        Value::Object(map) => from_map(map),
        other => Err(EventError::NotAnObject(kind(&other))),
    }
}

/// "a string", "an array", ... for error messages.
pub(crate) fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Removes member `name`; `null` counts as absent, anything but a string is an error.
fn take_string(map: &mut Members, name: &'static str) -> Result<Option<String>, EventError> {
    match map.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(EventError::InvalidAttribute {
            name: name.to_owned(),
            reason: format!("must be a string, found {}", kind(&other)),
        }),
    }
}

fn required(map: &mut Members, name: &'static str) -> Result<String, EventError> {
    take_string(map, name)?.ok_or(EventError::MissingAttribute(name))
}

fn from_map(map: Map<String, Value>) -> Result<CloudEvent, EventError> {
    from_members(Members::from(map))
}

fn from_members(mut map: Members) -> Result<CloudEvent, EventError> {
    validate::specversion(required(&mut map, "specversion")?)?;
    let id = required(&mut map, "id")?;
    validate::non_empty_string("id", &id)?;
    let source = required(&mut map, "source")?;
    validate::uri_reference("source", &source)?;
    let ty = required(&mut map, "type")?;
    validate::non_empty_string("type", &ty)?;
    let datacontenttype = take_string(&mut map, "datacontenttype")?;
    if let Some(ct) = &datacontenttype {
        validate::media_type("datacontenttype", ct)?;
    }
    let dataschema = take_string(&mut map, "dataschema")?;
    if let Some(uri) = &dataschema {
        validate::uri("dataschema", uri)?;
    }
    let subject = take_string(&mut map, "subject")?;
    if let Some(subject) = &subject {
        validate::non_empty_string("subject", subject)?;
    }
    let time = take_string(&mut map, "time")?;
    if let Some(time) = &time {
        validate::timestamp("time", time)?;
    }

    let data_is_json = datacontenttype.as_deref().is_none_or(validate::is_json_media_type);
    let data = match (map.data.take(), take_string(&mut map, "data_base64")?) {
        (Some(_), Some(_)) => return Err(EventError::DataConflict),
        (None, Some(encoded)) => Some(Data::Binary(
            STANDARD_PAD_INDIFFERENT
                .decode(encoded.as_bytes())
                .map_err(|e| EventError::InvalidBase64(e.to_string()))?
                .into(),
        )),
        // JSON format §3.1.2: under a non-JSON content type, a string is the encoded content.
        (Some(json), None) if !data_is_json => Some(json.as_string().map_or(Data::Json(json), Data::Text)),
        (Some(json), None) => Some(Data::Json(json)),
        (None, None) => None,
    };

    let mut extensions = BTreeMap::new();
    for (name, value) in map.others {
        validate::attribute_name(&name)?;
        let value = match value {
            Value::Null => continue,
            Value::String(s) => {
                validate::string_chars(&name, &s)?;
                ExtensionValue::String(s)
            }
            Value::Bool(b) => ExtensionValue::Boolean(b),
            Value::Number(n) => match n.as_i64().map(i32::try_from) {
                Some(Ok(i)) => ExtensionValue::Integer(i),
                Some(Err(_)) => {
                    return Err(EventError::InvalidAttribute {
                        name,
                        reason: format!("{n} is outside the Integer range (32-bit signed)"),
                    });
                }
                None => {
                    return Err(EventError::InvalidAttribute {
                        name,
                        reason: format!("{n} is not an Integer (only whole numbers in the 32-bit range)"),
                    });
                }
            },
            other => {
                return Err(EventError::InvalidAttribute {
                    reason: format!("an extension must be a string, boolean or integer, found {}", kind(&other)),
                    name,
                });
            }
        };
        extensions.insert(name, value);
    }

    Ok(CloudEvent { id, source, ty, datacontenttype, dataschema, subject, time, extensions, data })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    #[test]
    fn the_room_made_for_an_event_holds_it() {
        let base = || {
            CloudEvent::builder()
                .id("partition:0/offset:12345")
                .source("/apis/v1/namespaces/default/kafkasources/clicks#clicks")
                .event_type("dev.knative.kafka.event")
                .subject("partition:0#12345")
                .time("2026-12-01T23:00:00.123Z")
                .extension("key", "12345")
                .extension("count", 2_000_000_000)
                .extension("flag", false)
        };
        let events = [
            base().build().expect("no data"),
            base().data(json!({"n": 1, "pad": "x".repeat(1000)})).build().expect("JSON"),
            base().datacontenttype("text/plain").data(Data::Text("a\tb\n".repeat(100))).build().expect("text"),
            base().data(Data::Binary(Bytes::from(vec![7u8; 1000]))).build().expect("bytes"),
        ];
        for event in &events {
            assert!(json_len_hint(event) >= to_json_string(event).len(), "{event:?}");
        }
        let array = to_json_array(&events);
        assert!(array.capacity() >= array.len() && array.capacity() < 2 * array.len());
        assert_eq!(serde_json::from_slice::<Vec<CloudEvent>>(&array).expect("an array of events"), events);
    }

    /// The examples of JSON format §3.2 (the base64 payload made concrete).
    fn spec_binary_example() -> Value {
        json!({
            "specversion" : "1.0",
            "type" : "com.example.someevent",
            "source" : "/mycontext",
            "id" : "A234-1234-1234",
            "time" : "2018-04-05T17:31:00Z",
            "comexampleextension1" : "value",
            "comexampleothervalue" : 5,
            "datacontenttype" : "application/vnd.apache.thrift.binary",
            "data_base64" : "AAECAwQ="
        })
    }

    #[test]
    fn spec_example_with_binary_data() {
        let e = from_json(&spec_binary_example()).expect("valid");
        assert_eq!(e.id(), "A234-1234-1234");
        assert_eq!(e.event_type(), "com.example.someevent");
        assert_eq!(e.time(), Some("2018-04-05T17:31:00Z"));
        assert_eq!(e.extension("comexampleextension1"), Some(&ExtensionValue::from("value")));
        assert_eq!(e.extension("comexampleothervalue"), Some(&ExtensionValue::Integer(5)));
        assert_eq!(e.data(), Some(&Data::Binary(Bytes::from_static(&[0, 1, 2, 3, 4]))));
        assert_eq!(to_json(&e), spec_binary_example());
        let text = to_json_string(&e);
        assert_eq!(serde_json::from_str::<Value>(&text).expect("JSON"), spec_binary_example());
        assert_eq!(from_json_str(&text).expect("reads back"), e);
        assert_eq!(from_json_str("[1]"), Err(EventError::NotAnObject("an array")));
        assert!(matches!(from_json_str("{\"id\": "), Err(EventError::InvalidJson(_))));
    }

    #[test]
    fn text_reads_like_a_json_object_repeated_and_escaped_names_included() {
        let text = r#"{"specversion":"1.0","id":"1","id":"2","source":"/s","type":"t",
                       "ext":"a","ext":"b","\u0065xt2":"c","data":{"n":1}}"#;
        let e = from_json_str(text).expect("valid");
        assert_eq!(e, from_json(&serde_json::from_str(text).expect("JSON")).expect("valid"));
        assert_eq!(e.id(), "2", "the last of repeated members counts");
        assert_eq!(e.extension("ext"), Some(&ExtensionValue::from("b")));
        assert_eq!(e.extension("ext2"), Some(&ExtensionValue::from("c")));
        assert_eq!(serde_json::from_str::<CloudEvent>(text).expect("serde"), e);
        let err = from_json_str(r#"{"specversion":"1.0","id":"1","source":"/s"}"#).expect_err("no type");
        assert!(matches!(err, EventError::MissingAttribute("type")), "{err}");
    }

    #[test]
    fn spec_example_with_xml_text_data() {
        let v = json!({
            "specversion" : "1.0",
            "type" : "com.example.someevent",
            "source" : "/mycontext",
            "id" : "B234-1234-1234",
            "time" : "2018-04-05T17:31:00Z",
            "comexampleextension1" : "value",
            "comexampleothervalue" : 5,
            "unsetextension": null,
            "datacontenttype" : "application/xml",
            "data" : "<much wow=\"xml\"/>"
        });
        let e = from_json(&v).expect("valid");
        assert_eq!(e.data(), Some(&Data::Text("<much wow=\"xml\"/>".into())));
        assert_eq!(e.extension("unsetextension"), None);
        let mut expected = v;
        expected.as_object_mut().expect("object").remove("unsetextension");
        assert_eq!(to_json(&e), expected);
    }

    #[test]
    fn spec_examples_with_json_data() {
        let object = json!({
            "specversion" : "1.0",
            "type" : "com.example.someevent",
            "source" : "/mycontext",
            "subject": null,
            "id" : "C234-1234-1234",
            "time" : "2018-04-05T17:31:00Z",
            "datacontenttype" : "application/json",
            "data" : { "appinfoA" : "abc", "appinfoB" : 123, "appinfoC" : true }
        });
        let e = from_json(&object).expect("valid");
        assert_eq!(e.subject(), None);
        assert_eq!(e.data(), Some(&Data::from(json!({ "appinfoA" : "abc", "appinfoB" : 123, "appinfoC" : true }))));

        // No datacontenttype: data is JSON, and a string stays a JSON string.
        let string = json!({
            "specversion" : "1.0", "type" : "com.example.someevent", "source" : "/mycontext",
            "id" : "D234-1234-1234", "data" : "I'm just a string"
        });
        let e = from_json(&string).expect("valid");
        assert_eq!(e.data(), Some(&Data::from(json!("I'm just a string"))));
        assert_eq!(to_json(&e), string);

        // `data: null` is an explicit null payload, not absence.
        let null = json!({"specversion": "1.0", "type": "t", "source": "/s", "id": "1", "data": null});
        assert_eq!(from_json(&null).expect("valid").data(), Some(&Data::from(Value::Null)));
        // A JSON-ish content type other than application/json, and a non-string under a
        // non-JSON content type, stay JSON.
        let ld = json!({"specversion": "1.0", "type": "t", "source": "/s", "id": "1",
                        "datacontenttype": "application/ld+json", "data": "s"});
        assert_eq!(from_json(&ld).expect("valid").data(), Some(&Data::from(json!("s"))));
        let obj = json!({"specversion": "1.0", "type": "t", "source": "/s", "id": "1",
                         "datacontenttype": "text/plain", "data": {"a": 1}});
        assert_eq!(from_json(&obj).expect("valid").data(), Some(&Data::from(json!({"a": 1}))));
    }

    #[test]
    fn data_base64_decodes_with_or_without_padding() {
        let with =
            |b64: &str| json!({"specversion": "1.0", "type": "t", "source": "/s", "id": "1", "data_base64": b64});
        let data = |v: &Value| from_json(v).expect("valid").data().cloned();
        assert_eq!(data(&with("aGVsbG8=")), Some(Data::Binary(Bytes::from_static(b"hello"))));
        assert_eq!(data(&with("aGVsbG8")), Some(Data::Binary(Bytes::from_static(b"hello"))));
        assert_eq!(data(&with("")), Some(Data::Binary(Bytes::new())));
        let err = from_json(&with("not base64!")).expect_err("invalid");
        assert!(matches!(err, EventError::InvalidBase64(_)), "{err}");
        assert!(err.to_string().starts_with("'data_base64' is not valid base64: "), "{err}");
        let mut v = with("aGVsbG8=");
        v["data_base64"] = json!(5);
        assert_eq!(
            from_json(&v).expect_err("not a string").to_string(),
            "invalid value for attribute 'data_base64': must be a string, found a number"
        );
        // `data_base64: null` is absent, so it does not conflict with `data`.
        let mut v = with("aGVsbG8=");
        v["data_base64"] = Value::Null;
        v["data"] = json!(1);
        assert_eq!(from_json(&v).expect("valid").data(), Some(&Data::from(json!(1))));
    }

    #[test]
    fn text_under_a_json_content_type_is_stored_losslessly() {
        let e = CloudEvent::builder()
            .id("1")
            .source("/s")
            .event_type("t")
            .datacontenttype("application/json")
            .data(Data::Text("{\"a\":1}".into()))
            .build()
            .expect("valid");
        let v = to_json(&e);
        assert_eq!(v["data_base64"], json!("eyJhIjoxfQ=="));
        let back = from_json(&v).expect("valid");
        assert_eq!(back.data_bytes(), e.data_bytes());
    }

    #[test]
    fn validation_failures_name_the_problem() {
        let base = || json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t"});
        let with = |name: &str, value: Value| {
            let mut v = base();
            v[name] = value;
            v
        };
        let without = |name: &str| {
            let mut v = base();
            v.as_object_mut().expect("object").remove(name);
            v
        };
        let cases: Vec<(Value, &str)> = vec![
            (without("specversion"), "missing required attribute 'specversion'"),
            (without("id"), "missing required attribute 'id'"),
            (without("source"), "missing required attribute 'source'"),
            (without("type"), "missing required attribute 'type'"),
            (with("id", Value::Null), "missing required attribute 'id'"),
            (with("specversion", json!("0.3")), "unsupported specversion '0.3': only 1.0 is supported"),
            (
                with("specversion", json!(1.0)),
                "invalid value for attribute 'specversion': must be a string, found a number",
            ),
            (with("id", json!(1)), "invalid value for attribute 'id': must be a string, found a number"),
            (with("source", json!({})), "invalid value for attribute 'source': must be a string, found an object"),
            (with("type", json!(true)), "invalid value for attribute 'type': must be a string, found a boolean"),
            (with("id", json!("")), "invalid value for attribute 'id': must not be empty"),
            (with("source", json!("")), "invalid value for attribute 'source': must not be empty"),
            (with("subject", json!(["a"])), "invalid value for attribute 'subject': must be a string, found an array"),
            (
                with("time", json!("2018-04-05T17:31:00")),
                "invalid value for attribute 'time': '2018-04-05T17:31:00' is not an RFC 3339 timestamp",
            ),
            (with("time", json!(1_522_949_460)), "invalid value for attribute 'time': must be a string"),
            (
                with("dataschema", json!("schema.json")),
                "invalid value for attribute 'dataschema': must be an absolute URI",
            ),
            (with("datacontenttype", json!("nonsense")), "invalid value for attribute 'datacontenttype'"),
            (
                with("myExt", json!("x")),
                "invalid attribute name 'myExt': attribute names must consist of lowercase letters a-z and digits 0-9 only",
            ),
            (with("my-ext", json!("x")), "invalid attribute name 'my-ext'"),
            (with("", json!("x")), "invalid attribute name '': attribute names must not be empty"),
            (with("ratio", json!(0.5)), "invalid value for attribute 'ratio': 0.5 is not an Integer"),
            (
                with("big", json!(4_000_000_000_i64)),
                "invalid value for attribute 'big': 4000000000 is outside the Integer range",
            ),
            (
                with("list", json!([1])),
                "invalid value for attribute 'list': an extension must be a string, boolean or integer, found an array",
            ),
            (
                with("ext", json!("a\u{1}b")),
                "invalid value for attribute 'ext': contains the disallowed character U+0001",
            ),
        ];
        for (value, expected) in cases {
            let err = from_json(&value).expect_err(expected).to_string();
            assert!(err.starts_with(expected), "{err:?} should start with {expected:?}");
        }
        let mut both = base();
        both["data"] = json!({"a": 1});
        both["data_base64"] = json!("AA==");
        assert_eq!(from_json(&both), Err(EventError::DataConflict));
        both["data"] = Value::Null;
        assert_eq!(from_json(&both), Err(EventError::DataConflict), "an explicit null data still conflicts");
        assert_eq!(from_json(&json!("event")), Err(EventError::NotAnObject("a string")));
    }

    #[test]
    fn extension_integers_at_the_range_edges() {
        let v = json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "t",
                       "min": i32::MIN, "max": i32::MAX, "yes": true, "empty": ""});
        let e = from_json(&v).expect("valid");
        assert_eq!(e.extension("min"), Some(&ExtensionValue::Integer(i32::MIN)));
        assert_eq!(e.extension("max"), Some(&ExtensionValue::Integer(i32::MAX)));
        assert_eq!(e.extension("yes"), Some(&ExtensionValue::Boolean(true)));
        assert_eq!(e.extension("empty"), Some(&ExtensionValue::from("")));
        assert_eq!(to_json(&e), v);
        let owned = CloudEvent::try_from(v).expect("valid");
        assert_eq!(owned, e);
    }
}
