//! The configuration file of components, clients and supervisors.
//!
//! The reference SDK (`mpcom`, `mpcli`, `mpsup`) reads an INI file with Python's
//! `configparser.ConfigParser` (strict mode, `optionxform = str`, basic interpolation).
//! This module reproduces that reader in two layers:
//!
//! ```text
//!  text ──Ini::parse──► Ini (sections, raw values, line numbers)
//!                        │  get()/items(): `%(name)s` interpolation as configparser
//!                        ▼
//!                     Config::from_ini ──► Config { tls, roles, authorizations,
//!                                                  modules, component, client }
//! ```
//!
//! # The INI dialect (Python `configparser`, strict, case preserving)
//! * `[name]` starts a section; the name is everything between the first `[` and the
//!   **last** `]` of the (stripped) line, not trimmed. Section and key names are
//!   case-sensitive. `[DEFAULT]` holds defaults visible in every section (also when
//!   iterating, after the section's own keys).
//! * `key = value` or `key: value`; the first `=` or `:` splits; key and value are trimmed.
//!   A line without delimiter is an error.
//! * Full-line comments start with `#` or `;` (after optional whitespace). There are
//!   **no inline comments**: `port = 1228 ; web` has the value `1228 ; web`.
//! * A line indented deeper than the key's line continues the value (joined with `\n`);
//!   blank lines inside a continued value are kept, trailing ones dropped.
//! * A duplicate section or a duplicate key within a section is an error (strict mode).
//! * Values are interpolated on access: `%%` is `%`, `%(key)s` is the value of `key` in the
//!   same section or in `[DEFAULT]`; any other `%` is an error (so a URL with `%20` must be
//!   written `%%20`, as for the reference).
//! * Deviation: a leading UTF-8 byte order mark is ignored (Python would reject the file).
//!
//! # Sections (reference digest §9)
//! `[TLS]` (optional; `cert`, `key`, `ca-chain`, and our optional `crl`), `[Roles]`,
//! `[Authorizations]`, `[module_*]`, `[component]` (underscored path keys), `[client]`
//! (hyphenated path keys). See [`Config`].
//!
//! # Relative paths
//! File names (`[TLS]` files, `registry_preload`) are kept as written. Like the reference
//! (`os.path.abspath`), a relative path is relative to the **current working directory** of
//! the process when it is opened. [`Config::relative_to_config_dir`] rewrites them against
//! the directory of the configuration file instead.
//!
//! ```
//! use mplane::config::{Config, Workflow};
//! let text = "[component]\nworkflow = client-initiated\nlisten-port = 8888\n";
//! let config = Config::parse(text, "comp.conf")?;
//! let component = config.require_component()?;
//! assert_eq!((component.workflow, component.listen_port), (Workflow::ClientInitiated, 8888));
//! assert!(config.tls.is_none()); // plain HTTP, authorisation off
//!
//! let err = Config::parse("[component]\nworkflow = client-initiated\nlisten-port = abc\n", "comp.conf")
//!     .unwrap_err();
//! assert_eq!(err.to_string(), r#"comp.conf: [component] listen-port: "abc" is not a port number (line 3)"#);
//! # Ok::<(), mplane::config::ConfigError>(())
//! ```
#![forbid(unsafe_code)]

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// Port a component listens on (client-initiated) or connects to (component-initiated)
/// when `listen-port` / `client_port` are absent (`DEFAULT_MPLANE_PORT` of the reference).
pub const DEFAULT_COMPONENT_PORT: u16 = 1228;
/// Port of a client/supervisor listener when `[client] listen-port` is absent.
pub const DEFAULT_LISTENER_PORT: u16 = 8888;
/// Default `[client] registration-path` of a listener.
pub const DEFAULT_REGISTRATION_PATH: &str = "register/capability";
/// Default `[client] specification-path` of a listener.
pub const DEFAULT_SPECIFICATION_PATH: &str = "show/specification";
/// Default `[client] result-path` of a listener.
pub const DEFAULT_RESULT_PATH: &str = "register/result";
/// Name of configparser's defaults section.
pub const DEFAULT_SECTION: &str = "DEFAULT";

/// Python's `MAX_INTERPOLATION_DEPTH`.
const MAX_INTERPOLATION_DEPTH: usize = 10;

/// Why a configuration could not be read: a boxed [`ConfigErrorKind`] (every case names the
/// file; value errors also the section, key and line). The operator is at fault in every case.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct ConfigError(Box<ConfigErrorKind>);

impl ConfigError {
    /// What went wrong, with file, section, key and line.
    pub fn kind(&self) -> &ConfigErrorKind {
        &self.0
    }
}

impl From<ConfigErrorKind> for ConfigError {
    fn from(kind: ConfigErrorKind) -> ConfigError {
        ConfigError(Box::new(kind))
    }
}

/// The cases of [`ConfigError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file could not be read (missing, permissions, not UTF-8).
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The file name as given.
        file: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not a valid configparser file.
    #[error("{file}:{line}: {reason}")]
    Syntax {
        /// The file name as given.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: SyntaxError,
    },
    /// A required section is absent.
    #[error("{file}: missing section [{section}] ({reason})")]
    MissingSection {
        /// The file name as given.
        file: String,
        /// The section.
        section: String,
        /// Why it is required.
        reason: &'static str,
    },
    /// A required key is absent.
    #[error("{file}: [{section}] {key}: missing ({reason})")]
    MissingKey {
        /// The file name as given.
        file: String,
        /// The section.
        section: String,
        /// The key.
        key: String,
        /// Why it is required.
        reason: &'static str,
    },
    /// A value does not have the expected form.
    #[error("{file}: [{section}] {key}: {value:?} {reason} (line {line})")]
    InvalidValue {
        /// The file name as given.
        file: String,
        /// The section.
        section: String,
        /// The key.
        key: String,
        /// The value after interpolation.
        value: String,
        /// 1-based line number of the key.
        line: usize,
        /// What was expected, e.g. `is not a port number`.
        reason: String,
    },
    /// `%` interpolation failed (bad syntax, unknown key, too deep).
    #[error("{file}: [{section}] {key}: {reason} (line {line})")]
    Interpolation {
        /// The file name as given.
        file: String,
        /// The section.
        section: String,
        /// The key whose value was interpolated.
        key: String,
        /// 1-based line number of the key.
        line: usize,
        /// What went wrong.
        reason: String,
    },
}

/// Syntax errors of the INI text (Python: `MissingSectionHeaderError`, `ParsingError`,
/// `DuplicateSectionError`, `DuplicateOptionError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyntaxError {
    /// A key/value line before the first section header.
    #[error("no section header before {0:?}")]
    MissingSectionHeader(String),
    /// A line that is neither a header, a `key = value` pair, a comment nor a continuation.
    #[error("expected `[section]` or `key = value`, found {0:?}")]
    NoDelimiter(String),
    /// A `= value` line without key.
    #[error("empty key in {0:?}")]
    EmptyKey(String),
    /// A section header seen twice.
    #[error("duplicate section [{section}] (first at line {first})")]
    DuplicateSection {
        /// The section.
        section: String,
        /// Line of the first header.
        first: usize,
    },
    /// A key seen twice in one section.
    #[error("[{section}] duplicate key {key} (first at line {first})")]
    DuplicateKey {
        /// The section.
        section: String,
        /// The key.
        key: String,
        /// Line of the first occurrence.
        first: usize,
    },
}

/// One `key = value` of a section, with the line of the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The key, case preserved.
    pub key: String,
    /// The value (raw in [`Section::raw`], interpolated elsewhere).
    pub value: String,
    /// 1-based line number of the key.
    pub line: usize,
}

/// One section of an [`Ini`] file with its raw (uninterpolated) settings in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    name: String,
    line: usize,
    settings: Vec<Setting>,
}

impl Section {
    /// The section name (between the brackets, not trimmed).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// 1-based line number of the header (0 for an implicit `[DEFAULT]`).
    pub fn line(&self) -> usize {
        self.line
    }
    /// The section's own settings in file order, uninterpolated (no `[DEFAULT]` keys).
    pub fn raw(&self) -> &[Setting] {
        &self.settings
    }
    fn find(&self, key: &str) -> Option<&Setting> {
        self.settings.iter().find(|s| s.key == key)
    }
}

/// A parsed INI file, as Python's `configparser.ConfigParser` (strict, `optionxform = str`)
/// would hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ini {
    source: String,
    defaults: Section,
    sections: Vec<Section>,
}

/// Splits like Python's universal newlines (`\n`, `\r\n`, `\r`).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.find(['\n', '\r']) {
            None => Some(std::mem::take(&mut rest)),
            Some(p) => {
                let line = &rest[..p];
                let skip = if rest[p..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[p + skip..];
                Some(line)
            }
        }
    })
}

/// `SECTCRE.match`: `\[(?P<header>.+)\]` — greedy, so up to the last `]`.
fn section_header(value: &str) -> Option<&str> {
    let inner = value.strip_prefix('[')?;
    let end = inner.rfind(']')?;
    (end > 0).then(|| &inner[..end])
}

impl Ini {
    /// Parses configuration text; `source` names the file in error messages.
    pub fn parse(text: &str, source: impl Into<String>) -> Result<Ini, ConfigError> {
        let source = source.into();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut ini = Ini {
            source,
            defaults: Section {
                name: DEFAULT_SECTION.to_owned(),
                line: 0,
                settings: Vec::new(),
            },
            sections: Vec::new(),
        };
        // None: before the first header; Some(None): [DEFAULT]; Some(Some(i)): sections[i].
        let mut current: Option<Option<usize>> = None;
        // The key whose value continuation lines extend, as (lines of the value).
        let mut value_lines: Vec<String> = Vec::new();
        let mut has_key = false;
        let mut indent_level = 0usize;
        let mut seen_keys: HashSet<(String, String)> = HashSet::new();

        fn flush(ini: &mut Ini, current: Option<Option<usize>>, lines: &mut Vec<String>) {
            if lines.is_empty() {
                return;
            }
            let joined = lines.join("\n").trim_end().to_owned();
            lines.clear();
            let section = match current {
                Some(Some(i)) => &mut ini.sections[i],
                _ => &mut ini.defaults,
            };
            if let Some(last) = section.settings.last_mut() {
                last.value = joined;
            }
        }

        for (index, line) in lines(text).enumerate() {
            let lineno = index + 1;
            let trimmed = line.trim();
            let is_comment = trimmed.starts_with('#') || trimmed.starts_with(';');
            let value = if is_comment { "" } else { trimmed };
            if value.is_empty() {
                if !is_comment && current.is_some() && has_key {
                    value_lines.push(String::new());
                }
                continue;
            }
            let indent = line.chars().take_while(|c| c.is_whitespace()).count();
            if current.is_some() && has_key && indent > indent_level {
                value_lines.push(value.to_owned());
                continue;
            }
            flush(&mut ini, current, &mut value_lines);
            has_key = false;
            indent_level = indent;
            let syntax = |reason| {
                ConfigError::from(ConfigErrorKind::Syntax {
                    file: ini.source.clone(),
                    line: lineno,
                    reason,
                })
            };
            if let Some(name) = section_header(value) {
                if name == DEFAULT_SECTION {
                    current = Some(None);
                } else if let Some(first) = ini.sections.iter().find(|s| s.name == name) {
                    return Err(syntax(SyntaxError::DuplicateSection {
                        section: name.to_owned(),
                        first: first.line,
                    }));
                } else {
                    ini.sections.push(Section {
                        name: name.to_owned(),
                        line: lineno,
                        settings: Vec::new(),
                    });
                    current = Some(Some(ini.sections.len() - 1));
                }
                continue;
            }
            let Some(cur) = current else {
                return Err(syntax(SyntaxError::MissingSectionHeader(line.to_owned())));
            };
            let Some(p) = value.find(['=', ':']) else {
                return Err(syntax(SyntaxError::NoDelimiter(line.to_owned())));
            };
            let key = value[..p].trim_end();
            if key.is_empty() {
                return Err(syntax(SyntaxError::EmptyKey(line.to_owned())));
            }
            let val = value[p + 1..].trim();
            let section = match cur {
                Some(i) => &mut ini.sections[i],
                None => &mut ini.defaults,
            };
            if !seen_keys.insert((section.name.clone(), key.to_owned())) {
                let first = section.find(key).map_or(0, |s| s.line);
                return Err(ConfigError::from(ConfigErrorKind::Syntax {
                    file: ini.source.clone(),
                    line: lineno,
                    reason: SyntaxError::DuplicateKey {
                        section: section.name.clone(),
                        key: key.to_owned(),
                        first,
                    },
                }));
            }
            section.settings.push(Setting {
                key: key.to_owned(),
                value: val.to_owned(),
                line: lineno,
            });
            value_lines.push(val.to_owned());
            has_key = true;
        }
        flush(&mut ini, current, &mut value_lines);
        Ok(ini)
    }

    /// Reads and parses a file; errors name the file as `path.display()`.
    pub fn read(path: impl AsRef<Path>) -> Result<Ini, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| {
            ConfigError::from(ConfigErrorKind::Read {
                file: path.display().to_string(),
                source,
            })
        })?;
        Ini::parse(&text, path.display().to_string())
    }

    /// The file name used in error messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The sections in file order, without `[DEFAULT]`.
    pub fn sections(&self) -> impl Iterator<Item = &Section> {
        self.sections.iter()
    }

    /// A section by exact name (`DEFAULT` gives the defaults).
    pub fn section(&self, name: &str) -> Option<&Section> {
        if name == DEFAULT_SECTION {
            return Some(&self.defaults);
        }
        self.sections.iter().find(|s| s.name == name)
    }

    /// Whether a section exists (Python `name in config.sections()`; false for `DEFAULT`).
    pub fn has_section(&self, name: &str) -> bool {
        self.sections.iter().any(|s| s.name == name)
    }

    /// The raw setting of `key` in `section`, falling back to `[DEFAULT]`.
    fn raw<'a>(&'a self, section: &'a Section, key: &str) -> Option<&'a Setting> {
        section.find(key).or_else(|| self.defaults.find(key))
    }

    /// The interpolated value of `key` in `section` (or in `[DEFAULT]`); `Ok(None)` if the
    /// section or key is absent. Python: `config[section][key]`.
    pub fn get(&self, section: &str, key: &str) -> Result<Option<Setting>, ConfigError> {
        let Some(sec) = self.section(section) else {
            return Ok(None);
        };
        let Some(setting) = self.raw(sec, key) else {
            return Ok(None);
        };
        let value = self.interpolate(sec, setting)?;
        Ok(Some(Setting {
            key: setting.key.clone(),
            value,
            line: setting.line,
        }))
    }

    /// All interpolated settings of a section as Python iterates a section proxy: the
    /// section's keys in file order, then `[DEFAULT]` keys it does not override.
    /// Empty if the section is absent.
    pub fn items(&self, section: &str) -> Result<Vec<Setting>, ConfigError> {
        let Some(sec) = self.section(section) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let own = sec.settings.iter();
        let defaults = self
            .defaults
            .settings
            .iter()
            .filter(|d| sec.name == DEFAULT_SECTION || sec.find(&d.key).is_none());
        let chained: Vec<&Setting> = if sec.name == DEFAULT_SECTION {
            own.collect()
        } else {
            own.chain(defaults).collect()
        };
        for setting in chained {
            out.push(Setting {
                key: setting.key.clone(),
                value: self.interpolate(sec, setting)?,
                line: setting.line,
            });
        }
        Ok(out)
    }

    /// configparser's `BasicInterpolation.before_get`.
    fn interpolate(&self, section: &Section, setting: &Setting) -> Result<String, ConfigError> {
        let mut out = String::new();
        self.interpolate_some(section, setting, &setting.value, &mut out, 1)?;
        Ok(out)
    }

    fn interpolate_some(
        &self,
        section: &Section,
        setting: &Setting,
        mut rest: &str,
        out: &mut String,
        depth: usize,
    ) -> Result<(), ConfigError> {
        let error = |reason: String| {
            ConfigError::from(ConfigErrorKind::Interpolation {
                file: self.source.clone(),
                section: section.name.clone(),
                key: setting.key.clone(),
                line: setting.line,
                reason,
            })
        };
        if depth > MAX_INTERPOLATION_DEPTH {
            return Err(error(format!(
                "interpolation deeper than {MAX_INTERPOLATION_DEPTH} levels in {:?}",
                setting.value
            )));
        }
        while !rest.is_empty() {
            let Some(p) = rest.find('%') else {
                out.push_str(rest);
                return Ok(());
            };
            out.push_str(&rest[..p]);
            rest = &rest[p..];
            if let Some(after) = rest.strip_prefix("%%") {
                out.push('%');
                rest = after;
            } else if let Some(after) = rest.strip_prefix("%(") {
                // KEYCRE = %\(([^)]+)\)s
                let reference = after
                    .find(')')
                    .filter(|&e| e > 0 && after[e + 1..].starts_with('s'));
                let Some(end) = reference else {
                    return Err(error(format!(
                        "bad interpolation variable reference {rest:?}"
                    )));
                };
                let name = &after[..end];
                rest = &after[end + 2..];
                let Some(target) = self.raw(section, name) else {
                    return Err(error(format!(
                        "interpolation refers to {name:?}, which is not a key of [{}] or [DEFAULT] (write %% for a literal %)",
                        section.name
                    )));
                };
                if target.value.contains('%') {
                    self.interpolate_some(section, setting, &target.value, out, depth + 1)?;
                } else {
                    out.push_str(&target.value);
                }
            } else {
                return Err(error(format!(
                    "'%' must be followed by '%' or '(' (write %% for a literal %), found {rest:?}"
                )));
            }
        }
        Ok(())
    }
}

/// `workflow` of `[component]` or `[client]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workflow {
    /// `client-initiated`: the component is the HTTPS server.
    ClientInitiated,
    /// `component-initiated`: the client/supervisor is the HTTPS server.
    ComponentInitiated,
}

impl Workflow {
    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Workflow::ClientInitiated => "client-initiated",
            Workflow::ComponentInitiated => "component-initiated",
        }
    }
}

impl fmt::Display for Workflow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The files of `[TLS]`, as written (see the module doc for relative paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// `cert`: our certificate chain (PEM; an `openssl x509 -text` preamble is allowed).
    pub cert: PathBuf,
    /// `key`: our unencrypted private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// `ca-chain`: the CA bundle trusted for peers in both directions.
    pub ca_chain: PathBuf,
    /// `crl` (our extension, optional): PEM CRLs checked against client certificates.
    pub crl: Option<PathBuf>,
}

impl TlsFiles {
    /// The same files with relative paths joined onto `base`.
    pub fn relative_to(&self, base: &Path) -> TlsFiles {
        TlsFiles {
            cert: base.join(&self.cert),
            key: base.join(&self.key),
            ca_chain: base.join(&self.ca_chain),
            crl: self.crl.as_ref().map(|c| base.join(c)),
        }
    }
}

/// A `[module_*]` section: a service module and its keyword arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleConfig {
    /// The section name, e.g. `module_ping`.
    pub section: String,
    /// The `module` key (a Python module name in the reference; a service name for us).
    pub module: String,
    /// Every other key, in file order (then `[DEFAULT]` keys). As in the reference, keys
    /// starting with `module` are not passed on.
    pub kwargs: Vec<Setting>,
}

/// The `[component]` section (underscored path keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentConfig {
    /// `workflow` (mandatory).
    pub workflow: Workflow,
    /// `registry_uri`: base registry (the core registry if absent).
    pub registry_uri: Option<String>,
    /// `registry_preload`: a registry file loaded first.
    pub registry_preload: Option<PathBuf>,
    /// `scheduler_max_results`: results kept per repeated specification (0 = all; default 0).
    pub scheduler_max_results: usize,
    /// `listen-port` (client-initiated; default 1228; 0 = any free port).
    pub listen_port: u16,
    /// `listen-cap-link`: the `link` put in every capability (client-initiated).
    pub listen_cap_link: Option<String>,
    /// `client_host`: where the client/supervisor listens (mandatory for component-initiated).
    pub client_host: Option<String>,
    /// `client_port` (component-initiated; default 1228).
    pub client_port: u16,
    /// `registration_path`, with a leading `/` added as the reference does (mandatory for
    /// component-initiated).
    pub registration_path: Option<String>,
    /// `specification_path`, with a leading `/` (mandatory for component-initiated).
    pub specification_path: Option<String>,
    /// `result_path`, with a leading `/` (mandatory for component-initiated).
    pub result_path: Option<String>,
    /// `poll_interval` (an extension of this implementation; component-initiated): seconds
    /// between two fetches of `specification_path` (default 5, the reference's fixed delay).
    pub poll_interval: Option<std::time::Duration>,
    /// `metrics_roles` (an extension of this implementation): the `[Roles]` roles that may
    /// read `GET /metrics`, comma-separated, or `*` for every accepted peer; absent: the
    /// metrics are not served.
    pub metrics_roles: Option<crate::azn::RoleAccess>,
}

/// The `[client]` section of `mpcli`/`mpsup` (hyphenated path keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `workflow` (default client-initiated, as `mpcli`).
    pub workflow: Workflow,
    /// `registry_uri` (underscore, as in `[component]`).
    pub registry_uri: Option<String>,
    /// `registry_preload` (underscore).
    pub registry_preload: Option<PathBuf>,
    /// `default-url`: where specifications without link go (client-initiated).
    pub default_url: Option<String>,
    /// `capability-url`: fetched at start (client-initiated).
    pub capability_url: Option<String>,
    /// `listen-port` of the listener (component-initiated; default 8888).
    pub listen_port: u16,
    /// `listen-spec-link`: the `link` set on queued specifications (mandatory for
    /// component-initiated).
    pub listen_spec_link: Option<String>,
    /// `registration-path` (default `register/capability`), as written (no leading `/`).
    pub registration_path: String,
    /// `specification-path` (default `show/specification`). Deviation: honoured on its own;
    /// the reference reads it only when `registration-path` is present.
    pub specification_path: String,
    /// `result-path` (default `register/result`).
    pub result_path: String,
    /// `component-urls` (mpsup, client-initiated side): split on `,`, each trimmed
    /// (the reference does not trim).
    pub component_urls: Option<Vec<String>>,
    /// `component_roles` (an extension of this implementation, supervisors only): the
    /// `[Roles]` roles a component needs to register, fetch and post on the listener's paths,
    /// comma-separated, or `*` for every accepted peer (the reference's behaviour, and the
    /// default).
    pub component_roles: Option<crate::azn::RoleAccess>,
}

/// The typed, validated configuration. Sections absent from the file are `None`;
/// unknown sections and keys are ignored (as by the reference), but stay readable
/// through [`Config::ini`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    ini: Ini,
    /// `[TLS]`; `None` means plain HTTP, every peer `Identity.Unauthenticated.Default`,
    /// authorisation off.
    pub tls: Option<TlsFiles>,
    /// `[Roles]`: identity → comma-separated roles, interpolated, in file order.
    pub roles: Option<Vec<Setting>>,
    /// `[Authorizations]`: capability label substring → comma-separated roles.
    pub authorizations: Option<Vec<Setting>>,
    /// Every `[module_*]` section in file order.
    pub modules: Vec<ModuleConfig>,
    /// `[component]`.
    pub component: Option<ComponentConfig>,
    /// `[client]`.
    pub client: Option<ClientConfig>,
    warnings: Vec<ConfigWarning>,
}

/// Keys this view reads, per section (everything else there is ignored, as by the reference).
const KNOWN_KEYS: [(&str, &[&str]); 3] = [
    ("TLS", &["cert", "key", "ca-chain", "crl"]),
    (
        "component",
        &[
            "workflow",
            "registry_uri",
            "registry_preload",
            "scheduler_max_results",
            "listen-port",
            "listen-cap-link",
            "client_host",
            "client_port",
            "registration_path",
            "specification_path",
            "result_path",
            "metrics_roles",
            "poll_interval",
        ],
    ),
    (
        "client",
        &[
            "workflow",
            "registry_uri",
            "registry_preload",
            "default-url",
            "capability-url",
            "listen-port",
            "listen-spec-link",
            "registration-path",
            "specification-path",
            "result-path",
            "component-urls",
            "component_roles",
        ],
    ),
];

/// A key in `[TLS]`, `[component]` or `[client]` that nothing reads — usually a typo, or
/// `_` and `-` swapped (`[component]` has `listen-port` but `client_port`; `[client]` has
/// hyphenated paths but `registry_uri`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The file name.
    pub file: String,
    /// The section.
    pub section: String,
    /// The unknown key.
    pub key: String,
    /// 1-based line of the key.
    pub line: usize,
    /// The known key it probably means (same letters with `_`/`-` swapped, or case; else the
    /// closest within two typos).
    pub suggestion: Option<&'static str>,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: [{}] {}: unknown key, ignored",
            self.file, self.section, self.key
        )?;
        if let Some(s) = self.suggestion {
            write!(f, " (did you mean {s}?)")?;
        }
        write!(f, " (line {})", self.line)
    }
}

fn unknown_keys(ini: &Ini) -> Vec<ConfigWarning> {
    let norm = |k: &str| k.to_ascii_lowercase().replace('_', "-");
    let mut out = Vec::new();
    for (section, known) in KNOWN_KEYS {
        let Some(sec) = ini.sections.iter().find(|s| s.name == section) else {
            continue;
        };
        for setting in sec.raw() {
            if known.contains(&setting.key.as_str()) {
                continue;
            }
            out.push(ConfigWarning {
                file: ini.source.clone(),
                section: section.to_owned(),
                key: setting.key.clone(),
                line: setting.line,
                suggestion: known
                    .iter()
                    .copied()
                    .find(|k| norm(k) == norm(&setting.key))
                    .or_else(|| {
                        // a typo: the closest known key within two edits
                        known
                            .iter()
                            .copied()
                            .map(|k| (strsim::levenshtein(&norm(k), &norm(&setting.key)), k))
                            .filter(|&(d, _)| d <= 2)
                            .min()
                            .map(|(_, k)| k)
                    }),
            });
        }
    }
    out
}

/// Typed getters over one section, producing errors that name file, section, key, line.
struct View<'a> {
    ini: &'a Ini,
    section: &'a str,
}

impl View<'_> {
    fn get(&self, key: &str) -> Result<Option<Setting>, ConfigError> {
        self.ini.get(self.section, key)
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        Ok(self.get(key)?.map(|s| s.value))
    }

    fn require(&self, key: &str, reason: &'static str) -> Result<Setting, ConfigError> {
        self.get(key)?.ok_or_else(|| {
            ConfigError::from(ConfigErrorKind::MissingKey {
                file: self.ini.source.clone(),
                section: self.section.to_owned(),
                key: key.to_owned(),
                reason,
            })
        })
    }

    fn invalid(&self, setting: &Setting, reason: impl Into<String>) -> ConfigError {
        ConfigError::from(ConfigErrorKind::InvalidValue {
            file: self.ini.source.clone(),
            section: self.section.to_owned(),
            key: setting.key.clone(),
            value: setting.value.clone(),
            line: setting.line,
            reason: reason.into(),
        })
    }

    fn path(&self, key: &str, reason: &'static str) -> Result<PathBuf, ConfigError> {
        let setting = self.require(key, reason)?;
        if setting.value.is_empty() {
            return Err(self.invalid(&setting, "is not a file name"));
        }
        Ok(PathBuf::from(setting.value))
    }

    fn port(&self, key: &str, default: u16) -> Result<u16, ConfigError> {
        match self.get(key)? {
            None => Ok(default),
            Some(s) => parse_int(&s.value)
                .and_then(|n| u16::try_from(n).ok())
                .ok_or_else(|| self.invalid(&s, "is not a port number")),
        }
    }

    fn workflow(&self, setting: &Setting) -> Result<Workflow, ConfigError> {
        match setting.value.as_str() {
            "client-initiated" => Ok(Workflow::ClientInitiated),
            "component-initiated" => Ok(Workflow::ComponentInitiated),
            _ => Err(self.invalid(
                setting,
                "is not a workflow (expected client-initiated or component-initiated)",
            )),
        }
    }
}

/// Python `int()` of a stripped decimal string: optional sign, digits, single `_` between
/// digits. Negative values are returned as `None` (no count or port is negative).
fn parse_int(text: &str) -> Option<u64> {
    let digits = text.strip_prefix('+').unwrap_or(text);
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
        || !digits.chars().all(|c| c.is_ascii_digit() || c == '_')
    {
        return None;
    }
    digits.replace('_', "").parse().ok()
}

/// The reference prepends `/` to `[component]` paths that lack it.
pub(crate) fn with_slash(path: String) -> String {
    if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    }
}

impl Config {
    /// Parses configuration text; `source` names the file in errors.
    pub fn parse(text: &str, source: impl Into<String>) -> Result<Config, ConfigError> {
        Config::from_ini(Ini::parse(text, source)?)
    }

    /// Reads a configuration file (errors name it as `path.display()`). Relative paths
    /// inside stay relative to the CWD; see [`Config::relative_to_config_dir`].
    pub fn read(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        Config::from_ini(Ini::read(path)?)
    }

    /// Validates the sections of a parsed file.
    pub fn from_ini(ini: Ini) -> Result<Config, ConfigError> {
        let tls = if ini.has_section("TLS") {
            let v = View {
                ini: &ini,
                section: "TLS",
            };
            const WHY: &str = "required when [TLS] is present";
            let crl = match v.get("crl")? {
                None => None,
                Some(s) if s.value.is_empty() => None,
                Some(s) => Some(PathBuf::from(s.value)),
            };
            Some(TlsFiles {
                cert: v.path("cert", WHY)?,
                key: v.path("key", WHY)?,
                ca_chain: v.path("ca-chain", WHY)?,
                crl,
            })
        } else {
            None
        };
        let list = |name: &str| -> Result<Option<Vec<Setting>>, ConfigError> {
            if ini.has_section(name) {
                Ok(Some(ini.items(name)?))
            } else {
                Ok(None)
            }
        };
        let roles = list("Roles")?;
        let authorizations = list("Authorizations")?;

        let mut modules = Vec::new();
        for section in ini
            .sections
            .iter()
            .filter(|s| s.name.starts_with("module_"))
        {
            let v = View {
                ini: &ini,
                section: &section.name,
            };
            let module = v.require("module", "names the service module")?.value;
            let kwargs = ini
                .items(&section.name)?
                .into_iter()
                .filter(|s| !s.key.starts_with("module"))
                .collect();
            modules.push(ModuleConfig {
                section: section.name.clone(),
                module,
                kwargs,
            });
        }

        let component = if ini.has_section("component") {
            Some(Config::component_section(&ini)?)
        } else {
            None
        };
        let client = if ini.has_section("client") {
            Some(Config::client_section(&ini)?)
        } else {
            None
        };
        let warnings = unknown_keys(&ini);
        Ok(Config {
            ini,
            tls,
            roles,
            authorizations,
            modules,
            component,
            client,
            warnings,
        })
    }

    fn component_section(ini: &Ini) -> Result<ComponentConfig, ConfigError> {
        let v = View {
            ini,
            section: "component",
        };
        let workflow =
            v.workflow(&v.require("workflow", "client-initiated or component-initiated")?)?;
        let scheduler_max_results = match v.get("scheduler_max_results")? {
            None => 0,
            Some(s) => parse_int(&s.value)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| v.invalid(&s, "is not a non-negative integer"))?,
        };
        let initiated = workflow == Workflow::ComponentInitiated;
        const WHY: &str = "required for workflow component-initiated";
        let optional_or_required = |key: &str| -> Result<Option<String>, ConfigError> {
            if initiated {
                Ok(Some(v.require(key, WHY)?.value))
            } else {
                v.string(key)
            }
        };
        let client_host = optional_or_required("client_host")?;
        if let (Some(host), Some(s)) = (&client_host, v.get("client_host")?)
            && host.is_empty()
        {
            return Err(v.invalid(&s, "is not a host name"));
        }
        let poll_interval = match v.get("poll_interval")? {
            None => None,
            Some(s) => match s.value.trim().parse::<f64>() {
                Ok(secs) if (0.1..=3600.0).contains(&secs) => {
                    Some(std::time::Duration::from_secs_f64(secs))
                }
                _ => return Err(v.invalid(&s, "is not a number of seconds from 0.1 to 3600")),
            },
        };
        let metrics_roles = match v.get("metrics_roles")? {
            None => None,
            Some(s) => Some(
                crate::azn::RoleAccess::parse(&s.value)
                    .ok_or_else(|| v.invalid(&s, "names no role (give roles, or *)"))?,
            ),
        };
        Ok(ComponentConfig {
            workflow,
            metrics_roles,
            registry_uri: v.string("registry_uri")?,
            registry_preload: v.string("registry_preload")?.map(PathBuf::from),
            scheduler_max_results,
            listen_port: v.port("listen-port", DEFAULT_COMPONENT_PORT)?,
            listen_cap_link: v.string("listen-cap-link")?,
            client_host,
            client_port: v.port("client_port", DEFAULT_COMPONENT_PORT)?,
            registration_path: optional_or_required("registration_path")?.map(with_slash),
            specification_path: optional_or_required("specification_path")?.map(with_slash),
            result_path: optional_or_required("result_path")?.map(with_slash),
            poll_interval,
        })
    }

    fn client_section(ini: &Ini) -> Result<ClientConfig, ConfigError> {
        let v = View {
            ini,
            section: "client",
        };
        let workflow = match v.get("workflow")? {
            None => Workflow::ClientInitiated,
            Some(s) => v.workflow(&s)?,
        };
        let listen_spec_link = if workflow == Workflow::ComponentInitiated {
            Some(
                v.require(
                    "listen-spec-link",
                    "required for workflow component-initiated",
                )?
                .value,
            )
        } else {
            v.string("listen-spec-link")?
        };
        let component_urls = v.string("component-urls")?.map(|urls| {
            urls.split(',')
                .map(|u| u.trim().to_owned())
                .filter(|u| !u.is_empty())
                .collect()
        });
        let component_roles = match v.get("component_roles")? {
            None => None,
            Some(s) => Some(
                crate::azn::RoleAccess::parse(&s.value)
                    .ok_or_else(|| v.invalid(&s, "names no role (give roles, or *)"))?,
            ),
        };
        Ok(ClientConfig {
            workflow,
            registry_uri: v.string("registry_uri")?,
            registry_preload: v.string("registry_preload")?.map(PathBuf::from),
            default_url: v.string("default-url")?,
            capability_url: v.string("capability-url")?,
            listen_port: v.port("listen-port", DEFAULT_LISTENER_PORT)?,
            listen_spec_link,
            registration_path: v
                .string("registration-path")?
                .unwrap_or_else(|| DEFAULT_REGISTRATION_PATH.to_owned()),
            specification_path: v
                .string("specification-path")?
                .unwrap_or_else(|| DEFAULT_SPECIFICATION_PATH.to_owned()),
            result_path: v
                .string("result-path")?
                .unwrap_or_else(|| DEFAULT_RESULT_PATH.to_owned()),
            component_urls,
            component_roles,
        })
    }

    /// Unknown keys in `[TLS]`, `[component]` and `[client]` (log them at start-up).
    pub fn warnings(&self) -> &[ConfigWarning] {
        &self.warnings
    }

    /// The underlying INI file (for sections and keys this view does not model).
    pub fn ini(&self) -> &Ini {
        &self.ini
    }

    /// The file name used in error messages.
    pub fn source(&self) -> &str {
        &self.ini.source
    }

    /// `[component]`, or an error naming the file if the section is absent.
    pub fn require_component(&self) -> Result<&ComponentConfig, ConfigError> {
        self.component.as_ref().ok_or_else(|| {
            ConfigError::from(ConfigErrorKind::MissingSection {
                file: self.ini.source.clone(),
                section: "component".to_owned(),
                reason: "a component needs its workflow",
            })
        })
    }

    /// `[client]`, or an error naming the file if the section is absent.
    pub fn require_client(&self) -> Result<&ClientConfig, ConfigError> {
        self.client.as_ref().ok_or_else(|| {
            ConfigError::from(ConfigErrorKind::MissingSection {
                file: self.ini.source.clone(),
                section: "client".to_owned(),
                reason: "a client or supervisor needs it",
            })
        })
    }

    /// The same configuration with relative file names (`[TLS]` files, `registry_preload`)
    /// joined onto `base`; absolute ones are unchanged.
    pub fn relative_to(&self, base: &Path) -> Config {
        let mut out = self.clone();
        out.tls = self.tls.as_ref().map(|t| t.relative_to(base));
        if let Some(c) = &mut out.component {
            c.registry_preload = c.registry_preload.as_ref().map(|p| base.join(p));
        }
        if let Some(c) = &mut out.client {
            c.registry_preload = c.registry_preload.as_ref().map(|p| base.join(p));
        }
        out
    }

    /// [`Config::relative_to`] the directory of the configuration file (its `source`),
    /// instead of the reference's CWD.
    pub fn relative_to_config_dir(&self) -> Config {
        let dir = Path::new(&self.ini.source)
            .parent()
            .unwrap_or_else(|| Path::new(""));
        self.relative_to(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ini(text: &str) -> Ini {
        Ini::parse(text, "t.conf").unwrap()
    }
    fn value(ini: &Ini, s: &str, k: &str) -> Option<String> {
        ini.get(s, k).unwrap().map(|s| s.value)
    }

    #[test]
    fn delimiters_case_and_no_inline_comments() {
        let i = ini("[a]\nKey = v\nb: c = d\n e=f:g \nport = 1228 ; web\n");
        assert_eq!(value(&i, "a", "Key").as_deref(), Some("v"));
        assert_eq!(value(&i, "a", "key"), None);
        // ` e=f:g` is indented deeper than `b`: a continuation line.
        assert_eq!(value(&i, "a", "b").as_deref(), Some("c = d\ne=f:g"));
        let i = ini("[a]\ne=f:g\nport = 1228 ; web\n");
        assert_eq!(value(&i, "a", "e").as_deref(), Some("f:g"));
        assert_eq!(value(&i, "a", "port").as_deref(), Some("1228 ; web"));
    }

    #[test]
    fn continuation_lines_and_comments() {
        let i = ini("[a]\nx = 1\n  two\n# comment\n\n  three\n\n\ny = 2\n");
        assert_eq!(value(&i, "a", "x").as_deref(), Some("1\ntwo\n\nthree"));
        assert_eq!(value(&i, "a", "y").as_deref(), Some("2"));
        assert_eq!(i.section("a").unwrap().raw()[1].line, 9);
    }

    #[test]
    fn headers() {
        let i = ini("[ sp ]\na=1\n[x]y]\nb=2\n[z] = 3\n");
        assert!(i.has_section(" sp "));
        assert!(i.has_section("x]y"));
        assert!(i.has_section("z"));
        let e = Ini::parse("[]\n", "t.conf").unwrap_err();
        assert!(
            matches!(
                e.kind(),
                ConfigErrorKind::Syntax {
                    line: 1,
                    reason: SyntaxError::MissingSectionHeader(_),
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn syntax_errors() {
        let e = Ini::parse("a = 1\n", "t.conf").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.conf:1: no section header before \"a = 1\""
        );
        let e = Ini::parse("[a]\nx=1\n[b]\n[a]\n", "t.conf").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.conf:4: duplicate section [a] (first at line 1)"
        );
        let e = Ini::parse("[a]\nx=1\nx=2\n", "t.conf").unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.conf:3: [a] duplicate key x (first at line 2)"
        );
        let e = Ini::parse("[a]\nnovalue\n", "t.conf").unwrap_err();
        assert!(matches!(
            e.kind(),
            ConfigErrorKind::Syntax {
                line: 2,
                reason: SyntaxError::NoDelimiter(_),
                ..
            }
        ));
        let e = Ini::parse("[a]\n = v\n", "t.conf").unwrap_err();
        assert!(matches!(
            e.kind(),
            ConfigErrorKind::Syntax {
                reason: SyntaxError::EmptyKey(_),
                ..
            }
        ));
        // Same key in different sections and repeated [DEFAULT] headers are fine.
        ini("[a]\nx=1\n[b]\nx=2\n[DEFAULT]\nd=1\n[DEFAULT]\ne=2\n");
        assert!(Ini::parse("[DEFAULT]\nd=1\n[DEFAULT]\nd=2\n", "t").is_err());
    }

    #[test]
    fn crlf_and_bom() {
        let i = ini("\u{feff}[a]\r\nx = 1\r\n  2\r\ny = 3\r");
        assert_eq!(value(&i, "a", "x").as_deref(), Some("1\n2"));
        assert_eq!(value(&i, "a", "y").as_deref(), Some("3"));
    }

    #[test]
    fn defaults_and_interpolation() {
        let i = ini(
            "[DEFAULT]\nbase = /etc/mplane\nd = dv\n[TLS]\ncert = %(base)s/c.crt\npct = 100%%\nbad = 50%\nmissing = %(nope)s\nd = own\nloop = %(loop)s\n",
        );
        assert_eq!(
            value(&i, "TLS", "cert").as_deref(),
            Some("/etc/mplane/c.crt")
        );
        assert_eq!(value(&i, "TLS", "pct").as_deref(), Some("100%"));
        assert_eq!(value(&i, "TLS", "base").as_deref(), Some("/etc/mplane"));
        assert!(matches!(
            i.get("TLS", "bad").map_err(|e| e.kind().to_string()),
            Err(m) if m.ends_with("(line 7)")
        ));
        assert!(i.get("TLS", "missing").is_err());
        assert!(
            i.get("TLS", "loop")
                .unwrap_err()
                .to_string()
                .contains("deeper")
        );
        let keys: Vec<_> = ini("[DEFAULT]\nz=1\nd=2\n[s]\nd=3\na=4\n")
            .items("s")
            .unwrap()
            .into_iter()
            .map(|s| (s.key, s.value))
            .collect();
        assert_eq!(
            keys,
            [("d", "3"), ("a", "4"), ("z", "1")].map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert!(!i.has_section("DEFAULT"));
    }

    #[test]
    fn python_int() {
        assert_eq!(parse_int("1228"), Some(1228));
        assert_eq!(parse_int("+1_228"), Some(1228));
        assert_eq!(parse_int("0012"), Some(12));
        for bad in ["", "-1", "1__2", "_1", "1_", "abc", "1.0", "+"] {
            assert_eq!(parse_int(bad), None, "{bad}");
        }
    }
}
