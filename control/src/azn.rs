//! Authorisation.
