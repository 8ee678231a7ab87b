//! Shared helpers of the integration tests.
pub mod net;
pub mod pki;
pub mod services;
