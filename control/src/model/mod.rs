//! The mPlane information model: message kinds and their JSON representation.
//!
//! One JSON object per message; its **kind** is the first of these keys that
//! is present: `capability`, `specification`, `result`, `receipt`,
//! `redemption`, `withdrawal`, `interrupt`, `exception`, `envelope`.
//!
//! * Statements ([`Statement`]: capability, specification, result) and the
//!   notifications derived from them (receipt, redemption, withdrawal,
//!   interrupt) share one layout: the kind key holding the verb, `version`,
//!   `registry`, `label`, `link`, `export`, `token`, `when`, `parameters`,
//!   `metadata`, `results`, and for results `resultvalues`.
//! * [`Exception`]: `{"exception": token-or-null, "message": text}`.
//! * [`Envelope`]: `envelope` (content kind), `version`, `contents`, and
//!   optionally `token`, `when`, `label`.
//!
//! # Fidelity
//! [`parse`] accepts every form the reference SDK emits and [`Message::unparse`]
//! re-emits a parsed message byte for byte: values keep their wire text, sets
//! their order, scopes their text (the reference's expanded crontab included),
//! and unknown-but-legal keys are kept and written back. Output uses the
//! reference's layout (sorted keys, two-space indent; see `json.rs`).
//! Messages built here use the specification's forms.
//!
//! Element names are checked against the registry the message names (with its
//! includes), and every value against its element's primitive.

mod error;
mod json;
mod matching;
mod token;

pub use error::ModelError;
pub use matching::{MatchError, check_fulfills, find_capability};
pub use token::{python_datetimes_repr, schema_hash};

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value as Json};

use crate::constraint::Constraint;
use crate::registry::{CORE_URI, Primitive, Registries, Registry};
use crate::value::{NONE, Value};
use crate::when::When;
use json::Writer;

/// The media type of mPlane messages over HTTP (compared byte-exactly).
pub const MEDIA_TYPE: &str = "application/x-mplane+json";

/// Protocol version written by this implementation.
pub const VERSION: i64 = 1;

/// Largest message accepted by [`parse`] (bytes).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// Deepest envelope nesting accepted.
pub const MAX_ENVELOPE_DEPTH: usize = 8;

/// Kinds of statement-shaped messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
    /// What a component can do.
    Capability,
    /// A request to do it.
    Specification,
    /// What was measured.
    Result,
    /// A promise of a result, for later redemption.
    Receipt,
    /// A request for the result a receipt promised.
    Redemption,
    /// A capability withdrawn.
    Withdrawal,
    /// A specification cancelled.
    Interrupt,
}

impl StatementKind {
    /// The message key naming this kind.
    pub fn key(self) -> &'static str {
        match self {
            StatementKind::Capability => "capability",
            StatementKind::Specification => "specification",
            StatementKind::Result => "result",
            StatementKind::Receipt => "receipt",
            StatementKind::Redemption => "redemption",
            StatementKind::Withdrawal => "withdrawal",
            StatementKind::Interrupt => "interrupt",
        }
    }

    /// True for kinds whose parameters are constraints (capability, withdrawal).
    pub fn has_constraints(self) -> bool {
        matches!(self, StatementKind::Capability | StatementKind::Withdrawal)
    }
}

/// The kind keys in the order the reference tests them.
const KINDS: [(&str, Option<StatementKind>); 9] = [
    ("capability", Some(StatementKind::Capability)),
    ("specification", Some(StatementKind::Specification)),
    ("result", Some(StatementKind::Result)),
    ("receipt", Some(StatementKind::Receipt)),
    ("redemption", Some(StatementKind::Redemption)),
    ("withdrawal", Some(StatementKind::Withdrawal)),
    ("interrupt", Some(StatementKind::Interrupt)),
    ("exception", None),
    ("envelope", None),
];

/// A temporal scope with the text it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhenText {
    text: String,
    when: When,
}

impl WhenText {
    /// Reads a scope, keeping its text.
    pub fn parse(text: &str) -> Result<WhenText, ModelError> {
        Ok(WhenText {
            when: When::parse(text)?,
            text: text.to_string(),
        })
    }

    /// The parsed scope.
    pub fn when(&self) -> &When {
        &self.when
    }

    /// The text as on the wire.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl From<When> for WhenText {
    fn from(when: When) -> Self {
        WhenText {
            text: when.to_string(),
            when,
        }
    }
}

/// A parameter or metadata entry: its wire value and its element's primitive.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The JSON value as on the wire (normally a string).
    pub raw: Json,
    /// The element's primitive.
    pub prim: Primitive,
}

impl Entry {
    /// The wire text (a JSON number or boolean as its text; booleans as `True`/`False`).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        wire_text(&self.raw)
    }

    /// The typed value; `None` for `*`.
    pub fn value(&self) -> Option<Value> {
        Value::parse(self.prim, &self.text()).ok().flatten()
    }

    /// The value's reference form, as used in tokens: `*` for none, except
    /// for times, where the reference writes Python's `None`.
    pub fn reference_value(&self) -> String {
        match self.value() {
            None => reference_none(self.prim).to_string(),
            Some(v) => v.to_string(),
        }
    }

    /// The constraint this entry states (in a capability).
    pub fn constraint(&self) -> Constraint {
        Constraint::parse(self.prim, &self.text()).unwrap_or(Constraint::All)
    }
}

/// What the reference's `unparse` writes for a missing value of `prim`: the
/// time primitive writes Python's `None`, every other one `*`.
pub(crate) fn reference_none(prim: Primitive) -> &'static str {
    if prim == Primitive::Time {
        "None"
    } else {
        NONE
    }
}

fn wire_text(v: &Json) -> std::borrow::Cow<'_, str> {
    match v {
        Json::String(s) => std::borrow::Cow::Borrowed(s),
        Json::Bool(true) => std::borrow::Cow::Borrowed("True"),
        Json::Bool(false) => std::borrow::Cow::Borrowed("False"),
        other => std::borrow::Cow::Owned(other.to_string()),
    }
}

/// A result column: element name and primitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Element name.
    pub name: String,
    /// Its primitive.
    pub prim: Primitive,
}

/// A capability, specification, result, receipt, redemption, withdrawal or
/// interrupt.
///
/// Sections that were absent stay absent when written back; statements built
/// here always carry `version` and `registry`, as the reference writes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// Which kind of statement.
    pub kind: StatementKind,
    /// The verb (`measure`, `query`, `collect`, `callback`, …).
    pub verb: String,
    /// `version` as on the wire.
    pub version: Option<Json>,
    /// `registry` URI; absent means the core registry.
    pub registry: Option<String>,
    /// `label`.
    pub label: Option<String>,
    /// `link`.
    pub link: Option<String>,
    /// `export` (kept, unlike the reference, which loses it: DIGEST Q3).
    pub export: Option<String>,
    /// `token`.
    pub token: Option<String>,
    /// `when`.
    pub when: Option<WhenText>,
    /// `parameters`: constraints in capabilities and withdrawals, values otherwise.
    pub parameters: Option<BTreeMap<String, Entry>>,
    /// `metadata`.
    pub metadata: Option<BTreeMap<String, Entry>>,
    /// `results`: the ordered result columns.
    pub results: Option<Vec<Column>>,
    /// `resultvalues`: rows of cells in column order.
    pub resultvalues: Option<Vec<Vec<Json>>>,
    /// Unknown members, kept and written back.
    pub extra: Map<String, Json>,
}

/// An exception: a human-readable failure, tied to a token if known.
#[derive(Debug, Clone, PartialEq)]
pub struct Exception {
    /// The token of the message that caused it (`null` on the wire if none).
    pub token: Option<String>,
    /// The message.
    pub message: String,
    /// Unknown members, kept and written back.
    pub extra: Map<String, Json>,
}

impl Exception {
    /// An exception about `token` with `message`.
    pub fn new(token: Option<String>, message: impl Into<String>) -> Self {
        Exception {
            token,
            message: message.into(),
            extra: Map::new(),
        }
    }
}

/// An envelope: a list of messages (capabilities of a component, or the
/// results of a repeated specification).
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Content kind (`message` by default).
    pub content_type: String,
    /// `version` as on the wire.
    pub version: Option<Json>,
    /// The messages.
    pub contents: Vec<Message>,
    /// `token` (of the repeated specification).
    pub token: Option<String>,
    /// `when`.
    pub when: Option<WhenText>,
    /// `label`.
    pub label: Option<String>,
    /// Unknown members, kept and written back.
    pub extra: Map<String, Json>,
}

impl Envelope {
    /// An empty envelope of `message`s.
    pub fn new() -> Self {
        Envelope {
            content_type: "message".into(),
            version: Some(Json::from(VERSION)),
            contents: Vec::new(),
            token: None,
            when: None,
            label: None,
            extra: Map::new(),
        }
    }
}

impl Default for Envelope {
    fn default() -> Self {
        Envelope::new()
    }
}

/// Any mPlane message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A statement or statement-shaped notification.
    Statement(Statement),
    /// An exception.
    Exception(Exception),
    /// An envelope.
    Envelope(Envelope),
}

impl From<Statement> for Message {
    fn from(s: Statement) -> Self {
        Message::Statement(s)
    }
}

impl From<Exception> for Message {
    fn from(e: Exception) -> Self {
        Message::Exception(e)
    }
}

impl From<Envelope> for Message {
    fn from(e: Envelope) -> Self {
        Message::Envelope(e)
    }
}

/// Parses one mPlane message from JSON text, checking element names and
/// values against `registries`.
pub fn parse(text: &str, registries: &Registries) -> Result<Message, ModelError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(ModelError::TooLarge(text.len()));
    }
    let v: Json = serde_json::from_str(text).map_err(|e| ModelError::Json(e.to_string()))?;
    from_json(v, registries)
}

/// Parses a message from an already decoded JSON value.
pub fn from_json(v: Json, registries: &Registries) -> Result<Message, ModelError> {
    from_json_depth(v, registries, 0)
}

fn from_json_depth(v: Json, registries: &Registries, depth: usize) -> Result<Message, ModelError> {
    let Json::Object(mut m) = v else {
        return Err(ModelError::NotAnObject);
    };
    let (key, kind) = KINDS
        .iter()
        .find(|(k, _)| m.contains_key(*k))
        .copied()
        .ok_or(ModelError::UnknownKind)?;
    match (key, kind) {
        (_, Some(kind)) => Ok(Message::Statement(parse_statement(kind, m, registries)?)),
        ("exception", None) => {
            let token = match m.remove("exception") {
                Some(Json::String(s)) => Some(s),
                Some(Json::Null) | None => None,
                Some(_) => {
                    return Err(ModelError::field(
                        "exception",
                        "must be a string token or null",
                    ));
                }
            };
            let message = match m.remove("message") {
                Some(Json::String(s)) => s,
                Some(_) => return Err(ModelError::field("message", "must be a string")),
                None => return Err(ModelError::field("message", "missing")),
            };
            Ok(Message::Exception(Exception {
                token,
                message,
                extra: m,
            }))
        }
        _ => {
            if depth >= MAX_ENVELOPE_DEPTH {
                return Err(ModelError::TooDeep(MAX_ENVELOPE_DEPTH));
            }
            let content_type = take_string(&mut m, "envelope")?.unwrap_or_default();
            let version = take_version(&mut m)?;
            let token = take_string(&mut m, "token")?;
            let label = take_string(&mut m, "label")?;
            let when = take_string(&mut m, "when")?
                .map(|w| WhenText::parse(&w))
                .transpose()?;
            let contents = match m.remove("contents") {
                Some(Json::Array(a)) => a
                    .into_iter()
                    .map(|x| from_json_depth(x, registries, depth + 1))
                    .collect::<Result<Vec<_>, _>>()?,
                Some(_) => return Err(ModelError::field("contents", "must be an array")),
                None => return Err(ModelError::field("contents", "missing")),
            };
            Ok(Message::Envelope(Envelope {
                content_type,
                version,
                contents,
                token,
                when,
                label,
                extra: m,
            }))
        }
    }
}

fn take_string(m: &mut Map<String, Json>, key: &str) -> Result<Option<String>, ModelError> {
    match m.remove(key) {
        None => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(_) => Err(ModelError::field(key, "must be a string")),
    }
}

fn take_version(m: &mut Map<String, Json>) -> Result<Option<Json>, ModelError> {
    let Some(v) = m.remove("version") else {
        return Ok(None);
    };
    let n = match &v {
        Json::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Json::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n <= VERSION => Ok(Some(v)),
        Some(_) => Err(ModelError::VersionMismatch(v.to_string())),
        None => Err(ModelError::field("version", "must be an integer")),
    }
}

fn check_scalar(v: &Json, field: &str, name: &str) -> Result<(), ModelError> {
    match v {
        Json::String(_) | Json::Number(_) | Json::Bool(_) => Ok(()),
        _ => Err(ModelError::field(
            field,
            format!("value of {name:?} must be a string (or number or boolean)"),
        )),
    }
}

fn lookup(reg: &Registry, name: &str) -> Result<Primitive, ModelError> {
    reg.element(name)
        .map(|e| e.prim)
        .ok_or_else(|| ModelError::UnknownElement {
            name: name.to_string(),
            registry: reg.uri().to_string(),
        })
}

fn parse_entries(
    m: &mut Map<String, Json>,
    field: &str,
    reg: &Registry,
    constraints: bool,
) -> Result<Option<BTreeMap<String, Entry>>, ModelError> {
    let Some(v) = m.remove(field) else {
        return Ok(None);
    };
    let Json::Object(obj) = v else {
        return Err(ModelError::field(field, "must be an object"));
    };
    let mut out = BTreeMap::new();
    for (name, raw) in obj {
        check_scalar(&raw, field, &name)?;
        let prim = lookup(reg, &name)?;
        let text = wire_text(&raw);
        if constraints {
            Constraint::parse(prim, &text).map_err(|source| ModelError::BadConstraint {
                element: name.clone(),
                source,
            })?;
        } else {
            Value::check(prim, &text).map_err(|source| ModelError::BadValue {
                element: name.clone(),
                source,
            })?;
        }
        out.insert(name, Entry { raw, prim });
    }
    Ok(Some(out))
}

fn parse_statement(
    kind: StatementKind,
    mut m: Map<String, Json>,
    registries: &Registries,
) -> Result<Statement, ModelError> {
    let verb = match m.remove(kind.key()) {
        Some(Json::String(s)) => s,
        _ => return Err(ModelError::field(kind.key(), "the verb must be a string")),
    };
    let version = take_version(&mut m)?;
    let registry = take_string(&mut m, "registry")?;
    let reg = registries
        .resolve(registry.as_deref().unwrap_or(CORE_URI))?
        .clone();
    let label = take_string(&mut m, "label")?;
    let link = take_string(&mut m, "link")?;
    let export = take_string(&mut m, "export")?;
    let token = take_string(&mut m, "token")?;
    let when = take_string(&mut m, "when")?
        .map(|w| WhenText::parse(&w))
        .transpose()?;
    let parameters = parse_entries(&mut m, "parameters", &reg, kind.has_constraints())?;
    let metadata = parse_entries(&mut m, "metadata", &reg, false)?;
    let results = match m.remove("results") {
        None => None,
        Some(Json::Array(a)) => {
            let mut cols: Vec<Column> = Vec::with_capacity(a.len());
            for x in a {
                let Json::String(name) = x else {
                    return Err(ModelError::field(
                        "results",
                        "entries must be element names",
                    ));
                };
                if cols.iter().any(|c| c.name == name) {
                    return Err(ModelError::DuplicateColumn(name));
                }
                let prim = lookup(&reg, &name)?;
                cols.push(Column { name, prim });
            }
            Some(cols)
        }
        Some(_) => return Err(ModelError::field("results", "must be an array")),
    };
    let resultvalues = match m.remove("resultvalues") {
        None => None,
        Some(Json::Array(rows)) => {
            let cols = results.as_deref().unwrap_or(&[]);
            let mut out = Vec::with_capacity(rows.len());
            for (i, row) in rows.into_iter().enumerate() {
                let Json::Array(cells) = row else {
                    return Err(ModelError::field("resultvalues", "rows must be arrays"));
                };
                if cells.len() != cols.len() {
                    return Err(ModelError::RowWidth {
                        row: i,
                        expected: cols.len(),
                        got: cells.len(),
                    });
                }
                for (cell, col) in cells.iter().zip(cols) {
                    check_scalar(cell, "resultvalues", &col.name)?;
                    if let Json::String(s) = cell {
                        Value::check(col.prim, s)
                    } else {
                        Value::check(col.prim, &wire_text(cell))
                    }
                    .map_err(|source| ModelError::BadValue {
                        element: col.name.clone(),
                        source,
                    })?;
                }
                out.push(cells);
            }
            Some(out)
        }
        Some(_) => {
            return Err(ModelError::field(
                "resultvalues",
                "must be an array of rows",
            ));
        }
    };
    Ok(Statement {
        kind,
        verb,
        version,
        registry,
        label,
        link,
        export,
        token,
        when,
        parameters,
        metadata,
        results,
        resultvalues,
        extra: m,
    })
}

// ---------------------------------------------------------------------------
// Writing

enum Field<'a> {
    Str(&'a str),
    Json(&'a Json),
    Entries(&'a BTreeMap<String, Entry>),
    Columns(&'a [Column]),
    Rows(&'a [Vec<Json>]),
    Contents(&'a [Message], bool),
    OptStr(Option<&'a str>),
}

fn write_fields<'a>(
    w: &mut Writer,
    mut fields: Vec<(&'a str, Field<'a>)>,
    extra: &'a Map<String, Json>,
) {
    for (k, v) in extra {
        if !fields.iter().any(|(f, _)| *f == k.as_str()) {
            fields.push((k.as_str(), Field::Json(v)));
        }
    }
    fields.sort_by(|a, b| a.0.cmp(b.0));
    w.begin_object(fields.len());
    for (i, (k, f)) in fields.iter().enumerate() {
        w.key(i, k);
        match f {
            Field::Str(s) => w.string(s),
            Field::OptStr(Some(s)) => w.string(s),
            Field::OptStr(None) => w.out.push_str("null"),
            Field::Json(v) => w.value(v),
            Field::Entries(m) => {
                w.begin_object(m.len());
                for (j, (name, e)) in m.iter().enumerate() {
                    w.key(j, name);
                    w.value(&e.raw);
                }
                w.end_object(m.len());
            }
            Field::Columns(cols) => {
                w.begin_array(cols.len());
                for (j, c) in cols.iter().enumerate() {
                    w.item(j);
                    w.string(&c.name);
                }
                w.end_array(cols.len());
            }
            Field::Rows(rows) => {
                w.begin_array(rows.len());
                for (j, row) in rows.iter().enumerate() {
                    w.item(j);
                    w.begin_array(row.len());
                    for (c, cell) in row.iter().enumerate() {
                        w.item(c);
                        match cell {
                            Json::String(s) => w.string(s),
                            other => w.value(other),
                        }
                    }
                    w.end_array(row.len());
                }
                w.end_array(rows.len());
            }
            Field::Contents(msgs, token_only) => {
                w.begin_array(msgs.len());
                for (j, m) in msgs.iter().enumerate() {
                    w.item(j);
                    m.write(w, *token_only);
                }
                w.end_array(msgs.len());
            }
        }
    }
    w.end_object(fields.len());
}

impl Message {
    /// Writes the message as the reference does (sorted keys, two-space
    /// indent, no trailing newline).
    pub fn unparse(&self) -> String {
        let mut w = Writer::with_capacity(1024);
        self.write(&mut w, false);
        w.out
    }

    /// Writes receipts, redemptions, withdrawals and interrupts in token-only
    /// form (without `parameters`, `metadata`, `results`, `link`, `when`), as
    /// the reference's `unparse_json(token_only=True)`.
    pub fn unparse_token_only(&self) -> String {
        let mut w = Writer::with_capacity(512);
        self.write(&mut w, true);
        w.out
    }

    fn write(&self, w: &mut Writer, token_only: bool) {
        match self {
            Message::Statement(s) => s.write(w, token_only),
            Message::Exception(e) => write_fields(
                w,
                vec![
                    ("exception", Field::OptStr(e.token.as_deref())),
                    ("message", Field::Str(&e.message)),
                ],
                &e.extra,
            ),
            Message::Envelope(e) => {
                let mut f = vec![
                    ("envelope", Field::Str(&e.content_type)),
                    ("contents", Field::Contents(&e.contents, token_only)),
                ];
                if let Some(v) = &e.version {
                    f.push(("version", Field::Json(v)));
                }
                if let Some(t) = &e.token {
                    f.push(("token", Field::Str(t)));
                }
                if let Some(t) = &e.when {
                    f.push(("when", Field::Str(&t.text)));
                }
                if let Some(t) = &e.label {
                    f.push(("label", Field::Str(t)));
                }
                write_fields(w, f, &e.extra);
            }
        }
    }

    /// The token of the message, if it has one.
    pub fn token(&self) -> Option<&str> {
        match self {
            Message::Statement(s) => s.token.as_deref(),
            Message::Exception(e) => e.token.as_deref(),
            Message::Envelope(e) => e.token.as_deref(),
        }
    }

    /// The statement, if this is one.
    pub fn as_statement(&self) -> Option<&Statement> {
        match self {
            Message::Statement(s) => Some(s),
            _ => None,
        }
    }

    /// A short name of the kind (`capability`, …, `exception`, `envelope`).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Message::Statement(s) => s.kind.key(),
            Message::Exception(_) => "exception",
            Message::Envelope(_) => "envelope",
        }
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.unparse())
    }
}

impl Statement {
    /// An empty statement of `kind` with `verb`, in the core registry, scope
    /// `past ... future` (the reference's default).
    pub fn new(kind: StatementKind, verb: &str) -> Self {
        Statement {
            kind,
            verb: verb.to_string(),
            version: Some(Json::from(VERSION)),
            registry: Some(CORE_URI.to_string()),
            label: None,
            link: None,
            export: None,
            token: None,
            when: Some(When::infinite().into()),
            parameters: None,
            metadata: None,
            results: None,
            resultvalues: None,
            extra: Map::new(),
        }
    }

    /// The registry URI (core if absent).
    pub fn registry_uri(&self) -> &str {
        self.registry.as_deref().unwrap_or(CORE_URI)
    }

    /// The parsed scope, `past ... future` if absent.
    pub fn when(&self) -> When {
        self.when
            .as_ref()
            .map(|w| w.when.clone())
            .unwrap_or_else(When::infinite)
    }

    /// Parameter names in order.
    pub fn parameter_names(&self) -> impl Iterator<Item = &str> {
        self.parameters
            .iter()
            .flat_map(|m| m.keys().map(String::as_str))
    }

    /// A parameter entry.
    pub fn parameter(&self, name: &str) -> Option<&Entry> {
        self.parameters.as_ref()?.get(name)
    }

    /// A parameter's typed value (`None` if absent or `*`).
    pub fn parameter_value(&self, name: &str) -> Option<Value> {
        self.parameter(name)?.value()
    }

    /// A metadata entry.
    pub fn metadata(&self, name: &str) -> Option<&Entry> {
        self.metadata.as_ref()?.get(name)
    }

    /// Result columns (empty if none).
    pub fn columns(&self) -> &[Column] {
        self.results.as_deref().unwrap_or(&[])
    }

    /// Result rows (empty if none).
    pub fn rows(&self) -> &[Vec<Json>] {
        self.resultvalues.as_deref().unwrap_or(&[])
    }

    fn prim_of(&self, name: &str, registries: &Registries) -> Result<Primitive, ModelError> {
        let reg = registries.resolve(self.registry_uri())?;
        lookup(reg, name)
    }

    /// Adds a parameter: a constraint text in capabilities (`*`, a set, a
    /// range), a value otherwise; checked against the element's primitive.
    pub fn add_parameter(
        &mut self,
        name: &str,
        text: &str,
        registries: &Registries,
    ) -> Result<&mut Self, ModelError> {
        let prim = self.prim_of(name, registries)?;
        if self.kind.has_constraints() {
            Constraint::parse(prim, text).map_err(|source| ModelError::BadConstraint {
                element: name.into(),
                source,
            })?;
        } else {
            Value::check(prim, text).map_err(|source| ModelError::BadValue {
                element: name.into(),
                source,
            })?;
        }
        self.parameters.get_or_insert_with(BTreeMap::new).insert(
            name.to_string(),
            Entry {
                raw: Json::String(text.to_string()),
                prim,
            },
        );
        Ok(self)
    }

    /// Sets a parameter's value (specifications, results).
    pub fn set_parameter_value(&mut self, name: &str, v: &Value) -> Result<&mut Self, ModelError> {
        let e = self
            .parameters
            .as_mut()
            .and_then(|m| m.get_mut(name))
            .ok_or_else(|| ModelError::Invalid(format!("no parameter {name:?}")))?;
        if v.primitive() != e.prim {
            return Err(ModelError::Invalid(format!(
                "{name:?} takes a {} value",
                e.prim
            )));
        }
        e.raw = Json::String(v.to_string());
        Ok(self)
    }

    /// Adds a metadata value.
    pub fn add_metadata(
        &mut self,
        name: &str,
        v: &Value,
        registries: &Registries,
    ) -> Result<&mut Self, ModelError> {
        let prim = self.prim_of(name, registries)?;
        if v.primitive() != prim {
            return Err(ModelError::Invalid(format!(
                "{name:?} takes a {prim} value"
            )));
        }
        self.metadata.get_or_insert_with(BTreeMap::new).insert(
            name.to_string(),
            Entry {
                raw: Json::String(v.to_string()),
                prim,
            },
        );
        Ok(self)
    }

    /// Adds a result column.
    pub fn add_result_column(
        &mut self,
        name: &str,
        registries: &Registries,
    ) -> Result<&mut Self, ModelError> {
        let prim = self.prim_of(name, registries)?;
        let cols = self.results.get_or_insert_with(Vec::new);
        if cols.iter().any(|c| c.name == name) {
            return Err(ModelError::DuplicateColumn(name.into()));
        }
        cols.push(Column {
            name: name.into(),
            prim,
        });
        Ok(self)
    }

    /// Appends a result row of typed values (`None` = missing, written `*`).
    pub fn push_row(&mut self, row: &[Option<Value>]) -> Result<&mut Self, ModelError> {
        let cols = self.columns();
        if row.len() != cols.len() {
            return Err(ModelError::RowWidth {
                row: self.rows().len(),
                expected: cols.len(),
                got: row.len(),
            });
        }
        for (v, c) in row.iter().zip(cols) {
            if let Some(v) = v
                && v.primitive() != c.prim
            {
                return Err(ModelError::Invalid(format!(
                    "column {:?} takes {} values",
                    c.name, c.prim
                )));
            }
        }
        let cells = row
            .iter()
            .map(|v| {
                Json::String(
                    v.as_ref()
                        .map_or_else(|| NONE.to_string(), Value::to_string),
                )
            })
            .collect();
        self.resultvalues.get_or_insert_with(Vec::new).push(cells);
        Ok(self)
    }

    /// Appends a row of already formatted cells (the caller guarantees the
    /// primitive forms; used by services that format in bulk).
    pub fn push_row_text(&mut self, cells: Vec<String>) -> Result<&mut Self, ModelError> {
        if cells.len() != self.columns().len() {
            return Err(ModelError::RowWidth {
                row: self.rows().len(),
                expected: self.columns().len(),
                got: cells.len(),
            });
        }
        self.resultvalues
            .get_or_insert_with(Vec::new)
            .push(cells.into_iter().map(Json::String).collect());
        Ok(self)
    }

    /// Sets the scope.
    pub fn set_when(&mut self, when: When) -> &mut Self {
        self.when = Some(when.into());
        self
    }

    /// A copy as another kind (receipt, interrupt, …), keeping every section
    /// except result values, as the reference derives notifications.
    pub fn derive(&self, kind: StatementKind) -> Statement {
        let mut s = self.clone();
        s.kind = kind;
        s.resultvalues = None;
        s
    }

    /// A specification for this capability, as the reference client derives
    /// one: same verb, label, registry, metadata, parameters (single-valued
    /// constraints filled in, others `*` until set), results and scope.
    pub fn specification_for(&self) -> Statement {
        let mut s = self.derive(StatementKind::Specification);
        s.token = None;
        s.link = None;
        if let Some(ps) = s.parameters.as_mut() {
            for e in ps.values_mut() {
                let text = match e.constraint().single_value() {
                    Some(v) => v.to_string(),
                    None => NONE.to_string(),
                };
                e.raw = Json::String(text);
            }
        }
        s
    }

    /// A result for this specification: same sections and token, no rows yet.
    pub fn result_for(&self) -> Statement {
        let mut r = self.derive(StatementKind::Result);
        r.link = None;
        if r.token.is_none() {
            r.token = Some(self.default_token());
        }
        r
    }

    fn write(&self, w: &mut Writer, token_only: bool) {
        let notif = !matches!(
            self.kind,
            StatementKind::Capability | StatementKind::Specification | StatementKind::Result
        );
        let drop_body = token_only && notif && self.token.is_some();
        let mut f: Vec<(&str, Field<'_>)> = Vec::with_capacity(12);
        f.push((self.kind.key(), Field::Str(&self.verb)));
        if let Some(v) = &self.version {
            f.push(("version", Field::Json(v)));
        }
        if let Some(v) = &self.registry {
            f.push(("registry", Field::Str(v)));
        }
        if let Some(v) = &self.label {
            f.push(("label", Field::Str(v)));
        }
        if let (Some(v), false) = (&self.link, drop_body) {
            f.push(("link", Field::Str(v)));
        }
        if let Some(v) = &self.export {
            f.push(("export", Field::Str(v)));
        }
        if let Some(v) = &self.token {
            f.push(("token", Field::Str(v)));
        }
        if !drop_body {
            if let Some(v) = &self.when {
                f.push(("when", Field::Str(&v.text)));
            }
            if let Some(v) = &self.parameters {
                f.push(("parameters", Field::Entries(v)));
            }
            if let Some(v) = &self.metadata {
                f.push(("metadata", Field::Entries(v)));
            }
            if let Some(v) = &self.results {
                f.push(("results", Field::Columns(v)));
            }
        }
        if let Some(v) = &self.resultvalues {
            f.push(("resultvalues", Field::Rows(v)));
        }
        write_fields(w, f, &self.extra);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs() -> Registries {
        Registries::new()
    }

    #[test]
    fn builds_a_capability_like_the_reference() {
        let r = regs();
        let mut cap = Statement::new(StatementKind::Capability, "measure");
        cap.label = Some("ping-average-ip4".into());
        cap.set_when(When::parse("now ... future / 1s").unwrap());
        cap.add_parameter("source.ip4", "10.0.27.2", &r).unwrap();
        cap.add_parameter("destination.ip4", "*", &r).unwrap();
        for c in [
            "delay.twoway.icmp.us.min",
            "delay.twoway.icmp.us.mean",
            "delay.twoway.icmp.us.max",
            "delay.twoway.icmp.count",
        ] {
            cap.add_result_column(c, &r).unwrap();
        }
        cap.token = Some(cap.default_token());
        let golden = include_str!("../../tests/data/golden/capability-ping-average-ip4.json");
        assert_eq!(Message::from(cap).unparse(), golden);
    }

    #[test]
    fn unknown_members_round_trip() {
        let text = "{\n  \"capability\": \"measure\",\n  \"x-vendor\": {\n    \"a\": [\n      1,\n      2.5\n    ]\n  }\n}";
        let m = parse(text, &regs()).unwrap();
        assert_eq!(m.unparse(), text);
    }

    #[test]
    fn bad_input_is_typed() {
        let r = regs();
        type Check = fn(&ModelError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("{", |e| matches!(e, ModelError::Json(_))),
            ("[1]", |e| matches!(e, ModelError::NotAnObject)),
            ("{\"foo\":1}", |e| matches!(e, ModelError::UnknownKind)),
            ("{\"capability\":1}", |e| {
                matches!(e, ModelError::BadField { .. })
            }),
            ("{\"capability\":\"measure\",\"version\":2}", |e| {
                matches!(e, ModelError::VersionMismatch(_))
            }),
            (
                "{\"capability\":\"measure\",\"registry\":\"http://x.invalid/r\"}",
                |e| matches!(e, ModelError::Registry(_)),
            ),
            (
                "{\"capability\":\"measure\",\"parameters\":{\"bytes.forward\":\"*\"}}",
                |e| matches!(e, ModelError::UnknownElement { .. }),
            ),
            (
                "{\"specification\":\"measure\",\"parameters\":{\"source.ip4\":\"10.0.0.300\"}}",
                |e| matches!(e, ModelError::BadValue { .. }),
            ),
            (
                "{\"capability\":\"measure\",\"parameters\":{\"source.port\":\"a ... b\"}}",
                |e| matches!(e, ModelError::BadConstraint { .. }),
            ),
            (
                "{\"specification\":\"measure\",\"when\":\"tomorrow\"}",
                |e| matches!(e, ModelError::BadWhen(_)),
            ),
            (
                "{\"result\":\"measure\",\"results\":[\"time\"],\"resultvalues\":[[\"*\",\"1\"]]}",
                |e| matches!(e, ModelError::RowWidth { .. }),
            ),
            (
                "{\"result\":\"measure\",\"results\":[\"time\",\"time\"]}",
                |e| matches!(e, ModelError::DuplicateColumn(_)),
            ),
            (
                "{\"specification\":\"measure\",\"parameters\":{\"source.ip4\":[1]}}",
                |e| matches!(e, ModelError::BadField { .. }),
            ),
            ("{\"exception\":\"t\"}", |e| {
                matches!(e, ModelError::BadField { .. })
            }),
            ("{\"envelope\":\"message\"}", |e| {
                matches!(e, ModelError::BadField { .. })
            }),
        ];
        for (text, ok) in cases {
            let e = parse(text, &r).unwrap_err();
            assert!(ok(&e), "{text}: {e:?}");
            assert!(!e.exception_message().is_empty());
        }
        let deep = "{\"envelope\":\"message\",\"contents\":[".repeat(20) + &"]}".repeat(20);
        assert!(matches!(parse(&deep, &r), Err(ModelError::TooDeep(_))));
        let nested = "[".repeat(100_000);
        assert!(matches!(parse(&nested, &r), Err(ModelError::Json(_))));
    }

    #[test]
    fn long_numbers_round_trip() {
        // found by fuzzing: floats must parse correctly rounded to re-emit stably
        let text = "{\"withdrawal\":\"m\",\"x\":66666666666666666666666666666666666666666666666666666666666666666666666666666766666666666666666666666666661}";
        let once = parse(text, &regs()).unwrap().unparse();
        assert_eq!(parse(&once, &regs()).unwrap().unparse(), once);
    }

    #[test]
    fn liberal_values() {
        let r = regs();
        let m = parse(
            "{\"specification\":\"measure\",\"parameters\":{\"packets.ip\":3,\"connectivity.ip\":true}}",
            &r,
        )
        .unwrap();
        let s = m.as_statement().unwrap();
        assert_eq!(s.parameter_value("packets.ip"), Some(Value::Natural(3)));
        assert_eq!(
            s.parameter_value("connectivity.ip"),
            Some(Value::Boolean(true))
        );
    }
}
