//! Value and name rules of CloudEvents 1.0.2 (§"Naming Conventions", §"Type System",
//! and the constraints of each context attribute), shared by the builder and both codecs.

use super::{MAX_ATTRIBUTE_LEN, SPEC_VERSION};
use crate::EventError;

/// The context attributes the spec defines; every other attribute is an extension.
pub(crate) const KNOWN_ATTRIBUTES: [&str; 8] =
    ["specversion", "id", "source", "type", "datacontenttype", "dataschema", "subject", "time"];

/// Attribute names are lowercase ASCII letters and digits; `data` is reserved.
pub(crate) fn attribute_name(name: &str) -> Result<(), EventError> {
    let reason = if name.is_empty() {
        "attribute names must not be empty"
    } else if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()) {
        "attribute names must consist of lowercase letters a-z and digits 0-9 only"
    } else if name == "data" {
        "'data' is reserved for the event payload"
    } else {
        return Ok(());
    };
    Err(EventError::InvalidAttributeName { name: name.to_owned(), reason })
}

/// An extension name: a valid attribute name that is not one the spec defines.
pub(crate) fn extension_name(name: &str) -> Result<(), EventError> {
    attribute_name(name)?;
    if KNOWN_ATTRIBUTES.contains(&name) {
        return Err(EventError::InvalidAttributeName {
            name: name.to_owned(),
            reason: "this is a context attribute defined by the spec, not an extension",
        });
    }
    Ok(())
}

fn invalid(name: &str, reason: impl Into<String>) -> EventError {
    EventError::InvalidAttribute { name: name.to_owned(), reason: reason.into() }
}

/// Any attribute value: at most [`MAX_ATTRIBUTE_LEN`] bytes. Every check of a value below
/// starts with this one, before it scans the value or quotes it in an error.
fn length(name: &str, value: &str) -> Result<(), EventError> {
    if value.len() > MAX_ATTRIBUTE_LEN {
        return Err(invalid(
            name,
            format!("is {} bytes long; an attribute value may be at most {MAX_ATTRIBUTE_LEN} bytes", value.len()),
        ));
    }
    Ok(())
}

/// `specversion`: exactly [`SPEC_VERSION`].
pub(crate) fn specversion(value: String) -> Result<(), EventError> {
    length("specversion", &value)?;
    if value != SPEC_VERSION {
        return Err(EventError::UnsupportedSpecVersion(value));
    }
    Ok(())
}

/// A `String`-typed value: no control characters (U+0000–U+001F, U+007F–U+009F) and no
/// Unicode noncharacters. (Unpaired surrogates cannot occur in a Rust `str`.)
pub(crate) fn string_chars(name: &str, value: &str) -> Result<(), EventError> {
    length(name, value)?;
    // Printable ASCII (nearly every attribute) needs no decoding.
    if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Ok(());
    }
    match value.chars().find(|&c| c.is_control() || is_noncharacter(c)) {
        Some(c) => Err(invalid(name, format!("contains the disallowed character U+{:04X}", u32::from(c)))),
        None => Ok(()),
    }
}

fn is_noncharacter(c: char) -> bool {
    let c = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&c) || c & 0xFFFE == 0xFFFE
}

/// A non-empty `String` (`id`, `type`, `subject`).
pub(crate) fn non_empty_string(name: &str, value: &str) -> Result<(), EventError> {
    if value.is_empty() {
        return Err(invalid(name, "must not be empty"));
    }
    string_chars(name, value)
}

/// A non-empty URI-reference (RFC 3986 §4.1), checked as far as it matters for routing:
/// no whitespace or control characters, well-formed percent-escapes, at most one `#`,
/// and a well-formed scheme if the reference has one. Like most CloudEvents SDKs it
/// tolerates other characters RFC 3986 would have percent-encoded (IRI-style text).
pub(crate) fn uri_reference(name: &str, value: &str) -> Result<(), EventError> {
    length(name, value)?;
    if value.is_empty() {
        return Err(invalid(name, "must not be empty"));
    }
    if let Some(c) = value.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(
            name,
            format!("a URI reference must not contain whitespace or control characters (found U+{:04X})", u32::from(c)),
        ));
    }
    let bytes = value.as_bytes();
    for (i, _) in value.match_indices('%') {
        let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
        if !(hex(i + 1) && hex(i + 2)) {
            return Err(invalid(
                name,
                format!("invalid percent-escape at byte {i}: '%' must be followed by two hex digits"),
            ));
        }
    }
    if value.matches('#').count() > 1 {
        return Err(invalid(name, "a URI reference contains at most one '#'"));
    }
    if let Some(scheme) = scheme(value) {
        let valid = scheme.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
            && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !valid {
            return Err(invalid(name, format!("invalid URI scheme '{scheme}'")));
        }
    }
    Ok(())
}

/// The text before the first `:` if that colon comes before any `/`, `?` or `#` (RFC 3986:
/// a relative reference cannot have a colon in its first path segment).
fn scheme(value: &str) -> Option<&str> {
    let end = value.find([':', '/', '?', '#'])?;
    (value.as_bytes()[end] == b':').then(|| &value[..end])
}

/// A non-empty absolute URI (`dataschema`): a URI reference with a scheme.
pub(crate) fn uri(name: &str, value: &str) -> Result<(), EventError> {
    uri_reference(name, value)?;
    if scheme(value).is_none() {
        return Err(invalid(name, "must be an absolute URI with a scheme, such as https://example.com/schema"));
    }
    Ok(())
}

/// An RFC 3339 `date-time`: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, with calendar ranges
/// checked (leap years, and a leap second `:60`); `t` and `z` may be lowercase.
pub(crate) fn timestamp(name: &str, value: &str) -> Result<(), EventError> {
    length(name, value)?;
    if is_rfc3339(value.as_bytes()) {
        Ok(())
    } else {
        Err(invalid(name, format!("'{value}' is not an RFC 3339 timestamp such as 2018-04-05T17:31:00Z")))
    }
}

fn is_rfc3339(b: &[u8]) -> bool {
    let num = |from: usize, len: usize| -> Option<u32> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0u32, |acc, d| d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0')))
    };
    let at = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) =
        (num(0, 4), num(5, 2), num(8, 2), num(11, 2), num(14, 2), num(17, 2))
    else {
        return false;
    };
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt") && at(13, b":") && at(16, b":")) {
        return false;
    }
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if day == 0 || day > days || hour > 23 || minute > 59 || second > 60 {
        return false;
    }
    let mut i = 19;
    if at(i, b".") {
        let digits = b[i + 1..].iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 {
            return false;
        }
        i += 1 + digits;
    }
    match b.get(i) {
        Some(b'Z' | b'z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            i + 6 == b.len()
                && at(i + 3, b":")
                && num(i + 1, 2).is_some_and(|h| h <= 23)
                && num(i + 4, 2).is_some_and(|m| m <= 59)
        }
        _ => false,
    }
}

/// A media type (RFC 2046, as written in Content-Type): `type/subtype` made of HTTP
/// tokens, optionally followed by `; name=value` parameters, all in printable ASCII.
pub(crate) fn media_type(name: &str, value: &str) -> Result<(), EventError> {
    length(name, value)?;
    if let Some(c) = value.chars().find(|&c| !(c == ' ' || c == '\t' || c.is_ascii_graphic())) {
        return Err(invalid(name, format!("a media type is printable ASCII (found U+{:04X})", u32::from(c))));
    }
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    let well_formed = essence.split_once('/').is_some_and(|(t, s)| is_token(t) && is_token(s))
        && parts
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .all(|p| p.split_once('=').is_some_and(|(n, _)| is_token(n.trim())));
    if well_formed {
        Ok(())
    } else {
        Err(invalid(
            name,
            format!("'{value}' is not a media type such as application/json or text/plain; charset=utf-8"),
        ))
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The media type without parameters, lowercased: `Application/JSON; charset=utf-8` →
/// `application/json`.
pub(crate) fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()
}

/// Whether a content type declares JSON data (JSON format §3.1.1: `*/json` or `*/*+json`).
pub(crate) fn is_json_media_type(content_type: &str) -> bool {
    let essence = essence(content_type);
    essence.split_once('/').is_some_and(|(_, subtype)| subtype == "json" || subtype.ends_with("+json"))
}

/// Whether a content type declares text (`text/*`).
pub(crate) fn is_text_media_type(content_type: &str) -> bool {
    essence(content_type).starts_with("text/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_names_are_lowercase_alphanumerics() {
        for ok in ["id", "comexampleextension1", "a", "x1y2", "averyveryverylongnamebeyondtwentychars"] {
            assert_eq!(attribute_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "myExt", "my-ext", "my_ext", "ä", "data", "DATA", "with space"] {
            assert!(attribute_name(bad).is_err(), "{bad}");
        }
        assert!(extension_name("myext").is_ok());
        let err = extension_name("subject").expect_err("a known attribute");
        assert!(err.to_string().contains("not an extension"), "{err}");
    }

    #[test]
    fn strings_reject_control_characters_and_noncharacters() {
        assert!(string_chars("subject", "héllo wörld 😀").is_ok());
        assert!(string_chars("id", "partition:0/offset:5 ~").is_ok());
        for bad in ["a\nb", "a\u{0}", "a\u{7f}", "a\u{85}", "a\u{FDD0}", "a\u{FFFE}", "a\u{1FFFF}"] {
            assert!(string_chars("subject", bad).is_err(), "{bad:?}");
        }
        let err = non_empty_string("id", "").expect_err("empty id");
        assert_eq!(err.to_string(), "invalid value for attribute 'id': must not be empty");
    }

    #[test]
    fn uri_references_from_the_spec_are_valid() {
        for ok in [
            "https://github.com/cloudevents",
            "mailto:cncf-wg-serverless@lists.cncf.io",
            "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66",
            "/cloudevents/spec/pull/123",
            "/sensors/tn-1234567/alerts",
            "1-555-123-4567",
            "a/b:c",
            "/path%20with%2Fescapes?q=1#frag",
            "/café",
        ] {
            assert_eq!(uri_reference("source", ok), Ok(()), "{ok}");
        }
        for bad in ["", "/a b", "/a\tb", "1abc:x", ":x", "/100%", "/%zz", "/a#b#c", "a\u{85}b"] {
            assert!(uri_reference("source", bad).is_err(), "{bad:?}");
        }
        assert!(uri("dataschema", "https://example.com/schema.json").is_ok());
        assert!(uri("dataschema", "urn:example:schema").is_ok());
        assert!(uri("dataschema", "/relative/schema").is_err());
    }

    #[test]
    fn timestamps_follow_rfc3339() {
        for ok in [
            "2018-04-05T17:31:00Z",
            "2018-04-26T14:48:09+02:00",
            "2018-04-26T14:48:09.123456789-07:30",
            "1985-04-12t23:20:50.52z",
            "2020-02-29T00:00:00Z",
            "2016-12-31T23:59:60Z",
        ] {
            assert_eq!(timestamp("time", ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "2018-04-05",
            "2018-04-05T17:31:00",
            "2018-04-05 17:31:00Z",
            "2018-13-05T17:31:00Z",
            "2019-02-29T00:00:00Z",
            "2018-04-31T00:00:00Z",
            "2018-04-05T24:00:00Z",
            "2018-04-05T17:31:00.Z",
            "2018-04-05T17:31:00+0200",
            "2018-04-05T17:31:00+24:00",
            "2018-04-05T17:31:00Zjunk",
            "yesterday",
        ] {
            assert!(timestamp("time", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_value_check_bounds_the_length_first() {
        // A valid value of `len` bytes for each check: a prefix and suffix around digits.
        let sized = |prefix: &str, suffix: &str, len: usize| {
            format!("{prefix}{}{suffix}", "1".repeat(len - prefix.len() - suffix.len()))
        };
        type Check = fn(&str, &str) -> Result<(), EventError>;
        let checks: [(Check, &str, &str); 6] = [
            (string_chars, "", ""),
            (non_empty_string, "", ""),
            (uri_reference, "/", ""),
            (uri, "https://e/", ""),
            (timestamp, "2018-04-05T17:31:00.", "Z"),
            (media_type, "text/plain; p=", ""),
        ];
        for (check, prefix, suffix) in checks {
            assert_eq!(check("attr", &sized(prefix, suffix, MAX_ATTRIBUTE_LEN)), Ok(()), "{prefix}");
            let err = check("attr", &sized(prefix, suffix, MAX_ATTRIBUTE_LEN + 1)).expect_err(prefix).to_string();
            assert_eq!(
                err,
                "invalid value for attribute 'attr': is 4097 bytes long; an attribute value may be at most 4096 bytes"
            );
        }
        assert_eq!(specversion("1.0".into()), Ok(()));
        assert_eq!(specversion("0.3".into()), Err(EventError::UnsupportedSpecVersion("0.3".into())));
        let err = specversion("1".repeat(MAX_ATTRIBUTE_LEN + 1)).expect_err("too long").to_string();
        assert!(err.starts_with("invalid value for attribute 'specversion': is 4097 bytes long"), "{err}");
    }

    #[test]
    fn media_types_and_json_detection() {
        for ok in ["application/json", "text/plain; charset=utf-8", "application/vnd.apache.thrift.binary", "a/b;"] {
            assert_eq!(media_type("datacontenttype", ok), Ok(()), "{ok}");
        }
        for bad in ["", "json", "application/", "/json", "text/plain; =x", "text/plain; charset", "tëxt/plain"] {
            assert!(media_type("datacontenttype", bad).is_err(), "{bad}");
        }
        for json in ["application/json", "Application/JSON; charset=utf-8", "text/json", "application/ld+json"] {
            assert!(is_json_media_type(json), "{json}");
        }
        for other in ["application/xml", "text/plain", "application/jsonx", "json"] {
            assert!(!is_json_media_type(other), "{other}");
        }
        assert!(is_text_media_type("Text/Plain; charset=utf-8"));
        assert!(!is_text_media_type("application/json"));
    }
}
