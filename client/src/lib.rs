//! Strata client library: the coordinator (ensemble) client today; the
//! producer, consumer and admin clients grow here.

pub mod cli;
pub mod coord;
pub mod perf;
pub mod producer;
