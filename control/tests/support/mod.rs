//! Shared test support: message generator and the reference SDK peer.
pub mod generate;
pub mod peer;
