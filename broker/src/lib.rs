//! The Strata broker. Today: the partition log storage engine (`log`).

pub mod log;
