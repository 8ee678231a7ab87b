//! Shared helpers of the integration tests.
pub mod pki;
pub mod services;
