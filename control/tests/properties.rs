//! Property tests: unparse∘parse is the identity on generated messages,
//! scopes and constraints; scope evaluation is monotone; nothing panics on
//! arbitrary input.

mod support;

use mplane::constraint::Constraint;
use mplane::model::{self, StatementKind};
use mplane::registry::{Primitive, Registries};
use mplane::value::{TimeValue, Timestamp, Value};
use mplane::when::When;
use proptest::prelude::*;
use support::generate::{self as generate, Rng};

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn messages_round_trip(seed in any::<u64>()) {
        let regs = Registries::new();
        let msg = generate::message(&mut Rng::new(seed));
        let text = msg.unparse();
        let back = model::parse(&text, &regs).unwrap();
        prop_assert_eq!(&back, &msg);
        prop_assert_eq!(back.unparse(), text);
    }

    #[test]
    fn scopes_round_trip(seed in any::<u64>()) {
        let mut r = Rng::new(seed);
        for kind in [StatementKind::Capability, StatementKind::Specification, StatementKind::Result] {
            let text = generate::when(&mut r, kind);
            let w = When::parse(&text).unwrap();
            prop_assert_eq!(&When::parse(&w.to_string()).unwrap(), &w);
            prop_assert_eq!(&When::parse(&w.reference_string()).unwrap(), &w);
        }
    }

    #[test]
    fn values_round_trip(seed in any::<u64>()) {
        let mut r = Rng::new(seed);
        for prim in Primitive::ALL {
            let v = generate::value(&mut r, prim);
            let text = v.to_string();
            prop_assert_eq!(Value::parse(prim, &text).unwrap(), Some(v));
        }
    }

    #[test]
    fn reals_round_trip(x in any::<f64>().prop_filter("finite", |x| x.is_finite())) {
        let v = Value::Real(x);
        prop_assert_eq!(Value::parse(Primitive::Real, &v.to_string()).unwrap(), Some(v));
    }

    #[test]
    fn constraints_round_trip(seed in any::<u64>()) {
        let mut r = Rng::new(seed);
        let prim = *r.pick(&[Primitive::Natural, Primitive::Real, Primitive::Address, Primitive::Time, Primitive::String]);
        let a = generate::value(&mut r, prim);
        let b = generate::value(&mut r, prim);
        for text in [format!("{a} ... {b}"), format!("{a}"), "*".to_string()] {
            if let Ok(c) = Constraint::parse(prim, &text) {
                prop_assert_eq!(Constraint::parse(prim, &c.reference_string()).unwrap(), c.clone());
                if let Some(v) = c.single_value() {
                    prop_assert!(c.met_by(v));
                }
            }
        }
    }

    #[test]
    fn sort_scope_is_monotone(seed in any::<u64>(), steps in proptest::collection::vec(0i64..100_000_000_000, 1..20)) {
        let mut r = Rng::new(seed);
        let now = generate::timestamp(&mut r);
        let w = When::parse(&generate::when(&mut r, StatementKind::Specification)).unwrap();
        let mut t = now.add_micros(-50_000_000_000);
        let mut last = i64::MIN;
        for s in steps {
            t = t.add_micros(s);
            let o = w.sort_scope(TimeValue::At(t), now);
            prop_assert!(o >= last || (last < 0 && o <= 0) || last == 0 && o >= 0,
                "sort_scope went from {} to {} at {}", last, o, t);
            prop_assert!(!(last > 0 && o <= 0), "left the scope and came back");
            last = o;
        }
        let (sd, ed) = w.timer_delays(now);
        if let (Some(sd), Some(ed)) = (sd, ed) {
            prop_assert!(sd <= ed);
        }
    }

    #[test]
    fn repetitions_increase(seed in any::<u64>()) {
        let mut r = Rng::new(seed);
        let now = Timestamp::parse("2030-01-01 00:00:00").unwrap();
        let text = format!("repeat now + {}s / {}s {{ now + 1s }}", 1 + r.below(600), 1 + r.below(60));
        let w = When::parse(&text).unwrap();
        let starts: Vec<Timestamp> = w.repetitions(now).unwrap().take(1000).map(|x| match x.a {
            TimeValue::At(t) => t,
            _ => unreachable!(),
        }).collect();
        prop_assert!(!starts.is_empty());
        prop_assert!(starts.windows(2).all(|p| p[0] < p[1]));
        let (_, end) = w.datetimes(now);
        prop_assert!(starts.iter().all(|t| Some(*t) <= end && *t >= now));
    }

    #[test]
    fn arbitrary_text_never_panics(s in ".{0,400}") {
        let regs = Registries::new();
        let _ = model::parse(&s, &regs);
        let _ = When::parse(&s);
        for prim in Primitive::ALL {
            let _ = Constraint::parse(prim, &s);
            let _ = Value::parse(prim, &s);
        }
        let mut regs = regs;
        let _ = regs.load_str(&s);
    }

    #[test]
    fn mutated_messages_never_panic(seed in any::<u64>(), cut in any::<usize>(), flip in any::<u8>()) {
        let regs = Registries::new();
        let text = generate::message(&mut Rng::new(seed)).unparse();
        let mut bytes = text.into_bytes();
        let i = cut % bytes.len();
        bytes[i] ^= flip;
        let s = String::from_utf8_lossy(&bytes);
        let _ = model::parse(&s, &regs);
        if let Some(prefix) = s.get(..i) {
            let _ = model::parse(prefix, &regs);
        }
    }
}

mod scope_eval {
    use super::*;

    #[test]
    fn fits_and_follows_agree_on_reference_rules() {
        let now = Timestamp::parse("2026-11-25 10:00:00").unwrap();
        let cap = When::parse("now ... future / 1s").unwrap();
        for (spec, ok) in [
            ("now + 1s / 1s", true),
            ("now + 1s", false),
            ("2026-11-25 10:05:00 + 1m / 2s", true),
            ("2026-11-24 10:05:00 + 1m / 2s", false),
            ("repeat now + 4s / 2s { now + 1s / 1s }", true),
            ("repeat now + 3s / 1s", false),
        ] {
            let w = When::parse(spec).unwrap();
            assert_eq!(w.fits(&cap, now).is_ok(), ok, "{spec}");
            assert_eq!(w.follows_reference(&cap, now), ok, "{spec}");
        }
    }
}
