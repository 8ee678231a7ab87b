//! Export files served over the component's HTTPS server: `GET`/`HEAD /export/<path>`.
//!
//! The export directory holds one subdirectory per job, named `<capability label>-<job>`
//! (see `mplane_probe::services::passive`). A peer may read the files of a job when it may use
//! the capability that made them (the same `[Authorizations]` check as for specifications);
//! everything else is 404, so nothing reveals which jobs exist. Hidden names (the sink's
//! `.…tmp` files in progress) and `..` are never served.
//!
//! * single byte ranges (`Range: bytes=A-B`, `bytes=A-`, `bytes=-N`) get 206 with
//!   `Content-Range`; an unsatisfiable range 416 with `Content-Range: bytes */LEN`; several
//!   ranges are answered with the whole file (RFC 9110 §14.2 lets a server ignore `Range`);
//! * `Accept-Ranges: bytes`, `Content-Length`, `Last-Modified`, and `Content-Type:
//!   application/vnd.apache.parquet` for `.parquet` (IANA-registered), else
//!   `application/octet-stream`;
//! * a directory (`/export/`, `/export/<job>/`) lists the files the peer may read as HTML;
//! * files are streamed from disk in 64 KiB chunks, never read whole into memory.

use std::io;
use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use hyper::header::{
    ACCEPT_RANGES, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderValue, LAST_MODIFIED, RANGE,
};
use hyper::{HeaderMap, Method, StatusCode};
use tokio::io::{AsyncRead, AsyncSeekExt, ReadBuf};

/// The media type of Parquet files.
pub const PARQUET_MEDIA_TYPE: &str = "application/vnd.apache.parquet";

const CHUNK: usize = 64 << 10;

/// A file's bytes `[start, start + len)` as a streaming body.
pub struct FileBody {
    file: tokio::fs::File,
    left: u64,
    buf: Box<[u8]>,
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let n = this
            .buf
            .len()
            .min(usize::try_from(this.left).unwrap_or(usize::MAX));
        let mut rb = ReadBuf::new(&mut this.buf[..n]);
        match Pin::new(&mut this.file).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let got = rb.filled();
                if got.is_empty() {
                    // the file shrank under us
                    return Poll::Ready(Some(Err(io::ErrorKind::UnexpectedEof.into())));
                }
                this.left -= got.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::copy_from_slice(got)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// What a request for `/export/...` resolves to.
#[derive(Debug)]
pub enum Served {
    /// A response with a small in-memory body.
    Small(StatusCode, &'static str, String),
    /// A file part to stream, with the status and headers to send.
    File {
        /// Status (200 or 206).
        status: StatusCode,
        /// Headers.
        headers: HeaderMap,
        /// The open file, positioned at the range start.
        file: Option<tokio::fs::File>,
        /// Bytes to send.
        len: u64,
    },
}

/// The relative path under the export root, or `None` if it is not a plain, visible path.
fn clean(rel: &str) -> Option<PathBuf> {
    let rel = percent_decode(rel)?;
    let p = Path::new(&rel);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => {
                let s = s.to_str()?;
                if s.starts_with('.') || s.is_empty() {
                    return None;
                }
                out.push(s);
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).ok()?;
    (!s.contains('\0')).then_some(s)
}

/// `true` when the job directory `dir` (`<label>-<job>`, the job id free of `-`) belongs to
/// one of `labels`.
fn allowed(dir: &str, labels: &[String]) -> bool {
    dir.rsplit_once('-')
        .is_some_and(|(label, job)| !job.is_empty() && labels.iter().any(|l| l == label))
}

/// Parses a single byte range against `len`: `Ok(None)` = no (usable) range, serve all;
/// `Err(())` = unsatisfiable.
fn byte_range(h: Option<&HeaderValue>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = h.and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len.saturating_sub(1))
    } else {
        let s: u64 = a.parse().map_err(|_| ())?;
        let e = if b.is_empty() {
            len.saturating_sub(1)
        } else {
            b.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1))
        };
        (s, e)
    };
    if len == 0 || start >= len || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

fn not_found() -> Served {
    Served::Small(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "no such file\n".into(),
    )
}

/// Serves `rel` (the path after `/export/`) from `root` for a peer allowed the capability
/// `labels`.
pub async fn serve(
    root: &Path,
    rel: &str,
    method: &Method,
    req_headers: &HeaderMap,
    labels: &[String],
) -> Served {
    if method != Method::GET && method != Method::HEAD {
        return Served::Small(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "use GET or HEAD\n".into(),
        );
    }
    let Some(rel_path) = clean(rel) else {
        return not_found();
    };
    let mut parts = rel_path.components();
    let job = parts
        .next()
        .and_then(|c| c.as_os_str().to_str())
        .map(str::to_string);
    if let Some(j) = &job
        && !allowed(j, labels)
    {
        return not_found();
    }
    let path = root.join(&rel_path);
    let Ok(meta) = tokio::fs::metadata(&path).await else {
        return not_found();
    };
    if meta.is_dir() {
        return listing(root, &rel_path, labels).await;
    }
    if job.is_none() || !meta.is_file() {
        return not_found();
    }
    let len = meta.len();
    let mut headers = HeaderMap::new();
    let ctype = if path.extension().is_some_and(|e| e == "parquet") {
        PARQUET_MEDIA_TYPE
    } else {
        "application/octet-stream"
    };
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(m) = meta.modified()
        && let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(m))
    {
        headers.insert(LAST_MODIFIED, v);
    }
    let (status, start, n) = match byte_range(req_headers.get(RANGE), len) {
        Ok(None) => (StatusCode::OK, 0, len),
        Ok(Some((s, e))) => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {s}-{e}/{len}")) {
                headers.insert(CONTENT_RANGE, v);
            }
            (StatusCode::PARTIAL_CONTENT, s, e - s + 1)
        }
        Err(()) => {
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                headers.insert(CONTENT_RANGE, v);
            }
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            return Served::File {
                status: StatusCode::RANGE_NOT_SATISFIABLE,
                headers,
                file: None,
                len: 0,
            };
        }
    };
    headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
    if method == Method::HEAD {
        return Served::File {
            status,
            headers,
            file: None,
            len: 0,
        };
    }
    let Ok(mut file) = tokio::fs::File::open(&path).await else {
        return not_found();
    };
    if start > 0 && file.seek(io::SeekFrom::Start(start)).await.is_err() {
        return not_found();
    }
    Served::File {
        status,
        headers,
        file: Some(file),
        len: n,
    }
}

/// The streaming body of a file part.
pub fn body(file: tokio::fs::File, len: u64) -> FileBody {
    FileBody {
        file,
        left: len,
        buf: vec![0; CHUNK].into_boxed_slice(),
    }
}

async fn listing(root: &Path, rel: &Path, labels: &[String]) -> Served {
    let mut rows = Vec::new();
    let mut stack = vec![rel.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(mut rd) = tokio::fs::read_dir(root.join(&d)).await else {
            continue;
        };
        while let Ok(Some(e)) = rd.next_entry().await {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let r = d.join(&name);
            let top = r
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or("");
            if !allowed(top, labels) {
                continue;
            }
            match e.metadata().await {
                Ok(m) if m.is_dir() => stack.push(r),
                Ok(m) => rows.push((r.to_string_lossy().into_owned(), m.len())),
                Err(_) => {}
            }
        }
    }
    rows.sort();
    let mut page = String::from("<html><head><title>Exports</title></head><body>\n");
    for (p, n) in rows {
        let p = p
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('\'', "&#39;");
        page.push_str(&format!("<a href='/export/{p}'>{p}</a> {n}<br/>\n"));
    }
    page.push_str("</body></html>\n");
    Served::Small(StatusCode::OK, "text/html; charset=UTF-8", page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let h = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(byte_range(None, 100), Ok(None));
        assert_eq!(byte_range(Some(&h("bytes=0-9")), 100), Ok(Some((0, 9))));
        assert_eq!(byte_range(Some(&h("bytes=90-")), 100), Ok(Some((90, 99))));
        assert_eq!(byte_range(Some(&h("bytes=-10")), 100), Ok(Some((90, 99))));
        assert_eq!(byte_range(Some(&h("bytes=-500")), 100), Ok(Some((0, 99))));
        assert_eq!(
            byte_range(Some(&h("bytes=50-5000")), 100),
            Ok(Some((50, 99)))
        );
        assert_eq!(byte_range(Some(&h("bytes=100-")), 100), Err(()));
        assert_eq!(byte_range(Some(&h("bytes=9-3")), 100), Err(()));
        assert_eq!(byte_range(Some(&h("bytes=-0")), 100), Err(()));
        assert_eq!(byte_range(Some(&h("bytes=0-1,5-6")), 100), Ok(None));
        assert_eq!(byte_range(Some(&h("items=0-1")), 100), Ok(None));
    }

    #[test]
    fn paths() {
        assert_eq!(
            clean("flows-ip4-ab/x.parquet"),
            Some(PathBuf::from("flows-ip4-ab/x.parquet"))
        );
        assert_eq!(clean("a/../b"), None);
        assert_eq!(clean("a/.x.parquet.tmp"), None);
        assert_eq!(clean("/etc/passwd"), None);
        assert_eq!(clean("a%2f..%2fb"), None);
        assert_eq!(clean("a%00b"), None);
        assert_eq!(clean("a%2"), None);
        assert!(allowed("flows-ip4-123", &["flows-ip4".into()]));
        assert!(!allowed("flows-ip4", &["flows-ip4".into()]));
        assert!(!allowed("flows-ip6-1", &["flows-ip4".into()]));
        assert!(!allowed("flows-ip4-export-1", &["flows-ip4".into()]));
        assert!(allowed("flows-ip4-export-1", &["flows-ip4-export".into()]));
    }
}
