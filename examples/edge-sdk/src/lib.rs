//! Write an edge function for containerd-shim-wasmedge in a few lines:
//!
//! ```no_run
//! use edge_sdk::{EdgeRequest, EdgeResponse};
//!
//! fn main() {
//!     edge_sdk::serve(|req: EdgeRequest| EdgeResponse::json(200, &serde_json::json!({ "path": req.path })));
//! }
//! ```
//!
//! The ABI is the process's standard streams: the request arrives as one `EdgeRequest` JSON
//! document on stdin, the response leaves as one `EdgeResponse` JSON line on stdout. In HTTP
//! mode (`wasmedge.io/mode: http`) the shim runs `main` in a fresh instance for every request;
//! in command mode the same module handles the one request piped to it. Anything the function
//! prints to stderr goes to the container log.

use std::collections::HashMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// Set by the shim in HTTP mode: `true` on the first request the container serves.
pub const COLD_START_HEADER: &str = "x-wasmedge-cold-start";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EdgeRequest {
    pub path: String,
    pub method: String,
    /// Lower-case names; repeated headers joined with ", ".
    #[serde(default)]
    pub headers: HashMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub query: HashMap<String, String>,
}

impl EdgeRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str)
    }

    /// Whether this is the first request this function's container handles (always true in
    /// command mode, where every run is a new process).
    pub fn cold_start(&self) -> bool {
        self.header(COLD_START_HEADER) != Some("false")
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EdgeResponse {
    pub status_code: u16,
    #[serde(default)]
    pub headers: HashMap<String, String>,
    #[serde(default)]
    pub body: String,
}

impl EdgeResponse {
    /// A response with `value` serialized as its JSON body.
    pub fn json<T: Serialize + ?Sized>(status_code: u16, value: &T) -> Self {
        let body = serde_json::to_string(value).unwrap_or_else(|_| "{}".to_string());
        EdgeResponse { status_code, headers: json_content_type(), body }
    }

    /// `{"error": message}` with the given status.
    pub fn error(status_code: u16, message: &str) -> Self {
        Self::json(status_code, &serde_json::json!({ "error": message }))
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.insert(name.to_ascii_lowercase(), value.into());
        self
    }
}

fn json_content_type() -> HashMap<String, String> {
    HashMap::from([("content-type".to_string(), "application/json".to_string())])
}

/// Reads the request from stdin, calls `handler`, writes the response to stdout. A request
/// that is not an EdgeRequest gets a 400 without calling the handler.
pub fn serve(handler: impl FnOnce(EdgeRequest) -> EdgeResponse) {
    serve_with_default(None, handler)
}

/// Like [`serve`]; an empty stdin is read as `default_request` (handy in command mode).
pub fn serve_with_default(default_request: Option<&str>, handler: impl FnOnce(EdgeRequest) -> EdgeResponse) {
    let mut input = String::new();
    let response = match std::io::stdin().read_to_string(&mut input) {
        Ok(_) => match parse(&input, default_request) {
            Ok(request) => handler(request),
            Err(message) => EdgeResponse::error(400, &message),
        },
        Err(e) => EdgeResponse::error(400, &format!("invalid request: {e}")),
    };
    let line = serde_json::to_string(&response).unwrap_or_else(|_| {
        r#"{"status_code":500,"headers":{},"body":"{\"error\":\"response serialization failed\"}"}"#.to_string()
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Parses a request document; `default_request` stands in for an empty one.
pub fn parse(input: &str, default_request: Option<&str>) -> Result<EdgeRequest, String> {
    let text = match (input.trim().is_empty(), default_request) {
        (true, Some(default)) => default,
        (true, None) => return Err("invalid request: empty input (expected an EdgeRequest JSON document)".into()),
        (false, _) => input,
    };
    serde_json::from_str(text).map_err(|e| format!("invalid request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_defaults() {
        let r = parse(r#"{"path":"/a","method":"GET"}"#, None).unwrap();
        assert_eq!((r.path.as_str(), r.method.as_str(), r.body.as_deref()), ("/a", "GET", None));
        assert!(r.cold_start());
        assert!(parse("  ", None).unwrap_err().contains("empty input"));
        assert_eq!(parse("", Some(r#"{"path":"/d","method":"POST"}"#)).unwrap().path, "/d");
        assert!(parse(r#"{"method":"GET"}"#, None).unwrap_err().starts_with("invalid request: "));
    }

    #[test]
    fn the_host_tells_warm_requests() {
        let mut r = EdgeRequest::default();
        r.headers.insert(COLD_START_HEADER.into(), "false".into());
        assert!(!r.cold_start());
    }

    #[test]
    fn responses_are_json() {
        let r = EdgeResponse::error(405, "method not allowed").with_header("X-Id", "1");
        assert_eq!(r.body, r#"{"error":"method not allowed"}"#);
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(r.headers["x-id"], "1");
    }
}
