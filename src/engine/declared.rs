//! Sizes a module declares, checked before it is compiled or instantiated. WasmEdge caps linear
//! memory at the policy's `max_memory_pages`, but nothing else a module declares: a table of
//! 60 M references takes about 1 GiB of the container's memory at instantiation, whatever the
//! memory cap says. Tables are therefore held to a bound derived from the same cap.

use wasmparser::{Operator, Parser, Payload};

use super::LoadError;

/// What WasmEdge holds per table element (a reference), counted against the memory cap.
pub const TABLE_ELEMENT_BYTES: u64 = 16;

/// Most elements all tables of a module may hold under a memory cap of `max_memory_pages`.
pub fn max_table_elements(max_memory_pages: u32) -> u64 {
    u64::from(max_memory_pages) * 65536 / TABLE_ELEMENT_BYTES
}

/// Refuses a module whose tables are, or may grow (`table.grow` without a maximum within the
/// bound), larger than [`max_table_elements`]. A module the parser cannot read passes: the
/// loader reports what is wrong with it.
pub fn check_tables(wasm: &[u8], origin: &str, max_memory_pages: u32) -> Result<(), LoadError> {
    let limit = max_table_elements(max_memory_pages);
    let too_large = |what: String| {
        LoadError(format!(
            "{origin}: table too large: {what}; at most {limit} elements with max_memory_pages {max_memory_pages} ({TABLE_ELEMENT_BYTES} bytes an element count against the memory cap); raise wasmedge.io/max-memory-pages or make the table smaller"
        ))
    };
    let mut declared: u64 = 0;
    let mut unbounded: Option<(u32, Option<u64>)> = None;
    let mut index = 0u32;
    for payload in Parser::new(0).parse_all(wasm) {
        let Ok(payload) = payload else { return Ok(()) };
        match payload {
            Payload::TableSection(tables) => {
                for table in tables {
                    let Ok(table) = table else { return Ok(()) };
                    let ty = table.ty;
                    declared = declared.saturating_add(ty.initial);
                    if declared > limit {
                        return Err(too_large(format!(
                            "table {index} declares {} elements",
                            ty.initial
                        )));
                    }
                    if ty.maximum.is_none_or(|max| max > limit) && unbounded.is_none() {
                        unbounded = Some((index, ty.maximum));
                    }
                    index += 1;
                }
            }
            Payload::CodeSectionEntry(body) if unbounded.is_some() => {
                let Ok(mut ops) = body.get_operators_reader() else {
                    return Ok(());
                };
                while !ops.eof() {
                    match ops.read() {
                        Ok(Operator::TableGrow { .. }) => {
                            let (table, max) = unbounded.unwrap_or_default();
                            let bound =
                                max.map_or("no maximum".to_string(), |m| format!("maximum {m}"));
                            return Err(too_large(format!("table {table} may grow without bound ({bound}) and the code uses table.grow")));
                        }
                        Ok(_) => {}
                        Err(_) => return Ok(()),
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Refuses a module with a start function, for HTTP mode: there every request instantiates the
/// module afresh, and WasmEdge runs the start function inside instantiation, where no time
/// limit reaches (its timeout covers calls only). One that loops would hold a slot for ever.
/// Toolchains for WASI emit none (`_start` and `_initialize` are exports, not the start
/// function); command mode keeps accepting them, under its process watchdog.
pub fn check_no_start_function(wasm: &[u8], origin: &str) -> Result<(), LoadError> {
    for payload in Parser::new(0).parse_all(wasm) {
        match payload {
            Ok(Payload::StartSection { func, .. }) => {
                return Err(LoadError(format!(
                    "{origin}: the module has a start function (function {func}); HTTP mode runs it at every request's instantiation, outside the request's time limit, so it is refused: move that code into _start or the handler, or run the module in command mode"
                )))
            }
            // Sections come in order: past the code section there is no start section.
            Ok(Payload::CodeSectionStart { .. }) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wasm(wat: &str) -> Vec<u8> {
        wasmedge_sdk::wat2wasm(wat.as_bytes()).unwrap().to_vec()
    }

    #[test]
    fn tables_within_the_bound_pass() {
        assert_eq!(max_table_elements(16), 65536);
        assert!(check_tables(&wasm("(module (table 65536 funcref))"), "m", 16).is_ok());
        assert!(check_tables(&wasm("(module (table 1 10 funcref) (func (drop (table.grow 0 (ref.null func) (i32.const 1)))))"), "m", 16).is_ok());
        // Rust and C modules: a small table with a maximum, no table.grow.
        assert!(check_tables(
            &wasm("(module (table 1 1 funcref) (table 5 funcref))"),
            "m",
            16
        )
        .is_ok());
    }

    #[test]
    fn a_large_table_is_refused_with_the_bound_and_the_fix() {
        let e = check_tables(
            &wasm("(module (table 60000000 funcref))"),
            "/app/t.wasm",
            16,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("failed to load module: /app/t.wasm: table too large: table 0 declares 60000000 elements"), "{e}");
        assert!(
            e.contains("at most 65536 elements with max_memory_pages 16")
                && e.contains("wasmedge.io/max-memory-pages"),
            "{e}"
        );
        // Several tables count together.
        assert!(check_tables(
            &wasm("(module (table 40000 funcref) (table 40000 externref))"),
            "m",
            16
        )
        .is_err());
    }

    #[test]
    fn unbounded_growth_is_refused() {
        let grows = "(module (table 1 funcref) (func (drop (table.grow 0 (ref.null func) (i32.const 1000000)))))";
        let e = check_tables(&wasm(grows), "m", 16).unwrap_err().to_string();
        assert!(
            e.contains("table 0 may grow without bound (no maximum)"),
            "{e}"
        );
        let e = check_tables(
            &wasm(&grows.replace("(table 1 funcref)", "(table 1 100000000 funcref)")),
            "m",
            16,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("(maximum 100000000)"), "{e}");
    }

    #[test]
    fn http_mode_refuses_a_start_function() {
        let e = check_no_start_function(
            &wasm("(module (func $spin (loop (br 0))) (start $spin))"),
            "/app/s.wasm",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(
                "failed to load module: /app/s.wasm: the module has a start function (function 0)"
            ),
            "{e}"
        );
        assert!(e.contains("outside the request's time limit"), "{e}");
        let commands = "(module (func (export \"_start\")) (func (export \"_initialize\")))";
        assert!(check_no_start_function(&wasm(commands), "m").is_ok());
    }

    #[test]
    fn unreadable_modules_are_left_to_the_loader() {
        assert!(check_tables(b"\0asm\x01\0\0\0\x04\xff", "m", 16).is_ok());
    }
}
