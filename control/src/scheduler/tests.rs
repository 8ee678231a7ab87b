//! Scheduler tests with a fake clock: no sleeps, no threads.

use super::*;
use crate::azn::{Azn, AznMode};
use crate::config::Setting;
use crate::model::parse;
use crate::registry::Registries;

const S: i64 = 1_000_000;

fn t(s: i64) -> Timestamp {
    // 2026-01-01 00:00:00 UTC + s seconds
    Timestamp::from_micros(1_767_225_600 * S + s * S)
}

fn cap(label: &str, when: &str) -> Statement {
    let text = format!(
        r#"{{"capability":"measure","version":1,"label":"{label}","when":"{when}",
        "parameters":{{"source.ip4":"127.0.0.1","destination.ip4":"*"}},
        "results":["delay.twoway.icmp.us"]}}"#
    );
    match parse(&text, &Registries::default()).unwrap() {
        Message::Statement(s) => s,
        m => panic!("{m:?}"),
    }
}

fn spec_of(cap: &Statement, when: &str) -> Statement {
    let mut s = cap.specification_for();
    s.parameters
        .as_mut()
        .unwrap()
        .get_mut("destination.ip4")
        .unwrap()
        .raw = serde_json::Value::String("10.0.0.1".into());
    s.when = Some(crate::model::WhenText::parse(when).unwrap());
    s.token = Some(s.default_token());
    s
}

/// Echoes one row; fails when told to.
struct Echo {
    cap: Statement,
    fail: bool,
}

impl Service for Echo {
    fn capability(&self) -> &Statement {
        &self.cap
    }
    fn run(&self, spec: &Statement, ctx: JobContext) -> Outcome {
        if self.fail {
            return Err("deliberate".into());
        }
        let mut r = spec.result_for();
        let v = if ctx.interrupt.is_set() { "1" } else { "7" };
        r.push_row_text(&[v]).map_err(|e| e.to_string())?;
        Ok(r)
    }
}

fn sched(fail: bool, max: usize) -> (Scheduler, Statement) {
    let c = cap("echo-ip4", "now ... future");
    let mut s = Scheduler::new(Azn::off(), max);
    s.add_service(
        Arc::new(Echo {
            cap: c.clone(),
            fail,
        }),
        Some("https://127.0.0.1:1/"),
    );
    let c = s.capabilities().next().unwrap().clone();
    (s, c)
}

fn run_all(s: &mut Scheduler, now: Timestamp) -> usize {
    let runs = s.poll(now);
    let n = runs.len();
    for r in runs {
        let out = r.service.run(&r.spec, r.ctx.clone());
        s.complete(r.id, out, now);
    }
    n
}

fn kind(m: &Message) -> &'static str {
    m.kind_name()
}

#[test]
fn capability_gets_token_and_link() {
    let (s, c) = sched(false, 0);
    assert!(c.token.is_some());
    assert_eq!(c.link.as_deref(), Some("https://127.0.0.1:1/"));
    assert!(s.capability(c.token.as_deref().unwrap()).is_some());
}

#[test]
fn single_job_receipt_result_then_forgotten() {
    let (mut s, c) = sched(false, 0);
    let id = Identity::unauthenticated();
    let spec = spec_of(&c, "now");
    let tok = spec.token.clone().unwrap();
    let r = s.handle(&spec.clone().into(), &id, t(0));
    assert_eq!(kind(&r), "receipt");
    assert_eq!(r.token(), Some(tok.as_str()));
    // identical token while the job exists -> receipt again, no second job
    let r = s.handle(&spec.clone().into(), &id, t(0));
    assert_eq!(kind(&r), "receipt");
    assert_eq!(s.job_count(), 1);
    assert_eq!(run_all(&mut s, t(0)), 1);
    assert!(s.is_finished(&tok));
    let r = s.redeem(&tok, t(1));
    assert_eq!(kind(&r), "result");
    assert_eq!(r.token(), Some(tok.as_str()));
    let r = s.redeem(&tok, t(1));
    assert_eq!(kind(&r), "exception");
    assert!(r.unparse().contains(UNKNOWN_JOB));
}

#[test]
fn failed_job_keeps_exception() {
    let (mut s, c) = sched(true, 0);
    let spec = spec_of(&c, "now");
    let tok = spec.token.clone().unwrap();
    s.submit(&spec, &Identity::unauthenticated(), t(0));
    run_all(&mut s, t(0));
    for _ in 0..2 {
        let r = s.redeem(&tok, t(1));
        assert_eq!(kind(&r), "exception");
        assert!(r.unparse().contains("deliberate"));
        assert_eq!(r.token(), Some(tok.as_str()));
    }
}

#[test]
fn future_start_waits_for_clock() {
    let (mut s, c) = sched(false, 0);
    let when = format!("{} ... {}", fmt_ts(t(10)), fmt_ts(t(20)));
    let spec = spec_of(&c, &when);
    s.submit(&spec, &Identity::unauthenticated(), t(0));
    assert_eq!(s.next_wakeup(), Some(t(10)));
    assert_eq!(run_all(&mut s, t(5)), 0);
    assert_eq!(run_all(&mut s, t(10)), 1);
}

fn fmt_ts(ts: Timestamp) -> String {
    let mut out = String::new();
    ts.write(&mut out);
    out
}

#[test]
fn end_of_scope_and_interrupt_set_flag() {
    let (mut s, c) = sched(false, 0);
    let spec = spec_of(&c, "now + 10s");
    let tok = spec.token.clone().unwrap();
    s.submit(&spec, &Identity::unauthenticated(), t(0));
    let runs = s.poll(t(0));
    assert_eq!(runs.len(), 1);
    assert!(!runs[0].ctx.interrupt.is_set());
    assert_eq!(s.next_wakeup(), Some(t(10)));
    s.poll(t(10));
    assert!(runs[0].ctx.interrupt.is_set());
    // the scope ended; nobody interrupted the job
    assert!(!runs[0].ctx.interrupt.is_interrupted());

    // explicit interrupt of another job
    let spec2 = spec_of(&c, "now + 100s");
    let tok2 = spec2.token.clone().unwrap();
    s.submit(&spec2, &Identity::unauthenticated(), t(20));
    let runs2 = s.poll(t(20));
    let r = s.interrupt(&tok2, t(21));
    assert_eq!(kind(&r), "receipt");
    assert!(runs2[0].ctx.interrupt.is_set());
    assert!(runs2[0].ctx.interrupt.is_interrupted());
    let out = runs2[0].service.run(&runs2[0].spec, runs2[0].ctx.clone());
    s.complete(runs2[0].id, out, t(21));
    let r = s.redeem(&tok2, t(22));
    assert_eq!(kind(&r), "result");
    assert!(
        r.unparse().contains("\"1\""),
        "partial result: {}",
        r.unparse()
    );
    let _ = tok;
}

#[test]
fn repeated_job_envelope_retention_and_finish() {
    let (mut s, c) = sched(false, 2);
    let spec = spec_of(&c, "repeat now + 5s / 1s { now + 0s }");
    let tok = spec.token.clone().unwrap();
    let r = s.submit(&spec, &Identity::unauthenticated(), t(0));
    assert_eq!(kind(&r), "receipt");
    let mut n = 0;
    for i in 0..8 {
        n += run_all(&mut s, t(i));
    }
    assert!(n >= 5, "{n} runs");
    assert!(s.is_finished(&tok));
    let r = s.redeem(&tok, t(9));
    let Message::Envelope(env) = &r else {
        panic!("{}", r.unparse())
    };
    assert_eq!(env.token.as_deref(), Some(tok.as_str()));
    assert_eq!(env.label, spec.label);
    assert_eq!(env.contents.len(), 2, "scheduler_max_results");
    for m in &env.contents {
        assert_eq!(kind(m), "result");
        assert_ne!(m.token(), Some(tok.as_str()), "sub-spec token");
    }
    // finished repeated job forgotten after one reply
    assert_eq!(kind(&s.redeem(&tok, t(9))), "exception");
}

#[test]
fn exceptions_for_mismatch_permission_and_type() {
    let (mut s, c) = sched(false, 0);
    let id = Identity::unauthenticated();
    let mut other = spec_of(&c, "now");
    other.results = None;
    other.token = Some(other.default_token());
    let r = s.handle(&other.into(), &id, t(0));
    assert!(r.unparse().contains(NO_SERVICE), "{}", r.unparse());
    let r = s.handle(&c.clone().into(), &id, t(0));
    assert!(r.unparse().contains(UNEXPECTED));
    let r = s.interrupt("nope", t(0));
    assert!(r.unparse().contains(UNKNOWN_JOB));

    // authorisation on: nobody has a role
    let roles = vec![setting("Some.Body", "admin")];
    let azns = vec![setting("echo", "admin")];
    let mut s2 = Scheduler::new(Azn::from_settings(&roles, &azns, AznMode::Substring), 0);
    s2.add_service(
        Arc::new(Echo {
            cap: c.clone(),
            fail: false,
        }),
        None,
    );
    let r = s2.submit(&spec_of(&c, "now"), &Identity::new("Other.Body"), t(0));
    assert!(r.unparse().contains(NO_PERMISSION), "{}", r.unparse());
    assert_eq!(s2.capabilities_for(&Identity::new("Other.Body")).count(), 0);
    assert_eq!(s2.capabilities_for(&Identity::new("Some.Body")).count(), 1);
    let r = s2.submit(&spec_of(&c, "now"), &Identity::new("Some.Body"), t(0));
    assert_eq!(kind(&r), "receipt");
}

#[test]
fn unredeemed_results_expire() {
    let (mut s, c) = sched(false, 0);
    s.set_result_ttl(60 * S);
    let spec = spec_of(&c, "now");
    let tok = spec.token.clone().unwrap();
    s.submit(&spec, &Identity::unauthenticated(), t(0));
    run_all(&mut s, t(0));
    s.poll(t(30));
    assert_eq!(s.job_count(), 1);
    s.poll(t(61));
    assert_eq!(s.job_count(), 0);
    assert_eq!(kind(&s.redeem(&tok, t(62))), "exception");
}

fn setting(k: &str, v: &str) -> Setting {
    Setting {
        key: k.into(),
        value: v.into(),
        line: 1,
    }
}

#[test]
fn job_limit() {
    let (mut s, c) = sched(false, 0);
    s.set_max_jobs(1);
    let id = Identity::unauthenticated();
    let r = s.submit(&spec_of(&c, "now"), &id, t(0));
    assert_eq!(kind(&r), "receipt");
    let r = s.submit(&spec_of(&c, "now + 1s"), &id, t(0));
    assert!(r.unparse().contains(TOO_MANY_JOBS), "{}", r.unparse());
}
