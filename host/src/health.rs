//! `/health` (200 when connected and subscribed, 503 otherwise) and
//! `/metrics` (Prometheus text) on `bridge.health_listen`, for Docker's
//! HEALTHCHECK, Kubernetes probes and Prometheus.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use crate::metrics::Stats;
use crate::mqtt::State;

#[derive(Clone)]
struct Shared {
    state: watch::Receiver<State>,
    stats: Arc<Stats>,
}

/// Binds now (so a taken port is a startup error) and serves on a task.
pub async fn serve(
    addr: SocketAddr,
    state: watch::Receiver<State>,
    stats: Arc<Stats>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(Shared { state, stats });
    tracing::info!(%addr, "health and metrics endpoint listening");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "health endpoint stopped");
        }
    }))
}

async fn health(AxumState(s): AxumState<Shared>) -> (StatusCode, String) {
    let state = *s.state.borrow();
    let code = if state == State::Ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, format!("{state:?}\n").to_lowercase())
}

async fn metrics(AxumState(s): AxumState<Shared>) -> String {
    s.stats.prometheus()
}

/// `uns-kafka health --url URL`: exits 0 when the endpoint answers 200.
/// A plain HTTP/1.0 GET over a socket: the slim image has no curl, and a
/// client library for one loopback request is not worth its weight.
pub fn probe(url: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/health"),
    };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(host)
        .map_err(|e| format!("{host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}: no address"))?;
    let timeout = std::time::Duration::from_secs(3);
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{url}: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response.split_whitespace().nth(1).unwrap_or("");
    if status == "200" {
        Ok(())
    } else {
        Err(format!(
            "{url}: {}",
            response.lines().next().unwrap_or("no answer")
        ))
    }
}
