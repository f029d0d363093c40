//! A TCP proxy a test can cut and heal: every link between processes goes
//! through one, so a test can partition any member from any other.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

struct State {
    target: Mutex<Option<SocketAddr>>,
    cut: AtomicBool,
    connections: Mutex<Vec<AbortHandle>>,
    accepted: AtomicU64,
}

/// Forwards connections from its own (port 0) address to a target that can
/// be set later, so proxies can exist before the processes they lead to.
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept_task: AbortHandle,
}

impl Proxy {
    pub async fn start() -> anyhow::Result<Proxy> {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into()).await
    }

    /// A proxy listening on `ip` (a network lab's hub address, so processes
    /// in other network namespaces reach it).
    pub async fn start_on(ip: std::net::IpAddr) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            target: Mutex::new(None),
            cut: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
            accepted: AtomicU64::new(0),
        });
        let st = state.clone();
        let accept_task = tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else { continue };
                st.accepted.fetch_add(1, Ordering::Relaxed);
                let target = *st.target.lock().unwrap_or_else(|p| p.into_inner());
                let Some(target) = target.filter(|_| !st.cut.load(Ordering::SeqCst)) else {
                    drop(inbound);
                    continue;
                };
                let task = tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else { return };
                    let mut inbound = inbound;
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                let mut conns = st.connections.lock().unwrap_or_else(|p| p.into_inner());
                conns.retain(|h| !h.is_finished());
                conns.push(task.abort_handle());
                // A cut that raced with this accept must still win.
                if st.cut.load(Ordering::SeqCst) {
                    task.abort();
                }
            }
        })
        .abort_handle();
        Ok(Proxy { addr, state, accept_task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_target(&self, target: SocketAddr) {
        *self.state.target.lock().unwrap_or_else(|p| p.into_inner()) = Some(target);
    }

    /// Drops every open connection and refuses new ones until `heal`.
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
        for h in self.state.connections.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            h.abort();
        }
    }

    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }

    pub fn is_cut(&self) -> bool {
        self.state.cut.load(Ordering::SeqCst)
    }

    pub fn accepted(&self) -> u64 {
        self.state.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.cut();
    }
}
