//! Where the brokers, the bridge binary and the components are.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Ports and files of the brokers started by `tests/brokers.sh`.
#[derive(Debug, Clone)]
pub struct BrokerEnv {
    /// Always loopback: the brokers listen on 127.0.0.1 only.
    pub mqtt_host: String,
    /// Anonymous MQTT listener.
    pub mqtt_port: u16,
    /// MQTT listener that requires `mqtt_user` / `mqtt_password`.
    pub mqtt_auth_port: u16,
    /// MQTT over TLS; the server certificate is for `localhost` and
    /// `127.0.0.1`, signed by `tls_dir/ca.crt`.
    pub mqtt_tls_port: u16,
    /// MQTT over TLS that requires a client certificate signed by
    /// `tls_dir/ca.crt`.
    pub mqtt_mtls_port: u16,
    pub mqtt_user: String,
    pub mqtt_password: String,
    pub kafka_port: u16,
    /// `127.0.0.1:<kafka_port>`.
    pub kafka_bootstrap: String,
    /// Kafka over TLS (the server certificate of `tls_dir`) with SASL PLAIN
    /// or SCRAM-SHA-256/512 as `kafka_user` / `kafka_password`.
    pub kafka_sasl_ssl_port: u16,
    /// Kafka over TLS that requires a client certificate signed by
    /// `tls_dir/ca.crt` (mutual TLS, no password).
    pub kafka_ssl_port: u16,
    pub kafka_user: String,
    pub kafka_password: String,
    /// `ca.crt`, `ca.key`, `server.crt`, `server.key`, `client.crt`,
    /// `client.key` (the client certificate is signed by the same CA).
    pub tls_dir: PathBuf,
    /// The brokers' state directory (logs, pid files, `env`).
    pub state_dir: PathBuf,
}

impl BrokerEnv {
    pub fn ca_cert(&self) -> PathBuf {
        self.tls_dir.join("ca.crt")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.tls_dir.join("client.crt")
    }
    pub fn client_key(&self) -> PathBuf {
        self.tls_dir.join("client.key")
    }
}

/// The brokers' settings: environment variables (`MQTT_PORT`,
/// `MQTT_AUTH_PORT`, `MQTT_TLS_PORT`, `MQTT_MTLS_PORT`, `KAFKA_PORT`, `KAFKA_SASL_SSL_PORT`,
/// `KAFKA_SSL_PORT`,
/// `UNS_TLS_DIR`, ...) win over the `env` file `tests/brokers.sh up` writes
/// into its state directory (`$UNS_BROKERS_DIR`, default
/// `<workspace>/target/brokers`), which wins over the defaults
/// 1883/1884/8883/8884/9092/9094/9095.
pub fn env() -> &'static BrokerEnv {
    static ENV: OnceLock<BrokerEnv> = OnceLock::new();
    ENV.get_or_init(load_env)
}

fn load_env() -> BrokerEnv {
    let state_dir = std::env::var_os("UNS_BROKERS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/brokers"));
    let file: HashMap<String, String> = std::fs::read_to_string(state_dir.join("env"))
        .map(|text| parse_env_file(&text))
        .unwrap_or_default();
    let get = |key: &str| std::env::var(key).ok().or_else(|| file.get(key).cloned());
    let port = |key: &str, default: u16| -> u16 {
        match get(key) {
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| panic!("{key}={v:?} is not a port number")),
            None => default,
        }
    };
    let kafka_port = port("KAFKA_PORT", 9092);
    BrokerEnv {
        mqtt_host: "127.0.0.1".into(),
        mqtt_port: port("MQTT_PORT", 1883),
        mqtt_auth_port: port("MQTT_AUTH_PORT", 1884),
        mqtt_tls_port: port("MQTT_TLS_PORT", 8883),
        mqtt_mtls_port: port("MQTT_MTLS_PORT", 8884),
        mqtt_user: get("MQTT_USER").unwrap_or_else(|| "uns".into()),
        mqtt_password: get("MQTT_PASSWORD").unwrap_or_else(|| "uns-secret".into()),
        kafka_port,
        kafka_bootstrap: format!("127.0.0.1:{kafka_port}"),
        kafka_sasl_ssl_port: port("KAFKA_SASL_SSL_PORT", 9094),
        kafka_ssl_port: port("KAFKA_SSL_PORT", 9095),
        kafka_user: get("KAFKA_USER").unwrap_or_else(|| "uns".into()),
        kafka_password: get("KAFKA_PASSWORD").unwrap_or_else(|| "uns-kafka-secret".into()),
        tls_dir: get("UNS_TLS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| state_dir.join("tls")),
        state_dir,
    }
}

fn parse_env_file(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// The repository root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or_else(|| Path::new("."))
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace
/// root when relative) or `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// The bridge binary under test: `$UNS_KAFKA_BIN`, else
/// `<target>/debug/uns-kafka`.
pub fn bridge_bin() -> PathBuf {
    let bin = std::env::var_os("UNS_KAFKA_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("debug/uns-kafka"));
    assert!(
        bin.is_file(),
        "the uns-kafka binary {} does not exist: run `cargo build -p uns-kafka` first \
         (or set UNS_KAFKA_BIN)",
        bin.display()
    );
    bin
}

/// A transform component built for wasm32-wasip2 in release mode, by crate
/// name (`uns-default` → `<target>/wasm32-wasip2/release/uns_default.wasm`).
pub fn component(name: &str) -> PathBuf {
    let file = format!("{}.wasm", name.replace('-', "_"));
    let path = target_dir().join("wasm32-wasip2/release").join(file);
    assert!(
        path.is_file(),
        "component {} does not exist: run `cargo build --release --target wasm32-wasip2 -p {name}` first",
        path.display()
    );
    path
}

/// Runs `tests/brokers.sh <command>` (e.g. `kafka-stop`, `kafka-start`,
/// `mqtt-stop`, `mqtt-start`) for fault tests; panics with its output if it
/// fails.
pub fn brokers(command: &str) {
    let script = workspace_root().join("tests/brokers.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(command)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "`bash tests/brokers.sh {command}` failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::parse_env_file;

    #[test]
    fn env_file_lines_become_pairs() {
        let m = parse_env_file("# c\nMQTT_PORT=1883\n\nUNS_TLS_DIR=/x/tls\n");
        assert_eq!(m.get("MQTT_PORT").map(String::as_str), Some("1883"));
        assert_eq!(m.get("UNS_TLS_DIR").map(String::as_str), Some("/x/tls"));
        assert_eq!(m.len(), 2);
    }
}
