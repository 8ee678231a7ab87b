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
mod read;
mod rows;
mod scan;
pub(crate) mod token;

pub use error::ModelError;
pub use matching::{MatchError, check_fulfills, find_capability};
pub use rows::{Cell, Row, Rows};
pub use token::{python_datetimes_repr, schema_hash};

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value as Json};

use crate::constraint::Constraint;
use crate::registry::{CORE_URI, Primitive, Registries, Registry};
use crate::value::{NONE, Value};
use crate::when::When;
use json::Writer;
use read::Reader;
use rows::NO_ROWS;

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

    /// Reads a scope, keeping `text` as its wire form.
    pub fn from_string(text: String) -> Result<WhenText, ModelError> {
        Ok(WhenText {
            when: When::parse(&text)?,
            text,
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
    pub resultvalues: Option<Rows>,
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
    let mut r = Reader::new(text);
    read_message(&mut r, registries, 0, 0, true)
}

/// Parses a message from an already decoded JSON value.
pub fn from_json(v: Json, registries: &Registries) -> Result<Message, ModelError> {
    parse(&v.to_string(), registries)
}

/// A `parameters` or `metadata` section as read: the members of an object, or
/// whatever else was there (refused later, or kept as an unknown member).
enum Section {
    Pairs(Vec<(String, Json)>),
    Other(Json),
}

impl Section {
    fn into_json(self) -> Json {
        match self {
            Section::Pairs(p) => Json::Object(p.into_iter().collect()),
            Section::Other(v) => v,
        }
    }
}

/// `resultvalues` as read: rows of scalars, or anything else (refused later, or
/// kept as an unknown member).
enum RowsRead {
    Rows(Rows),
    Other(Json),
}

impl RowsRead {
    fn into_json(self) -> Json {
        match self {
            RowsRead::Rows(r) => r.to_json(),
            RowsRead::Other(v) => v,
        }
    }
}

/// The members of a message object, read before its kind is known (the kind is
/// the first kind key present, wherever it stands in the text).
#[derive(Default)]
struct Members {
    kinds: [Option<Json>; 9],
    version: Option<Json>,
    registry: Option<Json>,
    label: Option<Json>,
    link: Option<Json>,
    export: Option<Json>,
    token: Option<Json>,
    when: Option<Json>,
    message: Option<Json>,
    parameters: Option<Section>,
    metadata: Option<Section>,
    results: Option<Json>,
    resultvalues: Option<RowsRead>,
    /// Where `contents` is in the text: read as messages only in an envelope.
    contents: Option<usize>,
    extra: Map<String, Json>,
}

/// Reads one message at the cursor; `container` is the JSON nesting around it
/// and `envelopes` the number of envelopes around it.
fn read_message(
    r: &mut Reader<'_>,
    registries: &Registries,
    envelopes: usize,
    container: usize,
    top: bool,
) -> Result<Message, ModelError> {
    if r.peek_ws() != Some(b'{') {
        // valid JSON that is not an object is refused as such
        r.skip(container)?;
        if top {
            r.end()?;
        }
        return Err(ModelError::NotAnObject);
    }
    let depth = container + 1;
    let m = read_members(r, depth)?;
    if top {
        r.end()?;
    }
    let Some(k) = m.kinds.iter().position(Option::is_some) else {
        return Err(ModelError::UnknownKind);
    };
    match KINDS[k] {
        (_, Some(kind)) => {
            build_statement(kind, k, m, r, registries, depth).map(Message::Statement)
        }
        ("exception", None) => build_exception(m, r, depth).map(Message::Exception),
        _ => build_envelope(m, r, registries, envelopes, depth).map(Message::Envelope),
    }
}

fn read_members(r: &mut Reader<'_>, depth: usize) -> Result<Members, ModelError> {
    let mut m = Members::default();
    r.object(depth, |r, key| {
        let slot = match &*key {
            "capability" => &mut m.kinds[0],
            "specification" => &mut m.kinds[1],
            "result" => &mut m.kinds[2],
            "receipt" => &mut m.kinds[3],
            "redemption" => &mut m.kinds[4],
            "withdrawal" => &mut m.kinds[5],
            "interrupt" => &mut m.kinds[6],
            "exception" => &mut m.kinds[7],
            "envelope" => &mut m.kinds[8],
            "version" => &mut m.version,
            "registry" => &mut m.registry,
            "label" => &mut m.label,
            "link" => &mut m.link,
            "export" => &mut m.export,
            "token" => &mut m.token,
            "when" => &mut m.when,
            "message" => &mut m.message,
            "results" => &mut m.results,
            "parameters" => {
                m.parameters = Some(read_section(r, depth)?);
                return Ok(());
            }
            "metadata" => {
                m.metadata = Some(read_section(r, depth)?);
                return Ok(());
            }
            "resultvalues" => {
                m.resultvalues = Some(read_rows(r, depth)?);
                return Ok(());
            }
            "contents" => {
                m.contents = Some(r.pos());
                return r.skip(depth);
            }
            _ => {
                let v = r.value(depth)?;
                m.extra.insert(key.into_owned(), v);
                return Ok(());
            }
        };
        *slot = Some(r.value(depth)?);
        Ok(())
    })?;
    Ok(m)
}

fn read_section(r: &mut Reader<'_>, depth: usize) -> Result<Section, ModelError> {
    if r.peek_ws() != Some(b'{') {
        return Ok(Section::Other(r.value(depth)?));
    }
    let mut pairs = Vec::new();
    r.object(depth + 1, |r, k| {
        let v = r.value(depth + 1)?;
        pairs.push((k.into_owned(), v));
        Ok(())
    })?;
    Ok(Section::Pairs(pairs))
}

/// Reads `resultvalues` straight into [`Rows`] when it is an array of arrays of
/// scalars; anything else is read as JSON (and refused by the statement).
fn read_rows(r: &mut Reader<'_>, depth: usize) -> Result<RowsRead, ModelError> {
    let start = r.pos();
    if r.peek_ws() != Some(b'[') {
        return Ok(RowsRead::Other(r.value(depth)?));
    }
    let mut rows = Rows::new();
    let mut irregular = false;
    let mut num = String::new();
    let read = r.array(depth + 1, |r| {
        if r.peek_ws() != Some(b'[') {
            irregular = true;
            return Err(ModelError::Invalid(String::new()));
        }
        r.array(depth + 2, |r| match r.peek_ws() {
            Some(b'"') => {
                r.string_into(rows.text_mut())?;
                rows.end_str_cell()
            }
            Some(b'-' | b'0'..=b'9') => {
                let n = r.number()?;
                num.clear();
                json::write_number(&n, &mut num);
                rows.push_number(&num)
            }
            Some(b't' | b'f') => match r.value(depth + 2)? {
                Json::Bool(b) => rows.push_bool(b),
                _ => unreachable!("a literal starting with t or f is a boolean"),
            },
            _ => {
                irregular = true;
                Err(ModelError::Invalid(String::new()))
            }
        })?;
        rows.end_row()
    });
    match read {
        Ok(()) => Ok(RowsRead::Rows(rows)),
        Err(_) if irregular => {
            r.rewind(start);
            Ok(RowsRead::Other(r.value(depth)?))
        }
        Err(e) => Err(e),
    }
}

fn opt_string(v: Option<Json>, key: &str) -> Result<Option<String>, ModelError> {
    match v {
        None => Ok(None),
        Some(Json::String(s)) => Ok(Some(s)),
        Some(_) => Err(ModelError::field(key, "must be a string")),
    }
}

fn check_version(v: Option<Json>) -> Result<Option<Json>, ModelError> {
    let Some(v) = v else {
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

fn check_entries(
    section: Option<Section>,
    field: &str,
    reg: &Registry,
    constraints: bool,
) -> Result<Option<BTreeMap<String, Entry>>, ModelError> {
    let mut pairs = match section {
        None => return Ok(None),
        Some(Section::Other(_)) => return Err(ModelError::field(field, "must be an object")),
        Some(Section::Pairs(p)) => p,
    };
    if !pairs.is_sorted_by(|a, b| a.0 < b.0) {
        // checked in name order, a repeated name's last value winning, as JSON
        // objects are read
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut kept: Vec<(String, Json)> = Vec::with_capacity(pairs.len());
        for p in pairs {
            match kept.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => kept.push(p),
            }
        }
        pairs = kept;
    }
    let mut out = BTreeMap::new();
    for (name, raw) in pairs {
        check_scalar(&raw, field, &name)?;
        let prim = lookup(reg, &name)?;
        let text = wire_text(&raw);
        if constraints {
            Constraint::check(prim, &text).map_err(|source| ModelError::BadConstraint {
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

fn check_columns(results: Option<Json>, reg: &Registry) -> Result<Option<Vec<Column>>, ModelError> {
    match results {
        None => Ok(None),
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
                let prim = lookup(reg, &name)?;
                cols.push(Column { name, prim });
            }
            Ok(Some(cols))
        }
        Some(_) => Err(ModelError::field("results", "must be an array")),
    }
}

fn check_rows(rows: Option<RowsRead>, cols: &[Column]) -> Result<Option<Rows>, ModelError> {
    let bad_value = |col: &Column, source: crate::value::ValueError| ModelError::BadValue {
        element: col.name.clone(),
        source,
    };
    match rows {
        None => Ok(None),
        Some(RowsRead::Rows(rows)) => {
            for (i, row) in rows.iter().enumerate() {
                if row.len() != cols.len() {
                    return Err(ModelError::RowWidth {
                        row: i,
                        expected: cols.len(),
                        got: row.len(),
                    });
                }
                for (cell, col) in row.iter().zip(cols) {
                    Value::check(col.prim, cell.text()).map_err(|e| bad_value(col, e))?;
                }
            }
            Ok(Some(rows))
        }
        Some(RowsRead::Other(Json::Array(a))) => {
            // not all rows are arrays of scalars: find the first fault in order
            let mut rows = Rows::new();
            for (i, row) in a.into_iter().enumerate() {
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
                    Value::check(col.prim, &wire_text(cell)).map_err(|e| bad_value(col, e))?;
                    match cell {
                        Json::String(s) => rows.push_str(s)?,
                        Json::Bool(b) => rows.push_bool(*b)?,
                        Json::Number(n) => {
                            let mut t = String::new();
                            json::write_number(n, &mut t);
                            rows.push_number(&t)?;
                        }
                        _ => unreachable!("checked scalar"),
                    }
                }
                rows.end_row()?;
            }
            Ok(Some(rows))
        }
        Some(RowsRead::Other(_)) => Err(ModelError::field(
            "resultvalues",
            "must be an array of rows",
        )),
    }
}

impl Members {
    /// Moves every member still held into `extra` (the kind did not use them).
    fn spill(mut self, r: &mut Reader<'_>, depth: usize) -> Result<Map<String, Json>, ModelError> {
        let mut extra = std::mem::take(&mut self.extra);
        for (i, v) in self.kinds.into_iter().enumerate() {
            if let Some(v) = v {
                extra.insert(KINDS[i].0.to_string(), v);
            }
        }
        let mut put = |k: &str, v: Option<Json>| {
            if let Some(v) = v {
                extra.insert(k.to_string(), v);
            }
        };
        put("version", self.version);
        put("registry", self.registry);
        put("label", self.label);
        put("link", self.link);
        put("export", self.export);
        put("token", self.token);
        put("when", self.when);
        put("message", self.message);
        put("results", self.results);
        if let Some(s) = self.parameters {
            extra.insert("parameters".into(), s.into_json());
        }
        if let Some(s) = self.metadata {
            extra.insert("metadata".into(), s.into_json());
        }
        if let Some(rv) = self.resultvalues {
            extra.insert("resultvalues".into(), rv.into_json());
        }
        if let Some(at) = self.contents {
            r.rewind(at);
            extra.insert("contents".into(), r.value(depth)?);
        }
        Ok(extra)
    }
}

fn build_statement(
    kind: StatementKind,
    k: usize,
    mut m: Members,
    r: &mut Reader<'_>,
    registries: &Registries,
    depth: usize,
) -> Result<Statement, ModelError> {
    let verb = match m.kinds[k].take() {
        Some(Json::String(s)) => s,
        _ => return Err(ModelError::field(kind.key(), "the verb must be a string")),
    };
    let version = check_version(m.version.take())?;
    let registry = opt_string(m.registry.take(), "registry")?;
    let reg = registries.resolve(registry.as_deref().unwrap_or(CORE_URI))?;
    let label = opt_string(m.label.take(), "label")?;
    let link = opt_string(m.link.take(), "link")?;
    let export = opt_string(m.export.take(), "export")?;
    let token = opt_string(m.token.take(), "token")?;
    let when = opt_string(m.when.take(), "when")?
        .map(WhenText::from_string)
        .transpose()?;
    let parameters = check_entries(
        m.parameters.take(),
        "parameters",
        reg,
        kind.has_constraints(),
    )?;
    let metadata = check_entries(m.metadata.take(), "metadata", reg, false)?;
    let results = check_columns(m.results.take(), reg)?;
    let resultvalues = check_rows(m.resultvalues.take(), results.as_deref().unwrap_or(&[]))?;
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
        extra: m.spill(r, depth)?,
    })
}

fn build_exception(
    mut m: Members,
    r: &mut Reader<'_>,
    depth: usize,
) -> Result<Exception, ModelError> {
    let token = match m.kinds[7].take() {
        Some(Json::String(s)) => Some(s),
        Some(Json::Null) | None => None,
        Some(_) => {
            return Err(ModelError::field(
                "exception",
                "must be a string token or null",
            ));
        }
    };
    let message = match m.message.take() {
        Some(Json::String(s)) => s,
        Some(_) => return Err(ModelError::field("message", "must be a string")),
        None => return Err(ModelError::field("message", "missing")),
    };
    Ok(Exception {
        token,
        message,
        extra: m.spill(r, depth)?,
    })
}

fn build_envelope(
    mut m: Members,
    r: &mut Reader<'_>,
    registries: &Registries,
    envelopes: usize,
    depth: usize,
) -> Result<Envelope, ModelError> {
    if envelopes >= MAX_ENVELOPE_DEPTH {
        return Err(ModelError::TooDeep(MAX_ENVELOPE_DEPTH));
    }
    let content_type = opt_string(m.kinds[8].take(), "envelope")?.unwrap_or_default();
    let version = check_version(m.version.take())?;
    let token = opt_string(m.token.take(), "token")?;
    let label = opt_string(m.label.take(), "label")?;
    let when = opt_string(m.when.take(), "when")?
        .map(WhenText::from_string)
        .transpose()?;
    let Some(at) = m.contents.take() else {
        return Err(ModelError::field("contents", "missing"));
    };
    r.rewind(at);
    if r.peek_ws() != Some(b'[') {
        return Err(ModelError::field("contents", "must be an array"));
    }
    let mut contents = Vec::new();
    r.array(depth + 1, |r| {
        contents.push(read_message(
            r,
            registries,
            envelopes + 1,
            depth + 1,
            false,
        )?);
        Ok(())
    })?;
    Ok(Envelope {
        content_type,
        version,
        contents,
        token,
        when,
        label,
        extra: m.spill(r, depth)?,
    })
}

// ---------------------------------------------------------------------------
// Writing

/// Writes one object whose known members come in key order, merging in the
/// unknown members kept in `extra` (a known member wins over an unknown one of
/// the same name), so that the whole object is in key order without sorting.
struct ObjectWriter<'w, 'e> {
    w: &'w mut Writer,
    extra: std::iter::Peekable<serde_json::map::Iter<'e>>,
    n: usize,
}

impl<'w, 'e> ObjectWriter<'w, 'e> {
    /// Starts an object; every caller writes at least one member.
    fn begin(w: &'w mut Writer, extra: &'e Map<String, Json>) -> Self {
        w.begin_object(1);
        ObjectWriter {
            w,
            extra: extra.iter().peekable(),
            n: 0,
        }
    }

    fn key(&mut self, k: &str) -> &mut Writer {
        while let Some((ek, ev)) = self.extra.peek() {
            match ek.as_str().cmp(k) {
                std::cmp::Ordering::Less => {
                    self.w.key(self.n, ek);
                    self.w.value(ev);
                    self.n += 1;
                    self.extra.next();
                }
                std::cmp::Ordering::Equal => {
                    self.extra.next();
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        self.w.key(self.n, k);
        self.n += 1;
        self.w
    }

    fn str(&mut self, k: &str, v: &str) {
        self.key(k).string(v);
    }

    fn opt_str(&mut self, k: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.str(k, v);
        }
    }

    fn entries(&mut self, k: &str, m: &BTreeMap<String, Entry>) {
        let w = self.key(k);
        w.begin_object(m.len());
        for (j, (name, e)) in m.iter().enumerate() {
            w.key(j, name);
            match &e.raw {
                Json::String(s) => w.string(s),
                other => w.value(other),
            }
        }
        w.end_object(m.len());
    }

    fn end(mut self) {
        for (ek, ev) in self.extra.by_ref() {
            self.w.key(self.n, ek);
            self.w.value(ev);
            self.n += 1;
        }
        self.w.end_object(1);
    }
}

impl Message {
    /// Writes the message as the reference does (sorted keys, two-space
    /// indent, no trailing newline).
    pub fn unparse(&self) -> String {
        let mut w = Writer::with_capacity(self.size_hint());
        self.write(&mut w, false);
        w.finish()
    }

    /// Writes receipts, redemptions, withdrawals and interrupts in token-only
    /// form (without `parameters`, `metadata`, `results`, `link`, `when`), as
    /// the reference's `unparse_json(token_only=True)`.
    pub fn unparse_token_only(&self) -> String {
        let mut w = Writer::with_capacity(512);
        self.write(&mut w, true);
        w.finish()
    }

    /// A guess of the written size, to allocate the output once.
    fn size_hint(&self) -> usize {
        match self {
            Message::Statement(s) => {
                let rows = s
                    .resultvalues
                    .as_ref()
                    .map_or(0, |r| r.text_len() + r.len() * (8 + 12 * s.columns().len()));
                1024 + rows
            }
            Message::Exception(e) => 128 + e.message.len(),
            Message::Envelope(e) => 256 + e.contents.iter().map(Message::size_hint).sum::<usize>(),
        }
    }

    fn write(&self, w: &mut Writer, token_only: bool) {
        match self {
            Message::Statement(s) => s.write(w, token_only),
            Message::Exception(e) => {
                let mut o = ObjectWriter::begin(w, &e.extra);
                match &e.token {
                    Some(t) => o.str("exception", t),
                    None => o.key("exception").null(),
                }
                o.str("message", &e.message);
                o.end();
            }
            Message::Envelope(e) => {
                let mut o = ObjectWriter::begin(w, &e.extra);
                let w = o.key("contents");
                w.begin_array(e.contents.len());
                for (j, m) in e.contents.iter().enumerate() {
                    w.item(j);
                    m.write(w, token_only);
                }
                w.end_array(e.contents.len());
                o.str("envelope", &e.content_type);
                o.opt_str("label", e.label.as_deref());
                o.opt_str("token", e.token.as_deref());
                if let Some(v) = &e.version {
                    o.key("version").value(v);
                }
                o.opt_str("when", e.when.as_ref().map(|t| t.text.as_str()));
                o.end();
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
    pub fn rows(&self) -> &Rows {
        self.resultvalues.as_ref().unwrap_or(&NO_ROWS)
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
            Constraint::check(prim, text).map_err(|source| ModelError::BadConstraint {
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
        let rows = self.resultvalues.get_or_insert_with(Rows::new);
        for v in row {
            let text = rows.text_mut();
            match v {
                Some(v) => {
                    use std::fmt::Write as _;
                    let _ = write!(text, "{v}");
                }
                None => text.push_str(NONE),
            }
            if let Err(e) = rows.end_str_cell() {
                rows.truncate_open_row();
                return Err(e);
            }
        }
        rows.end_row()?;
        Ok(self)
    }

    /// Appends a row of already formatted cells (the caller guarantees the
    /// primitive forms; used by services that format in bulk).
    pub fn push_row_text<S: AsRef<str>>(&mut self, cells: &[S]) -> Result<&mut Self, ModelError> {
        if cells.len() != self.columns().len() {
            return Err(ModelError::RowWidth {
                row: self.rows().len(),
                expected: self.columns().len(),
                got: cells.len(),
            });
        }
        let rows = self.resultvalues.get_or_insert_with(Rows::new);
        for c in cells {
            if let Err(e) = rows.push_str(c.as_ref()) {
                rows.truncate_open_row();
                return Err(e);
            }
        }
        rows.end_row()?;
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
        use StatementKind as K;
        let notif = !matches!(self.kind, K::Capability | K::Specification | K::Result);
        let body = !(token_only && notif && self.token.is_some());
        let mut o = ObjectWriter::begin(w, &self.extra);
        // members in key order; the kind key takes its place among them
        let verb = |o: &mut ObjectWriter<'_, '_>, k: StatementKind| {
            if self.kind == k {
                o.str(k.key(), &self.verb);
            }
        };
        verb(&mut o, K::Capability);
        o.opt_str("export", self.export.as_deref());
        verb(&mut o, K::Interrupt);
        o.opt_str("label", self.label.as_deref());
        if body {
            o.opt_str("link", self.link.as_deref());
            if let Some(m) = &self.metadata {
                o.entries("metadata", m);
            }
            if let Some(m) = &self.parameters {
                o.entries("parameters", m);
            }
        }
        verb(&mut o, K::Receipt);
        verb(&mut o, K::Redemption);
        o.opt_str("registry", self.registry.as_deref());
        verb(&mut o, K::Result);
        if let (true, Some(cols)) = (body, &self.results) {
            let w = o.key("results");
            w.begin_array(cols.len());
            for (j, c) in cols.iter().enumerate() {
                w.item(j);
                w.string(&c.name);
            }
            w.end_array(cols.len());
        }
        if let Some(rows) = &self.resultvalues {
            o.key("resultvalues").rows(rows);
        }
        verb(&mut o, K::Specification);
        o.opt_str("token", self.token.as_deref());
        if let Some(v) = &self.version {
            o.key("version").value(v);
        }
        if body {
            o.opt_str("when", self.when.as_ref().map(|t| t.text.as_str()));
        }
        verb(&mut o, K::Withdrawal);
        o.end();
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
