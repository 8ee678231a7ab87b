#![no_main]
//! Message parsing never panics; whatever parses re-emits and parses back equal.
use libfuzzer_sys::fuzz_target;
use mplane::model;
use mplane::registry::Registries;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let regs = Registries::new();
    if let Ok(m) = model::parse(text, &regs) {
        let out = m.unparse();
        let back = model::parse(&out, &regs).expect("own output parses");
        assert_eq!(back.unparse(), out);
        let _ = m.unparse_token_only();
        if let Some(s) = m.as_statement() {
            let _ = s.default_token();
            let _ = s.schema_hash();
        }
    }
});
