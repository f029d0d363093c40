//! Coalesces linearizable reads: one leadership confirmation (a heartbeat
//! round to a quorum, then waiting for apply) serves every read that arrived
//! before it started.
//!
//! Invariant: a read is answered only after a confirmation that *started*
//! after the read arrived, so it observes every write acknowledged before
//! the read was sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::watch;

use crate::raft::Raft;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BarrierError {
    NotLeader,
    Unavailable(String),
}

#[derive(Default)]
struct State {
    /// Generations started so far; generation g confirms reads that arrived
    /// before it started.
    started: u64,
    /// Highest generation some waiting read needs.
    wanted: u64,
    running: bool,
}

pub struct ReadBatcher {
    state: Mutex<State>,
    done: watch::Sender<(u64, Result<(), BarrierError>)>,
}

impl Default for ReadBatcher {
    fn default() -> Self {
        ReadBatcher { state: Mutex::new(State::default()), done: watch::channel((0, Ok(()))).0 }
    }
}

impl ReadBatcher {
    pub async fn barrier(self: &Arc<Self>, raft: &Raft, timeout: Duration) -> Result<(), BarrierError> {
        let mut done = self.done.subscribe();
        let target = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            // A running generation may have started before this read
            // arrived, so it needs the next one; an idle batcher starts
            // that next one now.
            let target = st.started + 1;
            st.wanted = st.wanted.max(target);
            if !st.running {
                st.running = true;
                st.started += 1;
                tokio::spawn(run(self.clone(), raft.clone(), timeout, st.started));
            }
            target
        };
        let result = done.wait_for(|(generation, _)| *generation >= target).await;
        match result {
            Ok(r) => r.1.clone(),
            Err(_) => Err(BarrierError::Unavailable("shutting down".into())),
        }
    }
}

async fn run(batcher: Arc<ReadBatcher>, raft: Raft, timeout: Duration, mut generation: u64) {
    loop {
        let result = match tokio::time::timeout(timeout, raft.ensure_linearizable()).await {
            Err(_) => Err(BarrierError::Unavailable("leadership not confirmed by a quorum in time".into())),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => Err(BarrierError::NotLeader),
            Ok(Err(e)) => Err(BarrierError::Unavailable(e.to_string())),
        };
        let mut st = batcher.state.lock().unwrap_or_else(|p| p.into_inner());
        let _previous = batcher.done.send_replace((generation, result));
        if st.wanted > generation {
            st.started += 1;
            generation = st.started;
        } else {
            st.running = false;
            return;
        }
    }
}
