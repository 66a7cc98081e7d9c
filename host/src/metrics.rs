//! Counters an operator needs to see the bridge work (and to see it not
//! lose anything): every message received ends up acknowledged, and
//! `received = acknowledged + in flight` at any time.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, n: u64) {
        self.0.store(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    /// MQTT messages taken from the broker.
    pub received: Counter,
    /// Kafka records enqueued (a message may make zero or several).
    pub records: Counter,
    /// Messages written to the dead-letter topic.
    pub dead_lettered: Counter,
    /// Messages done: in Kafka (or dead-lettered) and acknowledged to MQTT.
    pub acked: Counter,
    /// Kafka records whose delivery Kafka confirmed.
    pub confirmed: Counter,
    /// Of those, confirmed without an offset (see `kafka::Confirmed`).
    pub confirmed_without_offset: Counter,
    /// Received messages waiting for room in the pipeline.
    pub mqtt_waiting: Gauge,
    /// MQTT acknowledgements queued but not yet written.
    pub mqtt_acks_unsent: Gauge,
}

impl Stats {
    /// Prometheus text exposition format, version 0.0.4.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        for (name, help, value) in [
            (
                "uns_kafka_messages_received_total",
                "MQTT messages received",
                self.received.get(),
            ),
            (
                "uns_kafka_records_produced_total",
                "Kafka records enqueued",
                self.records.get(),
            ),
            (
                "uns_kafka_messages_dead_lettered_total",
                "Messages sent to the dead-letter topic",
                self.dead_lettered.get(),
            ),
            (
                "uns_kafka_messages_acknowledged_total",
                "Messages delivered and acknowledged to MQTT",
                self.acked.get(),
            ),
            (
                "uns_kafka_records_confirmed_total",
                "Kafka records whose delivery Kafka confirmed",
                self.confirmed.get(),
            ),
            (
                "uns_kafka_records_confirmed_without_offset_total",
                "Kafka records reported delivered without an offset (inferred by librdkafka)",
                self.confirmed_without_offset.get(),
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        }
        for (name, help, value) in [
            (
                "uns_kafka_mqtt_waiting_messages",
                "Received messages waiting for room in the pipeline (bridge.max_in_flight)",
                self.mqtt_waiting.get(),
            ),
            (
                "uns_kafka_mqtt_unsent_acks",
                "MQTT acknowledgements queued but not yet written",
                self.mqtt_acks_unsent.get(),
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            ));
        }
        out
    }
}
