//! strata-coordinator: a Raft-replicated (openraft + sled) hierarchical
//! namespace with sessions, ephemeral and sequential nodes, transactions and
//! resumable watch streams. See ARCHITECTURE.md for the map.

#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod command;
pub mod config;
pub mod error;
pub mod proposer;
pub mod raft;
pub mod read_batch;
pub mod server;
pub mod service;
pub mod session;
pub mod shutdown;
pub mod tree;
pub mod watch;
