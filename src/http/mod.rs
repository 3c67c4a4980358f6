//! HTTP function mode (`wasmedge.io/mode: http`): the container serves HTTP on its port, and
//! every request runs the module's `_start` in a fresh instance with the request as an
//! `EdgeRequest` JSON document on stdin and the `EdgeResponse` read from stdout ([`edge`]).
//!
//! Startup order: listen first (so `/health` answers and `/ready` says false while the module
//! compiles), load the module, create the worker slots and a first instance, then turn ready.
//! SIGTERM/SIGINT: `/ready` turns false; the server goes on accepting for the shutdown delay
//! (in a Kubernetes pod: proxies may still route to it), a second signal cuts that short; then
//! the listener closes, in-flight requests finish within the drain timeout, and the process
//! exits 0.

pub mod edge;
pub mod metrics;
pub mod pool;
pub mod server;
pub mod settings;

use std::sync::Arc;

use tokio::signal::unix::{signal, SignalKind};
use wasmedge_sdk::Module;

use crate::engine::slot::SlotSpec;
use pool::Pool;
pub use settings::{HttpSettings, Mode};

/// How serving ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Served {
    /// Stopped by a signal; in-flight requests were drained (or the drain timeout passed).
    Stopped { drained: bool },
    /// Could not serve; the message is for the user, the code is the container's exit code.
    Failed { message: String, exit_code: i32 },
}

/// A module loader's failure: message and exit code.
pub type LoadFailure = (String, i32);

/// Exit code when the server cannot listen on its port.
pub const EXIT_CANNOT_LISTEN: i32 = 71;

/// Serves until SIGTERM/SIGINT. `load` compiles or loads the module (it may take seconds; the
/// server answers `/health` and a false `/ready` meanwhile). Blocks the calling thread.
pub fn serve(
    settings: HttpSettings,
    slot: SlotSpec,
    load: impl FnOnce() -> Result<Module, LoadFailure> + Send + 'static,
) -> Served {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return Served::Failed {
                message: format!("cannot start the HTTP runtime: {e}"),
                exit_code: EXIT_CANNOT_LISTEN,
            }
        }
    };
    runtime.block_on(serve_async(settings, slot, load))
}

async fn serve_async(
    settings: HttpSettings,
    slot: SlotSpec,
    load: impl FnOnce() -> Result<Module, LoadFailure> + Send + 'static,
) -> Served {
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            return Served::Failed {
                message: "cannot install the SIGTERM handler".into(),
                exit_code: EXIT_CANNOT_LISTEN,
            }
        }
    };
    let port = settings.port;
    let listener = match server::listen(port).await {
        Ok(l) => l,
        Err(e) => {
            return Served::Failed {
                message: format!(
                "cannot listen on port {port}: {e}; choose another port with wasmedge.io/http-port"
            ),
                exit_code: EXIT_CANNOT_LISTEN,
            }
        }
    };
    let (workers, warm) = (settings.max_concurrency, settings.warm_pool);
    let app = server::App::new(settings, slot.timeout);
    log::info!("HTTP function mode: listening on port {port}, {workers} slot(s), warm pool {warm}");
    let (failed_tx, failed) = tokio::sync::oneshot::channel::<(String, i32)>();
    let starting = app.clone();
    tokio::task::spawn_blocking(move || {
        let started = load().and_then(|module| {
            Pool::start(Arc::new(module), slot, workers, warm)
                .map_err(|e| (e, crate::engine::exit_code::LOAD_FAILED))
        });
        match started {
            Ok(pool) => {
                starting.set_ready(pool);
                log::info!("module ready; serving");
            }
            Err(failure) => {
                let _ = failed_tx.send(failure);
            }
        }
    });
    // Every SIGTERM/SIGINT, in order: the first stops serving, a second cuts the shutdown
    // delay short.
    let (signal_tx, mut signals) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = term.recv() => {}
                Some(()) = int.recv() => {}
                else => break,
            }
            if signal_tx.send(()).is_err() {
                break;
            }
        }
    });
    let mut startup_failure = None;
    let startup_failed = async {
        match failed.await {
            Ok(failure) => startup_failure = Some(failure),
            // The module loaded: only a signal stops the server.
            Err(_) => std::future::pending().await,
        }
    };
    let drained = server::run(app, listener, &mut signals, startup_failed).await;
    match startup_failure {
        Some((message, exit_code)) => Served::Failed { message, exit_code },
        None => Served::Stopped { drained },
    }
}
