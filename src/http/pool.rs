//! The worker threads of HTTP mode: one [`InstanceSlot`] each, so at most `workers` instances
//! exist at once. Jobs come in on one channel; a worker that is free takes the next one.
//! Workers of the warm pool create their next instance as soon as they are free.
//! A worker whose call timed out hands its place to a fresh thread and ends (the timeout jumped
//! out of WasmEdge's frames on that thread; see `engine::slot`).

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use wasmedge_sdk::Module;

use crate::engine::slot::{InstanceSlot, Invocation, SlotSpec};
use crate::engine::{stack, Outcome};

struct Job {
    stdin: Vec<u8>,
    reply: oneshot::Sender<Result<Invocation, String>>,
}

pub struct Pool {
    jobs: SyncSender<Job>,
}

/// What a worker needs; cloned into its replacement.
#[derive(Clone)]
struct Worker {
    index: usize,
    module: Arc<Module>,
    spec: SlotSpec,
    keep_warm: bool,
    queue: Arc<Mutex<Receiver<Job>>>,
}

impl Pool {
    /// Starts `workers` threads (the first `warm` of them keep an instance ready) and returns
    /// once every slot is set up and a first instance was created: from then on the module is
    /// known to instantiate. An error is the reason it does not.
    pub fn start(
        module: Arc<Module>,
        spec: SlotSpec,
        workers: usize,
        warm: usize,
    ) -> Result<Pool, String> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(workers);
        let queue = Arc::new(Mutex::new(queue));
        let (started_tx, started) = mpsc::channel::<Result<(), String>>();
        for index in 0..workers {
            let worker = Worker {
                index,
                module: module.clone(),
                spec: spec.clone(),
                keep_warm: index < warm,
                queue: queue.clone(),
            };
            worker.spawn(Some(started_tx.clone()))?;
        }
        drop(started_tx);
        for _ in 0..workers {
            started
                .recv()
                .map_err(|_| "a worker thread died while starting".to_string())??;
        }
        Ok(Pool { jobs })
    }

    /// Hands a call to a free worker. The caller holds one of `workers` permits, so a worker is
    /// free (or about to be) and the channel has room.
    pub fn submit(
        &self,
        stdin: Vec<u8>,
    ) -> Result<oneshot::Receiver<Result<Invocation, String>>, String> {
        let (reply, result) = oneshot::channel();
        match self.jobs.try_send(Job { stdin, reply }) {
            Ok(()) => Ok(result),
            Err(TrySendError::Full(_)) => Err("all workers busy".into()),
            Err(TrySendError::Disconnected(_)) => Err("workers stopped".into()),
        }
    }
}

impl Worker {
    fn spawn(self, started: Option<mpsc::Sender<Result<(), String>>>) -> Result<(), String> {
        stack::spawn_call_thread(format!("wasm-worker-{}", self.index), move || {
            self.work(started)
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start worker thread: {e}"))
    }

    /// Serves jobs until the pool goes away, or until a call times out (then a replacement
    /// thread takes over).
    fn work(self, started: Option<mpsc::Sender<Result<(), String>>>) {
        let mut slot = match InstanceSlot::new(&self.module, self.spec.clone()) {
            Ok(slot) => slot,
            Err(e) => {
                report_start(
                    started,
                    Err(format!("cannot set up an instance slot: {e:#}")),
                );
                return;
            }
        };
        // The first worker proves the module instantiates before the server says ready.
        if self.index == 0 || self.keep_warm {
            if let Err(e) = slot.prepare() {
                report_start(started, Err(format!("failed to instantiate module: {e:#}")));
                return;
            }
        }
        report_start(started, Ok(()));
        loop {
            if self.keep_warm {
                if let Err(e) = slot.prepare() {
                    log::warn!("could not create an instance ahead of time: {e:#}");
                }
            }
            // The lock is held only while waiting; the guard is dropped before the call runs.
            let job = match self.queue.lock() {
                Ok(queue) => queue.recv(),
                Err(_) => return,
            };
            let Ok(job) = job else { return };
            let result = slot.call(job.stdin).map_err(|e| format!("{e:#}"));
            let timed_out =
                matches!(&result, Ok(call) if matches!(call.outcome, Outcome::TimedOut { .. }));
            let _ = job.reply.send(result);
            if timed_out {
                drop(slot);
                if let Err(e) = self.clone().spawn(None) {
                    log::error!("worker {} not replaced: {e}", self.index);
                }
                return;
            }
        }
    }
}

fn report_start(started: Option<mpsc::Sender<Result<(), String>>>, result: Result<(), String>) {
    match (started, result) {
        (Some(tx), result) => {
            let _ = tx.send(result);
        }
        (None, Err(e)) => log::error!("replacement worker failed: {e}"),
        (None, Ok(())) => {}
    }
}
