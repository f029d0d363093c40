//! One integration-test binary for the whole system: every test starts the
//! real binaries (built by `cargo build --workspace --bins`) as children.

mod broker;
mod cli;
mod client;
mod compose;
mod coord;
mod group_protocol;
mod groups;
mod metrics;
mod replication;
