#![no_main]
//! Constraints and values of every primitive: never panic; the reference
//! form of a constraint parses back equal.
use libfuzzer_sys::fuzz_target;
use mplane::constraint::Constraint;
use mplane::registry::Primitive;
use mplane::value::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for prim in Primitive::ALL {
        if let Ok(c) = Constraint::parse(prim, text) {
            let again =
                Constraint::parse(prim, &c.reference_string()).expect("reference form parses");
            assert_eq!(again.reference_string(), c.reference_string());
        }
        if let Ok(Some(v)) = Value::parse(prim, text) {
            let _ = Value::parse(prim, &v.to_string());
        }
    }
});
