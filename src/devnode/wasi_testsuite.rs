//! The official WASI testsuite (prebuilt wasm32-wasip1 modules in `../shared/wasi-testsuite`):
//! reading its tests and judging a run the way upstream's runner does. The runs themselves
//! happen in two places: in process against the engine (`engine::wasi` tests, seconds) and
//! through the shim under a private containerd (`tests/wasi_testsuite.rs`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

/// Where the suite is: `CSW_WASI_TESTSUITE`, else `../shared/wasi-testsuite` beside the repo.
/// `None` (with the reason) when it is absent: a clone without `../shared`.
pub fn root() -> Result<PathBuf, String> {
    let path = std::env::var_os("CSW_WASI_TESTSUITE")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::repo().join("../shared/wasi-testsuite"));
    if path.join("tests").is_dir() {
        Ok(path)
    } else {
        Err(format!(
            "the WASI testsuite is not at {} (set CSW_WASI_TESTSUITE to its directory)",
            path.display()
        ))
    }
}

/// The suite's tests, or `None` after saying on stderr why they are skipped (the suite is
/// absent). A suite that is present but unreadable is a failure, not a skip.
pub fn cases_or_skip() -> Option<Vec<Case>> {
    match root() {
        Ok(root) => Some(cases(&root).unwrap_or_else(|e| panic!("{e:#}"))),
        Err(why) => {
            eprintln!("SKIPPED, not run: {why}");
            None
        }
    }
}

/// One test: a module, how to run it and what it must do.
#[derive(Debug, Clone)]
pub struct Case {
    /// `rust/fd_readdir`: the suite (language) and the module's name.
    pub id: String,
    pub wasm: PathBuf,
    /// argv[1..].
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Directories beside the test, each preopened under its own (relative) name.
    pub dirs: Vec<Dir>,
    pub exit_code: i32,
    /// Exact stdout, when the test says.
    pub stdout: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Dir {
    /// The guest name, e.g. `fs-tests.dir`.
    pub name: String,
    /// The directory in the (read-only) suite: copy it before a run.
    pub source: PathBuf,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Spec {
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    dirs: Vec<String>,
    #[serde(default)]
    exit_code: i32,
    stdout: Option<String>,
}

/// Every test of the wasm32-wasip1 suites under `root`, sorted by id. A test description the
/// runner does not understand (upstream's newer `operations`) is an error, not a skip.
pub fn cases(root: &Path) -> anyhow::Result<Vec<Case>> {
    let mut cases = Vec::new();
    let tests = root.join("tests");
    for lang in read_dir_sorted(&tests)? {
        let dir = lang.join("testsuite/wasm32-wasip1");
        if !dir.is_dir() {
            continue;
        }
        let suite = lang.file_name().unwrap().to_string_lossy().into_owned();
        for wasm in read_dir_sorted(&dir)? {
            if wasm.extension().is_none_or(|e| e != "wasm") {
                continue;
            }
            let name = wasm.file_stem().unwrap().to_string_lossy().into_owned();
            let json = wasm.with_extension("json");
            let spec: Spec = if json.exists() {
                let text = std::fs::read_to_string(&json)
                    .with_context(|| format!("reading {}", json.display()))?;
                serde_json::from_str(&text).with_context(|| format!("{}", json.display()))?
            } else {
                Spec::default()
            };
            let mut dirs = Vec::new();
            for d in spec.dirs {
                let source = dir.join(&d);
                if !source.is_dir() || d.contains('/') {
                    bail!(
                        "{}: dir {d} is not a directory beside the test",
                        json.display()
                    );
                }
                dirs.push(Dir { name: d, source });
            }
            cases.push(Case {
                id: format!("{suite}/{name}"),
                wasm,
                args: spec.args,
                env: spec.env.into_iter().collect(),
                dirs,
                exit_code: spec.exit_code,
                stdout: spec.stdout,
            });
        }
    }
    Ok(cases)
}

fn read_dir_sorted(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.sort();
    Ok(paths)
}

impl Case {
    /// Copies the test's dirs into `into` (one subdirectory each, named as the guest sees it),
    /// leaving out what earlier runs left (`*.cleanup`); returns (guest name, host dir).
    pub fn copy_dirs(&self, into: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        for d in &self.dirs {
            let to = into.join(&d.name);
            copy_tree(&d.source, &to)?;
            out.push((d.name.clone(), to));
        }
        Ok(out)
    }

    /// Upstream's verdict: the exit code, and stdout exactly when the test gives it.
    pub fn judge(&self, exit_code: i32, stdout: &str) -> Result<(), String> {
        if exit_code != self.exit_code {
            return Err(format!(
                "exit code {exit_code}, expected {}",
                self.exit_code
            ));
        }
        match &self.stdout {
            Some(expected) if expected != stdout => {
                Err(format!("stdout {stdout:?}, expected {expected:?}"))
            }
            _ => Ok(()),
        }
    }

    /// Names of the env vars the test sets.
    pub fn env_names(&self) -> Vec<&str> {
        self.env.iter().map(|(k, _)| k.as_str()).collect()
    }
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".cleanup") {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&name));
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// What a run of the suite gave.
#[derive(Debug, Default)]
pub struct Tally {
    pub passed: usize,
    /// (test id, why).
    pub failed: Vec<(String, String)>,
}

impl Tally {
    pub fn record(&mut self, case: &Case, verdict: Result<(), String>) {
        match verdict {
            Ok(()) => self.passed += 1,
            Err(why) => self.failed.push((case.id.clone(), why)),
        }
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (id, why) in &self.failed {
            writeln!(f, "FAILED {id}: {why}")?;
        }
        write!(f, "{} passed, {} failed", self.passed, self.failed.len())
    }
}
