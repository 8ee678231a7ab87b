#![no_main]
//! Registry documents: loading never panics.
use libfuzzer_sys::fuzz_target;
use mplane::registry::Registries;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut regs = Registries::new();
    if let Ok(r) = regs.load_str(text) {
        for e in r.elements() {
            assert!(r.element(&e.name).is_some());
        }
    }
});
