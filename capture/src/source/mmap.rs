//! Read-only memory mapping of a capture file, with a window released behind the reader.
//!
//! This is one of the two modules allowed `unsafe` (with affinity): mapping a file and telling
//! the kernel that a consumed range is no longer needed.

#![allow(unsafe_code)]

use std::fs::File;
use std::path::Path;

use memmap2::{Advice, Mmap, MmapOptions, UncheckedAdvice};

/// A read-only, shared mapping of a whole file (or, for tests and fuzzing, owned bytes).
#[derive(Debug)]
pub struct MappedFile {
    map: Option<Mmap>,
    owned: Vec<u8>,
    page: usize,
}

impl MappedFile {
    /// Maps `path` read-only. An empty file gives an empty mapping; a directory, pipe, socket
    /// or device is an error (only regular files have a length to map).
    ///
    /// Caveat shared by every mmap-based reader: if another process truncates the file while it
    /// is mapped, reading the lost pages raises SIGBUS. Capture files are written once.
    pub fn open(path: &Path, populate: bool) -> std::io::Result<MappedFile> {
        Self::from_file(&File::open(path)?, populate)
    }

    /// Maps an open file read-only (as [`Self::open`]); the mapping keeps the file's contents
    /// alive after `file` is closed, even an unnamed temporary file.
    pub fn from_file(file: &File, populate: bool) -> std::io::Result<MappedFile> {
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "is a directory, not a capture file",
            ));
        }
        if !meta.is_file() {
            // a pipe, socket or device has no length to map
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file (a pipe or device cannot be mapped: write the capture to a \
                 file first)",
            ));
        }
        let len = meta.len();
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = if page > 0 { page as usize } else { 4096 };
        if len == 0 {
            return Ok(MappedFile {
                map: None,
                owned: Vec::new(),
                page,
            });
        }
        let mut opts = MmapOptions::new();
        if populate {
            opts.populate();
        }
        // SAFETY: the mapping is read-only (PROT_READ, MAP_SHARED) and we never create mutable
        // references into it. The remaining hazard is concurrent truncation by another process
        // (SIGBUS, not silent corruption), documented above; capture files are immutable inputs.
        let map = unsafe { opts.map(file)? };
        // Sequential read-ahead; failure is harmless (advice only).
        let _ = map.advise(Advice::Sequential);
        Ok(MappedFile {
            map: Some(map),
            owned: Vec::new(),
            page,
        })
    }

    /// Wraps bytes already in memory (no mapping; `release` is a no-op).
    pub fn from_vec(bytes: Vec<u8>) -> MappedFile {
        MappedFile {
            map: None,
            owned: bytes,
            page: 4096,
        }
    }

    /// The mapped bytes.
    #[inline(always)]
    pub fn bytes(&self) -> &[u8] {
        match &self.map {
            Some(m) => m,
            None => &self.owned,
        }
    }

    /// Tells the kernel the pages of `start..end` (rounded inwards to pages) are no longer
    /// needed, so the process's resident set stays bounded while a large file streams through.
    pub fn release(&self, start: usize, end: usize) {
        let Some(map) = &self.map else { return };
        let s = start.div_ceil(self.page) * self.page;
        let e = (end.min(map.len()) / self.page) * self.page;
        if e > s {
            // SAFETY: MADV_DONTNEED on a read-only *shared file* mapping only drops this
            // process's page-table entries; a later access re-faults the same bytes from the page
            // cache (madvise(2): "repopulating the memory contents from the up-to-date contents
            // of the underlying mapped file"). Existing `&[u8]` borrows therefore never observe
            // changed contents, which is what UncheckedAdvice's contract asks us to justify.
            let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, s, e - s) };
        }
    }

    /// Hints that `start..end` will be read soon (read-ahead). Harmless if it fails.
    pub fn will_need(&self, start: usize, end: usize) {
        let Some(map) = &self.map else { return };
        let s = (start / self.page) * self.page;
        let e = end.min(map.len());
        if e > s {
            let _ = map.advise_range(Advice::WillNeed, s, e - s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let e = MappedFile::open(dir.path(), false).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::IsADirectory);
        assert!(e.to_string().contains("is a directory"), "{e}");
        // a character device: its length (0) says nothing about what reading it gives
        let e = MappedFile::open(Path::new("/dev/null"), false).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").unwrap();
        assert!(MappedFile::open(&empty, false).unwrap().bytes().is_empty());
    }
}
