//! `uns-kafka check`: everything `run` checks before it connects, and
//! nothing after. A plant engineer can vet a new `settings.yaml` or a new
//! component in CI, or before a restart, and get the same one-line errors
//! (exit 2) the bridge would stop with.

use std::path::PathBuf;

use crate::config::{self, MqttVersion, Settings, Transport};
use crate::error::CliError;
use crate::pipeline::Bridge;

/// Arguments of `uns-kafka check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Configuration directory holding settings.yaml (and .secrets.yaml).
    #[arg(long, value_name = "DIR", default_value = "conf")]
    pub config: PathBuf,
    /// Transform component (.wasm); overrides transform.component.
    #[arg(long, value_name = "FILE.wasm")]
    pub component: Option<PathBuf>,
}

/// Loads the settings (files and `UNS_` variables), reads the TLS files,
/// compiles the component and runs its `init` with the settings, and has
/// librdkafka accept the Kafka settings; then prints what the bridge would
/// connect to. librdkafka may begin to connect while its producers exist,
/// but nothing waits for a broker: a broker that is down is not an error
/// here, as it is not for `run`.
pub fn main(args: CheckArgs) -> Result<(), CliError> {
    crate::logging::init_warnings();
    let settings = config::load(&args.config)?;
    if let Some(addr) = settings.bridge.health_listen {
        // `run` binds it before it bridges anything. An address this host
        // does not have is an error; a port in use is only a warning, as
        // `check` often runs beside the very bridge it is vetting a change
        // for, which holds the port.
        match std::net::TcpListener::bind(addr) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => eprintln!(
                "warning: bridge.health_listen {addr} is in use now (by the bridge this \
                 replaces, or by another process, which would stop run)"
            ),
            Err(e) => return Err(crate::health::listen_error(&settings, addr, &e).into()),
        }
    }
    let bridge = Bridge::prepare(settings, args.component)?;
    let (info, path) = bridge.component();
    print!(
        "{}",
        summary(
            bridge.settings(),
            &format!("{} ({} {})", path.display(), info.name, info.version)
        )
    );
    Ok(())
}

fn summary(s: &Settings, component: &str) -> String {
    let m = &s.mqtt;
    let scheme = match (m.transport, m.tls.is_some()) {
        (Transport::Tcp, false) => "mqtt",
        (Transport::Tcp, true) => "mqtts",
        (Transport::Websockets, false) => "ws",
        (Transport::Websockets, true) => "wss",
    };
    let path = match m.transport {
        Transport::Tcp => "",
        Transport::Websockets => m.websocket_path.as_str(),
    };
    let version = match m.version {
        MqttVersion::V311 => "MQTT 3.1.1",
        MqttVersion::V5 => "MQTT 5",
    };
    let host = m.url_host();
    // Relaxed checks are said where the address is, not only in the log.
    let relaxed = match &m.tls {
        Some(t) if t.cert_reqs == Some(false) => {
            ", broker certificate NOT verified (tls.cert_reqs: false)"
        }
        Some(t) if t.insecure_cert => ", broker host name not checked (tls.insecure_cert)",
        _ => "",
    };
    let bootstrap =
        crate::config::kafka_property(&s.kafka.config, "bootstrap.servers").unwrap_or_default();
    let protocol = s
        .kafka
        .config
        .get("security.protocol")
        .map(String::as_str)
        .unwrap_or("plaintext");
    format!(
        "ok: {}\n  mqtt: {scheme}://{host}:{}{path} ({version}{relaxed}), QoS {}: {}\n  \
         kafka: {bootstrap} ({protocol}), {} producer(s), dead letters to {}\n  \
         component: {component}\n",
        s.settings_file(),
        m.port,
        m.qos,
        m.topics.join(", "),
        s.kafka.producers,
        s.kafka.dead_letter_topic,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings_with(tls: &str) -> Settings {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("settings.yaml"),
            format!("mqtt: {{host: b{tls}}}\nkafka: {{config: {{bootstrap.servers: k:9092}}}}\n"),
        )
        .unwrap();
        config::load_from(dir.path(), Vec::new(), config::Mode::Offline).unwrap()
    }

    /// A relaxed certificate check shows where the address does.
    #[test]
    fn the_summary_says_when_the_broker_certificate_check_is_relaxed() {
        let line = |tls: &str| {
            summary(&settings_with(tls), "c")
                .lines()
                .nth(1)
                .unwrap()
                .to_owned()
        };
        assert_eq!(line(""), "  mqtt: mqtt://b:1883 (MQTT 5), QoS 1: spBv1.0/#");
        assert_eq!(
            line(", tls: {}"),
            "  mqtt: mqtts://b:1883 (MQTT 5), QoS 1: spBv1.0/#"
        );
        assert!(line(", tls: {cert_reqs: false}").contains("broker certificate NOT verified"));
        assert!(line(", tls: {insecure_cert: true}").contains("host name not checked"));
    }
}
