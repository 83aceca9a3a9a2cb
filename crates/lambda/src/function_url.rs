//! Lambda Function URL events (payload format 2.0): an HTTP request to a function through
//! the gateway becomes the event, and the function's result becomes the HTTP response.

use std::time::SystemTime;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use serde_json::{Map, Value, json};

/// Whether a body of this content type travels as text (else base64).
fn is_text(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else { return true };
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json" | "application/xml" | "application/javascript" | "application/x-www-form-urlencoded"
        )
}

/// The event of a request (`path_and_query` as the function sees it, after the gateway's
/// routing prefix) with id `request_id`.
pub fn event(
    request_id: &str,
    function: &str,
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Value {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    let mut header_map = Map::new();
    let mut cookies = Vec::new();
    for (name, value) in headers {
        let Ok(value) = value.to_str() else { continue };
        if name == http::header::COOKIE {
            cookies.extend(value.split(';').map(|c| Value::String(c.trim().to_string())));
            continue;
        }
        match header_map.get_mut(name.as_str()) {
            Some(Value::String(joined)) => {
                joined.push(',');
                joined.push_str(value);
            }
            _ => {
                header_map.insert(name.to_string(), Value::String(value.to_string()));
            }
        }
    }
    let mut parameters = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match parameters.get_mut(key) {
            Some(Value::String(joined)) => {
                joined.push(',');
                joined.push_str(value);
            }
            _ => {
                parameters.insert(key.to_string(), Value::String(value.to_string()));
            }
        }
    }
    let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let text = is_text(content_type) && std::str::from_utf8(body).is_ok();
    let body_value = if body.is_empty() {
        Value::Null
    } else if text {
        Value::String(String::from_utf8_lossy(body).into_owned())
    } else {
        Value::String(base64::engine::general_purpose::STANDARD.encode(body))
    };
    let epoch_ms = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let host = headers.get(http::header::HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let source_ip = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1");
    let source_ip = source_ip.split(',').next().unwrap_or_default().trim();
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "cookies": if cookies.is_empty() { Value::Null } else { Value::Array(cookies) },
        "headers": header_map,
        "queryStringParameters": if parameters.is_empty() { Value::Null } else { Value::Object(parameters) },
        "requestContext": {
            "accountId": "anonymous",
            "apiId": function,
            "domainName": host,
            "domainPrefix": host.split('.').next().unwrap_or_default(),
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": headers.get(http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default(),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": humantime::format_rfc3339_millis(now).to_string(),
            "timeEpoch": epoch_ms,
        },
        "body": body_value,
        "isBase64Encoded": !body.is_empty() && !text,
    })
}

/// The HTTP response of a function's result: a JSON object with `statusCode` is a
/// response (`headers`, `body`, `isBase64Encoded`, `cookies`); any other result is a 200
/// with the result as a JSON body.
pub fn response(result: &[u8]) -> Response<Bytes> {
    let parsed: Option<Value> = serde_json::from_slice(result).ok();
    let Some(Value::Object(fields)) = parsed.as_ref().filter(|v| v.get("statusCode").is_some()) else {
        return Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Bytes::copy_from_slice(result))
            .unwrap_or_default();
    };
    let status = fields
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::builder().status(status);
    let mut has_content_type = false;
    for (name, value) in fields.get("headers").and_then(Value::as_object).into_iter().flatten() {
        let value = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value)) {
            has_content_type |= name == http::header::CONTENT_TYPE;
            response = response.header(name, value);
        }
    }
    for cookie in fields.get("cookies").and_then(Value::as_array).into_iter().flatten() {
        if let Some(Ok(value)) = cookie.as_str().map(HeaderValue::try_from) {
            response = response.header(http::header::SET_COOKIE, value);
        }
    }
    if !has_content_type {
        response = response.header(http::header::CONTENT_TYPE, "application/json");
    }
    let body = match fields.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(text)) if fields.get("isBase64Encoded") == Some(&Value::Bool(true)) => {
            Bytes::from(base64::engine::general_purpose::STANDARD.decode(text).unwrap_or_default())
        }
        Some(Value::String(text)) => Bytes::from(text.clone()),
        Some(other) => Bytes::from(other.to_string()),
    };
    response.body(body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_becomes_a_version_2_event() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("hello.default.localhost:8080"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("cookie", HeaderValue::from_static("a=1; b=2"));
        let e = event("r1", "hello", "POST", "/p/q?x=1&x=2&y", &headers, br#"{"k":1}"#, SystemTime::UNIX_EPOCH);
        assert_eq!(e["version"], "2.0");
        assert_eq!((e["rawPath"].as_str(), e["rawQueryString"].as_str()), (Some("/p/q"), Some("x=1&x=2&y")));
        assert_eq!(e["queryStringParameters"], json!({"x": "1,2", "y": ""}));
        assert_eq!(e["cookies"], json!(["a=1", "b=2"]));
        assert_eq!(e["requestContext"]["http"]["method"], "POST");
        assert_eq!((e["body"].as_str(), e["isBase64Encoded"].as_bool()), (Some(r#"{"k":1}"#), Some(false)));
        headers.insert("content-type", HeaderValue::from_static("image/png"));
        let e = event("r2", "hello", "PUT", "/", &headers, &[0, 255], SystemTime::UNIX_EPOCH);
        assert_eq!((e["body"].as_str(), e["isBase64Encoded"].as_bool()), (Some("AP8="), Some(true)));
    }

    #[test]
    fn results_become_responses() {
        let r = response(br#"{"statusCode": 201, "headers": {"x-a": "1"}, "body": "made", "cookies": ["s=1"]}"#);
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["x-a"], "1");
        assert_eq!(r.headers()["set-cookie"], "s=1");
        assert_eq!(r.body().as_ref(), b"made");
        let r = response(br#"{"statusCode": 200, "body": "aGk=", "isBase64Encoded": true}"#);
        assert_eq!(r.body().as_ref(), b"hi");
        let r = response(br#"{"greeting": "hi"}"#);
        assert_eq!((r.status().as_u16(), r.headers()["content-type"].to_str().ok()), (200, Some("application/json")));
        assert_eq!(r.body().as_ref(), br#"{"greeting": "hi"}"#);
    }
}
