use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use serde::Deserialize;

use super::*;

fn ann(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn ok(pairs: &[(&str, &str)]) -> WasiSandboxPolicy {
    resolve(&PolicySettings::builtin(), &ann(pairs)).unwrap_or_else(|e| panic!("{e}"))
}

fn err(pairs: &[(&str, &str)]) -> String {
    match resolve(&PolicySettings::builtin(), &ann(pairs)) {
        Ok(p) => panic!("expected an error for {pairs:?}, got {p:?}"),
        Err(e) => e.to_string(),
    }
}

fn strict() -> WasiSandboxPolicy {
    Presets::builtin()[EDGE_STRICT].clone()
}

fn moderate() -> WasiSandboxPolicy {
    Presets::builtin()[EDGE_MODERATE].clone()
}

fn dir(host: &str, guest: &str, readonly: bool) -> DirMapping {
    DirMapping {
        host_path: host.into(),
        guest_path: guest.into(),
        readonly,
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---- presets and files ----

#[test]
fn builtin_presets_have_the_documented_values() {
    let presets = Presets::builtin();
    assert_eq!(
        presets.keys().collect::<Vec<_>>(),
        ["edge-moderate", "edge-strict"]
    );
    assert_eq!(
        presets[EDGE_STRICT],
        WasiSandboxPolicy {
            max_memory_pages: 256,
            execution_timeout_ms: 5000,
            allowed_hosts: strings(&["api.example.com"]),
            allowed_env_vars: strings(&["APP_MODE", "REGION"]),
            allowed_dirs: vec![dir("/app/config", "/config", true)],
            max_network_requests: 50,
            max_disk_bytes: DEFAULT_MAX_DISK_BYTES,
        }
    );
    assert_eq!(
        presets[EDGE_MODERATE],
        WasiSandboxPolicy {
            max_memory_pages: 512,
            execution_timeout_ms: 30000,
            allowed_hosts: strings(&["api.example.com", "cdn.example.com"]),
            allowed_env_vars: strings(&["APP_MODE", "REGION", "LOG_LEVEL"]),
            allowed_dirs: vec![
                dir("/app/config", "/config", true),
                dir("/app/cache", "/cache", false)
            ],
            max_network_requests: 200,
            max_disk_bytes: DEFAULT_MAX_DISK_BYTES,
        }
    );
    let settings = PolicySettings::builtin();
    assert_eq!(settings.default_preset, "edge-strict");
    assert_eq!(settings.ceiling, presets[EDGE_MODERATE]);
    assert_eq!(settings.presets, presets);
}

#[test]
fn configmap_entries_equal_the_preset_files() {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ConfigMap {
        api_version: String,
        kind: String,
        metadata: BTreeMap<String, String>,
        data: BTreeMap<String, String>,
    }
    let cm: ConfigMap =
        serde_yaml::from_str(include_str!("../../k8s/policy-configmap.yaml")).unwrap();
    assert_eq!(cm.api_version, "v1");
    assert_eq!(cm.kind, "ConfigMap");
    assert_eq!(cm.metadata["name"], "wasi-sandbox-policies");
    assert_eq!(
        cm.data.keys().collect::<Vec<_>>(),
        ["edge-moderate.yaml", "edge-strict.yaml"]
    );
    assert_eq!(cm.data["edge-strict.yaml"], EDGE_STRICT_YAML);
    assert_eq!(cm.data["edge-moderate.yaml"], EDGE_MODERATE_YAML);
}

#[test]
fn preset_files_reject_unknown_fields_and_bad_values() {
    let with_extra = format!("{EDGE_STRICT_YAML}allowAll: true\n");
    assert!(Presets::parse(&with_extra)
        .unwrap_err()
        .contains("allowAll"));
    let bad_dir = EDGE_STRICT_YAML.replace("hostPath: /app/config", "hostPath: app/config");
    assert_eq!(
        Presets::parse(&bad_dir).unwrap_err(),
        "allowedDirs: path app/config is not absolute"
    );
    let zero = EDGE_STRICT_YAML.replace("maxMemoryPages: 256", "maxMemoryPages: 0");
    assert!(Presets::parse(&zero)
        .unwrap_err()
        .contains("maxMemoryPages 0"));
}

#[test]
fn load_reads_presets_from_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let custom = EDGE_STRICT_YAML.replace("maxMemoryPages: 256", "maxMemoryPages: 128");
    std::fs::write(dir.path().join("tiny.yaml"), &custom).unwrap();
    // A file named like a built-in replaces it.
    let stricter = EDGE_STRICT_YAML.replace("maxNetworkRequests: 50", "maxNetworkRequests: 0");
    std::fs::write(dir.path().join("edge-strict.yaml"), &stricter).unwrap();
    // Not presets: other extensions, hidden files, ConfigMap mount internals.
    std::fs::write(dir.path().join("README.md"), "not yaml").unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), "garbage: [").unwrap();
    std::fs::create_dir(dir.path().join("..data")).unwrap();

    let settings = PolicySettings::load(dir.path(), "tiny", None).unwrap();
    assert_eq!(
        settings.presets.keys().collect::<Vec<_>>(),
        ["edge-moderate", "edge-strict", "tiny"]
    );
    assert_eq!(settings.default_preset, "tiny");
    assert_eq!(settings.presets["tiny"].max_memory_pages, 128);
    assert_eq!(settings.presets["edge-strict"].max_network_requests, 0);
    assert_eq!(settings.ceiling, moderate());
    assert_eq!(
        resolve(&settings, &HashMap::new())
            .unwrap()
            .max_memory_pages,
        128
    );

    let s = PolicySettings::load(
        dir.path(),
        "edge-strict",
        Some(&CeilingSpec::Preset("tiny".into())),
    )
    .unwrap_err()
    .to_string();
    assert!(
        s.contains("default policy preset edge-strict is above the policy ceiling"),
        "{s}"
    );
}

#[test]
fn load_errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yaml");
    std::fs::write(&path, "maxMemoryPages: lots\n").unwrap();
    let e = PolicySettings::load(dir.path(), EDGE_STRICT, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&path.display().to_string()) && e.contains("maxMemoryPages"),
        "{e}"
    );

    std::fs::write(
        &path,
        EDGE_STRICT_YAML.replace("api.example.com", "api.example.com:443"),
    )
    .unwrap();
    let e = PolicySettings::load(dir.path(), EDGE_STRICT, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("broken.yaml") && e.contains("api.example.com:443"),
        "{e}"
    );

    // A file where the directory should be is an error naming it.
    let e = PolicySettings::load(&path, EDGE_STRICT, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("broken.yaml"), "{e}");
    // A missing directory means built-ins only.
    let missing = dir.path().join("nope");
    assert_eq!(
        PolicySettings::load(&missing, EDGE_STRICT, None).unwrap(),
        PolicySettings::builtin()
    );
}

#[test]
fn settings_validation() {
    let empty = tempfile::tempdir().unwrap();
    let e = PolicySettings::load(empty.path(), "edge-lax", None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "default policy preset edge-lax does not exist; known presets: edge-moderate, edge-strict"
    );
    let e = PolicySettings::load(
        empty.path(),
        EDGE_STRICT,
        Some(&CeilingSpec::Preset("max".into())),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("policy ceiling preset max does not exist"),
        "{e}"
    );
    let e = PolicySettings::load(
        empty.path(),
        EDGE_MODERATE,
        Some(&CeilingSpec::Preset(EDGE_STRICT.into())),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        e,
        "default policy preset edge-moderate is above the policy ceiling: maxMemoryPages: above the node ceiling of 256 pages"
    );
    let mut bad = strict();
    bad.allowed_env_vars.push("NOT-VALID".into());
    let e = PolicySettings::new(Presets::builtin(), EDGE_STRICT, bad)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("policy ceiling") && e.contains("NOT-VALID"),
        "{e}"
    );
}

#[test]
fn ceiling_spec_from_node_config_toml() {
    #[derive(Deserialize)]
    struct Node {
        ceiling: CeilingSpec,
    }
    let named: Node = toml::from_str(r#"ceiling = "edge-moderate""#).unwrap();
    assert_eq!(named.ceiling, CeilingSpec::Preset("edge-moderate".into()));
    let inline: Node = toml::from_str(
        r#"
        [ceiling]
        maxMemoryPages = 1024
        executionTimeoutMs = 60000
        allowedHosts = ["api.example.com"]
        allowedEnvVars = ["APP_MODE", "REGION"]
        allowedDirs = [{ hostPath = "/app/config", guestPath = "/config", readonly = true }]
        maxNetworkRequests = 100
        "#,
    )
    .unwrap();
    let CeilingSpec::Limits(limits) = &inline.ceiling else {
        panic!("not limits")
    };
    assert_eq!(limits.max_memory_pages, 1024);
    let empty = tempfile::tempdir().unwrap();
    let s = PolicySettings::load(empty.path(), EDGE_STRICT, Some(&inline.ceiling)).unwrap();
    assert_eq!(
        ok_with(&s, &[(KEY_MAX_MEMORY_PAGES, "1024")]).max_memory_pages,
        1024
    );
}

fn ok_with(settings: &PolicySettings, pairs: &[(&str, &str)]) -> WasiSandboxPolicy {
    resolve(settings, &ann(pairs)).unwrap_or_else(|e| panic!("{e}"))
}

// ---- resolve: successes ----

#[test]
fn no_annotations_is_the_default_preset() {
    assert_eq!(ok(&[]), strict());
}

#[test]
fn policy_annotation_picks_a_preset() {
    assert_eq!(ok(&[(KEY_POLICY, "edge-moderate")]), moderate());
    assert_eq!(ok(&[(KEY_POLICY, " edge-strict ")]), strict());
}

#[test]
fn field_annotations_replace_preset_fields() {
    let p = ok(&[
        (KEY_POLICY, "edge-moderate"),
        (KEY_MAX_MEMORY_PAGES, "300"),
        (KEY_EXECUTION_TIMEOUT_MS, "100"),
        (KEY_ALLOWED_HOSTS, "cdn.example.com"),
        (KEY_ALLOWED_ENV, "LOG_LEVEL"),
        (KEY_ALLOWED_DIRS, "/app/cache:/cache:rw"),
        (KEY_MAX_NETWORK_REQUESTS, "7"),
        (KEY_MAX_DISK_BYTES, "1048576"),
    ]);
    assert_eq!(
        p,
        WasiSandboxPolicy {
            max_memory_pages: 300,
            execution_timeout_ms: 100,
            allowed_hosts: strings(&["cdn.example.com"]),
            allowed_env_vars: strings(&["LOG_LEVEL"]),
            allowed_dirs: vec![dir("/app/cache", "/cache", false)],
            max_network_requests: 7,
            max_disk_bytes: 1 << 20,
        }
    );
    // Lists replace, they do not append to the preset's.
    let p = ok(&[(KEY_ALLOWED_ENV, "REGION")]);
    assert_eq!(p.allowed_env_vars, ["REGION"]);
    assert_eq!(p.allowed_hosts, strict().allowed_hosts);
}

#[test]
fn empty_lists_mean_none() {
    let p = ok(&[
        (KEY_ALLOWED_HOSTS, ""),
        (KEY_ALLOWED_ENV, "  "),
        (KEY_ALLOWED_DIRS, ""),
    ]);
    assert!(
        p.allowed_hosts.is_empty() && p.allowed_env_vars.is_empty() && p.allowed_dirs.is_empty()
    );
    assert_eq!(
        ok(&[(KEY_MAX_NETWORK_REQUESTS, "0")]).max_network_requests,
        0
    );
}

#[test]
fn list_whitespace_and_case_are_normalised() {
    let p = ok(&[
        (KEY_POLICY, "edge-moderate"),
        (
            KEY_ALLOWED_HOSTS,
            "  CDN.Example.com ,api.example.com,cdn.example.com ",
        ),
        (KEY_ALLOWED_ENV, " REGION , APP_MODE "),
        (
            KEY_ALLOWED_DIRS,
            " /app/cache/ : /cache : rw , /app//config:/config:ro ",
        ),
        (KEY_MAX_MEMORY_PAGES, " 64 "),
    ]);
    assert_eq!(p.allowed_hosts, ["cdn.example.com", "api.example.com"]);
    assert_eq!(p.allowed_env_vars, ["REGION", "APP_MODE"]);
    assert_eq!(
        p.allowed_dirs,
        [
            dir("/app/cache", "/cache", false),
            dir("/app/config", "/config", true)
        ]
    );
    assert_eq!(p.max_memory_pages, 64);
}

#[test]
fn ro_where_the_ceiling_allows_rw_is_fine() {
    let p = ok(&[(KEY_ALLOWED_DIRS, "/app/cache:/cache:ro")]);
    assert_eq!(p.allowed_dirs, [dir("/app/cache", "/cache", true)]);
}

#[test]
fn keys_outside_the_namespace_and_non_policy_keys_are_ignored() {
    let mut pairs = vec![
        ("io.kubernetes.cri.container-type", "container"),
        ("example.com/wasmedge.io/policy", "anything"),
        ("wasmedge.io.evil/max-memory-pages", "99999"),
    ];
    for k in NON_POLICY_KEYS {
        pairs.push((k, "whatever value"));
    }
    assert_eq!(ok(&pairs), strict());
}

#[test]
fn preset_above_the_ceiling_needs_overrides() {
    let settings = PolicySettings::new(Presets::builtin(), EDGE_STRICT, strict()).unwrap();
    let e = resolve(&settings, &ann(&[(KEY_POLICY, "edge-moderate")])).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid annotation wasmedge.io/policy=\"edge-moderate\": preset edge-moderate is above the node ceiling: \
         maxMemoryPages above the node ceiling of 256 pages; fix: use one of edge-strict, or override \
         wasmedge.io/max-memory-pages (set at most 256 or ask the node admin to raise the ceiling)"
    );
    let p = ok_with(
        &settings,
        &[
            (KEY_POLICY, "edge-moderate"),
            (KEY_MAX_MEMORY_PAGES, "256"),
            (KEY_EXECUTION_TIMEOUT_MS, "5000"),
            (KEY_ALLOWED_HOSTS, "api.example.com"),
            (KEY_ALLOWED_ENV, "APP_MODE,REGION"),
            (KEY_ALLOWED_DIRS, "/app/config:/config:ro"),
            (KEY_MAX_NETWORK_REQUESTS, "50"),
        ],
    );
    assert_eq!(p, strict());
}

// ---- resolve: errors, exact text ----

#[test]
fn error_messages() {
    let known =
        "wasmedge.io/policy, wasmedge.io/max-memory-pages, wasmedge.io/execution-timeout-ms, \
                 wasmedge.io/allowed-hosts, wasmedge.io/allowed-env, wasmedge.io/allowed-dirs, \
                 wasmedge.io/max-network-requests, wasmedge.io/max-disk-bytes, wasmedge.io/mode, wasmedge.io/http-port, \
                 wasmedge.io/version, wasmedge.io/warm-pool, wasmedge.io/max-concurrency, wasmedge.io/max-body-bytes, wasmedge.io/drain-timeout-ms, \
                 wasmedge.io/shutdown-delay-ms";
    let cases: &[(&[(&str, &str)], String)] = &[
        (
            &[("wasmedge.io/max-memory-page", "256")],
            "invalid annotation wasmedge.io/max-memory-page=\"256\": unknown wasmedge.io annotation; \
             fix: did you mean wasmedge.io/max-memory-pages?"
                .into(),
        ),
        (
            &[("wasmedge.io/allowed-envs", "REGION")],
            "invalid annotation wasmedge.io/allowed-envs=\"REGION\": unknown wasmedge.io annotation; \
             fix: did you mean wasmedge.io/allowed-env?"
                .into(),
        ),
        (
            &[("wasmedge.io/warmpool", "on")],
            "invalid annotation wasmedge.io/warmpool=\"on\": unknown wasmedge.io annotation; \
             fix: did you mean wasmedge.io/warm-pool?"
                .into(),
        ),
        (
            &[("WasmEdge.io/policy", "allow-all")],
            "invalid annotation WasmEdge.io/policy=\"allow-all\": unknown wasmedge.io annotation; \
             fix: did you mean wasmedge.io/policy?"
                .into(),
        ),
        (
            &[("wasmedge.io/gpu", "yes")],
            format!(
                "invalid annotation wasmedge.io/gpu=\"yes\": unknown wasmedge.io annotation; \
                 fix: remove it; known keys: {known}"
            ),
        ),
        (
            &[(KEY_MAX_MEMORY_PAGES, "lots")],
            "invalid annotation wasmedge.io/max-memory-pages=\"lots\": not a whole number; \
             fix: set a number of 64 KiB pages between 1 and 512 (the node ceiling)"
                .into(),
        ),
        (
            &[(KEY_MAX_MEMORY_PAGES, "-1")],
            "invalid annotation wasmedge.io/max-memory-pages=\"-1\": not a whole number; \
             fix: set a number of 64 KiB pages between 1 and 512 (the node ceiling)"
                .into(),
        ),
        (
            &[(KEY_MAX_MEMORY_PAGES, "0")],
            "invalid annotation wasmedge.io/max-memory-pages=\"0\": must be at least 1; \
             fix: set a number of 64 KiB pages between 1 and 512 (the node ceiling)"
                .into(),
        ),
        (
            &[(KEY_MAX_MEMORY_PAGES, "4096")],
            "invalid annotation wasmedge.io/max-memory-pages=\"4096\": above the node ceiling of 512 pages; \
             fix: set at most 512 or ask the node admin to raise the ceiling"
                .into(),
        ),
        (
            &[(KEY_MAX_MEMORY_PAGES, "99999999999999999999999999")],
            "invalid annotation wasmedge.io/max-memory-pages=\"99999999999999999999999999\": above the node \
             ceiling of 512 pages; fix: set at most 512 or ask the node admin to raise the ceiling"
                .into(),
        ),
        (
            &[(KEY_EXECUTION_TIMEOUT_MS, "5s")],
            "invalid annotation wasmedge.io/execution-timeout-ms=\"5s\": not a whole number; \
             fix: set a number of milliseconds between 1 and 30000 (the node ceiling)"
                .into(),
        ),
        (
            &[(KEY_EXECUTION_TIMEOUT_MS, "60000")],
            "invalid annotation wasmedge.io/execution-timeout-ms=\"60000\": above the node ceiling of 30000 ms; \
             fix: set at most 30000 or ask the node admin to raise the ceiling"
                .into(),
        ),
        (
            &[(KEY_MAX_NETWORK_REQUESTS, "201")],
            "invalid annotation wasmedge.io/max-network-requests=\"201\": above the node ceiling of 200 requests; \
             fix: set at most 200 or ask the node admin to raise the ceiling"
                .into(),
        ),
        (
            &[(KEY_POLICY, "edge-lax")],
            "invalid annotation wasmedge.io/policy=\"edge-lax\": unknown policy preset; \
             fix: use one of edge-moderate, edge-strict"
                .into(),
        ),
        (
            &[(KEY_ALLOWED_HOSTS, "api.example.com, evil.com")],
            "invalid annotation wasmedge.io/allowed-hosts=\"api.example.com, evil.com\": host evil.com is not \
             allowed by the node ceiling; fix: use hosts from: api.example.com, cdn.example.com"
                .into(),
        ),
        (
            &[(KEY_ALLOWED_HOSTS, "api.example.com:443")],
            "invalid annotation wasmedge.io/allowed-hosts=\"api.example.com:443\": host api.example.com:443 has \
             a port; ports are not allowed; fix: list host names or IP addresses separated by commas, without \
             scheme, port or wildcard, e.g. api.example.com,cdn.example.com"
                .into(),
        ),
        (
            &[(KEY_ALLOWED_HOSTS, "*.example.com")],
            "invalid annotation wasmedge.io/allowed-hosts=\"*.example.com\": *.example.com is not a valid host \
             name or IP address; fix: list host names or IP addresses separated by commas, without scheme, port \
             or wildcard, e.g. api.example.com,cdn.example.com"
                .into(),
        ),
        (
            &[(KEY_ALLOWED_HOSTS, "api.example.com,,cdn.example.com")],
            "invalid annotation wasmedge.io/allowed-hosts=\"api.example.com,,cdn.example.com\": empty entry in \
             the list; fix: separate entries with single commas, e.g. api.example.com,cdn.example.com"
                .into(),
        ),
        (
            &[(KEY_ALLOWED_ENV, "PATH")],
            "invalid annotation wasmedge.io/allowed-env=\"PATH\": env var PATH is not allowed by the node \
             ceiling; fix: use env vars from: APP_MODE, REGION, LOG_LEVEL"
                .into(),
        ),
        (
            &[(KEY_ALLOWED_ENV, "APP-MODE")],
            "invalid annotation wasmedge.io/allowed-env=\"APP-MODE\": APP-MODE is not a valid environment \
             variable name; fix: use names of letters, digits and '_' that do not start with a digit, separated \
             by commas, e.g. APP_MODE,REGION"
                .into(),
        ),
        (
            &[(KEY_ALLOWED_DIRS, "/app/config:/config:rw")],
            "invalid annotation wasmedge.io/allowed-dirs=\"/app/config:/config:rw\": directory /app/config:/config \
             must be read-only under the node ceiling; fix: use /app/config:/config:ro"
                .into(),
        ),
        (
            &[(KEY_ALLOWED_DIRS, "/:/:rw")],
            "invalid annotation wasmedge.io/allowed-dirs=\"/:/:rw\": directory /:/ is not allowed by the node \
             ceiling; fix: use mappings from: /app/config:/config:ro, /app/cache:/cache:rw"
                .into(),
        ),
        (
            &[(KEY_ALLOWED_DIRS, "/app/config:/cache:ro")],
            "invalid annotation wasmedge.io/allowed-dirs=\"/app/config:/cache:ro\": directory /app/config:/cache \
             is not allowed by the node ceiling; fix: use mappings from: /app/config:/config:ro, /app/cache:/cache:rw"
                .into(),
        ),
        (
            &[(KEY_ALLOWED_DIRS, "/app/../etc:/config:ro")],
            "invalid annotation wasmedge.io/allowed-dirs=\"/app/../etc:/config:ro\": path /app/../etc contains a \
             '..' component; fix: write each mapping as host:guest:ro or host:guest:rw with absolute paths, \
             separated by commas, e.g. /app/config:/config:ro"
                .into(),
        ),
        (
            &[(KEY_ALLOWED_DIRS, "config:/config:ro")],
            "invalid annotation wasmedge.io/allowed-dirs=\"config:/config:ro\": path config is not absolute; \
             fix: write each mapping as host:guest:ro or host:guest:rw with absolute paths, separated by commas, \
             e.g. /app/config:/config:ro"
                .into(),
        ),
        (
            &[(KEY_ALLOWED_DIRS, "/app/config:/config")],
            "invalid annotation wasmedge.io/allowed-dirs=\"/app/config:/config\": /app/config:/config is not \
             host:guest:ro|rw; fix: write each mapping as host:guest:ro or host:guest:rw with absolute paths, \
             separated by commas, e.g. /app/config:/config:ro"
                .into(),
        ),
        (
            &[(KEY_ALLOWED_DIRS, "/app/config:/config:ro,/app/cache:/config:rw")],
            "invalid annotation wasmedge.io/allowed-dirs=\"/app/config:/config:ro,/app/cache:/config:rw\": guest \
             path /config is mapped more than once; fix: map each guest path once"
                .into(),
        ),
    ];
    for (pairs, expected) in cases {
        assert_eq!(&err(pairs), expected, "for {pairs:?}");
    }
}

#[test]
fn errors_carry_key_value_reason_and_fix() {
    let e = resolve(
        &PolicySettings::builtin(),
        &ann(&[(KEY_MAX_MEMORY_PAGES, "4096")]),
    )
    .unwrap_err();
    assert_eq!(
        e,
        PolicyError {
            key: KEY_MAX_MEMORY_PAGES.into(),
            value: "4096".into(),
            reason: "above the node ceiling of 512 pages".into(),
            fix: "set at most 512 or ask the node admin to raise the ceiling".into(),
        }
    );
    let _: &dyn std::error::Error = &e;
}

#[test]
fn first_error_in_key_order_is_reported() {
    let pairs = [
        ("wasmedge.io/zzz", "1"),
        (KEY_MAX_MEMORY_PAGES, "lots"),
        ("wasmedge.io/aaa", "2"),
    ];
    for _ in 0..10 {
        assert!(err(&pairs).starts_with("invalid annotation wasmedge.io/aaa=\"2\""));
    }
    // Unknown keys come before value errors, whatever their order.
    assert!(
        err(&[("wasmedge.io/zzz", "1"), (KEY_MAX_MEMORY_PAGES, "lots")])
            .contains("wasmedge.io/zzz")
    );
}

#[test]
fn values_are_escaped_in_messages() {
    let e = err(&[(KEY_ALLOWED_ENV, "A\nB\"")]);
    assert!(!e.contains('\n'), "{e}");
    assert!(
        e.starts_with("invalid annotation wasmedge.io/allowed-env=\"A\\nB\\\"\""),
        "{e}"
    );
}

// ---- rendering ----

#[test]
fn wasmedge_args_are_split() {
    assert_eq!(
        strict().to_wasmedge_args(),
        [
            "--memory-page-limit",
            "256",
            "--time-limit",
            "5000",
            "--allow-host",
            "api.example.com",
            "--allow-env",
            "APP_MODE",
            "--allow-env",
            "REGION",
            "--dir",
            "/config:/app/config:readonly",
        ]
    );
    let m = moderate().to_wasmedge_args();
    assert_eq!(
        &m[..4],
        ["--memory-page-limit", "512", "--time-limit", "30000"]
    );
    assert_eq!(
        &m[m.len() - 4..],
        [
            "--dir",
            "/config:/app/config:readonly",
            "--dir",
            "/cache:/app/cache"
        ]
    );
    assert_eq!(m.len(), 4 + 2 * 2 + 2 * 3 + 2 * 2);
}

#[test]
fn summary_is_one_line() {
    assert_eq!(
        strict().summary(),
        "256 pages (16 MiB), timeout 5000 ms, hosts [api.example.com], env [APP_MODE, REGION], \
         dirs [/app/config:/config:ro], max 50 network requests, disk quota 64 MiB"
    );
    assert!(!moderate().summary().contains('\n'));
}

#[test]
fn within_checks_every_field() {
    let c = moderate();
    assert!(strict().within(&c) && c.within(&c));
    assert!(!c.within(&strict()));
    let mut p = strict();
    p.allowed_dirs[0].readonly = false;
    assert!(!p.within(&c));
    let mut p = strict();
    p.allowed_dirs = vec![dir("/app/cache", "/cache", true)];
    assert!(p.within(&c));
    let mut p = strict();
    p.max_network_requests = 201;
    assert!(!p.within(&c));
    let mut p = strict();
    p.max_disk_bytes = DEFAULT_MAX_DISK_BYTES + 1;
    assert!(!p.within(&c));
}

#[test]
fn disk_bytes_are_capped_by_the_ceiling_and_named_in_the_error() {
    assert_eq!(ok(&[(KEY_MAX_DISK_BYTES, "0")]).max_disk_bytes, 0);
    let refused = |value: &str| {
        resolve(
            &PolicySettings::builtin(),
            &ann(&[(KEY_MAX_DISK_BYTES, value)]),
        )
        .unwrap_err()
    };
    let e = refused("68719476736");
    assert_eq!(e.key, KEY_MAX_DISK_BYTES);
    assert_eq!(
        e.reason,
        format!("above the node ceiling of {DEFAULT_MAX_DISK_BYTES} bytes")
    );
    assert!(e.fix.contains("ask the node admin"), "{e}");
    let e = refused("64Mi");
    assert_eq!(e.reason, "not a whole number");
    assert!(e.fix.contains("bytes between 0 and"), "{e}");
    // A preset file may name the field; one that leaves it out gets the default.
    let yaml = format!("{EDGE_STRICT_YAML}maxDiskBytes: 4096\n");
    assert_eq!(Presets::parse(&yaml).unwrap().max_disk_bytes, 4096);
}

// ---- properties ----

fn settings_variants() -> Vec<PolicySettings> {
    let mut presets = Presets::builtin();
    let mut odd = strict();
    odd.allowed_hosts = strings(&["10.0.0.1", "::1", "api.example.com"]);
    odd.allowed_dirs.push(dir("/", "/root", true));
    presets.insert("odd".into(), odd.clone());
    let mut ceiling = moderate();
    ceiling.allowed_hosts.extend(strings(&["10.0.0.1", "::1"]));
    ceiling.allowed_dirs.push(dir("/", "/root", false));
    vec![
        PolicySettings::builtin(),
        // A ceiling below one preset, so preset-caused excess is exercised.
        PolicySettings::new(Presets::builtin(), EDGE_STRICT, strict()).unwrap(),
        PolicySettings::new(presets, "odd", ceiling).unwrap(),
    ]
}

fn any_key() -> impl Strategy<Value = String> {
    let all: Vec<String> = POLICY_KEYS
        .iter()
        .chain(NON_POLICY_KEYS)
        .map(|k| k.to_string())
        .collect();
    prop_oneof![
        prop::sample::select(all),
        "wasmedge\\.io/[a-z-]{0,24}",
        "[a-zA-Z0-9./_-]{0,30}",
        any::<String>(),
    ]
}

fn list(items: &[&'static str]) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(items.to_vec()), 0..4).prop_map(|v| v.join(","))
}

/// A known policy key with a value of roughly the right shape (valid or not), so that most
/// maps get past the key check and exercise parsing, overrides and the ceiling.
fn policy_entry() -> impl Strategy<Value = (String, String)> {
    let number = || {
        prop_oneof![
            "[0-9]{1,3}",
            "[0-9]{4,6}",
            "[0-9]{15,25}",
            "-?[0-9a-z .]{0,4}"
        ]
    };
    let hosts = [
        "api.example.com",
        " CDN.example.com",
        "evil.com",
        "10.0.0.1",
        "::1",
        "a:80",
        "",
        " ",
    ];
    let env = ["APP_MODE", "REGION", " LOG_LEVEL", "PATH", "1X", ""];
    let dirs = [
        "/app/config:/config:ro",
        "/app/config:/config:rw",
        "/app/cache:/cache:rw",
        " /app/cache/:/cache:ro",
        "/:/root:ro",
        "/:/root:rw",
        "/app/../x:/x:ro",
        "a:b:c",
        "",
    ];
    let presets = prop::sample::select(vec!["edge-strict", "edge-moderate", "odd", "nope", ""]);
    prop_oneof![
        presets.prop_map(|p| (KEY_POLICY.to_string(), p.to_string())),
        number().prop_map(|v| (KEY_MAX_MEMORY_PAGES.to_string(), v)),
        number().prop_map(|v| (KEY_EXECUTION_TIMEOUT_MS.to_string(), v)),
        number().prop_map(|v| (KEY_MAX_NETWORK_REQUESTS.to_string(), v)),
        list(&hosts).prop_map(|v| (KEY_ALLOWED_HOSTS.to_string(), v)),
        list(&env).prop_map(|v| (KEY_ALLOWED_ENV.to_string(), v)),
        list(&dirs).prop_map(|v| (KEY_ALLOWED_DIRS.to_string(), v)),
    ]
}

/// Mostly policy entries; sometimes arbitrary keys (known or random) with arbitrary values.
fn annotation_map() -> impl Strategy<Value = HashMap<String, String>> {
    let entry = prop_oneof![
        10 => policy_entry(),
        1 => (any_key(), any::<String>()),
    ];
    prop::collection::vec(entry, 0..8).prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn resolve_never_exceeds_the_ceiling(
        annotations in annotation_map(),
        which in 0usize..3,
    ) {
        let settings = &settings_variants()[which];
        match resolve(settings, &annotations) {
            Ok(p) => {
                prop_assert!(p.within(&settings.ceiling), "{} not within {}", p.summary(), settings.ceiling.summary());
                prop_assert!(p.validate().is_ok());
            }
            Err(e) => {
                prop_assert!(annotations.contains_key(&e.key) || e.key == KEY_POLICY);
                prop_assert!(!e.to_string().contains('\n'));
            }
        }
    }

    #[test]
    fn without_policy_annotations_the_default_applies(
        others in prop::collection::hash_map("[a-z./-]{0,20}", any::<String>(), 0..6),
        non_policy in prop::collection::hash_map(prop::sample::select(NON_POLICY_KEYS.to_vec()), any::<String>(), 0..4),
        which in 0usize..3,
    ) {
        let settings = &settings_variants()[which];
        let mut annotations: HashMap<String, String> =
            others.into_iter().filter(|(k, _)| !k.starts_with(PREFIX)).collect();
        annotations.extend(non_policy.into_iter().map(|(k, v)| (k.to_string(), v)));
        let p = resolve(settings, &annotations).unwrap();
        prop_assert_eq!(&p, &settings.presets[&settings.default_preset]);
    }
}

#[test]
fn relative_guest_names_are_preopen_names_and_the_ceiling_compares_them_exactly() {
    let mut ceiling = moderate();
    ceiling.allowed_dirs.push(DirMapping {
        host_path: "/work".into(),
        guest_path: "fs-tests.dir".into(),
        readonly: false,
    });
    let settings = PolicySettings::new(Presets::builtin(), EDGE_STRICT, ceiling).unwrap();
    let p = resolve(
        &settings,
        &ann(&[(KEY_ALLOWED_DIRS, "/work:./fs-tests.dir/:rw")]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        p.allowed_dirs,
        vec![DirMapping {
            host_path: "/work".into(),
            guest_path: "fs-tests.dir".into(),
            readonly: false
        }]
    );
    // The same directory under another name, or "." for it, is not what the ceiling lists.
    for other in ["/work:.:rw", "/work:/fs-tests.dir:rw", "/work:data:rw"] {
        let e = resolve(&settings, &ann(&[(KEY_ALLOWED_DIRS, other)])).unwrap_err();
        assert!(
            e.to_string().contains("is not allowed by the node ceiling"),
            "{other}: {e}"
        );
    }
    let e = resolve(&settings, &ann(&[(KEY_ALLOWED_DIRS, "/work:../up:rw")])).unwrap_err();
    assert!(
        e.to_string()
            .contains("path ../up contains a '..' component"),
        "{e}"
    );
}
