//! Payload to JSON, by topic: Sparkplug B protobuf under `spBv1.0/` except
//! host STATE messages, UTF-8 JSON everywhere else.
//!
//! UNS messages are JSON objects, so a JSON payload whose top level is
//! anything else (an array, a number, a string, a boolean, `null`) is
//! `rejected` (it decoded, as JSON, but is not the shape this component
//! takes) unless the configuration sets `accept_non_object_json`.

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

/// The type of a JSON value, as error messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    Object,
    Array,
    Number,
    String,
    Boolean,
    Null,
}

impl JsonType {
    pub fn of(value: &Value) -> JsonType {
        match value {
            Value::Object(_) => JsonType::Object,
            Value::Array(_) => JsonType::Array,
            Value::Number(_) => JsonType::Number,
            Value::String(_) => JsonType::String,
            Value::Bool(_) => JsonType::Boolean,
            Value::Null => JsonType::Null,
        }
    }

    /// `a JSON array`, `JSON null`...
    pub fn described(self) -> &'static str {
        match self {
            JsonType::Object => "a JSON object",
            JsonType::Array => "a JSON array",
            JsonType::Number => "a JSON number",
            JsonType::String => "a JSON string",
            JsonType::Boolean => "a JSON boolean",
            JsonType::Null => "JSON null",
        }
    }
}

/// Refuses a top-level JSON value that is not an object, unless
/// `accept_non_object_json`.
pub fn require_object(top: JsonType, accept_non_object_json: bool) -> Result<(), TransformError> {
    if top == JsonType::Object || accept_non_object_json {
        return Ok(());
    }
    Err(TransformError::rejected(format!(
        "payload is {}, not an object: UNS messages are JSON objects \
         (transform.config.accept_non_object_json: true forwards other JSON values)",
        top.described()
    )))
}

/// Decodes `payload` as `topic` says, refusing JSON whose top level is not
/// an object; [`decode_with`] with `accept_non_object_json` false.
pub fn decode(topic: &str, payload: &[u8]) -> Result<Value, TransformError> {
    decode_with(topic, payload, false)
}

/// Decodes `payload` as `topic` says. Any failure is a `decode` error with
/// the reason; nothing here panics, and JSON nested deeper than serde_json's
/// limit of 128 levels is refused rather than overflowing the stack. A JSON
/// top level that is not an object is `rejected` unless
/// `accept_non_object_json` (a Sparkplug protobuf always decodes to an
/// object).
pub fn decode_with(
    topic: &str,
    payload: &[u8],
    accept_non_object_json: bool,
) -> Result<Value, TransformError> {
    if payload.is_empty() {
        return Err(TransformError::decode("empty payload"));
    }
    match encoding(topic) {
        Encoding::SparkplugB => sparkplug::to_value(&sparkplug::decode(payload)?),
        Encoding::Json => {
            let value: Value = serde_json::from_str(utf8(payload)?).map_err(not_json)?;
            require_object(JsonType::of(&value), accept_non_object_json)?;
            Ok(value)
        }
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
    fn non_object_json_is_rejected_naming_its_type() {
        for topic in ["a/b", "spBv1.0/STATE/host1"] {
            for (payload, described) in [
                ("[1, {\"a\": 2}]", "a JSON array"),
                ("[]", "a JSON array"),
                ("42", "a JSON number"),
                ("-1.5e3", "a JSON number"),
                ("\"text\"", "a JSON string"),
                ("true", "a JSON boolean"),
                (" false ", "a JSON boolean"),
                ("null", "JSON null"),
            ] {
                let e = decode(topic, payload.as_bytes()).unwrap_err();
                assert_eq!(e.kind, ErrorKind::Rejected, "{topic} {payload}");
                assert_eq!(
                    e.message,
                    format!(
                        "payload is {described}, not an object: UNS messages are JSON objects \
                         (transform.config.accept_non_object_json: true forwards other JSON values)"
                    ),
                    "{topic} {payload}"
                );
                let value = decode_with(topic, payload.as_bytes(), true).unwrap();
                assert_eq!(value, serde_json::from_str::<Value>(payload).unwrap());
            }
            // Objects pass either way; invalid JSON is "not JSON" either way.
            for accept in [false, true] {
                assert!(decode_with(topic, b"{}", accept).unwrap().is_object());
                let e = decode_with(topic, b"[1,", accept).unwrap_err();
                assert!(
                    e.message.starts_with("payload is not JSON: "),
                    "{}",
                    e.message
                );
            }
        }
    }

    #[test]
    fn ten_thousand_levels_of_nesting_is_an_error_not_a_stack_overflow() {
        let arrays = "[".repeat(10_000) + &"]".repeat(10_000);
        let objects = "{\"a\":".repeat(10_000) + "1" + &"}".repeat(10_000);
        // The nesting is refused by serde_json's recursion limit before the
        // top-level type is looked at, whether or not non-objects pass.
        for deep in [&arrays, &objects] {
            for topic in ["a", "spBv1.0/STATE/h"] {
                assert!(decode_err(topic, deep.as_bytes()).contains("recursion limit exceeded"));
                let e = decode_with(topic, deep.as_bytes(), true).unwrap_err();
                assert_eq!(e.kind, ErrorKind::Decode);
                assert!(
                    e.message.contains("recursion limit exceeded"),
                    "{}",
                    e.message
                );
            }
        }
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
