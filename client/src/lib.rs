//! Strata client library: cluster metadata, producer, consumer, consumer
//! groups, admin, the ensemble client (`coord`), and the `strata` command
//! line.

pub mod admin;
pub mod cli;
pub mod consumer;
pub mod error;
pub mod group;
pub mod metadata;
/// The ensemble client lives in its own crate so brokers can use it too.
pub use strata_coord_client as coord;
pub mod perf;
pub mod perf_log;
pub mod producer;

pub use error::ClientError;

#[cfg(test)]
mod fake_cluster;
