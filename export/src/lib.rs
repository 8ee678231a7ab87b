//! # mplane-export — results leave the probe as files and flows
//!
//! mPlane result schemas map to Arrow schemas; record batches go to atomically
//! committed, self-describing Parquet files.
#![warn(missing_docs)]
