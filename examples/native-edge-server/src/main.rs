//! The baseline of `make bench`'s throughput comparison: the same handler the wasm module runs
//! (`edge_function::respond`), called directly from a native hyper server. It builds the same
//! EdgeRequest as the shim does, so the difference measured is the cost of a fresh wasm
//! instance (and the JSON hop) per request.
//!
//! Usage: native-edge-server PORT (listens on 127.0.0.1 only).

use std::convert::Infallible;

use edge_sdk::EdgeRequest;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

async fn serve(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let request = EdgeRequest {
        path: parts.uri.path().to_string(),
        method: parts.method.to_string(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body: (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned()),
        query: form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes()).into_owned().collect(),
    };
    let edge = edge_function::respond(request);
    let mut response = Response::new(Full::new(Bytes::from(edge.body)));
    *response.status_mut() = hyper::StatusCode::from_u16(edge.status_code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in &edge.headers {
        if let (Ok(n), Ok(v)) = (hyper::header::HeaderName::from_bytes(name.as_bytes()), hyper::header::HeaderValue::from_str(value)) {
            response.headers_mut().insert(n, v);
        }
    }
    Ok(response)
}

#[tokio::main(worker_threads = 2)]
async fn main() {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).expect("usage: native-edge-server PORT");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(serve))
                .await;
        });
    }
}
