//! Outcomes of recent requests by id, so a write retried after a timeout or a
//! leader change is applied at most once. Bounded: the oldest ids are
//! forgotten first, deterministically on every member.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::command::{RequestId, Response};

/// Enough for every client to retry for many seconds at full write rate.
pub const DEFAULT_CAPACITY: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestLog {
    capacity: usize,
    order: VecDeque<RequestId>,
    outcomes: HashMap<RequestId, Response>,
}

impl Default for RequestLog {
    fn default() -> Self {
        RequestLog { capacity: DEFAULT_CAPACITY, order: VecDeque::new(), outcomes: HashMap::new() }
    }
}

impl Eq for RequestLog {}

impl RequestLog {
    pub fn get(&self, id: &RequestId) -> Option<&Response> {
        self.outcomes.get(id)
    }

    pub fn insert(&mut self, id: RequestId, response: Response) {
        if self.outcomes.insert(id.clone(), response).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.outcomes.remove(&old);
            }
        }
    }
}
