//! Substring search for the short texts of the wire format (scopes, constraints).
//!
//! `str::find` with a string pattern sets up a Two-Way searcher on every call, which costs
//! more than the whole search in a 20-byte scope; these scan for the first byte and compare.

/// The byte offset of the first `needle` in `hay`.
pub(crate) fn find(hay: &str, needle: &str) -> Option<usize> {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    let Some((&first, rest)) = n.split_first() else {
        return Some(0);
    };
    let last = h.len().checked_sub(n.len())?;
    let end = n[n.len() - 1];
    // first and last byte before the rest: the separators searched for start and end with a
    // space, and a scope's other spaces fail at the last byte without a call to `memcmp`
    (0..=last)
        .find(|&i| h[i] == first && h[i + n.len() - 1] == end && &h[i + 1..i + n.len()] == rest)
}

/// True if `needle` occurs in `hay`.
pub(crate) fn contains(hay: &str, needle: &str) -> bool {
    find(hay, needle).is_some()
}

/// `hay` split around the first `needle`.
pub(crate) fn split_once<'a>(hay: &'a str, needle: &str) -> Option<(&'a str, &'a str)> {
    // `needle` is ASCII wherever this is used, so both offsets are char boundaries
    let i = find(hay, needle)?;
    Some((&hay[..i], &hay[i + needle.len()..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agrees_with_str() {
        for (h, n) in [
            ("now ... future / 1s", " / "),
            ("now ... future / 1s", " ... "),
            ("a", "ab"),
            ("", " + "),
            ("x + y + z", " + "),
            ("é ... ü", " ... "),
            ("abc", ""),
            ("2015 ...", " ... "),
        ] {
            assert_eq!(find(h, n), h.find(n), "{h:?} {n:?}");
            assert_eq!(split_once(h, n), h.split_once(n), "{h:?} {n:?}");
            assert_eq!(contains(h, n), h.contains(n));
        }
    }
}
