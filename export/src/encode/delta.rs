//! `DELTA_BINARY_PACKED`: 64-bit integers as bit-packed deltas, in blocks of 128 values of
//! four miniblocks each (the layout arrow-rs and parquet-mr write).

use super::bits::{pack32, uleb, width, zigzag};

/// Values per block.
const BLOCK: usize = 128;
/// Miniblocks per block.
const MINIBLOCKS: usize = 4;
/// Values per miniblock.
const MINI: usize = BLOCK / MINIBLOCKS;

crate::dispatched! {
/// Appends the encoding of `values` (64-bit integers; unsigned ones as their bit patterns).
/// With AVX2, the deltas, their minimum and the miniblocks' widths take four values a step.
pub(crate) fn encode(values: &[i64], out: &mut Vec<u8>) {
    uleb(BLOCK as u64, out);
    uleb(MINIBLOCKS as u64, out);
    uleb(values.len() as u64, out);
    zigzag(values.first().copied().unwrap_or(0), out);
    if values.len() < 2 {
        return;
    }
    // a block's deltas, then (minus the block's smallest delta) the values packed; past the
    // end of a short last block they are zero
    let mut block = [0u64; BLOCK];
    for (start, next) in values[1..].chunks(BLOCK).enumerate() {
        let n = next.len();
        let prev = &values[start * BLOCK..start * BLOCK + n];
        let min = deltas(prev, next, &mut block[..n]);
        zigzag(min, out);
        let mut widths = [0u8; MINIBLOCKS];
        block[n..].fill(min as u64);
        for (mini, w) in block.as_chunks_mut::<MINI>().0.iter_mut().zip(&mut widths) {
            let mut any = 0u64;
            for d in mini.iter_mut() {
                *d = d.wrapping_sub(min as u64);
                any |= *d;
            }
            // the width of the largest value is the width of all values or-ed together
            *w = width(any) as u8;
        }
        let minis = n.div_ceil(MINI);
        out.extend_from_slice(&widths);
        for (mini, &w) in block.as_chunks::<MINI>().0.iter().zip(&widths).take(minis) {
            pack32(mini, u32::from(w), out);
        }
    }
}
}

/// Writes `next[k] - prev[k]` (wrapping) into `out[k]` as bit patterns; returns the smallest
/// delta. Four lanes, so that the minimum is not one chain of compares.
#[inline(always)]
fn deltas(prev: &[i64], next: &[i64], out: &mut [u64]) -> i64 {
    let mut lanes = [i64::MAX; 4];
    let quads = out.len() / 4 * 4;
    for ((o, p), n) in out[..quads]
        .chunks_exact_mut(4)
        .zip(prev.chunks_exact(4))
        .zip(next.chunks_exact(4))
    {
        for k in 0..4 {
            let d = n[k].wrapping_sub(p[k]);
            o[k] = d as u64;
            lanes[k] = lanes[k].min(d);
        }
    }
    for ((o, &p), &n) in out[quads..]
        .iter_mut()
        .zip(&prev[quads..])
        .zip(&next[quads..])
    {
        let d = n.wrapping_sub(p);
        *o = d as u64;
        lanes[0] = lanes[0].min(d);
    }
    lanes[0].min(lanes[1]).min(lanes[2].min(lanes[3]))
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
