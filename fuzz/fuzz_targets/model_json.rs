#![no_main]
//! The model's JSON reader accepts exactly what serde_json accepts: any text is refused as
//! malformed JSON by `model::parse` if and only if serde_json refuses it. Seed it with
//! `corpus/model_parse` too (`cargo fuzz run -s none model_json corpus/model_json corpus/model_parse`).
use libfuzzer_sys::fuzz_target;
use mplane::model::{self, ModelError};
use mplane::registry::Registries;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let regs = Registries::new();
    let ours = model::parse(text, &regs);
    let serde = serde_json::from_str::<serde_json::Value>(text);
    let ours_malformed = matches!(ours, Err(ModelError::Json(_)));
    assert_eq!(
        ours_malformed,
        serde.is_err(),
        "{text:?}: ours {ours:?}, serde_json {serde:?}"
    );
});
