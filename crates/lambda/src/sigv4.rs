//! Verifying AWS Signature Version 4 on requests to the Lambda API, as AWS SDKs sign them
//! (`Authorization: AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`).
//! Sans-IO. Written here rather than taken from `aws-sigv4`, which signs: verifying must
//! rebuild the canonical request from exactly the headers the client says it signed.

use std::time::{Duration, SystemTime};

use aws_lc_rs::{constant_time, digest, hmac};

/// How far a request's `X-Amz-Date` may be from the server's clock (AWS's limit).
const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// A key pair requests are signed with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// What the signature covers, taken from the request as received.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path as sent (percent-encoded as on the wire).
    pub path: &'a str,
    /// The query as sent, without `?`.
    pub query: &'a str,
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(digest::digest(&digest::SHA256, data).as_ref())
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data).as_ref().to_vec()
}

/// RFC 3986 percent-encoding of everything but unreserved characters (and `/` when
/// `keep_slash`), as SigV4 wants it.
fn uri_encode(text: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex_at = |j: usize| bytes.get(j).and_then(|b| (*b as char).to_digit(16));
        match (bytes[i], hex_at(i + 1), hex_at(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Checks `request`'s signature against `credentials` at `now`; `Err` says why it fails
/// (for the 403's message).
pub fn verify(request: &SignedRequest<'_>, credentials: &Credentials, now: SystemTime) -> Result<(), String> {
    let authorization = request
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("the request is not signed (no Authorization header)")?;
    let fields = authorization.strip_prefix("AWS4-HMAC-SHA256 ").ok_or("the signature is not AWS4-HMAC-SHA256")?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in fields.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => {}
        }
    }
    let (credential, signed_headers, signature) = match (credential, signed_headers, signature) {
        (Some(c), Some(h), Some(s)) => (c, h, s),
        _ => return Err("the Authorization header lacks Credential, SignedHeaders or Signature".into()),
    };
    let (access_key, scope) = credential.split_once('/').ok_or("a malformed Credential")?;
    if access_key != credentials.access_key_id {
        return Err("The security token included in the request is invalid.".into());
    }
    let amz_date =
        request.headers.get("x-amz-date").and_then(|v| v.to_str().ok()).ok_or("the request has no X-Amz-Date")?;
    let signed_at = humantime::parse_rfc3339(&format!(
        "{}-{}-{}T{}:{}:{}Z",
        amz_date.get(0..4).unwrap_or_default(),
        amz_date.get(4..6).unwrap_or_default(),
        amz_date.get(6..8).unwrap_or_default(),
        amz_date.get(9..11).unwrap_or_default(),
        amz_date.get(11..13).unwrap_or_default(),
        amz_date.get(13..15).unwrap_or_default()
    ))
    .map_err(|_| format!("X-Amz-Date {amz_date:?} is not a date"))?;
    let skew = now.duration_since(signed_at).or_else(|e| Ok::<_, String>(e.duration()))?;
    if skew > MAX_SKEW {
        return Err("Signature expired: the request's time is more than 15 minutes from the server's".into());
    }
    let expected = compute_signature(request, &credentials.secret_access_key, amz_date, scope, signed_headers)?;
    constant_time::verify_slices_are_equal(expected.as_bytes(), signature.as_bytes()).map_err(|_| {
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.".to_string()
    })
}

/// The signature of `request` for `secret`, signed at `amz_date` (`YYYYMMDDTHHMMSSZ`) in
/// `scope` (`date/region/service/aws4_request`) over the headers `signed_headers` names.
fn compute_signature(
    request: &SignedRequest<'_>,
    secret: &str,
    amz_date: &str,
    scope: &str,
    signed_headers: &str,
) -> Result<String, String> {
    let mut canonical_headers = String::new();
    for name in signed_headers.split(';') {
        let values: Vec<String> = request
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    let mut query: Vec<(String, String)> = request
        .query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (uri_encode(&percent_decode(k), false), uri_encode(&percent_decode(v), false))
        })
        .collect();
    query.sort();
    let canonical_query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let payload_hash = match request.headers.get("x-amz-content-sha256").and_then(|v| v.to_str().ok()) {
        Some(given) => given.to_string(),
        None => sha256_hex(request.body),
    };
    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        uri_encode(request.path.as_bytes(), true),
        canonical_query.join("&"),
        canonical_headers,
        signed_headers,
        payload_hash
    );
    let string_to_sign = format!("AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}", sha256_hex(canonical_request.as_bytes()));
    let mut parts = scope.split('/');
    let (Some(date), Some(region), Some(service), Some("aws4_request")) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("a malformed credential scope {scope:?}"));
    };
    let mut key = hmac_sha256(format!("AWS4{}", secret).as_bytes(), date.as_bytes());
    for part in [region, service, "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    Ok(hex(&hmac_sha256(&key, string_to_sign.as_bytes())))
}

/// `X-Amz-Date` of a time (`20150830T123600Z`).
pub fn amz_date(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string().replace(['-', ':'], "")
}

/// A request a client signs: what goes into its signature besides the date.
pub struct ClientRequest<'a> {
    /// The `Host` it is sent with (`127.0.0.1:8080`).
    pub host: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub body: &'a [u8],
}

/// A client's signature of `request` at `at` (the CLI's, the benchmarks'): the
/// `X-Amz-Date` and `Authorization` values to send with it.
pub fn sign(
    request: &ClientRequest<'_>,
    credentials: &Credentials,
    region: &str,
    at: SystemTime,
) -> Result<(String, String), String> {
    let date = amz_date(at);
    let mut headers = http::HeaderMap::new();
    let value = |text: &str| http::HeaderValue::from_str(text).map_err(|e| format!("{text:?}: {e}"));
    headers.insert(http::header::HOST, value(request.host)?);
    headers.insert("x-amz-date", value(&date)?);
    let ClientRequest { method, path, query, body, .. } = *request;
    let signed = SignedRequest { method, path, query, headers: &headers, body };
    let authorization = authorization(&signed, credentials, &date, region)?;
    Ok((date, authorization))
}

/// Signs a request (a client's side, see [`sign`]): the `Authorization` value
/// over `host` and `x-amz-date` (both must be among `request.headers`, `amz_date` the
/// latter's value) for service `lambda` in `region`.
pub fn authorization(
    request: &SignedRequest<'_>,
    credentials: &Credentials,
    amz_date: &str,
    region: &str,
) -> Result<String, String> {
    let scope = format!("{}/{region}/lambda/aws4_request", amz_date.get(..8).unwrap_or_default());
    let signed_headers = "host;x-amz-date";
    let signature = compute_signature(request, &credentials.secret_access_key, amz_date, &scope, signed_headers)?;
    Ok(format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amz_date_is_the_compact_form() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        assert_eq!(amz_date(at), "20150830T123600Z");
    }

    #[test]
    fn a_client_signature_verifies() {
        let credentials = Credentials { access_key_id: "AKID".into(), secret_access_key: "secret".into() };
        let request = ClientRequest {
            host: "127.0.0.1:8080",
            method: "POST",
            path: "/2015-03-31/functions/f/invocations",
            query: "Qualifier=live",
            body: b"{}",
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let (date, authorization) = sign(&request, &credentials, "us-east-1", at).expect("signs");
        assert_eq!(date, "20150830T123600Z");
        let mut headers = http::HeaderMap::new();
        headers.insert("host", http::HeaderValue::from_static("127.0.0.1:8080"));
        headers.insert("x-amz-date", http::HeaderValue::from_str(&date).expect("date"));
        headers.insert("authorization", http::HeaderValue::from_str(&authorization).expect("authorization"));
        let received =
            SignedRequest { method: "POST", path: request.path, query: request.query, headers: &headers, body: b"{}" };
        assert_eq!(verify(&received, &credentials, at), Ok(()));
        let other_body = SignedRequest { body: b"{\"x\": 1}", ..received };
        assert!(verify(&other_body, &credentials, at).is_err(), "the body is signed");
    }

    /// AWS's documented example (IAM ListUsers, "Create a signed AWS API request").
    #[test]
    fn the_documented_example_verifies() {
        let mut headers = http::HeaderMap::new();
        headers.insert("host", http::HeaderValue::from_static("iam.amazonaws.com"));
        headers
            .insert("content-type", http::HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"));
        headers.insert("x-amz-date", http::HeaderValue::from_static("20150830T123600Z"));
        headers.insert(
            "authorization",
            http::HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
            ),
        );
        let credentials = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        };
        let request = SignedRequest {
            method: "GET",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            headers: &headers,
            body: b"",
        };
        let at = humantime::parse_rfc3339("2015-08-30T12:36:00Z").expect("date");
        assert_eq!(verify(&request, &credentials, at), Ok(()));
        let wrong = Credentials { secret_access_key: "other".into(), ..credentials.clone() };
        assert!(verify(&request, &wrong, at).is_err_and(|e| e.contains("does not match")));
        let value = {
            let unsigned = SignedRequest { headers: &headers, ..request };
            authorization(&unsigned, &credentials, "20150830T123600Z", "us-east-1").expect("signs")
        };
        let mut signed = headers.clone();
        signed.insert("authorization", http::HeaderValue::from_str(&value).expect("header"));
        let ours = SignedRequest { headers: &signed, ..request };
        assert_eq!(verify(&ours, &credentials, at), Ok(()), "what we sign verifies");
        let late = at + Duration::from_secs(16 * 60);
        assert!(verify(&request, &credentials, late).is_err_and(|e| e.contains("expired")));
    }
}
