//! `DELTA_BINARY_PACKED`: 64-bit integers as bit-packed deltas, in blocks of 128 values of
//! four miniblocks each (the layout arrow-rs and parquet-mr write).

use super::bits::{pack32, uleb, width, zigzag};

/// Values per block.
const BLOCK: usize = 128;
/// Miniblocks per block.
const MINIBLOCKS: usize = 4;
/// Values per miniblock.
const MINI: usize = BLOCK / MINIBLOCKS;

/// Appends the encoding of `values` (64-bit integers; unsigned ones as their bit patterns).
pub(crate) fn encode(values: &[i64], out: &mut Vec<u8>) {
    uleb(BLOCK as u64, out);
    uleb(MINIBLOCKS as u64, out);
    uleb(values.len() as u64, out);
    zigzag(values.first().copied().unwrap_or(0), out);
    if values.len() < 2 {
        return;
    }
    let mut deltas = [0i64; BLOCK];
    let mut packed = [0u64; MINI];
    let mut stage = [[0u64; MINI]; MINIBLOCKS];
    for start in (1..values.len()).step_by(BLOCK) {
        let n = (values.len() - start).min(BLOCK);
        let mut min = i64::MAX;
        for (k, d) in deltas[..n].iter_mut().enumerate() {
            *d = values[start + k].wrapping_sub(values[start + k - 1]);
            min = min.min(*d);
        }
        zigzag(min, out);
        let minis = n.div_ceil(MINI);
        let mut widths = [0u32; MINIBLOCKS];
        for (m, w) in widths.iter_mut().enumerate().take(minis) {
            let end = (m * MINI + MINI).min(n);
            let mut any = 0u64;
            for (p, &d) in packed.iter_mut().zip(&deltas[m * MINI..end]) {
                *p = d.wrapping_sub(min) as u64;
                any |= *p;
            }
            packed[end - m * MINI..].fill(0);
            // the width of the largest value is the width of all values or-ed together
            *w = width(any);
            stage[m] = packed;
        }
        out.extend(widths.iter().map(|&w| w as u8));
        for (m, &w) in widths.iter().enumerate().take(minis) {
            pack32(&stage[m], w, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes (for tests).
    fn decode(mut b: &[u8]) -> Vec<i64> {
        use super::super::bits::tests::read_uleb as uleb;
        fn zz(b: &mut &[u8]) -> i64 {
            let u = uleb(b);
            ((u >> 1) as i64) ^ -((u & 1) as i64)
        }
        let block = uleb(&mut b) as usize;
        let minis = uleb(&mut b) as usize;
        let total = uleb(&mut b) as usize;
        let first = zz(&mut b);
        let mut out = if total > 0 { vec![first] } else { Vec::new() };
        let per = block / minis;
        while out.len() < total {
            let min = zz(&mut b);
            let widths: Vec<u32> = b[..minis].iter().map(|&w| w as u32).collect();
            b = &b[minis..];
            for w in widths {
                if out.len() >= total {
                    break;
                }
                let bytes = per * w as usize / 8;
                let mut acc: u128 = 0;
                let mut have = 0u32;
                let mut src = b[..bytes].iter();
                b = &b[bytes..];
                for _ in 0..per {
                    while have < w {
                        acc |= (*src.next().unwrap() as u128) << have;
                        have += 8;
                    }
                    let v = if w == 0 {
                        0
                    } else {
                        (acc & ((1u128 << w) - 1)) as u64
                    };
                    if w > 0 {
                        acc >>= w;
                        have -= w;
                    }
                    if out.len() < total {
                        let prev = *out.last().unwrap();
                        out.push(prev.wrapping_add(min).wrapping_add(v as i64));
                    }
                }
            }
        }
        out
    }

    #[test]
    fn round_trips() {
        let cases: Vec<Vec<i64>> = vec![
            vec![],
            vec![42],
            vec![1, 2],
            (0..1000).collect(),
            (0..129).map(|i| i * i).collect(),
            (0..300)
                .map(|i| if i % 2 == 0 { i64::MAX } else { i64::MIN })
                .collect(),
            (0..257)
                .map(|i| 1_700_000_000_000_000_000 + i * 1_003_117)
                .collect(),
            (0..100).map(|i| (i * 7919) % 101 - 50).collect(),
            vec![u64::MAX as i64, 0, u64::MAX as i64],
            vec![5; 200],
        ];
        for values in cases {
            let mut enc = Vec::new();
            encode(&values, &mut enc);
            assert_eq!(decode(&enc), values);
        }
    }
}
