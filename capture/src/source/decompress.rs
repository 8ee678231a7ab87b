//! Captures that cannot be mapped are read as streams: files archived compressed —
//! `tcpdump -z gzip`, `gzip`, `zstd` — and pipes, FIFOs and standard input (`-`), compressed
//! or not (the format is sniffed from the first bytes). A thread of the stream's own reads and
//! decodes ahead of the reader into a few blocks of a MiB that it reuses, so a capture of any
//! size needs no scratch space, and decoding runs on another core than the capture pipeline's
//! reader. A compressed stream cut short (a capture compressed while it was still being
//! written) or damaged keeps everything before the damage, which the reader then reports as
//! [`SourceError::Decompression`].

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::time::{Duration, Instant};

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

/// Capture bytes the decoding thread puts into one block.
const BLOCK: usize = 1 << 20;
/// Room before a block's bytes for the unread end of the block before it (the start of a
/// record that spans the two), copied there when the reader moves on. A longer remainder (a
/// record or pcapng block larger than this) joins the two blocks instead.
const HEAD: usize = 256 << 10;
/// Filled blocks queued between the decoding thread and the reader.
const QUEUED: usize = 3;
/// A pipe's bytes are passed on once a block holds this many (a pipe's capacity: a fast writer
/// fills it between two reads)...
const EAGER_BYTES: usize = 64 << 10;
/// ... or once they have waited this long (a slow writer, e.g. `tcpdump -U -w -`, writing each
/// packet as it comes).
const EAGER_WAIT: Duration = Duration::from_millis(20);
/// How often a reader waiting for bytes looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

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

/// A pipe, FIFO or standard input as the decoding thread reads it: it waits for bytes at
/// most [`EAGER_WAIT`] at a time and then says `WouldBlock`, so that the thread passes on
/// what it holds of an idle pipe, and sees when the [`Stream`] is dropped (`closed`) and
/// ends, closing its end of the pipe, instead of waiting in `read` for ever. (The gzip and
/// zstd decoders resume after `WouldBlock`.)
struct Watched<R> {
    inner: R,
    fd: std::os::fd::RawFd,
    closed: Arc<AtomicBool>,
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.closed.load(Ordering::Acquire) {
            return Err(std::io::Error::other("the stream was closed"));
        }
        if super::wait::readable(self.fd, EAGER_WAIT)? {
            self.inner.read(buf)
        } else {
            Err(ErrorKind::WouldBlock.into())
        }
    }
}

/// What the decoding thread hands the reader.
enum Fill {
    /// A block whose bytes `HEAD..HEAD + len` follow those of the block before.
    Block(Vec<u8>, usize),
    /// The end of the stream: clean, or at damage.
    End(Option<Damage>),
    /// The file or pipe failed to read.
    Failed(std::io::Error),
}

/// The decoding thread: reads (and decodes) `reader` into blocks and queues them for the
/// reader, reusing the blocks it gives back. `eager` (pipes) queues a block once it holds
/// [`EAGER_BYTES`] or its first bytes came [`EAGER_WAIT`] ago, instead of filling it first. Ends at the end of the stream, or when the reader is
/// gone.
fn decode(
    mut reader: Box<dyn Read + Send>,
    codec: Option<Codec>,
    eager: bool,
    full: SyncSender<Fill>,
    free: Receiver<Vec<u8>>,
) {
    let mut total = 0u64;
    loop {
        let mut block = free.try_recv().unwrap_or_else(|_| vec![0; HEAD + BLOCK]);
        let mut len = 0;
        let mut first = None;
        let end = loop {
            if len == BLOCK {
                break None;
            }
            match reader.read(&mut block[HEAD + len..HEAD + BLOCK]) {
                Ok(0) => break Some(Fill::End(None)),
                Ok(n) => {
                    len += n;
                    let now = Instant::now();
                    let since = *first.get_or_insert(now);
                    if eager && (len >= EAGER_BYTES || now - since >= EAGER_WAIT) {
                        break None;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // an idle pipe: what came so far goes on now
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if len > 0 {
                        break None;
                    }
                }
                // a decoder's own error (corrupt data, a stream cut short) carries no OS
                // error code; one that does is the disk or pipe failing to read
                Err(e)
                    if let Some(codec) = codec
                        && e.raw_os_error().is_none() =>
                {
                    break Some(Fill::End(Some(Damage {
                        codec,
                        after: total + len as u64,
                        reason: e.to_string(),
                    })));
                }
                Err(e) => break Some(Fill::Failed(e)),
            }
        };
        total += len as u64;
        if len > 0 && full.send(Fill::Block(block, len)).is_err() {
            return;
        }
        if let Some(end) = end {
            let _ = full.send(end);
            return;
        }
    }
}

/// A capture read as a stream (decoded, when compressed): bytes `base..base + len` of the
/// capture are [`Self::bytes`].
///
/// A thread of its own reads and decodes the file or pipe a block ahead of the reader, so
/// decoding overlaps with what the reader does with the bytes. Dropping the stream ends that
/// thread at its next block; one waiting on an idle pipe (or FIFO, or standard input) ends
/// within [`EAGER_WAIT`], closing its end of the pipe.
pub(crate) struct Stream {
    path: PathBuf,
    codec: Option<Codec>,
    full: Receiver<Fill>,
    free: Sender<Vec<u8>>,
    /// The block (or, for a record longer than [`HEAD`], joined blocks) being read.
    cur: Vec<u8>,
    start: usize,
    end: usize,
    pub(crate) base: u64,
    eof: bool,
    stopped: bool,
    pub(crate) damage: Option<Damage>,
    stop: Option<Arc<AtomicBool>>,
    read: Arc<AtomicU64>,
    size: u64,
    /// Set when the stream is dropped: the decoding thread of a pipe then ends.
    closed: Arc<AtomicBool>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.closed.store(true, Ordering::Release);
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("path", &self.path)
            .field("codec", &self.codec)
            .field("base", &self.base)
            .field("buffered", &(self.end - self.start))
            .field("eof", &self.eof)
            .field("stopped", &self.stopped)
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
        use std::os::fd::AsRawFd;
        let closed = Arc::new(AtomicBool::new(false));
        let watched = |inner: Box<dyn Read + Send>, fd| -> Box<dyn Read + Send> {
            Box::new(Watched {
                inner,
                fd,
                closed: Arc::clone(&closed),
            })
        };
        let (raw, size): (Box<dyn Read + Send>, u64) = if path == Path::new("-") {
            let fd = std::io::stdin().as_raw_fd();
            (watched(Box::new(std::io::stdin()), fd), 0)
        } else {
            let file = File::open(path).map_err(open_err)?;
            let meta = file.metadata().map_err(open_err)?;
            if meta.is_file() {
                (Box::new(file), meta.len())
            } else {
                // a pipe or device: no size to measure progress against, and bytes that may
                // not come
                let fd = file.as_raw_fd();
                (watched(Box::new(file), fd), 0)
            }
        };
        Self::with_flag(path, raw, size, closed)
    }

    /// Reads `raw` (named `path` in errors; `size` bytes long, 0 if unknown: a pipe, whose
    /// bytes are then passed on as they come) as a stream, decoded if its first bytes show
    /// gzip or zstd.
    pub(crate) fn from_reader(
        path: &Path,
        raw: Box<dyn Read + Send>,
        size: u64,
    ) -> Result<Stream, SourceError> {
        Self::with_flag(path, raw, size, Arc::new(AtomicBool::new(false)))
    }

    /// [`Self::from_reader`], with the flag set when the stream is dropped.
    fn with_flag(
        path: &Path,
        raw: Box<dyn Read + Send>,
        size: u64,
        closed: Arc<AtomicBool>,
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
                // (a pipe with nothing yet: wait on)
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {}
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
        let (full_tx, full) = mpsc::sync_channel(QUEUED);
        let (free, free_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("capture-decode".into())
            .spawn(move || decode(reader, codec, size == 0, full_tx, free_rx))
            .map_err(open_err)?;
        Ok(Stream {
            path: path.to_path_buf(),
            codec,
            full,
            free,
            cur: Vec::new(),
            start: 0,
            end: 0,
            base: 0,
            eof: false,
            stopped: false,
            damage: None,
            stop: None,
            read,
            size,
            closed,
        })
    }

    /// Stops waiting for bytes once `stop` is set (looked at every 100 ms while waiting): the
    /// stream then ends where it is ([`Self::stopped`]).
    pub(crate) fn stop_on(&mut self, stop: Arc<AtomicBool>) {
        self.stop = Some(stop);
    }

    /// The bytes at hand.
    #[inline(always)]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.cur[self.start..self.end]
    }

    /// The decoding thread's next message, or `None` once the stop flag is set.
    fn next_fill(&mut self) -> Option<Fill> {
        let gone = || {
            Fill::Failed(std::io::Error::other(
                "the capture's decoding thread ended unexpectedly",
            ))
        };
        let Some(stop) = &self.stop else {
            return Some(self.full.recv().unwrap_or_else(|_| gone()));
        };
        loop {
            match self.full.recv_timeout(STOP_POLL) {
                Ok(f) => return Some(f),
                Err(RecvTimeoutError::Timeout) if stop.load(Ordering::Relaxed) => return None,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Some(gone()),
            }
        }
    }

    /// Waits until [`Self::bytes`] holds at least `len` bytes or the stream ends (cleanly, at
    /// damage, which is then recorded, or by the stop flag).
    pub(crate) fn fill(&mut self, len: usize) -> Result<(), SourceError> {
        while self.end - self.start < len && !self.eof {
            let Some(fill) = self.next_fill() else {
                self.stopped = true;
                self.eof = true;
                break;
            };
            match fill {
                Fill::Block(mut block, n) => {
                    let rest = self.end - self.start;
                    let spent = if rest <= HEAD {
                        block[HEAD - rest..HEAD].copy_from_slice(self.bytes());
                        let spent = std::mem::replace(&mut self.cur, block);
                        self.start = HEAD - rest;
                        self.end = HEAD + n;
                        spent
                    } else {
                        self.cur.copy_within(self.start..self.end, 0);
                        self.cur.truncate(rest);
                        self.cur.extend_from_slice(&block[HEAD..HEAD + n]);
                        self.start = 0;
                        self.end = rest + n;
                        block
                    };
                    // joined blocks are dropped, blocks go back (unless the thread is done)
                    if spent.len() == HEAD + BLOCK {
                        let _ = self.free.send(spent);
                    }
                }
                Fill::End(damage) => {
                    self.damage = damage;
                    self.eof = true;
                }
                Fill::Failed(source) => {
                    self.eof = true;
                    return Err(SourceError::Read {
                        path: self.path.clone(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }

    /// Bytes of buffer space the reader holds (the decoding thread holds a few blocks more).
    #[cfg(test)]
    pub(crate) fn space_len(&self) -> usize {
        self.cur.len()
    }

    /// `true` once the stream has ended (cleanly, at damage, or by the stop flag):
    /// [`Self::bytes`] is all that is left.
    pub(crate) fn ended(&self) -> bool {
        self.eof
    }

    /// `true` if the stream ended because the stop flag was set (what is left may end inside
    /// a record).
    pub(crate) fn stopped(&self) -> bool {
        self.stopped
    }

    /// Forgets the first `n` bytes at hand (read and no longer referenced).
    #[inline]
    pub(crate) fn consume(&mut self, n: usize) {
        let n = n.min(self.end - self.start);
        self.start += n;
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
        (out, s.damage.take())
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
