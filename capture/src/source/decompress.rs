//! Captures that cannot be mapped are read as streams: files archived compressed —
//! `tcpdump -z gzip`, `gzip`, `zstd` — and pipes, FIFOs and standard input (`-`), compressed
//! or not (the format is sniffed from the first bytes). The (decoded) bytes pass through a
//! buffer that holds the record being read and what was read after it (about a MiB), so a
//! capture of any size needs no scratch space. A compressed stream cut short (a capture
//! compressed while it was still being written) or damaged keeps everything before the
//! damage, which the reader then reports as [`SourceError::Decompression`].

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Bytes read from the decoder at a time.
const READ_CHUNK: usize = 256 << 10;

/// Counts the compressed bytes the decoder has taken, for progress reports.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A capture read as a stream (decoded, when compressed): bytes `base..base + len` of the
/// capture are `space[..len]` ([`Self::bytes`]).
pub(crate) struct Stream {
    path: PathBuf,
    codec: Option<Codec>,
    reader: Box<dyn Read + Send>,
    /// Zeroed once as it grows, then read into and reused (never zeroed per read).
    space: Vec<u8>,
    len: usize,
    pub(crate) base: u64,
    eof: bool,
    pub(crate) damage: Option<Damage>,
    read: Arc<AtomicU64>,
    size: u64,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("path", &self.path)
            .field("codec", &self.codec)
            .field("base", &self.base)
            .field("buffered", &self.len)
            .field("eof", &self.eof)
            .field("damage", &self.damage)
            .finish()
    }
}

impl Stream {
    /// Opens `path` (`-`: standard input) as a stream, decoded if its first bytes show gzip
    /// or zstd.
    pub(crate) fn open(path: &Path) -> Result<Stream, SourceError> {
        let open_err = |source| SourceError::Open {
            path: path.to_path_buf(),
            source,
        };
        let (raw, size): (Box<dyn Read + Send>, u64) = if path == Path::new("-") {
            (Box::new(std::io::stdin()), 0)
        } else {
            let file = File::open(path).map_err(open_err)?;
            let meta = file.metadata().map_err(open_err)?;
            // a pipe or device has no size to measure progress against
            (Box::new(file), if meta.is_file() { meta.len() } else { 0 })
        };
        Self::from_reader(path, raw, size)
    }

    /// Reads `raw` (named `path` in errors; `size` bytes long, 0 if unknown) as a stream,
    /// decoded if its first bytes show gzip or zstd.
    pub(crate) fn from_reader(
        path: &Path,
        raw: Box<dyn Read + Send>,
        size: u64,
    ) -> Result<Stream, SourceError> {
        let open_err = |source| SourceError::Open {
            path: path.to_path_buf(),
            source,
        };
        let read = Arc::new(AtomicU64::new(0));
        let mut input = BufReader::with_capacity(
            1 << 20,
            Counting {
                inner: raw,
                count: Arc::clone(&read),
            },
        );
        // the first bytes, left in the buffer for whoever reads on
        let codec = loop {
            match input.fill_buf() {
                Ok(head) => break Codec::sniff(head),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(open_err(e)),
            }
        };
        let reader: Box<dyn Read + Send> = match codec {
            None => Box::new(input),
            Some(Codec::Gzip) => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Some(Codec::Zstd) => {
                Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(open_err)?)
            }
        };
        Ok(Stream {
            path: path.to_path_buf(),
            codec,
            reader,
            space: Vec::new(),
            len: 0,
            base: 0,
            eof: false,
            damage: None,
            read,
            size,
        })
    }

    /// The bytes at hand.
    #[inline(always)]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.space[..self.len]
    }

    /// Decodes until [`Self::bytes`] holds at least `len` bytes or the stream ends (cleanly,
    /// or at damage, which is then recorded). Each read fills the free space, at least
    /// [`READ_CHUNK`].
    pub(crate) fn fill(&mut self, len: usize) -> Result<(), SourceError> {
        while self.len < len && !self.eof {
            let at = self.len;
            // room for the rest of `len` (at most 16 MiB more at a time), or a chunk
            let want = at + (len - at).clamp(READ_CHUNK, 16 << 20);
            if self.space.len() < want {
                self.space.resize(want, 0);
            }
            let r = self.reader.read(&mut self.space[at..]);
            match r {
                Ok(0) => self.eof = true,
                Ok(n) => self.len += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // a decoder's own error (corrupt data, a stream cut short) carries no OS
                // error code; one that does is the disk or pipe failing to read
                Err(e)
                    if let Some(codec) = self.codec
                        && e.raw_os_error().is_none() =>
                {
                    self.damage = Some(Damage {
                        codec,
                        after: self.base + at as u64,
                        reason: e.to_string(),
                    });
                    self.eof = true;
                }
                Err(source) => {
                    return Err(SourceError::Read {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Bytes of buffer space held.
    #[cfg(test)]
    pub(crate) fn space_len(&self) -> usize {
        self.space.len()
    }

    /// `true` once the stream has ended (cleanly or at damage): [`Self::bytes`] is all that is
    /// left.
    pub(crate) fn ended(&self) -> bool {
        self.eof
    }

    /// Forgets the first `n` buffered bytes (read and no longer referenced).
    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min(self.len);
        self.space.copy_within(n..self.len, 0);
        self.len -= n;
        self.base += n as u64;
    }

    /// The bytes taken from the file or pipe so far (compressed bytes, for a compressed
    /// capture), and the file's size (0 for a pipe or device: unknown).
    pub(crate) fn progress(&self) -> (Arc<AtomicU64>, u64) {
        (Arc::clone(&self.read), self.size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(codec: Codec, data: &[u8], cut: usize) -> (Vec<u8>, Option<Damage>) {
        use std::io::Write;
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
        let mut s = Stream::open(&path).unwrap();
        assert_eq!(s.codec, Some(codec));
        // read in uneven steps, forgetting what was read, as the capture reader does
        let mut out = Vec::new();
        let mut step = 1000;
        while !s.eof {
            s.fill(step).unwrap();
            let n = s.bytes().len().min(step);
            assert_eq!(s.base, out.len() as u64);
            out.extend_from_slice(&s.bytes()[..n]);
            s.consume(n);
            step = step * 3 % 100_003 + 1;
        }
        out.extend_from_slice(s.bytes());
        let (read, size) = s.progress();
        assert_eq!(size, packed.len() as u64 - cut as u64);
        assert_eq!(
            read.load(Ordering::Relaxed),
            size,
            "every compressed byte counted"
        );
        (out, s.damage)
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
