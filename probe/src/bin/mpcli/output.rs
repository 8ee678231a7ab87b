//! What `mpcli` prints: capability summaries, and results as a table, CSV or mPlane JSON.

use std::fmt::Write;

use mplane::model::{Message, Statement, StatementKind};

/// How results print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Columns aligned under their element names.
    Table,
    /// RFC 4180 CSV with a header row of element names.
    Csv,
    /// The reply as the component sent it (mPlane JSON).
    Json,
}

/// A capability's parameters and their constraints: `name: constraint, ...`.
pub fn parameters(cap: &Statement) -> String {
    let all: Vec<String> = cap
        .parameter_names()
        .map(|n| {
            let c = cap.parameter(n).map(|e| e.text().into_owned());
            format!("{n}: {}", c.unwrap_or_default())
        })
        .collect();
    if all.is_empty() {
        "none".into()
    } else {
        all.join(", ")
    }
}

/// Several lines per capability: label and verb, then scope, parameters, results, link and
/// token.
pub fn summary(caps: &[Statement]) -> String {
    let mut out = String::new();
    for (i, c) in caps.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{} ({})",
            c.label.as_deref().unwrap_or("(no label)"),
            c.verb
        );
        let when = c.when.as_ref().map_or("past ... future", |w| w.text());
        let _ = writeln!(out, "  when        {when}");
        let _ = writeln!(out, "  parameters  {}", parameters(c));
        let results: Vec<&str> = c.columns().iter().map(|r| r.name.as_str()).collect();
        let _ = writeln!(out, "  results     {}", results.join(", "));
        if c.registry.is_some() {
            let _ = writeln!(out, "  registry    {}", c.registry_uri());
        }
        if let Some(link) = &c.link {
            let _ = writeln!(out, "  link        {link}");
        }
        if let Some(token) = &c.token {
            let _ = writeln!(out, "  token       {token}");
        }
    }
    out
}

/// The results of `reply` (a result, or an envelope of them) in `format`.
pub fn results(reply: &Message, format: Format) -> String {
    if format == Format::Json {
        return reply.unparse() + "\n";
    }
    let mut results = Vec::new();
    collect(reply, &mut results);
    let mut out = String::new();
    for (i, r) in results.iter().enumerate() {
        let header: Vec<&str> = r.columns().iter().map(|c| c.name.as_str()).collect();
        let rows: Vec<Vec<&str>> = r
            .rows()
            .iter()
            .map(|row| row.iter().map(|c| c.text()).collect())
            .collect();
        match format {
            Format::Csv => {
                // one header for the results of a repeated specification: they share it
                if i == 0 {
                    csv_line(&mut out, &header);
                }
                for row in &rows {
                    csv_line(&mut out, row);
                }
            }
            _ => {
                if i > 0 {
                    out.push('\n');
                }
                table(&mut out, &header, &rows);
            }
        }
    }
    out
}

/// The files the results in `reply` name, with their sizes where stated: the rows of an
/// `export.url` column (with `export.bytes`), and an `export.url` metadata entry (a result
/// too large to be inline, exported whole).
pub fn export_files(reply: &Message) -> Vec<(String, Option<u64>)> {
    let mut results = Vec::new();
    collect(reply, &mut results);
    let mut out = Vec::new();
    for r in results {
        let col = |name: &str| r.columns().iter().position(|c| c.name == name);
        if let Some(u) = col("export.url") {
            let bytes = col("export.bytes");
            for row in r.rows().iter() {
                let size = bytes.and_then(|b| row.get(b)?.text().parse().ok());
                if let Some(url) = row.get(u) {
                    out.push((url.text().to_string(), size));
                }
            }
        }
        if let Some(e) = r.metadata("export.url") {
            out.push((e.text().into_owned(), None));
        }
    }
    out
}

/// The results in `m`, envelopes opened.
fn collect<'a>(m: &'a Message, out: &mut Vec<&'a Statement>) {
    match m {
        Message::Statement(s) if s.kind == StatementKind::Result => out.push(s),
        Message::Envelope(e) => e.contents.iter().for_each(|c| collect(c, out)),
        _ => {}
    }
}

/// Columns padded to their widest cell (in characters), two spaces apart.
fn table(out: &mut String, header: &[&str], rows: &[Vec<&str>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (j, (cell, w)) in cells.iter().zip(&width).enumerate() {
            if j + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header);
    for row in rows {
        line(row);
    }
    if rows.is_empty() {
        out.push_str("(no rows)\n");
    }
}

/// One CSV record: fields with a comma, quote or line break quoted, quotes doubled.
fn csv_line(out: &mut String, cells: &[&str]) {
    for (j, cell) in cells.iter().enumerate() {
        if j > 0 {
            out.push(',');
        }
        if cell.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&cell.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(cell);
        }
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_what_needs_it() {
        let mut s = String::new();
        csv_line(&mut s, &["a", "b,c", "say \"hi\"", "x\ny", ""]);
        assert_eq!(s, "a,\"b,c\",\"say \"\"hi\"\"\",\"x\ny\",\r\n");
    }

    #[test]
    fn table_aligns_by_characters() {
        let mut s = String::new();
        table(
            &mut s,
            &["time", "name"],
            &[vec!["1", "π"], vec!["22222", "b"]],
        );
        assert_eq!(s, "time   name\n1      π\n22222  b\n");
        let mut s = String::new();
        table(&mut s, &["a", "b"], &[]);
        assert_eq!(s, "a  b\n(no rows)\n");
    }
}
