//! Settings: `settings.yaml`, then `.secrets.yaml` merged over it, then
//! `UNS_` environment variables, validated up front.
//!
//! The layering is the one the Python bridge's users know from dynaconf, so
//! their files and deployment variables keep working. Every value remembers
//! where it came from, because an error that says "mqtt.port is wrong" is
//! only half an answer when the port was set in three places.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

/// A configuration problem: names the file (or environment variable) and the
/// key, so the user knows what to edit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The file, or `environment variable UNS_...`, the bad value came from.
    pub file: String,
    /// Dotted key path, e.g. `mqtt.port`; empty when the file as a whole is
    /// unreadable.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        }
    }
}

pub const SETTINGS_FILE: &str = "settings.yaml";
pub const SECRETS_FILE: &str = ".secrets.yaml";

/// librdkafka properties that name a file or directory. They resolve
/// against the configuration directory like every other path here (not
/// against wherever the process was started), and a missing one is a
/// configuration error naming its key, not a TLS failure at the first
/// connection to Kafka.
const KAFKA_PATH_PROPERTIES: &[&str] = &[
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.crl.location",
    "ssl.keystore.location",
    "sasl.kerberos.keytab",
    "https.ca.location",
];
const ENV_PREFIX: &str = "UNS_";

/// The seed's `mqtt.timestamp_attribute` when none is set.
const DEFAULT_TIMESTAMP_ATTRIBUTE: &str = "timestamp";

/// What a configured path must name when the bridge starts.
#[derive(Clone, Copy)]
enum Expect {
    /// A PEM file (rustls reads files, never directories).
    File,
    /// librdkafka accepts a CA directory as well as a file.
    FileOrDir,
    /// Not checked: the path is not used in this mode.
    Anything,
}

/// Resolves `path` against the configuration directory and checks it, so a
/// typo is a configuration error naming the key, not a TLS failure later.
fn resolve_path(dir: &Path, path: &Path, expect: Expect) -> Result<PathBuf, String> {
    let resolved = dir.join(path);
    let found = match expect {
        Expect::File => resolved.is_file(),
        Expect::FileOrDir => resolved.exists(),
        Expect::Anything => true,
    };
    if found {
        Ok(resolved)
    } else {
        Err(format!("file not found: {}", resolved.display()))
    }
}

/// Everything the bridge needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mqtt: MqttSettings,
    pub kafka: KafkaSettings,
    pub transform: TransformSettings,
    pub bridge: BridgeSettings,
    /// The configuration directory; relative paths in the files resolve
    /// against it, not against the working directory of the process.
    pub dir: PathBuf,
    /// Which file or variable set each key, for errors found after loading.
    origin: HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSettings {
    #[serde(default, deserialize_with = "de::opt_string")]
    pub host: Option<String>,
    #[serde(default = "defaults::port")]
    pub port: u16,
    #[serde(default = "defaults::topics", deserialize_with = "de::one_or_many")]
    pub topics: Vec<String>,
    #[serde(default = "defaults::qos")]
    pub qos: u8,
    /// Seconds.
    #[serde(default = "defaults::keep_alive")]
    pub keep_alive: u64,
    #[serde(default = "defaults::yes")]
    pub reconnect_on_failure: bool,
    #[serde(default)]
    pub version: MqttVersion,
    #[serde(default)]
    pub transport: Transport,
    /// Path of the websocket endpoint (`ws://host:port/<path>`).
    #[serde(default = "defaults::websocket_path")]
    pub websocket_path: String,
    /// MQTT 3.1.1 clean session, MQTT 5 clean start. `false` lets the broker
    /// keep QoS 1/2 messages for us while the bridge is down.
    #[serde(default = "defaults::yes")]
    pub clean_session: bool,
    /// MQTT 5 session expiry interval in seconds (0: ends with the connection).
    #[serde(default)]
    pub session_expiry: u32,
    /// Default: `uns-kafka-<random>`, unique per process, so two bridges
    /// never kick each other off the broker.
    #[serde(default, deserialize_with = "de::opt_string")]
    pub client_id: Option<String>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub username: Option<String>,
    #[serde(default, deserialize_with = "de::opt_secret")]
    pub password: Option<Secret>,
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    /// Component setting, kept under `mqtt` where the seed had it.
    #[serde(default)]
    pub ignored_attributes: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub timestamp_attribute: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MqttVersion {
    /// MQTT 3.1.1 (`version: 4`).
    V311,
    /// MQTT 5 (`version: 5`).
    #[default]
    V5,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Tcp,
    Websockets,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// CA bundle (PEM) to verify the broker with; the system's roots when
    /// absent.
    pub ca_certs: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub certfile: Option<PathBuf>,
    /// Client private key (PEM, unencrypted).
    pub keyfile: Option<PathBuf>,
    /// `false` turns off verification of the broker's certificate entirely.
    #[serde(default)]
    pub cert_reqs: Option<bool>,
    #[serde(default, deserialize_with = "de::opt_string")]
    pub ciphers: Option<String>,
    #[serde(default, deserialize_with = "de::opt_secret")]
    pub keyfile_password: Option<Secret>,
    /// Accept a broker certificate whose name does not match `mqtt.host`
    /// (the chain is still verified against the CA).
    #[serde(default)]
    pub insecure_cert: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    /// Handed to librdkafka as it is, plus the data-protecting defaults.
    #[serde(default, deserialize_with = "de::string_map")]
    pub config: BTreeMap<String, String>,
    #[serde(default = "defaults::dead_letter_topic")]
    pub dead_letter_topic: String,
    /// Producers the Kafka topics are spread over (by a hash of the topic,
    /// so one topic always goes through one producer and keeps its order).
    /// A librdkafka producer puts one partition in each produce request and
    /// keeps `max.in.flight.requests.per.connection` (1 by default, for
    /// data's sake) in flight per broker; with many topics that, not the
    /// broker, bounds throughput.
    #[serde(default = "defaults::producers")]
    pub producers: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformSettings {
    /// The component (`.wasm`); the default component beside the binary
    /// when absent.
    #[serde(default)]
    pub component: Option<PathBuf>,
    #[serde(default = "defaults::topic_separator")]
    pub topic_separator: String,
    /// Extra keys for the component's `init`; they override the keys the
    /// host derives from `mqtt.*`.
    #[serde(default)]
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Wall-clock budget of one component call.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "defaults::max_memory_mb")]
    pub max_memory_mb: u64,
    /// Where compiled components are cached; `$XDG_CACHE_HOME/uns-kafka`
    /// when absent.
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeSettings {
    /// Most messages handed to the component in one call.
    #[serde(default = "defaults::batch_size")]
    pub batch_size: usize,
    /// Most MQTT messages received but not yet acknowledged. When Kafka is
    /// slow the bridge stops reading from MQTT at this point.
    #[serde(default = "defaults::max_in_flight")]
    pub max_in_flight: usize,
    /// Most payload megabytes in the pipeline: the message bound alone
    /// lets 20,000 one-megabyte messages take 20 GB.
    #[serde(default = "defaults::max_in_flight_mb")]
    pub max_in_flight_mb: u64,
    /// `host:port` for `/health` and `/metrics`; off when absent.
    #[serde(default)]
    pub health_listen: Option<SocketAddr>,
    /// How long shutdown waits for Kafka to confirm what is in flight.
    #[serde(default = "defaults::shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// `/health` turns 503 when messages have waited this long with none
    /// delivered. Longer than a Kafka leader election (seconds), so a
    /// routine failover does not fail a probe.
    #[serde(default = "defaults::health_stall_timeout_ms")]
    pub health_stall_timeout_ms: u64,
}

/// A secret: never printed, not even by `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl BridgeSettings {
    /// `max_in_flight_mb` in bytes.
    pub fn max_in_flight_bytes(&self) -> usize {
        usize::try_from(self.max_in_flight_mb << 20).unwrap_or(usize::MAX)
    }
}

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

mod defaults {
    pub fn port() -> u16 {
        1883
    }
    pub fn topics() -> Vec<String> {
        vec!["spBv1.0/#".to_owned()]
    }
    pub fn qos() -> u8 {
        1
    }
    pub fn keep_alive() -> u64 {
        60
    }
    pub fn yes() -> bool {
        true
    }
    pub fn websocket_path() -> String {
        "/mqtt".to_owned()
    }
    pub fn producers() -> usize {
        4
    }
    pub fn dead_letter_topic() -> String {
        "uns_kafka_dlq".to_owned()
    }
    pub fn topic_separator() -> String {
        "_".to_owned()
    }
    pub fn timeout_ms() -> u64 {
        1000
    }
    pub fn max_memory_mb() -> u64 {
        128
    }
    pub fn batch_size() -> usize {
        256
    }
    pub fn max_in_flight() -> usize {
        20_000
    }
    /// Above what 20,000 UNS or Sparkplug messages take (13 KB each on
    /// average): a stopped reader cannot keep its connection alive, so the
    /// bound is for floods of large messages, not for everyday traffic.
    pub fn max_in_flight_mb() -> u64 {
        256
    }
    pub fn shutdown_timeout_ms() -> u64 {
        10_000
    }
    pub fn health_stall_timeout_ms() -> u64 {
        30_000
    }
}

impl MqttSettings {
    /// `host` as a URL writes it: an IPv6 address in brackets. Bare, `::1`
    /// in `ws://::1:1883/mqtt` is no authority a URL parser takes, and
    /// every connection would fail. A zone stays as written: rumqttc's
    /// websockets reach a numeric one (`fe80::1%2`), not a named one
    /// (`%eth0`).
    pub fn url_host(&self) -> String {
        let host = self.host.as_deref().unwrap_or_default();
        if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        }
    }
}

/// The librdkafka settings we add when the user did not choose: a bridge
/// that loses, duplicates or reorders data under retries is worse than a
/// slow one. `message.timeout.ms: 0` (never) keeps a record in librdkafka's
/// ordered, idempotent retries however long Kafka is away; with a timeout
/// the records of a long outage would come back as errors and be re-sent
/// one message at a time, out of order. The in-flight window, not the
/// timeout, bounds memory meanwhile.
///
/// `max.in.flight.requests.per.connection: 1` closes a hole idempotence
/// leaves open: a partition the broker has in its metadata but has not yet
/// set up (just created, or still loading) refuses one request and may
/// accept the next one already in flight; a broker before Kafka 4.5
/// (KAFKA-15591) takes that later batch as the producer's first, and
/// librdkafka then reports the refused records as delivered ("implicitly
/// acked"). With one request in flight nothing can overtake a refused one.
/// The broker handles a connection's requests one at a time anyway, so
/// the cost is one loopback round trip per request (measured in README,
/// Performance).
pub const KAFKA_DEFAULTS: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("message.timeout.ms", "0"),
    ("max.in.flight.requests.per.connection", "1"),
];

/// Properties librdkafka knows by two names (its `_RK_C_ALIAS` entries
/// for producers), the spelling this bridge uses first. Both spellings of
/// one property in `kafka.config` reach librdkafka through a hash map, so
/// which one wins would change from one start to the next: setting both is
/// an error, and a default is left out when either spelling is set.
pub const KAFKA_ALIASES: &[(&str, &str)] = &[
    ("bootstrap.servers", "metadata.broker.list"),
    ("acks", "request.required.acks"),
    ("message.timeout.ms", "delivery.timeout.ms"),
    ("max.in.flight.requests.per.connection", "max.in.flight"),
    ("linger.ms", "queue.buffering.max.ms"),
    ("retries", "message.send.max.retries"),
    ("compression.type", "compression.codec"),
    ("sasl.mechanism", "sasl.mechanisms"),
    (
        "sasl.oauthbearer.client.id",
        "sasl.oauthbearer.client.credentials.client.id",
    ),
    (
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.client.credentials.client.secret",
    ),
];

/// `key` of `kafka.config` under either of its names.
pub fn kafka_property<'a>(config: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    config
        .get(key)
        .or_else(|| config.get(kafka_alias(key)?))
        .map(String::as_str)
}

/// librdkafka's other name for property `key`, if it has one.
fn kafka_alias(key: &str) -> Option<&'static str> {
    KAFKA_ALIASES.iter().find_map(|&(ours, other)| {
        (ours == key)
            .then_some(other)
            .or((other == key).then_some(ours))
    })
}

/// Forgets where `dotted` and everything under it came from.
fn forget_origins(origin: &mut HashMap<String, String>, dotted: &str) {
    let under = format!("{dotted}.");
    origin.retain(|k, _| k != dotted && !k.starts_with(&under));
}

impl Settings {
    /// The JSON object the component's `init` receives: the seed's
    /// transform settings from `mqtt.*` and `transform.topic_separator`,
    /// overridden by anything in `transform.config`.
    pub fn component_config(&self) -> String {
        let mut object = serde_json::Map::new();
        // Every key the README promises `init`, set or not, so a
        // component of the user's own need not know the seed's defaults.
        object.insert(
            "ignored_attributes".into(),
            self.mqtt
                .ignored_attributes
                .clone()
                .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
        );
        object.insert(
            "timestamp_attribute".into(),
            self.mqtt
                .timestamp_attribute
                .clone()
                .unwrap_or_else(|| DEFAULT_TIMESTAMP_ATTRIBUTE.to_owned())
                .into(),
        );
        object.insert(
            "topic_separator".into(),
            self.transform.topic_separator.clone().into(),
        );
        for (k, v) in &self.transform.config {
            object.insert(k.clone(), v.clone());
        }
        serde_json::Value::Object(object).to_string()
    }

    /// The settings file, for errors about settings that span sources.
    pub fn settings_file(&self) -> String {
        self.dir.join(SETTINGS_FILE).display().to_string()
    }

    /// The file or environment variable that set `key` (or its nearest
    /// parent), else the settings file: a value the image sets by
    /// variable must not be blamed on a file that does not mention it.
    pub fn origin_of(&self, key: &str) -> String {
        origin_of(&self.origin, key).unwrap_or_else(|| self.settings_file())
    }

    /// Every file or variable that set `key` or anything under it, for an
    /// error about the keys together (librdkafka's verdict on the whole of
    /// `kafka.config`): "a and b", in a stable order.
    pub fn origins_under(&self, key: &str) -> String {
        let prefix = format!("{key}.");
        let mut found: Vec<&str> = self
            .origin
            .iter()
            .filter(|(k, _)| *k == key || k.starts_with(&prefix))
            .map(|(_, source)| source.as_str())
            .collect();
        found.sort_unstable();
        found.dedup();
        if found.is_empty() {
            self.origin_of(key)
        } else {
            found.join(" and ")
        }
    }
}

/// What the caller is about to do; `transform` needs no broker settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bridge,
    Offline,
}

/// Loads the bridge's settings from `dir` and the process environment.
pub fn load(dir: &Path) -> Result<Settings, ConfigError> {
    load_from(dir, std::env::vars(), Mode::Bridge)
}

/// Loads settings for `uns-kafka transform`: no broker keys are required and
/// a missing `settings.yaml` means defaults.
pub fn load_offline(dir: &Path) -> Result<Settings, ConfigError> {
    load_from(dir, std::env::vars(), Mode::Offline)
}

/// Loads settings from `dir` with the given environment (tests pass their
/// own so they do not depend on the process's).
pub fn load_from(
    dir: &Path,
    env: impl IntoIterator<Item = (String, String)>,
    mode: Mode,
) -> Result<Settings, ConfigError> {
    let settings_path = dir.join(SETTINGS_FILE);
    let settings_name = settings_path.display().to_string();
    let mut layers = Layers::default();

    match std::fs::read_to_string(&settings_path) {
        Ok(text) => layers.merge_file(&text, &settings_name)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && mode == Mode::Offline => {}
        Err(e) => {
            return Err(ConfigError {
                file: settings_name,
                key: String::new(),
                message: format!("cannot read: {e}"),
            })
        }
    }
    let secrets_path = dir.join(SECRETS_FILE);
    match std::fs::read_to_string(&secrets_path) {
        Ok(text) => layers.merge_file(&text, &secrets_path.display().to_string())?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(ConfigError {
                file: secrets_path.display().to_string(),
                key: String::new(),
                message: format!("cannot read: {e}"),
            })
        }
    }
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    env.sort();
    for (name, value) in env {
        layers.merge_env(&name, &value)?;
    }
    layers.into_settings(dir, &settings_name, mode)
}

/// The merged tree plus, for every key path set, where it came from.
#[derive(Default)]
struct Layers {
    root: Mapping,
    origin: HashMap<String, String>,
}

impl Layers {
    fn merge_file(&mut self, text: &str, file: &str) -> Result<(), ConfigError> {
        let value: Value = serde_yaml::from_str(text).map_err(|e| ConfigError {
            file: file.to_owned(),
            key: String::new(),
            message: format!("not valid YAML: {e}"),
        })?;
        let mut map = match value {
            Value::Null => Mapping::new(),
            Value::Mapping(m) => m,
            other => {
                return Err(ConfigError {
                    file: file.to_owned(),
                    key: String::new(),
                    message: format!(
                        "must be a map of sections (mqtt, kafka, ...), got {}",
                        kind(&other)
                    ),
                })
            }
        };
        // dynaconf's switch. We always merge; `false` replaces whole
        // sections, as it did there.
        let merge = match map.remove("dynaconf_merge") {
            None | Some(Value::Bool(true)) => true,
            Some(Value::Bool(false)) => false,
            Some(other) => {
                return Err(ConfigError {
                    file: file.to_owned(),
                    key: "dynaconf_merge".into(),
                    message: format!("must be true or false, got {}", kind(&other)),
                })
            }
        };
        for (key, value) in map {
            let Some(name) = key.as_str().map(str::to_owned) else {
                return Err(ConfigError {
                    file: file.to_owned(),
                    key: format!("{key:?}"),
                    message: "section names must be strings".into(),
                });
            };
            let (value, own) = take_merge_flag(value);
            if own.unwrap_or(merge) {
                self.set(&[name], value, file);
            } else {
                forget_origins(&mut self.origin, &name);
                self.root.remove(name.as_str());
                self.set(&[name], value, file);
            }
        }
        Ok(())
    }

    fn merge_env(&mut self, name: &str, raw: &str) -> Result<(), ConfigError> {
        let rest = &name[ENV_PREFIX.len()..];
        // Only nested keys: every setting lives in a section, and other
        // `UNS_*` variables of the environment are none of our business.
        if !rest.contains("__") {
            if let Some(meant) = one_underscore_typo(rest, raw) {
                tracing::warn!(
                    "environment variable {name} ignored: settings take two underscores \
                     between section and key (did you mean {ENV_PREFIX}{meant}?)"
                );
            }
            return Ok(());
        }
        let mut path: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
        if path.iter().any(String::is_empty) {
            tracing::warn!(
                "environment variable {name} ignored: it has an empty level (`__` at its end, \
                 or `____`), so it names no setting"
            );
            return Ok(());
        }
        // librdkafka names use dots, which shells cannot put in variable
        // names: UNS_KAFKA__CONFIG__BOOTSTRAP_SERVERS is bootstrap.servers.
        if path.len() == 3 && path[0] == "kafka" && path[1] == "config" {
            path[2] = path[2].replace('_', ".");
        }
        let source = format!("environment variable {name}");
        // Compose passes `${VAR}` of an unset variable as empty: that says
        // nothing, so the file's value stays (a `null` there would refuse
        // `mqtt.port`, drop the file's `topics` or turn on `tls`).
        if raw.trim().is_empty() {
            return Ok(());
        }
        // `null` or `~` asks for the default, whatever the files say;
        // except a bare `mqtt.tls`, which turns TLS on as in a file (off
        // would send the password in clear).
        if matches!(raw.trim(), "null" | "~") {
            if path == ["mqtt", "tls"] {
                self.set(&path, Value::Null, &source);
            } else {
                self.unset(&path, &source);
            }
            return Ok(());
        }
        // As dynaconf does: the text is parsed, so `1883` is a number and
        // `[a, b]` a list; anything that does not parse is a string.
        let value = if is_text_setting(&path) && !is_quoted(raw) {
            // Nothing but text is right here, so YAML's reading cannot
            // help and can only hurt: a password `!x9` is a tag to YAML,
            // `{abc}` a map, `- x` a list.
            Value::String(raw.to_owned())
        } else {
            serde_yaml::from_str::<Value>(raw).unwrap_or(Value::String(raw.to_owned()))
        };
        let value = match value {
            Value::Null => Value::String(raw.to_owned()),
            v => keep_raw_unless_plain(v, raw),
        };
        self.set(&path, value, &source);
        Ok(())
    }

    /// Removes the setting at `path` (a librdkafka property under either
    /// of its names), so that its default applies; `source` is then where
    /// it came from, for an error about the setting missing. Environment
    /// paths have at least two levels.
    fn unset(&mut self, path: &[String], source: &str) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut names = vec![last.as_str()];
        if parents == ["kafka", "config"] {
            names.extend(kafka_alias(last));
        }
        let parent = parents.join(".");
        for name in &names {
            forget_origins(&mut self.origin, &format!("{parent}.{name}"));
        }
        let mut node = Some(&mut self.root);
        for part in parents {
            node = match node.and_then(|n| n.get_mut(part.as_str())) {
                Some(Value::Mapping(m)) => Some(m),
                _ => None,
            };
        }
        if let Some(node) = node {
            for name in names {
                node.remove(name);
            }
        }
        self.origin.insert(path.join("."), source.to_owned());
    }

    /// Deep-merges `value` at `path`, recording the origin of every leaf.
    fn set(&mut self, path: &[String], value: Value, source: &str) {
        let mut node = &mut self.root;
        for part in &path[..path.len() - 1] {
            let key = Value::String(part.clone());
            if !matches!(node.get(&key), Some(Value::Mapping(_))) {
                node.insert(key.clone(), Value::Mapping(Mapping::new()));
            }
            match node.get_mut(&key) {
                Some(Value::Mapping(m)) => node = m,
                _ => return,
            }
        }
        let last = path[path.len() - 1].clone();
        let dotted = path.join(".");
        let existing = node.get_mut(last.as_str());
        match (existing, value) {
            (Some(Value::Mapping(old)), Value::Mapping(new)) => {
                merge_mapping(old, new, &dotted, source, &mut self.origin);
            }
            (_, value) => {
                self.origin
                    .retain(|k, _| !k.starts_with(&format!("{dotted}.")));
                record_origins(&value, &dotted, source, &mut self.origin);
                node.insert(Value::String(last), value);
            }
        }
    }

    /// The file or variable that set `path` or its nearest parent.
    fn origin_of(&self, path: &str, fallback: &str) -> String {
        origin_of(&self.origin, path).unwrap_or_else(|| fallback.to_owned())
    }

    fn into_settings(
        self,
        dir: &Path,
        settings_file: &str,
        mode: Mode,
    ) -> Result<Settings, ConfigError> {
        let section = |name: &str| -> Value {
            self.root
                .get(name)
                .cloned()
                .unwrap_or(Value::Mapping(Mapping::new()))
        };
        for (key, value) in &self.root {
            let name = key.as_str().unwrap_or_default();
            if !matches!(name, "mqtt" | "kafka" | "transform" | "bridge") {
                return Err(ConfigError {
                    file: self.origin_of(name, settings_file),
                    key: name.to_owned(),
                    message: "unknown section; expected one of mqtt, kafka, transform, bridge"
                        .into(),
                });
            }
            if !matches!(value, Value::Mapping(_) | Value::Null) {
                return Err(ConfigError {
                    file: self.origin_of(name, settings_file),
                    key: name.to_owned(),
                    message: format!("must be a map, got {}", kind(value)),
                });
            }
        }
        let mut mqtt_section = section("mqtt");
        if let Some(tls @ Value::Null) = mqtt_section.get_mut("tls") {
            // `tls:` alone is the map's presence, which turns TLS on (with
            // the system's roots); read as null it would turn it off and
            // send the password in clear.
            *tls = Value::Mapping(Mapping::new());
        }
        let mut mqtt: MqttSettings = self.section_as("mqtt", mqtt_section, settings_file)?;
        self.check_kafka_values(settings_file)?;
        let mut kafka: KafkaSettings = self.section_as("kafka", section("kafka"), settings_file)?;
        let mut transform: TransformSettings =
            self.section_as("transform", section("transform"), settings_file)?;
        let bridge: BridgeSettings = self.section_as("bridge", section("bridge"), settings_file)?;

        let err = |key: &str, message: String| ConfigError {
            file: self.origin_of(key, settings_file),
            key: key.to_owned(),
            message,
        };
        // A key that is missing or left at its default because of another
        // key: the file to fix is the one that set the other key.
        let err_because = |key: &str, cause: &str, message: String| ConfigError {
            file: if self.origin.contains_key(key) {
                self.origin_of(key, settings_file)
            } else {
                self.origin_of(cause, settings_file)
            },
            key: key.to_owned(),
            message,
        };

        // --- mqtt
        if mode == Mode::Bridge {
            check_host(mqtt.host.as_deref().unwrap_or_default())
                .map_err(|why| err("mqtt.host", why))?;
            if mqtt.port == 0 {
                return Err(err("mqtt.port", "must be 1..=65535, got 0".into()));
            }
        }
        if mqtt.qos > 2 {
            return Err(err(
                "mqtt.qos",
                format!("must be 0, 1 or 2, got {}", mqtt.qos),
            ));
        }
        if mqtt.topics.is_empty() {
            return Err(err(
                "mqtt.topics",
                "must name at least one topic filter".into(),
            ));
        }
        for topic in &mqtt.topics {
            if let Err(why) = check_filter(topic) {
                return Err(err(
                    "mqtt.topics",
                    format!("invalid topic filter {topic:?}: {why}"),
                ));
            }
        }
        if mqtt.keep_alive > u64::from(u16::MAX) {
            return Err(err(
                "mqtt.keep_alive",
                format!("must be 0..=65535 seconds, got {}", mqtt.keep_alive),
            ));
        }
        // rumqttc's MQTT 5 client panics below 5 s, and has no "off".
        if mqtt.version == MqttVersion::V5 && mqtt.keep_alive < 5 {
            return Err(err(
                "mqtt.keep_alive",
                format!(
                    "must be 5..=65535 seconds with MQTT 5 (version: 5), got {}",
                    mqtt.keep_alive
                ),
            ));
        }
        if let Some(id) = &mqtt.client_id {
            if id.is_empty() || id.len() > 65535 {
                return Err(err(
                    "mqtt.client_id",
                    format!("must be 1..=65535 bytes, got {}", id.len()),
                ));
            }
        }
        // A persistent session the broker cannot keep is a promise of no
        // loss across restarts that nothing honours: refuse it.
        if !mqtt.clean_session && mqtt.client_id.is_none() {
            return Err(err_because(
                "mqtt.client_id",
                "mqtt.clean_session",
                "must be set with mqtt.clean_session: false; the broker keeps a session by client \
                 id, and without one every start gets a new random id and the old session queues \
                 messages nobody reads"
                    .into(),
            ));
        }
        if !mqtt.clean_session && mqtt.version == MqttVersion::V5 && mqtt.session_expiry == 0 {
            return Err(err_because(
                "mqtt.session_expiry",
                "mqtt.clean_session",
                "must be above 0 seconds with mqtt.clean_session: false under MQTT 5 (version: 5); \
                 with 0 the broker ends the session when the bridge disconnects and keeps nothing \
                 while it is down (set it to cover the longest downtime, e.g. 86400)"
                    .into(),
            ));
        }
        // Under MQTT 5 the expiry, not clean start, decides how long a
        // session outlives its connection: a clean session's random id
        // with an expiry leaves, after every crash, a session on the
        // broker queueing messages nobody will read.
        if mqtt.clean_session && mqtt.version == MqttVersion::V5 && mqtt.session_expiry > 0 {
            return Err(err_because(
                "mqtt.session_expiry",
                "mqtt.clean_session",
                "is for a persistent session (mqtt.clean_session: false, with a fixed \
                 mqtt.client_id); with a clean session the broker would keep each run's \
                 abandoned session that long, queueing messages nobody reads. Set \
                 clean_session: false to keep messages while the bridge is down, or remove \
                 session_expiry"
                    .into(),
            ));
        }
        if mqtt.password.is_some() && mqtt.username.is_none() {
            return Err(err(
                "mqtt.password",
                "is set but mqtt.username is not; MQTT sends a password only with a user name"
                    .into(),
            ));
        }
        if mqtt.transport == Transport::Websockets && !mqtt.websocket_path.starts_with('/') {
            return Err(err(
                "mqtt.websocket_path",
                format!("must start with '/', got {:?}", mqtt.websocket_path),
            ));
        }
        if let Some(tls) = &mut mqtt.tls {
            if tls.ciphers.is_some() {
                return Err(err(
                    "mqtt.tls.ciphers",
                    "is not supported: the bridge uses rustls, which offers only its own safe cipher suites; remove the key"
                        .into(),
                ));
            }
            if tls.keyfile_password.is_some() {
                return Err(err(
                    "mqtt.tls.keyfile_password",
                    "is not supported: give an unencrypted PEM key (openssl pkey -in key.pem -out plain.pem) and protect the file instead"
                        .into(),
                ));
            }
            if tls.certfile.is_some() != tls.keyfile.is_some() {
                return Err(err(
                    if tls.certfile.is_some() { "mqtt.tls.keyfile" } else { "mqtt.tls.certfile" },
                    "mqtt.tls.certfile and mqtt.tls.keyfile go together: set both for a client certificate, or neither".into(),
                ));
            }
            for (key, path) in [
                ("mqtt.tls.ca_certs", &mut tls.ca_certs),
                ("mqtt.tls.certfile", &mut tls.certfile),
                ("mqtt.tls.keyfile", &mut tls.keyfile),
            ] {
                if let Some(p) = path {
                    // Offline commands never connect: resolve, do not check.
                    let expect = if mode == Mode::Bridge {
                        Expect::File
                    } else {
                        Expect::Anything
                    };
                    *p = resolve_path(dir, p, expect).map_err(|why| err(key, why))?;
                }
            }
            // Read and parse the files now: a DER file or a key that does
            // not fit its certificate is a configuration error naming the
            // key, not a failure at the first connection.
            if mode == Mode::Bridge {
                crate::tls::client_config(tls).map_err(|e| err(e.key, e.message))?;
            }
        }

        // --- kafka
        for (ours, other) in KAFKA_ALIASES {
            if kafka.config.contains_key(*ours) && kafka.config.contains_key(*other) {
                let (key, also) = (
                    format!("kafka.config.{other}"),
                    format!("kafka.config.{ours}"),
                );
                return Err(ConfigError {
                    file: self.origin_of(&key, settings_file),
                    message: format!(
                        "is librdkafka's other name for {ours}, which is set too ({}); \
                         keep one of them",
                        self.origin_of(&also, settings_file)
                    ),
                    key,
                });
            }
        }
        for (key, value) in KAFKA_DEFAULTS {
            if kafka_property(&kafka.config, key).is_none() {
                kafka.config.insert((*key).to_owned(), (*value).to_owned());
            }
        }
        if mode == Mode::Bridge
            && kafka_property(&kafka.config, "bootstrap.servers")
                .is_none_or(|s| s.trim().is_empty())
        {
            return Err(err(
                "kafka.config.bootstrap.servers",
                "is mandatory: the Kafka brokers to connect to, e.g. localhost:9092".into(),
            ));
        }
        for key in KAFKA_PATH_PROPERTIES {
            let Some(value) = kafka.config.get_mut(*key) else {
                continue;
            };
            // `probe`: librdkafka looks for the system's CA bundle itself.
            if value.trim().is_empty() || (key.ends_with("ca.location") && value == "probe") {
                continue;
            }
            // Offline commands never connect to Kafka: resolve, do not check.
            let expect = if mode == Mode::Bridge {
                Expect::FileOrDir
            } else {
                Expect::Anything
            };
            let resolved = resolve_path(dir, Path::new(value.as_str()), expect)
                .map_err(|why| err(&format!("kafka.config.{key}"), why))?;
            *value = resolved.to_string_lossy().into_owned();
        }
        // librdkafka's own check of every property, here where we still
        // know which file or variable set it (the producer, built later,
        // only knows the merged whole).
        for (key, value) in &kafka.config {
            let mut one = rdkafka::ClientConfig::new();
            one.set(key, value);
            if let Err(e) = one.create_native_config() {
                let why = match e {
                    // librdkafka names the property by its canonical name
                    // (`queue.buffering.max.ms` for `linger.ms`) and, for a
                    // number out of range, leaves the value out. Only values
                    // it checks get here (never a password, which is free
                    // text), so showing it is safe.
                    rdkafka::error::KafkaError::ClientConfig(_, desc, _, _)
                        if desc.starts_with("Invalid value") && !desc.contains(value.as_str()) =>
                    {
                        format!("{desc}: {value:?}")
                    }
                    rdkafka::error::KafkaError::ClientConfig(_, desc, _, _) => desc,
                    other => other.to_string(),
                };
                return Err(err(&format!("kafka.config.{key}"), why));
            }
        }
        // librdkafka takes a record only when the queue has room for it,
        // and checks its size against `message.max.bytes` alone: a queue
        // smaller than one record would make the bridge wait for room for
        // ever on the first large message, with nothing in the log.
        // The numbers as librdkafka read them (it takes `0x200` and
        // `512KB` for 512), defaults included.
        let mut all = rdkafka::ClientConfig::new();
        for (key, value) in &kafka.config {
            all.set(key, value);
        }
        let native = all
            .create_native_config()
            .map_err(|e| err("kafka.config", e.to_string()))?;
        let number = |key: &str| {
            native
                .get(key)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let max_record = number("message.max.bytes");
        let queue_kb = number("queue.buffering.max.kbytes");
        if queue_kb.saturating_mul(1024) < max_record {
            return Err(err(
                "kafka.config.queue.buffering.max.kbytes",
                format!(
                    "{queue_kb} KiB cannot hold one record of message.max.bytes \
                     ({max_record} bytes); make it at least {}",
                    max_record.div_ceil(1024)
                ),
            ));
        }
        // A message is acknowledged to MQTT when the delivery reports of
        // its records say Kafka has them: with reports for failures only,
        // the first message would wait for ever and the bridge with it.
        if native
            .get("delivery.report.only.error")
            .is_ok_and(|v| v.trim() == "true")
        {
            return Err(err(
                "kafka.config.delivery.report.only.error",
                "must be false: the bridge acknowledges an MQTT message when Kafka's \
                 delivery report for each of its records says it is stored, and without \
                 reports for success it would acknowledge nothing"
                    .into(),
            ));
        }
        if let Err(why) = check_kafka_topic(&kafka.dead_letter_topic) {
            return Err(err("kafka.dead_letter_topic", why));
        }
        if kafka.producers == 0 || kafka.producers > 64 {
            return Err(err(
                "kafka.producers",
                format!("must be 1..=64, got {}", kafka.producers),
            ));
        }

        // --- transform
        if let Some(c) = &mut transform.component {
            *c = dir.join(&*c);
        }
        if let Some(c) = &mut transform.cache_dir {
            *c = dir.join(&*c);
        }
        if transform.timeout_ms == 0 {
            return Err(err("transform.timeout_ms", "must be at least 1".into()));
        }
        if transform.max_memory_mb == 0 || transform.max_memory_mb > 4096 {
            return Err(err(
                "transform.max_memory_mb",
                format!("must be 1..=4096, got {}", transform.max_memory_mb),
            ));
        }

        // --- bridge
        if bridge.batch_size == 0 || bridge.batch_size > 65_535 {
            return Err(err(
                "bridge.batch_size",
                format!("must be 1..=65535, got {}", bridge.batch_size),
            ));
        }
        if bridge.max_in_flight == 0 || bridge.max_in_flight > 65_535 {
            return Err(err(
                "bridge.max_in_flight",
                format!("must be 1..=65535, got {}", bridge.max_in_flight),
            ));
        }
        if bridge.max_in_flight_mb == 0 || bridge.max_in_flight_mb > 4096 {
            return Err(err(
                "bridge.max_in_flight_mb",
                format!("must be 1..=4096, got {}", bridge.max_in_flight_mb),
            ));
        }
        if bridge.health_stall_timeout_ms < 1000 {
            // Under load one Kafka round trip can take most of a second:
            // a shorter timeout would fail probes of a bridge that works.
            return Err(err(
                "bridge.health_stall_timeout_ms",
                format!(
                    "must be at least 1000 (one second), got {}",
                    bridge.health_stall_timeout_ms
                ),
            ));
        }

        Ok(Settings {
            mqtt,
            kafka,
            transform,
            bridge,
            dir: dir.to_path_buf(),
            origin: self.origin,
        })
    }

    /// Each `kafka.config` value is text for librdkafka. Checked here, key by
    /// key, because serde would name only the map, and so the file that set
    /// its first key rather than the one that set the bad value.
    fn check_kafka_values(&self, settings_file: &str) -> Result<(), ConfigError> {
        let Some(Value::Mapping(kafka)) = self.root.get("kafka") else {
            return Ok(());
        };
        let Some(Value::Mapping(config)) = kafka.get("config") else {
            return Ok(());
        };
        for (name, value) in config {
            let name = match name {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => continue,
            };
            let why = match value {
                Value::String(_) | Value::Number(_) | Value::Bool(_) => continue,
                // An empty `sasl.password:` or `acks:` would otherwise fall
                // back to librdkafka's default without a word.
                Value::Null => "has no value; give one, or remove the key for the default",
                Value::Sequence(_) => "expected text, got a list",
                Value::Mapping(_) => "expected text, got a map",
                Value::Tagged(_) => "expected text, got a tagged value",
            };
            let key = format!("kafka.config.{name}");
            return Err(ConfigError {
                file: self.origin_of(&key, settings_file),
                key,
                message: why.into(),
            });
        }
        Ok(())
    }

    /// Deserializes one section, turning serde's error into one that names
    /// the key path and the file that set it.
    fn section_as<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        value: Value,
        settings_file: &str,
    ) -> Result<T, ConfigError> {
        let value = if value.is_null() {
            Value::Mapping(Mapping::new())
        } else {
            value
        };
        serde_path_to_error::deserialize(value).map_err(|e| {
            let inner = e.path().to_string();
            let key = if inner == "." || inner.is_empty() {
                name.to_owned()
            } else {
                format!("{name}.{inner}")
            };
            let message = e.into_inner().to_string();
            // serde_yaml appends " at line N column M" for values it parsed
            // from text; a tree has no positions, so nothing to strip.
            ConfigError {
                file: self.origin_of(&key, settings_file),
                key,
                message,
            }
        })
    }
}

fn merge_mapping(
    old: &mut Mapping,
    new: Mapping,
    prefix: &str,
    source: &str,
    origin: &mut HashMap<String, String>,
) {
    for (k, v) in new {
        let name = match &k {
            Value::String(s) => s.clone(),
            other => format!("{other:?}"),
        };
        let dotted = format!("{prefix}.{name}");
        match (old.get_mut(&k), v) {
            (Some(Value::Mapping(o)), Value::Mapping(n)) => {
                merge_mapping(o, n, &dotted, source, origin)
            }
            (_, v) => {
                origin.retain(|key, _| !key.starts_with(&format!("{dotted}.")));
                record_origins(&v, &dotted, source, origin);
                old.insert(k, v);
            }
        }
    }
}

/// The keys of each section, as variable names spell them: what a
/// mistyped variable is checked against.
const SECTION_KEYS: &[(&str, &[&str])] = &[
    (
        "MQTT",
        &[
            "HOST",
            "PORT",
            "TOPICS",
            "QOS",
            "KEEP_ALIVE",
            "RECONNECT_ON_FAILURE",
            "VERSION",
            "TRANSPORT",
            "WEBSOCKET_PATH",
            "CLEAN_SESSION",
            "SESSION_EXPIRY",
            "CLIENT_ID",
            "USERNAME",
            "PASSWORD",
            "TLS",
            "IGNORED_ATTRIBUTES",
            "TIMESTAMP_ATTRIBUTE",
        ],
    ),
    ("KAFKA", &["CONFIG", "DEAD_LETTER_TOPIC", "PRODUCERS"]),
    (
        "TRANSFORM",
        &[
            "COMPONENT",
            "TOPIC_SEPARATOR",
            "CONFIG",
            "TIMEOUT_MS",
            "MAX_MEMORY_MB",
            "CACHE_DIR",
        ],
    ),
    (
        "BRIDGE",
        &[
            "BATCH_SIZE",
            "MAX_IN_FLIGHT",
            "MAX_IN_FLIGHT_MB",
            "HEALTH_LISTEN",
            "HEALTH_STALL_TIMEOUT_MS",
            "SHUTDOWN_TIMEOUT_MS",
        ],
    ),
];

/// `MQTT__HOST` for `MQTT_HOST` (after the `UNS_` prefix): a section and a
/// key of it joined by one underscore is almost surely a setting mistyped,
/// which would otherwise leave the file's value in place without a word.
/// Anything else is not ours (`UNS_KAFKA_BIN`, Kubernetes service links
/// such as `UNS_KAFKA_SERVICE_HOST`), except `UNS_MQTT_PORT` holding a
/// `tcp://` address, the service link of a service named `uns-mqtt`.
fn one_underscore_typo(rest: &str, value: &str) -> Option<String> {
    SECTION_KEYS.iter().find_map(|(section, keys)| {
        let key = rest.strip_prefix(section)?.strip_prefix('_')?;
        if keys.contains(&key) {
            return (!value.contains("://")).then(|| format!("{section}__{key}"));
        }
        // A nested key: MQTT_TLS_CA_CERTS is MQTT__TLS__CA_CERTS; a
        // librdkafka property (KAFKA_CONFIG_*) unless it looks like a
        // service link (a service named uns-kafka-config).
        let inner = key.strip_prefix("TLS_").filter(|_| *section == "MQTT");
        if let Some(inner) = inner.filter(|i| TLS_KEYS.contains(i)) {
            return Some(format!("{section}__TLS__{inner}"));
        }
        let inner = key
            .strip_prefix("CONFIG_")
            .filter(|_| keys.contains(&"CONFIG"))?;
        let link =
            inner.starts_with("SERVICE_") || inner.starts_with("PORT") || value.contains("://");
        (!inner.is_empty() && !link).then(|| format!("{section}__CONFIG__{inner}"))
    })
}

/// The keys under `mqtt.tls`, as variable names spell them.
const TLS_KEYS: &[&str] = &[
    "CA_CERTS",
    "CERTFILE",
    "KEYFILE",
    "CERT_REQS",
    "CIPHERS",
    "KEYFILE_PASSWORD",
    "INSECURE_CERT",
];

/// The origin recorded for `path` or its nearest parent.
fn origin_of(origin: &HashMap<String, String>, path: &str) -> Option<String> {
    let mut p = path;
    loop {
        if let Some(o) = origin.get(p) {
            return Some(o.clone());
        }
        p = &p[..p.rfind('.')?];
    }
}

fn record_origins(value: &Value, path: &str, source: &str, origin: &mut HashMap<String, String>) {
    origin.insert(path.to_owned(), source.to_owned());
    if let Value::Mapping(m) = value {
        for (k, v) in m {
            if let Value::String(name) = k {
                record_origins(v, &format!("{path}.{name}"), source, origin);
            }
        }
    }
}

/// dynaconf allows `dynaconf_merge` inside a section too, where it decides
/// for that section alone: `false` replaces it, `true` merges it.
fn take_merge_flag(value: Value) -> (Value, Option<bool>) {
    match value {
        Value::Mapping(mut m) => {
            let own = match m.get("dynaconf_merge") {
                Some(Value::Bool(b)) => Some(*b),
                _ => None,
            };
            if own.is_some() {
                m.remove("dynaconf_merge");
            }
            (Value::Mapping(m), own)
        }
        v => (v, None),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a map",
        Value::Tagged(_) => "a tagged value",
    }
}

/// MQTT subscription filter rules (MQTT 5 §4.7): `#` alone and last, `+`
/// a whole level, no NUL, not empty.
pub fn check_filter(filter: &str) -> Result<(), &'static str> {
    if filter.is_empty() {
        return Err("must not be empty");
    }
    if filter.contains('\0') {
        return Err("must not contain NUL");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i != levels.len() - 1) {
            return Err("'#' must be a whole level and the last one");
        }
        if level.contains('+') && *level != "+" {
            return Err("'+' must be a whole level");
        }
    }
    Ok(())
}

/// A host name or address as the MQTT client takes it: what a URL-minded
/// user writes (`mqtt://broker`, `broker:1883`, ` broker`) would otherwise
/// fail only at the first connection, as a name that does not resolve.
fn check_host(host: &str) -> Result<(), String> {
    if host.trim().is_empty() {
        return Err("is mandatory: the host name or address of the MQTT broker".into());
    }
    if host.contains(char::is_whitespace) {
        return Err(format!(
            "{host:?} holds spaces; give the host name or address alone"
        ));
    }
    if host.contains("://") {
        return Err(format!(
            "{host:?} is a URL; give the host name or address alone (the port goes in mqtt.port, TLS in mqtt.tls, websockets in mqtt.transport)"
        ));
    }
    if host.contains(['/', '[', ']'])
        || (host.contains(':')
            // An IPv6 address, maybe with its zone (`fe80::1%eth0`).
            && host.split('%').next().map(str::parse::<std::net::Ipv6Addr>).is_some_and(|p| p.is_err()))
    {
        return Err(format!(
            "{host:?} is not a host name or address; give it alone (the port goes in mqtt.port; an IPv6 address without brackets)"
        ));
    }
    Ok(())
}

/// Kafka's topic name rules, for topics the bridge names itself.
pub fn check_kafka_topic(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 249 {
        return Err(format!("must be 1..=249 characters, got {}", name.len()));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a legal Kafka topic name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "illegal character {c:?} in {name:?}; Kafka topics use only [A-Za-z0-9._-]"
        ));
    }
    Ok(())
}

/// Lenient readers for values that arrive as text from the environment or
/// as numbers from YAML (`password: 1234`).
mod de {
    use super::{MqttVersion, Secret};
    use serde::de::{self, Deserializer};
    use serde::Deserialize;
    use serde_yaml::Value;
    use std::collections::BTreeMap;

    fn scalar_text(v: Value) -> Result<Option<String>, String> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s)),
            Value::Number(n) => Ok(Some(n.to_string())),
            Value::Bool(b) => Ok(Some(b.to_string())),
            Value::Sequence(_) => Err("expected text, got a list".into()),
            Value::Mapping(_) => Err("expected text, got a map".into()),
            Value::Tagged(_) => Err("expected text, got a tagged value".into()),
        }
    }

    pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        scalar_text(Value::deserialize(d)?).map_err(de::Error::custom)
    }

    pub fn opt_secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
        Ok(opt_string(d)?.map(Secret))
    }

    pub fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        match Value::deserialize(d)? {
            Value::Sequence(items) => items
                .into_iter()
                .map(|v| match scalar_text(v) {
                    Ok(Some(s)) => Ok(s),
                    Ok(None) => Err(de::Error::custom("a topic filter must not be empty")),
                    Err(e) => Err(de::Error::custom(e)),
                })
                .collect(),
            v => match scalar_text(v).map_err(de::Error::custom)? {
                Some(s) => Ok(vec![s]),
                None => Ok(super::defaults::topics()),
            },
        }
    }

    /// librdkafka takes every property as text.
    pub fn string_map<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, String>, D::Error> {
        let map = match Value::deserialize(d)? {
            Value::Null => return Ok(BTreeMap::new()),
            Value::Mapping(m) => m,
            _ => return Err(de::Error::custom("expected a map of librdkafka properties")),
        };
        let mut out = BTreeMap::new();
        for (k, v) in map {
            let key = scalar_text(k)
                .map_err(de::Error::custom)?
                .unwrap_or_default();
            match scalar_text(v) {
                Ok(Some(text)) => {
                    out.insert(key, text);
                }
                Ok(None) => {}
                Err(e) => return Err(de::Error::custom(format!("{key}: {e}"))),
            }
        }
        Ok(out)
    }

    impl<'de> Deserialize<'de> for MqttVersion {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let text = scalar_text(Value::deserialize(d)?).map_err(de::Error::custom)?;
            match text.as_deref().map(str::trim) {
                None | Some("5") | Some("5.0") => Ok(MqttVersion::V5),
                Some("4") | Some("3.1.1") => Ok(MqttVersion::V311),
                Some("3") | Some("3.1") => Err(de::Error::custom(
                    "MQTT 3.1 (version 3) is not supported; use 4 (MQTT 3.1.1), which every broker that speaks 3.1 also speaks, or 5",
                )),
                Some(other) => Err(de::Error::custom(format!(
                    "unknown MQTT version {other:?}; use 5 (MQTT 5) or 4 (MQTT 3.1.1)"
                ))),
            }
        }
    }
}

/// Quotes around an environment value ask for YAML's reading of it.
fn is_quoted(raw: &str) -> bool {
    let text = raw.trim();
    text.len() >= 2
        && ((text.starts_with('\'') && text.ends_with('\''))
            || (text.starts_with('"') && text.ends_with('"')))
}

/// Settings that only ever hold text (credentials, names, paths, and every
/// librdkafka property), which an environment variable sets verbatim.
fn is_text_setting(path: &[String]) -> bool {
    let path: Vec<&str> = path.iter().map(String::as_str).collect();
    matches!(
        path.as_slice(),
        [
            "mqtt",
            "host"
                | "username"
                | "password"
                | "client_id"
                | "timestamp_attribute"
                | "websocket_path"
        ] | [
            "mqtt",
            "tls",
            "ca_certs" | "certfile" | "keyfile" | "keyfile_password" | "ciphers"
        ] | ["kafka", "config", _]
            | ["kafka", "dead_letter_topic"]
            | ["transform", "component" | "topic_separator" | "cache_dir"]
    )
}

/// An environment value that YAML would read as something other than its
/// own text stays that text: a password `1e3` is not the number 1000, `0x1F`
/// not 31, `s3cret #1` not `s3cret` (a comment). `2883`, `true` and
/// `[a, b]` keep their YAML reading, and quotes ask for YAML's on purpose.
fn keep_raw_unless_plain(value: Value, raw: &str) -> Value {
    let text = raw.trim();
    let reads_as_itself = match &value {
        Value::Number(n) => n.to_string() == text,
        Value::Bool(b) => b.to_string() == text,
        Value::String(s) => is_quoted(raw) || s == text,
        // No setting takes a YAML tag; `!x` is text someone typed.
        Value::Tagged(_) => false,
        _ => true,
    };
    if reads_as_itself {
        value
    } else {
        Value::String(raw.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_underscore_after_a_section_is_taken_for_a_typo_but_service_links_are_not() {
        assert_eq!(
            one_underscore_typo("MQTT_HOST", "broker").as_deref(),
            Some("MQTT__HOST")
        );
        assert_eq!(
            one_underscore_typo("MQTT_PORT", "1883").as_deref(),
            Some("MQTT__PORT")
        );
        assert_eq!(
            one_underscore_typo("KAFKA_CONFIG_BOOTSTRAP_SERVERS", "k:9092").as_deref(),
            Some("KAFKA__CONFIG__BOOTSTRAP_SERVERS")
        );
        assert_eq!(
            one_underscore_typo("MQTT_TLS_CA_CERTS", "ca.pem").as_deref(),
            Some("MQTT__TLS__CA_CERTS")
        );
        for (rest, value) in [
            ("KAFKA_SERVICE_HOST", "10.0.0.1"),
            ("KAFKA_PORT", "tcp://10.0.0.1:8080"),
            ("KAFKA_PORT_8080_TCP_ADDR", "10.0.0.1"),
            ("KAFKA_METRICS_SERVICE_HOST", "10.0.0.1"),
            ("MQTT_PORT", "tcp://10.0.0.1:1883"),
            ("MQTT_BROKER_PORT", "tcp://10.0.0.1:1883"),
            ("KAFKA_BIN", "/opt/kafka"),
            ("KAFKA_DATA", "/dev/shm/k"),
            ("PLANT", "x"),
            ("MQTT_", "x"),
            ("KAFKA_CONFIG_", "x"),
            ("MQTT_TLS_SERVICE_HOST", "10.0.0.1"),
            ("MQTT_TLS_PORT", "tcp://10.0.0.1:8883"),
            ("KAFKA_CONFIG_SERVICE_HOST", "10.0.0.1"),
            ("KAFKA_CONFIG_PORT_80_TCP", "tcp://10.0.0.1:80"),
        ] {
            assert_eq!(one_underscore_typo(rest, value), None, "{rest}");
        }
    }

    /// The keys the typo check knows are exactly each section's (a key
    /// added to the structs and not here would lose its warning; one
    /// renamed would be suggested wrongly): serde's list of the fields it
    /// expects, for an unknown one, is compared with the table.
    #[test]
    fn the_keys_the_typo_check_knows_are_the_settings() {
        let expected = |path: &str| -> Vec<String> {
            let name = format!("UNS_{path}__NO_SUCH_KEY");
            let e = load_str(MINIMAL, &[(&name, "1")]).expect_err(&name);
            let (_, list) = e.message.split_once("expected one of ").expect(&e.message);
            let mut keys: Vec<String> = list
                .split(", ")
                .map(|k| k.trim_matches('`').to_uppercase())
                .collect();
            keys.sort();
            keys
        };
        let sorted = |keys: &[&str]| {
            let mut keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            keys.sort();
            keys
        };
        for (section, keys) in SECTION_KEYS {
            assert_eq!(expected(section), sorted(keys), "{section}");
        }
        assert_eq!(expected("MQTT__TLS"), sorted(TLS_KEYS), "MQTT__TLS");
    }

    fn load_str(settings: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SETTINGS_FILE), settings).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        load_from(dir.path(), env, Mode::Bridge)
    }

    const MINIMAL: &str = "mqtt: {host: broker}\nkafka: {config: {bootstrap.servers: 'k:9092'}}\n";

    #[test]
    fn defaults_follow_the_seed_and_protect_data() {
        let s = load_str(MINIMAL, &[]).unwrap();
        assert_eq!(s.mqtt.port, 1883);
        assert_eq!(s.mqtt.topics, vec!["spBv1.0/#"]);
        assert_eq!(s.mqtt.qos, 1);
        assert_eq!(s.mqtt.keep_alive, 60);
        assert!(s.mqtt.reconnect_on_failure);
        assert_eq!(s.mqtt.version, MqttVersion::V5);
        assert_eq!(s.mqtt.transport, Transport::Tcp);
        assert_eq!(s.kafka.config["enable.idempotence"], "true");
        assert_eq!(s.kafka.config["acks"], "all");
        assert_eq!(s.kafka.config["message.timeout.ms"], "0");
        assert_eq!(s.kafka.config["max.in.flight.requests.per.connection"], "1");
        assert_eq!(s.kafka.dead_letter_topic, "uns_kafka_dlq");
        assert_eq!(s.kafka.producers, 4);
    }

    /// A default added beside the user's other spelling of the same
    /// property would reach librdkafka as two settings, and which one won
    /// would change from one start to the next.
    #[test]
    fn a_property_set_by_its_other_name_gets_no_default_beside_it() {
        let s = load_str(
            "mqtt: {host: broker}\nkafka: {config: {metadata.broker.list: 'k:9092', \
             delivery.timeout.ms: '300000', request.required.acks: '1', max.in.flight: '5'}}\n",
            &[],
        )
        .unwrap();
        let keys: Vec<&str> = s.kafka.config.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "delivery.timeout.ms",
                "enable.idempotence",
                "max.in.flight",
                "metadata.broker.list",
                "request.required.acks"
            ]
        );
        assert_eq!(
            kafka_property(&s.kafka.config, "bootstrap.servers"),
            Some("k:9092")
        );
        assert_eq!(kafka_property(&s.kafka.config, "acks"), Some("1"));
    }

    #[test]
    fn env_overrides_with_double_underscore_and_parsed_values() {
        let s = load_str(
            MINIMAL,
            &[
                ("UNS_MQTT__PORT", "2883"),
                ("UNS_MQTT__TOPICS", "[a/#, b/+]"),
                ("UNS_MQTT__PASSWORD", "1234"),
                ("UNS_MQTT__USERNAME", "u"),
                ("UNS_KAFKA__CONFIG__BOOTSTRAP_SERVERS", "x:1"),
                ("UNS_KAFKA_BIN", "/ignored/because/not/nested"),
            ],
        )
        .unwrap();
        assert_eq!(s.mqtt.port, 2883);
        assert_eq!(s.mqtt.topics, vec!["a/#", "b/+"]);
        assert_eq!(s.mqtt.password.as_ref().map(Secret::expose), Some("1234"));
        assert_eq!(s.kafka.config["bootstrap.servers"], "x:1");
    }

    #[test]
    fn env_values_yaml_would_change_stay_as_written() {
        for raw in ["1e3", "0x1F", "1.50", "s3cret #1", "+1", "007"] {
            let env = [("UNS_MQTT__USERNAME", "u"), ("UNS_MQTT__PASSWORD", raw)];
            let s = load_str(MINIMAL, &env).unwrap();
            assert_eq!(s.mqtt.password.as_ref().map(Secret::expose), Some(raw));
        }
        let s = load_str(
            MINIMAL,
            &[
                ("UNS_KAFKA__CONFIG__SASL_PASSWORD", "12e4"),
                ("UNS_MQTT__USERNAME", "'quoted'"),
                ("UNS_MQTT__RECONNECT_ON_FAILURE", "false"),
            ],
        )
        .unwrap();
        assert_eq!(s.kafka.config["sasl.password"], "12e4");
        assert_eq!(s.mqtt.username.as_deref(), Some("quoted"));
        assert!(!s.mqtt.reconnect_on_failure);
        let e = load_str(MINIMAL, &[("UNS_MQTT__PORT", "1e3")]).unwrap_err();
        assert_eq!(e.key, "mqtt.port");
    }

    /// Text settings take a variable's text as it is, whatever YAML would
    /// make of it: a password may well start with `!`, `{`, `[`, `&` or
    /// `- `, and was refused as a tag, map, list or anchor.
    #[test]
    fn env_values_of_text_settings_are_taken_as_written() {
        for raw in [
            "!Secret1", "{abc}", "[x]", "- x", "&a b", "*a", "@x", "%x", "a: b", "|x",
        ] {
            let env = [
                ("UNS_MQTT__USERNAME", "u"),
                ("UNS_MQTT__PASSWORD", raw),
                ("UNS_KAFKA__CONFIG__SASL_PASSWORD", raw),
            ];
            let s = load_str(MINIMAL, &env).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(s.mqtt.password.as_ref().map(Secret::expose), Some(raw));
            assert_eq!(s.kafka.config["sasl.password"], raw);
        }
        // Quotes still ask for YAML.
        let env = [("UNS_MQTT__USERNAME", "\"u\"")];
        let s = load_str(MINIMAL, &env).unwrap();
        assert_eq!(s.mqtt.username.as_deref(), Some("u"));
        // Elsewhere a tag is text too, and refused as the wrong type.
        let e = load_str(MINIMAL, &[("UNS_BRIDGE__BATCH_SIZE", "!x")]).unwrap_err();
        assert_eq!(e.key, "bridge.batch_size");
        assert!(!e.message.contains("tagged"), "{}", e.message);
    }

    /// Compose's `${VAR}` of an unset variable is empty; `null` is asked for.
    #[test]
    fn empty_env_keeps_the_files_value_and_null_gives_the_default() {
        let file =
            "mqtt: {host: h, port: 2883, topics: [a/#], username: u, password: p, tls: {}}\n\
                    kafka: {config: {bootstrap.servers: k, linger.ms: 50}}\n";
        let empty = [
            ("UNS_MQTT__PORT", ""),
            ("UNS_MQTT__TOPICS", " "),
            ("UNS_MQTT__PASSWORD", ""),
            ("UNS_KAFKA__CONFIG__LINGER_MS", ""),
        ];
        let s = load_str(file, &empty).unwrap();
        assert_eq!(s.mqtt.port, 2883);
        assert_eq!(s.mqtt.topics, ["a/#"]);
        assert_eq!(s.mqtt.password.as_ref().map(Secret::expose), Some("p"));
        assert_eq!(s.kafka.config["linger.ms"], "50");

        let null = [
            ("UNS_MQTT__PORT", "null"),
            ("UNS_MQTT__PASSWORD", "~"),
            ("UNS_MQTT__USERNAME", "null"),
            // Under the other of librdkafka's names.
            ("UNS_KAFKA__CONFIG__QUEUE_BUFFERING_MAX_MS", "null"),
        ];
        let s = load_str(file, &null).unwrap();
        assert_eq!(s.mqtt.port, 1883);
        assert!(s.mqtt.password.is_none());
        assert!(
            s.mqtt.tls.is_some(),
            "what is beside a removed setting stays"
        );
        assert_eq!(s.kafka.config.get("linger.ms"), None);

        // A setting removed and then missing: the variable is to blame.
        let e = load_str(file, &[("UNS_MQTT__HOST", "null")]).unwrap_err();
        assert_eq!(
            (e.file.as_str(), e.key.as_str()),
            ("environment variable UNS_MQTT__HOST", "mqtt.host")
        );
    }

    #[test]
    fn env_errors_name_the_variable() {
        let e = load_str(MINIMAL, &[("UNS_MQTT__PORT", "abc")]).unwrap_err();
        assert_eq!(e.file, "environment variable UNS_MQTT__PORT");
        assert_eq!(e.key, "mqtt.port");
    }

    #[test]
    fn secrets_merge_over_settings() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SETTINGS_FILE), MINIMAL).unwrap();
        std::fs::write(
            dir.path().join(SECRETS_FILE),
            "dynaconf_merge: true\nmqtt: {username: u, password: p}\n",
        )
        .unwrap();
        let s = load_from(dir.path(), Vec::new(), Mode::Bridge).unwrap();
        assert_eq!(s.mqtt.host.as_deref(), Some("broker"));
        assert_eq!(s.mqtt.username.as_deref(), Some("u"));
        assert_eq!(format!("{:?}", s.mqtt.password), "Some(\"***\")");
    }

    /// dynaconf's switch inside one section decides for that section: it
    /// was dropped, and the section merged whatever it said.
    #[test]
    fn a_sections_own_merge_switch_decides_for_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(SETTINGS_FILE),
            "mqtt: {host: broker, port: 2883}\n\
             kafka: {config: {bootstrap.servers: 'k:9092', linger.ms: '50'}}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join(SECRETS_FILE),
            "mqtt: {dynaconf_merge: false, host: other}\n\
             kafka: {dynaconf_merge: true, config: {sasl.username: u}}\n",
        )
        .unwrap();
        let s = load_from(dir.path(), Vec::new(), Mode::Bridge).unwrap();
        assert_eq!(s.mqtt.host.as_deref(), Some("other"));
        assert_eq!(s.mqtt.port, 1883, "mqtt replaced, port back to its default");
        assert_eq!(s.kafka.config["linger.ms"], "50", "kafka merged");
        assert_eq!(s.kafka.config["sasl.username"], "u");
    }

    #[test]
    fn kafka_file_properties_resolve_against_the_config_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tls")).unwrap();
        std::fs::write(dir.path().join("tls/ca.crt"), "").unwrap();
        let absolute = dir.path().join("tls/ca.crt");
        std::fs::write(
            dir.path().join(SETTINGS_FILE),
            format!(
                "mqtt: {{host: h}}\nkafka: {{config: {{bootstrap.servers: k, \
                 ssl.ca.location: tls/ca.crt, ssl.certificate.location: '{}'}}}}\n",
                absolute.display()
            ),
        )
        .unwrap();
        let s = load_from(dir.path(), Vec::new(), Mode::Bridge).unwrap();
        let c = &s.kafka.config;
        assert_eq!(Path::new(&c["ssl.ca.location"]), absolute);
        assert_eq!(Path::new(&c["ssl.certificate.location"]), absolute);
        // `probe` asks librdkafka to find the system's CA bundle: no path.
        let s = load_str(
            "mqtt: {host: h}\nkafka: {config: {bootstrap.servers: k, ssl.ca.location: probe}}\n",
            &[],
        )
        .unwrap();
        assert_eq!(s.kafka.config["ssl.ca.location"], "probe");
    }

    #[test]
    fn component_config_carries_seed_keys_and_overrides() {
        let s = load_str(
            "mqtt: {host: h, timestamp_attribute: ts, ignored_attributes: {'a/+': x}}\n\
             kafka: {config: {bootstrap.servers: k}}\n\
             transform: {topic_separator: '.', config: {extra: 1}}\n",
            &[],
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&s.component_config()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ignored_attributes": {"a/+": "x"}, "timestamp_attribute": "ts",
                               "topic_separator": ".", "extra": 1})
        );
    }

    #[test]
    fn component_config_has_every_seed_key_when_none_is_set() {
        let s = load_str(MINIMAL, &[]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&s.component_config()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"ignored_attributes": {}, "timestamp_attribute": "timestamp",
                               "topic_separator": "_"})
        );
    }

    #[test]
    fn offline_mode_needs_no_files_or_broker() {
        let dir = tempfile::tempdir().unwrap();
        let s = load_from(dir.path(), Vec::new(), Mode::Offline).unwrap();
        assert_eq!(s.transform.timeout_ms, 1000);
    }

    /// `uns-kafka transform` on a developer's machine, with the plant's
    /// settings: TLS files that live only on the bridge's host are no reason
    /// to refuse a command that never connects.
    #[test]
    fn offline_mode_does_not_need_the_tls_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("settings.yaml"),
            "mqtt:\n  host: broker\n  tls: {ca_certs: certs/prod-ca.pem}\n\
             kafka: {config: {bootstrap.servers: k, ssl.ca.location: certs/kafka-ca.pem}}\n",
        )
        .unwrap();
        load_from(dir.path(), Vec::new(), Mode::Offline).expect("offline needs no files");
        let err = load_from(dir.path(), Vec::new(), Mode::Bridge).unwrap_err();
        assert_eq!(err.key, "mqtt.tls.ca_certs");
    }

    /// `tls:` with nothing under it, as a user writes it to get TLS with
    /// the system's roots: TLS on, never off.
    #[test]
    fn an_empty_tls_key_turns_tls_on() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("settings.yaml"),
            "mqtt:\n  host: broker\n  tls:\n\
             kafka: {config: {bootstrap.servers: k}}\n",
        )
        .unwrap();
        let s = load_from(dir.path(), Vec::new(), Mode::Offline).unwrap();
        let tls = s.mqtt.tls.expect("TLS on");
        assert!(tls.ca_certs.is_none() && tls.cert_reqs != Some(false) && !tls.insecure_cert);
        std::fs::write(
            dir.path().join("settings.yaml"),
            "mqtt:\n  host: broker\nkafka: {config: {bootstrap.servers: k}}\n",
        )
        .unwrap();
        let s = load_from(dir.path(), Vec::new(), Mode::Offline).unwrap();
        assert!(s.mqtt.tls.is_none(), "absent is off");
        let env = |v: &str| vec![("UNS_MQTT__TLS".to_owned(), v.to_owned())];
        let s = load_from(dir.path(), env("null"), Mode::Offline).unwrap();
        assert!(s.mqtt.tls.is_some(), "null from the environment too");
        // An empty variable (compose's `${VAR}` of an unset one) sets nothing.
        let s = load_from(dir.path(), env(""), Mode::Offline).unwrap();
        assert!(s.mqtt.tls.is_none(), "empty sets nothing");
    }

    #[test]
    fn a_host_is_a_name_or_an_address_alone() {
        for ok in [
            "broker",
            "mqtt.plant.local",
            "10.0.0.7",
            "::1",
            "fe80::1%eth0",
            "b-1_x",
        ] {
            assert_eq!(check_host(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            " ",
            " broker",
            "broker ",
            "mq tt",
            "mqtt://broker",
            "ws://b:80/mqtt",
            "broker:1883",
            "[::1]",
            "[::1]:1883",
            "broker/x",
        ] {
            assert!(check_host(bad).is_err(), "{bad:?}");
        }
    }

    /// What `check` prints and a websocket URL is built from.
    #[test]
    fn an_ipv6_host_is_bracketed_in_a_url() {
        for (host, url) in [
            ("broker", "broker"),
            ("10.0.0.1", "10.0.0.1"),
            ("::1", "[::1]"),
            ("fe80::1%eth0", "[fe80::1%eth0]"),
        ] {
            let m: MqttSettings = serde_yaml::from_str(&format!("host: '{host}'")).unwrap();
            assert_eq!(m.url_host(), url, "{host}");
        }
    }

    #[test]
    fn filters_follow_the_mqtt_spec() {
        assert!(check_filter("a/+/c/#").is_ok());
        assert!(check_filter("#").is_ok());
        assert!(check_filter("a/#/c").is_err());
        assert!(check_filter("a/b+").is_err());
        assert!(check_filter("").is_err());
    }
}
