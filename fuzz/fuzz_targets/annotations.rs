//! Fuzzes `policy::resolve` with arbitrary annotation maps.
//!
//! Input format: lines separated by '\n', each `key=value` (split at the first '='; a line
//! without '=' is a key with an empty value). Later duplicates replace earlier ones, like a
//! container annotation replacing a pod's. Properties: never panics; an Ok policy is within
//! the node ceiling and well-formed; an error names an annotation that was given.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use containerd_shim_wasmedge::policy::{resolve, PolicySettings, KEY_POLICY};
use libfuzzer_sys::fuzz_target;

fn settings() -> &'static PolicySettings {
    static SETTINGS: OnceLock<PolicySettings> = OnceLock::new();
    SETTINGS.get_or_init(PolicySettings::builtin)
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let annotations: HashMap<String, String> = text
        .split('\n')
        .map(|line| match line.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (line.to_string(), String::new()),
        })
        .collect();
    let settings = settings();
    match resolve(settings, &annotations) {
        Ok(policy) => {
            assert!(
                policy.within(&settings.ceiling),
                "{} above {}",
                policy.summary(),
                settings.ceiling.summary()
            );
            assert!(policy.validate().is_ok(), "{}", policy.summary());
        }
        Err(e) => {
            assert!(
                annotations.contains_key(&e.key) || e.key == KEY_POLICY,
                "{e}"
            );
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }
});
