//! The HTTP server of HTTP mode (hyper, HTTP/1.1): built-in `/health`, `/ready`, `/metrics`;
//! every other request runs the function in a fresh instance.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::edge;
use super::metrics::{self, Metrics};
use super::pool::Pool;
use super::settings::HttpSettings;
use crate::engine::slot::{self, Invocation};
use crate::engine::Outcome;

/// Requests that may wait for a free worker, per worker; beyond that the server answers 503.
const QUEUE_PER_WORKER: usize = 16;
/// Headers of one request, at most (hyper answers 431 beyond).
const MAX_HEADERS: usize = 100;
/// Bytes of request line and headers, at most.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A client must send its request head within this time.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// ... and then its body within this time (slow bodies would otherwise hold memory forever).
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Request bodies held at once (being read, waiting for a worker, or running), in units of
/// `max_body_bytes` per worker: bounds the memory bodies take whatever clients send.
const BODIES_PER_WORKER: usize = 2;

/// Shared by every connection.
pub struct App {
    pub settings: HttpSettings,
    pub metrics: Metrics,
    /// Set once the module is compiled and a first instance was created.
    pool: OnceLock<Pool>,
    /// Set on SIGTERM: `/ready` turns false so traffic moves away while in-flight requests end.
    draining: AtomicBool,
    workers: Semaphore,
    waiting: AtomicUsize,
    /// Bytes of request bodies the server may hold at once (see [`BODIES_PER_WORKER`]); a
    /// request reserves its declared length (or `max_body_bytes`) before its body is read.
    body_budget: Semaphore,
    body_budget_bytes: usize,
    /// Set when the first function request arrives (the guest's cold-start flag).
    served: AtomicBool,
    /// Time limit of one call, for waiting in the queue too.
    call_timeout: Duration,
}

impl App {
    pub fn new(settings: HttpSettings, call_timeout: Duration) -> Arc<App> {
        let body_budget_bytes = settings
            .max_body_bytes
            .max(1)
            .saturating_mul(settings.max_concurrency * BODIES_PER_WORKER)
            .min(u32::MAX as usize);
        Arc::new(App {
            metrics: Metrics::new(&settings.version),
            body_budget: Semaphore::new(body_budget_bytes),
            body_budget_bytes,
            workers: Semaphore::new(settings.max_concurrency),
            settings,
            pool: OnceLock::new(),
            draining: AtomicBool::new(false),
            waiting: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            call_timeout,
        })
    }

    pub fn set_ready(&self, pool: Pool) {
        let _ = self.pool.set(pool);
    }

    fn is_ready(&self) -> bool {
        self.pool.get().is_some() && !self.draining.load(Ordering::SeqCst)
    }
}

/// Accepts connections until the first stop signal in `signals` (or until `startup_failed`
/// resolves), then — if the function was serving and a shutdown delay is set — goes on
/// accepting with `/ready` false for that delay or until the next signal, so that proxies
/// still routing to the pod find it open; then lets in-flight requests finish for at most the
/// drain timeout. Returns whether every connection ended in time.
pub async fn run(
    app: Arc<App>,
    listener: TcpListener,
    signals: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
    startup_failed: impl std::future::Future<Output = ()>,
) -> bool {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES);
    let serving = Serving {
        app: &app,
        listener: &listener,
        graceful: &graceful,
        http: &http,
    };
    serving
        .accept_until(async {
            tokio::select! {
                _ = signals.recv() => {}
                () = startup_failed => {}
            }
        })
        .await;
    let delay = app.settings.shutdown_delay;
    let was_ready = app.is_ready();
    app.draining.store(true, Ordering::SeqCst);
    if was_ready && !delay.is_zero() {
        // stderr: the container's log, where `kubectl logs` shows it.
        eprintln!(
            "stopping: /ready is false; still accepting for {delay:?} (wasmedge.io/shutdown-delay-ms) while traffic moves away"
        );
        let ended_by_signal = serving
            .accept_until(async {
                tokio::select! {
                    () = tokio::time::sleep(delay) => false,
                    _ = signals.recv() => true,
                }
            })
            .await;
        if ended_by_signal {
            eprintln!("second stop signal: shutdown delay cut short");
        }
    }
    drop(listener);
    let in_flight = graceful.count();
    log::info!(
        "draining {in_flight} connection(s) for at most {:?}",
        app.settings.drain_timeout
    );
    tokio::time::timeout(app.settings.drain_timeout, graceful.shutdown())
        .await
        .is_ok()
}

/// The accepting side of the server, shared by the serving phase and the shutdown delay.
struct Serving<'a> {
    app: &'a Arc<App>,
    listener: &'a TcpListener,
    graceful: &'a GracefulShutdown,
    http: &'a hyper::server::conn::http1::Builder,
}

impl Serving<'_> {
    /// Serves every connection accepted before `until` resolves; returns its output.
    async fn accept_until<T>(&self, until: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(until);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, _peer) = match accepted {
                        Ok(conn) => conn,
                        Err(e) => {
                            // Out of fds, say: back off instead of spinning.
                            log::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let app = self.app.clone();
                    let service = hyper::service::service_fn(move |req| handle(app.clone(), req));
                    let conn = self
                        .graceful
                        .watch(self.http.serve_connection(TokioIo::new(stream), service));
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            log::debug!("connection ended: {e}");
                        }
                    });
                }
                output = &mut until => return output,
            }
        }
    }
}

/// Binds the function's port on every IPv4 address of the pod's network namespace.
pub async fn listen(port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await
}

async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(match (req.method(), req.uri().path()) {
        (_, "/health") => json(StatusCode::OK, r#"{"status":"ok"}"#.into()),
        (_, "/ready") if app.is_ready() => json(StatusCode::OK, r#"{"ready":true}"#.into()),
        (_, "/ready") => json(StatusCode::SERVICE_UNAVAILABLE, r#"{"ready":false}"#.into()),
        (&Method::GET, "/metrics") => {
            let mut response = Response::new(Full::new(Bytes::from(app.metrics.render())));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            response
        }
        _ => {
            let in_flight = app.metrics.request_started();
            let response = call_function(&app, req).await;
            in_flight.respond(response.status().as_u16());
            response
        }
    })
}

async fn call_function(app: &App, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(pool) = app.pool.get() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the function is not ready yet (module loading)",
        );
    };
    let (parts, body) = req.into_parts();
    let max = app.settings.max_body_bytes;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("request body larger than {max} bytes (wasmedge.io/max-body-bytes)"),
        )
    };
    // Admission before the body is read: its declared size (Content-Length as hyper read it:
    // 0 without a body, None when chunked) against the limit, then room for it in the server's
    // body budget (an undeclared length reserves the limit).
    let declared = hyper::body::Body::size_hint(&body).exact();
    if declared.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    let reserve = declared.map_or(max, |n| n as usize).min(max) as u32;
    let Ok(_body_room) = app.body_budget.try_acquire_many(reserve) else {
        return overloaded(&format!(
            "request bodies in flight fill the server's {} bytes for them",
            app.body_budget_bytes
        ));
    };
    let body = match tokio::time::timeout(BODY_TIMEOUT, Limited::new(body, max).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Ok(Err(e)) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the request body: {e}"),
            )
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the request body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            )
        }
    };
    let cold_start = !app.served.swap(true, Ordering::SeqCst);
    let request = match edge::request(
        parts.method.as_str(),
        parts.uri.path(),
        parts.uri.query(),
        &parts.headers,
        &body,
        cold_start,
    ) {
        Ok(r) => r,
        Err(edge::BadRequest(reason)) => return error(StatusCode::BAD_REQUEST, &reason),
    };
    let stdin = match serde_json::to_vec(&request) {
        Ok(bytes) => bytes,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode the request: {e}"),
            )
        }
    };
    let Some(_permit) = wait_for_worker(app).await else {
        return overloaded("every instance slot is busy");
    };
    let invocation = match pool.submit(stdin) {
        Ok(pending) => pending
            .await
            .unwrap_or_else(|_| Err("the worker stopped".into())),
        Err(e) => Err(e),
    };
    match invocation {
        Ok(invocation) => respond(app, invocation),
        Err(e) => {
            log::error!("request failed in the engine: {e}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("engine error: {e}"),
            )
        }
    }
}

/// A worker permit, waiting in a bounded queue for at most one call's time limit.
async fn wait_for_worker(app: &App) -> Option<tokio::sync::SemaphorePermit<'_>> {
    if let Ok(permit) = app.workers.try_acquire() {
        return Some(permit);
    }
    let limit = app.settings.max_concurrency * QUEUE_PER_WORKER;
    if app.waiting.fetch_add(1, Ordering::SeqCst) >= limit {
        app.waiting.fetch_sub(1, Ordering::SeqCst);
        return None;
    }
    let permit = tokio::time::timeout(app.call_timeout, app.workers.acquire()).await;
    app.waiting.fetch_sub(1, Ordering::SeqCst);
    permit.ok()?.ok()
}

fn respond(app: &App, call: Invocation) -> Response<Full<Bytes>> {
    app.metrics
        .instance_started(call.instance_start.as_secs_f64());
    app.metrics
        .instance_memory(u64::from(call.memory_pages.unwrap_or(0)) * 65536);
    let (stdout_dropped, stderr_dropped) = call.dropped_output;
    if !call.stderr.is_empty() || stderr_dropped > 0 {
        // The function's stderr is the container's log, as in command mode.
        use std::io::Write;
        let _ = std::io::stderr().write_all(&call.stderr);
        if stderr_dropped > 0 {
            eprintln!("[{stderr_dropped} more bytes of this request's stderr dropped: at most {} are kept]", slot::MAX_STDERR_BYTES);
        }
    }
    for violation in &call.violations {
        eprintln!("{violation}");
        app.metrics.denied(metrics::denial_field(violation));
    }
    match &call.outcome {
        Outcome::Exited(0) if stdout_dropped > 0 => {
            let message = format!(
                "response too large: the function wrote {} bytes, at most {} are allowed (a response may be as large as the module's memory cap, max_memory_pages, up to {} MiB)",
                call.stdout.len() as u64 + stdout_dropped,
                call.stdout.len(),
                slot::MAX_STDOUT_BYTES >> 20
            );
            eprintln!("{message}");
            error(StatusCode::INTERNAL_SERVER_ERROR, &message)
        }
        Outcome::Exited(0) => match edge::response(&call.stdout) {
            Ok(valid) => {
                let mut response = Response::new(Full::new(Bytes::from(valid.body)));
                *response.status_mut() = valid.status;
                response.headers_mut().extend(valid.headers);
                response
            }
            Err(reason) => {
                eprintln!("bad function response: {reason}");
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("bad function response: {reason}"),
                )
            }
        },
        Outcome::Exited(code) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the function exited with code {code}"),
        ),
        failed => {
            let message = failed.failure_message().unwrap_or_default();
            eprintln!("{message}");
            match failed {
                Outcome::TimedOut { .. } => {
                    app.metrics.denied("execution_timeout_ms");
                    error(StatusCode::GATEWAY_TIMEOUT, &message)
                }
                Outcome::OutOfMemory { .. } => {
                    app.metrics.denied("max_memory_pages");
                    error(StatusCode::INTERNAL_SERVER_ERROR, &message)
                }
                _ => error(StatusCode::INTERNAL_SERVER_ERROR, &message),
            }
        }
    }
}

/// 503 with Retry-After: the client should come back shortly.
fn overloaded(why: &str) -> Response<Full<Bytes>> {
    let mut response = error(
        StatusCode::SERVICE_UNAVAILABLE,
        &format!("overloaded: {why}; retry later"),
    );
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({ "error": message }).to_string())
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
