//! A JSON writer that produces exactly the bytes of the reference's
//! `json.dumps(obj, sort_keys=True, indent=2, separators=(',', ': '))`:
//! keys sorted at every level, two-space indent, `"key": value`, empty
//! containers as `{}`/`[]`, non-ASCII (and DEL) escaped as lowercase `\uXXXX`
//! (surrogate pairs above U+FFFF), floats as Python `repr`, no trailing newline.

use std::fmt::Write as _;

use serde_json::Value as Json;

use crate::value::write_real;

/// Output buffer with the current indentation.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    pub(crate) out: String,
    depth: usize,
}

impl Writer {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Writer {
            out: String::with_capacity(n),
            depth: 0,
        }
    }

    fn newline(&mut self) {
        self.out.push('\n');
        for _ in 0..self.depth {
            self.out.push_str("  ");
        }
    }

    /// Opens an object; `n` is the number of members that will follow.
    pub(crate) fn begin_object(&mut self, n: usize) {
        self.out.push('{');
        if n > 0 {
            self.depth += 1;
        }
    }

    /// Writes the key of member `i` (0-based) of the current object.
    pub(crate) fn key(&mut self, i: usize, k: &str) {
        if i > 0 {
            self.out.push(',');
        }
        self.newline();
        self.string(k);
        self.out.push_str(": ");
    }

    pub(crate) fn end_object(&mut self, n: usize) {
        self.end_container(n, '}');
    }

    pub(crate) fn begin_array(&mut self, n: usize) {
        self.out.push('[');
        if n > 0 {
            self.depth += 1;
        }
    }

    pub(crate) fn item(&mut self, i: usize) {
        if i > 0 {
            self.out.push(',');
        }
        self.newline();
    }

    pub(crate) fn end_array(&mut self, n: usize) {
        self.end_container(n, ']');
    }

    fn end_container(&mut self, n: usize, c: char) {
        if n > 0 {
            self.depth -= 1;
            self.newline();
        }
        self.out.push(c);
    }

    /// Writes a JSON string literal with Python's `ensure_ascii` escaping.
    pub(crate) fn string(&mut self, s: &str) {
        let out = &mut self.out;
        out.reserve(s.len() + 2);
        out.push('"');
        if s.is_ascii() {
            let bytes = s.as_bytes();
            let mut start = 0;
            for (i, &b) in bytes.iter().enumerate() {
                if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
                    continue;
                }
                out.push_str(&s[start..i]);
                escape_ascii(b, out);
                start = i + 1;
            }
            out.push_str(&s[start..]);
        } else {
            for c in s.chars() {
                if c.is_ascii() {
                    let b = c as u8;
                    if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
                        out.push(c);
                    } else {
                        escape_ascii(b, out);
                    }
                } else {
                    let mut buf = [0u16; 2];
                    for unit in c.encode_utf16(&mut buf) {
                        let _ = write!(out, "\\u{unit:04x}");
                    }
                }
            }
        }
        out.push('"');
    }

    /// Writes any JSON value (objects with sorted keys).
    pub(crate) fn value(&mut self, v: &Json) {
        match v {
            Json::Null => self.out.push_str("null"),
            Json::Bool(true) => self.out.push_str("true"),
            Json::Bool(false) => self.out.push_str("false"),
            Json::Number(n) => {
                if let Some(i) = n.as_i64() {
                    let _ = write!(self.out, "{i}");
                } else if let Some(u) = n.as_u64() {
                    let _ = write!(self.out, "{u}");
                } else if let Some(f) = n.as_f64() {
                    write_real(f, &mut self.out);
                }
            }
            Json::String(s) => self.string(s),
            Json::Array(a) => {
                self.begin_array(a.len());
                for (i, x) in a.iter().enumerate() {
                    self.item(i);
                    self.value(x);
                }
                self.end_array(a.len());
            }
            Json::Object(m) => {
                // serde_json's Map is ordered by key (byte order = code point order,
                // which is Python's str ordering).
                self.begin_object(m.len());
                for (i, (k, x)) in m.iter().enumerate() {
                    self.key(i, k);
                    self.value(x);
                }
                self.end_object(m.len());
            }
        }
    }
}

fn escape_ascii(b: u8, out: &mut String) {
    match b {
        b'"' => out.push_str("\\\""),
        b'\\' => out.push_str("\\\\"),
        b'\n' => out.push_str("\\n"),
        b'\r' => out.push_str("\\r"),
        b'\t' => out.push_str("\\t"),
        0x08 => out.push_str("\\b"),
        0x0c => out.push_str("\\f"),
        _ => {
            let _ = write!(out, "\\u{b:04x}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dump(v: &Json) -> String {
        let mut w = Writer::default();
        w.value(v);
        w.out
    }

    #[test]
    fn python_layout() {
        let v: Json =
            serde_json::from_str(r#"{"b":[1,"x",[]],"a":{},"c":{"z":null,"y":1.5e-7}}"#).unwrap();
        assert_eq!(
            dump(&v),
            "{\n  \"a\": {},\n  \"b\": [\n    1,\n    \"x\",\n    []\n  ],\n  \"c\": {\n    \"y\": 1.5e-07,\n    \"z\": null\n  }\n}"
        );
    }

    #[test]
    fn ensure_ascii_escapes() {
        let v = Json::String("é\u{7f}\u{1}\"\\\n😀".into());
        assert_eq!(dump(&v), r#""\u00e9\u007f\u0001\"\\\n\ud83d\ude00""#);
    }
}
