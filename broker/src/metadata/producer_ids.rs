//! Producer ids for idempotent producers, unique across the cluster:
//! each broker takes blocks of ids from `/producer_ids` with a
//! version-checked write and hands them out one by one.

use std::sync::Arc;

use bytes::Bytes;
use strata_coord_client::{CoordClient, CoordError, CreateOptions};
use tokio::sync::Mutex;

use super::model::paths;

/// Ids taken from the ensemble at a time: one ensemble write per this many
/// producers started.
pub const BLOCK_SIZE: i64 = 1000;

pub struct ProducerIds {
    coord: CoordClient,
    /// Next id to hand out and the end (exclusive) of the block held.
    block: Mutex<(i64, i64)>,
}

impl std::fmt::Debug for ProducerIds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerIds").finish_non_exhaustive()
    }
}

impl ProducerIds {
    pub fn new(coord: CoordClient) -> Arc<ProducerIds> {
        Arc::new(ProducerIds { coord, block: Mutex::new((0, 0)) })
    }

    /// A producer id no other call on any broker has returned or will.
    pub async fn next(&self) -> Result<i64, CoordError> {
        let mut block = self.block.lock().await;
        if block.0 >= block.1 {
            let start = self.take_block().await?;
            *block = (start, start + BLOCK_SIZE);
        }
        let id = block.0;
        block.0 += 1;
        Ok(id)
    }

    async fn take_block(&self) -> Result<i64, CoordError> {
        loop {
            match self.coord.get(paths::PRODUCER_IDS).await {
                Ok((data, stat)) => {
                    let start = std::str::from_utf8(&data)
                        .ok()
                        .and_then(|s| s.trim().parse::<i64>().ok())
                        .ok_or_else(|| CoordError::Internal(format!("{} is damaged", paths::PRODUCER_IDS)))?;
                    let next = Bytes::from((start + BLOCK_SIZE).to_string());
                    match self.coord.set(paths::PRODUCER_IDS, next, Some(stat.version)).await {
                        Ok(_) => return Ok(start),
                        // Another broker took this block first: try the next.
                        Err(CoordError::BadVersion(_)) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(CoordError::NotFound(_)) => {
                    match self
                        .coord
                        .create(paths::PRODUCER_IDS, BLOCK_SIZE.to_string(), CreateOptions::persistent())
                        .await
                    {
                        Ok(_) => return Ok(0),
                        Err(CoordError::NodeExists(_)) => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}
