//! Links every binary of this package against the engine root of `scripts/engine.sh`: its own
//! dynamic loader and, through DT_RPATH (searched for the libraries' own dependencies too, and
//! before LD_LIBRARY_PATH), its glibc, libstdc++, libLLVM and libwasmedge. The binaries then
//! load nothing of the build machine's libraries (never another libwasmedge); `make bundle`
//! repoints both at the bundle. Cargo cannot give a library's unit tests link arguments
//! without giving them to every binary of the package, so `make build` resets `wasm-oci` and
//! the controller, which load no engine, to the machine's own loader (Makefile,
//! SYSTEM_LINKED); the workspace split will give them crates of their own.
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=CSW_ENGINE_LIB_DIR");
    let Ok(lib_dir) = std::env::var("CSW_ENGINE_LIB_DIR") else {
        return;
    };
    let loader = Path::new(&lib_dir).join("ld-linux-x86-64.so.2");
    if !loader.exists() {
        panic!(
            "{} is missing: run scripts/setup.sh (make setup)",
            loader.display()
        );
    }
    println!("cargo:rerun-if-changed={}", loader.display());
    println!(
        "cargo:rustc-link-arg=-Wl,--dynamic-linker={}",
        loader.display()
    );
    println!("cargo:rustc-link-arg=-Wl,--disable-new-dtags,-rpath,{lib_dir}");
    // libwasmedge's own dependencies (a newer glibc among them) resolve at link time here.
    println!("cargo:rustc-link-arg=-Wl,-rpath-link,{lib_dir}");
}
