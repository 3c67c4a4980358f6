//! The seed's edge function, on the `edge-sdk` guest helper.
//!
//! One `EdgeRequest` JSON document in (stdin), one `EdgeResponse` JSON line out (stdout): the
//! same module answers one piped request in command mode and serves every request, each in a
//! fresh instance, in HTTP mode (`wasmedge.io/mode: http`).
//!
//! Fault injection for canary tests, from the environment (the sandbox policy must allow the
//! variables, e.g. `wasmedge.io/allowed-env: "REGION,FAILURE_PERCENT,DELAY_MS"`):
//! `FAILURE_PERCENT` (0-100) answers that share of requests with 500, `DELAY_MS` waits before
//! answering.

use edge_sdk::{EdgeRequest, EdgeResponse};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The seed's sample request: what command mode answers when stdin is empty.
pub const DEFAULT_REQUEST: &str = r#"{"path":"/api/v1/process","method":"POST","headers":{"content-type":"application/json","x-region":"ap-east-1"},"body":"{\"action\":\"transform\",\"data\":\"hello\"}","query":{}}"#;

/// Per-request context.
#[derive(Debug)]
pub struct EdgeContext {
    region: String,
    request_id: String,
    cold_start: bool,
}

impl EdgeContext {
    /// `region` comes from the `x-region` header, then the `REGION` environment variable.
    /// `cold_start`: the first request of this function's container (told by the shim).
    fn for_request(req: &EdgeRequest) -> Self {
        let region = req
            .header("x-region")
            .map(str::to_string)
            .or_else(|| std::env::var("REGION").ok())
            .unwrap_or_default();
        EdgeContext {
            region,
            request_id: new_request_id(),
            cold_start: req.cold_start(),
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
    let body = GetBody {
        path: &req.path,
        region: &ctx.region,
        cold_start: ctx.cold_start,
    };
    EdgeResponse::json(200, &body)
        .with_header("x-request-id", ctx.request_id.clone())
        .with_header("x-region", ctx.region.clone())
        .with_header("x-cold-start", ctx.cold_start.to_string())
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

    let body = PostBody {
        action,
        result: &result,
        region: &ctx.region,
    };
    EdgeResponse::json(200, &body).with_header("x-request-id", ctx.request_id.clone())
}

pub fn handle(req: &EdgeRequest, ctx: &EdgeContext) -> EdgeResponse {
    match req.method.as_str() {
        "GET" => handle_get(req, ctx),
        "POST" => handle_post(req, ctx),
        _ => EdgeResponse::error(405, "method not allowed"),
    }
}

/// The function: fault injection (see the module doc), then the seed's handler.
pub fn respond(req: EdgeRequest) -> EdgeResponse {
    injected_fault().unwrap_or_else(|| handle(&req, &EdgeContext::for_request(&req)))
}

/// Fault injection from the environment (see the module doc), before the real handler.
fn injected_fault() -> Option<EdgeResponse> {
    if let Some(ms) = env_number("DELAY_MS") {
        std::thread::sleep(Duration::from_millis(ms));
    }
    let percent = env_number("FAILURE_PERCENT")?;
    let roll = RandomState::new().build_hasher().finish() % 100;
    (roll < percent).then(|| EdgeResponse::error(500, "injected failure (FAILURE_PERCENT)"))
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
    fn request_id_format() {
        let id = new_request_id();
        assert_eq!(id.len(), 16);
        assert!(id.starts_with("req-"));
        assert!(id[4..].chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }

    #[test]
    fn cold_start_comes_from_the_host() {
        let mut r = req("GET", None);
        assert!(EdgeContext::for_request(&r).cold_start, "command mode: every run is cold");
        r.headers.insert(edge_sdk::COLD_START_HEADER.into(), "false".into());
        assert!(!EdgeContext::for_request(&r).cold_start);
    }
}
