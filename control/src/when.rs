//! Temporal scopes (`when`), evaluated against a clock that is passed in.
//!
//! Grammar (DIGEST §2, separators are exact strings with single spaces):
//!
//! ```text
//! when     = simple | "repeat " simple [ " cron " crontab ] [ " { " inner " }" ]
//! simple   = point [ " ... " point | " + " duration ] [ " / " duration ]
//! point    = "now" | "past" | "future" | timestamp
//! inner    = "now" [ " + " duration ] [ " / " duration ]
//! duration = [n "d"][n "h"][n "m"][n "s"] | "inf"
//! crontab  = sec min hour mday wday month   (each "*" | n[,n...] | a-b)
//! ```
//!
//! Nothing here reads the system clock: every evaluation takes `now`. The
//! three text forms are:
//! * [`When::reference_string`] — exactly the reference's `str(When)`, used in
//!   tokens (expanded crontab with hours 0–59, trailing space after `}`);
//! * [`When`]'s `Display` — the specification's form, used for scopes we create;
//! * the source text, kept by the message model so a parsed message re-emits
//!   byte for byte.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};

use crate::value::{MICROS, TimeValue, Timestamp};

/// `inf` as a duration: 100000 days, as the reference.
pub const INF_SECS: u64 = 100_000 * 86_400;

/// Errors reading a temporal scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WhenError {
    /// A point is not `now`/`past`/`future` or a timestamp.
    #[error("{0:?} is not an mPlane time")]
    BadTime(String),
    /// A duration is malformed.
    #[error("{0:?} is not an mPlane duration")]
    BadDuration(String),
    /// A separator appears more than once or in the wrong place.
    #[error("malformed temporal scope {0:?}")]
    Malformed(String),
    /// A repeated scope without a crontab lacks the outer period.
    #[error("repeated scope {0:?} needs a period or a crontab")]
    RepeatNeedsPeriod(String),
    /// A repeated scope has both a crontab and an outer period.
    #[error("repeated scope {0:?} has both a period and a crontab")]
    RepeatPeriodAndCron(String),
    /// The inner scope of a repeat does not start with `now`.
    #[error("inner scope of {0:?} must be relative to now")]
    InnerNotNow(String),
    /// The crontab is malformed.
    #[error("malformed crontab {0:?}")]
    BadCron(String),
    /// An absolute range ends before it starts.
    #[error("temporal scope {0:?} ends before it starts")]
    EndBeforeStart(String),
    /// The text is longer than any scope has reason to be.
    #[error("temporal scope of {0} bytes is too long")]
    TooLong(usize),
}

/// A duration in whole seconds (the reference's durations are integer seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub u64);

impl Duration {
    /// Reads `[n d][n h][n m][n s]`, `inf`, or `0`.
    ///
    /// Stricter than the reference, which matches the empty prefix of any text
    /// and so reads garbage (`inf ... future`) as zero seconds.
    pub fn parse(text: &str) -> Result<Duration, WhenError> {
        let bad = || WhenError::BadDuration(text.chars().take(100).collect());
        if text == "inf" {
            return Ok(Duration(INF_SECS));
        }
        if text == "0" {
            return Ok(Duration(0));
        }
        let b = text.as_bytes();
        let mut i = 0;
        let mut total: u64 = 0;
        let mut last_unit = 0usize;
        let units = [(b'd', 86_400u64), (b'h', 3_600), (b'm', 60), (b's', 1)];
        if b.is_empty() {
            return Err(bad());
        }
        while i < b.len() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == start || i >= b.len() || i - start > 12 {
                return Err(bad());
            }
            let n: u64 = text[start..i].parse().map_err(|_| bad())?;
            let pos = units.iter().position(|(u, _)| *u == b[i]).ok_or_else(bad)?;
            if pos < last_unit {
                return Err(bad());
            }
            last_unit = pos + 1;
            total = total
                .checked_add(n.checked_mul(units[pos].1).ok_or_else(bad)?)
                .ok_or_else(bad)?;
            i += 1;
        }
        Ok(Duration(total))
    }

    /// Microseconds.
    pub fn as_micros(self) -> i64 {
        (self.0 as i64).saturating_mul(MICROS)
    }
}

impl fmt::Display for Duration {
    /// Canonical form as the reference writes it: `1m30s`, `0s`, `100000d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.0;
        if s == 0 {
            return f.write_str("0s");
        }
        for (unit, label) in [(86_400, 'd'), (3_600, 'h'), (60, 'm'), (1, 's')] {
            if s >= unit {
                write!(f, "{}{}", s / unit, label)?;
                s %= unit;
            }
        }
        Ok(())
    }
}

/// How a simple scope ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum End {
    /// A single point (a singleton measurement).
    None,
    /// `a ... b`.
    At(TimeValue),
    /// `a + duration`.
    After(Duration),
}

/// A crontab: sets of seconds, minutes, hours, days of month, weekdays
/// (0 = Sunday) and months.
///
/// Equality is by schedule: hours 24–59 (which the reference writes for `*`)
/// never match and are ignored, and weekday 7 is Sunday.
#[derive(Debug, Clone, Eq)]
pub struct Crontab {
    /// Seconds 0–59.
    pub seconds: BTreeSet<u32>,
    /// Minutes 0–59.
    pub minutes: BTreeSet<u32>,
    /// Hours 0–23 (the reference writes `*` as 0–59; extra hours never match).
    pub hours: BTreeSet<u32>,
    /// Days of month 1–31.
    pub days: BTreeSet<u32>,
    /// Weekdays 0–6, 0 = Sunday; 7 is read as Sunday (cron convention).
    pub weekdays: BTreeSet<u32>,
    /// Months 1–12.
    pub months: BTreeSet<u32>,
}

const CRON_FIELDS: [(u32, u32, u32); 6] = [
    // (min, max, full range written for "*" by the reference: max+1 exclusive)
    (0, 59, 60),
    (0, 59, 60),
    (0, 59, 60), // hours: the reference expands "*" to 0..59 (Q7)
    (1, 31, 32),
    (0, 7, 7),
    (1, 12, 13),
];

impl PartialEq for Crontab {
    fn eq(&self, o: &Crontab) -> bool {
        let hours = |c: &Crontab| {
            c.hours
                .iter()
                .copied()
                .filter(|h| *h < 24)
                .collect::<Vec<_>>()
        };
        let wdays = |c: &Crontab| c.weekdays.iter().map(|d| d % 7).collect::<BTreeSet<_>>();
        self.seconds == o.seconds
            && self.minutes == o.minutes
            && hours(self) == hours(o)
            && self.days == o.days
            && wdays(self) == wdays(o)
            && self.months == o.months
    }
}

impl std::hash::Hash for Crontab {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.seconds.hash(h);
        self.minutes.hash(h);
        self.hours
            .iter()
            .filter(|x| **x < 24)
            .for_each(|x| x.hash(h));
        self.days.hash(h);
        self.weekdays
            .iter()
            .map(|d| d % 7)
            .collect::<BTreeSet<_>>()
            .hash(h);
        self.months.hash(h);
    }
}

impl Crontab {
    /// Reads six whitespace-separated fields.
    pub fn parse(text: &str) -> Result<Crontab, WhenError> {
        let bad = || WhenError::BadCron(text.chars().take(200).collect());
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() != 6 {
            return Err(bad());
        }
        let mut sets: Vec<BTreeSet<u32>> = Vec::with_capacity(6);
        for (f, &(lo, hi, full_end)) in fields.iter().zip(CRON_FIELDS.iter()) {
            let set: BTreeSet<u32> = if *f == "*" {
                let start = if lo == 1 { 1 } else { 0 };
                (start..full_end).collect()
            } else if let Some((a, b)) = f.split_once('-') {
                let a: u32 = a.parse().map_err(|_| bad())?;
                let b: u32 = b.parse().map_err(|_| bad())?;
                if a > b || a < lo || b > hi {
                    return Err(bad());
                }
                (a..=b).collect()
            } else {
                let mut s = BTreeSet::new();
                for n in f.split(',') {
                    let n: u32 = n.parse().map_err(|_| bad())?;
                    if n < lo || n > hi {
                        return Err(bad());
                    }
                    s.insert(n);
                }
                s
            };
            sets.push(set);
        }
        let mut it = sets.into_iter();
        let mut next = || it.next().unwrap_or_default();
        Ok(Crontab {
            seconds: next(),
            minutes: next(),
            hours: next(),
            days: next(),
            weekdays: next(),
            months: next(),
        })
    }

    fn fields(&self) -> [&BTreeSet<u32>; 6] {
        [
            &self.seconds,
            &self.minutes,
            &self.hours,
            &self.days,
            &self.weekdays,
            &self.months,
        ]
    }

    /// The reference's form: every field as a sorted list.
    pub fn reference_string(&self) -> String {
        let mut s = String::new();
        for (i, f) in self.fields().iter().enumerate() {
            if i > 0 {
                s.push(' ');
            }
            join_set(f, &mut s);
        }
        s
    }

    /// True if instant `t` matches every non-empty field (the reference ANDs
    /// day of month and weekday, unlike Vixie cron).
    pub fn matches(&self, t: Timestamp) -> bool {
        let (_, mo, d, h, mi, s, _) = t.to_civil();
        let wd = (t.weekday() + 1) % 7; // 0 = Sunday
        let ok = |set: &BTreeSet<u32>, v: u32| set.is_empty() || set.contains(&v);
        ok(&self.seconds, s)
            && ok(&self.minutes, mi)
            && ok(&self.hours, h)
            && ok(&self.days, d)
            && (self.weekdays.is_empty()
                || self.weekdays.contains(&wd)
                || (wd == 0 && self.weekdays.contains(&7)))
            && ok(&self.months, mo)
    }

    /// The first whole second at or after `t` that matches, searching no
    /// further than `limit`. Skips non-matching months, days, hours and
    /// minutes at once, so the search is cheap for any schedule.
    pub fn next_match(&self, t: Timestamp, limit: Timestamp) -> Option<Timestamp> {
        // round up to a whole second
        let mut t = Timestamp::from_micros(
            t.as_micros().div_euclid(MICROS) * MICROS
                + if t.as_micros().rem_euclid(MICROS) > 0 {
                    MICROS
                } else {
                    0
                },
        );
        let ok = |set: &BTreeSet<u32>, v: u32| set.is_empty() || set.contains(&v);
        while t <= limit {
            let (y, mo, d, h, mi, s, _) = t.to_civil();
            if !ok(&self.months, mo) {
                let (ny, nm) = if mo == 12 { (y + 1, 1) } else { (y, mo + 1) };
                t = Timestamp::from_civil(ny, nm, 1, 0, 0, 0, 0)?;
                continue;
            }
            let wd = (t.weekday() + 1) % 7;
            let wd_ok = self.weekdays.is_empty()
                || self.weekdays.contains(&wd)
                || (wd == 0 && self.weekdays.contains(&7));
            if !ok(&self.days, d) || !wd_ok {
                t = Timestamp::from_civil(y, mo, d, 0, 0, 0, 0)?.add_micros(86_400 * MICROS);
                continue;
            }
            if !ok(&self.hours, h) {
                t = Timestamp::from_civil(y, mo, d, h, 0, 0, 0)?.add_micros(3_600 * MICROS);
                continue;
            }
            if !ok(&self.minutes, mi) {
                t = Timestamp::from_civil(y, mo, d, h, mi, 0, 0)?.add_micros(60 * MICROS);
                continue;
            }
            if !ok(&self.seconds, s) {
                t = t.add_micros(MICROS);
                continue;
            }
            return Some(t);
        }
        None
    }
}

impl fmt::Display for Crontab {
    /// The specification's form: `*` for a full field, else a sorted list.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full: [(u32, u32); 6] = [(0, 59), (0, 59), (0, 23), (1, 31), (0, 6), (1, 12)];
        let mut s = String::new();
        for (i, (set, (lo, hi))) in self.fields().iter().zip(full).enumerate() {
            if i > 0 {
                s.push(' ');
            }
            let covers =
                (lo..=hi).all(|v| set.contains(&v) || (i == 4 && v == 0 && set.contains(&7)));
            if covers || set.is_empty() {
                s.push('*');
            } else {
                join_set(set, &mut s);
            }
        }
        f.write_str(&s)
    }
}

fn join_set(set: &BTreeSet<u32>, out: &mut String) {
    for (i, v) in set.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{v}");
    }
}

/// The inner scope of a repeat: each repetition's duration and period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Inner {
    /// Duration of each repetition.
    pub duration: Option<Duration>,
    /// Period within each repetition.
    pub period: Option<Duration>,
}

/// A temporal scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct When {
    /// Start.
    pub a: TimeValue,
    /// End.
    pub end: End,
    /// Period (`/ d`): on a capability the minimum period, on a repeat the
    /// repetition period.
    pub period: Option<Duration>,
    /// Repetition (`repeat …`), if any.
    pub repeat: Option<Repeat>,
}

/// The repeat part of a repeated scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Repeat {
    /// Schedule (`cron …`), if any.
    pub crontab: Option<Crontab>,
    /// Inner scope (`{ now + D / P }`), if any.
    pub inner: Option<Inner>,
}

/// Longest `when` text accepted (a fully expanded crontab is about 400 bytes).
pub const MAX_WHEN_LEN: usize = 4096;

impl When {
    /// A scope from `a` to `b`.
    pub fn range(a: TimeValue, b: TimeValue) -> When {
        When {
            a,
            end: End::At(b),
            period: None,
            repeat: None,
        }
    }

    /// `past ... future`.
    pub fn infinite() -> When {
        When::range(TimeValue::Past, TimeValue::Future)
    }

    /// Sets the period.
    pub fn with_period(mut self, p: Option<Duration>) -> When {
        self.period = p;
        self
    }

    /// Reads a temporal scope.
    pub fn parse(text: &str) -> Result<When, WhenError> {
        if text.len() > MAX_WHEN_LEN {
            return Err(WhenError::TooLong(text.len()));
        }
        let malformed = || WhenError::Malformed(text.chars().take(200).collect());
        if let Some(rest) = text.strip_prefix("repeat ") {
            // inner scope
            let (outer_and_cron, inner) = match crate::text::find(rest, " { ") {
                Some(i) => {
                    let tail = &rest[i + 3..];
                    let close = crate::text::find(tail, " }").ok_or_else(malformed)?;
                    let after = &tail[close + 2..];
                    if !after.trim().is_empty() {
                        return Err(malformed());
                    }
                    (&rest[..i], Some(parse_inner(&tail[..close], text)?))
                }
                None => (rest, None),
            };
            let (outer, crontab) = match crate::text::split_once(outer_and_cron, " cron ") {
                Some((o, c)) => (o, Some(Crontab::parse(c)?)),
                None => (outer_and_cron, None),
            };
            let mut w = parse_simple(outer, text)?;
            if crontab.is_none() && w.period.is_none() {
                return Err(WhenError::RepeatNeedsPeriod(text.into()));
            }
            if crontab.is_some() && w.period.is_some() {
                return Err(WhenError::RepeatPeriodAndCron(text.into()));
            }
            w.repeat = Some(Repeat { crontab, inner });
            Ok(w)
        } else {
            parse_simple(text, text)
        }
    }

    /// True for a repeated scope.
    pub fn is_repeated(&self) -> bool {
        self.repeat.is_some()
    }

    /// True if the scope starts now.
    pub fn is_immediate(&self) -> bool {
        self.a == TimeValue::Now
    }

    /// True if the scope is an absolute instant or interval (results need this).
    pub fn is_definite(&self) -> bool {
        matches!(self.a, TimeValue::At(_))
            && matches!(
                self.end,
                End::None | End::At(TimeValue::At(_)) | End::After(_)
            )
    }

    /// The inner scope of a repeat.
    pub fn inner(&self) -> Option<Inner> {
        self.repeat.as_ref().and_then(|r| r.inner)
    }

    /// Absolute start and end at `now` (`None` = indefinite past / future).
    pub fn datetimes(&self, now: Timestamp) -> (Option<Timestamp>, Option<Timestamp>) {
        let start = match self.a {
            TimeValue::Now => Some(now),
            TimeValue::Past => None,
            TimeValue::Future => None,
            TimeValue::At(t) => Some(t),
        };
        let end = match self.end {
            End::At(TimeValue::Now) => Some(now),
            End::At(TimeValue::Future) => None,
            End::At(TimeValue::Past) => None,
            End::At(TimeValue::At(t)) => Some(t),
            End::After(d) => start.map(|s| s.add_micros(d.as_micros())),
            End::None => start,
        };
        (start, end)
    }

    /// Duration in µs at `now`; `None` if open-ended.
    pub fn duration_micros(&self, now: Timestamp) -> Option<i64> {
        match self.end {
            End::After(d) => Some(d.as_micros()),
            End::None => Some(0),
            End::At(TimeValue::Future) => None,
            _ => match self.datetimes(now) {
                (Some(s), Some(e)) => Some(e.as_micros() - s.as_micros()),
                _ => None,
            },
        }
    }

    /// Delays (µs from `now`) until the scope starts and ends, as the
    /// reference's `timer_delays`: start 0 if already begun; both `None` if the
    /// scope has expired; end `None` if open-ended.
    pub fn timer_delays(&self, now: Timestamp) -> (Option<i64>, Option<i64>) {
        let (start, end) = self.datetimes(now);
        let sd = start
            .map(|s| (s.as_micros() - now.as_micros()).max(0))
            .unwrap_or(0);
        // Unlike the reference, a duration-based scope whose absolute end has
        // passed is expired too (the reference would start it late).
        let ed = match self.end {
            End::At(TimeValue::Future) => None,
            _ => end.map(|e| e.as_micros() - now.as_micros()),
        };
        match ed {
            Some(e) if e < 0 => (None, None),
            _ => (Some(sd), ed),
        }
    }

    /// Where `t` falls relative to the scope at `now`: negative µs before it,
    /// 0 inside, positive µs after it.
    pub fn sort_scope(&self, t: TimeValue, now: Timestamp) -> i64 {
        let t = match t {
            TimeValue::Now => {
                if self.a == TimeValue::Now || self.end == End::At(TimeValue::Now) {
                    return 0;
                }
                now
            }
            TimeValue::At(t) => t,
            TimeValue::Past => return if self.a == TimeValue::Past { 0 } else { -1 },
            TimeValue::Future => {
                return if self.end == End::At(TimeValue::Future) {
                    0
                } else {
                    1
                };
            }
        };
        let (start, end) = self.datetimes(now);
        match (start, end) {
            (Some(s), _) if t < s => t.as_micros() - s.as_micros(),
            (_, Some(e)) if t > e => t.as_micros() - e.as_micros(),
            _ => 0,
        }
    }

    /// True if `t` lies within the scope at `now`.
    pub fn in_scope(&self, t: TimeValue, now: Timestamp) -> bool {
        self.sort_scope(t, now) == 0
    }

    /// Checks that this scope (of a specification) fits `cap` (a capability's)
    /// at `now`, following the specification: periods must be at least the
    /// capability's, a capability without period accepts no periodic scope,
    /// and the start (or, if absolute, the end) must lie within `cap`.
    pub fn fits(&self, cap: &When, now: Timestamp) -> Result<(), ScopeMismatch> {
        let own_period = if self.is_repeated() {
            self.inner().and_then(|i| i.period)
        } else {
            self.period
        };
        match (cap.period, own_period) {
            (Some(min), None) => return Err(ScopeMismatch::PeriodMissing { min }),
            (Some(min), Some(p)) if p < min => {
                return Err(ScopeMismatch::PeriodTooShort { min, given: p });
            }
            (None, Some(p)) if !self.is_repeated() => {
                return Err(ScopeMismatch::PeriodNotAllowed { given: p });
            }
            _ => {}
        }
        if cap.in_scope(self.a, now) {
            return Ok(());
        }
        if let End::At(TimeValue::At(b)) = self.end
            && cap.in_scope(TimeValue::At(b), now)
        {
            return Ok(());
        }
        Err(ScopeMismatch::Outside)
    }

    /// The reference's `follows`: like [`When::fits`] but without the rule
    /// that a capability without period refuses periodic scopes.
    pub fn follows_reference(&self, cap: &When, now: Timestamp) -> bool {
        match self.fits(cap, now) {
            Ok(()) | Err(ScopeMismatch::PeriodNotAllowed { .. }) => {
                cap.in_scope(self.a, now)
                    || matches!(self.end, End::At(TimeValue::At(b)) if cap.in_scope(TimeValue::At(b), now))
            }
            Err(_) => false,
        }
    }

    /// The repetitions of a repeated scope, as the reference's `iterator`:
    /// start at the later of `now` and the outer start, step by the outer period
    /// (1 s with a crontab, keeping only matching seconds), stop after the
    /// outer end. Each repetition is `at + inner duration / inner period`.
    /// `None` for a scope that does not repeat.
    pub fn repetitions(&self, now: Timestamp) -> Option<Repetitions> {
        let rep = self.repeat.as_ref()?;
        let (start, end) = self.datetimes(now);
        let mut t = now;
        if let Some(s) = start
            && t < s
        {
            t = s;
        }
        Some(Repetitions {
            next: Some(t),
            end,
            period: self.period.map(|p| p.as_micros().max(1)).unwrap_or(MICROS),
            crontab: rep.crontab.clone(),
            inner: rep.inner.unwrap_or_default(),
        })
    }

    /// The reference's `str(When)`, used in tokens.
    pub fn reference_string(&self) -> String {
        let mut s = String::new();
        self.write_form(&mut s, true);
        s
    }

    fn write_form(&self, s: &mut String, reference: bool) {
        if self.repeat.is_some() {
            s.push_str("repeat ");
        }
        let _ = write!(s, "{}", self.a);
        match self.end {
            End::None => {}
            End::At(b) => {
                let _ = write!(s, " ... {b}");
            }
            End::After(d) => {
                let _ = write!(s, " + {d}");
            }
        }
        if let Some(p) = self.period {
            let _ = write!(s, " / {p}");
        }
        if let Some(rep) = &self.repeat {
            if let Some(c) = &rep.crontab {
                if reference {
                    let _ = write!(s, " cron {}", c.reference_string());
                } else {
                    let _ = write!(s, " cron {c}");
                }
            }
            if let Some(inner) = rep.inner {
                match (inner.duration, reference) {
                    (Some(d), _) => {
                        let _ = write!(s, " {{ now + {d}");
                        if let Some(p) = inner.period {
                            let _ = write!(s, " / {p}");
                        }
                        s.push_str(if reference { " } " } else { " }" });
                    }
                    (None, false) => {
                        if let Some(p) = inner.period {
                            let _ = write!(s, " {{ now / {p} }}");
                        }
                    }
                    (None, true) => {}
                }
            }
        }
    }
}

impl fmt::Display for When {
    /// The specification's form (compact crontab, no trailing space).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        self.write_form(&mut s, false);
        f.write_str(&s)
    }
}

/// Why a scope does not fit a capability's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeMismatch {
    /// The capability has a minimum period and the scope has none.
    #[error("the capability requires a period of at least {min}")]
    PeriodMissing {
        /// Minimum period.
        min: Duration,
    },
    /// The period is shorter than the capability's minimum.
    #[error("period {given} is shorter than the capability's minimum {min}")]
    PeriodTooShort {
        /// Minimum period.
        min: Duration,
        /// Period given.
        given: Duration,
    },
    /// The capability is not periodic and the scope is.
    #[error("the capability takes no period, {given} given")]
    PeriodNotAllowed {
        /// Period given.
        given: Duration,
    },
    /// The scope lies outside the capability's.
    #[error("the temporal scope lies outside the capability's")]
    Outside,
}

/// Iterator over the repetitions of a repeated scope (see [`When::repetitions`]).
#[derive(Debug, Clone)]
pub struct Repetitions {
    next: Option<Timestamp>,
    end: Option<Timestamp>,
    period: i64,
    crontab: Option<Crontab>,
    inner: Inner,
}

impl Repetitions {
    /// The start time of the next repetition, without consuming it.
    pub fn peek_start(&mut self) -> Option<Timestamp> {
        let mut it = self.clone();
        it.next().map(|w| match w.a {
            TimeValue::At(t) => t,
            _ => Timestamp::from_micros(0),
        })
    }
}

impl Iterator for Repetitions {
    type Item = When;

    fn next(&mut self) -> Option<When> {
        let mut t = self.next?;
        if let Some(c) = &self.crontab {
            // Far bound for an open-ended cron search: 10 years from here.
            let limit = self.end.unwrap_or(t.add_micros(10 * 366 * 86_400 * MICROS));
            t = c.next_match(t, limit)?;
        }
        if let Some(e) = self.end
            && t > e
        {
            self.next = None;
            return None;
        }
        self.next = Some(t.add_micros(if self.crontab.is_some() {
            MICROS
        } else {
            self.period
        }));
        Some(When {
            a: TimeValue::At(t),
            end: match self.inner.duration {
                Some(d) => End::After(d),
                None => End::None,
            },
            period: self.inner.period,
            repeat: None,
        })
    }
}

fn parse_point(p: &str) -> Result<TimeValue, WhenError> {
    TimeValue::parse(p).ok_or_else(|| WhenError::BadTime(p.chars().take(100).collect()))
}

fn parse_simple(s: &str, whole: &str) -> Result<When, WhenError> {
    let malformed = || WhenError::Malformed(whole.chars().take(200).collect());
    let (body, period) = match crate::text::split_once(s, " / ") {
        Some((b, p)) => {
            if crate::text::contains(p, " / ") {
                return Err(malformed());
            }
            (b, Some(Duration::parse(p)?))
        }
        None => (s, None),
    };
    let (a, end) = if let Some((a, d)) = crate::text::split_once(body, " + ") {
        if crate::text::contains(d, " + ") || crate::text::contains(a, " ... ") {
            return Err(malformed());
        }
        (a, End::After(Duration::parse(d)?))
    } else if let Some((a, b)) = crate::text::split_once(body, " ... ") {
        if crate::text::contains(b, " ... ") {
            return Err(malformed());
        }
        (a, End::At(parse_point(b)?))
    } else {
        (body, End::None)
    };
    Ok(When {
        a: parse_point(a)?,
        end,
        period,
        repeat: None,
    })
}

fn parse_inner(s: &str, whole: &str) -> Result<Inner, WhenError> {
    if !s.starts_with("now") {
        return Err(WhenError::InnerNotNow(whole.chars().take(200).collect()));
    }
    let w = parse_simple(s, whole)?;
    if w.a != TimeValue::Now {
        return Err(WhenError::InnerNotNow(whole.chars().take(200).collect()));
    }
    let duration = match w.end {
        End::After(d) => Some(d),
        End::None => None,
        End::At(_) => return Err(WhenError::Malformed(whole.chars().take(200).collect())),
    };
    Ok(Inner {
        duration,
        period: w.period,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }
    fn rs(s: &str) -> String {
        When::parse(s).unwrap().reference_string()
    }

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("90s").unwrap().to_string(), "1m30s");
        assert_eq!(Duration::parse("0").unwrap().to_string(), "0s");
        assert_eq!(Duration::parse("inf").unwrap().to_string(), "100000d");
        assert_eq!(Duration::parse("1d2h3m4s").unwrap().0, 93_784);
        for bad in ["", "5x", "s", "1s2m", "inf ... future", "-1s", "1.5s"] {
            assert!(Duration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reference_forms() {
        assert_eq!(rs("now + 1s / 1s"), "now + 1s / 1s");
        assert_eq!(rs("now + 90s"), "now + 1m30s");
        assert_eq!(rs("past ... now"), "past ... now");
        assert_eq!(
            rs("2017-12-24 22:00 ... 2017-12-24 22:00:30"),
            "2017-12-24 22:00:00.000000 ... 2017-12-24 22:00:30.000000"
        );
        assert_eq!(
            rs("repeat now + 4s / 2s { now + 1s / 1s }"),
            "repeat now + 4s / 2s { now + 1s / 1s } "
        );
        assert_eq!(
            rs("repeat now ... future / 1m { now / 1s }"),
            "repeat now ... future / 1m"
        );
        let cron = "repeat now ... future cron 0 0 * 1-7 1 * { now + 5s / 1s }";
        let w = When::parse(cron).unwrap();
        assert!(w.reference_string().contains(" cron 0 0 0,1,2,"));
        assert!(
            w.reference_string()
                .ends_with("1,2,3,4,5,6,7 1 1,2,3,4,5,6,7,8,9,10,11,12 { now + 5s / 1s } ")
        );
        assert_eq!(
            w.to_string(),
            "repeat now ... future cron 0 0 * 1,2,3,4,5,6,7 1 * { now + 5s / 1s }"
        );
        // the reference's own canonical form parses back to the same scope
        assert_eq!(When::parse(&w.reference_string()).unwrap(), w);
    }

    #[test]
    fn bad_scopes() {
        for bad in [
            "",
            "tomorrow",
            "now + 1s / 1s / 1s",
            "repeat now + 1m",
            "repeat now + 1m / 1s cron * * * * * *",
            "repeat now + 1m / 1s { later + 1s }",
            "repeat now + 1m / 1s { now + 1s",
            "repeat now ... future cron * * *",
            "now ... future ... now",
            "now + inf ... future / 1s",
        ] {
            assert!(When::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn evaluation() {
        let now = ts("2026-11-25 10:00:00");
        let cap = When::parse("now ... future / 1s").unwrap();
        assert!(
            When::parse("now + 1s / 1s")
                .unwrap()
                .fits(&cap, now)
                .is_ok()
        );
        assert_eq!(
            When::parse("now + 1s").unwrap().fits(&cap, now),
            Err(ScopeMismatch::PeriodMissing { min: Duration(1) })
        );
        assert!(
            When::parse("2020-01-01 ... 2020-01-02 / 1s")
                .unwrap()
                .fits(&cap, now)
                .is_err()
        );
        let past = When::parse("past ... now").unwrap();
        assert!(
            When::parse("2020-01-01 ... 2020-01-02")
                .unwrap()
                .fits(&past, now)
                .is_ok()
        );
        assert_eq!(
            When::parse("now + 5s / 1s")
                .unwrap()
                .fits(&When::parse("now ... future").unwrap(), now),
            Err(ScopeMismatch::PeriodNotAllowed { given: Duration(1) })
        );
        let w = When::parse("2026-11-25 10:00:10 + 5s").unwrap();
        assert_eq!(w.timer_delays(now), (Some(10_000_000), Some(15_000_000)));
        assert_eq!(
            When::parse("2020-01-01 + 5s").unwrap().timer_delays(now),
            (None, None)
        );
        assert_eq!(
            When::parse("now ... future").unwrap().timer_delays(now),
            (Some(0), None)
        );
    }

    #[test]
    fn repeats_and_cron() {
        let now = ts("2026-11-25 10:00:00");
        let w = When::parse("repeat now + 4s / 2s { now + 1s / 1s }").unwrap();
        let reps: Vec<String> = w
            .repetitions(now)
            .unwrap()
            .map(|r| r.reference_string())
            .collect();
        assert_eq!(
            reps,
            [
                "2026-11-25 10:00:00.000000 + 1s / 1s",
                "2026-11-25 10:00:02.000000 + 1s / 1s",
                "2026-11-25 10:00:04.000000 + 1s / 1s"
            ]
        );
        // every day at 03:30:00 for three days
        let c =
            When::parse("repeat 2026-11-25 ... 2026-11-28 cron 0 30 3 * * * { now + 1m }").unwrap();
        let starts: Vec<String> = c
            .repetitions(now)
            .unwrap()
            .map(|r| r.a.to_string())
            .collect();
        assert_eq!(
            starts,
            ["2026-11-26 03:30:00.000000", "2026-11-27 03:30:00.000000"]
        );
        // Sundays (0 and 7) in December at noon
        let sun = Crontab::parse("0 0 12 * 7 12").unwrap();
        let t = sun.next_match(now, ts("2027-01-01")).unwrap();
        assert_eq!(t.to_string(), "2026-12-06 12:00:00.000000");
    }
}
