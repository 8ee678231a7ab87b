//! # mplane-probe — measurements as mPlane capabilities
//!
//! Aggregators fed by the capture pipeline, active measurements, and their
//! binding to mPlane capabilities; the `mpcom` component runtime.
#![warn(missing_docs)]

pub mod active;
pub mod malloc;
pub mod passive;
pub mod registry;
pub mod services;
pub mod synth;
