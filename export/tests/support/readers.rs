//! The analysts' readers as test peers: pyarrow, DuckDB and (if it installs) polars from
//! PyPI, in a venv under the build directory (`target/peer-venv-export`), created once and
//! shared by every test binary that includes this file (`#[path]`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// Peer versions the assertions were written against (type names printed by
/// readers change between releases). Bump together with the assertions.
pub const PYARROW: &str = "26.0.1";
/// See [`PYARROW`].
pub const DUCKDB: &str = "2.0.1";
/// See [`PYARROW`].
pub const POLARS: &str = "2.1.0";

/// Runs `script` (with the venv path as `$1`) under `flock` on the venv's
/// lock file, so parallel test processes (nextest) do not race.
fn locked_setup(venv: &Path, script: &str) -> std::process::Output {
    let lock = venv.with_extension("lock");
    Command::new("flock")
        .env("PYARROW", PYARROW)
        .env("DUCKDB", DUCKDB)
        .env("POLARS", POLARS)
        .arg(&lock)
        .args(["sh", "-c", script, "sh"])
        .arg(venv)
        .output()
        .expect("run flock (util-linux) to set up the peer venv")
}

fn venv_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("peer-venv-export")
}

/// The venv's python with pyarrow and duckdb, created once per target dir.
pub fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = venv_dir();
        let out = locked_setup(
            &venv,
            r#"
set -e
V="$1"
if [ ! -f "$V/.ready-$PYARROW-$DUCKDB" ]; then
  rm -rf "$V"
  python3 -m venv "$V"
  "$V/bin/pip" install -q "pyarrow==$PYARROW" "duckdb==$DUCKDB"
  touch "$V/.ready-$PYARROW-$DUCKDB"
fi
"#,
        );
        assert!(
            out.status.success(),
            "creating peer venv failed (needs python3-venv and PyPI): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        venv.join("bin/python")
    })
}

/// Tries once per target dir to add polars to the venv; its checks are
/// skipped (with a message) if that failed.
fn try_polars() {
    let venv = venv_dir();
    let _ = python();
    let out = locked_setup(
        &venv,
        r#"
V="$1"
if [ ! -f "$V/.polars-tried-$POLARS" ]; then
  "$V/bin/pip" install -q "polars==$POLARS" >/dev/null 2>&1 || echo "polars install failed" >&2
  touch "$V/.polars-tried-$POLARS"
fi
"#,
    );
    if !out.stderr.is_empty() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Runs `body` (Python with `pl` = polars, `json` and `sys` imported) with `args` in
/// `sys.argv[1:]`, its last stdout line JSON, after trying once to install polars; `None`,
/// said on stderr, when polars is not available (its checks are then skipped).
pub fn polars(body: &str, args: &[&str]) -> Option<Value> {
    try_polars();
    let script = format!(
        "import json, sys\ntry:\n    import polars as pl\nexcept Exception as e:\n    \
         print(json.dumps({{\"skipped\": str(e)}}))\n    sys.exit(0)\n{body}"
    );
    let out = py(&script, args);
    match out.get("skipped") {
        Some(why) => {
            eprintln!("polars not available, skipping polars checks: {why}");
            None
        }
        None => Some(out),
    }
}

/// Runs a Python snippet with `args` in `sys.argv[1:]`; its last stdout
/// line is JSON.
pub fn py(script: &str, args: &[&str]) -> Value {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python failed:\n{script}\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or("null");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("bad JSON {last:?}: {e}"))
}
