//! # Sans-IO job scheduler
//!
//! The scheduler owns the jobs created from specifications and decides what
//! runs when; it never sleeps, spawns or reads the clock. The runtime (the
//! HTTPS [`component`](crate::component)) drives it:
//!
//! ```text
//!   handle(msg, identity, now) ──► reply (receipt, result, exception, envelope)
//!   poll(now)                  ──► runs to start now (each a Service + sub-spec + interrupt flag)
//!   complete(run, outcome, now)◄── a run finished (Result statement or error text)
//!   next_wakeup(now)           ──► when to call poll again
//! ```
//!
//! A [`Service`] is bound to one capability. Its [`run`](Service::run) is
//! blocking and is given a [`JobContext`] with an [`Interrupt`] flag; it
//! returns a result statement or an error text, which becomes an mPlane
//! exception carrying the specification token. Long-running passive jobs poll
//! the flag and return partial results when it is set.
//!
//! Single specifications make one run at the scope's start (interrupted at
//! the scope's end). Repeated specifications make one run per repetition
//! (`When::repetitions`); each sub-specification has the absolute sub-scope
//! and its own default token; results are collected into an envelope carrying
//! the parent's token and label and the outer scope resolved at submission.
//! Unlike the reference, repeated jobs finish when their repetitions are
//! exhausted (or on interrupt), and are then forgotten after one reply.
//!
//! Exception texts are those of the reference (`No service registered for
//! specification`, `User has no permission to request this capability`,
//! `Unknown job`, `Unexpected message type`); matching a specification uses
//! [`model::find_capability`](crate::model::find_capability), which checks the verb
//! and the parameter constraints too (the reference checks neither).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::azn::Azn;
use crate::model::{Envelope, Exception, Message, Statement, StatementKind, find_capability};
use crate::tls::Identity;
use crate::value::{TimeValue, Timestamp};
use crate::when::When;

/// Reply text when no capability fits a specification.
pub const NO_SERVICE: &str = "No service registered for specification";
/// Reply text when the identity may not use the matching capability.
pub const NO_PERMISSION: &str = "User has no permission to request this capability";
/// Reply text for a redemption or interrupt of an unknown token.
pub const UNKNOWN_JOB: &str = "Unknown job";
/// Reply text for messages the scheduler does not take.
pub const UNEXPECTED: &str = "Unexpected message type";

/// Reply text when [`Scheduler::set_max_jobs`] jobs exist already (our own; the reference has no limit).
pub const TOO_MANY_JOBS: &str = "Too many jobs";

/// Default limit on jobs kept at once.
pub const DEFAULT_MAX_JOBS: usize = 10_000;

/// Default time an unredeemed finished job is kept: one hour (µs).
pub const DEFAULT_RESULT_TTL_MICROS: i64 = 3600 * 1_000_000;

/// A shared interrupt flag: set by the scheduler (interrupt message, shutdown, end of
/// scope), polled by the running service, which can tell the end of its scope from an
/// interrupt ([`Interrupt::is_interrupted`]).
#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<AtomicU8>);

/// [`Interrupt`] bits: an interrupt message or shutdown, the end of the scope.
const INTERRUPTED: u8 = 1;
const SCOPE_ENDED: u8 = 2;

impl Interrupt {
    /// A flag that is not set.
    pub fn new() -> Interrupt {
        Interrupt::default()
    }
    /// Sets the flag: the job is interrupted (an interrupt message, or shutdown).
    pub fn set(&self) {
        self.0.fetch_or(INTERRUPTED, Ordering::SeqCst);
    }
    /// Sets the flag because the run's scope has ended.
    pub fn end_scope(&self) {
        self.0.fetch_or(SCOPE_ENDED, Ordering::SeqCst);
    }
    /// True once the flag was set, for either reason.
    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst) != 0
    }
    /// True once the job was interrupted ([`Self::set`]), not merely at the end of its scope:
    /// what a one-shot measurement under a point scope (`now`) stops for.
    pub fn is_interrupted(&self) -> bool {
        self.0.load(Ordering::SeqCst) & INTERRUPTED != 0
    }
}

/// What a running service gets besides its specification.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// Set when the job is interrupted or its scope ends; return (partial) results then.
    pub interrupt: Interrupt,
    /// The end of the (sub-)scope, if definite.
    pub end: Option<Timestamp>,
}

/// The outcome of a run: a result statement, or an error text that becomes
/// an mPlane exception with the specification's token.
pub type Outcome = Result<Statement, String>;

/// A measurement service bound to one capability.
pub trait Service: Send + Sync {
    /// The capability this service offers.
    fn capability(&self) -> &Statement;
    /// Runs the measurement for `spec` (blocking; the runtime calls it off
    /// the IO threads). Return early with what you have once
    /// `ctx.interrupt` is set.
    fn run(&self, spec: &Statement, ctx: JobContext) -> Outcome;
}

/// One run to start now (see [`Scheduler::poll`]).
pub struct Run {
    /// Identifies the run in [`Scheduler::complete`].
    pub id: u64,
    /// The (sub-)specification to run.
    pub spec: Statement,
    /// The service.
    pub service: Arc<dyn Service>,
    /// Its context.
    pub ctx: JobContext,
}

impl fmt::Debug for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Run")
            .field("id", &self.id)
            .field("token", &self.spec.token)
            .finish_non_exhaustive()
    }
}

struct Pending {
    at: Timestamp,
    end: Option<Timestamp>,
    spec: Statement,
}

struct Running {
    id: u64,
    token: Option<String>,
    end: Option<Timestamp>,
    interrupt: Interrupt,
}

struct Job {
    service: Arc<dyn Service>,
    spec: Statement,
    repeated: bool,
    /// Single: the one scheduled run. Repeated: the next repetition.
    pending: VecDeque<Pending>,
    repetitions: Option<crate::when::Repetitions>,
    running: Vec<Running>,
    interrupted: bool,
    /// Single job outcome.
    outcome: Option<Message>,
    /// Repeated job results (envelope contents), newest last.
    collected: VecDeque<Message>,
    envelope_when: Option<When>,
    finished_at: Option<Timestamp>,
    replied_once: bool,
    /// Runs completed so far (results and exceptions).
    completed: u64,
}

impl Job {
    fn finished(&self) -> bool {
        self.pending.is_empty() && self.running.is_empty() && self.repetitions.is_none()
    }
    fn failed(&self) -> bool {
        matches!(self.outcome, Some(Message::Exception(_)))
    }
    fn receipt(&self) -> Message {
        let mut r = self.spec.derive(StatementKind::Receipt);
        r.link = None;
        Message::Statement(r)
    }
    fn reply(&self) -> Message {
        if self.repeated {
            if self.collected.is_empty() {
                return self.receipt();
            }
            let mut env = Envelope::new();
            env.token = self.spec.token.clone();
            env.label = self.spec.label.clone();
            env.when = self.envelope_when.clone().map(Into::into);
            env.contents = self.collected.iter().cloned().collect();
            Message::Envelope(env)
        } else {
            match &self.outcome {
                Some(m) => m.clone(),
                None => self.receipt(),
            }
        }
    }
}

/// The scheduler: services, jobs by specification token, retention.
pub struct Scheduler {
    services: Vec<(Statement, Arc<dyn Service>)>,
    jobs: BTreeMap<String, Job>,
    runs: BTreeMap<u64, String>,
    next_run: u64,
    azn: Azn,
    max_results: usize,
    result_ttl: i64,
    max_jobs: usize,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("services", &self.services.len())
            .field("jobs", &self.jobs.len())
            .finish_non_exhaustive()
    }
}

fn repeat_scope(spec: &Statement, now: Timestamp) -> When {
    let (a, b) = spec.when().datetimes(now);
    When::range(
        a.map(TimeValue::At).unwrap_or(TimeValue::Past),
        b.map(TimeValue::At).unwrap_or(TimeValue::Future),
    )
}

impl Scheduler {
    /// An empty scheduler with access control `azn` and `scheduler_max_results`
    /// (`0` keeps every result of a repeated specification).
    pub fn new(azn: Azn, max_results: usize) -> Scheduler {
        Scheduler {
            services: Vec::new(),
            jobs: BTreeMap::new(),
            runs: BTreeMap::new(),
            next_run: 1,
            azn,
            max_results,
            result_ttl: DEFAULT_RESULT_TTL_MICROS,
            max_jobs: DEFAULT_MAX_JOBS,
        }
    }

    /// Most jobs kept at once (running or waiting for redemption); further
    /// specifications are answered with the exception [`TOO_MANY_JOBS`].
    pub fn set_max_jobs(&mut self, max: usize) {
        self.max_jobs = max;
    }

    /// How long (µs) a finished, unredeemed job is kept (see [`expire`](Self::expire)).
    pub fn set_result_ttl(&mut self, micros: i64) {
        self.result_ttl = micros;
    }

    /// Adds a service. Its capability gets its default token if it has none,
    /// and `link` if given (the `listen-cap-link` of the configuration).
    pub fn add_service(&mut self, service: Arc<dyn Service>, link: Option<&str>) {
        let mut cap = service.capability().clone();
        if cap.token.is_none() {
            cap.token = Some(cap.default_token());
        }
        if let Some(l) = link {
            cap.link = Some(l.to_string());
        }
        self.services.push((cap, service));
    }

    /// Keeps the services whose capability `keep` accepts (a supervisor replacing what a
    /// component registered before); jobs already running keep their service.
    pub fn retain_services(&mut self, mut keep: impl FnMut(&Statement) -> bool) {
        self.services.retain(|(c, _)| keep(c));
    }

    /// Every capability (with token and link), in registration order.
    pub fn capabilities(&self) -> impl Iterator<Item = &Statement> {
        self.services.iter().map(|(c, _)| c)
    }

    /// The capabilities `identity` may use.
    pub fn capabilities_for<'a>(
        &'a self,
        identity: &'a Identity,
    ) -> impl Iterator<Item = &'a Statement> + 'a {
        self.capabilities().filter(move |c| {
            self.azn
                .check(identity, c.label.as_deref(), c.token.as_deref())
        })
    }

    /// The capability with `token` (not filtered by authorisation, as the reference).
    pub fn capability(&self, token: &str) -> Option<&Statement> {
        self.capabilities()
            .find(|c| c.token.as_deref() == Some(token))
    }

    /// The access control it decides with.
    pub fn azn(&self) -> &Azn {
        &self.azn
    }

    /// Number of jobs held (pending, running, or finished and not yet redeemed or expired).
    pub fn job_count(&self) -> usize {
        self.jobs.len()
    }

    /// True if a job with `token` exists and is finished (or failed).
    pub fn is_finished(&self, token: &str) -> bool {
        self.jobs.get(token).is_some_and(Job::finished)
    }

    /// Whether a job is repeated (`None` if unknown).
    pub fn is_repeated(&self, token: &str) -> Option<bool> {
        self.jobs.get(token).map(|j| j.repeated)
    }

    /// How many runs of a job have completed (`None` if unknown): a runtime that pushes
    /// results (the component-initiated workflow) sends a repeated job's envelope again
    /// when this grows.
    pub fn completed_runs(&self, token: &str) -> Option<u64> {
        self.jobs.get(token).map(|j| j.completed)
    }

    /// Handles one message from `identity` and returns the reply (DIGEST §7a).
    /// A new specification is answered with its receipt; the runtime may then
    /// wait for [`is_finished`](Self::is_finished) and [`redeem`](Self::redeem).
    pub fn handle(&mut self, msg: &Message, identity: &Identity, now: Timestamp) -> Message {
        let Message::Statement(st) = msg else {
            return Exception::new(msg.token().map(str::to_string), UNEXPECTED).into();
        };
        match st.kind {
            StatementKind::Specification => self.submit(st, identity, now),
            StatementKind::Redemption => self.redeem(st.token.as_deref().unwrap_or(""), now),
            StatementKind::Interrupt => self.interrupt(st.token.as_deref().unwrap_or(""), now),
            _ => Exception::new(st.token.clone(), UNEXPECTED).into(),
        }
    }

    /// Submits a specification: existing job → its current reply; no
    /// matching capability or no permission → exception; else a new job and
    /// its receipt.
    pub fn submit(&mut self, spec: &Statement, identity: &Identity, now: Timestamp) -> Message {
        let mut spec = spec.clone();
        let token = spec.token.clone().unwrap_or_else(|| spec.default_token());
        spec.token = Some(token.clone());
        if let Some(job) = self.jobs.get(&token) {
            return job.receipt();
        }
        let mut matched = false;
        let mut service = None;
        for (cap, svc) in &self.services {
            match find_capability(&spec, std::iter::once(cap), now) {
                Ok(_) => {
                    matched = true;
                    if self
                        .azn
                        .check(identity, cap.label.as_deref(), cap.token.as_deref())
                    {
                        service = Some(svc.clone());
                        break;
                    }
                }
                Err(e) if !e.is_schema() => tracing::debug!(
                    "specification {token} does not fit {:?}: {e}",
                    cap.label.as_deref().unwrap_or("")
                ),
                Err(_) => {}
            }
        }
        let Some(service) = service else {
            let text = if matched { NO_PERMISSION } else { NO_SERVICE };
            return Exception::new(Some(token), text).into();
        };
        self.expire(now);
        if self.jobs.len() >= self.max_jobs {
            return Exception::new(Some(token), TOO_MANY_JOBS).into();
        }
        let when = spec.when();
        let mut job = Job {
            service,
            spec: spec.clone(),
            repeated: when.is_repeated(),
            pending: VecDeque::new(),
            repetitions: None,
            running: Vec::new(),
            interrupted: false,
            outcome: None,
            collected: VecDeque::new(),
            envelope_when: None,
            finished_at: None,
            replied_once: false,
            completed: 0,
        };
        if job.repeated {
            job.envelope_when = Some(repeat_scope(&spec, now));
            job.repetitions = when.repetitions(now);
            Self::refill(&mut job, now);
        } else {
            match when.timer_delays(now) {
                (Some(sd), ed) => {
                    let at = now.add_micros(sd);
                    job.pending.push_back(Pending {
                        at,
                        end: ed.map(|e| now.add_micros(e)),
                        spec: spec.clone(),
                    })
                }
                _ => {
                    // Scope already over: nothing to run, an empty result.
                    job.outcome = Some(Message::Statement(spec.result_for()));
                    job.finished_at = Some(now);
                }
            }
        }
        let receipt = job.receipt();
        if job.finished() && job.finished_at.is_none() {
            job.finished_at = Some(now);
        }
        self.jobs.insert(token, job);
        receipt
    }

    /// Schedules the next repetition of a repeated job, if any.
    fn refill(job: &mut Job, now: Timestamp) {
        if !job.pending.is_empty() || job.interrupted {
            return;
        }
        let Some(reps) = job.repetitions.as_mut() else {
            return;
        };
        match reps.next() {
            Some(w) => {
                let (a, b) = w.datetimes(now);
                let mut sub = job.spec.clone();
                sub.set_when(w);
                sub.token = None;
                sub.token = Some(sub.default_token());
                job.pending.push_back(Pending {
                    at: a.unwrap_or(now),
                    end: b,
                    spec: sub,
                });
            }
            None => job.repetitions = None,
        }
    }

    /// Redeems `token`: the result, envelope or exception if there is one,
    /// else the receipt. Finished jobs are forgotten after this reply, failed
    /// single jobs are kept (they keep answering the exception).
    pub fn redeem(&mut self, token: &str, now: Timestamp) -> Message {
        let Some(job) = self.jobs.get_mut(token) else {
            return Exception::new(Some(token.to_string()), UNKNOWN_JOB).into();
        };
        let reply = job.reply();
        job.replied_once = true;
        if job.finished() && !job.failed() {
            self.jobs.remove(token);
        }
        let _ = now;
        reply
    }

    /// Interrupts `token`: pending runs are dropped, running ones get their
    /// flag set; replies with the job's current state (normally the receipt).
    pub fn interrupt(&mut self, token: &str, now: Timestamp) -> Message {
        let Some(job) = self.jobs.get_mut(token) else {
            return Exception::new(Some(token.to_string()), UNKNOWN_JOB).into();
        };
        job.interrupted = true;
        job.repetitions = None;
        job.pending.clear();
        for r in &job.running {
            r.interrupt.set();
        }
        if job.finished() {
            if !job.repeated && job.outcome.is_none() {
                job.outcome = Some(Message::Statement(job.spec.result_for()));
            }
            job.finished_at.get_or_insert(now);
        }
        job.reply()
    }

    /// Interrupts every job (shutdown): no more runs start, running ones
    /// get their flag set.
    pub fn interrupt_all(&mut self) {
        for job in self.jobs.values_mut() {
            job.interrupted = true;
            job.repetitions = None;
            job.pending.clear();
            for r in &job.running {
                r.interrupt.set();
            }
        }
    }

    /// Starts what is due at `now`: returns the runs to execute, sets the
    /// interrupt flag of runs whose scope has ended, and expires old jobs.
    pub fn poll(&mut self, now: Timestamp) -> Vec<Run> {
        self.expire(now);
        let mut out = Vec::new();
        for (token, job) in &mut self.jobs {
            for r in &job.running {
                if r.end.is_some_and(|e| e <= now) {
                    r.interrupt.end_scope();
                }
            }
            loop {
                Self::refill(job, now);
                let due = job.pending.front().is_some_and(|p| p.at <= now);
                if !due {
                    break;
                }
                let Some(p) = job.pending.pop_front() else {
                    break;
                };
                let id = self.next_run;
                self.next_run += 1;
                let interrupt = Interrupt::new();
                if job.repeated && p.end.is_some_and(|e| e < now) {
                    // Over already: skip it if a later repetition is due as
                    // well (we are catching up), else run it late.
                    Self::refill(job, now);
                    if job.pending.front().is_some_and(|n| n.at <= now) {
                        continue;
                    }
                }
                job.running.push(Running {
                    id,
                    token: p.spec.token.clone(),
                    end: p.end,
                    interrupt: interrupt.clone(),
                });
                self.runs.insert(id, token.clone());
                out.push(Run {
                    id,
                    spec: p.spec,
                    service: job.service.clone(),
                    ctx: JobContext {
                        interrupt,
                        end: p.end,
                    },
                });
            }
            if job.finished() {
                job.finished_at.get_or_insert(now);
            }
        }
        out
    }

    /// The earliest time [`poll`](Self::poll) has something to do (a start
    /// or an end of scope), if any.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        let mut best: Option<Timestamp> = None;
        let mut take = |t: Timestamp| {
            best = Some(best.map_or(t, |b| b.min(t)));
        };
        for job in self.jobs.values() {
            if let Some(p) = job.pending.front() {
                take(p.at);
            }
            for r in &job.running {
                if let Some(e) = r.end
                    && !r.interrupt.is_set()
                {
                    take(e);
                }
            }
            if let Some(f) = job.finished_at {
                take(f.add_micros(self.result_ttl));
            }
        }
        best
    }

    /// Records the outcome of run `id`. Returns the token of its job, or
    /// `None` if the job is gone.
    pub fn complete(&mut self, id: u64, outcome: Outcome, now: Timestamp) -> Option<String> {
        let token = self.runs.remove(&id)?;
        let job = self.jobs.get_mut(&token)?;
        let run_token = job
            .running
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.token.clone());
        job.running.retain(|r| r.id != id);
        job.completed += 1;
        let msg: Message = match outcome {
            Ok(mut r) => {
                r.kind = StatementKind::Result;
                Message::Statement(r)
            }
            // Inner exceptions of a repeated job carry the sub-spec token, as results do.
            Err(text) => Exception::new(run_token.or_else(|| job.spec.token.clone()), text).into(),
        };
        if job.repeated {
            job.collected.push_back(msg);
            if self.max_results > 0 {
                while job.collected.len() > self.max_results {
                    job.collected.pop_front();
                }
            }
            Self::refill(job, now);
        } else {
            job.outcome = Some(msg);
        }
        if job.finished() {
            job.finished_at.get_or_insert(now);
        }
        Some(token)
    }

    /// Forgets finished jobs whose outcome waited longer than the result TTL.
    pub fn expire(&mut self, now: Timestamp) {
        let ttl = self.result_ttl;
        self.jobs.retain(|_, j| {
            !(j.finished() && j.finished_at.is_some_and(|f| f.add_micros(ttl) <= now))
        });
    }
}

#[cfg(test)]
mod tests;
