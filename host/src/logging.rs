//! `tracing` output: human-readable by default, JSON lines with
//! `--log-json` for log shippers. `RUST_LOG` filters as usual.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

const DEFAULT_FILTER: &str =
    "info,librdkafka=warn,rumqttc=warn,rumqttd=off,wasmtime=warn,cranelift=warn";

pub fn init(json: bool) {
    let (filter, bad) = env_filter(DEFAULT_FILTER);
    // Colours for a person at a terminal only: `docker logs`, journald and
    // log shippers would store the escape codes in every line.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    // A second init (tests, demo) is harmless: keep the first.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    warn_bad_filter(bad, DEFAULT_FILTER);
}

/// For the commands whose stdout is their answer (`check`, `transform`):
/// warnings and errors, unless `RUST_LOG` says otherwise, on stderr, so
/// what `run` would warn about (a librdkafka setting it ignores, a cache
/// it cannot write) shows before `run` does. Does nothing if a subscriber
/// is installed already.
pub fn init_warnings() {
    let (filter, bad) = env_filter("warn");
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_writer(std::io::stderr)
        .try_init();
    warn_bad_filter(bad, "warn");
}

/// The filter `RUST_LOG` asks for, else `default`. A `RUST_LOG` that does
/// not parse comes back as its error, to be logged once a subscriber is
/// in place: ignored in silence, a typo in an operator's `RUST_LOG=debug`
/// looks like a bridge with nothing to say.
pub fn env_filter(default: &str) -> (EnvFilter, Option<String>) {
    match std::env::var("RUST_LOG") {
        Err(std::env::VarError::NotPresent) => (EnvFilter::new(default), None),
        Err(std::env::VarError::NotUnicode(_)) => (
            EnvFilter::new(default),
            Some("it is not valid UTF-8".to_owned()),
        ),
        Ok(value) => match EnvFilter::try_new(&value) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new(default), Some(format!("{value:?}: {e}"))),
        },
    }
}

pub fn warn_bad_filter(bad: Option<String>, default: &str) {
    if let Some(why) = bad {
        tracing::warn!("RUST_LOG ignored, using {default:?}: {why}");
    }
}
