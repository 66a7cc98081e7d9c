//! `tracing` output: human-readable by default, JSON lines with
//! `--log-json` for log shippers. `RUST_LOG` filters as usual.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

const DEFAULT_FILTER: &str =
    "info,librdkafka=warn,rumqttc=warn,rumqttd=off,wasmtime=warn,cranelift=warn";

/// `run` and `demo`: info and up, text or (`--log-json`) JSON lines.
pub fn init(json: bool) {
    install(DEFAULT_FILTER, json);
}

/// For the commands whose stdout is their answer (`check`, `transform`):
/// warnings and errors, unless `RUST_LOG` says otherwise, on stderr, so
/// what `run` would warn about (a librdkafka setting it ignores, a cache
/// it cannot write) shows before `run` does.
pub fn init_warnings() {
    install("warn", false);
}

/// Installs the subscriber unless one is in place (a second init, in tests
/// or `demo`, keeps the first), then says if `RUST_LOG` was ignored.
fn install(default: &str, json: bool) {
    let (filter, bad) = env_filter(default);
    // Colours for a person at a terminal only: `docker logs`, journald and
    // log shippers would store the escape codes in every line.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    if let Some(why) = bad {
        tracing::warn!("RUST_LOG ignored, using {default:?}: {why}");
    }
}

/// The filter `RUST_LOG` asks for, else `default`. A `RUST_LOG` that does
/// not parse comes back as its error, to be logged once a subscriber is
/// in place: ignored in silence, a typo in an operator's `RUST_LOG=debug`
/// looks like a bridge with nothing to say.
fn env_filter(default: &str) -> (EnvFilter, Option<String>) {
    filter_for(std::env::var("RUST_LOG"), default)
}

/// [`env_filter`] for a given value of `RUST_LOG`. An empty or blank one
/// counts as unset: `EnvFilter` reads it as no directives, which turns off
/// every line, errors included, and it is what a compose file's
/// `RUST_LOG: ${RUST_LOG}` or a Kubernetes `value: ""` passes when nobody
/// meant to set it.
fn filter_for(
    value: Result<String, std::env::VarError>,
    default: &str,
) -> (EnvFilter, Option<String>) {
    match value {
        Err(std::env::VarError::NotPresent) => (EnvFilter::new(default), None),
        Err(std::env::VarError::NotUnicode(_)) => (
            EnvFilter::new(default),
            Some("it is not valid UTF-8".to_owned()),
        ),
        Ok(value) if value.trim().is_empty() => (EnvFilter::new(default), None),
        Ok(value) => match EnvFilter::try_new(&value) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new(default), Some(format!("{value:?}: {e}"))),
        },
    }
}

/// How often a line that would repeat for as long as its cause lasts ("all
/// brokers are down", records sent alone, messages of an old filter) is
/// logged; what it reports is counted each time.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// A log line said at most once every [`LOG_EVERY`].
#[derive(Debug, Default)]
pub struct Sparse(Mutex<Option<Instant>>);

impl Sparse {
    /// True when the line is due; then not again for [`LOG_EVERY`].
    pub fn due(&self) -> bool {
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    #[cfg(test)]
    pub fn set_last(&self, at: Instant) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::filter::LevelFilter;

    fn level(value: Result<String, std::env::VarError>) -> (Option<LevelFilter>, Option<String>) {
        let (filter, bad) = filter_for(value, "warn");
        (filter.max_level_hint(), bad)
    }

    /// An empty `RUST_LOG` would otherwise be a filter that lets nothing
    /// through (its hint is `OFF`): the default stands, without a warning.
    #[test]
    fn an_empty_or_blank_rust_log_is_the_default() {
        assert_eq!(level(Ok(String::new())), (Some(LevelFilter::WARN), None));
        assert_eq!(level(Ok("  ".into())), (Some(LevelFilter::WARN), None));
        assert_eq!(
            level(Err(std::env::VarError::NotPresent)),
            (Some(LevelFilter::WARN), None)
        );
        assert_eq!(level(Ok("debug".into())), (Some(LevelFilter::DEBUG), None));
        let (hint, bad) = level(Ok("warn,uns_kafka=loud".into()));
        assert_eq!(hint, Some(LevelFilter::WARN));
        assert!(bad.is_some_and(|why| why.starts_with("\"warn,uns_kafka=loud\": ")));
    }
}
