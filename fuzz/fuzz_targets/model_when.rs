#![no_main]
//! Temporal scopes: parsing never panics; both output forms parse back equal;
//! evaluation never panics.
use libfuzzer_sys::fuzz_target;
use mplane::value::{TimeValue, Timestamp};
use mplane::when::When;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(w) = When::parse(text) {
        assert_eq!(When::parse(&w.to_string()).expect("spec form parses"), w);
        // The reference form is lossy where the reference is (an inner scope
        // without duration is dropped), but it is stable.
        let r = When::parse(&w.reference_string()).expect("reference form parses");
        assert_eq!(r.reference_string(), w.reference_string());
        let now = Timestamp::from_micros(1_764_000_000_000_000);
        let _ = w.timer_delays(now);
        let _ = w.sort_scope(TimeValue::Now, now);
        if let Some(reps) = w.repetitions(now) {
            for r in reps.take(50) {
                let _ = r.reference_string();
            }
        }
    }
});
