//! Bit-level building blocks of Parquet encodings: ULEB128 and zigzag varints, LSB-first bit
//! packing, and the RLE / bit-packing hybrid (definition levels, dictionary indices).

/// Appends `v` as an unsigned LEB128 varint.
#[inline]
pub(crate) fn uleb(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` as a zigzag-encoded varint.
#[inline]
pub(crate) fn zigzag(v: i64, out: &mut Vec<u8>) {
    uleb(((v << 1) ^ (v >> 63)) as u64, out);
}

/// Bits needed to hold `v` (0 for 0).
#[inline]
pub(crate) fn width(v: u64) -> u32 {
    64 - v.leading_zeros()
}

/// Appends `values`, `width` bits each, LSB first (Parquet's bit packing). Values must fit in
/// `width` bits; the last byte is padded with zero bits.
pub(crate) fn pack(values: &[u64], width: u32, out: &mut Vec<u8>) {
    if width == 0 {
        return;
    }
    let mut acc: u128 = 0;
    let mut bits = 0u32;
    for &v in values {
        acc |= (v as u128) << bits;
        bits += width;
        if bits >= 64 {
            out.extend_from_slice(&(acc as u64).to_le_bytes());
            acc >>= 64;
            bits -= 64;
        }
    }
    let tail = bits.div_ceil(8) as usize;
    out.extend_from_slice(&(acc as u64).to_le_bytes()[..tail]);
}

/// Appends 32 values, `width` bits each, LSB first: exactly `4 × width` bytes (a miniblock of
/// `DELTA_BINARY_PACKED`). Values must fit in `width` bits (≤ 64).
pub(crate) fn pack32(values: &[u64; 32], width: u32, out: &mut Vec<u8>) {
    // one copy of the loop per width: every shift and word index is a constant and the
    // loop unrolls, instead of a carry test per value
    macro_rules! by_width {
        ($($w:literal)*) => {
            match width {
                $($w => pack32_w::<$w>(values, out),)*
                _ => {}
            }
        };
    }
    by_width!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63 64);
}

/// [`pack32`] for one width.
#[inline(always)]
fn pack32_w<const W: usize>(values: &[u64; 32], out: &mut Vec<u8>) {
    let mut words = [0u64; 33];
    // written out for each of the 32 values: every word index and shift is a constant, so
    // the words stay in registers (a loop is not unrolled for every width)
    macro_rules! put {
        ($($i:literal)*) => {$({
            let (word, shift) = ($i * W / 64, $i * W % 64);
            words[word] |= values[$i] << shift;
            if shift + W > 64 {
                words[word + 1] |= values[$i] >> (64 - shift);
            }
        })*};
    }
    put!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);
    // 32 × W bits are W / 2 words and, for an odd width, half a word more
    out.reserve(4 * W);
    for w in &words[..W / 2] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    if W % 2 == 1 {
        out.extend_from_slice(&(words[W / 2] as u32).to_le_bytes());
    }
}

/// Appends the RLE / bit-packing hybrid encoding of `values`, each below `2^width`
/// (`width` ≤ 32): runs of eight or more equal values become RLE runs, the rest bit-packed
/// groups of eight.
pub(crate) fn hybrid(values: &[u32], width: u32, out: &mut Vec<u8>) {
    let value_bytes = width.div_ceil(8) as usize;
    let mut literal_start = 0; // start of values not yet written, all to be bit-packed
    let mut i = 0;
    while i < values.len() {
        let v = values[i];
        let mut j = i + 1;
        while j < values.len() && values[j] == v {
            j += 1;
        }
        // a run may only start where the pending literals fill whole groups of eight
        let pending = i - literal_start;
        let fill = (8 - pending % 8) % 8;
        if j - i >= fill + 8 {
            let run_start = i + fill;
            flush_literals(&values[literal_start..run_start], width, out);
            uleb(((j - run_start) as u64) << 1, out);
            out.extend_from_slice(&v.to_le_bytes()[..value_bytes]);
            literal_start = j;
        }
        i = j;
    }
    flush_literals(&values[literal_start..], width, out);
}

/// Appends `values` as one bit-packed run (padded with zeros to a multiple of eight values).
fn flush_literals(values: &[u32], width: u32, out: &mut Vec<u8>) {
    if values.is_empty() {
        return;
    }
    let groups = values.len().div_ceil(8);
    uleb(((groups as u64) << 1) | 1, out);
    let mut buf = [0u64; 8];
    for chunk in values.chunks(8) {
        buf.fill(0);
        for (b, &v) in buf.iter_mut().zip(chunk) {
            *b = v as u64;
        }
        pack(&buf, width, out);
    }
}

/// Appends the hybrid encoding (bit width 1) of definition levels given as a validity
/// bitmap: bit `i` of `bits` (LSB first) is 1 if row `i` of `n` has a value. Whole bytes of
/// all-set or all-clear bits become RLE runs when they run long enough, the others are
/// copied as bit-packed groups (a bitmap byte is exactly one packed group of eight levels).
pub(crate) fn hybrid_bitmap(bits: &[u8], n: usize, out: &mut Vec<u8>) {
    let full = n / 8;
    let mut literal_start = 0; // in bytes
    let mut i = 0;
    while i < full {
        let b = bits[i];
        if b == 0 || b == 0xff {
            let mut j = i + 1;
            while j < full && bits[j] == b {
                j += 1;
            }
            if j - i >= 2 {
                literal_bytes(&bits[literal_start..i], out);
                uleb((((j - i) * 8) as u64) << 1, out);
                out.push(b & 1);
                literal_start = j;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    // the rest, with the last partial byte's bits above `n` cleared
    let mut tail: Vec<u8> = bits[literal_start..full].to_vec();
    if !n.is_multiple_of(8) {
        tail.push(bits[full] & ((1u8 << (n % 8)) - 1));
    }
    literal_bytes(&tail, out);
}

fn literal_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    if bytes.is_empty() {
        return;
    }
    uleb(((bytes.len() as u64) << 1) | 1, out);
    out.extend_from_slice(bytes);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Reads an unsigned LEB128 varint (for tests).
    pub(crate) fn read_uleb(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        let mut shift = 0;
        loop {
            let c = b[0];
            *b = &b[1..];
            v |= ((c & 0x7f) as u64) << shift;
            if c < 0x80 {
                return v;
            }
            shift += 7;
        }
    }

    /// Decodes the hybrid encoding of `n` values (for tests).
    pub(crate) fn unhybrid(mut b: &[u8], width: u32, n: usize) -> Vec<u32> {
        let mut out = Vec::new();
        while out.len() < n {
            let h = read_uleb(&mut b);
            if h & 1 == 0 {
                let count = (h >> 1) as usize;
                let nb = width.div_ceil(8) as usize;
                let mut v = [0u8; 4];
                v[..nb].copy_from_slice(&b[..nb]);
                b = &b[nb..];
                out.extend(std::iter::repeat_n(u32::from_le_bytes(v), count));
            } else {
                let groups = (h >> 1) as usize;
                let bytes = groups * width as usize;
                let mut acc: u128 = 0;
                let mut have = 0;
                let mut src = b[..bytes].iter();
                b = &b[bytes..];
                for _ in 0..groups * 8 {
                    while have < width {
                        acc |= (*src.next().unwrap() as u128) << have;
                        have += 8;
                    }
                    out.push((acc & ((1u128 << width) - 1)) as u32);
                    acc >>= width;
                    have -= width;
                }
            }
        }
        out.truncate(n);
        out
    }

    #[test]
    fn varints() {
        let mut v = Vec::new();
        uleb(300, &mut v);
        zigzag(-1, &mut v);
        zigzag(1, &mut v);
        zigzag(i64::MIN, &mut v);
        assert_eq!(&v[..5], &[0xac, 0x02, 1, 2, 0xff]);
        assert_eq!(width(0), 0);
        assert_eq!(width(1), 1);
        assert_eq!(width(255), 8);
        assert_eq!(width(u64::MAX), 64);
    }

    #[test]
    fn pack_is_lsb_first() {
        // the example of the Parquet specification: 0..=7 in 3 bits
        let mut v = Vec::new();
        pack(&[0, 1, 2, 3, 4, 5, 6, 7], 3, &mut v);
        assert_eq!(v, vec![0b1000_1000, 0b1100_0110, 0b1111_1010]);
        v.clear();
        pack(&[1, 2, 3, 4, 5, 6, 7, 0], 3, &mut v);
        assert_eq!(v, vec![0xd1, 0x58, 0x1f]);
    }

    #[test]
    fn pack32_matches_pack() {
        let mut x: u64 = 99;
        for width in 0..=64u32 {
            let mask = if width == 64 {
                u64::MAX
            } else {
                (1u64 << width) - 1
            };
            let mut v = [0u64; 32];
            for e in &mut v {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *e = x & mask;
            }
            let (mut a, mut b) = (Vec::new(), Vec::new());
            pack(&v, width, &mut a);
            pack32(&v, width, &mut b);
            assert_eq!(a, b, "width {width}");
            assert_eq!(b.len(), 4 * width as usize);
        }
    }

    #[test]
    fn hybrid_round_trips() {
        let cases: Vec<(Vec<u32>, u32)> = vec![
            (vec![], 1),
            (vec![1; 100], 1),
            ((0..100).map(|i| i % 2).collect(), 1),
            ((0..37).map(|i| (i * 7) % 13).collect(), 4),
            (
                [vec![3; 5], vec![1; 20], vec![2, 3, 4], vec![7; 9]].concat(),
                3,
            ),
            (
                (0..1000)
                    .map(|i| if i % 100 < 90 { 5 } else { i % 17 })
                    .collect(),
                5,
            ),
            (vec![u32::MAX; 3], 32),
        ];
        for (values, width) in cases {
            let mut enc = Vec::new();
            hybrid(&values, width, &mut enc);
            assert_eq!(unhybrid(&enc, width, values.len()), values, "{values:?}");
        }
    }

    #[test]
    fn bitmap_levels_round_trip() {
        for n in [0usize, 1, 7, 8, 9, 64, 100, 1000] {
            for pattern in 0..4 {
                let valid: Vec<bool> = (0..n)
                    .map(|i| match pattern {
                        0 => true,
                        1 => false,
                        2 => i % 3 != 0,
                        _ => i / 40 % 2 == 0,
                    })
                    .collect();
                let mut bits = vec![0u8; n.div_ceil(8)];
                for (i, &v) in valid.iter().enumerate() {
                    if v {
                        bits[i / 8] |= 1 << (i % 8);
                    }
                }
                // garbage above n in the last byte must not leak
                if !n.is_multiple_of(8) {
                    bits[n / 8] |= 0xff << (n % 8);
                }
                let mut enc = Vec::new();
                hybrid_bitmap(&bits, n, &mut enc);
                let want: Vec<u32> = valid.iter().map(|&v| v as u32).collect();
                assert_eq!(unhybrid(&enc, 1, n), want, "n={n} pattern={pattern}");
            }
        }
    }
}
