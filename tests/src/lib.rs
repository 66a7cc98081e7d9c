//! Harness for the end-to-end tests: the real `uns-kafka` binary against the
//! real brokers of `tests/brokers.sh` (Mosquitto and a KRaft Kafka on
//! loopback).
//!
//! Every test shares the same brokers, so each one names its MQTT topics,
//! Kafka topics and consumer groups with [`unique`] and never depends on what
//! another test left behind.

pub mod bridge;
pub mod config_dir;
pub mod env;
pub mod kafka;
pub mod mqtt;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use bridge::{run_to_exit, Bridge, Exited};
pub use config_dir::ConfigDir;
pub use env::{bridge_bin, brokers, component, env, target_dir, workspace_root, BrokerEnv};
pub use kafka::{create_topics, create_topics_with, producer, Consumer, Rec};
pub use mqtt::{publish, MqttClient, MqttConnect, MqttVersion, Publisher, Received, Subscriber};

/// A loopback port nothing listens on now (the OS picks it; the listener
/// is closed again), for a bridge's `/health` endpoint.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The value of an unlabelled counter or gauge in a `/metrics` body; a
/// missing one fails the test rather than reading as zero.
pub fn metric_value(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in {metrics}"))
}

/// GET `path` from a bridge's `/health` and `/metrics` endpoint on
/// loopback: the whole HTTP/1.0 response, status line and headers included;
/// "unreachable" when nothing listens (a failure message says so).
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return "unreachable".into();
    };
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let _ = write!(conn, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut response = String::new();
    let _ = conn.read_to_string(&mut response);
    response
}

/// `/health`'s status code and body.
pub fn health(port: u16) -> (String, String) {
    let response = http_get(port, "/health");
    let code = response.split_whitespace().nth(1).unwrap_or_default();
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (code.to_owned(), body.to_owned())
}

/// A name no other test (in this process or a concurrent one) uses:
/// `<prefix>-<pid>-<counter>-<millis>`. Only `[A-Za-z0-9-]` besides the
/// prefix, so it is a legal Kafka topic name and MQTT topic level.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{millis}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::unique;

    #[test]
    fn unique_names_differ_and_keep_the_prefix() {
        let a = unique("t");
        let b = unique("t");
        assert_ne!(a, b);
        assert!(a.starts_with("t-"));
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }
}
