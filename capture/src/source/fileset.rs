//! Several capture files read as one capture: the files a rotating capture writes
//! (`tcpdump -C`/`-G`, `dumpcap -b`), or one file per port of a tap.
//!
//! The files are ordered by the time of their first packet, not by name (`trace.pcap10` comes
//! after `trace.pcap9`, and `-G` names need not sort at all). A file is opened when the merged
//! capture reaches its first packet's time and closed at its end (it is opened briefly before,
//! when the set is, to read that time and check its header: only the files being merged stay
//! open, so a rotated capture of hundreds of files holds neither hundreds of mappings and
//! descriptors nor, compressed, hundreds of decoder threads), and the packets of the files
//! open at a time are merged by timestamp: files that follow each other are read one after the
//! other, files that overlap in time (the two directions of a two-port tap) interleave. A
//! flow that spans two files stays one flow. Each file is mapped or read as a stream
//! (compressed) as [`PcapFile::open`] does; the frames are copied into the pipeline's batches
//! ([`crate::pipeline::Pipeline::run_source`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::pcap::{PcapFile, Record};
use super::{PacketRef, PacketSource, SourceError};

/// How often (in packets) the set publishes the bytes it has read.
const PROGRESS_EVERY: u64 = 4096;

/// A file of the set not opened yet.
#[derive(Debug)]
struct Pending {
    path: PathBuf,
    first_ts: u64,
    size: u64,
}

/// A file of the set being read, with the record it is to deliver next.
struct Open {
    path: PathBuf,
    file: PcapFile,
    head: Record,
    size: u64,
}

impl Open {
    /// Bytes of the file read so far (compressed bytes of a compressed file).
    fn read(&self) -> u64 {
        self.file
            .stream_progress()
            .map_or(self.file.position() as u64, |(r, _)| {
                r.load(Ordering::Relaxed)
            })
    }
}

/// Several capture files merged by time into one [`PacketSource`] (see the module doc).
pub struct FileSet {
    /// Files not opened yet, latest first (the next one is popped off the end).
    pending: Vec<Pending>,
    open: Vec<Open>,
    /// The file whose head was delivered last: it advances at the next call.
    delivered: Option<usize>,
    /// Bytes of the files closed.
    closed: u64,
    total: u64,
    progress: Arc<AtomicU64>,
    packets: u64,
    window: Option<usize>,
    stop: Option<Arc<AtomicBool>>,
}

impl std::fmt::Debug for FileSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSet")
            .field("pending", &self.pending.len())
            .field(
                "open",
                &self.open.iter().map(|o| &o.path).collect::<Vec<_>>(),
            )
            .field("total", &self.total)
            .finish()
    }
}

/// `error` as raised by the file at `path`.
fn in_file(path: &Path, error: SourceError) -> SourceError {
    match error {
        // these name the file already
        e @ (SourceError::Open { .. } | SourceError::Read { .. }) => e,
        e => SourceError::InFile {
            path: path.to_path_buf(),
            source: Box::new(e),
        },
    }
}

impl FileSet {
    /// Checks every file of `paths` (each must be a regular capture file, given once: a pipe
    /// or standard input can only be read alone) and reads its first packet's time. An
    /// unreadable or empty-headed file is an error here, before anything is read; errors name
    /// the file ([`SourceError::InFile`]).
    pub fn open(paths: &[PathBuf]) -> Result<FileSet, SourceError> {
        let mut pending = Vec::with_capacity(paths.len());
        let mut seen = HashSet::new();
        let mut total = 0;
        for (order, path) in paths.iter().enumerate() {
            let open_err = |source| SourceError::Open {
                path: path.clone(),
                source,
            };
            let meta = std::fs::metadata(path);
            if path == Path::new("-") || meta.as_ref().is_ok_and(|m| !m.is_file()) {
                return Err(in_file(
                    path,
                    SourceError::NotInSet {
                        reason: "not a regular file (a pipe, device or standard input is read alone)",
                    },
                ));
            }
            let meta = meta.map_err(open_err)?;
            {
                use std::os::unix::fs::MetadataExt;
                if !seen.insert((meta.dev(), meta.ino())) {
                    return Err(in_file(
                        path,
                        SourceError::NotInSet {
                            reason: "given twice",
                        },
                    ));
                }
            }
            let mut file = PcapFile::open(path).map_err(|e| in_file(path, e))?;
            let first = file.next_record().map_err(|e| in_file(path, e))?;
            total += meta.len();
            // a file without packets has nothing to merge (its header was checked)
            if let Some(r) = first {
                pending.push((r.ts_ns, order, path.clone(), meta.len()));
            }
        }
        // the earliest first packet last (popped first); equal times keep the order given
        pending.sort_by_key(|p| std::cmp::Reverse((p.0, p.1)));
        let closed = total - pending.iter().map(|p| p.3).sum::<u64>();
        Ok(FileSet {
            pending: pending
                .into_iter()
                .map(|(first_ts, _, path, size)| Pending {
                    path,
                    first_ts,
                    size,
                })
                .collect(),
            open: Vec::new(),
            delivered: None,
            closed,
            total,
            progress: Arc::new(AtomicU64::new(closed)),
            packets: 0,
            window: None,
            stop: None,
        })
    }

    /// The bytes of the set's files read so far (compressed bytes for compressed files; updated
    /// every few thousand packets, readable from any thread) and the files' total size.
    pub fn progress(&self) -> (Arc<AtomicU64>, u64) {
        (Arc::clone(&self.progress), self.total)
    }

    /// The window each mapped file keeps mapped around its reader ([`PcapFile::set_window`]).
    pub fn set_window(&mut self, bytes: usize) {
        self.window = Some(bytes);
    }

    /// The paths of the files open now (being merged).
    pub fn open_files(&self) -> impl Iterator<Item = &Path> {
        self.open.iter().map(|o| o.path.as_path())
    }

    /// Opens the next pending file and reads its first record.
    fn open_next(&mut self) -> Result<(), SourceError> {
        let Some(p) = self.pending.pop() else {
            return Ok(());
        };
        let mut file = PcapFile::open(&p.path).map_err(|e| in_file(&p.path, e))?;
        if let Some(w) = self.window {
            file.set_window(w);
        }
        if let Some(s) = &self.stop {
            file.stop_on(Arc::clone(s));
        }
        match file.next_record().map_err(|e| in_file(&p.path, e))? {
            Some(head) => self.open.push(Open {
                path: p.path,
                file,
                head,
                size: p.size,
            }),
            // it had a packet when the set was opened: it changed since (or was stopped)
            None => self.closed += p.size,
        }
        Ok(())
    }

    /// Moves the file delivered last on to its next record, closing it at its end.
    fn advance(&mut self, i: usize) -> Result<(), SourceError> {
        let o = &mut self.open[i];
        match o.file.next_record() {
            Ok(Some(r)) => o.head = r,
            Ok(None) => {
                self.closed += o.size;
                self.open.swap_remove(i);
                self.publish();
            }
            Err(e) => return Err(in_file(&o.path, e)),
        }
        Ok(())
    }

    fn publish(&self) {
        let open: u64 = self.open.iter().map(Open::read).sum();
        self.progress.store(self.closed + open, Ordering::Relaxed);
    }

    /// The open file with the earliest head (the first of equals).
    fn earliest(&self) -> Option<(usize, u64)> {
        let mut best: Option<(usize, u64)> = None;
        for (i, o) in self.open.iter().enumerate() {
            if best.is_none_or(|(_, t)| o.head.ts_ns < t) {
                best = Some((i, o.head.ts_ns));
            }
        }
        best
    }
}

impl PacketSource for FileSet {
    /// The files read as streams (compressed) end once `stop` is set, those open now and
    /// those opened later.
    fn stop_on(&mut self, stop: Arc<AtomicBool>) {
        for o in &mut self.open {
            o.file.stop_on(Arc::clone(&stop));
        }
        self.stop = Some(stop);
    }

    fn next_packet(&mut self) -> Result<Option<PacketRef<'_>>, SourceError> {
        if let Some(i) = self.delivered.take() {
            self.advance(i)?;
        }
        // open every file whose first packet comes before the earliest head
        while let Some(next) = self.pending.last() {
            match self.earliest() {
                Some((_, t)) if t < next.first_ts => break,
                _ => self.open_next()?,
            }
        }
        let Some((i, _)) = self.earliest() else {
            self.publish();
            return Ok(None);
        };
        self.delivered = Some(i);
        self.packets += 1;
        if self.packets.is_multiple_of(PROGRESS_EVERY) {
            self.publish();
        }
        let o = &self.open[i];
        Ok(Some(PacketRef {
            data: o.file.data(&o.head),
            ts_ns: o.head.ts_ns,
            orig_len: o.head.orig_len,
            link: o.head.link,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::{Builder, PcapWriter, PcapngWriter};
    use crate::packet::LinkType;

    const T0: u64 = 1_700_000_000_000_000_000;

    fn frame(i: u32) -> Vec<u8> {
        Builder::ethernet()
            .ipv4([10, 0, 0, 1], [10, 0, (i >> 8) as u8, i as u8])
            .udp(1000, 53)
            .payload(&i.to_be_bytes())
            .build()
    }

    /// A classic pcap of the packets `ids`, packet `i` stamped `T0 + i` µs.
    fn pcap(ids: impl Iterator<Item = u32>) -> Vec<u8> {
        let mut w = PcapWriter::new(Vec::new(), LinkType::ETHERNET, 65535, false, false).unwrap();
        for i in ids {
            let f = frame(i);
            w.write(T0 + u64::from(i) * 1000, &f, f.len() as u32)
                .unwrap();
        }
        w.into_inner()
    }

    fn ids(set: &mut FileSet) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some(p) = set.next_packet().unwrap() {
            // the payload after Ethernet, IPv4 and UDP headers (the frame is padded to 60)
            out.push(u32::from_be_bytes(p.data[42..46].try_into().unwrap()));
        }
        out
    }

    #[test]
    fn rotated_files_read_in_time_order_whatever_their_names() {
        let dir = tempfile::tempdir().unwrap();
        // as `tcpdump -C` names them: trace.pcap, trace.pcap1, ... trace.pcap10 sorts
        // before trace.pcap2; one is gzip compressed, one is pcapng
        let mut paths = Vec::new();
        for k in 0..12u32 {
            let name = if k == 0 {
                "trace.pcap".to_string()
            } else {
                format!("trace.pcap{k}")
            };
            let path = dir.path().join(name);
            let bytes = pcap(k * 100..(k + 1) * 100);
            let bytes = match k {
                3 => {
                    use std::io::Write;
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    e.write_all(&bytes).unwrap();
                    e.finish().unwrap()
                }
                7 => {
                    let mut ng = PcapngWriter::new(Vec::new()).unwrap();
                    let e = ng.interface(LinkType::ETHERNET, 0, Some(9)).unwrap();
                    for i in k * 100..(k + 1) * 100 {
                        let f = frame(i);
                        ng.packet(e, T0 + u64::from(i) * 1000, &f, f.len() as u32)
                            .unwrap();
                    }
                    ng.into_inner()
                }
                _ => bytes,
            };
            std::fs::write(&path, bytes).unwrap();
            paths.push(path);
        }
        paths.sort(); // by name: trace.pcap, trace.pcap1, trace.pcap10, trace.pcap11, trace.pcap2...
        let mut set = FileSet::open(&paths).unwrap();
        let (progress, total) = set.progress();
        let sizes: u64 = paths
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert_eq!(total, sizes);
        assert_eq!(ids(&mut set), (0..1200).collect::<Vec<_>>());
        assert_eq!(progress.load(Ordering::Relaxed), total);
        assert_eq!(set.open_files().count(), 0, "every file closed at its end");
    }

    #[test]
    fn overlapping_files_interleave_by_time() {
        // a two-port tap: even packets on one port, odd on the other, plus an empty file
        let dir = tempfile::tempdir().unwrap();
        let (a, b, e) = (
            dir.path().join("a.pcap"),
            dir.path().join("b.pcap"),
            dir.path().join("empty.pcap"),
        );
        std::fs::write(&a, pcap((0..1000).filter(|i| i % 2 == 0))).unwrap();
        std::fs::write(&b, pcap((0..1000).filter(|i| i % 2 == 1))).unwrap();
        std::fs::write(&e, pcap(std::iter::empty())).unwrap();
        let mut set = FileSet::open(&[b.clone(), e, a.clone()]).unwrap();
        assert_eq!(ids(&mut set), (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn bad_members_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.pcap");
        std::fs::write(&good, pcap(0..10)).unwrap();
        let junk = dir.path().join("junk.pcap");
        std::fs::write(&junk, b"not a capture at all").unwrap();
        let e = FileSet::open(&[good.clone(), junk.clone()]).unwrap_err();
        assert!(
            matches!(&e, SourceError::InFile { path, source } if path == &junk
                && matches!(**source, SourceError::BadMagic { .. })),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with(&junk.display().to_string()),
            "{e}"
        );
        let e = FileSet::open(&[good.clone(), good.clone()]).unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        for odd in [dir.path().to_path_buf(), PathBuf::from("-")] {
            let e = FileSet::open(&[good.clone(), odd]).unwrap_err();
            assert!(e.to_string().contains("not a regular file"), "{e}");
        }
        let missing = dir.path().join("missing.pcap");
        let e = FileSet::open(&[good.clone(), missing]).unwrap_err();
        assert!(matches!(e, SourceError::Open { .. }), "{e:?}");

        // a file cut short mid-packet: everything before it, then the error, naming the file
        let cut = dir.path().join("cut.pcap");
        let bytes = pcap(10..20);
        std::fs::write(&cut, &bytes[..bytes.len() - 5]).unwrap();
        let mut set = FileSet::open(&[cut.clone(), good]).unwrap();
        let mut n = 0;
        let e = loop {
            match set.next_packet() {
                Ok(Some(_)) => n += 1,
                Ok(None) => panic!("the cut went unnoticed"),
                Err(e) => break e,
            }
        };
        assert_eq!(n, 19);
        assert!(
            matches!(&e, SourceError::InFile { path, source } if path == &cut
                && matches!(**source, SourceError::Truncated { .. })),
            "{e:?}"
        );
    }
}
