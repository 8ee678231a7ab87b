//! Captures archived compressed — `tcpdump -z gzip`, `gzip`, `zstd` — are read as they are:
//! the file is decompressed once into an unnamed temporary file (in `$TMPDIR`, removed when
//! the reader is done) and mapped from there like any capture. A stream cut short (a capture
//! compressed while it was still being written) or damaged keeps everything before the
//! damage, which the reader then reports as [`SourceError::Decompression`].

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::path::Path;

use super::SourceError;

/// A compression format read transparently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// gzip (RFC 1952), one or more members.
    Gzip,
    /// Zstandard, one or more frames.
    Zstd,
}

impl Codec {
    /// The format's name.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }

    /// The format whose magic number `head` starts with.
    pub fn sniff(head: &[u8]) -> Option<Codec> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Codec::Gzip)
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Codec::Zstd)
        } else {
            None
        }
    }
}

/// Where a compressed stream stopped making sense.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The format.
    pub codec: Codec,
    /// Capture bytes recovered before it.
    pub after: u64,
    /// The decoder's words.
    pub reason: String,
}

impl Damage {
    /// As the error a reader reports once it has delivered what was recovered.
    pub fn error(&self) -> SourceError {
        SourceError::Decompression {
            format: self.codec.name(),
            after: self.after,
            reason: self.reason.clone(),
        }
    }
}

/// A decompressed capture: the temporary file, and the damage if the stream had any.
#[derive(Debug)]
pub struct Decompressed {
    /// Unnamed; gone when the last handle or mapping of it is.
    pub file: File,
    /// Set when the stream ended early or was corrupt.
    pub damage: Option<Damage>,
}

/// The format of the file at `path` if it is compressed (reads its first bytes).
pub fn sniff(path: &Path) -> Result<Option<Codec>, SourceError> {
    let open_err = |source| SourceError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(open_err)?;
    if !f.metadata().map_err(open_err)?.is_file() {
        return Ok(None); // the mapping reports directories and devices
    }
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(open_err(e)),
        }
    }
    Ok(Codec::sniff(&head[..n]))
}

/// Decompresses `path` into an unnamed temporary file in `std::env::temp_dir()`.
pub fn decompress(path: &Path, codec: Codec) -> Result<Decompressed, SourceError> {
    let open_err = |source| SourceError::Open {
        path: path.to_path_buf(),
        source,
    };
    let input = BufReader::with_capacity(1 << 20, File::open(path).map_err(open_err)?);
    let mut reader: Box<dyn Read> = match codec {
        Codec::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Codec::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(open_err)?),
    };
    let tmp_dir = std::env::temp_dir();
    let scratch = |source: std::io::Error| SourceError::Scratch {
        dir: tmp_dir.clone(),
        source,
    };
    let mut file = tempfile::tempfile().map_err(scratch)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut after = 0u64;
    let mut damage = None;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                file.write_all(&buf[..n]).map_err(scratch)?;
                after += n as u64;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // a decoder's own error (corrupt data, a stream cut short) carries no OS error
            // code; one that does is the disk failing to read
            Err(e) if e.raw_os_error().is_none() => {
                damage = Some(Damage {
                    codec,
                    after,
                    reason: e.to_string(),
                });
                break;
            }
            Err(e) => return Err(open_err(e)),
        }
    }
    Ok(Decompressed { file, damage })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(codec: Codec, data: &[u8], cut: usize) -> (Vec<u8>, Option<Damage>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let packed = match codec {
            Codec::Gzip => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Codec::Zstd => zstd::encode_all(data, 1).unwrap(),
        };
        std::fs::write(&path, &packed[..packed.len() - cut]).unwrap();
        assert_eq!(sniff(&path).unwrap(), Some(codec));
        let mut d = decompress(&path, codec).unwrap();
        let mut out = Vec::new();
        use std::io::{Seek, SeekFrom};
        d.file.seek(SeekFrom::Start(0)).unwrap();
        d.file.read_to_end(&mut out).unwrap();
        (out, d.damage)
    }

    #[test]
    fn whole_and_cut_streams() {
        // 1.2 MB that compress by about half (random low bytes)
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                [x as u8, (x >> 8) as u8, (i >> 8) as u8, 0]
            })
            .collect();
        for codec in [Codec::Gzip, Codec::Zstd] {
            let (out, damage) = roundtrip(codec, &data, 0);
            assert_eq!(out, data, "{codec:?}");
            assert_eq!(damage, None);
            // cut: a prefix survives, and the damage says how much
            let (out, damage) = roundtrip(codec, &data, 1000);
            let d = damage.unwrap_or_else(|| panic!("{codec:?}: cut not noticed"));
            assert_eq!(d.after, out.len() as u64);
            assert!(
                out.len() < data.len() && data.starts_with(&out),
                "{codec:?}"
            );
            assert!(d.error().to_string().contains(codec.name()));
        }
    }

    #[test]
    fn plain_files_are_not_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p");
        std::fs::write(&p, [0xd4, 0xc3, 0xb2, 0xa1, 2, 0]).unwrap();
        assert_eq!(sniff(&p).unwrap(), None);
        std::fs::write(&p, [0x1f]).unwrap();
        assert_eq!(sniff(&p).unwrap(), None);
        assert_eq!(sniff(dir.path()).unwrap(), None);
    }
}
