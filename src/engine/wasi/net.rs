//! Outbound HTTP for modules, the only network access they get: the import module
//! `edge_http` with one function,
//!
//! `fetch(req_ptr, req_len, out_ptr, out_cap) -> i32`
//!
//! `req` is `METHOD URL`, optionally followed by a newline and the request body; the response
//! body is written to `out` (truncated to `out_cap`) and its length returned. Errors are
//! negative: -1 host not allowed, -2 request budget spent, -3 network or HTTP failure, -4 bad
//! request, -5 bad pointers. The host is checked against the policy's `allowed_hosts` before
//! anything is resolved or connected, so a denied server never sees a connection; every
//! attempt that passes the host check counts against `max_network_requests`.

use std::time::{Duration, Instant};

use wasmedge_sdk::error::{CoreCommonError, CoreError};
use wasmedge_sdk::{ImportObject, ImportObjectBuilder, WasmEdgeResult, WasmValue};
use wasmedge_sys::{CallingFrame, Instance};

use super::mem::Mem;

pub const MODULE_NAME: &str = "edge_http";

pub const HOST_NOT_ALLOWED: i32 = -1;
pub const BUDGET_SPENT: i32 = -2;
pub const FETCH_FAILED: i32 = -3;
pub const BAD_REQUEST: i32 = -4;
pub const BAD_POINTER: i32 = -5;

/// Largest response body read from a server.
const MAX_BODY: u64 = 1 << 20;
/// Longest one request may take, when the call's time limit leaves more.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct NetCtx {
    allowed_hosts: Vec<String>,
    max_requests: u32,
    used: u32,
    violations: Vec<String>,
    /// End of the call's time limit: a request gets at most the time left.
    deadline: Option<Instant>,
    timed_out: bool,
}

impl NetCtx {
    /// `allowed_hosts` are compared case-insensitively with the URL's host.
    pub fn new(allowed_hosts: Vec<String>, max_requests: u32) -> Self {
        let allowed_hosts = allowed_hosts
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        Self {
            allowed_hosts,
            max_requests,
            ..Default::default()
        }
    }

    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Starts the call's time limit now (`None`: none but each request's own [`TIMEOUT`]).
    pub fn set_time_limit(&mut self, limit: Option<Duration>) {
        self.deadline = limit.map(|l| Instant::now() + l);
        self.timed_out = false;
    }

    /// A request ran into the call's time limit, which ended the call.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// The time a request may take now; zero once the limit has passed.
    fn time_left(&self) -> Duration {
        match self.deadline {
            Some(deadline) => deadline
                .saturating_duration_since(Instant::now())
                .min(TIMEOUT),
            None => TIMEOUT,
        }
    }

    pub fn requests_made(&self) -> u32 {
        self.used
    }

    fn deny(&mut self, violation: String) {
        if !self.violations.contains(&violation) {
            self.violations.push(violation);
        }
    }

    /// The policy decision and the request itself; returns the body or an error code.
    fn fetch(&mut self, request: &str) -> Result<Vec<u8>, i32> {
        let (head, body) = request.split_once('\n').unwrap_or((request, ""));
        let (method, url) = head.trim().split_once(' ').ok_or(BAD_REQUEST)?;
        let host = http_host(url).ok_or(BAD_REQUEST)?;
        if !self.allowed_hosts.iter().any(|h| h == &host) {
            self.deny(format!("host not allowed: {host}"));
            return Err(HOST_NOT_ALLOWED);
        }
        if self.used >= self.max_requests {
            self.deny(format!(
                "network request limit reached: {} (max_network_requests)",
                self.max_requests
            ));
            return Err(BUDGET_SPENT);
        }
        self.used += 1;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(self.time_left()))
            .max_redirects(0)
            .http_status_as_error(false)
            .build()
            .into();
        let method = method.to_ascii_uppercase();
        let response = match method.as_str() {
            "GET" => agent.get(url).call(),
            "DELETE" => agent.delete(url).call(),
            "POST" => agent.post(url).send(body.as_bytes()),
            "PUT" => agent.put(url).send(body.as_bytes()),
            _ => return Err(BAD_REQUEST),
        };
        let mut response = response.map_err(|e| {
            log::info!("edge_http: {method} {url} failed: {e}");
            FETCH_FAILED
        })?;
        response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()
            .map_err(|_| FETCH_FAILED)
    }
}

/// The lowercase host of an `http://` URL (no TLS: edge functions talk to local services).
fn http_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

fn fetch(
    ctx: &mut NetCtx,
    _inst: &mut Instance,
    frame: &mut CallingFrame,
    args: Vec<WasmValue>,
) -> Result<Vec<WasmValue>, CoreError> {
    let arg = |i: usize| args.get(i).map(|v| v.to_i32() as u32).unwrap_or(0);
    let (req_ptr, req_len, out_ptr, out_cap) = (arg(0), arg(1), arg(2), arg(3));
    if ctx.time_left().is_zero() {
        ctx.timed_out = true;
        return Err(CoreError::Common(CoreCommonError::Terminated));
    }
    let mut mem = Mem::of(frame);
    let code = match mem
        .slice(req_ptr, req_len)
        .map(|b| String::from_utf8_lossy(b).into_owned())
    {
        Err(_) => BAD_POINTER,
        Ok(request) => match ctx.fetch(&request) {
            Err(code) => code,
            Ok(body) => {
                let n = body.len().min(out_cap as usize);
                match mem.write_bytes(out_ptr, &body[..n]) {
                    Ok(()) => n as i32,
                    Err(_) => BAD_POINTER,
                }
            }
        },
    };
    // A request that used up the call's time ends the call, as the timer ends guest code.
    if ctx.deadline.is_some_and(|d| Instant::now() >= d) {
        ctx.timed_out = true;
        return Err(CoreError::Common(CoreCommonError::Terminated));
    }
    Ok(vec![WasmValue::from_i32(code)])
}

pub fn import_object(ctx: NetCtx) -> WasmEdgeResult<ImportObject<NetCtx>> {
    let mut builder = ImportObjectBuilder::new(MODULE_NAME, ctx)?;
    builder.with_func::<(i32, i32, i32, i32), i32>("fetch", fetch)?;
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_urls() {
        assert_eq!(
            http_host("http://API.example.com/x").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(
            http_host("http://127.0.0.1:8080/").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(http_host("http://user@h:1?q").as_deref(), Some("h"));
        assert_eq!(http_host("http://[::1]:80/").as_deref(), Some("::1"));
        assert_eq!(http_host("https://h/"), None);
        assert_eq!(http_host("http:///x"), None);
    }

    #[test]
    fn denied_host_is_recorded_and_not_counted() {
        let mut ctx = NetCtx::new(vec!["api.example.com".into()], 1);
        assert_eq!(
            ctx.fetch("GET http://evil.example.net/steal"),
            Err(HOST_NOT_ALLOWED)
        );
        assert_eq!(ctx.violations(), ["host not allowed: evil.example.net"]);
        assert_eq!(ctx.requests_made(), 0);
    }

    #[test]
    fn budget_is_enforced_before_connecting() {
        let mut ctx = NetCtx::new(vec!["127.0.0.1".into()], 0);
        assert_eq!(ctx.fetch("GET http://127.0.0.1:9/"), Err(BUDGET_SPENT));
        assert_eq!(
            ctx.violations(),
            ["network request limit reached: 0 (max_network_requests)"]
        );
    }

    #[test]
    fn a_slow_server_gets_only_the_time_left() {
        // Accepts and never answers.
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "GET http://127.0.0.1:{}/",
            server.local_addr().unwrap().port()
        );
        let mut ctx = NetCtx::new(vec!["127.0.0.1".into()], 5);
        ctx.set_time_limit(Some(Duration::from_millis(300)));
        let started = Instant::now();
        assert_eq!(ctx.fetch(&url), Err(FETCH_FAILED));
        // TIMEOUT (10 s) would apply without the call's limit.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
        assert!(ctx.time_left().is_zero());
        drop(server);
    }

    #[test]
    fn malformed_requests() {
        let mut ctx = NetCtx::new(vec!["h".into()], 5);
        assert_eq!(ctx.fetch("GET"), Err(BAD_REQUEST));
        assert_eq!(ctx.fetch("GET ftp://h/"), Err(BAD_REQUEST));
        assert_eq!(ctx.fetch("BREW http://h/"), Err(BAD_REQUEST));
    }
}
