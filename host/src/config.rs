//! TODO: being written. Placeholder so the crate builds.

/// A configuration problem: names the file and the key.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub message: String,
}
