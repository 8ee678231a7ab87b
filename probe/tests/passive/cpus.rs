//! The loops over every value of the export path (the flow column builders, the delta encoder,
//! the statistics, the level counts) are compiled for x86-64-v3, x86-64-v2 and the baseline,
//! and the CPU picks one at run time (`mplane_export::dispatched!`). This machine runs one of
//! them; `qemu-x86_64` (Debian's `qemu-user`) emulates CPUs of each level, so that `mpcom
//! replay` runs every version and each must write the file the native run writes, to the byte.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::support::fixture;

/// Set in the copy of the test run under emulation that only reports what the CPU offers.
const REPORT_FEATURES: &str = "MPLANE_TEST_REPORT_CPU_FEATURES";

/// The CPU features the dispatched versions need, as `name=bool` words on one line.
fn features() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        format!(
            "avx2={} bmi2={} lzcnt={} fma={} popcnt={} sse4.2={}",
            is_x86_feature_detected!("avx2"),
            is_x86_feature_detected!("bmi2"),
            is_x86_feature_detected!("lzcnt"),
            is_x86_feature_detected!("fma"),
            is_x86_feature_detected!("popcnt"),
            is_x86_feature_detected!("sse4.2"),
        )
    }
    #[cfg(not(target_arch = "x86_64"))]
    String::new()
}

/// `program args` run by `qemu-x86_64 -cpu model`; its standard output.
fn emulated(model: &str, program: &Path, args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = Command::new("qemu-x86_64")
        .args(["-cpu", model])
        .arg(program)
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("qemu-x86_64 (Debian package qemu-user): {e}"));
    assert!(
        out.status.success(),
        "{} under -cpu {model}: {}\n{}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The one Parquet file `mpcom replay` wrote into `dir`.
fn replay_output(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

#[test]
fn every_cpu_level_writes_the_same_file() {
    if std::env::var_os(REPORT_FEATURES).is_some() {
        println!("features: {}", features());
        return;
    }
    if !cfg!(target_arch = "x86_64") {
        eprintln!("skipping: the dispatched versions are x86-64 ones");
        return;
    }
    let mpcom = Path::new(env!("CARGO_BIN_EXE_mpcom"));
    let tmp = tempfile::tempdir().unwrap();
    let replay = |dir: &Path| {
        [
            "replay",
            fixture().to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
        ]
        .map(String::from)
    };
    let native = tmp.path().join("native");
    let st = Command::new(mpcom).args(replay(&native)).status().unwrap();
    assert!(st.success(), "mpcom replay: {st}");
    let want = std::fs::read(replay_output(&native)).unwrap();
    assert!(want.len() > 100_000, "{} bytes", want.len());
    let me = std::env::current_exe().unwrap();
    let test = "cpus::every_cpu_level_writes_the_same_file";
    // (qemu's CPU model, the version it runs, the features it must offer and lack)
    let levels = [
        ("qemu64", "baseline", &[][..], &["popcnt", "avx2"][..]),
        (
            "Denverton",
            "x86-64-v2 (an Atom)",
            &["popcnt", "sse4.2"],
            &["avx2"],
        ),
        (
            "Haswell",
            "x86-64-v3",
            &["avx2", "bmi2", "lzcnt", "fma"],
            &[],
        ),
    ];
    for (model, level, has, lacks) in levels {
        let report = emulated(
            model,
            &me,
            &[test, "--exact", "--nocapture", "--test-threads", "1"],
            &[(REPORT_FEATURES, "1")],
        );
        let line = report
            .lines()
            .find_map(|l| l.split_once("features: ").map(|(_, f)| f))
            .unwrap_or_else(|| panic!("no feature report under -cpu {model}: {report}"));
        for f in has {
            assert!(line.contains(&format!("{f}=true")), "{model}: {line}");
        }
        for f in lacks {
            assert!(line.contains(&format!("{f}=false")), "{model}: {line}");
        }
        let out = tmp.path().join(model);
        let args = replay(&out);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        emulated(model, mpcom, &args, &[]);
        let got = std::fs::read(replay_output(&out)).unwrap();
        assert!(
            got == want,
            "the {level} version wrote a different file ({} bytes against {})",
            got.len(),
            want.len()
        );
    }
}
