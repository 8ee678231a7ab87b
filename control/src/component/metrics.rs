//! `GET /metrics`: the component's own counters and those of its measurement modules, in the
//! Prometheus text format ([`crate::metrics`]), for the identities a [`RoleAccess`] allows.
//!
//! A scraper authenticates like any client, with a certificate the component's CA signed
//! (Prometheus: `scheme: https` and `tls_config` with `ca_file`, `cert_file`, `key_file`).
//! Nothing is served unless access is configured (`[component] metrics_roles`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::azn::RoleAccess;
use crate::metrics::{Exposition, MetricsSource};

/// What `GET /metrics` serves, and to whom.
#[derive(Clone, Default)]
pub struct MetricsOptions {
    /// Who may read them; `None`: not served (404).
    pub access: Option<RoleAccess>,
    /// The measurement modules' sources, collected at each scrape after the component's own.
    pub sources: Vec<Arc<dyn MetricsSource>>,
}

impl std::fmt::Debug for MetricsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsOptions")
            .field("access", &self.access)
            .field("sources", &self.sources.len())
            .finish()
    }
}

/// The HTTP server's counters, updated with relaxed atomics (no lock on any request path).
#[derive(Debug)]
pub(crate) struct ServerStats {
    started: f64,
    pub(crate) connections_open: AtomicI64,
    pub(crate) connections: AtomicU64,
    pub(crate) refused_over_limit: AtomicU64,
    pub(crate) tls_failures: AtomicU64,
    /// Responses by status code (index = code − 100).
    responses: Box<[AtomicU64]>,
    /// The component-initiated workflow's figures (when it runs).
    pub(crate) initiator: InitiatorStats,
}

/// What the component-initiated workflow did ([`super::initiator`]).
#[derive(Debug, Default)]
pub(crate) struct InitiatorStats {
    /// Set once the workflow runs: its figures are served from then on.
    pub(crate) active: AtomicBool,
    pub(crate) registrations: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) fetched: AtomicU64,
    pub(crate) posted: AtomicU64,
    pub(crate) outbox: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

impl Default for ServerStats {
    fn default() -> Self {
        ServerStats {
            started: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            connections_open: AtomicI64::new(0),
            connections: AtomicU64::new(0),
            refused_over_limit: AtomicU64::new(0),
            tls_failures: AtomicU64::new(0),
            responses: (100..600).map(|_| AtomicU64::new(0)).collect(),
            initiator: InitiatorStats::default(),
        }
    }
}

/// Counts an open connection for as long as it lives.
pub(crate) struct OpenConnection<'a>(&'a ServerStats);

impl<'a> OpenConnection<'a> {
    pub(crate) fn new(stats: &'a ServerStats) -> Self {
        stats.connections.fetch_add(1, Relaxed);
        stats.connections_open.fetch_add(1, Relaxed);
        OpenConnection(stats)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Relaxed);
    }
}

impl ServerStats {
    /// Counts a response.
    pub(crate) fn response(&self, status: u16) {
        if let Some(c) = status
            .checked_sub(100)
            .and_then(|i| self.responses.get(usize::from(i)))
        {
            c.fetch_add(1, Relaxed);
        }
    }

    /// The server's and the scheduler's figures.
    pub(crate) fn collect(&self, out: &mut Exposition, jobs: usize, capabilities: usize) {
        out.gauge(
            "mplane_component_start_time_seconds",
            "When the component started, seconds since the Unix epoch.",
            &[],
            self.started,
        );
        out.gauge(
            "mplane_component_open_connections",
            "Connections open now.",
            &[],
            self.connections_open.load(Relaxed) as f64,
        );
        out.counter(
            "mplane_component_connections_total",
            "Connections accepted.",
            &[],
            self.connections.load(Relaxed),
        );
        out.counter(
            "mplane_component_connections_refused_total",
            "Connections closed at accept because the connection limit was reached.",
            &[],
            self.refused_over_limit.load(Relaxed),
        );
        out.counter(
            "mplane_component_tls_failures_total",
            "TLS handshakes that failed or timed out (no or a rejected client certificate, \
             a peer that is not speaking TLS).",
            &[],
            self.tls_failures.load(Relaxed),
        );
        for (i, c) in self.responses.iter().enumerate() {
            let n = c.load(Relaxed);
            if n > 0 {
                let code = (i + 100).to_string();
                out.counter(
                    "mplane_component_http_responses_total",
                    "HTTP responses sent, by status code.",
                    &[("code", &code)],
                    n,
                );
            }
        }
        out.gauge(
            "mplane_component_jobs",
            "Jobs the scheduler holds (pending, running, or finished and not yet redeemed).",
            &[],
            jobs as f64,
        );
        out.gauge(
            "mplane_component_capabilities",
            "Capabilities offered.",
            &[],
            capabilities as f64,
        );
        let i = &self.initiator;
        if i.active.load(Relaxed) {
            for (name, help, v) in [
                (
                    "mplane_initiator_registrations_total",
                    "Registrations of the capabilities with the listener (component-initiated).",
                    &i.registrations,
                ),
                (
                    "mplane_initiator_failures_total",
                    "Requests to the listener that failed or timed out (each one retried).",
                    &i.failures,
                ),
                (
                    "mplane_initiator_messages_fetched_total",
                    "Specifications and interrupts fetched from the listener.",
                    &i.fetched,
                ),
                (
                    "mplane_initiator_replies_posted_total",
                    "Receipts, results and exceptions posted to the listener.",
                    &i.posted,
                ),
                (
                    "mplane_initiator_replies_dropped_total",
                    "Replies dropped because the outbox was full while the listener was away.",
                    &i.dropped,
                ),
            ] {
                out.counter(name, help, &[], v.load(Relaxed));
            }
            out.gauge(
                "mplane_initiator_outbox",
                "Replies waiting for the listener.",
                &[],
                i.outbox.load(Relaxed) as f64,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_by_code_and_open_connections() {
        let s = ServerStats::default();
        s.response(200);
        s.response(200);
        s.response(404);
        s.response(42); // not a status: ignored
        {
            let _c = OpenConnection::new(&s);
            assert_eq!(s.connections_open.load(Relaxed), 1);
        }
        let mut e = Exposition::new();
        s.collect(&mut e, 3, 7);
        let t = e.render();
        assert!(t.contains("mplane_component_http_responses_total{code=\"200\"} 2\n"));
        assert!(t.contains("mplane_component_http_responses_total{code=\"404\"} 1\n"));
        assert!(t.contains("mplane_component_open_connections 0\n"), "{t}");
        assert!(t.contains("mplane_component_connections_total 1\n"));
        assert!(t.contains("mplane_component_jobs 3\n"));
        assert!(t.contains("mplane_component_capabilities 7\n"));
    }
}
