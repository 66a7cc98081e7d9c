//! `uns-kafka demo`: the whole job on one machine with nothing installed.
//!
//! By default it starts an MQTT broker in-process (rumqttd) and librdkafka's
//! built-in mock Kafka cluster, runs the real bridge between them with the
//! default component, publishes a handful of UNS JSON and Sparkplug B
//! messages, and prints what arrived in Kafka. `--mqtt` and `--kafka` point
//! the same demo at real brokers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use prost::Message as _;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::Message;
use uns_default::sparkplug::{self, payload::metric};

use crate::config::{self, Mode};
use crate::error::CliError;
use crate::pipeline::Bridge;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// A real MQTT broker (HOST:PORT, MQTT 3.1.1) instead of the embedded one.
    #[arg(long, value_name = "HOST:PORT")]
    pub mqtt: Option<String>,
    /// A real Kafka bootstrap server (HOST:PORT) instead of the mock cluster.
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka: Option<String>,
    /// Transform component (.wasm); default: the uns-default component.
    #[arg(long, value_name = "FILE.wasm")]
    pub component: Option<PathBuf>,
}

pub fn main(args: DemoArgs) -> Result<(), CliError> {
    crate::logging::init(false);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(e.into()))?;
    rt.block_on(run(args))
}

/// One sample message and the Kafka topic it should arrive in.
struct Sample {
    topic: String,
    payload: Vec<u8>,
    kafka_topic: &'static str,
}

async fn run(args: DemoArgs) -> Result<(), CliError> {
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let (mqtt_addr, _broker) = match &args.mqtt {
        Some(addr) => (addr.clone(), None),
        None => {
            let addr = embedded_broker().map_err(CliError::Other)?;
            (addr.to_string(), Some(()))
        }
    };
    let _mock;
    let bootstrap = match &args.kafka {
        Some(k) => k.clone(),
        None => {
            let mock = rdkafka::mocking::MockCluster::new(1)
                .map_err(|e| CliError::Other(anyhow::anyhow!("mock Kafka cluster: {e}")))?;
            let servers = mock.bootstrap_servers();
            _mock = mock;
            servers
        }
    };
    let (mqtt_host, mqtt_port) = split_host_port("--mqtt", &mqtt_addr).map_err(CliError::Usage)?;
    if let Some(kafka) = &args.kafka {
        for server in kafka.split(',') {
            split_host_port("--kafka", server.trim()).map_err(CliError::Usage)?;
        }
    }
    // The demo's topics are unique per run, so a real Kafka shows only
    // this run's records; so are its filters, or a real broker's live
    // Sparkplug traffic (retained STATE and BIRTHs first) would be copied
    // into the topics the production bridge writes.
    let root = format!("demo{run_id}");
    let dlq = format!("uns_kafka_dlq_demo{run_id}");
    let dir = tempfile::tempdir().map_err(|e| CliError::Other(e.into()))?;
    // Quoted as JSON strings (which YAML reads as they are): `::1` or a
    // name YAML would take for something else stays text.
    let (host_text, bootstrap_text) = (
        serde_json::Value::from(mqtt_host.as_str()),
        serde_json::Value::from(bootstrap.as_str()),
    );
    let settings_yaml = format!(
        "mqtt:\n  host: {host_text}\n  port: {mqtt_port}\n  version: 4\n  topics: ['{root}/#', 'spBv1.0/plant1/+/edge{run_id}', 'spBv1.0/STATE/scada{run_id}']\n  qos: 1\n  \
         ignored_attributes:\n    '{root}/+/+/+/vibration': ['raw']\n\
         kafka:\n  config:\n    bootstrap.servers: {bootstrap_text}\n  dead_letter_topic: {dlq}\n"
    );
    std::fs::write(dir.path().join(config::SETTINGS_FILE), settings_yaml)
        .map_err(|e| CliError::Other(e.into()))?;
    let settings = config::load_from(dir.path(), Vec::new(), Mode::Bridge)?;

    let samples = samples(&root, &run_id);
    let mut topics: Vec<String> = samples
        .iter()
        .map(|s| s.kafka_topic(&root, &run_id))
        .collect();
    topics.push(dlq.clone());
    topics.sort();
    topics.dedup();

    let mut bridge = Bridge::prepare(settings, args.component)?;
    let ready = bridge.ready();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let bridge_task = tokio::spawn(bridge.run(async {
        let _ = stop_rx.await;
    }));
    tokio::time::timeout(Duration::from_secs(30), ready)
        .await
        .map_err(|_| {
            CliError::Other(anyhow::anyhow!(
                "bridge did not connect to MQTT at {mqtt_addr} within 30 s"
            ))
        })?
        .map_err(|_| CliError::Other(anyhow::anyhow!("bridge stopped before it was ready")))?;

    publish(&mqtt_host, mqtt_port, &samples)
        .await
        .map_err(CliError::Other)?;
    let records = consume(&bootstrap, &topics, samples.len())
        .await
        .map_err(CliError::Other)?;

    let _ = stop_tx.send(());
    // What arrived is said first, also when the bridge then stops with an
    // error (Kafka away: exit 3, messages unconfirmed): the count is the
    // demo's answer either way.
    let stopped = bridge_task.await;

    println!(
        "uns-kafka demo: MQTT {} -> component -> Kafka {}",
        if args.mqtt.is_some() {
            mqtt_addr.clone()
        } else {
            format!("{mqtt_addr} (embedded rumqttd)")
        },
        if args.kafka.is_some() {
            bootstrap.clone()
        } else {
            format!("{bootstrap} (librdkafka mock cluster)")
        }
    );
    println!(
        "published {} MQTT messages; {} Kafka records arrived:\n",
        samples.len(),
        records.len()
    );
    for r in &records {
        println!("{r}");
    }
    match stopped {
        Ok(r) => r.map_err(CliError::from_run)?,
        Err(e) => return Err(CliError::Other(e.into())),
    }
    if records.len() < samples.len() {
        return Err(CliError::Other(anyhow::anyhow!(
            "only {} of {} records arrived",
            records.len(),
            samples.len()
        )));
    }
    Ok(())
}

impl Sample {
    fn kafka_topic(&self, root: &str, run_id: &str) -> String {
        self.kafka_topic
            .replace("{root}", root)
            .replace("{run}", run_id)
    }
}

fn samples(root: &str, run_id: &str) -> Vec<Sample> {
    let now = crate::message::now_ms();
    let json = |v: serde_json::Value| v.to_string().into_bytes();
    let edge = format!("edge{run_id}");
    let metric = |name: &str, datatype: u32, value: metric::Value| sparkplug::payload::Metric {
        name: Some(name.to_owned()),
        timestamp: Some(now as u64),
        datatype: Some(datatype),
        value: Some(value),
        ..Default::default()
    };
    let nbirth = sparkplug::Payload {
        timestamp: Some(now as u64),
        seq: Some(0),
        metrics: vec![
            metric(
                "bdSeq",
                sparkplug::datatype::INT64,
                metric::Value::LongValue(0),
            ),
            metric(
                "Line/Speed",
                sparkplug::datatype::FLOAT,
                metric::Value::FloatValue(1.5),
            ),
            metric(
                "Line/Offset",
                sparkplug::datatype::INT8,
                metric::Value::IntValue((-5i8) as u8 as u32),
            ),
            metric(
                "Line/Running",
                sparkplug::datatype::BOOLEAN,
                metric::Value::BooleanValue(true),
            ),
            metric(
                "Line/Product",
                sparkplug::datatype::STRING,
                metric::Value::StringValue("widget".into()),
            ),
        ],
        ..Default::default()
    };
    let ndata = sparkplug::Payload {
        timestamp: Some(now as u64 + 1),
        seq: Some(1),
        metrics: vec![metric(
            "Line/Speed",
            sparkplug::datatype::FLOAT,
            metric::Value::FloatValue(1.75),
        )],
        ..Default::default()
    };
    vec![
        Sample {
            topic: format!("{root}/plant1/area1/line1/temperature"),
            payload: json(serde_json::json!({"timestamp": now, "value": 71.3, "unit": "C"})),
            kafka_topic: "{root}_plant1_area1_line1_temperature",
        },
        Sample {
            topic: format!("{root}/plant1/area1/line1/vibration"),
            payload: json(
                serde_json::json!({"timestamp": now, "rms": 0.02, "raw": [0.01, 0.03, 0.02]}),
            ),
            kafka_topic: "{root}_plant1_area1_line1_vibration",
        },
        Sample {
            topic: format!("spBv1.0/STATE/scada{run_id}"),
            payload: json(serde_json::json!({"online": true, "timestamp": now})),
            kafka_topic: "spBv1.0_STATE_scada{run}",
        },
        Sample {
            topic: format!("spBv1.0/plant1/NBIRTH/{edge}"),
            payload: nbirth.encode_to_vec(),
            kafka_topic: "spBv1.0_plant1_NBIRTH_edge{run}",
        },
        Sample {
            topic: format!("spBv1.0/plant1/NDATA/{edge}"),
            payload: ndata.encode_to_vec(),
            kafka_topic: "spBv1.0_plant1_NDATA_edge{run}",
        },
        Sample {
            topic: format!("{root}/plant1/area1/line1/broken"),
            payload: b"{\"value\": 1,".to_vec(),
            kafka_topic: "uns_kafka_dlq_demo{run}",
        },
    ]
}

/// rumqttd on a free loopback port, on its own thread (its `start` blocks).
fn embedded_broker() -> anyhow::Result<SocketAddr> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let config: rumqttd::Config = serde_json::from_value(serde_json::json!({
        "id": 0,
        "router": {"max_connections": 100, "max_outgoing_packet_count": 1000,
                   "max_segment_size": 104857600, "max_segment_count": 10},
        "v4": {"1": {"name": "demo", "listen": addr.to_string(), "next_connection_delay_ms": 1,
                     "connections": {"connection_timeout_ms": 60000, "max_payload_size": 1048576,
                                     "max_inflight_count": 1000, "dynamic_filters": true}}}
    }))
    .context("embedded broker configuration")?;
    std::thread::Builder::new()
        .name("rumqttd".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })?;
    // Wait until it accepts connections.
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(addr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("embedded MQTT broker did not start on {addr}")
}

async fn publish(host: &str, port: u16, samples: &[Sample]) -> anyhow::Result<()> {
    let mut opts =
        rumqttc::MqttOptions::new(format!("uns-demo-pub-{}", std::process::id()), host, port);
    opts.set_keep_alive(Duration::from_secs(10));
    let (client, mut events) = rumqttc::AsyncClient::new(opts, 64);
    for s in samples {
        client
            .publish(
                s.topic.clone(),
                rumqttc::QoS::AtLeastOnce,
                false,
                s.payload.clone(),
            )
            .await?;
    }
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while acked < samples.len() {
        match tokio::time::timeout_at(deadline, events.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) => acked += 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => anyhow::bail!("publishing the demo messages: {e}"),
            Err(_) => anyhow::bail!("the MQTT broker did not acknowledge the demo messages"),
        }
    }
    client.disconnect().await.ok();
    Ok(())
}

/// One record as the demo prints it.
struct Shown {
    topic: String,
    key: String,
    timestamp: Option<i64>,
    headers: Vec<(String, String)>,
    value: String,
}

impl std::fmt::Display for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "topic:     {}", self.topic)?;
        writeln!(f, "key:       {}", self.key)?;
        if let Some(ts) = self.timestamp {
            writeln!(f, "timestamp: {ts}")?;
        }
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        writeln!(f, "headers:   {}", headers.join(", "))?;
        writeln!(f, "value:     {}", self.value)
    }
}

async fn consume(
    bootstrap: &str,
    topics: &[String],
    expected: usize,
) -> anyhow::Result<Vec<Shown>> {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("uns-demo-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("topic.metadata.refresh.interval.ms", "500")
        .create()?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    let mut out = Vec::new();
    let mut seen: HashMap<(String, i32, i64), ()> = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < expected {
        let m = match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "demo consumer");
                continue;
            }
            Err(_) => break,
        };
        if seen
            .insert((m.topic().to_owned(), m.partition(), m.offset()), ())
            .is_some()
        {
            continue;
        }
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            h.value
                                .map(|v| String::from_utf8_lossy(v).into_owned())
                                .unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Shown {
            topic: m.topic().to_owned(),
            key: m
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
            timestamp: m.timestamp().to_millis(),
            headers,
            value: m
                .payload()
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

/// `HOST:PORT`, or `[IPv6]:PORT`, as `flag` gave it.
fn split_host_port(flag: &str, addr: &str) -> Result<(String, u16), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| format!("{flag} {addr}: expected HOST:PORT"))?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .ok_or_else(|| format!("{flag} {addr}: expected [IPv6]:PORT"))?,
        None => host,
    };
    if host.is_empty() {
        return Err(format!("{flag} {addr}: expected HOST:PORT"));
    }
    let port = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{flag} {addr}: {port:?} is not a port"))?;
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::split_host_port;

    #[test]
    fn addresses_split_with_ipv6_in_brackets_and_bad_ones_named() {
        let ok = |a| split_host_port("--mqtt", a).unwrap();
        assert_eq!(ok("localhost:1883"), ("localhost".to_owned(), 1883));
        assert_eq!(ok("[::1]:1883"), ("::1".to_owned(), 1883));
        assert_eq!(ok("10.0.0.7:9092"), ("10.0.0.7".to_owned(), 9092));
        for (bad, why) in [
            ("localhost", "--kafka localhost: expected HOST:PORT"),
            (":9092", "--kafka :9092: expected HOST:PORT"),
            ("k:0", "--kafka k:0: \"0\" is not a port"),
            ("k:x", "--kafka k:x: \"x\" is not a port"),
            ("[::1:9092", "--kafka [::1:9092: expected [IPv6]:PORT"),
        ] {
            assert_eq!(split_host_port("--kafka", bad).unwrap_err(), why);
        }
    }
}
