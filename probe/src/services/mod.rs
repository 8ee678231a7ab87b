//! Services selected by the `module` key of `[module_*]` configuration sections.
//!
//! The reference loads a Python module and calls its `services(**kwargs)`;
//! `mpcom` maps the module name to a Rust factory instead. Known modules:
//! * `interop_services` (also `interop`) — [`interop`], the deterministic
//!   test services of the reference interop suite.
//! * `passive` — [`passive`], flow records, tstat-compatible TCP logs and interface
//!   statistics from one capture source.

use std::sync::Arc;

use mplane::config::ModuleConfig;
use mplane::model::ModelError;
use mplane::registry::Registries;
use mplane::scheduler::Service;

pub mod interop;
pub mod passive;

/// Errors building services from a `[module_*]` section.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The `module` names no known service set.
    #[error(
        "[{section}] module = {module}: unknown service module (known: interop_services, passive)"
    )]
    UnknownModule {
        /// Section.
        section: String,
        /// Module name.
        module: String,
    },
    /// A keyword argument is not understood.
    #[error("[{section}] {key} = {value}: {reason}")]
    BadArgument {
        /// Section.
        section: String,
        /// Key.
        key: String,
        /// Value.
        value: String,
        /// Why.
        reason: String,
    },
    /// Building a capability failed.
    #[error("[{section}]: {source}")]
    Model {
        /// Section.
        section: String,
        /// Cause.
        source: ModelError,
    },
}

/// The services of one `[module_*]` section.
pub fn from_module(
    module: &ModuleConfig,
    registries: &Registries,
    export_url: Option<String>,
) -> Result<Vec<Arc<dyn Service>>, ServiceError> {
    match module.module.as_str() {
        "interop_services" | "interop" => interop::from_kwargs(module, registries),
        "passive" => passive::from_kwargs(module, registries, export_url),
        _ => Err(ServiceError::UnknownModule {
            section: module.section.clone(),
            module: module.module.clone(),
        }),
    }
}
