//! The default uns-kafka transform component, `uns-default`.
//!
//! It turns each MQTT message into one Kafka record: the Kafka topic is the
//! MQTT topic with `/` replaced (made legal where needed, see [`topic`]), the
//! payload is decoded to JSON (Sparkplug B protobuf under `spBv1.0/`, JSON
//! elsewhere, see [`decode`] and [`sparkplug`]), configured attributes are
//! removed (see [`filter`] and [`config`]), and the record carries the MQTT
//! topic as key and the message's metadata as headers (see [`mod@transform`]).
//! The exact rules are in `components/uns-default/SPEC.md`.
//!
//! The logic is plain Rust so the host can run it natively, e.g. to compare
//! the sandboxed component with native speed:
//!
//! ```
//! use uns_default::{transform, Config, Message};
//!
//! let config = Config::from_json(r#"{"ignored_attributes": {"a/+/c": "secret"}}"#)?;
//! let msg = Message {
//!     topic: "a/b/c",
//!     payload: br#"{"v": 1, "secret": "x", "timestamp": 1700000000000}"#,
//!     qos: 1,
//!     retain: false,
//!     user_properties: &[],
//!     content_type: None,
//!     received_at_ms: 5,
//! };
//! let records = transform(&config, &msg).map_err(|e| e.to_string())?;
//! assert_eq!(records[0].topic, "a_b_c");
//! assert_eq!(records[0].value.as_deref(), Some(&br#"{"v":1,"timestamp":1700000000000}"#[..]));
//! assert_eq!(records[0].timestamp_ms, Some(1_700_000_000_000));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Native API: [`Config::from_json`] parses the `init` object (errors are
//! [`ConfigError`], whose text names the setting); [`transform()`] turns one
//! [`Message`] into a `Vec<`[`Record`]`>` (always one record) or a
//! [`TransformError`] with an [`ErrorKind`].
//!
//! Choices the specification leaves open, made here:
//! - a JSON payload whose top level is not an object (array, number,
//!   string, boolean, null) is `rejected` (it is JSON, so not a `decode`
//!   error), since UNS messages are JSON objects; with `accept_non_object_json: true` in the configuration it is
//!   forwarded as compact JSON, unfiltered, with the receive time as
//!   timestamp;
//! - a negative timestamp attribute counts as absent (Kafka refuses negative
//!   record timestamps);
//! - a Kafka topic name that needs changing gets `-` and the 16 hex digits of
//!   the 64-bit FNV-1a hash of the MQTT topic (see [`topic`]);
//! - JSON keeps the publisher's spelling of numbers and escapes, key order
//!   and repeated keys, filtered or not: attributes are removed from the
//!   text, not from a parsed tree (see [`json`]); a repeated key is removed
//!   (or walked into) wherever it appears.
//!
//! On `wasm32` a private `component` module (not built natively) exports
//! the WIT world `uns:bridge/transformer` by calling this API.

pub mod births;
pub mod config;
pub mod decode;
pub mod error;
pub mod filter;
pub mod json;
pub mod sparkplug;
pub mod topic;
pub mod transform;

#[cfg(any(test, target_arch = "wasm32"))]
mod arena;
#[cfg(target_arch = "wasm32")]
mod component;

pub use births::Births;
pub use config::Config;
pub use error::{ConfigError, ErrorKind, TransformError};
pub use transform::{transform, transform_with, Message, Record, NAME, VERSION};
