//! Services selected by the `module` key of `[module_*]` configuration sections.
//!
//! The reference loads a Python module and calls its `services(**kwargs)`;
//! `mpcom` maps the module name to a Rust factory instead. Known modules:
//! * `interop_services` (also `interop`) — [`interop`], the deterministic
//!   test services of the reference interop suite.
//! * `passive` — [`passive`], flow records, tstat-compatible TCP logs and interface
//!   statistics from one capture source.
//! * `ping` (also the reference's `mplane.components.ping`) and `tcpconnect` — [`active`],
//!   ICMP echo as the reference ping component's four capabilities, and TCP connection
//!   set-up time.
//! * `traceroute` — [`traceroute`], the path to a destination hop by hop.

use std::sync::Arc;

use mplane::config::ModuleConfig;
use mplane::metrics::MetricsSource;
use mplane::model::ModelError;
use mplane::registry::Registries;
use mplane::scheduler::Service;

pub mod active;
pub mod interop;
pub mod passive;
pub mod traceroute;

/// Errors building services from a `[module_*]` section.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The `module` names no known service set.
    #[error(
        "[{section}] module = {module}: unknown service module (known: interop_services, passive, ping, tcpconnect, traceroute)"
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

impl ServiceError {
    /// [`ServiceError::BadArgument`] for `key = value` of `module`'s section.
    pub(crate) fn bad_argument(
        module: &ModuleConfig,
        key: &str,
        value: &str,
        reason: impl Into<String>,
    ) -> Self {
        ServiceError::BadArgument {
            section: module.section.clone(),
            key: key.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// What one `[module_*]` section runs.
pub struct Module {
    /// Its services, one per capability.
    pub services: Vec<Arc<dyn Service>>,
    /// Its counters for `GET /metrics`, if it keeps any.
    pub metrics: Option<Arc<dyn MetricsSource>>,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("services", &self.services.len())
            .field("metrics", &self.metrics.is_some())
            .finish()
    }
}

/// The services (and metrics) of one `[module_*]` section.
pub fn from_module(
    module: &ModuleConfig,
    registries: &Registries,
    export_url: Option<String>,
) -> Result<Module, ServiceError> {
    match module.module.as_str() {
        "interop_services" | "interop" => Ok(Module {
            services: interop::from_kwargs(module, registries)?,
            metrics: None,
        }),
        // the reference SDK's configuration names its component's Python module
        "ping" | "mplane.components.ping" => Ok(Module {
            services: active::from_kwargs(module, active::Method::Ping, registries)?,
            metrics: None,
        }),
        "tcpconnect" => Ok(Module {
            services: active::from_kwargs(module, active::Method::Connect, registries)?,
            metrics: None,
        }),
        "traceroute" => Ok(Module {
            services: traceroute::from_kwargs(module, registries)?,
            metrics: None,
        }),
        "passive" => {
            let p = passive::from_kwargs(module, registries, export_url)?;
            // `[module_tap]` is module "tap" in the metrics
            let name = module
                .section
                .strip_prefix("module_")
                .unwrap_or(&module.section);
            let metrics = crate::passive::metrics::PassiveMetrics::new(name, p.source, p.exports);
            Ok(Module {
                services: p.services,
                metrics: Some(Arc::new(metrics)),
            })
        }
        _ => Err(ServiceError::UnknownModule {
            section: module.section.clone(),
            module: module.module.clone(),
        }),
    }
}

/// The value of `word` among `options`, or why not (`expected a, b or c`).
fn one_of<T: Copy>(word: &str, options: &[(&str, T)]) -> Result<T, String> {
    options
        .iter()
        .find(|(w, _)| *w == word)
        .map(|&(_, x)| x)
        .ok_or_else(|| {
            let words: Vec<&str> = options.iter().map(|o| o.0).collect();
            let (last, rest) = words.split_last().unwrap_or((&"", &[]));
            format!("expected {} or {last}", rest.join(", "))
        })
}

/// A `[section]` with `module = module` and the keyword arguments `kwargs` (one a line, in
/// order), as a configuration file would give it.
#[cfg(test)]
pub(crate) fn test_module(section: &str, module: &str, kwargs: &[(&str, &str)]) -> ModuleConfig {
    ModuleConfig {
        section: section.into(),
        module: module.into(),
        kwargs: kwargs
            .iter()
            .enumerate()
            .map(|(i, (k, v))| mplane::config::Setting {
                key: k.to_string(),
                value: v.to_string(),
                line: i + 1,
            })
            .collect(),
    }
}
