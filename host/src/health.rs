//! `/health` (200 when connected, subscribed and delivering; 503
//! otherwise) and `/metrics` (Prometheus text) on `bridge.health_listen`,
//! for Docker's HEALTHCHECK, Kubernetes probes and Prometheus.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    progress: Arc<Mutex<Progress>>,
    stall_timeout: Duration,
}

/// What the last look at the counters saw. Sampled every second and at
/// each probe, so `/health` is right on its first call, not only from a
/// second probe on.
#[derive(Debug, Clone, Copy)]
struct Progress {
    /// Messages done and not lost: in Kafka or in the dead-letter topic.
    delivered: u64,
    lost: u64,
    /// The first look that saw messages waiting (or lost) at this
    /// `delivered`.
    waiting_since: Option<Instant>,
    /// `lost` when that clock started, so a stall says how many it lost.
    lost_before: u64,
    /// The last look that saw a loss since the last delivery: a bridge
    /// losing a message every few seconds is idle between losses, and must
    /// not be taken for an idle one.
    last_loss: Option<Instant>,
}

impl Progress {
    fn new(delivered: u64, lost: u64) -> Self {
        Self {
            delivered,
            lost,
            waiting_since: None,
            lost_before: lost,
            last_loss: None,
        }
    }
}

/// Why `/health` says the bridge is not delivering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stall {
    waiting: u64,
    /// Lost since the stall began: neither their topic nor the dead-letter
    /// topic took them, so they count as done without reaching Kafka.
    lost: u64,
    since: Duration,
}

/// Messages have waited (or been lost) and none has been delivered for at
/// least `timeout`: the MQTT side looks fine while nothing reaches Kafka
/// (down, or refusing the bridge), which an operator's probe must see. A
/// lost message is acknowledged like a delivered one, so it is taken out
/// of what counts as delivery: a bridge whose every record and dead letter
/// Kafka refuses (no write permission, say) is stalled, not ready. Only
/// evidence counts: the clock starts at a look that saw messages waiting
/// or lost, never earlier, so the first message after an idle spell is not
/// taken for a stall, and an idle bridge (nothing waiting, nothing lost)
/// is never stalled, whatever Kafka's state: no data waits on it.
fn stalled(
    progress: &mut Progress,
    received: u64,
    acked: u64,
    lost: u64,
    now: Instant,
    timeout: Duration,
) -> Option<Stall> {
    let waiting = received.saturating_sub(acked);
    let delivered = acked.saturating_sub(lost);
    let losing = lost != progress.lost;
    if losing {
        progress.last_loss = Some(now);
    }
    let lost_lately = progress
        .last_loss
        .is_some_and(|at| now.saturating_duration_since(at) < timeout);
    // A loss is counted before its acknowledgement, so between the two
    // `delivered` can dip for a moment: only a rise is a delivery.
    if delivered > progress.delivered || (waiting == 0 && !lost_lately) {
        *progress = Progress::new(delivered.max(progress.delivered), lost);
    }
    if (waiting > 0 || losing) && progress.waiting_since.is_none() {
        progress.waiting_since = Some(now);
        progress.lost_before = progress.lost;
    }
    progress.lost = lost;
    let started = progress.waiting_since?;
    let since = now.saturating_duration_since(started);
    // With nothing waiting, only losses that went on for the whole timeout
    // are a stall: a burst of them and then quiet is a bridge gone idle.
    let lasting = waiting > 0
        || progress
            .last_loss
            .is_some_and(|at| at.saturating_duration_since(started) >= timeout);
    (since >= timeout && lasting).then_some(Stall {
        waiting,
        lost: lost.saturating_sub(progress.lost_before),
        since,
    })
}

/// Reads the counters each second; ends only when the server's task is
/// aborted.
async fn sample(s: Shared) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        s.look();
    }
}

impl Shared {
    fn look(&self) -> Option<Stall> {
        // Not one snapshot, and need not be: in a stall deliveries stand
        // still, so the order of the reads cannot hide one. `lost` is read
        // after `acked`: a lost message is counted in `lost` before
        // `acked`, so whatever `acked` holds, `lost` then holds its losses,
        // and a loss is never taken for a delivery.
        let received = self.stats.received.get();
        let acked = self.stats.acked.get();
        let lost = self.stats.lost.get();
        let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        stalled(
            &mut p,
            received,
            acked,
            lost,
            Instant::now(),
            self.stall_timeout,
        )
    }
}

/// `bridge.health_listen` could not be bound: the one message `check` and
/// `run` both give.
pub fn listen_error(
    settings: &crate::config::Settings,
    addr: SocketAddr,
    e: &std::io::Error,
) -> crate::config::ConfigError {
    crate::config::ConfigError {
        file: settings.origin_of("bridge.health_listen"),
        key: "bridge.health_listen".into(),
        message: format!("cannot listen on {addr}: {e}"),
    }
}

/// Binds now (so a taken port is a startup error) and serves on a task.
pub async fn serve(
    addr: SocketAddr,
    state: watch::Receiver<State>,
    stats: Arc<Stats>,
    stall_timeout: Duration,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let shared = Shared {
        progress: Arc::new(Mutex::new(Progress::new(
            stats.acked.get().saturating_sub(stats.lost.get()),
            stats.lost.get(),
        ))),
        state,
        stats,
        stall_timeout,
    };
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(shared.clone());
    tracing::info!(%addr, "health and metrics endpoint listening");
    Ok(tokio::spawn(async move {
        tokio::select! {
            () = accept(listener, app) => {}
            () = sample(shared) => {}
        }
    }))
}

/// Connections served at once; more are closed at once. Probes and scrapes
/// need a handful.
const MAX_CONNECTIONS: usize = 64;
/// Kept for clients on this host (Docker's HEALTHCHECK, a sidecar) once the
/// others are full: clients elsewhere holding every slot must not make the
/// container look unhealthy.
const LOOPBACK_RESERVE: usize = 8;
/// A client must send a request's headers within this, or is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer (keep-alive included); a scraper reconnects.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Serves each connection on its own task, bounded in number and in time,
/// so clients that connect and stay silent (or a port scan that holds
/// sockets open) cannot use up the process's file descriptors, which MQTT
/// and Kafka need too. `axum::serve` has neither bound.
async fn accept(listener: tokio::net::TcpListener, app: Router) {
    let room = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let local_room = Arc::new(tokio::sync::Semaphore::new(LOOPBACK_RESERVE));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, most likely: wait, do not spin.
                tracing::warn!(error = %e, "health endpoint cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(permit) = admit(peer.ip(), &room, &local_room) else {
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            drop(permit);
        });
    }
}

/// A slot for a client at `peer`: one of the shared ones, else, for this
/// host, one of the reserved.
fn admit(
    peer: std::net::IpAddr,
    room: &Arc<tokio::sync::Semaphore>,
    local_room: &Arc<tokio::sync::Semaphore>,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    room.clone().try_acquire_owned().ok().or_else(|| {
        peer.to_canonical()
            .is_loopback()
            .then(|| local_room.clone().try_acquire_owned().ok())
            .flatten()
    })
}

async fn health(AxumState(s): AxumState<Shared>) -> (StatusCode, String) {
    let state = *s.state.borrow();
    if state != State::Ready {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{state:?}\n").to_lowercase(),
        );
    }
    match s.look() {
        Some(Stall {
            waiting,
            lost,
            since,
        }) => {
            let lost = if lost > 0 {
                format!(", {lost} lost (Kafka refused their records and their dead letters)")
            } else {
                String::new()
            };
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "stalled: no message delivered to Kafka for {} s, {waiting} waiting{lost} \
                     (bridge.health_stall_timeout_ms)\n",
                    since.as_secs()
                ),
            )
        }
        None => (StatusCode::OK, "ready\n".to_owned()),
    }
}

async fn metrics(AxumState(s): AxumState<Shared>) -> String {
    s.stats.prometheus()
}

/// `uns-kafka health --url URL`: exits 0 when the endpoint answers 200
/// `ready` (so a URL pointing at `/metrics`, or at another service on the
/// port, does not pass for healthy).
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
    // `localhost` may resolve to ::1 first while the bridge listens on
    // 0.0.0.0: every address is tried, as curl does. No port is HTTP's 80.
    let has_port = match host.strip_prefix('[') {
        Some(v6) => v6.contains("]:"),
        None => host.rsplit_once(':').is_some_and(|(h, _)| !h.contains(':')),
    };
    let with_port = if has_port {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    let addrs: Vec<std::net::SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&with_port)
        .map_err(|e| format!("{host}: {e}"))?
        .collect();
    let timeout = std::time::Duration::from_secs(3);
    let mut last = format!("{host}: no address");
    let mut stream = None;
    for addr in addrs {
        match std::net::TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("{url}: {e}"),
        }
    }
    let mut stream = stream.ok_or(last)?;
    let _ = stream.set_read_timeout(Some(timeout));
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let mut words = response.split_whitespace();
    let http = words.next().is_some_and(|w| w.starts_with("HTTP/1."));
    let status = words.next().unwrap_or("");
    let ready = response
        .split_once("\r\n\r\n")
        .is_some_and(|(_, body)| body.trim() == "ready");
    if http && status == "200" && ready {
        Ok(())
    } else {
        // The body says why (`stalled: ...`), for `docker inspect`'s
        // health log.
        let body = response
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b.trim());
        Err(format!(
            "{url}: {}{}{body}",
            response.lines().next().unwrap_or("no answer"),
            if body.is_empty() { "" } else { ": " }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(30);
    const MS: Duration = Duration::from_millis(1);

    fn fresh() -> Progress {
        Progress::new(0, 0)
    }

    fn stall(waiting: u64, lost: u64, since: Duration) -> Option<Stall> {
        Some(Stall {
            waiting,
            lost,
            since,
        })
    }

    /// One canned HTTP answer on 127.0.0.1; returns the port.
    fn answer_once(response: &'static str) -> u16 {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                // The whole request first: closing with some of it unread
                // makes the kernel reset the connection, and the probe
                // then sees a reset, not this answer.
                let mut request = Vec::new();
                let mut chunk = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s.write_all(response.as_bytes());
            }
        });
        port
    }

    /// The probe passes on the bridge's `200 ready` only: not on another
    /// 200 (the metrics page, another service), not on a 503; and it finds
    /// a bridge listening on IPv4 through `localhost`, whatever order the
    /// resolver gives.
    #[test]
    fn the_probe_passes_on_ready_only() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nready\n";
        let port = answer_once(ok);
        assert_eq!(probe(&format!("http://localhost:{port}/health")), Ok(()));
        let port = answer_once("HTTP/1.1 200 OK\r\n\r\n# HELP uns_kafka_info x\n");
        assert!(probe(&format!("http://127.0.0.1:{port}/metrics")).is_err());
        let port = answer_once("HTTP/1.1 503 Service Unavailable\r\n\r\nstalled: x\n");
        let e = probe(&format!("http://127.0.0.1:{port}/health")).unwrap_err();
        assert!(e.ends_with("503 Service Unavailable: stalled: x"), "{e}");
        let port = answer_once("200 ready\r\n\r\nready\n");
        assert!(
            probe(&format!("http://127.0.0.1:{port}/health")).is_err(),
            "not HTTP"
        );
    }

    /// Clients elsewhere holding every slot: one from this host (IPv4,
    /// IPv6, or IPv4 written as IPv6) still gets one of the reserved slots,
    /// and one from elsewhere does not.
    #[test]
    fn this_host_gets_a_reserved_slot_when_the_others_are_taken() {
        let room = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let local_room = Arc::new(tokio::sync::Semaphore::new(LOOPBACK_RESERVE));
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let mut held: Vec<_> = (0..MAX_CONNECTIONS)
            .map(|_| admit(ip("192.0.2.9"), &room, &local_room).expect("a shared slot"))
            .collect();
        assert!(admit(ip("192.0.2.9"), &room, &local_room).is_none());
        for local in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            held.push(admit(ip(local), &room, &local_room).expect(local));
        }
        while held.len() < MAX_CONNECTIONS + LOOPBACK_RESERVE {
            held.push(admit(ip("127.0.0.1"), &room, &local_room).unwrap());
        }
        assert!(
            admit(ip("127.0.0.1"), &room, &local_room).is_none(),
            "the reserve is bounded"
        );
        held.truncate(10);
        assert!(
            admit(ip("192.0.2.9"), &room, &local_room).is_some(),
            "slots come back"
        );
    }

    #[test]
    fn a_stall_is_messages_waiting_with_no_delivery_for_the_timeout() {
        let t0 = Instant::now();
        let mut p = fresh();
        assert_eq!(stalled(&mut p, 5, 0, 0, t0, T), None);
        assert_eq!(stalled(&mut p, 5, 0, 0, t0 + T - MS, T), None);
        assert_eq!(stalled(&mut p, 5, 0, 0, t0 + T, T), stall(5, 0, T));
        // More arriving does not restart the clock; a delivery does.
        assert_eq!(
            stalled(&mut p, 9, 0, 0, t0 + T + MS, T),
            stall(9, 0, T + MS)
        );
        assert_eq!(stalled(&mut p, 9, 1, 0, t0 + 2 * T, T), None);
        assert_eq!(stalled(&mut p, 9, 1, 0, t0 + 3 * T - MS, T), None);
        assert_eq!(stalled(&mut p, 9, 1, 0, t0 + 3 * T, T), stall(8, 0, T));
    }

    /// A lost message is acknowledged as done, but it did not reach
    /// Kafka: a bridge that loses everything (no write permission on its
    /// topics or on the dead-letter topic) must not look ready.
    #[test]
    fn losing_every_message_is_a_stall_and_a_delivery_ends_it() {
        let t0 = Instant::now();
        let mut p = fresh();
        // received, acked, lost: each look finds the last messages lost,
        // none waiting.
        assert_eq!(stalled(&mut p, 2, 2, 2, t0, T), None);
        assert_eq!(stalled(&mut p, 4, 4, 4, t0 + T - MS, T), None);
        assert_eq!(stalled(&mut p, 6, 6, 6, t0 + T, T), stall(0, 6, T));
        // A loss counted before its acknowledgement is no delivery.
        assert_eq!(
            stalled(&mut p, 7, 6, 7, t0 + T + MS, T),
            stall(1, 7, T + MS)
        );
        // One message delivered: not stalled, and the count starts over.
        assert_eq!(stalled(&mut p, 8, 8, 7, t0 + 2 * T, T), None);
        assert_eq!(stalled(&mut p, 9, 9, 8, t0 + 3 * T, T), None);
        assert_eq!(stalled(&mut p, 10, 10, 9, t0 + 4 * T, T), stall(0, 2, T));
        // Losses stop and nothing waits: idle, not stalled.
        assert_eq!(stalled(&mut p, 10, 10, 9, t0 + 5 * T, T), None);
    }

    /// Slow traffic, every message lost at once: most looks see nothing
    /// waiting and nothing new lost, which is not idleness.
    #[test]
    fn losing_every_message_of_slow_traffic_is_a_stall_too() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut p = fresh();
        let mut n = 0;
        let mut last = None;
        // One message every 5 s, lost; a look every second.
        for second in 0..=40u32 {
            if second % 5 == 0 {
                n += 1;
            }
            last = stalled(&mut p, n, n, n, t0 + s * second, T);
        }
        assert_eq!(last, stall(0, 9, T + 10 * s));
        // A delivery ends it.
        assert_eq!(stalled(&mut p, n + 1, n + 1, n, t0 + 41 * s, T), None);
        // A single loss, or a burst over a few looks, then quiet: never a
        // stall.
        let mut p = fresh();
        assert_eq!(stalled(&mut p, 1, 1, 1, t0, T), None);
        for second in 1..=100u32 {
            assert_eq!(stalled(&mut p, 1, 1, 1, t0 + s * second, T), None);
        }
        let mut p = fresh();
        for second in 0..=100u32 {
            let n = u64::from(second.min(3)) + 1;
            assert_eq!(
                stalled(&mut p, n, n, n, t0 + s * second, T),
                None,
                "{second}"
            );
        }
    }

    #[test]
    fn an_idle_bridge_is_not_stalled_and_its_next_message_gets_the_full_timeout() {
        let t0 = Instant::now();
        let mut p = fresh();
        assert_eq!(stalled(&mut p, 7, 7, 0, t0, T), None);
        assert_eq!(stalled(&mut p, 7, 7, 0, t0 + 10 * T, T), None);
        // A message after ten idle timeouts: the clock starts when a look
        // first sees it waiting, not at the last look that saw none.
        assert_eq!(stalled(&mut p, 8, 7, 0, t0 + 10 * T + MS, T), None);
        assert_eq!(stalled(&mut p, 8, 7, 0, t0 + 11 * T, T), None);
        assert_eq!(
            stalled(&mut p, 8, 7, 0, t0 + 11 * T + MS, T),
            stall(1, 0, T)
        );
        // Delivered: idle again.
        assert_eq!(stalled(&mut p, 8, 8, 0, t0 + 12 * T, T), None);
    }
}
