//! Writes the containerd drop-in that registers the `wasmedge` runtime for CRI.
//!
//! Usage: containerd-wasmedge-config --effective <(containerd config dump) \
//!            --runtime runtime-config/wasmedge-runtime.toml --out /etc/containerd/conf.d/wasmedge.toml

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use containerd_shim_wasmedge::containerd_config::build_dropin;

#[derive(Parser)]
#[command(about = "Write the containerd drop-in registering the wasmedge runtime for CRI")]
struct Args {
    /// The node's effective config, as printed by `containerd config dump`.
    #[arg(long)]
    effective: PathBuf,
    /// The runtime snippet (runtime-config/wasmedge-runtime.toml).
    #[arg(long)]
    runtime: PathBuf,
    /// Where to write the drop-in (written atomically).
    #[arg(long)]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let effective = std::fs::read_to_string(&args.effective)
        .with_context(|| format!("reading {}", args.effective.display()))?;
    let runtime = std::fs::read_to_string(&args.runtime)
        .with_context(|| format!("reading {}", args.runtime.display()))?;
    let dropin = build_dropin(&effective, &runtime)?;
    let tmp = args.out.with_extension("toml.tmp");
    std::fs::write(&tmp, dropin).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.out)
        .with_context(|| format!("renaming to {}", args.out.display()))?;
    Ok(())
}
