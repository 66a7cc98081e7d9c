//! Errors, mirroring the WIT `transform-error` so the binding layer only
//! renames them.

use std::fmt;

/// Why a message could not be transformed (the WIT `error-kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The payload is not what its topic says it is.
    Decode,
    /// The payload decoded but is refused.
    Rejected,
    /// A bug in this component.
    Internal,
}

impl ErrorKind {
    /// The WIT name, as the host reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Decode => "decode",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A per-message failure; the host dead-letters the message with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct TransformError {
    pub kind: ErrorKind,
    pub message: String,
}

impl TransformError {
    pub fn decode(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Decode,
            message: message.into(),
        }
    }

    pub fn rejected(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Rejected,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Internal,
            message: message.into(),
        }
    }
}

/// A configuration the component refuses at `init`. The text names the
/// setting, because the host stops with it and the user must fix that key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration is not a JSON object: {0}")]
    NotJson(String),
    #[error("mqtt.ignored_attributes: invalid topic filter {filter:?}: {reason}")]
    InvalidFilter { filter: String, reason: String },
    #[error("mqtt.ignored_attributes: {0}")]
    IgnoredAttributes(String),
    #[error("mqtt.timestamp_attribute: {0}")]
    TimestampAttribute(String),
    #[error("transform.topic_separator: {0}")]
    TopicSeparator(String),
    #[error("transform.config.accept_non_object_json: {0}")]
    AcceptNonObjectJson(String),
    #[error(
        "transform.config.{0}: unknown key; the default component takes {keys}",
        keys = crate::config::KEYS.join(", ")
    )]
    UnknownKey(String),
}
