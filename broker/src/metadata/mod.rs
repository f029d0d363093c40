//! The broker's view of the cluster: its registration in the ensemble, the
//! metadata cache fed by watches, and the controller.

pub mod cache;
pub mod controller;
pub mod isr;
pub mod model;
pub mod producer_ids;
pub mod registration;
