//! Errors at the binary's edge, and the exit codes users' scripts rely on.

use crate::config::ConfigError;
use crate::pipeline::Unconfirmed;

/// A command's failure. Usage and configuration problems exit with 2, so a
/// supervisor can tell "fix your settings" from "something broke at run
/// time" (1); a stop that left messages unconfirmed by Kafka exits with 3.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
    #[error("{0}")]
    Unconfirmed(String),
}

impl CliError {
    /// A failed bridge run: one that gave up on unconfirmed messages keeps
    /// its own exit code, wherever the bridge ran (`run` or `demo`).
    pub fn from_run(e: anyhow::Error) -> Self {
        let e = match e.downcast::<Unconfirmed>() {
            Ok(u) => return CliError::Unconfirmed(u.to_string()),
            Err(e) => e,
        };
        match e.downcast::<ConfigError>() {
            Ok(c) => CliError::Config(c),
            Err(e) => CliError::Other(e),
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Config(_) => 2,
            CliError::Other(_) => 1,
            CliError::Unconfirmed(_) => 3,
        }
    }
}
