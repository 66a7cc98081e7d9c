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
pub use kafka::{create_topics, producer, Consumer, Rec};
pub use mqtt::{publish, MqttClient, MqttConnect, MqttVersion, Publisher, Received, Subscriber};

/// A loopback port nothing listens on now (the OS picks it; the listener
/// is closed again), for a bridge's `/health` endpoint.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
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
