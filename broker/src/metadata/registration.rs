//! Registration: an ensemble session and the ephemeral `/brokers/ids/{id}`.
//!
//! Invariant: a broker id is registered by at most one live process. A
//! restart that finds its own previous registration (a session that has not
//! expired yet) waits for it to expire instead of taking over.

use std::time::{Duration, Instant};

use strata_coord_client::{CoordClient, CoordError, CreateOptions, Session};

use super::model::{BrokerId, BrokerRegistration, RegistrationRecord, paths};

#[derive(Debug, thiserror::Error)]
pub enum RegistrationError {
    #[error("broker id {id} is registered by another live process (at {addr}); stop it or pick another --id")]
    IdInUse { id: BrokerId, addr: String },
    #[error(transparent)]
    Coord(#[from] CoordError),
}

/// Opens a session and registers; waits up to `wait_for_previous` for a
/// previous registration of this id to expire.
pub async fn register(
    coord: &CoordClient,
    id: BrokerId,
    registration: &RegistrationRecord,
    session_ttl: Duration,
    wait_for_previous: Duration,
) -> Result<Session, RegistrationError> {
    let session = coord.open_session(session_ttl).await?;
    let data = serde_json::to_vec(registration).map_err(|e| CoordError::Internal(e.to_string()))?;
    let path = paths::broker(id);
    let deadline = Instant::now() + wait_for_previous;
    loop {
        match coord.create(&path, data.clone(), CreateOptions::ephemeral(session.id)).await {
            Ok(_) => {
                tracing::info!(id, session = session.id, "registered in the ensemble");
                return Ok(session);
            }
            Err(CoordError::NodeExists(_)) => {
                let (existing, _) = match coord.get(&path).await {
                    Ok(v) => v,
                    Err(CoordError::NotFound(_)) => continue,
                    Err(e) => return Err(e.into()),
                };
                let other: Option<BrokerRegistration> = serde_json::from_slice(&existing).ok();
                if Instant::now() >= deadline {
                    return Err(RegistrationError::IdInUse {
                        id,
                        addr: other.map(|o| o.addr).unwrap_or_else(|| "unknown".into()),
                    });
                }
                tracing::info!(id, "a previous registration of this id is still live; waiting for it to expire");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
