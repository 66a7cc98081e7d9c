//! The host's own view of a message and a record.
//!
//! These mirror the WIT types but stay independent of wasmtime, so the MQTT,
//! Kafka and pipeline modules never see bindings and the native benchmark can
//! build them without a component.

use bytes::Bytes;

/// One message received from MQTT, before the component sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttMessage {
    pub topic: String,
    /// Shared, so the dead-letter path can reuse the payload without a copy.
    pub payload: Bytes,
    /// 0, 1 or 2.
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5 user properties in arrival order; empty for 3.1.1.
    pub user_properties: Vec<(String, String)>,
    pub content_type: Option<String>,
    /// Milliseconds since the Unix epoch when the host received the message.
    pub received_at_ms: i64,
    /// Whether the broker says it sent this for one of this run's
    /// subscriptions (MQTT 5 subscription identifiers): `Some(false)` is a
    /// persistent session's filter of an earlier run. `None` where it cannot
    /// tell (MQTT 3.1.1, a broker without identifiers), and the topic is
    /// matched against `mqtt.topics` instead. Host-only: not in the WIT.
    pub subscribed: Option<bool>,
}

/// One record to produce to Kafka, as the component returned it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KafkaRecord {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timestamp_ms: Option<i64>,
}

/// Why one message could not be transformed. `kind` is one of the WIT
/// `error-kind` names (`decode`, `rejected`, `internal`) or one the host adds
/// when the component itself failed (`trap`, `timeout`, `memory`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageError {
    pub kind: String,
    pub message: String,
}

impl MessageError {
    pub fn new(kind: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for MessageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// What the component made of one message.
pub type TransformOutcome = Result<Vec<KafkaRecord>, MessageError>;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
