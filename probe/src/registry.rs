//! The probe's extension registry: every element its capabilities, results and files use
//! that the core registry lacks, in the `mplane-0` format, including the core registry.
//!
//! Its URI is fixed, [`PROBE_REGISTRY_URI`], so that the same capability has the same schema
//! (and schema hash) on every probe; the `.invalid` host (RFC 6761) never resolves, so a
//! client that has not preloaded the file fails at once instead of fetching it from somewhere.
//! `mpcom` serves the file at `/registry/probe`; the reference client preloads it with
//! `registry_preload = probe.json` (see doc/protocol.md). Element names follow tstat's where
//! tstat had one (`packets.forward.rxmit`, `source.TTFP.ms`, `ssl.hello.client`, ...), with one
//! deliberate difference: durations tstat declared as `time` are `real` milliseconds here.

use std::sync::Arc;

use mplane::registry::{Registries, Registry, RegistryError};

/// The registry's URI.
pub const PROBE_REGISTRY_URI: &str = "https://mplane-rs.invalid/registry/probe";

/// The registry file, as shipped (`probe/registry/probe.json`).
pub const PROBE_REGISTRY_JSON: &str = include_str!("../registry/probe.json");

/// The name under which `mpcom` serves the file (`/registry/probe`).
pub const PROBE_REGISTRY_NAME: &str = "probe";

/// The core registry plus the probe's registry.
pub fn registries() -> Result<Registries, RegistryError> {
    let mut r = Registries::new();
    r.load_str(PROBE_REGISTRY_JSON)?;
    Ok(r)
}

/// The probe's registry alone (with its core include resolved).
pub fn probe_registry() -> Result<Arc<Registry>, RegistryError> {
    registries()?
        .get(PROBE_REGISTRY_URI)
        .cloned()
        .ok_or_else(|| RegistryError::Unknown(PROBE_REGISTRY_URI.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_with_core_included() {
        let r = probe_registry().unwrap();
        assert_eq!(r.uri(), PROBE_REGISTRY_URI);
        assert!(r.element("source.ip4").is_some(), "core included");
        assert!(r.element("packets.forward.rxmit").is_some());
        assert!(r.element("ssl.hello.client").is_some());
    }
}
