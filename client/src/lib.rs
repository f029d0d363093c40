//! Strata client library: the coordinator (ensemble) client today; the
//! producer, consumer and admin clients grow here.

pub mod cli;
/// The ensemble client lives in its own crate so brokers can use it too.
pub use strata_coord_client as coord;
pub mod perf;
pub mod producer;
