//! Payload to JSON, by topic: Sparkplug B protobuf under `spBv1.0/` except
//! host STATE messages, UTF-8 JSON everywhere else.

use serde_json::Value;

use crate::error::TransformError;
use crate::sparkplug;

const SPARKPLUG_PREFIX: &str = "spBv1.0/";
const STATE_PREFIX: &str = "spBv1.0/STATE/";

/// How a topic's payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    SparkplugB,
}

/// `spBv1.0/STATE/+` (exactly one level after STATE) is a host's STATE
/// message, which Sparkplug 3.0 defines as JSON; the rest of `spBv1.0/` is
/// protobuf.
pub fn encoding(topic: &str) -> Encoding {
    match topic.strip_prefix(SPARKPLUG_PREFIX) {
        None => Encoding::Json,
        Some(_) => match topic.strip_prefix(STATE_PREFIX) {
            Some(host_id) if !host_id.contains('/') => Encoding::Json,
            _ => Encoding::SparkplugB,
        },
    }
}

/// Decodes `payload` as `topic` says. Any failure is a `decode` error with
/// the reason; nothing here panics, and JSON nested deeper than serde_json's
/// limit of 128 levels is refused rather than overflowing the stack.
pub fn decode(topic: &str, payload: &[u8]) -> Result<Value, TransformError> {
    if payload.is_empty() {
        return Err(TransformError::decode("empty payload"));
    }
    match encoding(topic) {
        Encoding::SparkplugB => sparkplug::to_value(&sparkplug::decode(payload)?),
        Encoding::Json => serde_json::from_str(utf8(payload)?).map_err(not_json),
    }
}

pub(crate) fn utf8(payload: &[u8]) -> Result<&str, TransformError> {
    std::str::from_utf8(payload)
        .map_err(|e| TransformError::decode(format!("payload is not UTF-8: {e}")))
}

pub(crate) fn not_json(e: serde_json::Error) -> TransformError {
    TransformError::decode(format!("payload is not JSON: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn encoding_by_topic() {
        assert_eq!(encoding("spBv1.0/STATE/scada1"), Encoding::Json);
        assert_eq!(encoding("spBv1.0/STATE/"), Encoding::Json);
        assert_eq!(encoding("spBv1.0/STATE/a/b"), Encoding::SparkplugB);
        assert_eq!(encoding("spBv1.0/STATE"), Encoding::SparkplugB);
        assert_eq!(encoding("spBv1.0/g/NBIRTH/n"), Encoding::SparkplugB);
        assert_eq!(encoding("spBv1.0/g/DDATA/n/d"), Encoding::SparkplugB);
        assert_eq!(encoding("spBv1.0"), Encoding::Json);
        assert_eq!(encoding("spBv1.1/g/NDATA/n"), Encoding::Json);
        assert_eq!(encoding("a/b/c"), Encoding::Json);
        assert_eq!(encoding("x/spBv1.0/g"), Encoding::Json);
    }

    fn decode_err(topic: &str, payload: &[u8]) -> String {
        let e = decode(topic, payload).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Decode);
        e.message
    }

    #[test]
    fn undecodable_payloads_are_decode_errors_with_a_reason() {
        assert_eq!(decode_err("a/b", b""), "empty payload");
        assert_eq!(decode_err("spBv1.0/g/NDATA/n", b""), "empty payload");
        assert!(decode_err("a/b", b"{\"a\":").starts_with("payload is not JSON: "));
        assert!(decode_err("a/b", b"{'a': True}").starts_with("payload is not JSON: "));
        assert!(decode_err("a/b", b"{\"a\":\"\xff\"}").starts_with("payload is not UTF-8: "));
        assert!(decode_err("spBv1.0/STATE/h", b"\xc3\x28").starts_with("payload is not UTF-8: "));
        assert!(decode_err("spBv1.0/g/NDATA/n", b"\xff\xff\xff")
            .starts_with("payload is not a Sparkplug B protobuf: "));
        // A truncated length-delimited field.
        assert!(decode_err("spBv1.0/g/NDATA/n", &[0x12, 0x05, 0x0a])
            .starts_with("payload is not a Sparkplug B protobuf: "));
    }

    #[test]
    fn ten_thousand_levels_of_nesting_is_an_error_not_a_stack_overflow() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(decode_err("a", deep.as_bytes()).contains("recursion limit exceeded"));
        let deep = "{\"a\":".repeat(10_000) + "1" + &"}".repeat(10_000);
        assert!(decode_err("a", deep.as_bytes()).contains("recursion limit exceeded"));
    }

    #[test]
    fn deeply_nested_protobuf_is_an_error_not_a_stack_overflow() {
        use crate::sparkplug::payload::{metric, Metric, Template};
        use crate::sparkplug::Payload;
        use prost::Message as _;
        let mut metric = Metric::default();
        for _ in 0..200 {
            metric = Metric {
                value: Some(metric::Value::TemplateValue(Template {
                    metrics: vec![metric],
                    ..Default::default()
                })),
                ..Default::default()
            };
        }
        let bytes = Payload {
            metrics: vec![metric],
            ..Default::default()
        }
        .encode_to_vec();
        assert!(decode_err("spBv1.0/g/NDATA/n", &bytes).contains("recursion limit"));
    }
}
