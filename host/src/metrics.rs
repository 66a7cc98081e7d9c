//! Counters an operator needs to see the bridge work (and to see it not
//! lose anything): every message received ends up acknowledged, and
//! `received = acknowledged + in flight + waiting for room` at any time.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::transform::{ComponentInfo, SANDBOX_FAILURES};

/// Release on add, acquire on read: one who reads a count also sees every
/// count the same thread made before it (`/health` reads `acked`, then
/// `lost`, and a lost message is counted in `lost` first), which relaxed
/// atomics do not promise on a weakly ordered CPU (aarch64). The cost is
/// nil on x86, where both are the same instructions.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Release);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
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
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn sub(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Upper bounds of [`Histogram`]'s buckets, in milliseconds: from a
/// loopback round trip to a Kafka outage, so a p99 can be read off either.
const BUCKETS_MS: [u64; 16] = [
    1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000,
];

/// A Prometheus histogram of durations with fixed buckets. Lock-free:
/// observed from every message's delivery future.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is `+Inf`.
    buckets: [AtomicU64; BUCKETS_MS.len() + 1],
    sum_ms: AtomicU64,
}

impl Histogram {
    pub fn observe_ms(&self, ms: u64) {
        let i = BUCKETS_MS.partition_point(|&le| le < ms);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    /// `name`'s `_bucket` (cumulative, `le` in seconds), `_sum` and
    /// `_count` lines.
    fn write(&self, out: &mut String, name: &str, help: &str) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            let le = match BUCKETS_MS.get(i) {
                Some(ms) => format!("{}", *ms as f64 / 1000.0),
                None => "+Inf".to_owned(),
            };
            out.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {cumulative}\n"));
        }
        // `_count` is the `+Inf` bucket's cumulative value, so the two
        // agree, as the format requires, whatever is observed meanwhile
        // (`_sum` may lag by it).
        out.push_str(&format!(
            "{name}_sum {}\n{name}_count {cumulative}\n",
            self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        ));
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
    /// Messages that could not be bridged and that the dead-letter topic
    /// refused as well (even without the payload): acknowledged, since
    /// holding them would stop the bridge for good, but counted apart, so
    /// an alert can tell them from what the dead-letter topic holds.
    pub lost: Counter,
    /// Messages a persistent session delivered for a filter an earlier run
    /// subscribed to and this one does not: as the broker says (MQTT 5
    /// subscription identifiers), or else by a topic matching none of
    /// `mqtt.topics` (as a topic the broker rewrote does too;
    /// `mqtt::Subscriptions`); dead-lettered, not bridged.
    pub unsubscribed: Counter,
    /// Messages done: in Kafka (or dead-lettered) and acknowledged to MQTT.
    pub acked: Counter,
    /// Kafka records Kafka took alone after it refused the batch they were
    /// in as too large (`Sink::after_refusal`).
    pub records_sent_alone: Counter,
    /// Kafka records whose delivery Kafka confirmed.
    pub confirmed: Counter,
    /// Of those, confirmed without an offset (see `kafka::Confirmed`).
    pub confirmed_without_offset: Counter,
    /// Errors librdkafka reported for a producer as a whole (a broker
    /// unreachable, authentication refused). Records are held and retried,
    /// not lost; an operator needs the count because one error can be a
    /// blip, while a count that rises as acknowledgements stall means
    /// nothing is reaching Kafka.
    pub kafka_errors: Counter,
    /// Received messages waiting for room in the pipeline.
    pub mqtt_waiting: Gauge,
    /// Payload bytes of the messages in the pipeline (each counted up to
    /// `bridge.max_in_flight_mb`): what the byte bound holds down, so an
    /// operator can see how close large messages bring it.
    pub in_flight_bytes: Gauge,
    /// 1 while the MQTT broker has the bridge connected (from its CONNACK to
    /// the connection's loss), else 0: what an alert on the MQTT side
    /// watches, where `/health` also folds in Kafka.
    pub mqtt_connected: Gauge,
    /// Connections the MQTT broker accepted: 1 after the start, one more per
    /// reconnect, so a rise says the link flaps (each reconnect may bring
    /// redeliveries, i.e. duplicates in Kafka).
    pub mqtt_connections: Counter,
    /// Components loaded on SIGHUP, and SIGHUPs that left the running one
    /// in place (bad settings or file): a failed rollout must show where
    /// alerts look, not only in the log.
    pub component_reloads: Counter,
    pub component_reload_failures: Counter,
    /// MQTT acknowledgements queued but not yet written.
    pub mqtt_acks_unsent: Gauge,
    /// From receiving a message to Kafka confirming its last record (or its
    /// dead-letter record): the latency the bridge adds, Kafka included.
    pub delivery: Histogram,
    /// Messages on which the component itself failed (each dead-lettered
    /// and the instance replaced), by [`SANDBOX_FAILURES`] kind: bad input
    /// is the plant's problem, these are the component author's.
    pub component_failures: [Counter; SANDBOX_FAILURES.len()],
    /// The component's name and version, for `uns_kafka_info`: which
    /// transform runs where, once components ship on their own. Replaced
    /// when the component is reloaded (SIGHUP).
    info: std::sync::RwLock<Option<ComponentInfo>>,
}

impl Stats {
    pub fn set_info(&self, info: ComponentInfo) {
        *self.info.write().unwrap_or_else(|e| e.into_inner()) = Some(info);
    }

    /// Counts a dead-letter reason if it is the component's own failure.
    pub fn count_component_failure(&self, kind: &str) {
        if let Some(i) = SANDBOX_FAILURES.iter().position(|k| *k == kind) {
            self.component_failures[i].add(1);
        }
    }

    /// Prometheus text exposition format, version 0.0.4.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        if let Some(info) = &*self.info.read().unwrap_or_else(|e| e.into_inner()) {
            out.push_str(&format!(
                "# HELP uns_kafka_info The bridge's and its transform component's versions\n\
                 # TYPE uns_kafka_info gauge\n\
                 uns_kafka_info{{version=\"{}\",component=\"{}\",component_version=\"{}\"}} 1\n",
                env!("CARGO_PKG_VERSION"),
                label(&info.name),
                label(&info.version),
            ));
        }
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
                "uns_kafka_messages_lost_total",
                "Messages the dead-letter topic refused too (logged; acknowledged without a record)",
                self.lost.get(),
            ),
            (
                "uns_kafka_messages_unsubscribed_total",
                "Messages a persistent session delivered for a filter of an earlier run (by MQTT 5 subscription identifier, else by a topic matching none of mqtt.topics): dead-lettered, not bridged",
                self.unsubscribed.get(),
            ),
            (
                "uns_kafka_messages_acknowledged_total",
                "Messages done: in Kafka, the dead-letter topic or filtered out by the component, and acknowledged to MQTT where QoS and the connection they came on allow",
                self.acked.get(),
            ),
            (
                "uns_kafka_records_confirmed_total",
                "Kafka records whose delivery Kafka confirmed",
                self.confirmed.get(),
            ),
            (
                "uns_kafka_kafka_errors_total",
                "Errors librdkafka reported for a producer as a whole (broker unreachable, authentication refused, ...), each logged",
                self.kafka_errors.get(),
            ),
            (
                "uns_kafka_records_sent_alone_total",
                "Kafka records Kafka took one per request after it refused their batch as too large for the topic (logged; keep batch.size below the topic's max.message.bytes)",
                self.records_sent_alone.get(),
            ),
            (
                "uns_kafka_records_confirmed_without_offset_total",
                "Kafka records reported delivered without an offset (inferred by librdkafka)",
                self.confirmed_without_offset.get(),
            ),
            (
                "uns_kafka_mqtt_connections_total",
                "Connections the MQTT broker accepted (1 + reconnects)",
                self.mqtt_connections.get(),
            ),
            (
                "uns_kafka_component_reloads_total",
                "Transform components loaded on SIGHUP",
                self.component_reloads.get(),
            ),
            (
                "uns_kafka_component_reload_failures_total",
                "SIGHUPs whose settings or component did not load (the running component stays)",
                self.component_reload_failures.get(),
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
                "uns_kafka_in_flight_payload_bytes",
                "Payload bytes of the messages handed to the pipeline and not yet done (bridge.max_in_flight_mb)",
                self.in_flight_bytes.get(),
            ),
            (
                "uns_kafka_mqtt_unsent_acks",
                "MQTT acknowledgements queued but not yet written",
                self.mqtt_acks_unsent.get(),
            ),
            (
                "uns_kafka_mqtt_connected",
                "1 while connected to the MQTT broker, else 0",
                self.mqtt_connected.get(),
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            ));
        }
        let name = "uns_kafka_component_failures_total";
        out.push_str(&format!(
            "# HELP {name} Messages on which the component trapped, ran out of time or memory (each dead-lettered; the instance replaced)\n\
             # TYPE {name} counter\n"
        ));
        for (kind, counter) in SANDBOX_FAILURES.iter().zip(&self.component_failures) {
            out.push_str(&format!("{name}{{kind=\"{kind}\"}} {}\n", counter.get()));
        }
        self.delivery.write(
            &mut out,
            "uns_kafka_delivery_seconds",
            "Time from receiving an MQTT message to Kafka confirming its records (or its dead-letter record)",
        );
        out
    }
}

/// A Prometheus label value: backslash, double quote and newline escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_and_component_failures_are_exposed_with_their_labels() {
        let stats = Stats::default();
        assert!(!stats.prometheus().contains("uns_kafka_info"));
        stats.set_info(ComponentInfo {
            name: "my \"odd\" \\ name".into(),
            version: "1.2.3".into(),
        });
        stats.count_component_failure("timeout");
        stats.count_component_failure("timeout");
        stats.count_component_failure("memory");
        stats.count_component_failure("decode"); // bad input, not the component
        let out = stats.prometheus();
        let info = format!(
            "uns_kafka_info{{version=\"{}\",component=\"my \\\"odd\\\" \\\\ name\",component_version=\"1.2.3\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        assert!(out.contains(&info), "{out}");
        for line in [
            "uns_kafka_component_failures_total{kind=\"trap\"} 0\n",
            "uns_kafka_component_failures_total{kind=\"timeout\"} 2\n",
            "uns_kafka_component_failures_total{kind=\"memory\"} 1\n",
        ] {
            assert!(out.contains(line), "{line} not in\n{out}");
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_le_in_seconds() {
        let h = Histogram::default();
        for ms in [0, 1, 2, 40, 50, 51, 400_000] {
            h.observe_ms(ms);
        }
        let mut out = String::new();
        h.write(&mut out, "x_seconds", "help");
        let line = |le: &str| {
            out.lines()
                .find(|l| l.starts_with(&format!("x_seconds_bucket{{le=\"{le}\"}} ")))
                .unwrap_or_else(|| panic!("no bucket {le} in\n{out}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_owned()
        };
        // `le` includes its bound: 1 ms is in the 0.001 bucket, 50 in 0.05.
        assert_eq!(line("0.001"), "2");
        assert_eq!(line("0.002"), "3");
        assert_eq!(line("0.025"), "3");
        assert_eq!(line("0.05"), "5");
        assert_eq!(line("0.1"), "6");
        assert_eq!(line("300"), "6");
        assert_eq!(line("+Inf"), "7");
        assert!(out.starts_with("# HELP x_seconds help\n# TYPE x_seconds histogram\n"));
        assert!(out.contains("\nx_seconds_sum 400.144\n"), "{out}");
        assert!(out.ends_with("\nx_seconds_count 7\n"), "{out}");
    }

    /// The alert rules shipped in `docker/` name only metrics the bridge
    /// exports: a renamed metric would leave an alert that never fires.
    #[test]
    fn the_shipped_alert_rules_name_exported_metrics() {
        let rules = include_str!("../../docker/prometheus-alerts.yml");
        let exported = Stats::default().prometheus();
        let names: std::collections::BTreeSet<&str> = rules
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("uns_kafka_"))
            .collect();
        assert!(names.len() >= 8, "{names:?}");
        for name in names {
            let sample = |l: &&str| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            };
            assert!(
                exported.lines().any(|l| sample(&l)),
                "{name} not in:\n{exported}"
            );
        }
    }
}
