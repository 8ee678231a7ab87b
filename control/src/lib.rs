//! # mplane — the mPlane protocol in Rust
//!
//! The control plane of the probe: the mPlane information model and its JSON
//! representation, interoperable byte for byte with the Python reference SDK
//! (`mplane-sdk` 0.9.0).
//!
//! ```text
//!  JSON text ──parse──► model::Message ──unparse──► JSON text
//!                          │   ▲
//!          registry ───────┤   │ (element names → primitives)
//!          when / constraint / value (typed views of the strings on the wire)
//! ```
//!
//! * [`registry`] — element registries (`mplane-0` format), the built-in core registry.
//! * [`value`] — typed values per registry primitive, with the reference's formatting.
//! * [`constraint`] — parameter constraints of capabilities (`*`, sets, ranges, prefixes).
//! * [`when`] — temporal scopes, evaluated against a clock that is passed in.
//! * [`model`] — every message kind, parse and unparse, tokens and schema hashes,
//!   and matching a specification to a capability.
//! * [`config`] — the reference's INI configuration, validated into typed sections.
//! * [`tls`] — rustls configurations from the reference's PEM layout, identities
//!   derived from certificate subjects as the reference derives them.
//! * [`azn`] — identities → roles → capabilities, deny by default.
//! * [`scheduler`] — sans-IO jobs from specifications: runs, receipts, redemption, interrupt.
//! * [`component`] — the HTTPS server of the client-initiated workflow.
//! * [`client`] — the matching HTTPS client.
#![warn(missing_docs)]

pub mod azn;
pub mod client;
pub mod component;
pub mod config;
pub mod constraint;
pub mod metrics;
pub mod model;
pub mod registry;
pub mod scheduler;
mod text;
pub mod tls;
pub mod value;
pub mod when;
