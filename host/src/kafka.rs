//! Kafka out: an rdkafka producer configured from `kafka.config`, and the
//! rule for which delivery failures are the record's fault (dead-letter it)
//! and which are the cluster's (try again, never drop).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Message};

use crate::message::KafkaRecord;

#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("kafka.config: librdkafka rejected the configuration: {0}")]
    Config(KafkaError),
}

/// Routes librdkafka's own complaints (broker down, auth failed) to our
/// logs, where operators look.
pub struct LogContext;

impl ClientContext for LogContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: "librdkafka", fac, "{log_message}")
            }
            L::Warning => tracing::warn!(target: "librdkafka", fac, "{log_message}"),
            L::Notice | L::Info => tracing::info!(target: "librdkafka", fac, "{log_message}"),
            L::Debug => tracing::debug!(target: "librdkafka", fac, "{log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", %error, "{reason}");
    }
}

impl rdkafka::producer::ProducerContext for LogContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

pub type Producer_ = FutureProducer<LogContext>;

/// The producers, cheap to clone (librdkafka's handles are shared).
///
/// Each Kafka topic always goes through the same producer (chosen by a
/// hash of its name), so idempotence and per-partition order hold as with
/// one producer, while the producers' requests run side by side.
#[derive(Clone)]
pub struct Sink {
    producers: std::sync::Arc<[Producer_]>,
}

/// Why a record did not make it.
#[derive(Debug, Clone)]
pub struct DeliveryError {
    pub error: KafkaError,
}

impl DeliveryError {
    /// Errors no retry can fix: the record itself is wrong for this
    /// cluster. Everything else (timeouts, leaders moving, brokers down) is
    /// retried, because giving up would drop data.
    pub fn is_permanent(&self) -> bool {
        use RDKafkaErrorCode as C;
        matches!(
            self.error.rdkafka_error_code(),
            Some(
                C::MessageSizeTooLarge
                    | C::InvalidTopic
                    | C::MessageBatchTooLarge
                    | C::InvalidRecord
                    | C::InvalidMessage
                    | C::InvalidMessageSize
                    | C::TopicAuthorizationFailed
                    | C::UnknownTopic
                    | C::PolicyViolation
                    | C::InvalidTimestamp
            )
        )
    }
}

/// How Kafka confirmed a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    /// Written at an offset the broker returned.
    AtOffset,
    /// Reported delivered with no offset: librdkafka inferred it, from a
    /// later batch's success ("implicitly acked") or a duplicate-sequence
    /// reply. True after a lost reply; false on a broker before Kafka 4.5
    /// that accepted a later batch while this one was refused
    /// (KAFKA-15591), which one request in flight per connection (the
    /// default) rules out. Counted so that it never passes unseen.
    WithoutOffset,
}

/// How a confirmation can end other than in success.
#[derive(Debug)]
pub enum Undelivered {
    /// Kafka did not take the record. librdkafka hands the record back with
    /// the error, so the pipeline need not keep its own copy of every record
    /// in flight to retry or dead-letter one. Boxed: every message in flight
    /// holds room for one of these, and failures are rare.
    Failed(Box<Failed>),
    /// The producer went away without a report (only while shutting down):
    /// the record is gone, so its message must stay unacknowledged.
    Canceled,
}

/// A record Kafka did not take, and why.
#[derive(Debug)]
pub struct Failed {
    pub error: DeliveryError,
    pub record: KafkaRecord,
}

impl Undelivered {
    pub fn failed(error: DeliveryError, record: KafkaRecord) -> Self {
        Undelivered::Failed(Box::new(Failed { error, record }))
    }
}

impl From<Undelivered> for DeliveryError {
    /// For a caller that still holds the record and retries it itself.
    fn from(u: Undelivered) -> Self {
        match u {
            Undelivered::Failed(failed) => failed.error,
            Undelivered::Canceled => DeliveryError {
                error: KafkaError::Canceled,
            },
        }
    }
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)
    }
}

impl Sink {
    pub fn new(
        config: &BTreeMap<String, String>,
        producers: usize,
    ) -> Result<Self, KafkaSetupError> {
        let mut cc = ClientConfig::new();
        for (k, v) in config {
            cc.set(k, v);
        }
        let producers = (0..producers.max(1))
            .map(|_| {
                cc.create_with_context(LogContext)
                    .map_err(KafkaSetupError::Config)
            })
            .collect::<Result<Vec<Producer_>, _>>()?;
        Ok(Self {
            producers: producers.into(),
        })
    }

    fn producer(&self, topic: &str) -> &Producer_ {
        &self.producers[producer_index(topic, self.producers.len())]
    }

    /// Enqueues one record; the future resolves when Kafka confirms it.
    /// Waits (without blocking the runtime) while librdkafka's queue is
    /// full, which is back-pressure, not failure.
    pub async fn send(&self, record: &KafkaRecord) -> Result<DeliveryFuture, DeliveryError> {
        loop {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (name, value) in &record.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_slice()),
                });
            }
            let mut fr: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&record.topic).headers(headers);
            if let Some(k) = &record.key {
                fr = fr.key(k.as_slice());
            }
            if let Some(v) = &record.value {
                fr = fr.payload(v.as_slice());
            }
            if let Some(ts) = record.timestamp_ms {
                fr = fr.timestamp(ts);
            }
            match self.producer(&record.topic).send_result(fr) {
                Ok(f) => return Ok(f),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((error, _)) => return Err(DeliveryError { error }),
            }
        }
    }

    /// Waits for a delivery report.
    pub async fn confirm(future: DeliveryFuture) -> Result<Confirmed, Undelivered> {
        match future.await {
            Ok(Ok(d)) if d.offset >= 0 => Ok(Confirmed::AtOffset),
            Ok(Ok(_)) => Ok(Confirmed::WithoutOffset),
            Ok(Err((error, message))) => Err(Undelivered::failed(
                DeliveryError { error },
                record_of(message),
            )),
            Err(_) => Err(Undelivered::Canceled),
        }
    }

    /// Sends and waits, retrying what can be retried until it succeeds or
    /// fails permanently.
    pub async fn deliver(&self, record: &KafkaRecord) -> Result<(), DeliveryError> {
        let mut wait = Duration::from_millis(100);
        loop {
            let result = match self.send(record).await {
                Ok(f) => Self::confirm(f)
                    .await
                    .map(|_| ())
                    .map_err(DeliveryError::from),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(e) if e.is_permanent() => return Err(e),
                Err(e) => {
                    tracing::warn!(topic = %record.topic, error = %e, "Kafka delivery failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Waits up to `timeout` for everything queued to be confirmed.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let deadline = std::time::Instant::now() + timeout;
        let mut result = Ok(());
        for p in self.producers.iter() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if let Err(e) = p.flush(left) {
                result = Err(e);
            }
        }
        result
    }

    pub fn in_flight(&self) -> i32 {
        self.producers.iter().map(|p| p.in_flight_count()).sum()
    }
}

/// The record librdkafka handed back with a failed delivery, as it was
/// produced (a timestamp librdkafka chose is kept, so a retry does not
/// change it).
fn record_of(message: OwnedMessage) -> KafkaRecord {
    let headers = message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    KafkaRecord {
        topic: message.topic().to_owned(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
        timestamp_ms: message.timestamp().to_millis(),
    }
}

/// Which of `n` producers writes `topic`: FNV-1a of the name, the same in
/// every run and on every restart.
fn producer_index(topic: &str, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let h = topic.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (h % n as u64) as usize
}

/// Used by tests and the demo to read what the bridge wrote.
pub fn header_str<M: Message>(m: &M, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::{producer_index, record_of};
    use crate::message::KafkaRecord;
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};

    #[test]
    fn a_failed_delivery_gives_back_the_record_as_it_was_sent() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "mqtt_topic",
                value: Some("a/b/c".as_bytes()),
            })
            .insert(Header {
                key: "mqtt_qos",
                value: Some("1".as_bytes()),
            });
        let message = OwnedMessage::new(
            Some(br#"{"x":1}"#.to_vec()),
            Some(b"a/b/c".to_vec()),
            "a_b_c".into(),
            Timestamp::CreateTime(1_700_000_000_000),
            0,
            -1,
            Some(headers),
        );
        assert_eq!(
            record_of(message),
            KafkaRecord {
                topic: "a_b_c".into(),
                key: Some(b"a/b/c".to_vec()),
                value: Some(br#"{"x":1}"#.to_vec()),
                headers: vec![
                    ("mqtt_topic".into(), b"a/b/c".to_vec()),
                    ("mqtt_qos".into(), b"1".to_vec()),
                ],
                timestamp_ms: Some(1_700_000_000_000),
            }
        );
        let bare = OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, -1, None);
        assert_eq!(
            record_of(bare),
            KafkaRecord {
                topic: "t".into(),
                ..KafkaRecord::default()
            }
        );
    }

    #[test]
    fn a_topic_always_has_the_same_producer_and_topics_spread_over_all() {
        let topics: Vec<String> = (0..1000)
            .map(|i| format!("plant_line{i:04}_temperature"))
            .collect();
        let mut per_producer = [0usize; 4];
        for t in &topics {
            let i = producer_index(t, 4);
            assert_eq!(i, producer_index(t, 4));
            per_producer[i] += 1;
        }
        // Each gets its share, give or take: no producer sits idle.
        for n in per_producer {
            assert!((150..=350).contains(&n), "{per_producer:?}");
        }
        assert_eq!(producer_index("anything", 1), 0);
    }
}
