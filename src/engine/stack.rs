//! Deep recursion in AOT code ends the call as a trap (`call stack exhausted`) instead of
//! killing the process.
//!
//! AOT code recurses on the native stack of the thread that calls it. WasmEdge 0.14 catches
//! faults of compiled code with a SIGSEGV handler that longjmps out of the call, but installs
//! it without `SA_ONSTACK`: a fault on the stack's guard page cannot run it (there is no stack
//! left to run it on) and the kernel kills the process (exit 139, in HTTP mode every request's
//! server with it). So:
//! - calls run on threads made by [`spawn_call_thread`]: a stack of [`CALL_STACK_BYTES`] whose
//!   lowest [`GUARD_BYTES`] are made inaccessible (a guard far larger than a page, so a big
//!   frame cannot step over it), and an alternate signal stack;
//! - [`install`] puts our handler in front of WasmEdge's, with `SA_ONSTACK`. It notes whether
//!   the fault hit the calling thread's guard and hands over to WasmEdge's handler, which ends
//!   the call. WasmEdge sets its handler when the first compiled call of the process starts and
//!   resets it when the last one ends, so a thread stays inside a compiled call of a tiny
//!   module ([`ANCHOR_WAT`]) for the life of the process and keeps WasmEdge's handler (and ours
//!   in front of it) in place.
//!
//! Supported depth: `CALL_STACK_BYTES - GUARD_BYTES` (15 MiB) divided by the frame size of the
//! recursive function: about 980 000 calls of a small function (16-byte frames, measured by
//! `measure_depth` below), fewer for functions with many live values. Interpreted code does
//! not recurse natively; its depth is bounded by memory.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use wasmedge_sdk::{
    AsInstance, CallingFrame, ImportObjectBuilder, Instance, Module, Store, WasmValue,
};
use wasmedge_types::error::CoreError;

/// Stack of a thread that runs wasm calls (virtual: only what a call touches is memory).
pub const CALL_STACK_BYTES: usize = 16 << 20;
/// The lowest part of that stack, inaccessible: a fault here is the stack running out.
pub const GUARD_BYTES: usize = 1 << 20;
/// Where the fault handler runs (WasmEdge's handler only longjmps).
const ALT_STACK_BYTES: usize = 64 << 10;

/// A module whose `hold` stays in a host call for good: see the module docs.
pub const ANCHOR_WAT: &str = r#"(module (import "csw_fault_anchor" "park" (func $park)) (func (export "hold") (call $park)))"#;

/// [`ANCHOR_WAT`] as a module's bytecode.
pub fn anchor_wasm() -> Option<Vec<u8>> {
    wasmedge_sdk::wat2wasm(ANCHOR_WAT.as_bytes())
        .ok()
        .map(|w| w.into_owned())
}

/// WasmEdge's handler (`sa_sigaction`), 0 until [`install`] found it.
static WASMEDGE_HANDLER: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's guard region, [lo, hi), from [`spawn_call_thread`].
    static GUARD: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
    /// The running call hit the guard.
    static EXHAUSTED: Cell<bool> = const { Cell::new(false) };
    /// Undoes the thread's setup when it ends.
    static SETUP: std::cell::RefCell<Option<ThreadSetup>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` (a wasm call) and tells whether it ran out of stack.
pub fn guarded<T>(f: impl FnOnce() -> T) -> (T, bool) {
    EXHAUSTED.with(|e| e.set(false));
    let out = f();
    (out, EXHAUSTED.with(|e| e.replace(false)))
}

/// A thread for wasm calls (see the module docs); `f` runs on it.
pub fn spawn_call_thread<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<T>> {
    std::thread::Builder::new()
        .name(name)
        .stack_size(CALL_STACK_BYTES)
        .spawn(move || {
            match ThreadSetup::new() {
                Ok(setup) => SETUP.with(|s| *s.borrow_mut() = Some(setup)),
                Err(e) => {
                    log::warn!("stack guard not set up ({e}); deep recursion may end the process")
                }
            }
            f()
        })
}

struct ThreadSetup {
    alt_stack: *mut libc::c_void,
    guard: (usize, usize),
}

impl ThreadSetup {
    fn new() -> std::io::Result<ThreadSetup> {
        let (lo, size) = current_stack()?;
        let page = page_size();
        let guard_lo = lo.next_multiple_of(page);
        if size < GUARD_BYTES * 2 {
            return Err(std::io::Error::other(format!(
                "stack of {size} bytes is too small for a guard"
            )));
        }
        // SAFETY: maps fresh memory, protects the lowest part of this thread's own stack (far
        // below any frame in use: the thread just started), and registers the alternate
        // stack; all undone in Drop.
        unsafe {
            if libc::mprotect(guard_lo as *mut libc::c_void, GUARD_BYTES, libc::PROT_NONE) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let alt = libc::mmap(
                std::ptr::null_mut(),
                ALT_STACK_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if alt == libc::MAP_FAILED {
                let e = std::io::Error::last_os_error();
                libc::mprotect(
                    guard_lo as *mut libc::c_void,
                    GUARD_BYTES,
                    libc::PROT_READ | libc::PROT_WRITE,
                );
                return Err(e);
            }
            let ss = libc::stack_t {
                ss_sp: alt,
                ss_flags: 0,
                ss_size: ALT_STACK_BYTES,
            };
            libc::sigaltstack(&ss, std::ptr::null_mut());
            // Faults just below the stack (a frame larger than the guard) count too.
            let guard = (guard_lo.saturating_sub(GUARD_BYTES), guard_lo + GUARD_BYTES);
            GUARD.with(|g| g.set(guard));
            Ok(ThreadSetup {
                alt_stack: alt,
                guard: (guard_lo, GUARD_BYTES),
            })
        }
    }
}

impl Drop for ThreadSetup {
    fn drop(&mut self) {
        // SAFETY: undoes `new` on the same thread (thread-local destructor); glibc may hand
        // this stack to another thread, which must find it whole.
        unsafe {
            let off = libc::stack_t {
                ss_sp: std::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            libc::sigaltstack(&off, std::ptr::null_mut());
            libc::munmap(self.alt_stack, ALT_STACK_BYTES);
            libc::mprotect(
                self.guard.0 as *mut libc::c_void,
                self.guard.1,
                libc::PROT_READ | libc::PROT_WRITE,
            );
        }
        GUARD.with(|g| g.set((0, 0)));
    }
}

/// Lowest address and size of the calling thread's stack.
fn current_stack() -> std::io::Result<(usize, usize)> {
    // SAFETY: pthread_getattr_np fills the attr, which is destroyed after use.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return Err(std::io::Error::other("pthread_getattr_np failed"));
        }
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let r = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        if r != 0 {
            return Err(std::io::Error::other("pthread_attr_getstack failed"));
        }
        Ok((addr as usize, size))
    }
}

fn page_size() -> usize {
    // SAFETY: plain sysconf.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize
}

type SigAction = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let wasmedge = WASMEDGE_HANDLER.load(Ordering::Relaxed);
    if wasmedge == 0 || info.is_null() {
        // SAFETY: async-signal-safe; returning re-runs the faulting instruction, which then
        // takes the default action (a core dump).
        unsafe { libc::signal(sig, libc::SIG_DFL) };
        return;
    }
    // SAFETY: the kernel passes a valid siginfo for SIGSEGV/SIGBUS.
    let addr = unsafe { (*info).si_addr() } as usize;
    let (lo, hi) = GUARD.with(|g| g.get());
    if addr >= lo && addr < hi {
        EXHAUSTED.with(|e| e.set(true));
    }
    // Every other fault is WasmEdge's as before we were there (an out-of-bounds access of
    // compiled code, say).
    // SAFETY: the handler WasmEdge installed, with the arguments it was installed for; it
    // longjmps out of the faulting call.
    let handler: SigAction = unsafe { std::mem::transmute::<usize, SigAction>(wasmedge) };
    handler(sig, info, context)
}

/// Puts our fault handler in front of WasmEdge's for the rest of the process. `anchor` is
/// [`ANCHOR_WAT`] compiled by the node; with an interpreted one nothing changes (WasmEdge sets
/// no handler for interpreted code). Errors say why the guard is not in place.
pub fn install(anchor: Module) -> Result<(), String> {
    let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
    std::thread::Builder::new()
        .name("fault-anchor".into())
        .spawn(move || hold(anchor, entered_tx))
        .map_err(|e| format!("cannot start the fault anchor: {e}"))?;
    entered
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| "the fault anchor did not start".to_string())?;
    // SAFETY: reads the current actions, then installs ours for the same signals.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut current);
        let handler = current.sa_sigaction;
        if handler == libc::SIG_DFL
            || handler == libc::SIG_IGN
            || current.sa_flags & libc::SA_SIGINFO == 0
        {
            return Err(
                "WasmEdge's fault handler is not in place (is the anchor interpreted?)".into(),
            );
        }
        WASMEDGE_HANDLER.store(handler, Ordering::SeqCst);
        let mut ours: libc::sigaction = std::mem::zeroed();
        ours.sa_sigaction = on_fault as *const () as usize;
        ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut ours.sa_mask);
        for sig in [libc::SIGSEGV, libc::SIGBUS] {
            if libc::sigaction(sig, &ours, std::ptr::null_mut()) != 0 {
                return Err(format!("sigaction: {}", std::io::Error::last_os_error()));
            }
        }
    }
    Ok(())
}

/// The anchor thread: enters `hold` and never comes back.
fn hold(anchor: Module, entered: std::sync::mpsc::Sender<()>) {
    fn park(
        entered: &mut std::sync::mpsc::Sender<()>,
        _: &mut Instance,
        _: &mut CallingFrame,
        _: Vec<WasmValue>,
    ) -> Result<Vec<WasmValue>, CoreError> {
        let _ = entered.send(());
        loop {
            std::thread::park();
        }
    }
    let run = || -> Result<(), String> {
        let mut builder =
            ImportObjectBuilder::new("csw_fault_anchor", entered).map_err(|e| e.to_string())?;
        builder
            .with_func::<(), ()>("park", park)
            .map_err(|e| e.to_string())?;
        let mut object = builder.build();
        let mut instances: std::collections::HashMap<String, &mut dyn wasmedge_sdk::vm::SyncInst> =
            std::collections::HashMap::new();
        instances.insert("csw_fault_anchor".to_string(), &mut object);
        let mut store = Store::new(None, instances).map_err(|e| e.to_string())?;
        let mut instance = store
            .register_active_module(&anchor)
            .map_err(|e| e.to_string())?;
        let mut hold = instance.get_func_mut("hold").map_err(|e| e.to_string())?;
        store
            .executor()
            .call_func(&mut hold, [])
            .map_err(|e| e.to_string())?;
        Ok(())
    };
    if let Err(e) = run() {
        log::warn!("fault anchor: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::slot::{InstanceSlot, SlotSpec};
    use crate::engine::{Outcome, RunSpec};

    fn compiled(wat: &str) -> Module {
        let dir = tempfile::tempdir().unwrap();
        let wasm = wasmedge_sdk::wat2wasm(wat.as_bytes()).unwrap();
        let native = crate::engine::aot::compile(&wasm, dir.path()).unwrap();
        let config = crate::engine::aot::native_loader_config().unwrap();
        Module::from_bytes(Some(&config), native).unwrap()
    }

    /// `f(x) = f(x + 1) - x`, the recursion of the issue, and an out-of-bounds store.
    const DEEP: &str = r#"(module (memory (export "memory") 1)
        (func $f (param i32) (result i32) (i32.sub (call $f (i32.add (local.get 0) (i32.const 1))) (local.get 0)))
        (func (export "recurse") (drop (call $f (i32.const 0))))
        (func (export "oob") (i32.store (i32.const 70000) (i32.const 1)))
        (func $down (param i32) (result i32)
            (if (result i32) (i32.eqz (local.get 0)) (then (i32.const 0))
                (else (i32.sub (call $down (i32.sub (local.get 0) (i32.const 1))) (local.get 0)))))
        (func (export "depth_100000") (drop (call $down (i32.const 100000))))
        (func (export "_start")))"#;

    /// Installs signal handlers: in a process of its own.
    #[test]
    fn deep_recursion_is_a_trap_and_the_thread_goes_on() {
        if !crate::test_support::in_a_process_of_its_own(
            "engine::stack::tests::deep_recursion_is_a_trap_and_the_thread_goes_on",
        ) {
            return;
        }
        install(compiled(ANCHOR_WAT)).unwrap();
        let module = std::sync::Arc::new(compiled(DEEP));
        let outcomes = spawn_call_thread("test-calls".into(), move || {
            let spec = |func: &str| SlotSpec {
                run: RunSpec {
                    func: func.into(),
                    args: vec![],
                    envs: vec![],
                    preopens: vec![],
                    // Far above the 1 page in use: a trap is not taken for running out of memory.
                    max_memory_pages: 256,
                    allowed_hosts: vec![],
                    max_network_requests: 0,
                    max_disk_bytes: 0,
                    disk: None,
                },
                timeout: Duration::from_secs(60),
            };
            let mut outcomes = vec![];
            for func in ["recurse", "oob", "recurse", "_start", "depth_100000"] {
                let mut slot = InstanceSlot::new(&module, spec(func)).unwrap();
                outcomes.push(slot.call(vec![]).unwrap().outcome);
            }
            outcomes
        })
        .unwrap()
        .join()
        .unwrap();
        let exhausted = Outcome::Trapped("call stack exhausted".into());
        assert_eq!(outcomes[0], exhausted);
        assert!(
            matches!(&outcomes[1], Outcome::Trapped(t) if t.contains("out of bounds")),
            "{:?}",
            outcomes[1]
        );
        assert_eq!(
            outcomes[2], exhausted,
            "the same thread overflows and recovers again"
        );
        assert_eq!(outcomes[3], Outcome::Exited(0));
        assert_eq!(
            outcomes[4],
            Outcome::Exited(0),
            "the documented depth: 100 000 calls of a small function"
        );
    }

    /// Prints the deepest recursion of a small function that fits (for the README):
    /// `cargo test --release --lib stack::tests::measure_depth -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn measure_depth() {
        if !crate::test_support::in_a_process_of_its_own("engine::stack::tests::measure_depth") {
            return;
        }
        install(compiled(ANCHOR_WAT)).unwrap();
        let deepest = spawn_call_thread("measure".into(), move || {
            let (mut ok, mut bad) = (1u32, 1u32 << 26);
            while bad - ok > 1000 {
                let mid = ok + (bad - ok) / 2;
                let module = compiled(&format!(
                    r#"(module (memory (export "memory") 1)
                    (func $down (param i32) (result i32)
                        (if (result i32) (i32.eqz (local.get 0)) (then (i32.const 0))
                            (else (i32.sub (call $down (i32.sub (local.get 0) (i32.const 1))) (local.get 0)))))
                    (func (export "_start") (drop (call $down (i32.const {mid})))))"#
                ));
                let spec = SlotSpec {
                    run: RunSpec { func: "_start".into(), args: vec![], envs: vec![], preopens: vec![], max_memory_pages: 256, allowed_hosts: vec![], max_network_requests: 0, max_disk_bytes: 0, disk: None },
                    timeout: Duration::from_secs(60),
                };
                let fits = InstanceSlot::new(&module, spec).unwrap().call(vec![]).unwrap().outcome == Outcome::Exited(0);
                if fits {
                    ok = mid
                } else {
                    bad = mid
                }
            }
            ok
        })
        .unwrap()
        .join()
        .unwrap();
        println!("deepest recursion of a small AOT function: about {deepest} calls");
    }
}
