//! Result rows: the cells of a result's `resultvalues`, all in one text buffer.
//!
//! A 1,000-row result holds thousands of cells; one allocation per cell (a JSON value each)
//! would cost more than reading and writing them. [`Rows`] keeps every cell's text end to end
//! in one string, with the end offset and kind of each cell and the end of each row.

use std::fmt;

use serde_json::Value as Json;

use super::ModelError;

/// A cell as it was on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell<'a> {
    /// A JSON string (the reference writes every value as one): its text, unescaped.
    Str(&'a str),
    /// A JSON number, as it is written back (Python's `repr` for reals).
    Number(&'a str),
    /// A JSON boolean.
    Bool(bool),
}

impl<'a> Cell<'a> {
    /// The text of a string cell.
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            Cell::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value's text as a primitive reads it: a string's text, a number's digits, a
    /// boolean as `True`/`False` (the reference's spelling).
    pub fn text(self) -> &'a str {
        match self {
            Cell::Str(s) | Cell::Number(s) => s,
            Cell::Bool(true) => "True",
            Cell::Bool(false) => "False",
        }
    }

    /// The cell as a JSON value.
    pub fn to_json(self) -> Json {
        match self {
            Cell::Str(s) => Json::String(s.to_string()),
            Cell::Number(n) => serde_json::from_str(n).unwrap_or(Json::Null),
            Cell::Bool(b) => Json::Bool(b),
        }
    }
}

/// A cell equals a text if it is a string cell holding it (as a JSON value would).
impl PartialEq<&str> for Cell<'_> {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl PartialEq<str> for Cell<'_> {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == Some(other)
    }
}

impl fmt::Display for Cell<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

/// How a cell's text is written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Str,
    Number,
    True,
    False,
}

/// The end of one cell's text and its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    end: u32,
    kind: Kind,
}

/// The rows of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rows {
    text: String,
    cells: Vec<Span>,
    row_ends: Vec<u32>,
}

/// No rows, for statements without `resultvalues`.
pub(crate) static NO_ROWS: Rows = Rows::new();

impl Rows {
    /// No rows.
    pub const fn new() -> Self {
        Rows {
            text: String::new(),
            cells: Vec::new(),
            row_ends: Vec::new(),
        }
    }

    /// Room for `rows` rows of `cells` cells with `bytes` of text.
    pub fn with_capacity(rows: usize, cells: usize, bytes: usize) -> Self {
        Rows {
            text: String::with_capacity(bytes),
            cells: Vec::with_capacity(cells),
            row_ends: Vec::with_capacity(rows),
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.row_ends.len()
    }

    /// True if there is no row.
    pub fn is_empty(&self) -> bool {
        self.row_ends.is_empty()
    }

    /// Row `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<Row<'_>> {
        let end = *self.row_ends.get(i)? as usize;
        let first = if i == 0 {
            0
        } else {
            self.row_ends[i - 1] as usize
        };
        Some(Row {
            rows: self,
            first,
            end,
        })
    }

    /// Row `i`.
    ///
    /// # Panics
    /// If there is no row `i`.
    pub fn row(&self, i: usize) -> Row<'_> {
        self.get(i)
            .unwrap_or_else(|| panic!("row {i} of {}", self.len()))
    }

    /// The rows in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Row<'_>> + '_ {
        (0..self.len()).map(|i| self.row(i))
    }

    /// Bytes of cell text held.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    fn cell(&self, i: usize) -> Cell<'_> {
        let start = if i == 0 {
            0
        } else {
            self.cells[i - 1].end as usize
        };
        let span = self.cells[i];
        let text = &self.text[start..span.end as usize];
        match span.kind {
            Kind::Str => Cell::Str(text),
            Kind::Number => Cell::Number(text),
            Kind::True => Cell::Bool(true),
            Kind::False => Cell::Bool(false),
        }
    }

    /// The buffer a string cell's text is appended to, before [`Rows::end_str_cell`].
    pub(crate) fn text_mut(&mut self) -> &mut String {
        &mut self.text
    }

    fn end_cell(&mut self, kind: Kind) -> Result<(), ModelError> {
        let end =
            u32::try_from(self.text.len()).map_err(|_| ModelError::TooLarge(self.text.len()))?;
        self.cells.push(Span { end, kind });
        Ok(())
    }

    /// Ends a string cell whose text was appended to [`Rows::text_mut`].
    pub(crate) fn end_str_cell(&mut self) -> Result<(), ModelError> {
        self.end_cell(Kind::Str)
    }

    /// Appends a string cell.
    pub fn push_str(&mut self, s: &str) -> Result<(), ModelError> {
        self.text.push_str(s);
        self.end_cell(Kind::Str)
    }

    /// Appends a number cell, `text` being its JSON form as written back.
    pub(crate) fn push_number(&mut self, text: &str) -> Result<(), ModelError> {
        self.text.push_str(text);
        self.end_cell(Kind::Number)
    }

    /// Appends a boolean cell.
    pub(crate) fn push_bool(&mut self, b: bool) -> Result<(), ModelError> {
        self.end_cell(if b { Kind::True } else { Kind::False })
    }

    /// Ends the current row (the cells pushed since the previous row ended).
    pub fn end_row(&mut self) -> Result<(), ModelError> {
        let n =
            u32::try_from(self.cells.len()).map_err(|_| ModelError::TooLarge(self.cells.len()))?;
        self.row_ends.push(n);
        Ok(())
    }

    /// Drops the cells pushed since the last row ended (a row abandoned halfway).
    pub(crate) fn truncate_open_row(&mut self) {
        let n = self.row_ends.last().copied().unwrap_or(0) as usize;
        let text_end = if n == 0 {
            0
        } else {
            self.cells[n - 1].end as usize
        };
        self.cells.truncate(n);
        self.text.truncate(text_end);
    }

    /// The rows as a JSON array of arrays.
    pub fn to_json(&self) -> Json {
        Json::Array(
            self.iter()
                .map(|r| Json::Array(r.iter().map(Cell::to_json).collect()))
                .collect(),
        )
    }
}

/// One row of [`Rows`].
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    rows: &'a Rows,
    first: usize,
    end: usize,
}

impl<'a> Row<'a> {
    /// Number of cells.
    pub fn len(&self) -> usize {
        self.end - self.first
    }

    /// True if the row has no cell.
    pub fn is_empty(&self) -> bool {
        self.end == self.first
    }

    /// Cell `j`, if there is one.
    pub fn get(&self, j: usize) -> Option<Cell<'a>> {
        (j < self.len()).then(|| self.rows.cell(self.first + j))
    }

    /// Cell `j`.
    ///
    /// # Panics
    /// If the row has no cell `j`.
    pub fn cell(&self, j: usize) -> Cell<'a> {
        self.get(j)
            .unwrap_or_else(|| panic!("cell {j} of a row of {}", self.len()))
    }

    /// The cells in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Cell<'a>> + 'a {
        let rows = self.rows;
        (self.first..self.end).map(move |i| rows.cell(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_and_rows() {
        let mut r = Rows::new();
        r.push_str("2015-01-01 00:00:00.000000").unwrap();
        r.push_number("1.5").unwrap();
        r.end_row().unwrap();
        r.push_str("").unwrap();
        r.push_bool(true).unwrap();
        r.end_row().unwrap();
        r.push_str("half a row").unwrap();
        r.truncate_open_row();
        assert_eq!(r.len(), 2);
        assert_eq!(
            r.row(0).cell(0).as_str(),
            Some("2015-01-01 00:00:00.000000")
        );
        assert_eq!(r.row(0).cell(1), Cell::Number("1.5"));
        assert_eq!(r.row(1).cell(0), Cell::Str(""));
        assert_eq!(r.row(1).cell(1).text(), "True");
        assert!(r.row(1).get(2).is_none());
        assert!(r.get(2).is_none());
        assert_eq!(
            r.to_json(),
            serde_json::json!([["2015-01-01 00:00:00.000000", 1.5], ["", true]])
        );
    }
}
