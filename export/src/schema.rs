//! mPlane result schema → Arrow schema.
//!
//! A result's columns are mPlane elements in the order the specification
//! lists them. Each becomes one nullable Arrow field (`*`, the mPlane "no
//! value", is null):
//!
//! | primitive | Arrow type | DuckDB sees |
//! |---|---|---|
//! | `natural` | `UInt64` | `UBIGINT` |
//! | `real` | `Float64` | `DOUBLE` |
//! | `boolean` | `Boolean` | `BOOLEAN` |
//! | `time` | `Timestamp(Nanosecond, "UTC")` | `TIMESTAMPTZ_NS` (TIMESTAMP WITH TIME ZONE, ns exact) |
//! | `address` | `Utf8` (text form) | `VARCHAR` |
//! | `string`, `url` | `Utf8` | `VARCHAR` |
//!
//! DuckDB 2.0 reads the time columns as `TIMESTAMPTZ_NS` and keeps the
//! nanoseconds (`epoch_ns()` is exact); casting to `TIMESTAMPTZ` gives the
//! µs `TIMESTAMP WITH TIME ZONE`. pyarrow reads `timestamp[ns, tz=UTC]`.
//!
//! Addresses are stored as their text form (dotted quad, RFC 5952 IPv6),
//! the same text the mPlane JSON carries: analysts can filter and join on
//! them in any SQL engine without a UDF, where `FixedSizeBinary(16)` would
//! show as an opaque `BLOB`. Parquet's dictionary/ZSTD encoding keeps the
//! cost close to the binary form for repetitive addresses.
//!
//! Column names are the element names with `.` replaced by `_` (the mPlane
//! specification allows this for SQL contexts). Each field's Arrow metadata
//! keeps the original element name under [`FIELD_ELEMENT_KEY`] and the
//! primitive under [`FIELD_PRIMITIVE_KEY`]; these live in the `ARROW:schema`
//! footer entry that pyarrow and arrow-rs read. Because DuckDB cannot see
//! field metadata, the element list is also written as explicit footer
//! key-value metadata (see [`crate::metadata`]).

use std::collections::HashMap;
use std::collections::HashSet;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use mplane::registry::{CORE_URI, Primitive, Registries, Registry};
use serde_json::Value as Json;

use crate::ExportError;

/// Arrow field metadata key holding the original mPlane element name.
pub const FIELD_ELEMENT_KEY: &str = "mplane.element";
/// Arrow field metadata key holding the element's primitive name.
pub const FIELD_PRIMITIVE_KEY: &str = "mplane.prim";

/// The time zone of every time column.
pub const TIME_ZONE: &str = "UTC";

/// The SQL-safe column name of an element: dots become underscores.
pub fn column_name(element: &str) -> String {
    element.replace('.', "_")
}

/// The Arrow type a primitive maps to (see the module table).
pub fn arrow_type(prim: Primitive) -> DataType {
    match prim {
        Primitive::Natural => DataType::UInt64,
        Primitive::Real => DataType::Float64,
        Primitive::Boolean => DataType::Boolean,
        Primitive::Time => DataType::Timestamp(TimeUnit::Nanosecond, Some(TIME_ZONE.into())),
        Primitive::Address | Primitive::String | Primitive::Url => DataType::Utf8,
    }
}

/// One result column: an element, its primitive and its column name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// The mPlane element name, e.g. `octets.ip`.
    pub element: String,
    /// Its primitive.
    pub prim: Primitive,
    /// Column name in files (`octets_ip`).
    pub name: String,
}

/// An ordered mPlane result schema and the Arrow schema it maps to.
///
/// Cheap to share: wrap in an `Arc` and hand to every
/// [`ColumnsBuilder`](crate::ColumnsBuilder) and sink of a job.
#[derive(Debug, Clone)]
pub struct ExportSchema {
    columns: Vec<Column>,
    by_element: HashMap<String, usize>,
    arrow: SchemaRef,
    registry: String,
}

impl ExportSchema {
    /// Maps result columns `elements` (in order), looking each up in `registry`
    /// (with its includes).
    pub fn from_registry<S: AsRef<str>>(
        registry: &Registry,
        elements: &[S],
    ) -> Result<Self, ExportError> {
        let mut cols = Vec::with_capacity(elements.len());
        for e in elements {
            let e = e.as_ref();
            let el = registry
                .element(e)
                .ok_or_else(|| ExportError::UnknownElement {
                    element: e.to_string(),
                    registry: registry.uri().to_string(),
                })?;
            cols.push((e.to_string(), el.prim));
        }
        Self::from_elements(registry.uri(), cols)
    }

    /// The result schema of an mPlane specification (or capability, or
    /// result) given as JSON: its `results` array, looked up in the registry
    /// its `registry` member names (the core registry when absent), which
    /// must be loaded in `registries`.
    pub fn from_statement(registries: &Registries, statement: &Json) -> Result<Self, ExportError> {
        let uri = statement
            .get("registry")
            .and_then(Json::as_str)
            .unwrap_or(CORE_URI);
        let registry = registries
            .get(uri)
            .ok_or_else(|| ExportError::UnknownRegistry(uri.to_string()))?;
        let results = statement
            .get("results")
            .and_then(Json::as_array)
            .ok_or(ExportError::EmptySchema)?;
        let mut names = Vec::with_capacity(results.len());
        for r in results {
            match r.as_str() {
                Some(n) => names.push(n),
                None => {
                    return Err(ExportError::UnknownElement {
                        element: r.to_string(),
                        registry: uri.to_string(),
                    });
                }
            }
        }
        Self::from_registry(registry, &names)
    }

    /// Builds a schema from explicit `(element, primitive)` pairs; `registry`
    /// is the URI recorded in file metadata.
    pub fn from_elements<I, S>(registry: &str, columns: I) -> Result<Self, ExportError>
    where
        I: IntoIterator<Item = (S, Primitive)>,
        S: Into<String>,
    {
        let mut cols = Vec::new();
        let mut names = HashSet::new();
        let mut by_element = HashMap::new();
        let mut fields = Vec::new();
        for (element, prim) in columns {
            let element: String = element.into();
            let name = column_name(&element);
            if !names.insert(name.clone()) {
                return Err(ExportError::DuplicateColumn {
                    column: name,
                    element,
                });
            }
            by_element.insert(element.clone(), cols.len());
            let md = HashMap::from([
                (FIELD_ELEMENT_KEY.to_string(), element.clone()),
                (FIELD_PRIMITIVE_KEY.to_string(), prim.name().to_string()),
            ]);
            fields.push(Field::new(name.clone(), arrow_type(prim), true).with_metadata(md));
            cols.push(Column {
                element,
                prim,
                name,
            });
        }
        if cols.is_empty() {
            return Err(ExportError::EmptySchema);
        }
        Ok(ExportSchema {
            columns: cols,
            by_element,
            arrow: Arc::new(Schema::new(fields)),
            registry: registry.to_string(),
        })
    }

    /// Marks the columns whose element `required` accepts as never null (Parquet `REQUIRED`:
    /// no definition levels to write or read). Appending a null to such a column makes
    /// [`ColumnsBuilder::finish`](crate::ColumnsBuilder::finish) fail.
    pub fn with_required(mut self, required: impl Fn(&str) -> bool) -> Self {
        let fields: Vec<Field> = self
            .arrow
            .fields()
            .iter()
            .zip(&self.columns)
            .map(|(f, c)| f.as_ref().clone().with_nullable(!required(&c.element)))
            .collect();
        self.arrow = Arc::new(Schema::new(fields));
        self
    }

    /// The columns, in result order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    /// Always false: a schema has at least one column.
    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// Index of the column holding `element`.
    pub fn index_of(&self, element: &str) -> Option<usize> {
        self.by_element.get(element).copied()
    }

    /// The Arrow schema (field metadata included).
    pub fn arrow(&self) -> &SchemaRef {
        &self.arrow
    }

    /// URI of the registry the elements come from.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Element names in column order.
    pub fn element_names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.element.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_core_elements() {
        let core = Registries::core();
        let s = ExportSchema::from_registry(
            &core,
            &["start", "source.ip4", "octets.ip", "delay.twoway.icmp.us"],
        )
        .unwrap();
        assert_eq!(s.registry(), CORE_URI);
        let f = s.arrow().fields();
        assert_eq!(f[0].name(), "start");
        assert_eq!(
            f[0].data_type(),
            &DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
        );
        assert_eq!(f[1].name(), "source_ip4");
        assert_eq!(f[1].data_type(), &DataType::Utf8);
        assert_eq!(f[1].metadata()[FIELD_ELEMENT_KEY], "source.ip4");
        assert_eq!(f[1].metadata()[FIELD_PRIMITIVE_KEY], "address");
        assert_eq!(f[2].data_type(), &DataType::UInt64);
        assert_eq!(s.index_of("octets.ip"), Some(2));
    }

    #[test]
    fn unknown_and_duplicate() {
        let core = Registries::core();
        assert!(matches!(
            ExportSchema::from_registry(&core, &["no.such.element"]),
            Err(ExportError::UnknownElement { .. })
        ));
        assert!(matches!(
            ExportSchema::from_elements(
                "x",
                [("a.b", Primitive::Natural), ("a_b", Primitive::Real)]
            ),
            Err(ExportError::DuplicateColumn { .. })
        ));
        assert!(matches!(
            ExportSchema::from_elements::<_, String>("x", []),
            Err(ExportError::EmptySchema)
        ));
    }

    #[test]
    fn from_specification_json() {
        let regs = Registries::new();
        let spec: Json = serde_json::json!({
            "specification": "measure",
            "results": ["start", "source.ip4", "packets.ip"]
        });
        let s = ExportSchema::from_statement(&regs, &spec).unwrap();
        assert_eq!(s.columns()[2].name, "packets_ip");
        assert_eq!(s.registry(), CORE_URI);
        let other = serde_json::json!({"registry": "http://x.invalid/r", "results": ["start"]});
        assert!(matches!(
            ExportSchema::from_statement(&regs, &other),
            Err(ExportError::UnknownRegistry(_))
        ));
        let none = serde_json::json!({"specification": "measure"});
        assert!(matches!(
            ExportSchema::from_statement(&regs, &none),
            Err(ExportError::EmptySchema)
        ));
    }

    #[test]
    fn all_primitives_have_types() {
        for p in Primitive::ALL {
            let _ = arrow_type(p);
        }
        assert_eq!(arrow_type(Primitive::Real), DataType::Float64);
        assert_eq!(arrow_type(Primitive::Boolean), DataType::Boolean);
        assert_eq!(arrow_type(Primitive::Url), DataType::Utf8);
    }
}
