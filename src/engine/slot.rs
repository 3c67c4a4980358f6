//! Fresh instances of one loaded module, one after another on one thread: the engine of HTTP
//! mode, where every request gets an instance of its own.
//!
//! What is paid once per slot: the Store, the executor, our WASI and `edge_http` import objects
//! (registering 46 host functions costs about as much as an instantiation). What is paid per
//! request: a new `WasiCtx` (stdin = the request, stdout/stderr = buffers), a new `NetCtx`
//! (the request budget), and a new anonymous module instance, destroyed right after the call.
//! Nothing of one request's instance (memory, globals, tables, fds) is visible to the next.
//!
//! The time limit of a call has two halves that end at the same deadline (command mode uses
//! both the same way, see `engine::run_command`): wasmedge-sys's `call_func_with_timeout`, a
//! POSIX timer whose signal jumps out of the guest code, and the deadline in our WASI and
//! `edge_http` contexts, which every host call honours (the timer's signal is blocked while a
//! host function runs, so our WASI state is never left half-updated; a host call that would
//! wait past the deadline waits only until it, then ends the call). The timer costs three
//! syscalls per call, where WasmEdge's cancellable async invoke starts a thread per call
//! (+20 µs at the median and milliseconds at p99 on a busy node, measured). Its jump skips
//! WasmEdge's own frames, so a slot whose call timed out is retired and its thread replaced
//! (see `http::pool`).

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use wasmedge_sdk::config::{CommonConfigOptions, ConfigBuilder, RuntimeConfigOptions};
use wasmedge_sdk::error::WasmEdgeError;
use wasmedge_sdk::vm::SyncInst;
use wasmedge_sdk::{AsInstance, ImportObject, Instance, Module, Store};

use super::wasi::{self, net, Stdio, WasiConfig, WasiCtx};
use super::{classify_failure, stack, Outcome, RunSpec};

/// The trap of a call that recursed past its thread's stack.
pub const CALL_STACK_EXHAUSTED: &str = "call stack exhausted";

/// What every instance of the slot gets: the run's spec (already filtered by the sandbox
/// policy), with its budgets applying to each call.
#[derive(Debug, Clone)]
pub struct SlotSpec {
    pub run: RunSpec,
    /// Wall-clock limit of each call.
    pub timeout: Duration,
}

/// The result of one call.
#[derive(Debug)]
pub struct Invocation {
    pub outcome: Outcome,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Sandbox denials of this call (`permission denied: /etc/passwd`, `host not allowed: …`).
    pub violations: Vec<String>,
    /// Time spent creating the instance (zero work on the request path when it was pre-created).
    pub instance_start: Duration,
    /// The instance had been created before the request arrived.
    pub prewarmed: bool,
    /// Size of the instance's linear memory when the call ended, in 64 KiB pages.
    pub memory_pages: Option<u32>,
    /// Bytes the call wrote to (stdout, stderr) beyond [`output_caps`], not kept.
    pub dropped_output: (u64, u64),
}

/// Most stderr one call keeps (its log lines); the rest is counted and dropped.
pub const MAX_STDERR_BYTES: usize = 64 << 10;
/// Most stdout (the response) one call may produce, whatever its memory cap.
pub const MAX_STDOUT_BYTES: usize = 16 << 20;

/// What one call's captured output may hold: its stdout (the response) at most as much as the
/// module's memory cap (within 64 KiB .. [`MAX_STDOUT_BYTES`]), its stderr
/// [`MAX_STDERR_BYTES`]. A module can write the same buffer again and again, so without a
/// bound one request could grow the container far past its memory cap.
pub fn output_caps(max_memory_pages: u32) -> wasi::OutputCaps {
    let memory = (max_memory_pages as usize).saturating_mul(64 << 10);
    wasi::OutputCaps {
        stdout: memory.clamp(64 << 10, MAX_STDOUT_BYTES),
        stderr: MAX_STDERR_BYTES,
    }
}

pub struct InstanceSlot<'m> {
    module: &'m Module,
    spec: SlotSpec,
    /// Borrows the two import objects below; dropped before them (see `Drop`).
    store: ManuallyDrop<Store<'static, dyn SyncInst>>,
    wasi_object: *mut ImportObject<WasiCtx>,
    net_object: *mut ImportObject<net::NetCtx>,
    /// Host data of the import objects; swapped between calls.
    wasi: *mut WasiCtx,
    net: *mut net::NetCtx,
    /// An instance created ahead of the next request (warm pool), with its creation time.
    ready: Option<(Instance, Duration)>,
}

impl<'m> InstanceSlot<'m> {
    pub fn new(module: &'m Module, spec: SlotSpec) -> Result<Self> {
        let config = ConfigBuilder::new(CommonConfigOptions::default())
            .with_runtime_config(
                RuntimeConfigOptions::default().max_memory_pages(spec.run.max_memory_pages),
            )
            .build()?;
        let wasi_object = Box::into_raw(Box::new(wasi::import_object(WasiCtx::default())?));
        let net_object = match net::import_object(net::NetCtx::default()) {
            Ok(object) => Box::into_raw(Box::new(object)),
            Err(e) => {
                // SAFETY: made just above, not shared yet.
                drop(unsafe { Box::from_raw(wasi_object) });
                return Err(e.into());
            }
        };
        // SAFETY: the objects live until `drop`, which drops the store first; the host data
        // belongs to the C side of each object (WasmEdge hands the same pointer to every host
        // function call), the Rust objects only hold the instance handles.
        let (wasi, net, instances) = unsafe {
            let wasi: *mut WasiCtx = (*wasi_object).get_host_data_mut();
            let net: *mut net::NetCtx = (*net_object).get_host_data_mut();
            let mut instances: HashMap<String, &'static mut dyn SyncInst> =
                HashMap::with_capacity(2);
            instances.insert(wasi::MODULE_NAME.to_string(), &mut *wasi_object);
            instances.insert(net::MODULE_NAME.to_string(), &mut *net_object);
            (wasi, net, instances)
        };
        let store = match Store::new(Some(&config), instances) {
            Ok(store) => store,
            Err(e) => {
                // SAFETY: the failed store released its borrows.
                unsafe {
                    drop(Box::from_raw(wasi_object));
                    drop(Box::from_raw(net_object));
                }
                return Err(e.into());
            }
        };
        Ok(InstanceSlot {
            module,
            spec,
            store: ManuallyDrop::new(store),
            wasi_object,
            net_object,
            wasi,
            net,
            ready: None,
        })
    }

    /// Creates the next request's instance now, off the request path. Returns how long it took.
    pub fn prepare(&mut self) -> Result<Duration> {
        if self.ready.is_none() {
            let started = Instant::now();
            let instance = self.store.register_active_module(self.module)?;
            self.ready = Some((instance, started.elapsed()));
        }
        Ok(self.ready.as_ref().map(|(_, t)| *t).unwrap_or_default())
    }

    /// Runs one call with `stdin` as its standard input, in an instance nobody used before.
    pub fn call(&mut self, stdin: Vec<u8>) -> Result<Invocation> {
        let (mut instance, instance_start, prewarmed) = match self.ready.take() {
            Some((instance, took)) => (instance, took, true),
            None => {
                let started = Instant::now();
                let instance = self.store.register_active_module(self.module)?;
                (instance, started.elapsed(), false)
            }
        };
        // Fresh per-call state, set once per call. Instantiation ran with the empty ctx the
        // previous call left (no fds): a start section could not reach this request's stdio.
        self.reset_host_data(stdin)?;
        // SAFETY: no call is running; the pointers stay valid for the slot's lifetime.
        unsafe {
            (*self.wasi).set_time_limit(Some(self.spec.timeout));
            (*self.net).set_time_limit(Some(self.spec.timeout));
        }
        let (result, exhausted) = {
            let mut func = instance
                .get_func_mut(&self.spec.run.func)
                .map_err(|e| anyhow!("{e}"))?;
            let executor = self.store.executor();
            stack::guarded(|| {
                executor
                    .call_func_with_timeout(&mut func, [], self.spec.timeout)
                    .map(|_| ())
            })
        };
        let memory_pages = instance.get_memory_ref("memory").ok().map(|m| m.size());
        drop(instance);
        // SAFETY: no call is running; the pointers stay valid for the slot's lifetime.
        let (mut ctx, net) = unsafe {
            (
                std::mem::take(&mut *self.wasi),
                std::mem::take(&mut *self.net),
            )
        };
        let outcome = ended(
            result,
            exhausted,
            &ctx,
            &net,
            memory_pages,
            self.spec.timeout,
            self.spec.run.max_memory_pages,
        );
        let mut violations = ctx.violations().to_vec();
        violations.extend(net.violations().iter().cloned());
        Ok(Invocation {
            outcome,
            stdout: ctx.take_stdout(),
            stderr: ctx.take_stderr(),
            violations,
            instance_start,
            prewarmed,
            memory_pages,
            dropped_output: ctx.dropped_output(),
        })
    }

    fn reset_host_data(&mut self, stdin: Vec<u8>) -> Result<()> {
        let ctx = WasiCtx::new(WasiConfig {
            args: self.spec.run.args.clone(),
            envs: self.spec.run.envs.clone(),
            preopens: self.spec.run.preopens.clone(),
            stdin: Stdio::Buffer(stdin),
            stdout: Stdio::Buffer(Vec::new()),
            stderr: Stdio::Buffer(Vec::new()),
            max_buffered: Some(output_caps(self.spec.run.max_memory_pages)),
            disk: self.spec.run.disk.clone(),
        })
        .context("set up WASI for the request")?;
        let net = net::NetCtx::new(
            self.spec.run.allowed_hosts.clone(),
            self.spec.run.max_network_requests,
        );
        // SAFETY: no call is running on this slot (calls are synchronous on its thread).
        unsafe {
            *self.wasi = ctx;
            *self.net = net;
        }
        Ok(())
    }
}

/// How a call ended, for both modes: its exit, its time limit (the timer's or a host call's),
/// or a trap (`stack_exhausted`: the fault was on the thread's stack guard, see `stack`).
pub(crate) fn ended(
    result: Result<(), Box<WasmEdgeError>>,
    stack_exhausted: bool,
    ctx: &WasiCtx,
    net: &net::NetCtx,
    memory_pages: Option<u32>,
    timeout: Duration,
    max_memory_pages: u32,
) -> Outcome {
    let timed_out = Outcome::TimedOut {
        limit_ms: timeout.as_millis() as u64,
    };
    // A host call that ends the call at its deadline stops execution the way `proc_exit` does
    // (WasmEdge reports both as success), so its flag is looked at first.
    let exited = ctx.exit_code().map(|code| code as i32);
    match result {
        _ if exited.is_none() && (ctx.timed_out() || net.timed_out()) => timed_out,
        Ok(()) => Outcome::Exited(exited.unwrap_or(0)),
        Err(_) if exited.is_some() => Outcome::Exited(exited.unwrap_or(0)),
        Err(e) if matches!(*e, WasmEdgeError::ExecuteTimeout) => timed_out,
        Err(_) if stack_exhausted => Outcome::Trapped(CALL_STACK_EXHAUSTED.to_string()),
        Err(e) => classify_failure(&e, memory_pages, max_memory_pages),
    }
}

impl Drop for InstanceSlot<'_> {
    fn drop(&mut self) {
        self.ready = None;
        // SAFETY: the store goes first, releasing its borrows of the import objects, which were
        // made by `Box::into_raw` in `new` and are freed once.
        unsafe {
            ManuallyDrop::drop(&mut self.store);
            drop(Box::from_raw(self.wasi_object));
            drop(Box::from_raw(self.net_object));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(wat: &str) -> Module {
        Module::from_bytes(None, wasmedge_sdk::wat2wasm(wat.as_bytes()).unwrap()).unwrap()
    }

    fn spec(timeout_ms: u64) -> SlotSpec {
        SlotSpec {
            run: RunSpec {
                func: "_start".into(),
                args: vec!["f".into()],
                envs: vec![],
                preopens: vec![],
                max_memory_pages: 64,
                allowed_hosts: vec![],
                max_network_requests: 0,
                max_disk_bytes: 0,
                disk: None,
            },
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    /// Echoes stdin to stdout, and traps when the global it increments shows an earlier call.
    const ECHO_ONCE: &str = r#"(module
        (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (global $calls (mut i32) (i32.const 0))
        (func (export "_start")
            (if (i32.ne (global.get $calls) (i32.const 0)) (then unreachable))
            (global.set $calls (i32.const 1))
            (if (i32.load (i32.const 2048)) (then unreachable))
            (i32.store (i32.const 2048) (i32.const 1))
            (i32.store (i32.const 0) (i32.const 1024))
            (i32.store (i32.const 4) (i32.const 512))
            (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
            (i32.store (i32.const 4) (i32.load (i32.const 8)))
            (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

    #[test]
    fn every_call_gets_a_fresh_instance() {
        let m = module(ECHO_ONCE);
        let mut slot = InstanceSlot::new(&m, spec(5000)).unwrap();
        for i in 0..20 {
            let input = format!("request {i}");
            if i % 2 == 0 {
                slot.prepare().unwrap();
            }
            let out = slot.call(input.clone().into_bytes()).unwrap();
            assert_eq!(out.outcome, Outcome::Exited(0), "call {i}: {out:?}");
            assert_eq!(String::from_utf8(out.stdout).unwrap(), input);
            assert_eq!(out.prewarmed, i % 2 == 0);
        }
    }

    #[test]
    fn a_busy_call_is_cancelled_and_the_slot_goes_on() {
        let m = module(
            r#"(module (memory 1)
            (global $n (mut i32) (i32.const 0))
            (func (export "spin") (loop (br 0)))
            (func (export "_start")))"#,
        );
        let mut s = spec(200);
        s.run.func = "spin".into();
        let mut slot = InstanceSlot::new(&m, s).unwrap();
        let started = Instant::now();
        let out = slot.call(vec![]).unwrap();
        assert_eq!(out.outcome, Outcome::TimedOut { limit_ms: 200 });
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "cancel took {:?}",
            started.elapsed()
        );
        let out = slot.call(vec![]).unwrap();
        assert_eq!(
            out.outcome,
            Outcome::TimedOut { limit_ms: 200 },
            "the slot must still run calls"
        );
    }

    /// poll_oneoff on a 30 s clock: the call ends at its 300 ms limit, as a busy loop would.
    const SLEEP_30S: &str = r#"(module
        (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
        (memory (export "memory") 1)
        (func (export "_start")
            (i32.store (i32.const 16) (i32.const 1))
            (i64.store (i32.const 24) (i64.const 30000000000))
            (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))))"#;

    #[test]
    fn a_call_waiting_in_a_host_call_ends_at_its_deadline() {
        let m = module(SLEEP_30S);
        // Short limits too: the host call then ends the call before WasmEdge's timer fires.
        for limit_ms in [20, 50, 300, 300] {
            let mut slot = InstanceSlot::new(&m, spec(limit_ms)).unwrap();
            let started = Instant::now();
            let out = slot.call(vec![]).unwrap();
            assert_eq!(out.outcome, Outcome::TimedOut { limit_ms });
            // The product's bound is the limit plus a small margin; 10 s leaves room for a busy
            // machine and is still a third of the sleep.
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "took {:?}",
                started.elapsed()
            );
        }
    }

    #[test]
    fn captured_output_is_bounded() {
        // Writes the same 64 KiB 1000 times to stdout and to stderr.
        let m = module(
            r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 2)
            (func $spam (param $fd i32) (local $i i32)
                (i32.store (i32.const 0) (i32.const 65536))
                (i32.store (i32.const 4) (i32.const 65536))
                (loop $again
                    (drop (call $write (local.get $fd) (i32.const 0) (i32.const 1) (i32.const 8)))
                    (local.set $i (i32.add (local.get $i) (i32.const 1)))
                    (br_if $again (i32.lt_u (local.get $i) (i32.const 1000)))))
            (func (export "_start") (call $spam (i32.const 1)) (call $spam (i32.const 2))))"#,
        );
        let mut slot = InstanceSlot::new(&m, spec(5000)).unwrap();
        let out = slot.call(vec![]).unwrap();
        assert_eq!(out.outcome, Outcome::Exited(0));
        let caps = output_caps(64);
        assert_eq!(
            (out.stdout.len(), out.stderr.len()),
            (caps.stdout, MAX_STDERR_BYTES)
        );
        let written = 65536 * 1000;
        assert_eq!(
            out.dropped_output,
            (
                (written - caps.stdout) as u64,
                (written - MAX_STDERR_BYTES) as u64
            )
        );
        assert_eq!(
            caps.stdout,
            4 << 20,
            "64 pages of memory: 4 MiB of response"
        );
    }

    #[test]
    fn traps_and_exit_codes_are_reported_per_call() {
        let m = module(
            r#"(module
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (func (export "trap") unreachable)
            (func (export "_start") (call $exit (i32.const 3))))"#,
        );
        let mut s = spec(5000);
        s.run.func = "trap".into();
        let mut slot = InstanceSlot::new(&m, s.clone()).unwrap();
        assert_eq!(
            slot.call(vec![]).unwrap().outcome,
            Outcome::Trapped("unreachable".into())
        );
        assert_eq!(
            slot.call(vec![]).unwrap().outcome,
            Outcome::Trapped("unreachable".into())
        );
        s.run.func = "_start".into();
        let mut slot = InstanceSlot::new(&m, s).unwrap();
        assert_eq!(slot.call(vec![]).unwrap().outcome, Outcome::Exited(3));
    }
}
