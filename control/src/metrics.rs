//! Operational metrics in the Prometheus text exposition format (version 0.0.4), which
//! Prometheus, VictoriaMetrics, the OpenTelemetry collector and Grafana Agent scrape.
//!
//! A component serves them at `GET /metrics` (see [`crate::component`]); what it serves is
//! collected at each scrape from [`MetricsSource`]s: the component's own (connections,
//! requests, jobs) and whatever the measurement modules register (a probe's capture and
//! flow counters). Sources read counters that are already kept lock-free on the data path;
//! collecting is a snapshot, never a reset.
//!
//! ```
//! use mplane::metrics::Exposition;
//!
//! let mut e = Exposition::new();
//! e.counter("mplane_capture_packets_total", "Frames delivered.", &[("module", "tap")], 42);
//! e.gauge("mplane_flows_live", "Flows in the tables.", &[("module", "tap")], 7.0);
//! let text = e.render();
//! assert!(text.contains("# TYPE mplane_capture_packets_total counter\n"));
//! assert!(text.contains("mplane_capture_packets_total{module=\"tap\"} 42\n"));
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The media type of [`Exposition::render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Something that contributes samples at each scrape.
pub trait MetricsSource: Send + Sync {
    /// Adds the current values to `out`.
    fn collect(&self, out: &mut Exposition);
}

/// The kind of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up (resets when the process restarts); names end in `_total`.
    Counter,
    /// Goes up and down.
    Gauge,
}

impl MetricKind {
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        }
    }
}

#[derive(Debug)]
struct Family {
    kind: MetricKind,
    help: String,
    /// Rendered label set (`{a="b"}` or empty) → rendered value.
    samples: BTreeMap<String, String>,
}

/// Samples gathered from every source, grouped by family (the format wants each family's
/// samples together, under one `# HELP` and `# TYPE`, whichever source added them).
#[derive(Debug, Default)]
pub struct Exposition {
    families: BTreeMap<String, Family>,
}

impl Exposition {
    /// An empty exposition.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Adds a counter sample.
    pub fn counter(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: u64) {
        self.sample(MetricKind::Counter, name, help, labels, value.to_string());
    }

    /// Adds a gauge sample.
    pub fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let v = if value.is_nan() {
            "NaN".to_string()
        } else if value.is_infinite() {
            if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
        } else {
            value.to_string()
        };
        self.sample(MetricKind::Gauge, name, help, labels, v);
    }

    /// Adds a sample. Names that are not valid metric or label names have their offending
    /// characters replaced by `_`; a family keeps the kind and help it was first given; a
    /// second sample with the same labels is added to the first (two sources counting the
    /// same thing), so the output never holds a series twice.
    fn sample(
        &mut self,
        kind: MetricKind,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        value: String,
    ) {
        let name = sanitize(name, true);
        // OpenMetrics readers name a counter family without its `_total`: a gauge `x` beside
        // a counter `x_total` would be one family twice
        debug_assert!(
            match kind {
                MetricKind::Counter => name
                    .strip_suffix("_total")
                    .is_some_and(|base| !self.families.contains_key(base)),
                MetricKind::Gauge => !self.families.contains_key(&format!("{name}_total")),
            },
            "metric {name}: counters end in _total and no gauge has a counter's base name"
        );
        let family = self.families.entry(name).or_insert_with(|| Family {
            kind,
            help: help.to_string(),
            samples: BTreeMap::new(),
        });
        let mut set = String::new();
        for (i, (k, v)) in labels.iter().enumerate() {
            set.push(if i == 0 { '{' } else { ',' });
            set.push_str(&sanitize(k, false));
            set.push_str("=\"");
            escape_value(&mut set, v);
            set.push('"');
        }
        if !labels.is_empty() {
            set.push('}');
        }
        match family.samples.get_mut(&set) {
            Some(old) => {
                let sum = match (old.parse::<u64>(), value.parse::<u64>()) {
                    (Ok(a), Ok(b)) => a.saturating_add(b).to_string(),
                    _ => match (old.parse::<f64>(), value.parse::<f64>()) {
                        (Ok(a), Ok(b)) => (a + b).to_string(),
                        _ => value,
                    },
                };
                *old = sum;
            }
            None => {
                family.samples.insert(set, value);
            }
        }
    }

    /// Number of families.
    pub fn len(&self) -> usize {
        self.families.len()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }

    /// The text format: families sorted by name, each with its `# HELP` and `# TYPE` lines.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(self.families.len() * 160);
        for (name, f) in &self.families {
            out.push_str("# HELP ");
            out.push_str(name);
            out.push(' ');
            escape_help(&mut out, &f.help);
            out.push('\n');
            let _ = writeln!(out, "# TYPE {name} {}", f.kind.as_str());
            for (labels, value) in &f.samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        }
        out
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*` for metric names, without `:` for label names.
fn sanitize(name: &str, metric: bool) -> String {
    let ok = |i: usize, c: char| {
        c.is_ascii_alphabetic() || c == '_' || (metric && c == ':') || (i > 0 && c.is_ascii_digit())
    };
    let s: String = name
        .chars()
        .enumerate()
        .map(|(i, c)| if ok(i, c) { c } else { '_' })
        .collect();
    if s.is_empty() { "_".to_string() } else { s }
}

fn escape_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_group_samples_from_any_source() {
        let mut e = Exposition::new();
        e.counter("b_total", "B.", &[("module", "x")], 1);
        e.gauge("a", "A.", &[], 2.5);
        e.counter("b_total", "ignored", &[("module", "w")], 3);
        assert_eq!(
            e.render(),
            "# HELP a A.\n# TYPE a gauge\na 2.5\n\
             # HELP b_total B.\n# TYPE b_total counter\n\
             b_total{module=\"w\"} 3\nb_total{module=\"x\"} 1\n"
        );
        assert_eq!(e.len(), 2);
    }

    #[test]
    fn labels_and_names_are_escaped() {
        let mut e = Exposition::new();
        e.counter(
            "9bad-name_total",
            "line\none \\ two",
            &[("if-ace", "a\"b\\c\nd")],
            5,
        );
        e.gauge("g", "G.", &[("x", "y")], f64::INFINITY);
        e.gauge("n", "N.", &[], f64::NAN);
        let t = e.render();
        assert!(
            t.contains("# HELP _bad_name_total line\\none \\\\ two\n"),
            "{t}"
        );
        assert!(
            t.contains("_bad_name_total{if_ace=\"a\\\"b\\\\c\\nd\"} 5\n"),
            "{t}"
        );
        assert!(t.contains("g{x=\"y\"} +Inf\n"), "{t}");
        assert!(t.contains("n NaN\n"), "{t}");
    }

    #[test]
    fn the_same_series_twice_is_summed() {
        let mut e = Exposition::new();
        e.counter("c_total", "C.", &[("k", "v")], u64::MAX - 1);
        e.counter("c_total", "C.", &[("k", "v")], 5);
        e.gauge("g", "G.", &[], 1.5);
        e.gauge("g", "G.", &[], 2.0);
        let t = e.render();
        assert!(
            t.contains(&format!("c_total{{k=\"v\"}} {}\n", u64::MAX)),
            "{t}"
        );
        assert!(t.contains("\ng 3.5\n"), "{t}");
    }
}
