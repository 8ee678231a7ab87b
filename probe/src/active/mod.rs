//! Active measurements: probes this host sends, and what comes back.

pub mod ping;
