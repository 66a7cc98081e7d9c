//! One MQTT message to one Kafka record.

use serde_json::Value;

use crate::births::{Births, Declared};
use crate::config::Config;
use crate::decode::{self, Encoding};
use crate::error::TransformError;
use crate::{json, sparkplug, topic};

/// Name in the `transform_name` header and in `info`.
pub const NAME: &str = "uns-default";
/// Version in the `transform_version` header and in `info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// One MQTT message, borrowed from whoever received it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    /// 0, 1 or 2.
    pub qos: u8,
    pub retain: bool,
    pub user_properties: &'a [(String, String)],
    pub content_type: Option<&'a str>,
    /// Milliseconds since the Unix epoch when the host received it.
    pub received_at_ms: i64,
}

/// One Kafka record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub timestamp_ms: Option<i64>,
}

/// Transforms one message into exactly one record, or says why it cannot.
///
/// - value: the decoded payload, with the matching `ignored_attributes`
///   removed, as compact JSON in the publisher's spelling: a rule takes out
///   the members it names and nothing else, so digits, escapes and repeated
///   keys reach Kafka as they were sent (see [`crate::json`]). A JSON payload whose top level is not an object (an array, a
///   number, a string, a boolean, `null`) is `rejected`, because UNS
///   messages are JSON objects; with `accept_non_object_json` it is
///   forwarded as it is instead: the attribute paths walk objects only, and
///   it has no timestamp attribute;
/// - timestamp: the top-level timestamp attribute of the decoded payload,
///   read before filtering (removing the attribute from the record does not
///   lose the time), if it is an integer from 0 to `i64::MAX`; otherwise the
///   receive time. Negative values are refused because Kafka does not accept
///   negative record timestamps;
/// - key: the MQTT topic, so per-topic order holds and the source topic is
///   never lost where Kafka topic names collide;
/// - headers, in this order: each MQTT 5 user property under its own name,
///   then `mqtt_topic`, `mqtt_qos` (`0`/`1`/`2`), `mqtt_retain`
///   (`true`/`false`), `mqtt_content_type` (if the publisher set one),
///   `transform_name` and `transform_version`. A user property may repeat a
///   name used here; ours come last, so Kafka's "last header wins" lookup
///   (Java's `lastHeader`) returns the component's own, not a publisher's.
pub fn transform(config: &Config, msg: &Message<'_>) -> Result<Vec<Record>, TransformError> {
    transform_with(config, None, msg)
}

/// [`transform`], remembering what Sparkplug BIRTHs declare in `births`, so
/// that DATA metrics without a datatype keep their sign (the component's
/// instance keeps one [`Births`] for its life).
pub fn transform_with(
    config: &Config,
    births: Option<&mut Births>,
    msg: &Message<'_>,
) -> Result<Vec<Record>, TransformError> {
    if msg.payload.is_empty() {
        return Err(TransformError::decode("empty payload"));
    }
    // Attributes are removed from the compact text, not from a `Value`
    // tree, so a rule changes nothing but the members it removes (see
    // `json::remove_path`); the timestamp is read before they go.
    let (mut value, timestamp) = match decode::encoding(msg.topic) {
        Encoding::Json => {
            let scanned = json::scan(decode::utf8(msg.payload)?, &config.timestamp_attribute)?;
            decode::require_object(scanned.top, config.accept_non_object_json)?;
            let ts = scanned.attribute.as_ref().and_then(Value::as_i64);
            (scanned.compact, ts)
        }
        Encoding::SparkplugB => {
            let payload = sparkplug::decode(msg.payload)?;
            let declared = declared(births, msg.topic, &payload);
            let ts = sparkplug::top_level_integer(&payload, &config.timestamp_attribute)
                .and_then(|ts| i64::try_from(ts).ok());
            (sparkplug::to_json_bytes_with(&payload, &declared)?, ts)
        }
    };
    for rule in &config.ignored {
        if rule.filter.matches(msg.topic) {
            for path in &rule.paths {
                json::remove_path(&mut value, path)?;
            }
        }
    }
    Ok(vec![Record {
        topic: topic::kafka_topic(msg.topic, config.separator),
        key: Some(msg.topic.as_bytes().to_vec()),
        value: Some(value),
        headers: headers(msg),
        timestamp_ms: Some(
            timestamp
                // 0 cannot reach Kafka: librdkafka takes it as "stamp it
                // now", the producer's clock, later than our receipt.
                .filter(|ts| *ts > 0)
                .unwrap_or(msg.received_at_ms),
        ),
    }])
}

/// Learns from a BIRTH, and for a DATA message the datatypes its BIRTH
/// declared for metrics that carry none.
fn declared<'b>(
    births: Option<&'b mut Births>,
    topic: &str,
    payload: &sparkplug::Payload,
) -> Vec<Option<Declared<'b>>> {
    match births {
        Some(births) => {
            births.learn(topic, payload);
            let births: &'b Births = births;
            births.datatypes(topic, payload)
        }
        None => Vec::new(),
    }
}

fn headers(msg: &Message<'_>) -> Vec<(String, Vec<u8>)> {
    let mut h = Vec::with_capacity(6 + msg.user_properties.len());
    for (name, value) in msg.user_properties {
        h.push((name.clone(), value.as_bytes().to_vec()));
    }
    h.push(("mqtt_topic".to_owned(), msg.topic.as_bytes().to_vec()));
    let qos = match msg.qos {
        0 => b"0".to_vec(),
        1 => b"1".to_vec(),
        2 => b"2".to_vec(),
        other => other.to_string().into_bytes(),
    };
    h.push(("mqtt_qos".to_owned(), qos));
    let retain: &[u8] = if msg.retain { b"true" } else { b"false" };
    h.push(("mqtt_retain".to_owned(), retain.to_vec()));
    if let Some(ct) = msg.content_type {
        h.push(("mqtt_content_type".to_owned(), ct.as_bytes().to_vec()));
    }
    h.push(("transform_name".to_owned(), NAME.as_bytes().to_vec()));
    h.push(("transform_version".to_owned(), VERSION.as_bytes().to_vec()));
    h
}
