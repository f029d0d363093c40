//! A running broker: data dir checks, ensemble session and registration,
//! metadata cache, replica manager, controller, gRPC, clean shutdown.

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use strata_coord_client::{CoordClient, SessionState};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::group::{GroupConfig, GroupCoordinator};
use crate::log::{LogConfig, LogManager, SystemClock};
use crate::metadata::model::{BrokerRegistration, ClusterMetadata, RegistrationRecord};
use crate::metadata::producer_ids::ProducerIds;
use crate::metadata::{cache, controller, isr, registration};
use crate::replica::{ReplicaConfig, ReplicaManager};
use crate::service::Services;
use crate::service::admin::AdminService;

/// Turns SIGTERM / SIGINT into a shutdown signal.
pub fn on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = term => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
        let _ = tx.send(true);
    });
    rx
}

#[derive(Debug, Serialize, Deserialize)]
struct BrokerFile {
    format: u32,
    broker_id: i32,
}

const BROKER_FILE: &str = "broker.toml";

fn check_data_dir(config: &Config) -> anyhow::Result<File> {
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create data dir {}", dir.display()))?;
    let lock = File::create(dir.join("LOCK")).with_context(|| format!("data dir {} is not writable", dir.display()))?;
    if lock.try_lock().is_err() {
        bail!("data dir {} is in use by another process", dir.display());
    }
    let path = dir.join(BROKER_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let stored: BrokerFile = toml::from_str(&text).with_context(|| format!("{} is damaged", path.display()))?;
        if stored.broker_id != config.id {
            bail!("data dir {} belongs to broker {}, not {}", dir.display(), stored.broker_id, config.id);
        }
    } else {
        let foreign = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .any(|e| e.file_name() != "LOCK" && !e.file_name().to_string_lossy().starts_with('.'));
        if foreign {
            bail!("data dir {} holds files but no {BROKER_FILE}: it does not belong to a Strata broker", dir.display());
        }
        let text = toml::to_string(&BrokerFile { format: 1, broker_id: config.id })?;
        let tmp = dir.join(format!("{BROKER_FILE}.tmp"));
        std::fs::write(&tmp, text)?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        File::open(dir)?.sync_all()?;
    }
    Ok(lock)
}

pub async fn run(config: Config, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let _lock = check_data_dir(&config)?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (is the port in use by another process?)", config.listen))?;
    let bound = listener.local_addr()?;
    let advertise = config.advertise.clone().unwrap_or_else(|| bound.to_string());

    let coord = CoordClient::new(&config.coordinators)?;
    cache::ensure_namespace(&coord)
        .await
        .with_context(|| format!("cannot reach the coordinator ensemble at {}", config.coordinators.join(",")))?;
    let metadata = cache::start(coord.clone());

    let logs = LogManager::open(
        config.data_dir.join("logs"),
        LogConfig::default(),
        config.max_open_segments,
        Arc::new(SystemClock),
    )
    .with_context(|| format!("cannot open the logs in {}", config.data_dir.display()))?;
    let replica_config = ReplicaConfig {
        replica_lag_time_max: Duration::from_millis(config.replica_lag_time_max_ms),
        replica_fetch_wait_max: Duration::from_millis(config.replica_fetch_wait_max_ms),
        ..ReplicaConfig::default()
    };
    let replicas = ReplicaManager::new(config.id, logs, metadata.clone(), replica_config);
    let isr_requests = replicas.take_isr_requests().context("ISR requests already taken")?;
    let isr_writer = tokio::spawn(isr::run(coord.clone(), config.id, replicas.clone(), isr_requests));

    let registration = RegistrationRecord {
        registration: BrokerRegistration {
            addr: advertise.clone(),
            rack: config.rack.clone(),
            incarnation: rand::random(),
        },
        internal_addr: config.advertise_internal.clone(),
    };
    // The first registration decides whether this process may run at all:
    // an id held by another live broker stops start-up here.
    let ttl = Duration::from_millis(config.session_timeout_ms);
    let first = registration::register(&coord, config.id, &registration, ttl, ttl * 2).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let membership = tokio::spawn(membership_loop(
        coord.clone(),
        config.clone(),
        registration,
        Some(first),
        metadata.clone(),
        replicas.clone(),
        stop_rx.clone(),
    ));
    // The server outlives the membership loop: during a controlled shutdown
    // followers still fetch from this broker until leadership has moved.
    let (server_stop_tx, server_stop_rx) = watch::channel(false);

    let group_config = GroupConfig {
        min_session_timeout: Duration::from_millis(u64::from(config.group_min_session_timeout_ms)),
        max_session_timeout: Duration::from_millis(u64::from(config.group_max_session_timeout_ms)),
        rebalance_delay: Duration::from_millis(config.group_rebalance_delay_ms),
        ..GroupConfig::default()
    };
    let groups = GroupCoordinator::new(config.id, coord.clone(), metadata.clone(), group_config);
    let services = Arc::new(Services {
        replicas: replicas.clone(),
        metadata: metadata.clone(),
        admin: AdminService { coord: coord.clone(), metadata: metadata.clone() },
        producer_ids: ProducerIds::new(coord.clone()),
        groups: groups.clone(),
        max_request_bytes: config.max_request_bytes,
    });
    let server = tokio::spawn(crate::service::serve(services, listener, server_stop_rx.clone()));
    let metrics_bound = match &config.metrics_listen {
        Some(addr) => {
            let replicas = replicas.clone();
            let groups = groups.clone();
            let refresh: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
                replicas.refresh_metrics();
                groups.refresh_metrics(&|topic, partition| replicas.local_high_watermark(topic, partition));
            });
            Some(strata_proto::metrics_http::start(addr, refresh, server_stop_rx.clone()).await?)
        }
        None => None,
    };
    if let Some(path) = &config.port_file {
        let json = serde_json::json!({
            "id": config.id,
            "addr": bound.to_string(),
            "advertise": advertise,
            "metrics": metrics_bound.map(|a| a.to_string()),
        });
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, json.to_string())?;
        std::fs::rename(&tmp, path)?;
    }
    let internal = config.advertise_internal.as_deref().unwrap_or(&advertise);
    tracing::info!(id = config.id, addr = %bound, advertise = %advertise, internal = %internal, "broker serving");

    let mut shutdown = shutdown;
    let _ = shutdown.wait_for(|s| *s).await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let drain = Duration::from_millis(config.controlled_shutdown_timeout_ms);
    let _ = tokio::time::timeout(drain + Duration::from_secs(10), membership).await;
    // Groups moved when this broker was marked draining; whatever is left
    // (a drain that could not start) is handed over now, while the server
    // still runs to tell members where to go.
    groups.shutdown().await;
    let _ = server_stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    replicas.shutdown().await;
    isr_writer.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Keeps this broker registered (re-registering after a session loss) and
/// runs the controller contention for as long as the session lives.
async fn membership_loop(
    coord: CoordClient,
    config: Config,
    registration: RegistrationRecord,
    mut first: Option<strata_coord_client::Session>,
    metadata: watch::Receiver<Arc<ClusterMetadata>>,
    replicas: Arc<ReplicaManager>,
    mut stop: watch::Receiver<bool>,
) {
    let ttl = Duration::from_millis(config.session_timeout_ms);
    let preferred_every = Duration::from_millis(config.leader_imbalance_check_interval_ms);
    loop {
        if *stop.borrow() {
            return;
        }
        let attempt = match first.take() {
            Some(s) => Ok(s),
            None => registration::register(&coord, config.id, &registration, ttl, ttl * 2).await,
        };
        let session = match attempt {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::error!(error = %e, "registration failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = stop.changed() => return,
                }
            }
        };
        // Lead only while the ensemble cannot have expired the session yet:
        // it expires a TTL after the last keep-alive it received, at the
        // earliest, and a margin covers clock-rate differences.
        replicas.set_lease(session.confirmed_watch(), ttl.mul_f64(0.75));
        // The controller contends with its own stop signal, so a controlled
        // shutdown can keep it running while this broker's leaderships move.
        let (controller_stop_tx, controller_stop) = watch::channel(false);
        let controller = tokio::spawn(controller::run(
            coord.clone(),
            config.id,
            preferred_every,
            session.clone(),
            metadata.clone(),
            controller_stop,
        ));
        let mut state = session.state_watch();
        tokio::select! {
            _ = state.wait_for(|s| *s != SessionState::Alive) => {
                tracing::warn!("ensemble session lost; registering again");
            }
            _ = stop.changed() => {}
        }
        if *stop.borrow() && session.state() == SessionState::Alive {
            drain_leadership(&coord, config.id, session.id, &metadata, &config).await;
        }
        let _ = controller_stop_tx.send(true);
        controller.abort();
        let _ = controller.await;
        if *stop.borrow() {
            // Closing the session removes the registration (and the
            // controller node, if held) at once rather than after the TTL.
            if let Ok(session) = Arc::try_unwrap(session)
                && let Err(e) = session.close().await
            {
                tracing::warn!(error = %e, "closing the ensemble session");
            }
            return;
        }
    }
}

/// Controlled shutdown: marks this broker as draining, so the controller
/// moves its leaderships to other in-sync replicas, and waits until it
/// leads nothing that another live replica could lead (or the timeout).
async fn drain_leadership(
    coord: &CoordClient,
    id: i32,
    session_id: u64,
    metadata: &watch::Receiver<Arc<ClusterMetadata>>,
    config: &Config,
) {
    let path = crate::metadata::model::paths::draining(id);
    match coord.create(&path, bytes::Bytes::new(), strata_coord_client::CreateOptions::ephemeral(session_id)).await {
        Ok(_) | Err(strata_coord_client::CoordError::NodeExists(_)) => {}
        Err(e) => {
            tracing::warn!(error = %e, "cannot start a controlled shutdown; stopping without moving leaderships");
            return;
        }
    }
    let started = std::time::Instant::now();
    let timeout = Duration::from_millis(config.controlled_shutdown_timeout_ms);
    let mut metadata = metadata.clone();
    let movable = |md: &ClusterMetadata| -> usize {
        md.topics
            .values()
            .flat_map(|t| t.partitions.iter())
            .filter_map(|p| p.state.as_ref())
            .filter(|s| s.leader == id)
            .filter(|s| s.isr.iter().any(|r| *r != id && md.brokers.contains_key(r) && !md.draining.contains(r)))
            .count()
    };
    let moved = tokio::time::timeout(timeout, metadata.wait_for(|md| md.draining.contains(&id) && movable(md) == 0))
        .await
        .is_ok_and(|r| r.is_ok());
    match moved {
        true => tracing::info!(took_ms = started.elapsed().as_millis() as u64, "leaderships moved away"),
        false => tracing::warn!(
            left = movable(&metadata.borrow()),
            "controlled shutdown timed out; stopping while still leading some partitions"
        ),
    }
}
