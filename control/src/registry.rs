//! Element registries in the `mplane-0` format.
//!
//! A registry names the elements that messages may use and gives each a
//! [`Primitive`] type. The core registry (`http://ict-mplane.eu/registry/core`,
//! revision 0, 113 elements) is built in; further registries are loaded from
//! files or strings and registered under their own `registry-uri` in a
//! [`Registries`] set, which is what message parsing resolves URIs against.
//!
//! # Includes
//! `includes` are resolved depth-first before the registry's own elements; a
//! later definition of the same name wins (as in the reference). Include loops
//! are rejected with [`RegistryError::IncludeLoop`].
//!
//! # Lookup by the named registry
//! An element is looked up in the registry that the message names (with its
//! includes), as the specification says. The reference SDK instead searches all
//! loaded registries in load order (DIGEST Q9); see `doc/protocol.md`.
//!
//! # Registry URIs of this project
//! The probe's extension registry has one fixed URI on every probe
//! (`https://mplane-rs.invalid/registry/probe`), and components serve their
//! registries at `/registry/<name>` (see `doc/protocol.md`). The reference fetches
//! unknown registry URIs over plain HTTP(S) at parse time, so reference clients
//! preload the file (`registry_preload`).

use rustc_hash::FxHashMap as HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value as Json;

/// The URI of the core registry, the default of every message.
pub const CORE_URI: &str = "http://ict-mplane.eu/registry/core";

/// The only registry format there is.
pub const FORMAT_MPLANE_0: &str = "mplane-0";

/// The core registry file, byte for byte as the reference ships it.
pub const CORE_JSON: &str = include_str!("registry/core.json");

/// Largest registry document accepted (bytes); registries are small.
pub const MAX_REGISTRY_BYTES: usize = 16 << 20;

/// Maximum depth of nested `includes`.
pub const MAX_INCLUDE_DEPTH: usize = 16;

/// Primitive type of an element: how its values are written and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Primitive {
    /// Any string.
    String,
    /// Unsigned integer.
    Natural,
    /// Floating point number.
    Real,
    /// `True` / `False`.
    Boolean,
    /// UTC timestamp (or `past` / `now` / `future`).
    Time,
    /// IPv4 or IPv6 address.
    Address,
    /// URL (kept as a string).
    Url,
}

impl Primitive {
    /// All primitives, in registry order.
    pub const ALL: [Primitive; 7] = [
        Primitive::String,
        Primitive::Natural,
        Primitive::Real,
        Primitive::Boolean,
        Primitive::Time,
        Primitive::Address,
        Primitive::Url,
    ];

    /// The name used in registry files (`prim`).
    pub fn name(self) -> &'static str {
        match self {
            Primitive::String => "string",
            Primitive::Natural => "natural",
            Primitive::Real => "real",
            Primitive::Boolean => "boolean",
            Primitive::Time => "time",
            Primitive::Address => "address",
            Primitive::Url => "url",
        }
    }

    /// Parses a registry `prim` name.
    pub fn from_name(name: &str) -> Option<Primitive> {
        Primitive::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for Primitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One element: a name with a primitive type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Element name, e.g. `delay.twoway.icmp.us`.
    pub name: String,
    /// Its primitive type.
    pub prim: Primitive,
    /// Human description, if the registry gives one.
    pub desc: Option<String>,
    /// URI of the registry that defined it.
    pub namespace: String,
}

/// Errors loading or resolving registries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The document is not valid JSON.
    #[error("registry is not valid JSON: {0}")]
    Json(String),
    /// A required key is missing or has the wrong type.
    #[error("registry key {key:?}: {reason}")]
    BadKey {
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `registry-format` is not `mplane-0`.
    #[error("unsupported registry format {0:?} (expected \"mplane-0\")")]
    Format(String),
    /// An element names an unknown primitive.
    #[error("element {name:?} has unknown primitive {prim:?}")]
    UnknownPrimitive {
        /// Element name.
        name: String,
        /// The primitive it named.
        prim: String,
    },
    /// An element entry is malformed.
    #[error("element #{index}: {reason}")]
    BadElement {
        /// Position in `elements`.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A registry includes itself, directly or not.
    #[error("registry include loop at {0}")]
    IncludeLoop(String),
    /// Includes nest deeper than [`MAX_INCLUDE_DEPTH`].
    #[error("registry includes nest deeper than {MAX_INCLUDE_DEPTH} at {0}")]
    TooDeep(String),
    /// A URI is neither loaded nor loadable from a local file.
    #[error("unknown registry {0} (preload it: registries are never fetched over the network)")]
    Unknown(String),
    /// A registry file could not be read.
    #[error("cannot read registry file {path}: {reason}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The document is larger than [`MAX_REGISTRY_BYTES`].
    #[error("registry document of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

/// A loaded registry with its includes flattened in.
#[derive(Debug, Clone)]
pub struct Registry {
    uri: String,
    revision: i64,
    includes: Vec<String>,
    /// Own and included elements, in definition order (a redefinition replaces in place).
    elements: Vec<Element>,
    index: HashMap<String, usize>,
}

impl Registry {
    /// The URI this registry is known by (`registry-uri`).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// `registry-revision`.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// URIs named in `includes`, in file order.
    pub fn includes(&self) -> &[String] {
        &self.includes
    }

    /// Looks an element up by name (own or included).
    pub fn element(&self, name: &str) -> Option<&Element> {
        self.index.get(name).map(|&i| &self.elements[i])
    }

    /// All elements, included ones first, in definition order.
    pub fn elements(&self) -> &[Element] {
        &self.elements
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.elements.len()
    }

    /// True if the registry defines no element.
    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    fn add(&mut self, e: Element) {
        if let Some(&i) = self.index.get(&e.name) {
            self.elements[i] = e;
        } else {
            self.index.insert(e.name.clone(), self.elements.len());
            self.elements.push(e);
        }
    }
}

/// The set of registries known to a process, keyed by URI, in load order.
///
/// The core registry is always present. Message parsing resolves the
/// message's `registry` URI here; nothing is fetched over the network.
#[derive(Debug, Clone)]
pub struct Registries {
    by_uri: HashMap<String, Arc<Registry>>,
    order: Vec<String>,
    allow_files: bool,
}

impl Default for Registries {
    fn default() -> Self {
        Self::new()
    }
}

fn core() -> &'static Arc<Registry> {
    static CORE: std::sync::OnceLock<Arc<Registry>> = std::sync::OnceLock::new();
    CORE.get_or_init(|| {
        let empty = Registries {
            by_uri: HashMap::default(),
            order: Vec::new(),
            allow_files: false,
        };
        // The embedded core registry is a fixture of this crate; tests check it loads.
        Arc::new(
            empty
                .build(CORE_JSON, &mut Vec::new())
                .expect("embedded core registry is valid"),
        )
    })
}

impl Registries {
    /// A set holding only the core registry. URIs that look like local paths
    /// (`file:` or no scheme) are not loaded unless [`Registries::allow_files`].
    pub fn new() -> Self {
        let c = core().clone();
        let mut by_uri = HashMap::default();
        by_uri.insert(CORE_URI.to_string(), c);
        Registries {
            by_uri,
            order: vec![CORE_URI.to_string()],
            allow_files: false,
        }
    }

    /// The shared built-in core registry.
    pub fn core() -> Arc<Registry> {
        core().clone()
    }

    /// Lets [`Registries::resolve_or_load`] read registry URIs that are local
    /// paths (`file:` or no scheme), as the reference does. Off by default:
    /// a message from a peer must not make us read arbitrary files.
    pub fn allow_files(&mut self, allow: bool) -> &mut Self {
        self.allow_files = allow;
        self
    }

    /// Parses a registry document, resolving its includes against this set,
    /// and registers it under its own URI (replacing an earlier one).
    pub fn load_str(&mut self, json: &str) -> Result<Arc<Registry>, RegistryError> {
        let reg = Arc::new(self.build(json, &mut Vec::new())?);
        self.insert(reg.clone());
        Ok(reg)
    }

    /// Reads a registry file and registers it under its own URI
    /// (the reference's `registry_preload`).
    pub fn load_file(&mut self, path: &Path) -> Result<Arc<Registry>, RegistryError> {
        let text = read_limited(path)?;
        self.load_str(&text)
    }

    /// Registers an already built registry.
    pub fn insert(&mut self, reg: Arc<Registry>) {
        if self.by_uri.insert(reg.uri.clone(), reg.clone()).is_none() {
            self.order.push(reg.uri.clone());
        }
    }

    /// The registry known by `uri`, if loaded.
    pub fn get(&self, uri: &str) -> Option<&Arc<Registry>> {
        self.by_uri.get(uri)
    }

    /// The registry known by `uri`, or [`RegistryError::Unknown`].
    pub fn resolve(&self, uri: &str) -> Result<&Arc<Registry>, RegistryError> {
        self.by_uri
            .get(uri)
            .ok_or_else(|| RegistryError::Unknown(uri.to_string()))
    }

    /// Like [`Registries::resolve`], but loads a local-path URI from disk when
    /// files are allowed.
    pub fn resolve_or_load(&mut self, uri: &str) -> Result<Arc<Registry>, RegistryError> {
        if let Some(r) = self.by_uri.get(uri) {
            return Ok(r.clone());
        }
        match local_path(uri) {
            Some(p) if self.allow_files => {
                let text = read_limited(Path::new(p))?;
                let reg = Arc::new(self.build(&text, &mut Vec::new())?);
                // Known both by the path it was named with and by its own URI.
                self.by_uri.insert(uri.to_string(), reg.clone());
                self.order.push(uri.to_string());
                self.insert(reg.clone());
                Ok(reg)
            }
            _ => Err(RegistryError::Unknown(uri.to_string())),
        }
    }

    /// URIs of all loaded registries in load order.
    pub fn uris(&self) -> impl Iterator<Item = &str> {
        self.order.iter().map(String::as_str)
    }

    /// Global lookup across all loaded registries in load order, as the
    /// reference's `element()` does (DIGEST Q9). Prefer per-registry lookup.
    pub fn element_anywhere(&self, name: &str) -> Option<&Element> {
        self.order
            .iter()
            .filter_map(|u| self.by_uri.get(u))
            .find_map(|r| r.element(name))
    }

    fn build(&self, json: &str, stack: &mut Vec<String>) -> Result<Registry, RegistryError> {
        if json.len() > MAX_REGISTRY_BYTES {
            return Err(RegistryError::TooLarge(json.len()));
        }
        let doc: Json =
            serde_json::from_str(json).map_err(|e| RegistryError::Json(e.to_string()))?;
        let obj = doc.as_object().ok_or(RegistryError::BadKey {
            key: "registry-format",
            reason: "document is not a JSON object".into(),
        })?;
        let format = obj
            .get("registry-format")
            .ok_or(missing("registry-format"))?;
        if format.as_str() != Some(FORMAT_MPLANE_0) {
            return Err(RegistryError::Format(match format {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            }));
        }
        let revision = match obj
            .get("registry-revision")
            .ok_or(missing("registry-revision"))?
        {
            Json::Number(n) => n.as_i64(),
            Json::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or(RegistryError::BadKey {
            key: "registry-revision",
            reason: "not an integer".into(),
        })?;
        let uri = obj
            .get("registry-uri")
            .ok_or(missing("registry-uri"))?
            .as_str()
            .ok_or(RegistryError::BadKey {
                key: "registry-uri",
                reason: "not a string".into(),
            })?
            .to_string();
        if stack.contains(&uri) {
            return Err(RegistryError::IncludeLoop(uri));
        }
        if stack.len() >= MAX_INCLUDE_DEPTH {
            return Err(RegistryError::TooDeep(uri));
        }
        let mut reg = Registry {
            uri: uri.clone(),
            revision,
            includes: Vec::new(),
            elements: Vec::new(),
            index: HashMap::default(),
        };
        stack.push(uri.clone());
        if let Some(inc) = obj.get("includes") {
            let list = inc.as_array().ok_or(RegistryError::BadKey {
                key: "includes",
                reason: "not an array".into(),
            })?;
            for u in list {
                let u = u.as_str().ok_or(RegistryError::BadKey {
                    key: "includes",
                    reason: "entries must be strings".into(),
                })?;
                if stack.iter().any(|s| s == u) {
                    return Err(RegistryError::IncludeLoop(u.to_string()));
                }
                reg.includes.push(u.to_string());
                let included: Arc<Registry> = match self.by_uri.get(u) {
                    Some(r) => r.clone(),
                    None => match local_path(u) {
                        Some(p) if self.allow_files => {
                            Arc::new(self.build(&read_limited(Path::new(p))?, stack)?)
                        }
                        _ => return Err(RegistryError::Unknown(u.to_string())),
                    },
                };
                for e in &included.elements {
                    reg.add(e.clone());
                }
            }
        }
        stack.pop();
        let elems = obj
            .get("elements")
            .ok_or(missing("elements"))?
            .as_array()
            .ok_or(RegistryError::BadKey {
                key: "elements",
                reason: "not an array".into(),
            })?;
        for (index, e) in elems.iter().enumerate() {
            let bad = |reason: &str| RegistryError::BadElement {
                index,
                reason: reason.to_string(),
            };
            let e = e.as_object().ok_or_else(|| bad("not an object"))?;
            let name = e
                .get("name")
                .and_then(Json::as_str)
                .ok_or_else(|| bad("missing string \"name\""))?;
            if name.is_empty() {
                return Err(bad("empty name"));
            }
            let prim_name = e
                .get("prim")
                .and_then(Json::as_str)
                .ok_or_else(|| bad("missing string \"prim\""))?;
            let prim =
                Primitive::from_name(prim_name).ok_or_else(|| RegistryError::UnknownPrimitive {
                    name: name.to_string(),
                    prim: prim_name.to_string(),
                })?;
            let desc = e.get("desc").and_then(Json::as_str).map(str::to_string);
            reg.add(Element {
                name: name.to_string(),
                prim,
                desc,
                namespace: uri.clone(),
            });
        }
        Ok(reg)
    }
}

fn missing(key: &'static str) -> RegistryError {
    RegistryError::BadKey {
        key,
        reason: "missing".into(),
    }
}

/// A URI the reference treats as a local path: `file:` scheme or no scheme.
fn local_path(uri: &str) -> Option<&str> {
    if let Some(rest) = uri.strip_prefix("file://") {
        return Some(rest);
    }
    if let Some(rest) = uri.strip_prefix("file:") {
        return Some(rest);
    }
    match uri.find(':') {
        Some(i)
            if uri[..i]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                && i > 1 =>
        {
            None
        }
        _ => Some(uri),
    }
}

fn read_limited(path: &Path) -> Result<String, RegistryError> {
    let io = |e: std::io::Error| RegistryError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() as usize > MAX_REGISTRY_BYTES {
        return Err(RegistryError::TooLarge(meta.len() as usize));
    }
    std::fs::read_to_string(path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_loads_with_113_elements() {
        let r = Registries::core();
        assert_eq!(r.uri(), CORE_URI);
        assert_eq!(r.len(), 113);
        assert_eq!(r.revision(), 0);
        assert_eq!(
            r.element("delay.twoway.icmp.us").unwrap().prim,
            Primitive::Natural
        );
        assert_eq!(r.element("source.ip4").unwrap().prim, Primitive::Address);
        assert!(r.element("System_version").is_some());
        assert!(r.element("bytes.forward").is_none());
    }

    #[test]
    fn includes_depth_first_later_wins() {
        let mut regs = Registries::new();
        regs.load_str(
            r#"{"registry-format":"mplane-0","registry-revision":1,"registry-uri":"urn:a",
            "includes":["http://ict-mplane.eu/registry/core"],
            "elements":[{"name":"time","prim":"string"},{"name":"x.y","prim":"real","desc":"d"}]}"#,
        )
        .unwrap();
        let a = regs.resolve("urn:a").unwrap();
        assert_eq!(a.len(), 114);
        assert_eq!(a.element("time").unwrap().prim, Primitive::String);
        assert_eq!(a.element("x.y").unwrap().desc.as_deref(), Some("d"));
        assert_eq!(a.includes(), [CORE_URI]);
    }

    #[test]
    fn include_loop_and_unknown_rejected() {
        let mut regs = Registries::new();
        let e = regs
            .load_str(r#"{"registry-format":"mplane-0","registry-revision":1,"registry-uri":"urn:a","includes":["urn:a"],"elements":[]}"#)
            .unwrap_err();
        assert_eq!(e, RegistryError::IncludeLoop("urn:a".into()));
        let e = regs
            .load_str(r#"{"registry-format":"mplane-0","registry-revision":1,"registry-uri":"urn:b","includes":["http://x.invalid/r"],"elements":[]}"#)
            .unwrap_err();
        assert_eq!(e, RegistryError::Unknown("http://x.invalid/r".into()));
    }

    #[test]
    fn file_include_loop_detected() {
        let dir = std::env::temp_dir().join(format!("mplane-reg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.json");
        let b = dir.join("b.json");
        let doc = |uri: &std::path::Path, inc: &std::path::Path| {
            format!(
                r#"{{"registry-format":"mplane-0","registry-revision":0,"registry-uri":"{}","includes":["{}"],"elements":[]}}"#,
                uri.display(),
                inc.display()
            )
        };
        std::fs::write(&a, doc(&a, &b)).unwrap();
        std::fs::write(&b, doc(&b, &a)).unwrap();
        let mut regs = Registries::new();
        regs.allow_files(true);
        let e = regs.resolve_or_load(a.to_str().unwrap()).unwrap_err();
        assert!(matches!(e, RegistryError::IncludeLoop(_)), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_documents_are_typed_errors() {
        let mut regs = Registries::new();
        assert!(matches!(regs.load_str("{"), Err(RegistryError::Json(_))));
        assert!(matches!(
            regs.load_str("[]"),
            Err(RegistryError::BadKey { .. })
        ));
        assert!(matches!(
            regs.load_str(r#"{"registry-format":"mplane-1","registry-revision":0,"registry-uri":"u","elements":[]}"#),
            Err(RegistryError::Format(_))
        ));
        assert!(matches!(
            regs.load_str(r#"{"registry-format":"mplane-0","registry-revision":0,"registry-uri":"u","elements":[{"name":"a","prim":"float"}]}"#),
            Err(RegistryError::UnknownPrimitive { .. })
        ));
        assert!(matches!(
            regs.load_str(r#"{"registry-format":"mplane-0","registry-revision":0,"registry-uri":"u","elements":[3]}"#),
            Err(RegistryError::BadElement { .. })
        ));
        assert!(matches!(
            regs.resolve_or_load("/etc/passwd"),
            Err(RegistryError::Unknown(_))
        ));
    }
}
