//! The function ABI of HTTP mode: the HTTP request becomes the seed's `EdgeRequest` JSON on the
//! instance's stdin; the instance writes one `EdgeResponse` JSON document to stdout.
//!
//! The same module therefore runs unchanged in command mode (`echo '{…}' | module`) and in HTTP
//! mode, and a guest needs nothing but serde to target it (see `examples/edge-sdk`). Pure code:
//! bytes in, values or errors out (fuzzed in `fuzz/`).

use std::collections::BTreeMap;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

/// What the function receives. Header names are lower case; repeated headers are joined with
/// ", " (RFC 9110 list syntax); `body` is absent for an empty body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeRequest {
    pub path: String,
    pub method: String,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    pub query: BTreeMap<String, String>,
}

/// What the function returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeResponse {
    pub status_code: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: String,
}

/// Why a request cannot be handed to the function (the client's fault: 4xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest(pub String);

/// Headers under this prefix are set by the shim only; clients' copies are dropped.
pub const HOST_HEADER_PREFIX: &str = "x-wasmedge-";
/// `true` on the first request the container serves, `false` after.
pub const COLD_START_HEADER: &str = "x-wasmedge-cold-start";

/// Builds the EdgeRequest of an HTTP request.
pub fn request(
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    cold_start: bool,
) -> Result<EdgeRequest, BadRequest> {
    let mut joined: BTreeMap<String, String> = BTreeMap::new();
    joined.insert(COLD_START_HEADER.to_string(), cold_start.to_string());
    for (name, value) in headers
        .iter()
        .filter(|(name, _)| !name.as_str().starts_with(HOST_HEADER_PREFIX))
    {
        let value = value
            .to_str()
            .map_err(|_| BadRequest(format!("header {name} is not visible ASCII text")))?;
        joined
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(value);
            })
            .or_insert_with(|| value.to_string());
    }
    let body = match body {
        [] => None,
        bytes => Some(
            std::str::from_utf8(bytes)
                .map_err(|_| {
                    BadRequest(
                        "the request body is not UTF-8 text (EdgeRequest.body is a string)".into(),
                    )
                })?
                .to_string(),
        ),
    };
    // A repeated query key keeps its last value, as the seed's map type implies.
    let query = form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    Ok(EdgeRequest {
        path: path.to_string(),
        method: method.to_string(),
        headers: joined,
        body,
        query,
    })
}

/// Headers the server manages itself; a function cannot set them.
const SERVER_HEADERS: &[&str] = &[
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
];

/// A checked response: status, headers valid for HTTP/1.1, body.
#[derive(Debug)]
pub struct ValidResponse {
    pub status: hyper::StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: String,
}

/// Reads the function's stdout. Lines the function printed before its response (logging with
/// `println!`) are tolerated: the last non-empty line must then be the response.
pub fn response(stdout: &[u8]) -> Result<ValidResponse, String> {
    let text = std::str::from_utf8(stdout)
        .map_err(|_| "the function's output is not UTF-8".to_string())?;
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("the function wrote no EdgeResponse to stdout".into());
    }
    let parsed: EdgeResponse = match serde_json::from_str(trimmed) {
        Ok(r) => r,
        Err(whole) => {
            let last = trimmed
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            serde_json::from_str(last).map_err(|_| {
                format!("the function's output is not an EdgeResponse JSON document: {whole}")
            })?
        }
    };
    let status = hyper::StatusCode::from_u16(parsed.status_code)
        .ok()
        .filter(|s| (200..=599).contains(&s.as_u16()))
        .ok_or_else(|| {
            format!(
                "status_code {} is not a final HTTP status (200-599)",
                parsed.status_code
            )
        })?;
    let mut headers = Vec::with_capacity(parsed.headers.len());
    for (name, value) in &parsed.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("invalid header name {name:?}"))?;
        if SERVER_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let value =
            HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name}"))?;
        headers.push((name, value));
    }
    Ok(ValidResponse {
        status,
        headers,
        body: parsed.body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_everything_the_function_needs() {
        let mut headers = HeaderMap::new();
        headers.insert("x-region", HeaderValue::from_static("ap-east-1"));
        headers.append("accept", HeaderValue::from_static("a/b"));
        headers.append("accept", HeaderValue::from_static("c/d"));
        headers.insert(COLD_START_HEADER, HeaderValue::from_static("false"));
        let r = request(
            "POST",
            "/api/v1/process",
            Some("a=1&b=x%20y&a=2"),
            &headers,
            br#"{"x":1}"#,
            true,
        )
        .unwrap();
        assert_eq!(
            r.headers[COLD_START_HEADER], "true",
            "only the shim sets it"
        );
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/api/v1/process");
        assert_eq!(r.headers["x-region"], "ap-east-1");
        assert_eq!(r.headers["accept"], "a/b, c/d");
        assert_eq!(r.query["a"], "2");
        assert_eq!(r.query["b"], "x y");
        assert_eq!(r.body.as_deref(), Some(r#"{"x":1}"#));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["body"], r#"{"x":1}"#);
        let empty = request("GET", "/", None, &HeaderMap::new(), b"", false).unwrap();
        assert_eq!(empty.headers[COLD_START_HEADER], "false");
        assert_eq!(empty.body, None);
        assert!(empty.query.is_empty());
    }

    #[test]
    fn binary_bodies_are_refused() {
        let e = request("POST", "/", None, &HeaderMap::new(), &[0xff, 0xfe], false).unwrap_err();
        assert!(e.0.contains("not UTF-8"), "{e:?}");
    }

    #[test]
    fn responses_are_checked() {
        let ok = response(br#"{"status_code":201,"headers":{"content-type":"application/json","content-length":"99"},"body":"{}"}"#).unwrap();
        assert_eq!(ok.status, 201);
        assert_eq!(ok.headers.len(), 1, "content-length is the server's");
        assert_eq!(ok.body, "{}");
        let logged = response(b"handling request\n{\"status_code\":200,\"body\":\"x\"}\n").unwrap();
        assert_eq!(logged.body, "x");
        for (bad, expect) in [
            (&b""[..], "no EdgeResponse"),
            (b"hello", "not an EdgeResponse"),
            (br#"{"status_code":99}"#, "not a final HTTP status"),
            (br#"{"status_code":101}"#, "not a final HTTP status"),
            (
                br#"{"status_code":200,"headers":{"bad name":"x"}}"#,
                "invalid header name",
            ),
            (
                br#"{"status_code":200,"headers":{"x":"a\nb"}}"#,
                "invalid value",
            ),
            (&[0xff][..], "not UTF-8"),
        ] {
            let e = response(bad).unwrap_err();
            assert!(
                e.contains(expect),
                "{:?} -> {e}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
