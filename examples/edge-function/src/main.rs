//! The edge function's module: `edge-sdk` reads the request and writes the response.

fn main() {
    edge_sdk::serve_with_default(Some(edge_function::DEFAULT_REQUEST), edge_function::respond);
}
