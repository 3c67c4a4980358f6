//! The worker threads of HTTP mode: one [`InstanceSlot`] each, so at most `workers` instances
//! exist at once. Jobs come in on one channel; a worker that is free takes the next one.
//! Workers of the warm pool create their next instance as soon as they are free.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use wasmedge_sdk::Module;

use crate::engine::slot::{InstanceSlot, Invocation, SlotSpec};

struct Job {
    stdin: Vec<u8>,
    reply: oneshot::Sender<Result<Invocation, String>>,
}

pub struct Pool {
    jobs: SyncSender<Job>,
}

impl Pool {
    /// Starts `workers` threads (the first `warm` of them keep an instance ready) and returns
    /// once every slot is set up and a first instance was created: from then on the module is
    /// known to instantiate. An error is the reason it does not.
    pub fn start(module: Arc<Module>, spec: SlotSpec, workers: usize, warm: usize) -> Result<Pool, String> {
        let (jobs, queue) = mpsc::sync_channel::<Job>(workers);
        let queue = Arc::new(Mutex::new(queue));
        let (started_tx, started) = mpsc::channel::<Result<(), String>>();
        for index in 0..workers {
            let module = module.clone();
            let spec = spec.clone();
            let queue = queue.clone();
            let started_tx = started_tx.clone();
            let keep_warm = index < warm;
            std::thread::Builder::new()
                .name(format!("wasm-worker-{index}"))
                .spawn(move || work(&module, spec, keep_warm || index == 0, keep_warm, &queue, started_tx))
                .map_err(|e| format!("cannot start worker thread: {e}"))?;
        }
        drop(started_tx);
        for _ in 0..workers {
            started.recv().map_err(|_| "a worker thread died while starting".to_string())??;
        }
        Ok(Pool { jobs })
    }

    /// Hands a call to a free worker. The caller holds one of `workers` permits, so a worker is
    /// free (or about to be) and the channel has room.
    pub fn submit(&self, stdin: Vec<u8>) -> Result<oneshot::Receiver<Result<Invocation, String>>, String> {
        let (reply, result) = oneshot::channel();
        match self.jobs.try_send(Job { stdin, reply }) {
            Ok(()) => Ok(result),
            Err(TrySendError::Full(_)) => Err("all workers busy".into()),
            Err(TrySendError::Disconnected(_)) => Err("workers stopped".into()),
        }
    }
}

fn work(
    module: &Module,
    spec: SlotSpec,
    probe: bool,
    keep_warm: bool,
    queue: &Mutex<Receiver<Job>>,
    started: mpsc::Sender<Result<(), String>>,
) {
    let mut slot = match InstanceSlot::new(module, spec) {
        Ok(slot) => slot,
        Err(e) => {
            let _ = started.send(Err(format!("cannot set up an instance slot: {e:#}")));
            return;
        }
    };
    if probe {
        if let Err(e) = slot.prepare() {
            let _ = started.send(Err(format!("failed to instantiate module: {e:#}")));
            return;
        }
    }
    let _ = started.send(Ok(()));
    loop {
        if keep_warm {
            if let Err(e) = slot.prepare() {
                log::warn!("could not create an instance ahead of time: {e:#}");
            }
        }
        // The lock is held only while waiting; the guard is dropped before the call runs.
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let result = slot.call(job.stdin).map_err(|e| format!("{e:#}"));
        let _ = job.reply.send(result);
    }
}
