//! CloudEvents 1.0.2: the event type, the JSON event format and the HTTP protocol binding.
//!
//! A [`CloudEvent`] is valid by construction: the builder, [`from_json`] and
//! [`decode_request`] all apply the same rules, so code holding a `CloudEvent` never
//! re-checks it. `specversion` is always `1.0`, the only version this crate speaks, and
//! no attribute value is longer than [`MAX_ATTRIBUTE_LEN`].

mod http;
mod json;
mod validate;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde_json::value::RawValue;

use crate::EventError;

pub use self::http::{
    BATCH_CONTENT_TYPE, ContentMode, STRUCTURED_CONTENT_TYPE, content_mode, decode_batch, decode_binary,
    decode_request, decode_structured, encode_batch, encode_binary, encode_structured, is_cloudevent,
};
pub use self::json::{from_json, from_json_str, to_json, to_json_string};

/// The only `specversion` this crate accepts and produces.
pub const SPEC_VERSION: &str = "1.0";

/// The longest value, in bytes of UTF-8, of one context attribute or extension (in its
/// canonical string form). Events come from untrusted senders and their attributes feed
/// filters (CESQL among them) on every delivery, so each is bounded where an event is
/// made. `data` is no attribute: the body limit of the ingress bounds it.
pub const MAX_ATTRIBUTE_LEN: usize = 4096;

/// The payload of an event, in the form it arrived in or was built with.
///
/// Which variant a decoder produces:
/// - JSON format (structured, batched, [`from_json`]): `data_base64` → `Binary`; `data`
///   with no `datacontenttype` or a JSON one (`*/json`, `*/*+json`) → `Json`; a string
///   `data` with another content type → `Text`; any other `data` → `Json`.
/// - binary content mode: an empty body → no data; a JSON content type and a body that
///   parses → `Json`; a `text/*` content type and a UTF-8 body → `Text`; anything else
///   → `Binary`, byte for byte.
///
/// `Json` keeps the value's text ([`JsonData`]), so every encoding writes it back as it came.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// Opaque bytes; `data_base64` in the JSON format.
    Binary(Bytes),
    /// Text in a non-JSON content type (`text/plain`, `application/xml`, ...).
    Text(String),
    /// A JSON value (may be `null`: an explicit null payload), as the text it arrived in.
    Json(JsonData),
}

/// A JSON value kept as its text: checked once where it enters, then carried and written
/// out byte for byte, so that data passes through serval unchanged (member order, number
/// spelling and precision) and costs no tree of allocations per event. Two are equal when
/// their texts are, or when they parse to the same value.
#[derive(Debug, Clone)]
pub struct JsonData(Box<RawValue>);

/// Reads a JSON value through serde_json without keeping anything: the checks a
/// `serde_json::Value` would get (nesting within serde_json's recursion limit, numbers in
/// range, no lone surrogates in strings), without the tree. [`RawValue`] only skips
/// values, and a value it takes that these checks refuse would fail later, wherever the
/// data is read into a tree.
struct Checked;

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Checked, D::Error> {
        deserializer.deserialize_any(Checked)
    }
}

impl<'de> serde::de::Visitor<'de> for Checked {
    type Value = Checked;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

impl JsonData {
    /// Checks `bytes` are one JSON value, UTF-8 (surrounding whitespace is dropped).
    pub fn parse_bytes(bytes: &[u8]) -> Result<JsonData, serde_json::Error> {
        JsonData::checked(serde_json::from_slice::<&RawValue>(bytes)?.to_owned())
    }

    /// A value serde_json skipped over, once it passed the checks of a full read
    /// ([`Checked`]): what anyone reading it into a tree later can take.
    pub(crate) fn checked(raw: Box<RawValue>) -> Result<JsonData, serde_json::Error> {
        serde_json::from_str::<Checked>(raw.get())?;
        Ok(JsonData(raw))
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The value as a tree (for code that looks inside it).
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(self.as_str())
    }

    /// The string, when the value is a JSON string.
    pub(crate) fn as_string(&self) -> Option<String> {
        self.as_str().starts_with('"').then(|| serde_json::from_str(self.as_str()).ok()).flatten()
    }
}

impl PartialEq for JsonData {
    fn eq(&self, other: &JsonData) -> bool {
        self.as_str() == other.as_str() || matches!((self.to_value(), other.to_value()), (Ok(a), Ok(b)) if a == b)
    }
}

impl From<serde_json::Value> for JsonData {
    fn from(value: serde_json::Value) -> JsonData {
        JsonData(serde_json::value::to_raw_value(&value).expect("a JSON value serializes"))
    }
}

impl serde::Serialize for JsonData {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl Data {
    /// The in-memory form of a message body under its content type (a binary-mode body,
    /// a source's payload): structured where the content type says so and the body
    /// agrees, otherwise the bytes untouched (`bytes` gives them); an empty body is no
    /// data.
    pub fn of_body(content_type: Option<&str>, body: &[u8], bytes: impl FnOnce() -> Bytes) -> Option<Data> {
        if body.is_empty() {
            return None;
        }
        let Some(ct) = content_type else { return Some(Data::Binary(bytes())) };
        Some(if validate::is_json_media_type(ct) {
            JsonData::parse_bytes(body).map_or_else(|_| Data::Binary(bytes()), Data::Json)
        } else if validate::is_text_media_type(ct)
            && let Ok(text) = std::str::from_utf8(body)
        {
            Data::Text(text.to_owned())
        } else {
            Data::Binary(bytes())
        })
    }
}

impl From<Bytes> for Data {
    fn from(bytes: Bytes) -> Self {
        Self::Binary(bytes)
    }
}

impl From<Vec<u8>> for Data {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Binary(bytes.into())
    }
}

impl From<String> for Data {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<&str> for Data {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<serde_json::Value> for Data {
    fn from(value: serde_json::Value) -> Self {
        Self::Json(value.into())
    }
}

impl From<JsonData> for Data {
    fn from(value: JsonData) -> Self {
        Self::Json(value)
    }
}

/// The value of an extension attribute.
///
/// The spec's other types travel as strings: URI, URI-reference and Timestamp in their
/// canonical string form, Binary as base64. In binary content mode every value is a
/// header string, so an `Integer` or `Boolean` sent that way arrives as `String`; the
/// [`as_integer`](Self::as_integer) and [`as_boolean`](Self::as_boolean) accessors read
/// both forms.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExtensionValue {
    String(String),
    /// A 32-bit signed integer, the spec's `Integer` range.
    Integer(i32),
    Boolean(bool),
}

impl ExtensionValue {
    /// The string, if this is a `String`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is an `Integer` or a `String` in the canonical integer form.
    pub fn as_integer(&self) -> Option<i32> {
        match self {
            Self::Integer(i) => Some(*i),
            Self::String(s) => s.parse().ok(),
            Self::Boolean(_) => None,
        }
    }

    /// The boolean, if this is a `Boolean` or the `String` `true` or `false`.
    pub fn as_boolean(&self) -> Option<bool> {
        match self {
            Self::Boolean(b) => Some(*b),
            Self::String(s) if s == "true" => Some(true),
            Self::String(s) if s == "false" => Some(false),
            _ => None,
        }
    }
}

/// The canonical string encoding (what a `ce-` header carries before percent-encoding).
impl fmt::Display for ExtensionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::String(s) => f.write_str(s),
            Self::Integer(i) => write!(f, "{i}"),
            Self::Boolean(b) => write!(f, "{b}"),
        }
    }
}

impl From<String> for ExtensionValue {
    fn from(s: String) -> Self {
        Self::String(s)
    }
}

impl From<&str> for ExtensionValue {
    fn from(s: &str) -> Self {
        Self::String(s.to_owned())
    }
}

impl From<i32> for ExtensionValue {
    fn from(i: i32) -> Self {
        Self::Integer(i)
    }
}

impl From<bool> for ExtensionValue {
    fn from(b: bool) -> Self {
        Self::Boolean(b)
    }
}

/// A valid CloudEvents 1.0 event: its context attributes, extensions and optional data.
///
/// Construct one with [`CloudEvent::builder`], [`from_json`] or [`decode_request`];
/// change one with [`set_extension`](Self::set_extension),
/// [`remove_extension`](Self::remove_extension) or [`into_builder`](Self::into_builder).
///
/// Serde (de)serializes it in the JSON event format ([`to_json`] / [`from_json`]).
#[derive(Debug, Clone, PartialEq)]
pub struct CloudEvent {
    id: String,
    source: String,
    ty: String,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
    subject: Option<String>,
    time: Option<String>,
    extensions: BTreeMap<String, ExtensionValue>,
    data: Option<Data>,
}

impl CloudEvent {
    /// An empty builder; `id`, `source` and `type` must be set before
    /// [`build`](CloudEventBuilder::build).
    pub fn builder() -> CloudEventBuilder {
        CloudEventBuilder::default()
    }

    /// A builder holding this event's attributes and data, to derive a changed event.
    pub fn into_builder(self) -> CloudEventBuilder {
        CloudEventBuilder {
            id: Some(self.id),
            source: Some(self.source),
            ty: Some(self.ty),
            datacontenttype: self.datacontenttype,
            dataschema: self.dataschema,
            subject: self.subject,
            time: self.time,
            extensions: self.extensions.into_iter().collect(),
            data: self.data,
        }
    }

    /// Always [`SPEC_VERSION`] (`1.0`).
    pub fn specversion(&self) -> &'static str {
        SPEC_VERSION
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// A non-empty URI-reference.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The `type` attribute.
    pub fn event_type(&self) -> &str {
        &self.ty
    }

    /// A media type; in binary content mode, the message's Content-Type.
    pub fn datacontenttype(&self) -> Option<&str> {
        self.datacontenttype.as_deref()
    }

    /// An absolute URI.
    pub fn dataschema(&self) -> Option<&str> {
        self.dataschema.as_deref()
    }

    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// An RFC 3339 timestamp, exactly as it was given.
    pub fn time(&self) -> Option<&str> {
        self.time.as_deref()
    }

    pub fn extension(&self, name: &str) -> Option<&ExtensionValue> {
        self.extensions.get(name)
    }

    /// All extensions, ordered by name.
    pub fn extensions(&self) -> impl ExactSizeIterator<Item = (&str, &ExtensionValue)> {
        self.extensions.iter().map(|(name, value)| (name.as_str(), value))
    }

    pub fn data(&self) -> Option<&Data> {
        self.data.as_ref()
    }

    /// Takes the data out, leaving the event without data.
    pub fn take_data(&mut self) -> Option<Data> {
        self.data.take()
    }

    /// The data as the bytes of a binary-mode HTTP body: `Binary` as is, `Text` as
    /// UTF-8, `Json` as JSON text — except a JSON string under a non-JSON content type,
    /// which is the string itself (JSON format §3.1).
    pub fn data_bytes(&self) -> Option<Bytes> {
        Some(match self.data.as_ref()? {
            Data::Binary(bytes) => bytes.clone(),
            Data::Text(text) => Bytes::copy_from_slice(text.as_bytes()),
            Data::Json(json) => match (!self.data_is_json()).then(|| json.as_string()).flatten() {
                Some(s) => Bytes::from(s),
                None => Bytes::copy_from_slice(json.as_str().as_bytes()),
            },
        })
    }

    /// Whether `datacontenttype` declares JSON, which is also the meaning of its absence.
    fn data_is_json(&self) -> bool {
        self.datacontenttype.as_deref().is_none_or(validate::is_json_media_type)
    }

    /// Any attribute (context attribute or extension) in its canonical string form, as
    /// string-based filters (exact, prefix, suffix) compare it. `data` is not an
    /// attribute.
    pub fn attribute_string(&self, name: &str) -> Option<Cow<'_, str>> {
        match name {
            "specversion" => Some(Cow::Borrowed(SPEC_VERSION)),
            "id" => Some(Cow::Borrowed(&self.id)),
            "source" => Some(Cow::Borrowed(&self.source)),
            "type" => Some(Cow::Borrowed(&self.ty)),
            "datacontenttype" => self.datacontenttype.as_deref().map(Cow::Borrowed),
            "dataschema" => self.dataschema.as_deref().map(Cow::Borrowed),
            "subject" => self.subject.as_deref().map(Cow::Borrowed),
            "time" => self.time.as_deref().map(Cow::Borrowed),
            _ => self.extensions.get(name).map(|value| match value {
                ExtensionValue::String(s) => Cow::Borrowed(s.as_str()),
                other => Cow::Owned(other.to_string()),
            }),
        }
    }

    /// Sets an extension attribute, returning the previous value. Fails for a name that
    /// breaks the naming rules or belongs to a spec-defined attribute, and for a string
    /// with control characters.
    pub fn set_extension(
        &mut self,
        name: impl Into<String>,
        value: impl Into<ExtensionValue>,
    ) -> Result<Option<ExtensionValue>, EventError> {
        let (name, value) = (name.into(), value.into());
        check_extension(&name, &value)?;
        Ok(self.extensions.insert(name, value))
    }

    /// Removes an extension attribute, returning its value.
    pub fn remove_extension(&mut self, name: &str) -> Option<ExtensionValue> {
        self.extensions.remove(name)
    }
}

fn check_extension(name: &str, value: &ExtensionValue) -> Result<(), EventError> {
    validate::extension_name(name)?;
    match value {
        ExtensionValue::String(s) => validate::string_chars(name, s),
        ExtensionValue::Integer(_) | ExtensionValue::Boolean(_) => Ok(()),
    }
}

/// Attribute values per CESQL v1 §3.1: Integer and Boolean extensions as such, every
/// other attribute (strings, URIs, timestamps) as String. `data` is not an attribute.
impl serval_cesql::EventAttributes for CloudEvent {
    fn attribute(&self, name: &str) -> Option<serval_cesql::Value> {
        use serval_cesql::Value;
        match self.extensions.get(name) {
            Some(ExtensionValue::Integer(i)) => Some(Value::Integer(*i)),
            Some(ExtensionValue::Boolean(b)) => Some(Value::Boolean(*b)),
            Some(ExtensionValue::String(s)) => Some(Value::String(s.clone())),
            None => self.attribute_string(name).map(|s| Value::String(s.into_owned())),
        }
    }
}

/// The JSON event format, taking the value by move (no copy of `data`).
impl TryFrom<serde_json::Value> for CloudEvent {
    type Error = EventError;

    fn try_from(value: serde_json::Value) -> Result<Self, EventError> {
        json::from_json_owned(value)
    }
}

/// Builds a [`CloudEvent`], checking every rule in [`build`](Self::build).
#[derive(Debug, Clone, Default)]
pub struct CloudEventBuilder {
    id: Option<String>,
    source: Option<String>,
    ty: Option<String>,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
    subject: Option<String>,
    time: Option<String>,
    extensions: Vec<(String, ExtensionValue)>,
    data: Option<Data>,
}

impl CloudEventBuilder {
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Sets the `type` attribute.
    pub fn event_type(mut self, ty: impl Into<String>) -> Self {
        self.ty = Some(ty.into());
        self
    }

    pub fn datacontenttype(mut self, content_type: impl Into<String>) -> Self {
        self.datacontenttype = Some(content_type.into());
        self
    }

    pub fn dataschema(mut self, uri: impl Into<String>) -> Self {
        self.dataschema = Some(uri.into());
        self
    }

    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// Sets `time` from its RFC 3339 form, such as `2018-04-05T17:31:00Z`.
    pub fn time(mut self, rfc3339: impl Into<String>) -> Self {
        self.time = Some(rfc3339.into());
        self
    }

    /// Adds an extension; a later value for the same name replaces an earlier one.
    pub fn extension(mut self, name: impl Into<String>, value: impl Into<ExtensionValue>) -> Self {
        self.extensions.push((name.into(), value.into()));
        self
    }

    pub fn data(mut self, data: impl Into<Data>) -> Self {
        self.data = Some(data.into());
        self
    }

    /// Removes the data (and keeps `datacontenttype`, which may appear without data).
    pub fn no_data(mut self) -> Self {
        self.data = None;
        self
    }

    /// Checks every attribute and returns the event, or the first rule it breaks.
    pub fn build(self) -> Result<CloudEvent, EventError> {
        let id = self.id.ok_or(EventError::MissingAttribute("id"))?;
        validate::non_empty_string("id", &id)?;
        let source = self.source.ok_or(EventError::MissingAttribute("source"))?;
        validate::uri_reference("source", &source)?;
        let ty = self.ty.ok_or(EventError::MissingAttribute("type"))?;
        validate::non_empty_string("type", &ty)?;
        if let Some(ct) = &self.datacontenttype {
            validate::media_type("datacontenttype", ct)?;
        }
        if let Some(uri) = &self.dataschema {
            validate::uri("dataschema", uri)?;
        }
        if let Some(subject) = &self.subject {
            validate::non_empty_string("subject", subject)?;
        }
        if let Some(time) = &self.time {
            validate::timestamp("time", time)?;
        }
        let mut extensions = BTreeMap::new();
        for (name, value) in self.extensions {
            check_extension(&name, &value)?;
            extensions.insert(name, value);
        }
        Ok(CloudEvent {
            id,
            source,
            ty,
            datacontenttype: self.datacontenttype,
            dataschema: self.dataschema,
            subject: self.subject,
            time: self.time,
            extensions,
            data: self.data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use serval_cesql::{EventAttributes, Value, parse};

    fn event() -> CloudEvent {
        CloudEvent::builder()
            .id("A234-1234-1234")
            .source("/mycontext")
            .event_type("com.example.someevent")
            .time("2018-04-05T17:31:00Z")
            .extension("comexampleextension1", "value")
            .extension("comexampleothervalue", 5)
            .extension("flag", true)
            .build()
            .expect("a valid event")
    }

    #[test]
    fn builder_sets_every_attribute() {
        let e = CloudEvent::builder()
            .id("1")
            .source("https://example.com/src")
            .event_type("t")
            .datacontenttype("application/json")
            .dataschema("https://example.com/schema")
            .subject("sub")
            .time("2018-04-26T14:48:09+02:00")
            .extension("ext", "a")
            .extension("ext", "b")
            .data(json!({"a": 1}))
            .build()
            .expect("valid");
        assert_eq!(e.specversion(), "1.0");
        assert_eq!(e.id(), "1");
        assert_eq!(e.source(), "https://example.com/src");
        assert_eq!(e.event_type(), "t");
        assert_eq!(e.datacontenttype(), Some("application/json"));
        assert_eq!(e.dataschema(), Some("https://example.com/schema"));
        assert_eq!(e.subject(), Some("sub"));
        assert_eq!(e.time(), Some("2018-04-26T14:48:09+02:00"));
        assert_eq!(e.extension("ext"), Some(&ExtensionValue::from("b")));
        assert_eq!(e.extensions().len(), 1);
        assert_eq!(e.data(), Some(&Data::from(json!({"a": 1}))));
        let rebuilt = e.clone().into_builder().subject("other").build().expect("valid");
        assert_eq!(rebuilt.subject(), Some("other"));
        assert_eq!(rebuilt.data(), e.data());
    }

    #[test]
    fn builder_rejects_missing_and_invalid_attributes() {
        let base = || CloudEvent::builder().id("1").source("/s").event_type("t");
        assert_eq!(CloudEvent::builder().source("/s").event_type("t").build(), Err(EventError::MissingAttribute("id")));
        assert_eq!(CloudEvent::builder().id("1").event_type("t").build(), Err(EventError::MissingAttribute("source")));
        assert_eq!(CloudEvent::builder().id("1").source("/s").build(), Err(EventError::MissingAttribute("type")));
        let cases = [
            (base().id(""), "'id': must not be empty"),
            (base().source(""), "'source': must not be empty"),
            (base().event_type("a\nb"), "'type': contains the disallowed character U+000A"),
            (base().subject(""), "'subject': must not be empty"),
            (base().time("2018-04-05"), "'time': '2018-04-05' is not an RFC 3339 timestamp"),
            (base().dataschema("/rel"), "'dataschema': must be an absolute URI"),
            (base().datacontenttype("json"), "'datacontenttype': 'json' is not a media type"),
            (base().extension("MyExt", 1), "invalid attribute name 'MyExt'"),
            (base().extension("data", 1), "invalid attribute name 'data': 'data' is reserved"),
            (base().extension("id", "x"), "invalid attribute name 'id'"),
        ];
        for (builder, expected) in cases {
            let err = builder.build().expect_err(expected).to_string();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }

    #[test]
    fn builder_and_extensions_bound_attribute_values() {
        let over = "x".repeat(MAX_ATTRIBUTE_LEN + 1);
        let base = || CloudEvent::builder().id("1").source("/s").event_type("t");
        assert!(base().subject("x".repeat(MAX_ATTRIBUTE_LEN)).data(over.as_str()).build().is_ok());
        for (builder, name) in [
            (base().id(over.as_str()), "id"),
            (base().event_type(over.as_str()), "type"),
            (base().subject(over.as_str()), "subject"),
            (base().extension("myext", over.as_str()), "myext"),
        ] {
            let err = builder.build().expect_err(name).to_string();
            assert!(err.starts_with(&format!("invalid value for attribute '{name}': is 4097 bytes long")), "{err}");
        }
        let mut e = event();
        assert!(e.set_extension("myext", over).is_err());
        assert_eq!(e.extension("myext"), None);
    }

    #[test]
    fn extensions_are_typed_and_mutable() {
        let mut e = event();
        assert_eq!(e.extension("comexampleothervalue"), Some(&ExtensionValue::Integer(5)));
        assert_eq!(e.extension("flag").and_then(ExtensionValue::as_boolean), Some(true));
        assert_eq!(ExtensionValue::from("42").as_integer(), Some(42));
        assert_eq!(ExtensionValue::from("nope").as_integer(), None);
        assert_eq!(ExtensionValue::from("false").as_boolean(), Some(false));
        assert_eq!(ExtensionValue::from("False").as_boolean(), None);
        assert_eq!(ExtensionValue::from(-7).to_string(), "-7");
        assert_eq!(e.set_extension("knativebrokerttl", 255), Ok(None));
        assert_eq!(e.set_extension("knativebrokerttl", 254), Ok(Some(ExtensionValue::Integer(255))));
        assert!(e.set_extension("Bad", 1).is_err());
        assert!(e.set_extension("time", "x").is_err());
        assert!(e.set_extension("s", "a\u{0}").is_err());
        assert_eq!(e.remove_extension("knativebrokerttl"), Some(ExtensionValue::Integer(254)));
        assert_eq!(e.remove_extension("knativebrokerttl"), None);
        assert_eq!(e.attribute_string("comexampleothervalue").as_deref(), Some("5"));
        assert_eq!(e.attribute_string("type").as_deref(), Some("com.example.someevent"));
        assert_eq!(e.attribute_string("subject"), None);
        assert_eq!(e.attribute_string("data"), None);
    }

    #[test]
    fn cesql_reads_attributes_with_their_types() {
        let e = CloudEvent::builder()
            .id("1")
            .source("/s")
            .event_type("x")
            .extension("myext", 5)
            .data(json!({"type": "not-an-attribute"}))
            .build()
            .expect("valid");
        assert!(parse("type = 'x' AND myext > 3").expect("valid CESQL").matches(&e));
        assert!(!parse("type = 'y' AND myext > 3").expect("valid CESQL").matches(&e));
        assert!(!parse("myext > 5").expect("valid CESQL").matches(&e));
        assert!(parse("EXISTS id AND NOT EXISTS subject AND specversion = '1.0'").expect("valid").matches(&e));
        assert!(!parse("EXISTS data").expect("valid CESQL").matches(&e));

        let e = event();
        assert_eq!(e.attribute("comexampleothervalue"), Some(Value::Integer(5)));
        assert_eq!(e.attribute("flag"), Some(Value::Boolean(true)));
        assert_eq!(e.attribute("comexampleextension1"), Some(Value::from("value")));
        assert_eq!(e.attribute("time"), Some(Value::from("2018-04-05T17:31:00Z")));
        assert_eq!(e.attribute("source"), Some(Value::from("/mycontext")));
        assert_eq!(e.attribute("datacontenttype"), None);
        // An extension that arrived as a header string still compares as a number.
        let mut e = e;
        e.set_extension("myext", "5").expect("valid");
        assert!(parse("myext > 3").expect("valid CESQL").matches(&e));
    }

    #[test]
    fn data_bytes_is_the_binary_mode_body() {
        let base = || CloudEvent::builder().id("1").source("/s").event_type("t");
        let e = base().data(Bytes::from_static(b"\x00\x01")).build().expect("valid");
        assert_eq!(e.data_bytes(), Some(Bytes::from_static(b"\x00\x01")));
        let e = base().data("text").build().expect("valid");
        assert_eq!(e.data_bytes(), Some(Bytes::from_static(b"text")));
        let e = base().data(json!("I'm just a string")).build().expect("valid");
        assert_eq!(e.data_bytes(), Some(Bytes::from_static(b"\"I'm just a string\"")));
        let e = base().datacontenttype("application/xml").data(json!("<a/>")).build().expect("valid");
        assert_eq!(e.data_bytes(), Some(Bytes::from_static(b"<a/>")));
        let mut e = base().data(json!({"a": [1, true]})).build().expect("valid");
        assert_eq!(e.data_bytes(), Some(Bytes::from_static(br#"{"a":[1,true]}"#)));
        assert_eq!(e.take_data(), Some(Data::from(json!({"a": [1, true]}))));
        assert_eq!(e.data_bytes(), None);
    }

    #[test]
    fn serde_uses_the_json_format() {
        let e = event();
        let text = serde_json::to_string(&e).expect("serializes");
        let back: CloudEvent = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(back, e);
        let err = serde_json::from_str::<CloudEvent>(r#"{"specversion":"1.0"}"#).expect_err("invalid");
        assert!(err.to_string().contains("missing required attribute 'id'"), "{err}");
    }

    #[test]
    fn json_data_keeps_its_text_through_every_encoding() {
        let text = r#"{"b": 1, "a": [1.10, 2e3], "big": 123456789012345678901234567890}"#;
        let headers: ::http::HeaderMap = [
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-type", "t"),
            ("ce-source", "/s"),
            ("content-type", "application/json"),
        ]
        .into_iter()
        .map(|(n, v)| (::http::HeaderName::from_static(n), ::http::HeaderValue::from_static(v)))
        .collect();
        let event = decode_binary(&headers, Bytes::from(format!(" {text}\n"))).expect("valid");
        assert_eq!(
            event.data_bytes().as_deref(),
            Some(text.as_bytes()),
            "surrounding whitespace dropped, the rest kept"
        );
        let stored = from_json_str(&to_json_string(&event)).expect("JSON format");
        assert_eq!(stored.data_bytes().as_deref(), Some(text.as_bytes()));
        let batch = decode_batch(&encode_batch(&[stored]).1).expect("batch");
        assert_eq!(encode_binary(&batch[0]).1, text.as_bytes());
        // Equal as JSON values, whatever their spelling.
        assert_eq!(
            JsonData::parse_bytes(br#"{"a":1,"b":[true]}"#).ok(),
            JsonData::parse_bytes(br#"{ "b": [true], "a": 1 }"#).ok()
        );
        assert_ne!(JsonData::parse_bytes(b"1").ok(), JsonData::parse_bytes(b"2").ok());
        assert!(JsonData::parse_bytes(b"{} {}").is_err(), "one value");
        // What serde_json would not read into a tree is refused: too deep, a number out of
        // range, a lone surrogate; brackets inside strings do not count.
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(JsonData::parse_bytes(deep(100).as_bytes()).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&deep(200)).is_err());
        assert!(JsonData::parse_bytes(deep(200).as_bytes()).is_err());
        assert!(JsonData::parse_bytes(b"[1e400]").is_err());
        assert!(JsonData::parse_bytes(br#"["\ud800"]"#).is_err());
        assert!(JsonData::parse_bytes(format!(r#"[["[[[\"{}"]]"#, "[".repeat(200)).as_bytes()).is_ok());
    }
}
