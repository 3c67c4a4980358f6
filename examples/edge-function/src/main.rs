//! Edge function, "command mode".
//!
//! Reads exactly one `EdgeRequest` JSON document from stdin and writes exactly
//! one `EdgeResponse` JSON document (a single line) to stdout. The request
//! handling lives in `handle` / `handle_get` / `handle_post` so it can later be
//! reused by an HTTP front end without changes.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Request used when stdin is empty (or whitespace only).
const DEFAULT_REQUEST: &str = r#"{"path":"/api/v1/process","method":"POST","headers":{"content-type":"application/json","x-region":"ap-east-1"},"body":"{\"action\":\"transform\",\"data\":\"hello\"}","query":{}}"#;

#[derive(Debug, Deserialize)]
pub struct EdgeRequest {
    pub path: String,
    pub method: String,
    #[serde(default)]
    pub headers: HashMap<String, String>,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub query: HashMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct EdgeResponse {
    pub status_code: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

/// Per-request context. Public type (fields private) because `handle` is public.
#[derive(Debug)]
pub struct EdgeContext {
    region: String,
    request_id: String,
    cold_start: bool,
}

/// Set once the process has handled its first request.
static WARM: AtomicBool = AtomicBool::new(false);

impl EdgeContext {
    /// Build the per-request context. `region` comes from the `x-region`
    /// header, then the `REGION` environment variable, else empty.
    fn for_request(req: &EdgeRequest) -> Self {
        let region = req
            .headers
            .get("x-region")
            .cloned()
            .or_else(|| std::env::var("REGION").ok())
            .unwrap_or_default();
        let cold_start = !WARM.swap(true, Ordering::SeqCst);
        EdgeContext {
            region,
            request_id: new_request_id(),
            cold_start,
        }
    }
}

/// `req-` followed by 12 lowercase hex digits derived from the current time.
fn new_request_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("req-{:012x}", nanos % 0xFFFF_FFFF_FFFF)
}

/// GET response body; a struct (not `json!`) so the key order is stable.
#[derive(Serialize)]
struct GetBody<'a> {
    path: &'a str,
    region: &'a str,
    #[serde(rename = "coldStart")]
    cold_start: bool,
}

/// POST response body.
#[derive(Serialize)]
struct PostBody<'a> {
    action: &'a str,
    result: &'a str,
    region: &'a str,
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_string())
}

fn json_headers() -> HashMap<String, String> {
    let mut h = HashMap::new();
    h.insert("content-type".to_string(), "application/json".to_string());
    h
}

fn error_response(status_code: u16, message: &str) -> EdgeResponse {
    EdgeResponse {
        status_code,
        headers: json_headers(),
        body: json!({ "error": message }).to_string(),
    }
}

/// djb2 over the bytes of `data`, as lowercase hex.
fn djb2_hex(data: &str) -> String {
    let hash = data
        .bytes()
        .fold(5381u64, |h, b| h.wrapping_mul(33).wrapping_add(b as u64));
    format!("{hash:x}")
}

fn apply_action(action: &str, data: &str) -> String {
    match action {
        "transform" => data.to_uppercase(),
        "hash" => djb2_hex(data),
        _ => data.to_string(),
    }
}

fn handle_get(req: &EdgeRequest, ctx: &EdgeContext) -> EdgeResponse {
    let mut headers = json_headers();
    headers.insert("x-request-id".to_string(), ctx.request_id.clone());
    headers.insert("x-region".to_string(), ctx.region.clone());
    headers.insert("x-cold-start".to_string(), ctx.cold_start.to_string());
    let body = GetBody {
        path: &req.path,
        region: &ctx.region,
        cold_start: ctx.cold_start,
    };
    EdgeResponse {
        status_code: 200,
        headers,
        body: to_json(&body),
    }
}

fn handle_post(req: &EdgeRequest, ctx: &EdgeContext) -> EdgeResponse {
    let raw = req.body.as_deref().unwrap_or("{}");
    let payload: Value = serde_json::from_str(raw).unwrap_or_else(|_| json!({}));
    let action = payload
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    let data = payload.get("data").and_then(Value::as_str).unwrap_or("");
    let result = apply_action(action, data);

    let mut headers = json_headers();
    headers.insert("x-request-id".to_string(), ctx.request_id.clone());
    let body = PostBody {
        action,
        result: &result,
        region: &ctx.region,
    };
    EdgeResponse {
        status_code: 200,
        headers,
        body: to_json(&body),
    }
}

pub fn handle(req: &EdgeRequest, ctx: &EdgeContext) -> EdgeResponse {
    match req.method.as_str() {
        "GET" => handle_get(req, ctx),
        "POST" => handle_post(req, ctx),
        _ => error_response(405, "method not allowed"),
    }
}

/// Turn raw stdin text into a response (parsing included).
fn process(input: &str) -> EdgeResponse {
    let text = if input.trim().is_empty() {
        DEFAULT_REQUEST
    } else {
        input
    };
    match serde_json::from_str::<EdgeRequest>(text) {
        Ok(req) => {
            let ctx = EdgeContext::for_request(&req);
            handle(&req, &ctx)
        }
        Err(e) => error_response(400, &format!("invalid request: {e}")),
    }
}

fn main() {
    let mut input = String::new();
    let response = match io::stdin().read_to_string(&mut input) {
        Ok(_) => process(&input),
        Err(e) => error_response(400, &format!("invalid request: {e}")),
    };
    let line = serde_json::to_string(&response).unwrap_or_else(|_| {
        r#"{"status_code":500,"headers":{},"body":"{\"error\":\"serialization failed\"}"}"#
            .to_string()
    });
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, body: Option<&str>) -> EdgeRequest {
        EdgeRequest {
            path: "/api/v1/process".to_string(),
            method: method.to_string(),
            headers: HashMap::new(),
            body: body.map(str::to_string),
            query: HashMap::new(),
        }
    }

    fn ctx(cold_start: bool) -> EdgeContext {
        EdgeContext {
            region: "ap-east-1".to_string(),
            request_id: "req-000000000001".to_string(),
            cold_start,
        }
    }

    fn body_json(resp: &EdgeResponse) -> Value {
        serde_json::from_str(&resp.body).expect("response body is JSON")
    }

    #[test]
    fn transform_uppercases() {
        assert_eq!(apply_action("transform", "hello"), "HELLO");
        let r = req("POST", Some(r#"{"action":"transform","data":"hello"}"#));
        let resp = handle(&r, &ctx(true));
        assert_eq!(resp.status_code, 200);
        let b = body_json(&resp);
        assert_eq!(b["action"], "transform");
        assert_eq!(b["result"], "HELLO");
        assert_eq!(b["region"], "ap-east-1");
        assert_eq!(resp.headers["x-request-id"], "req-000000000001");
    }

    #[test]
    fn hash_is_djb2_hex() {
        // djb2("hello"), h = h*33 + byte, starting at 5381:
        //   5381*33 + 104('h') = 177677
        //   177677*33 + 101('e') = 5863442
        //   5863442*33 + 108('l') = 193493694
        //   193493694*33 + 108('l') = 6385292010
        //   6385292010*33 + 111('o') = 210714636441 = 0x31_0f92_3099
        assert_eq!(djb2_hex("hello"), "310f923099");
        let r = req("POST", Some(r#"{"action":"hash","data":"hello"}"#));
        assert_eq!(body_json(&handle(&r, &ctx(false)))["result"], "310f923099");
    }

    #[test]
    fn unknown_action_and_bad_body() {
        let r = req("POST", Some(r#"{"action":"echo","data":"MiXeD"}"#));
        assert_eq!(body_json(&handle(&r, &ctx(false)))["result"], "MiXeD");
        let r = req("POST", Some("not json"));
        let b = body_json(&handle(&r, &ctx(false)));
        assert_eq!(b["action"], "unknown");
        assert_eq!(b["result"], "");
        let r = req("POST", None);
        assert_eq!(handle(&r, &ctx(false)).status_code, 200);
    }

    #[test]
    fn put_is_method_not_allowed() {
        let resp = handle(&req("PUT", None), &ctx(false));
        assert_eq!(resp.status_code, 405);
        assert_eq!(resp.headers["content-type"], "application/json");
        assert_eq!(body_json(&resp), json!({"error": "method not allowed"}));
    }

    #[test]
    fn get_body_fields() {
        let mut r = req("GET", None);
        r.path = "/x".to_string();
        let resp = handle(&r, &ctx(true));
        assert_eq!(resp.status_code, 200);
        assert_eq!(body_json(&resp), json!({"path": "/x", "region": "ap-east-1", "coldStart": true}));
        assert_eq!(resp.headers["x-region"], "ap-east-1");
        assert_eq!(resp.headers["x-cold-start"], "true");
        assert_eq!(resp.headers["content-type"], "application/json");
    }

    #[test]
    fn invalid_request_is_400() {
        let resp = process(r#"{"method":"GET"}"#);
        assert_eq!(resp.status_code, 400);
        let b = body_json(&resp);
        assert!(b["error"].as_str().unwrap().starts_with("invalid request: "));
    }

    #[test]
    fn request_id_format() {
        let id = new_request_id();
        assert_eq!(id.len(), 16);
        assert!(id.starts_with("req-"));
        assert!(id[4..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn cold_start_only_once() {
        // Any request through `for_request` after the first is warm.
        let r = req("GET", None);
        let _ = EdgeContext::for_request(&r);
        assert!(!EdgeContext::for_request(&r).cold_start);
    }
}
