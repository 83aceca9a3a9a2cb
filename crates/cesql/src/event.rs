//! How the evaluator reads an event's context attributes.

use crate::Value;

/// Read access to the context attributes and extensions of one CloudEvent.
///
/// The evaluator only ever asks for lowercase names (CloudEvents attribute names are
/// lowercase alphanumerics). Implementations return `None` for an attribute the event
/// does not carry, which makes `EXISTS name` false and a reference to `name` a
/// missing-attribute error. `data` is not an attribute.
pub trait EventAttributes {
    /// The value of the attribute `name`: Boolean and Integer attributes as such,
    /// everything else (strings, URIs, timestamps, binary) as its String form.
    fn attribute(&self, name: &str) -> Option<Value>;
}

/// A CloudEvent in JSON structured format: attributes are the top-level members except
/// `data` and `data_base64`.
///
/// JSON booleans map to Boolean, integers that fit 32 bits to Integer, strings to String;
/// `null` means absent; any other value (a larger or fractional number, an array or an
/// object, none of which a valid event carries) is represented by its JSON text.
impl EventAttributes for serde_json::Map<String, serde_json::Value> {
    fn attribute(&self, name: &str) -> Option<Value> {
        if name == "data" || name == "data_base64" {
            return None;
        }
        match self.get(name)? {
            serde_json::Value::Null => None,
            serde_json::Value::Bool(b) => Some(Value::Boolean(*b)),
            serde_json::Value::String(s) => Some(Value::String(s.clone())),
            serde_json::Value::Number(n) => Some(
                n.as_i64()
                    .and_then(|i| i32::try_from(i).ok())
                    .map_or_else(|| Value::String(n.to_string()), Value::Integer),
            ),
            other => Some(Value::String(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        match v {
            serde_json::Value::Object(map) => map,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn json_members_map_to_cesql_types() {
        let e = event(json!({
            "specversion": "1.0", "id": "1", "time": "2018-04-26T14:48:09+02:00",
            "flag": true, "count": 10, "big": 4_000_000_000_i64, "ratio": 0.5,
            "nothing": null, "data": {"a": 1}, "data_base64": "AA==",
        }));
        assert_eq!(e.attribute("specversion"), Some(Value::from("1.0")));
        assert_eq!(e.attribute("time"), Some(Value::from("2018-04-26T14:48:09+02:00")));
        assert_eq!(e.attribute("flag"), Some(Value::from(true)));
        assert_eq!(e.attribute("count"), Some(Value::from(10)));
        assert_eq!(e.attribute("big"), Some(Value::from("4000000000")));
        assert_eq!(e.attribute("ratio"), Some(Value::from("0.5")));
        assert_eq!(e.attribute("nothing"), None);
        assert_eq!(e.attribute("data"), None);
        assert_eq!(e.attribute("data_base64"), None);
        assert_eq!(e.attribute("subject"), None);
    }
}
