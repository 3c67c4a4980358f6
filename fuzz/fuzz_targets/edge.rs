//! Fuzzes the HTTP-mode ABI: the EdgeRequest built from an HTTP request and the EdgeResponse
//! read from a function's stdout.
//!
//! Input: the first byte picks the side. Response side: the rest is a function's stdout;
//! properties: never panics, an accepted response has a final status and no header the server
//! manages itself. Request side: the rest is `METHOD TARGET\nname: value\n...\n\nbody`;
//! properties: never panics, an accepted request survives a JSON round trip unchanged and
//! carries the shim's cold-start header, never a client's.
#![no_main]

use containerd_shim_wasmedge::http::edge::{self, EdgeRequest, COLD_START_HEADER};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&side, rest)) = data.split_first() else { return };
    if side % 2 == 0 {
        if let Ok(response) = edge::response(rest) {
            assert!((200..=599).contains(&response.status.as_u16()));
            assert!(response.headers.iter().all(|(n, _)| n != "content-length" && n != "transfer-encoding"));
        }
        return;
    }
    let text = String::from_utf8_lossy(rest);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or("");
    let (method, target) = request_line.split_once(' ').unwrap_or((request_line, "/"));
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.trim().as_bytes()), HeaderValue::from_bytes(value.trim().as_bytes())) {
            headers.append(n, v);
        }
    }
    if let Ok(request) = edge::request(method, path, query, &headers, body.as_bytes(), true) {
        assert_eq!(request.headers.get(COLD_START_HEADER).map(String::as_str), Some("true"));
        let json = serde_json::to_vec(&request).unwrap();
        let back: EdgeRequest = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, request);
    }
});
