//! Shared helpers for the benchmarks (workload loading, reporting).
