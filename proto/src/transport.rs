//! Serving helpers shared by the coordinator and the broker.

/// Accepted sockets with TCP_NODELAY. tonic's `Server::tcp_nodelay` only
/// reaches sockets tonic binds itself; ours come from listeners bound on
/// port 0 (to report the chosen port), and without it a reply written in
/// more than one segment waits out the peer's delayed ACK (about 40 ms).
pub fn nodelay_incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}
