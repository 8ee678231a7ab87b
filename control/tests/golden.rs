//! Every mPlane message the reference SDK produced (offline golden files and
//! bodies captured on the wire) parses and unparses to the same bytes; tokens
//! and schema hashes equal the reference's.

use std::path::{Path, PathBuf};

use mplane::model::{self, Message, StatementKind};
use mplane::registry::Registries;
use serde_json::Value as Json;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/golden")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    v
}

fn is_mplane(text: &str) -> bool {
    const KINDS: [&str; 9] = [
        "capability",
        "specification",
        "result",
        "receipt",
        "redemption",
        "withdrawal",
        "interrupt",
        "exception",
        "envelope",
    ];
    match serde_json::from_str::<Json>(text) {
        Ok(Json::Object(m)) => KINDS.iter().any(|k| m.contains_key(*k)),
        _ => false,
    }
}

/// Parses and unparses `text`: byte-identical when the reference wrote it
/// (pretty-printed), the same JSON value when a person wrote it compactly.
fn round_trip(name: &str, text: &str) -> Message {
    let regs = Registries::new();
    let msg = model::parse(text, &regs).unwrap_or_else(|e| panic!("{name}: {e}"));
    let out = msg.unparse();
    if text.starts_with("{\n") {
        assert_eq!(out, text, "{name}: not byte-identical");
    } else {
        let a: Json = serde_json::from_str(text).unwrap();
        let b: Json = serde_json::from_str(&out).unwrap();
        assert_eq!(a, b, "{name}: not the same JSON value");
    }
    // and our output parses back to the same message
    assert_eq!(model::parse(&out, &regs).unwrap(), msg, "{name}");
    msg
}

#[test]
fn offline_golden_files_round_trip_byte_for_byte() {
    let fs = files(&golden());
    assert!(fs.len() >= 23, "golden files missing");
    for f in fs {
        let text = std::fs::read_to_string(&f).unwrap();
        round_trip(&f.display().to_string(), &text);
    }
}

#[test]
fn live_client_initiated_bodies_round_trip() {
    let mut n = 0;
    for f in files(&golden().join("live")) {
        let text = std::fs::read_to_string(&f).unwrap();
        round_trip(&f.display().to_string(), &text);
        n += 1;
    }
    assert!(n >= 25);
}

#[test]
fn live_component_initiated_bodies_round_trip() {
    let mut n = 0;
    for f in files(&golden().join("live-initiated")) {
        let rec: Json = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        for side in ["request", "response"] {
            if let Some(body) = rec[side].as_str()
                && is_mplane(body)
            {
                round_trip(&format!("{}:{side}", f.display()), body);
                n += 1;
            }
        }
    }
    assert!(n >= 30, "{n}");
}

fn load(name: &str) -> Message {
    let text = std::fs::read_to_string(golden().join(name)).unwrap();
    model::parse(&text, &Registries::new()).unwrap()
}

#[test]
fn tokens_equal_the_reference() {
    // capabilities: the runtime-assigned default token (mpcv hash)
    for f in [
        "capability-ping-average-ip4.json",
        "capability-ping-detail-ip4.json",
        "capability-ping-average-ip6.json",
        "capability-ping-detail-ip6.json",
    ] {
        let m = load(f);
        let s = m.as_statement().unwrap();
        assert_eq!(s.default_token(), s.token.as_deref().unwrap(), "{f}");
    }
    // specifications: the pv hash
    for f in [
        "specification.json",
        "specification-repeat.json",
        "specification-cron.json",
    ] {
        let m = load(f);
        let s = m.as_statement().unwrap();
        assert_eq!(s.kind, StatementKind::Specification);
        assert_eq!(s.default_token(), s.token.as_deref().unwrap(), "{f}");
    }
}

#[test]
fn specifications_match_their_capabilities() {
    let cap = load("capability-ping-average-ip4.json");
    let spec = load("specification.json");
    let (cap, spec) = (cap.as_statement().unwrap(), spec.as_statement().unwrap());
    assert_eq!(cap.schema_hash(), spec.schema_hash());
    let now = mplane::value::Timestamp::parse("2035-12-24 22:18:00").unwrap();
    model::check_fulfills(spec, cap, now).unwrap();
    let detail = load("capability-ping-detail-ip4.json");
    assert_ne!(
        detail.as_statement().unwrap().schema_hash(),
        spec.schema_hash()
    );
}

#[test]
fn live_client_tokens_equal_the_reference() {
    // The reference client re-tokens relative specifications with the resolved
    // datetimes, which the capture does not record; absolute ones must match.
    let m = load("live/05-POST-request-specification.json");
    let s = m.as_statement().unwrap();
    assert!(!s.when().is_definite());
    // its results carry its token
    let r = load("live/06-POST-response-result.json");
    assert_eq!(r.token(), s.token.as_deref());
}
