//! strata-broker: stores partitions as segment files (`log`), serves
//! produce/fetch (`replica`, `service`), mirrors cluster metadata from the
//! ensemble and runs the controller (`metadata`), coordinates consumer
//! groups (`group`). See ARCHITECTURE.md.

#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod config;
pub mod group;
pub mod log;
pub mod metadata;
pub mod replica;
pub mod server;
pub mod service;
