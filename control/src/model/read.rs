//! A JSON reader over the message text, for the model's one-pass parser.
//!
//! It accepts exactly the JSON that `serde_json` accepts (RFC 8259: no trailing commas, no
//! comments, no leading zeros, no raw control characters in strings, no lone surrogates,
//! nesting up to 128 levels) and reports errors with the line and column, but it lets the
//! parser read each section straight into its typed form: strings without escapes are
//! borrowed from the input, result cells are unescaped into one shared buffer, and only
//! content the model does not know becomes a [`serde_json::Value`].

use std::borrow::Cow;

use serde_json::{Map, Number, Value as Json};

use super::ModelError;

/// Deepest nesting of arrays and objects accepted (`serde_json` refuses the 128th level).
pub(crate) const MAX_DEPTH: usize = 127;

/// A cursor over JSON text.
pub(crate) struct Reader<'a> {
    text: &'a str,
    pos: usize,
}

/// Bytes that end the fast scan of a string: `"`, `\` and control characters.
static STRING_STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// The offset of the first byte at or after `i` that ends the fast scan of a string (see
/// [`STRING_STOP`]), or `b.len()`.
#[inline]
fn string_stop(b: &[u8], i: usize) -> usize {
    use super::scan::{below, eq, first};
    first(
        b,
        i,
        |w| eq(w, b'"') | eq(w, b'\\') | below(w, 0x20),
        &STRING_STOP,
    )
}

impl<'a> Reader<'a> {
    /// A reader at the start of `text`.
    pub(crate) fn new(text: &'a str) -> Self {
        Reader { text, pos: 0 }
    }

    /// The byte offset of the cursor.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// Moves the cursor back to an offset it has been at.
    pub(crate) fn rewind(&mut self, pos: usize) {
        self.pos = pos;
    }

    /// A syntax error at the cursor: `what`, with its line and column.
    pub(crate) fn error(&self, what: &str) -> ModelError {
        let upto = &self.text.as_bytes()[..self.pos.min(self.text.len())];
        let line = 1 + upto.iter().filter(|&&b| b == b'\n').count();
        let column = 1 + upto.iter().rev().take_while(|&&b| b != b'\n').count();
        ModelError::Json(format!("{what} at line {line} column {column}"))
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    /// Skips whitespace (space, tab, line feed, carriage return).
    #[inline]
    pub(crate) fn ws(&mut self) {
        let b = self.text.as_bytes();
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = b.get(self.pos) {
            self.pos += 1;
            // indentation (the reference writes two spaces a level): spaces eight at a time
            while let Some(chunk) = b.get(self.pos..self.pos + 8) {
                let spaces =
                    u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])) ^ 0x2020_2020_2020_2020;
                if spaces != 0 {
                    self.pos += (spaces.trailing_zeros() / 8) as usize;
                    break;
                }
                self.pos += 8;
            }
        }
    }

    /// Skips whitespace and returns the next byte without consuming it.
    #[inline]
    pub(crate) fn peek_ws(&mut self) -> Option<u8> {
        self.ws();
        self.peek()
    }

    /// Checks that only whitespace is left.
    pub(crate) fn end(&mut self) -> Result<(), ModelError> {
        self.ws();
        if self.pos < self.text.len() {
            return Err(self.error("trailing characters"));
        }
        Ok(())
    }

    fn eof_or(&self, what: &str) -> ModelError {
        if self.pos >= self.text.len() {
            self.error("EOF while parsing a value")
        } else {
            self.error(what)
        }
    }

    /// Reads the members of an object, calling `f` with each key; `f` reads the value.
    /// The cursor must be at `{`; `depth` is the nesting of this object (1 for the top).
    pub(crate) fn object(
        &mut self,
        depth: usize,
        mut f: impl FnMut(&mut Self, Cow<'a, str>) -> Result<(), ModelError>,
    ) -> Result<(), ModelError> {
        self.sequence(depth, b'}', "expected `,` or `}`", |r| {
            if r.peek() != Some(b'"') {
                return Err(r.eof_or("key must be a string"));
            }
            let key = r.string()?;
            if r.peek_ws() != Some(b':') {
                return Err(r.eof_or("expected `:`"));
            }
            r.pos += 1;
            r.ws();
            f(r, key)
        })
    }

    /// Reads the elements of an array, calling `f` for each; `f` reads the element. The
    /// cursor must be at `[`; `depth` is the nesting of this array.
    pub(crate) fn array(
        &mut self,
        depth: usize,
        f: impl FnMut(&mut Self) -> Result<(), ModelError>,
    ) -> Result<(), ModelError> {
        self.sequence(depth, b']', "expected `,` or `]`", f)
    }

    /// The items of an object or array up to its `close`, separated by commas; `item` reads
    /// one (the cursor at its first byte).
    fn sequence(
        &mut self,
        depth: usize,
        close: u8,
        expected: &str,
        mut item: impl FnMut(&mut Self) -> Result<(), ModelError>,
    ) -> Result<(), ModelError> {
        if depth > MAX_DEPTH {
            return Err(self.error("recursion limit exceeded"));
        }
        self.pos += 1; // the opening bracket
        if self.peek_ws() == Some(close) {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.ws();
            item(self)?;
            match self.peek_ws() {
                Some(b',') => self.pos += 1,
                Some(c) if c == close => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.eof_or(expected)),
            }
        }
    }

    /// Reads a string literal (the cursor at its `"`), borrowed when it has no escapes.
    pub(crate) fn string(&mut self) -> Result<Cow<'a, str>, ModelError> {
        let b = self.text.as_bytes();
        let start = self.pos + 1;
        let i = string_stop(b, start);
        match b.get(i) {
            Some(b'"') => {
                self.pos = i + 1;
                Ok(Cow::Borrowed(&self.text[start..i]))
            }
            _ => {
                let mut out = String::with_capacity(i - start + 16);
                self.pos = start;
                self.string_rest(&mut out)?;
                Ok(Cow::Owned(out))
            }
        }
    }

    /// Reads a string literal (the cursor at its `"`) and appends its text to `out`.
    pub(crate) fn string_into(&mut self, out: &mut String) -> Result<(), ModelError> {
        self.pos += 1;
        self.string_rest(out)
    }

    /// The rest of a string literal after its opening quote, unescaped into `out`.
    fn string_rest(&mut self, out: &mut String) -> Result<(), ModelError> {
        let b = self.text.as_bytes();
        loop {
            let start = self.pos;
            let i = string_stop(b, start);
            out.push_str(&self.text[start..i]);
            self.pos = i;
            match b.get(i) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape(out)?;
                }
                Some(_) => {
                    return Err(self.error(
                        "control character (\\u0000-\\u001F) found while parsing a string",
                    ));
                }
                None => return Err(self.error("EOF while parsing a string")),
            }
        }
    }

    fn hex4(&mut self) -> Result<u16, ModelError> {
        let b = self.text.as_bytes();
        let mut v: u16 = 0;
        for _ in 0..4 {
            let d = match b.get(self.pos) {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                Some(_) => return Err(self.error("invalid escape")),
                None => return Err(self.error("EOF while parsing a string")),
            };
            v = (v << 4) | d as u16;
            self.pos += 1;
        }
        Ok(v)
    }

    /// One escape sequence, the cursor after its backslash.
    fn escape(&mut self, out: &mut String) -> Result<(), ModelError> {
        let Some(c) = self.peek() else {
            return Err(self.error("EOF while parsing a string"));
        };
        self.pos += 1;
        let ch = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4()?;
                match hi {
                    0xD800..=0xDBFF => {
                        let b = self.text.as_bytes();
                        if b.get(self.pos) != Some(&b'\\') || b.get(self.pos + 1) != Some(&b'u') {
                            return Err(self.error("lone leading surrogate in hex escape"));
                        }
                        self.pos += 2;
                        let lo = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(self.error("lone leading surrogate in hex escape"));
                        }
                        let cp = 0x10000 + (((hi as u32) - 0xD800) << 10) + ((lo as u32) - 0xDC00);
                        char::from_u32(cp)
                            .ok_or_else(|| self.error("invalid unicode code point"))?
                    }
                    0xDC00..=0xDFFF => {
                        return Err(self.error("lone trailing surrogate in hex escape"));
                    }
                    _ => char::from_u32(hi as u32)
                        .ok_or_else(|| self.error("invalid unicode code point"))?,
                }
            }
            _ => {
                self.pos -= 1;
                return Err(self.error("invalid escape"));
            }
        };
        out.push(ch);
        Ok(())
    }

    /// Reads a literal (`true`, `false`, `null`) whose first byte is at the cursor.
    fn literal(&mut self, word: &str) -> Result<(), ModelError> {
        if self.text.as_bytes()[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.eof_or("expected ident"))
        }
    }

    /// The text of a number (the cursor at its first byte), checked against the grammar:
    /// `-? (0 | [1-9] digits) (. digits)? ([eE] [+-]? digits)?`.
    fn number_text(&mut self) -> Result<&'a str, ModelError> {
        let b = self.text.as_bytes();
        let start = self.pos;
        // the end of a run of at least one digit starting at `i`
        let digits = |i: usize| {
            let end = i + b[i.min(b.len())..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            (end > i).then_some(end)
        };
        let mut i = start + usize::from(b.get(start) == Some(&b'-'));
        let mut part = if b.get(i) == Some(&b'0') {
            Some(i + 1)
        } else if b.get(i).is_some_and(|c| (b'1'..=b'9').contains(c)) {
            digits(i)
        } else {
            None
        };
        if let Some(end) = part
            && b.get(end) == Some(&b'.')
        {
            i = end + 1;
            part = digits(i);
        }
        if let Some(end) = part
            && matches!(b.get(end), Some(b'e' | b'E'))
        {
            i = end + 1 + usize::from(matches!(b.get(end + 1), Some(b'+' | b'-')));
            part = digits(i);
        }
        match part {
            Some(end) => {
                self.pos = end;
                Ok(&self.text[start..end])
            }
            None => {
                self.pos = i;
                Err(self.eof_or("invalid number"))
            }
        }
    }

    /// Reads a number (the cursor at its first byte) as `serde_json` would.
    pub(crate) fn number(&mut self) -> Result<Number, ModelError> {
        let t = self.number_text()?;
        if t.len() <= 18 && t.bytes().all(|c| c.is_ascii_digit()) {
            // plain non-negative integer: no float or sign handling needed
            let v = t.bytes().fold(0u64, |v, c| v * 10 + (c - b'0') as u64);
            return Ok(Number::from(v));
        }
        match serde_json::from_str::<Json>(t) {
            Ok(Json::Number(n)) => Ok(n),
            _ => Err(self.error("number out of range")),
        }
    }

    /// Reads any value (the cursor at its first byte); `depth` is the nesting of the
    /// container holding it.
    pub(crate) fn value(&mut self, depth: usize) -> Result<Json, ModelError> {
        match self.peek() {
            Some(b'"') => Ok(Json::String(self.string()?.into_owned())),
            Some(b'{') => {
                let mut m = Map::new();
                self.object(depth + 1, |r, k| {
                    let v = r.value(depth + 1)?;
                    m.insert(k.into_owned(), v);
                    Ok(())
                })?;
                Ok(Json::Object(m))
            }
            Some(b'[') => {
                let mut a = Vec::new();
                self.array(depth + 1, |r| {
                    a.push(r.value(depth + 1)?);
                    Ok(())
                })?;
                Ok(Json::Array(a))
            }
            Some(b't') => self.literal("true").map(|()| Json::Bool(true)),
            Some(b'f') => self.literal("false").map(|()| Json::Bool(false)),
            Some(b'n') => self.literal("null").map(|()| Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number().map(Json::Number),
            Some(_) => Err(self.error("expected value")),
            None => Err(self.error("EOF while parsing a value")),
        }
    }

    /// Checks and skips any value (the cursor at its first byte), building nothing.
    pub(crate) fn skip(&mut self, depth: usize) -> Result<(), ModelError> {
        match self.peek() {
            Some(b'"') => {
                self.string()?;
                Ok(())
            }
            Some(b'{') => self.object(depth + 1, |r, _| r.skip(depth + 1)),
            Some(b'[') => self.array(depth + 1, |r| r.skip(depth + 1)),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            // checked like any number: serde_json refuses one beyond the f64 range
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| ()),
            Some(_) => Err(self.error("expected value")),
            None => Err(self.error("EOF while parsing a value")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Json, ModelError> {
        let mut r = Reader::new(text);
        r.ws();
        let v = r.value(0)?;
        r.end()?;
        Ok(v)
    }

    #[test]
    fn agrees_with_serde_json() {
        let cases = [
            r#"{"a": [1, -2, 3.5, 1e3, -0, 0.1e-2, 12345678901234567890], "b": {"c": null}}"#,
            r#"["\u00e9\ud83d\ude00\n\t\"\\\/\b\f\r", "plain", ""]"#,
            r#"{"a": 1, "a": 2}"#,
            " [ true , false , null ] ",
            "18446744073709551615",
            "-9223372036854775808",
            "123456789012345678",
            "1234567890123456789",
        ];
        for c in cases {
            let ours = read(c).unwrap_or_else(|e| panic!("{c}: {e}"));
            let theirs: Json = serde_json::from_str(c).unwrap();
            assert_eq!(ours, theirs, "{c}");
        }
    }

    #[test]
    fn refuses_what_serde_json_refuses() {
        let cases = [
            "",
            "{",
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "+1",
            "\"\u{1}\"",
            r#""\x""#,
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud800\u0041""#,
            "[1] x",
            "{1:2}",
            "tru",
            "nul",
            "[1 2]",
            "{\"a\" 1}",
            "1e400",
            "333E33333",
            "[1, 2e999]",
        ];
        for c in cases {
            assert!(
                serde_json::from_str::<Json>(c).is_err(),
                "serde accepts {c:?}"
            );
            assert!(
                matches!(read(c), Err(ModelError::Json(_))),
                "{c:?}: {:?}",
                read(c)
            );
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert!(matches!(read(&deep), Err(ModelError::Json(_))));
        let ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(read(&ok).is_ok());
        assert!(serde_json::from_str::<Json>(&ok).is_ok());
        let over = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(read(&over).is_err());
        assert!(serde_json::from_str::<Json>(&over).is_err());
    }

    #[test]
    fn string_stop_finds_the_first_stop_byte() {
        let stops = [b'"', b'\\', 0, 0x1f, b'\n'];
        for len in 0..20 {
            for at in 0..=len {
                for &stop in &stops {
                    let mut v: Vec<u8> = (0..len).map(|k| b"a\x7f\xc3\xa9 !#[]~"[k % 10]).collect();
                    if at < len {
                        v[at] = stop;
                        if at + 1 < len {
                            v[at + 1] = b'"';
                        }
                    }
                    let want = v
                        .iter()
                        .position(|&c| STRING_STOP[c as usize])
                        .unwrap_or(len);
                    assert_eq!(string_stop(&v, 0), want, "{v:?}");
                }
            }
        }
    }

    #[test]
    fn errors_say_where() {
        let e = read("{\n  \"a\": tru\n}").unwrap_err();
        assert_eq!(
            e,
            ModelError::Json("expected ident at line 2 column 8".into())
        );
    }
}
