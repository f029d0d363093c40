//! Test harness: the real binaries as child processes on port 0, cuttable TCP
//! proxies on every link, and deadline-based waiting.

pub mod cluster;
pub mod ensemble;
pub mod netlab;
pub mod process;
pub mod proxy;
pub mod scrape;
pub mod wait;

pub use cluster::Cluster;
pub use ensemble::Ensemble;
pub use process::{ChildProcess, binary};
pub use proxy::Proxy;
pub use wait::{eventually, wait_until};
