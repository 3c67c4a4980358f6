//! `wasm-oci`: build OCI image-layout tarballs that `ctr image import` accepts.
//!
//! Subcommands:
//! * `rootfs`   – an ordinary OCI image with one deterministic, uncompressed
//!   tar layer (a wasm module under `/app/`, plus arbitrary extra files).
//! * `artifact` – a wasm OCI artifact (config `architecture: wasm`,
//!   `os: wasip1`, one `application/wasm` layer with the raw module bytes),
//!   as consumed by runwasi / containerd-shim-wasm.
//! * `inspect`  – print and verify the index → manifest → config chain of
//!   such a tarball.
//!
//! All OCI documents are produced with oci-spec builders and serialized with
//! sorted object keys, and every tar is written with fixed metadata, so the
//! same inputs always produce byte-identical output.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::{Args, Parser, Subcommand};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, ImageConfiguration,
    ImageConfigurationBuilder, ImageIndex, ImageIndexBuilder, ImageManifest, ImageManifestBuilder,
    MediaType, OciLayoutBuilder, Os, Platform, PlatformBuilder, RootFsBuilder, Sha256Digest,
    ANNOTATION_REF_NAME,
};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// Annotation containerd's importer also honours for the image name.
const ANNOTATION_CONTAINERD_IMAGE_NAME: &str = "io.containerd.image.name";
/// Layer media type for raw wasm modules (accepted by containerd-shim-wasm).
const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Default PATH put into the config of rootfs images.
const DEFAULT_PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const DEFAULT_PLATFORM: &str = "linux/amd64";
const WASM_MAGIC: &[u8; 4] = b"\0asm";

// ---------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------

#[derive(Parser, Debug)]
#[command(
    name = "wasm-oci",
    about = "Write OCI image layouts (tar) for WebAssembly modules, importable with `ctr image import`"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Ordinary OCI image with a single uncompressed tar layer.
    Rootfs(RootfsArgs),
    /// OCI wasm artifact (architecture wasm, os wasip1, application/wasm layer).
    Artifact(ArtifactArgs),
    /// Print the index/manifest/config summary of an image tarball.
    Inspect {
        /// Image layout tarball written by this tool (or any OCI layout tar).
        file: PathBuf,
    },
}

#[derive(Args, Debug)]
struct RootfsArgs {
    /// Image reference, e.g. docker.io/library/hello:latest or localhost/hello:v1.
    #[arg(long)]
    name: String,
    /// Output tarball.
    #[arg(long)]
    out: PathBuf,
    /// Wasm module, stored at /app/<basename> (entrypoint defaults to it).
    #[arg(long)]
    module: Option<PathBuf>,
    /// Extra file: HOST:GUEST[:MODE] (octal MODE; default 0755 if executable, else 0644).
    #[arg(long = "file", value_name = "HOST:GUEST[:MODE]")]
    files: Vec<String>,
    /// Entrypoint argument (repeat for several).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    entrypoint: Vec<String>,
    /// Cmd argument (repeat for several).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    cmd: Vec<String>,
    /// Environment variable K=V (added after the default PATH).
    #[arg(long, value_name = "K=V")]
    env: Vec<String>,
    /// Platform OS/ARCH[/VARIANT].
    #[arg(long, default_value = DEFAULT_PLATFORM)]
    platform: String,
    /// Image config label K=V.
    #[arg(long, value_name = "K=V")]
    label: Vec<String>,
}

#[derive(Args, Debug)]
struct ArtifactArgs {
    /// Image reference, e.g. docker.io/library/hello:latest or localhost/hello:v1.
    #[arg(long)]
    name: String,
    /// Output tarball.
    #[arg(long)]
    out: PathBuf,
    /// Wasm module stored as the single application/wasm layer.
    #[arg(long)]
    module: PathBuf,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    if let Err(err) = run(cli) {
        eprintln!("wasm-oci: error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Rootfs(args) => {
            let spec = rootfs_spec_from_args(&args)?;
            let bytes = build_rootfs_image(&spec)?;
            write_atomic(&args.out, &bytes)?;
            println!(
                "wrote {} ({} bytes) as {}",
                args.out.display(),
                bytes.len(),
                spec.name
            );
        }
        Command::Artifact(args) => {
            let bytes = build_artifact_image(&args.name, &args.module)?;
            write_atomic(&args.out, &bytes)?;
            println!(
                "wrote {} ({} bytes) as {}",
                args.out.display(),
                bytes.len(),
                args.name
            );
        }
        Command::Inspect { file } => {
            let data =
                fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let report = inspect_layout(&data)?;
            print!("{report}");
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Input parsing
// ---------------------------------------------------------------------------

/// One regular file inside a rootfs layer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LayerFile {
    /// Normalized guest path without leading '/', e.g. `app/hello.wasm`.
    path: String,
    mode: u32,
    data: Vec<u8>,
}

/// Everything needed to build a rootfs image.
#[derive(Debug, Clone)]
struct RootfsSpec {
    name: String,
    platform: Platform,
    files: Vec<LayerFile>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    labels: BTreeMap<String, String>,
}

fn validate_name(name: &str) -> Result<()> {
    ensure!(!name.is_empty(), "--name must not be empty");
    ensure!(
        !name.chars().any(|c| c.is_whitespace() || c.is_control()),
        "invalid image name {name:?}: must not contain whitespace"
    );
    Ok(())
}

/// Parse `OS/ARCH[/VARIANT]`.
fn parse_platform(s: &str) -> Result<Platform> {
    let parts: Vec<&str> = s.split('/').collect();
    if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
        bail!("bad --platform {s:?}: expected OS/ARCH[/VARIANT], e.g. linux/amd64");
    }
    let mut builder = PlatformBuilder::default()
        .os(Os::from(parts[0]))
        .architecture(Arch::from(parts[1]));
    if let Some(variant) = parts.get(2) {
        builder = builder.variant(variant.to_string());
    }
    builder.build().context("building platform")
}

/// Normalize an absolute or relative guest path to `a/b/c` form.
fn normalize_guest_path(guest: &str) -> Result<String> {
    let mut parts = Vec::new();
    for comp in guest.split('/') {
        match comp {
            "" | "." => {}
            ".." => bail!("guest path {guest:?} must not contain '..'"),
            c => parts.push(c),
        }
    }
    ensure!(
        !parts.is_empty(),
        "guest path {guest:?} does not name a file"
    );
    Ok(parts.join("/"))
}

fn parse_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o7777)
}

/// Parse `HOST:GUEST[:MODE]` and read the host file.
fn parse_file_arg(arg: &str) -> Result<LayerFile> {
    let syntax = || {
        anyhow!("bad --file syntax {arg:?}: expected HOST:GUEST[:MODE] (MODE in octal, e.g. 0755)")
    };
    let parts: Vec<&str> = arg.split(':').collect();
    let (host, guest, mode) = match parts.as_slice() {
        [host, guest] => (*host, *guest, None),
        [host, guest, mode] => (*host, *guest, Some(parse_mode(mode).ok_or_else(syntax)?)),
        _ => return Err(syntax()),
    };
    if host.is_empty() || guest.is_empty() {
        return Err(syntax());
    }
    let path = normalize_guest_path(guest).with_context(|| format!("in --file {arg:?}"))?;
    let host_path = Path::new(host);
    let meta = fs::metadata(host_path).map_err(|_| anyhow!("file not found: {host}"))?;
    ensure!(meta.is_file(), "not a regular file: {host}");
    let data = fs::read(host_path).with_context(|| format!("cannot read {host}"))?;
    let mode = mode.unwrap_or(if meta.permissions().mode() & 0o111 != 0 {
        0o755
    } else {
        0o644
    });
    Ok(LayerFile { path, mode, data })
}

/// Read a wasm module, checking that it exists and has the wasm magic.
fn read_wasm_module(path: &Path) -> Result<(String, Vec<u8>)> {
    if !path.is_file() {
        bail!("module not found: {}", path.display());
    }
    let data = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !data.starts_with(WASM_MAGIC) {
        bail!("not a wasm module: {}", path.display());
    }
    let basename = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("module path has no usable file name: {}", path.display()))?
        .to_string();
    Ok((basename, data))
}

fn parse_key_value(kind: &str, kv: &str) -> Result<(String, String)> {
    match kv.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => bail!("bad {kind} {kv:?}: expected K=V"),
    }
}

fn rootfs_spec_from_args(args: &RootfsArgs) -> Result<RootfsSpec> {
    validate_name(&args.name)?;
    let platform = parse_platform(&args.platform)?;

    let mut files = Vec::new();
    let mut entrypoint = args.entrypoint.clone();
    if let Some(module) = &args.module {
        let (basename, data) = read_wasm_module(module)?;
        let path = format!("app/{basename}");
        if entrypoint.is_empty() {
            entrypoint = vec![format!("/{path}")];
        }
        files.push(LayerFile {
            path,
            mode: 0o644,
            data,
        });
    }
    for f in &args.files {
        files.push(parse_file_arg(f)?);
    }

    let mut env = Vec::new();
    let mut user_path = false;
    for e in &args.env {
        let (k, _) = parse_key_value("--env", e)?;
        user_path |= k == "PATH";
        env.push(e.clone());
    }
    if !user_path {
        env.insert(0, DEFAULT_PATH_ENV.to_string());
    }

    let mut labels = BTreeMap::new();
    for l in &args.label {
        let (k, v) = parse_key_value("--label", l)?;
        labels.insert(k, v);
    }

    Ok(RootfsSpec {
        name: args.name.clone(),
        platform,
        files,
        entrypoint,
        cmd: args.cmd.clone(),
        env,
        labels,
    })
}

// ---------------------------------------------------------------------------
// Building blocks
// ---------------------------------------------------------------------------

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn sha256_digest(data: &[u8]) -> Result<Digest> {
    let d = Sha256Digest::from_str(&sha256_hex(data)).context("building sha256 digest")?;
    Ok(d.into())
}

/// Recursively sort object keys so HashMaps inside oci-spec types serialize
/// deterministically (independent of serde_json's `preserve_order`).
fn sort_json(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sort_json(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_json).collect()),
        other => other,
    }
}

fn canonical_json<T: Serialize>(doc: &T) -> Result<Vec<u8>> {
    let value = serde_json::to_value(doc).context("serializing OCI document")?;
    Ok(serde_json::to_vec(&sort_json(value))?)
}

/// Content-addressed blobs of one image layout.
#[derive(Default)]
struct BlobStore {
    blobs: BTreeMap<String, Vec<u8>>,
}

impl BlobStore {
    /// Store `data` and return a descriptor for it.
    fn add(&mut self, media_type: MediaType, data: Vec<u8>) -> Result<Descriptor> {
        let desc = DescriptorBuilder::default()
            .media_type(media_type)
            .digest(sha256_digest(&data)?)
            .size(data.len() as u64)
            .build()
            .context("building descriptor")?;
        self.blobs.insert(sha256_hex(&data), data);
        Ok(desc)
    }
}

fn tar_header(entry_type: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(entry_type);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_dir<W: Write>(b: &mut tar::Builder<W>, path: &str) -> Result<()> {
    let mut h = tar_header(tar::EntryType::Directory, 0o755, 0);
    b.append_data(&mut h, format!("{path}/"), std::io::empty())
        .with_context(|| format!("adding directory {path}"))?;
    Ok(())
}

fn append_file<W: Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> Result<()> {
    let mut h = tar_header(tar::EntryType::Regular, mode, data.len() as u64);
    b.append_data(&mut h, path, data)
        .with_context(|| format!("adding file {path}"))?;
    Ok(())
}

/// Deterministic uncompressed layer tar: parent directories (0755) and files,
/// sorted by path, mtime 0, uid/gid 0.
fn build_layer_tar(files: &[LayerFile]) -> Result<Vec<u8>> {
    let mut by_path: BTreeMap<&str, &LayerFile> = BTreeMap::new();
    for f in files {
        if by_path.insert(f.path.as_str(), f).is_some() {
            bail!("duplicate path in image: /{}", f.path);
        }
    }
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    for path in by_path.keys() {
        let mut prefix = String::new();
        let comps: Vec<&str> = path.split('/').collect();
        for comp in &comps[..comps.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            dirs.insert(prefix.clone());
        }
    }
    for d in &dirs {
        if by_path.contains_key(d.as_str()) {
            bail!("path /{d} is used both as a file and as a directory");
        }
    }

    // A parent is a strict prefix of its children, so plain string order
    // always puts directories before their contents.
    let mut entries: BTreeMap<&str, Option<&LayerFile>> = BTreeMap::new();
    for d in &dirs {
        entries.insert(d.as_str(), None);
    }
    for (p, f) in &by_path {
        entries.insert(p, Some(f));
    }

    let mut b = tar::Builder::new(Vec::new());
    for (path, file) in entries {
        match file {
            None => append_dir(&mut b, path)?,
            Some(f) => append_file(&mut b, path, f.mode, &f.data)?,
        }
    }
    b.into_inner().context("finishing layer tar")
}

/// Serialize manifest + index for `config_desc`/`layers` and write the whole
/// OCI layout as a tar.
fn finish_layout(
    mut blobs: BlobStore,
    name: &str,
    platform: Platform,
    config_desc: Descriptor,
    layers: Vec<Descriptor>,
) -> Result<Vec<u8>> {
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_desc)
        .layers(layers)
        .build()
        .context("building image manifest")?;
    let manifest_desc = blobs.add(MediaType::ImageManifest, canonical_json(&manifest)?)?;

    let annotations = HashMap::from([
        (ANNOTATION_REF_NAME.to_string(), name.to_string()),
        (
            ANNOTATION_CONTAINERD_IMAGE_NAME.to_string(),
            name.to_string(),
        ),
    ]);
    let index_entry = DescriptorBuilder::default()
        .media_type(MediaType::ImageManifest)
        .digest(manifest_desc.digest().clone())
        .size(manifest_desc.size())
        .annotations(annotations)
        .platform(platform)
        .build()
        .context("building index descriptor")?;
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![index_entry])
        .build()
        .context("building image index")?;
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .context("building oci-layout")?;

    // Entries in sorted path order.
    let mut b = tar::Builder::new(Vec::new());
    append_dir(&mut b, "blobs")?;
    append_dir(&mut b, "blobs/sha256")?;
    for (hex, data) in &blobs.blobs {
        append_file(&mut b, &format!("blobs/sha256/{hex}"), 0o644, data)?;
    }
    append_file(&mut b, "index.json", 0o644, &canonical_json(&index)?)?;
    append_file(&mut b, "oci-layout", 0o644, &canonical_json(&layout)?)?;
    b.into_inner().context("finishing image tar")
}

/// Build an ordinary OCI image (single uncompressed tar layer).
fn build_rootfs_image(spec: &RootfsSpec) -> Result<Vec<u8>> {
    validate_name(&spec.name)?;
    let mut blobs = BlobStore::default();

    let layer = build_layer_tar(&spec.files)?;
    let diff_id = sha256_digest(&layer)?;
    let layer_desc = blobs.add(MediaType::ImageLayer, layer)?;

    let mut config = ConfigBuilder::default().env(spec.env.clone());
    if !spec.entrypoint.is_empty() {
        config = config.entrypoint(spec.entrypoint.clone());
    }
    if !spec.cmd.is_empty() {
        config = config.cmd(spec.cmd.clone());
    }
    if !spec.labels.is_empty() {
        let labels: HashMap<String, String> = spec
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        config = config.labels(labels);
    }
    let config = config.build().context("building image config")?;

    let mut image_config = ImageConfigurationBuilder::default()
        .architecture(spec.platform.architecture().clone())
        .os(spec.platform.os().clone())
        .config(config)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id.to_string()])
                .build()
                .context("building rootfs")?,
        );
    if let Some(variant) = spec.platform.variant() {
        image_config = image_config.variant(variant.clone());
    }
    let image_config = image_config
        .build()
        .context("building image configuration")?;
    let config_desc = blobs.add(MediaType::ImageConfig, canonical_json(&image_config)?)?;

    finish_layout(
        blobs,
        &spec.name,
        spec.platform.clone(),
        config_desc,
        vec![layer_desc],
    )
}

/// Build a wasm OCI artifact: config arch wasm / os wasip1, one
/// `application/wasm` layer holding the raw module.
fn build_artifact_image(name: &str, module: &Path) -> Result<Vec<u8>> {
    validate_name(name)?;
    let (basename, data) = read_wasm_module(module)?;
    let mut blobs = BlobStore::default();

    let layer_desc = blobs.add(MediaType::Other(WASM_LAYER_MEDIA_TYPE.to_string()), data)?;

    let config = ConfigBuilder::default()
        .entrypoint(vec![format!("/{basename}")])
        .build()
        .context("building image config")?;
    let image_config = ImageConfigurationBuilder::default()
        .architecture(Arch::Wasm)
        .os(Os::Other("wasip1".to_string()))
        .config(config)
        // diff_ids stay empty: containerd does not count `application/wasm`
        // as a filesystem layer, and a non-empty list makes its unpacker
        // fail with "mismatched image rootfs and manifest layers".
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(Vec::<String>::new())
                .build()
                .context("building rootfs")?,
        )
        .build()
        .context("building image configuration")?;
    let config_desc = blobs.add(MediaType::ImageConfig, canonical_json(&image_config)?)?;

    let platform = PlatformBuilder::default()
        .os(Os::Other("wasip1".to_string()))
        .architecture(Arch::Wasm)
        .build()
        .context("building platform")?;
    finish_layout(blobs, name, platform, config_desc, vec![layer_desc])
}

/// Write `data` to `out` via `out.tmp` + rename.
fn write_atomic(out: &Path, data: &[u8]) -> Result<()> {
    // The rename would replace symlinks/devices (e.g. /dev/stdout) with a file.
    if let Ok(meta) = fs::symlink_metadata(out) {
        ensure!(
            meta.file_type().is_file(),
            "refusing to replace {}: not a regular file",
            out.display()
        );
    }
    let mut tmp = out.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| -> Result<()> {
        let mut f =
            fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(data)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        drop(f);
        fs::rename(&tmp, out)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), out.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

// ---------------------------------------------------------------------------
// Inspect
// ---------------------------------------------------------------------------

/// Contents of an OCI layout tarball.
struct Layout {
    files: BTreeMap<String, Vec<u8>>,
}

impl Layout {
    fn read(data: &[u8]) -> Result<Self> {
        let mut files = BTreeMap::new();
        let mut archive = tar::Archive::new(data);
        for entry in archive.entries().context("reading tar")? {
            let mut entry = entry.context("reading tar entry")?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let path = entry
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            let mut buf = Vec::new();
            entry.read_to_end(&mut buf)?;
            files.insert(path, buf);
        }
        Ok(Layout { files })
    }

    fn file(&self, path: &str) -> Result<&[u8]> {
        self.files
            .get(path)
            .map(|v| v.as_slice())
            .ok_or_else(|| anyhow!("{path} missing from image layout"))
    }

    /// Return the blob for `desc`, verifying size and digest.
    fn blob(&self, desc: &Descriptor) -> Result<&[u8]> {
        let hex = desc
            .as_digest_sha256()
            .ok_or_else(|| anyhow!("unsupported digest {}", desc.digest()))?;
        let data = self.file(&format!("blobs/sha256/{hex}"))?;
        ensure!(
            sha256_hex(data) == hex,
            "blob {} does not match its digest",
            desc.digest()
        );
        ensure!(
            data.len() as u64 == desc.size(),
            "blob {} has size {} but descriptor says {}",
            desc.digest(),
            data.len(),
            desc.size()
        );
        Ok(data)
    }
}

fn fmt_platform(p: &Platform) -> String {
    match p.variant() {
        Some(v) => format!("{}/{}/{}", p.os(), p.architecture(), v),
        None => format!("{}/{}", p.os(), p.architecture()),
    }
}

fn inspect_layout(data: &[u8]) -> Result<String> {
    use std::fmt::Write as _;
    let layout = Layout::read(data)?;
    let mut out = String::new();
    let oci_layout = String::from_utf8_lossy(layout.file("oci-layout")?).to_string();
    writeln!(out, "oci-layout: {oci_layout}")?;
    let index =
        ImageIndex::from_reader(layout.file("index.json")?).context("parsing index.json")?;
    writeln!(out, "index: {} manifest(s)", index.manifests().len())?;
    for m in index.manifests() {
        let ann = m.annotations().clone().unwrap_or_default();
        let ann: BTreeMap<_, _> = ann.into_iter().collect();
        writeln!(
            out,
            "manifest {} ({}, {} bytes)",
            m.digest(),
            m.media_type(),
            m.size()
        )?;
        for (k, v) in &ann {
            writeln!(out, "  annotation {k}={v}")?;
        }
        if let Some(p) = m.platform() {
            writeln!(out, "  platform: {}", fmt_platform(p))?;
        }
        if *m.media_type() != MediaType::ImageManifest {
            writeln!(out, "  (not an image manifest; skipped)")?;
            continue;
        }
        let manifest =
            ImageManifest::from_reader(layout.blob(m)?).context("parsing image manifest")?;
        let cdesc = manifest.config();
        writeln!(
            out,
            "  config {} ({}, {} bytes)",
            cdesc.digest(),
            cdesc.media_type(),
            cdesc.size()
        )?;
        let config =
            ImageConfiguration::from_reader(layout.blob(cdesc)?).context("parsing image config")?;
        writeln!(
            out,
            "    os/arch: {}/{}",
            config.os(),
            config.architecture()
        )?;
        if let Some(c) = config.config() {
            writeln!(
                out,
                "    entrypoint: {:?}",
                c.entrypoint().clone().unwrap_or_default()
            )?;
            writeln!(out, "    cmd: {:?}", c.cmd().clone().unwrap_or_default())?;
            writeln!(out, "    env: {:?}", c.env().clone().unwrap_or_default())?;
            if let Some(labels) = c.labels() {
                let labels: BTreeMap<_, _> = labels.iter().collect();
                writeln!(out, "    labels: {labels:?}")?;
            }
        }
        let diff_ids = config.rootfs().diff_ids();
        writeln!(out, "    diff_ids: {diff_ids:?}")?;
        for (i, l) in manifest.layers().iter().enumerate() {
            writeln!(
                out,
                "  layer {} ({}, {} bytes)",
                l.digest(),
                l.media_type(),
                l.size()
            )?;
            let blob = layout.blob(l)?;
            if *l.media_type() == MediaType::ImageLayer {
                let diff_ok = diff_ids
                    .get(i)
                    .map(|d| *d == format!("sha256:{}", sha256_hex(blob)));
                writeln!(out, "    diff_id matches: {}", diff_ok.unwrap_or(false))?;
                let mut archive = tar::Archive::new(blob);
                for e in archive.entries()? {
                    let e = e?;
                    let h = e.header();
                    writeln!(
                        out,
                        "    {:o} {:>9} {}",
                        h.mode()?,
                        h.size()?,
                        e.path()?.display()
                    )?;
                }
            } else if blob.starts_with(WASM_MAGIC) {
                writeln!(out, "    wasm module")?;
            }
        }
    }
    writeln!(out, "all digests verified")?;
    Ok(out)
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_WASM: &[u8] = b"\0asm\x01\0\0\0";

    fn rootfs_args(dir: &Path) -> RootfsArgs {
        let module = dir.join("hello.wasm");
        fs::write(&module, EMPTY_WASM).unwrap();
        let tool = dir.join("tool");
        fs::write(&tool, b"#!/bin/sh\necho hi\n").unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        let conf = dir.join("conf.txt");
        fs::write(&conf, b"k=v\n").unwrap();
        RootfsArgs {
            name: "localhost/hello:v1".into(),
            out: dir.join("rootfs.tar"),
            module: Some(module),
            files: vec![
                format!("{}:/usr/local/bin/tool", tool.display()),
                format!("{}:/etc/conf.txt", conf.display()),
                format!("{}:/etc/secret:0600", conf.display()),
            ],
            entrypoint: vec![],
            cmd: vec!["--flag".into()],
            env: vec!["FOO=bar".into()],
            platform: DEFAULT_PLATFORM.into(),
            label: vec!["a=b".into()],
        }
    }

    /// Walk index → manifest → config, checking digests; return the parts.
    fn check_chain(data: &[u8]) -> (ImageIndex, ImageManifest, ImageConfiguration, Layout) {
        let layout = Layout::read(data).unwrap();
        assert!(layout.files.contains_key("oci-layout"));
        let index = ImageIndex::from_reader(layout.file("index.json").unwrap()).unwrap();
        assert_eq!(index.manifests().len(), 1);
        let mdesc = &index.manifests()[0];
        let manifest = ImageManifest::from_reader(layout.blob(mdesc).unwrap()).unwrap();
        let config =
            ImageConfiguration::from_reader(layout.blob(manifest.config()).unwrap()).unwrap();
        for l in manifest.layers() {
            layout.blob(l).unwrap();
        }
        // Every blob in the layout is referenced and matches its name.
        for (path, blob) in &layout.files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(sha256_hex(blob), hex);
            }
        }
        assert_eq!(layout.files.len(), 2 + 2 + manifest.layers().len());
        (index, manifest, config, layout)
    }

    fn layer_entries(layer: &[u8]) -> Vec<(String, u32, Vec<u8>, tar::EntryType)> {
        let mut archive = tar::Archive::new(layer);
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let h = e.header().clone();
                assert_eq!(h.mtime().unwrap(), 0);
                assert_eq!(h.uid().unwrap(), 0);
                assert_eq!(h.gid().unwrap(), 0);
                let mut buf = Vec::new();
                e.read_to_end(&mut buf).unwrap();
                (
                    e.path().unwrap().to_string_lossy().to_string(),
                    h.mode().unwrap(),
                    buf,
                    h.entry_type(),
                )
            })
            .collect()
    }

    #[test]
    fn rootfs_image_chain_and_layer() {
        let dir = tempfile::tempdir().unwrap();
        let args = rootfs_args(dir.path());
        let spec = rootfs_spec_from_args(&args).unwrap();
        let bytes = build_rootfs_image(&spec).unwrap();
        let (index, manifest, config, layout) = check_chain(&bytes);

        let mdesc = &index.manifests()[0];
        let ann = mdesc.annotations().as_ref().unwrap();
        assert_eq!(ann[ANNOTATION_REF_NAME], "localhost/hello:v1");
        assert_eq!(ann[ANNOTATION_CONTAINERD_IMAGE_NAME], "localhost/hello:v1");
        let p = mdesc.platform().as_ref().unwrap();
        assert_eq!((p.os(), p.architecture()), (&Os::Linux, &Arch::Amd64));
        assert_eq!(*mdesc.media_type(), MediaType::ImageManifest);

        assert_eq!(manifest.layers().len(), 1);
        let ldesc = &manifest.layers()[0];
        assert_eq!(
            ldesc.media_type().to_string(),
            "application/vnd.oci.image.layer.v1.tar"
        );
        assert_eq!(*manifest.config().media_type(), MediaType::ImageConfig);

        assert_eq!(config.os(), &Os::Linux);
        assert_eq!(config.architecture(), &Arch::Amd64);
        let layer = layout.blob(ldesc).unwrap();
        assert_eq!(
            config.rootfs().diff_ids(),
            &vec![format!("sha256:{}", sha256_hex(layer))]
        );
        assert_eq!(config.rootfs().typ(), "layers");
        let c = config.config().as_ref().unwrap();
        assert_eq!(
            c.entrypoint().as_ref().unwrap(),
            &vec!["/app/hello.wasm".to_string()]
        );
        assert_eq!(c.cmd().as_ref().unwrap(), &vec!["--flag".to_string()]);
        assert_eq!(
            c.env().as_ref().unwrap(),
            &vec![DEFAULT_PATH_ENV.to_string(), "FOO=bar".to_string()]
        );
        assert_eq!(c.labels().as_ref().unwrap()["a"], "b");

        let entries = layer_entries(layer);
        let summary: Vec<(&str, u32)> = entries.iter().map(|e| (e.0.as_str(), e.1)).collect();
        assert_eq!(
            summary,
            vec![
                ("app/", 0o755),
                ("app/hello.wasm", 0o644),
                ("etc/", 0o755),
                ("etc/conf.txt", 0o644),
                ("etc/secret", 0o600),
                ("usr/", 0o755),
                ("usr/local/", 0o755),
                ("usr/local/bin/", 0o755),
                ("usr/local/bin/tool", 0o755),
            ]
        );
        assert_eq!(entries[0].3, tar::EntryType::Directory);
        assert_eq!(entries[1].2, EMPTY_WASM);

        let report = inspect_layout(&bytes).unwrap();
        assert!(report.contains("diff_id matches: true"), "{report}");
    }

    #[test]
    fn rootfs_image_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let args = rootfs_args(dir.path());
        let a = build_rootfs_image(&rootfs_spec_from_args(&args).unwrap()).unwrap();
        let b = build_rootfs_image(&rootfs_spec_from_args(&args).unwrap()).unwrap();
        assert_eq!(a, b);

        // Through the CLI path including the atomic write.
        run(Cli {
            command: Command::Rootfs(rootfs_args(dir.path())),
        })
        .unwrap();
        let first = fs::read(dir.path().join("rootfs.tar")).unwrap();
        run(Cli {
            command: Command::Rootfs(rootfs_args(dir.path())),
        })
        .unwrap();
        let second = fs::read(dir.path().join("rootfs.tar")).unwrap();
        assert_eq!(first, second);
        assert_eq!(first, a);
        assert!(!dir.path().join("rootfs.tar.tmp").exists());

        // Never replaces a non-regular file (directory, symlink, device).
        let link = dir.path().join("link.tar");
        std::os::unix::fs::symlink(dir.path().join("rootfs.tar"), &link).unwrap();
        let err = write_atomic(&link, b"x").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(write_atomic(dir.path(), b"x").is_err());
        assert_eq!(fs::read(&link).unwrap(), a);
    }

    #[test]
    fn artifact_chain_and_determinism() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("app.wasm");
        fs::write(&module, EMPTY_WASM).unwrap();
        let bytes = build_artifact_image("docker.io/library/app:latest", &module).unwrap();
        assert_eq!(
            bytes,
            build_artifact_image("docker.io/library/app:latest", &module).unwrap()
        );

        let (index, manifest, config, layout) = check_chain(&bytes);
        let mdesc = &index.manifests()[0];
        let p = mdesc.platform().as_ref().unwrap();
        assert_eq!(p.os().to_string(), "wasip1");
        assert_eq!(p.architecture(), &Arch::Wasm);
        assert_eq!(
            mdesc.annotations().as_ref().unwrap()[ANNOTATION_REF_NAME],
            "docker.io/library/app:latest"
        );
        assert_eq!(
            manifest.config().media_type().to_string(),
            "application/vnd.oci.image.config.v1+json"
        );
        assert_eq!(manifest.layers().len(), 1);
        let l = &manifest.layers()[0];
        assert_eq!(l.media_type().to_string(), WASM_LAYER_MEDIA_TYPE);
        assert_eq!(layout.blob(l).unwrap(), EMPTY_WASM);
        assert_eq!(config.architecture(), &Arch::Wasm);
        assert_eq!(config.os().to_string(), "wasip1");
        assert!(config.rootfs().diff_ids().is_empty());
        let c = config.config().as_ref().unwrap();
        assert_eq!(
            c.entrypoint().as_ref().unwrap(),
            &vec!["/app.wasm".to_string()]
        );

        // Raw JSON check of the fields containerd-shim-wasm reads.
        let raw: serde_json::Value =
            serde_json::from_slice(layout.blob(manifest.config()).unwrap()).unwrap();
        assert_eq!(raw["architecture"], "wasm");
        assert_eq!(raw["os"], "wasip1");
    }

    #[test]
    fn errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.wasm");
        let err = build_artifact_image("localhost/x:1", &missing).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("module not found: {}", missing.display())
        );

        let not_wasm = dir.path().join("text.wasm");
        fs::write(&not_wasm, b"hello").unwrap();
        let err = build_artifact_image("localhost/x:1", &not_wasm).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("not a wasm module: {}", not_wasm.display())
        );

        let mut args = rootfs_args(dir.path());
        args.files = vec!["only-one-part".into()];
        let err = rootfs_spec_from_args(&args).unwrap_err();
        assert!(err.to_string().contains("bad --file syntax"), "{err}");
        args.files = vec![format!("{}:/x:999", not_wasm.display())];
        assert!(rootfs_spec_from_args(&args)
            .unwrap_err()
            .to_string()
            .contains("bad --file syntax"));
        args.files = vec![format!("{}:/x:0644:extra", not_wasm.display())];
        assert!(rootfs_spec_from_args(&args)
            .unwrap_err()
            .to_string()
            .contains("bad --file syntax"));
        args.files = vec!["/definitely/not/here:/x".into()];
        assert!(rootfs_spec_from_args(&args)
            .unwrap_err()
            .to_string()
            .contains("file not found"));

        let mut args = rootfs_args(dir.path());
        args.platform = "linux".into();
        assert!(rootfs_spec_from_args(&args).is_err());

        // File/directory clash and duplicates.
        let f = |p: &str| LayerFile {
            path: p.into(),
            mode: 0o644,
            data: vec![],
        };
        assert!(build_layer_tar(&[f("a"), f("a/b")]).is_err());
        assert!(build_layer_tar(&[f("a"), f("a")]).is_err());
        assert!(normalize_guest_path("/../etc").is_err());
        assert_eq!(
            normalize_guest_path("//bin/./busybox").unwrap(),
            "bin/busybox"
        );
    }

    #[test]
    fn explicit_entrypoint_and_non_wasm_image() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("pause");
        fs::write(&bin, b"\x7fELF fake").unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        let args = RootfsArgs {
            name: "localhost/pause:3.10".into(),
            out: dir.path().join("pause.tar"),
            module: None,
            files: vec![format!("{}:/pause", bin.display())],
            entrypoint: vec!["/pause".into()],
            cmd: vec![],
            env: vec!["PATH=/bin".into()],
            platform: "linux/arm64/v8".into(),
            label: vec![],
        };
        let bytes = build_rootfs_image(&rootfs_spec_from_args(&args).unwrap()).unwrap();
        let (index, manifest, config, layout) = check_chain(&bytes);
        let p = index.manifests()[0].platform().as_ref().unwrap();
        assert_eq!(fmt_platform(p), "linux/arm64/v8");
        assert_eq!(config.variant().as_deref(), Some("v8"));
        let c = config.config().as_ref().unwrap();
        assert_eq!(
            c.entrypoint().as_ref().unwrap(),
            &vec!["/pause".to_string()]
        );
        assert!(c.cmd().is_none());
        assert_eq!(c.env().as_ref().unwrap(), &vec!["PATH=/bin".to_string()]);
        let entries = layer_entries(layout.blob(&manifest.layers()[0]).unwrap());
        assert_eq!(entries.len(), 1);
        assert_eq!((entries[0].0.as_str(), entries[0].1), ("pause", 0o755));
    }
}
