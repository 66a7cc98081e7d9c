//! `uns-kafka-bench`: load benchmark of the real `uns-kafka` binary against the
//! real brokers of `tests/brokers.sh`.
//!
//! One run measures four stages with the same number of messages of the same
//! shape:
//!
//! 1. **mqtt baseline**: a publisher at full speed into Mosquitto and a
//!    subscriber on its own connection that only counts (and acknowledges).
//! 2. **kafka baseline**: an rdkafka `FutureProducer` with the bridge's
//!    producer settings (its `KAFKA_DEFAULTS`, librdkafka's defaults
//!    otherwise, as `uns-kafka` with no `kafka.config` beyond
//!    `bootstrap.servers`) producing the records the bridge would produce
//!    (same topics, key, headers and value size) straight into Kafka.
//! 3. **both brokers**: stages 1 and 2 at the same time, their clocks
//!    started together. The bridge needs both brokers to carry every
//!    message at once on the same cores, which neither baseline alone
//!    measures; this stage's rate (all messages through both, over the
//!    time the slower one took) is the pace the brokers set for a bridge
//!    on this machine.
//! 4. **bridge**: the same publisher, `uns-kafka run` with the default
//!    component, and a Kafka consumer that checks every sequence number
//!    arrived and measures end-to-end latency (publisher timestamp in the
//!    payload to the moment the consumer reads the record).
//!
//! The last line of stdout is one JSON object (for scripts); everything
//! else on stdout is the human-readable table, progress goes to stderr.
//!
//! ```text
//! cargo run --release -p uns-kafka-e2e --bin uns-kafka-bench -- --messages 100000 --qos 1
//! ```
//!
//! Brokers come from `$UNS_BROKERS_DIR/env` (see `tests/brokers.sh`) unless
//! `--mqtt` / `--kafka` say otherwise. `--help` lists the options.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::Outgoing;
use serde::Deserialize;
use uns_default::sparkplug::sample_ndata;
use uns_kafka_e2e::{component, env, target_dir, unique, Bridge, ConfigDir};

const USAGE: &str = "\
uns-kafka-bench: MQTT -> uns-kafka -> Kafka load benchmark against the brokers of tests/brokers.sh

usage: cargo run --release -p uns-kafka-e2e --bin uns-kafka-bench -- [options]

  --messages N          messages per stage (default 100000: Mosquitto in tests/brokers.sh queues at
                        most 100,000 per client, and drops the rest when the bridge falls behind)
  --payload KIND        json (~200-byte UNS JSON) or sparkplug (NDATA, 10 metrics) (default json)
  --qos 0|1             MQTT QoS of publisher, subscriber and bridge (default 1)
  --topics N            MQTT topics the messages are spread over, one Kafka topic each (default 1000)
  --partitions N        partitions per pre-created Kafka topic (default 1)
  --mqtt HOST:PORT      Mosquitto (default: the brokers.sh env, 127.0.0.1:$MQTT_PORT)
  --kafka HOST:PORT     Kafka bootstrap (default: the brokers.sh env, 127.0.0.1:$KAFKA_PORT)
  --bin PATH            uns-kafka binary (default target/release/uns-kafka, else target/debug/uns-kafka)
  --max-in-flight N     bridge.max_in_flight for the bridge (default: the bridge's own)
  --batch-size N        bridge.batch_size for the bridge (default: the bridge's own)
  --producers N         kafka.producers for the bridge, and as many producers (topics spread over
                        them) for the Kafka baseline (default 4, the bridge's default)
  --publishers N        MQTT connections the publisher spreads the topics over, each topic always on
                        the same one (default 4: Mosquitto lets one client have only 20 QoS 1/2
                        messages unacknowledged, its Receive Maximum, so a single publisher measures
                        its own round trips rather than the broker)
  --kafka-set KEY=VAL   extra librdkafka property for both the Kafka baseline and the bridge (repeatable)
  --rate N              pace the publisher at N msgs/s (default 0: full speed)
  --stages LIST         comma-separated subset of mqtt,kafka,brokers,bridge (default all four;
                        brokers runs the mqtt and kafka baselines at the same time)
  --timeout SECS        give up on a stage after this long (default 60 + messages/1000)
  --idle SECS           end a stage when nothing arrived for this long after publishing (default 15)
  --keep-topics         do not delete the Kafka topics the run created
  --persistent          run the bridge with a persistent session (mqtt.clean_session: false), whose
                        messages it checks against mqtt.topics; a clean one by default
  --warm-up N           records per topic sent through the Kafka baseline and the bridge before the
                        clock starts (default 32: past the first 4 KB of each new partition, where
                        Kafka writes its first index entries, a one-off stall of seconds with 1000
                        new topics on this machine)
  --fetch-wait-ms N     the bridge-stage consumer's fetch.wait.max.ms (default 10): a fetch waits this
                        long unless 256 KB arrive sooner, which adds up to that to every latency;
                        higher costs the broker and this process less CPU with many partitions
  -h, --help            this text
";

// ---------------------------------------------------------------------------
// Options

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    Sparkplug,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Json => "json",
            Kind::Sparkplug => "sparkplug",
        }
    }
}

#[derive(Debug, Clone)]
struct Opts {
    messages: u64,
    kind: Kind,
    qos: u8,
    topics: usize,
    partitions: i32,
    mqtt_host: String,
    mqtt_port: u16,
    kafka: String,
    bin: PathBuf,
    max_in_flight: Option<usize>,
    batch_size: Option<usize>,
    producers: usize,
    kafka_set: Vec<(String, String)>,
    rate: u64,
    stages: Vec<Stage>,
    timeout: Duration,
    idle: Duration,
    keep_topics: bool,
    persistent: bool,
    fetch_wait_ms: u64,
    warm_up: u64,
    publishers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Mqtt,
    Kafka,
    /// Both baselines at once.
    Brokers,
    Bridge,
}

impl Stage {
    fn label(self) -> &'static str {
        match self {
            Stage::Mqtt => "mqtt baseline",
            Stage::Kafka => "kafka baseline",
            Stage::Brokers => "both brokers",
            Stage::Bridge => "bridge",
        }
    }
}

fn parse_args(args: impl IntoIterator<Item = String>) -> anyhow::Result<Opts> {
    fn num<T: std::str::FromStr>(flag: &str, v: &str) -> anyhow::Result<T> {
        v.parse()
            .map_err(|_| anyhow!("{flag}: {v:?} is not a valid number"))
    }
    fn host_port(flag: &str, v: &str) -> anyhow::Result<(String, u16)> {
        let (h, p) = v
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("{flag}: expected HOST:PORT, got {v:?}"))?;
        Ok((h.to_string(), num(flag, p)?))
    }
    let e = env();
    let mut o = Opts {
        messages: 100_000,
        kind: Kind::Json,
        qos: 1,
        topics: 1000,
        partitions: 1,
        mqtt_host: e.mqtt_host.clone(),
        mqtt_port: e.mqtt_port,
        kafka: e.kafka_bootstrap.clone(),
        bin: PathBuf::new(),
        max_in_flight: None,
        batch_size: None,
        producers: 4,
        kafka_set: Vec::new(),
        rate: 0,
        stages: vec![Stage::Mqtt, Stage::Kafka, Stage::Brokers, Stage::Bridge],
        timeout: Duration::ZERO,
        idle: Duration::from_secs(15),
        keep_topics: false,
        persistent: false,
        fetch_wait_ms: 10,
        warm_up: 32,
        publishers: 4,
    };
    let mut bin = None;
    let mut timeout = None;
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        // Both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let takes_value = !matches!(
            flag.as_str(),
            "-h" | "--help" | "--keep-topics" | "--persistent"
        );
        let value = if takes_value {
            match inline {
                Some(v) => v,
                None => it
                    .next()
                    .ok_or_else(|| anyhow!("{flag} needs a value (see --help)"))?,
            }
        } else if inline.is_some() {
            bail!("{flag} takes no value (see --help)");
        } else {
            String::new()
        };
        let v = value.as_str();
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--messages" => o.messages = num(&flag, v)?,
            "--payload" => {
                o.kind = match v {
                    "json" => Kind::Json,
                    "sparkplug" => Kind::Sparkplug,
                    _ => bail!("--payload: expected json or sparkplug, got {v:?}"),
                }
            }
            "--qos" => {
                o.qos = num(&flag, v)?;
                if o.qos > 1 {
                    bail!("--qos: 0 or 1, got {v}");
                }
            }
            "--topics" => o.topics = num(&flag, v)?,
            "--partitions" => o.partitions = num(&flag, v)?,
            "--mqtt" => (o.mqtt_host, o.mqtt_port) = host_port(&flag, v)?,
            "--kafka" => {
                host_port(&flag, v)?;
                o.kafka = v.to_string();
            }
            "--bin" => bin = Some(PathBuf::from(v)),
            "--max-in-flight" => o.max_in_flight = Some(num(&flag, v)?),
            "--batch-size" => o.batch_size = Some(num(&flag, v)?),
            "--producers" => o.producers = num(&flag, v)?,
            "--kafka-set" => {
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--kafka-set: expected KEY=VALUE, got {v:?}"))?;
                o.kafka_set.push((k.to_string(), val.to_string()));
            }
            "--rate" => o.rate = num(&flag, v)?,
            "--stages" => {
                o.stages = v
                    .split(',')
                    .map(|s| match s.trim() {
                        "mqtt" => Ok(Stage::Mqtt),
                        "kafka" => Ok(Stage::Kafka),
                        "brokers" => Ok(Stage::Brokers),
                        "bridge" => Ok(Stage::Bridge),
                        other => Err(anyhow!("--stages: unknown stage {other:?}")),
                    })
                    .collect::<anyhow::Result<_>>()?;
            }
            "--timeout" => timeout = Some(Duration::from_secs(num(&flag, v)?)),
            "--idle" => o.idle = Duration::from_secs(num(&flag, v)?),
            "--keep-topics" => o.keep_topics = true,
            "--persistent" => o.persistent = true,
            "--fetch-wait-ms" => o.fetch_wait_ms = num(&flag, v)?,
            "--warm-up" => o.warm_up = num(&flag, v)?,
            "--publishers" => o.publishers = num(&flag, v)?,
            _ => bail!("unknown option {arg:?} (see --help)"),
        }
    }
    if o.messages == 0 || o.topics == 0 || o.partitions < 1 || o.producers == 0 || o.publishers == 0
    {
        bail!(
            "--messages, --topics, --partitions, --producers and --publishers must be at least 1"
        );
    }
    o.timeout = timeout.unwrap_or(Duration::from_secs(60 + o.messages / 1000));
    o.bin = match bin {
        Some(b) => b,
        None => {
            let release = target_dir().join("release/uns-kafka");
            if release.is_file() {
                release
            } else {
                target_dir().join("debug/uns-kafka")
            }
        }
    };
    Ok(o)
}

// ---------------------------------------------------------------------------
// Workload: topics and payloads

/// The topics and payloads of one stage; every stage gets its own prefix so
/// no stage (or run) reads another's messages.
struct Workload {
    kind: Kind,
    qos: u8,
    mqtt_topics: Vec<String>,
    filter: String,
}

impl Workload {
    fn new(kind: Kind, qos: u8, topics: usize) -> Workload {
        let p = unique("bench");
        let (mqtt_topics, filter) = match kind {
            Kind::Json => (
                (0..topics)
                    .map(|t| format!("{p}/plant/line{t:04}/temperature"))
                    .collect(),
                format!("{p}/#"),
            ),
            Kind::Sparkplug => (
                (0..topics)
                    .map(|t| format!("spBv1.0/{p}/NDATA/node{t:04}"))
                    .collect(),
                format!("spBv1.0/{p}/#"),
            ),
        };
        Workload {
            kind,
            qos,
            mqtt_topics,
            filter,
        }
    }

    /// The Kafka topic the default component writes `mqtt_topic` to.
    fn kafka_topics(&self) -> Vec<String> {
        self.mqtt_topics
            .iter()
            .map(|t| uns_default::topic::kafka_topic(t, '_'))
            .collect()
    }

    fn topic_of(&self, seq: u64) -> usize {
        (seq % self.mqtt_topics.len() as u64) as usize
    }

    /// The mean size of the payloads of `messages` messages (they differ by
    /// a few bytes: digits of `seq`, `value`), for MB/s.
    fn mean_payload_bytes(&self, messages: u64) -> f64 {
        let ts = wall_ms();
        let total: usize = (0..messages).map(|seq| self.payload(seq, ts).len()).sum();
        total as f64 / messages.max(1) as f64
    }

    fn payload(&self, seq: u64, ts_ms: i64) -> Vec<u8> {
        match self.kind {
            Kind::Json => json_payload(seq, ts_ms, self.topic_of(seq)),
            // The transform bench's NDATA; `seq` is not wrapped at 256 (the
            // component passes it through, and the bench needs it unique).
            Kind::Sparkplug => sample_ndata(ts_ms as u64, seq, seq),
        }
    }
}

/// About 200 bytes of UNS JSON: `timestamp` (the component's default
/// timestamp attribute, so the Kafka record time is the publish time), the
/// publisher's `ts` in ms, the sequence number `seq` and six fields.
fn json_payload(seq: u64, ts: i64, topic: usize) -> Vec<u8> {
    let value = 20.0 + (seq % 500) as f64 / 100.0;
    format!(
        "{{\"timestamp\":{ts},\"ts\":{ts},\"seq\":{seq},\"value\":{value:.2},\"unit\":\"degC\",\
         \"quality\":\"GOOD\",\"sensor\":\"TT-{topic:04}\",\"alarm\":false,\"setpoint\":22.0,\
         \"description\":\"cell temperature\"}}"
    )
    .into_bytes()
}

/// What the consumer needs from a record value: JSON payloads carry `ts`
/// and `seq`; Sparkplug ones, decoded to JSON by the component, `timestamp`
/// and `seq` at the top level. Everything else is skipped unparsed.
#[derive(Deserialize)]
struct Stamp {
    ts: Option<i64>,
    timestamp: Option<i64>,
    seq: Option<u64>,
}

// ---------------------------------------------------------------------------
// Clocks and /proc

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

/// Nanoseconds since [`epoch`], for "last seen" stamps in atomics.
fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The reading side's clock for a latency: the stamp in a payload is
/// whole milliseconds rounded down, so the reading is rounded down too, and
/// the difference is off by less than a millisecond either way rather than
/// always high by half a millisecond.
fn wall_ms_f64() -> f64 {
    wall_ms() as f64
}

/// utime + stime of a process (all its threads), in seconds.
fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces; the fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    Some((utime + stime) as f64 / ticks)
}

/// Samples the bridge's VmRSS every 250 ms until [`RssSampler::finish`].
fn spawn_rss_sampler(pid: u32) -> RssSampler {
    let samples = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let task = {
        let samples = samples.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                if let Some(mb) = proc_status_mb(pid, "VmRSS:") {
                    if let Ok(mut s) = samples.lock() {
                        s.push(mb);
                    }
                }
            }
        })
    };
    RssSampler { task, samples }
}

struct RssSampler {
    task: tokio::task::JoinHandle<()>,
    samples: Arc<std::sync::Mutex<Vec<f64>>>,
}

impl RssSampler {
    /// Stops sampling; the RSS at each tenth of the time it ran.
    fn finish(self) -> Vec<f64> {
        self.task.abort();
        let s = self.samples.lock().map(|s| s.clone()).unwrap_or_default();
        tenths(&s)
    }
}

/// The value at each tenth of `samples` (fewer when there are fewer).
fn tenths(samples: &[f64]) -> Vec<f64> {
    if samples.len() <= 10 {
        return samples.to_vec();
    }
    (1..=10)
        .map(|i| samples[(samples.len() * i / 10).saturating_sub(1)])
        .collect()
}

/// A `kB` line of /proc/<pid>/status (VmHWM, VmRSS), in MB.
fn proc_status_mb(pid: u32, key: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// (busy, total) jiffies of the whole machine, from /proc/stat.
fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Share of all cores that were busy between two [`machine_jiffies`].
struct MachineCpu(Option<(u64, u64)>);

impl MachineCpu {
    fn start() -> MachineCpu {
        MachineCpu(machine_jiffies())
    }
    fn busy_pct(&self) -> Option<f64> {
        let (b0, t0) = self.0?;
        let (b1, t1) = machine_jiffies()?;
        (t1 > t0).then(|| (b1 - b0) as f64 * 100.0 / (t1 - t0) as f64)
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` for now (no date crate in this workspace).
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

// ---------------------------------------------------------------------------
// Progress and stage results

/// Counters a stage's workers update and the progress line reads.
#[derive(Default)]
struct Live {
    /// Handed to the MQTT client / the producer.
    published: AtomicU64,
    /// Arrived where the stage ends (subscriber, delivery report, consumer).
    done: AtomicU64,
    /// [`now_ns`] of the last increment of `done`.
    last_done_ns: AtomicU64,
    /// [`now_ns`] when the publisher handed over its last message (0: not yet).
    published_all_ns: AtomicU64,
}

impl Live {
    fn mark_done(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        self.last_done_ns.store(now_ns(), Ordering::Relaxed);
    }
}

/// Prints `stage, count, rate` to stderr once a second; for the bridge
/// also its own counters from `/metrics` on `metrics` (messages received
/// from MQTT and acknowledged, i.e. how many are inside the bridge).
fn spawn_progress(
    label: &'static str,
    total: u64,
    live: Arc<Live>,
    metrics: Option<SocketAddr>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // A slow scrape must not make the next lines come at once.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut last = 0;
        let mut last_at = Instant::now();
        loop {
            tick.tick().await;
            let elapsed = last_at.elapsed().as_secs_f64().max(1e-3);
            last_at = Instant::now();
            let done = live.done.load(Ordering::Relaxed);
            let published = live.published.load(Ordering::Relaxed);
            let bridge = match metrics {
                Some(addr) => tokio::task::spawn_blocking(move || scrape(addr))
                    .await
                    .ok()
                    .flatten()
                    .map(|m| {
                        let get = |k: &str| m.get(k).copied().unwrap_or(0);
                        let (rx, ack) = (
                            get("uns_kafka_messages_received_total"),
                            get("uns_kafka_messages_acknowledged_total"),
                        );
                        format!(
                            "; bridge received {rx}, acknowledged {ack}, in flight {}",
                            rx.saturating_sub(ack)
                        )
                    })
                    .unwrap_or_default(),
                None => String::new(),
            };
            eprintln!(
                "bench: [{label}] {done}/{total} done, {:.0} msg/s (published {published}{bridge})",
                (done - last) as f64 / elapsed
            );
            last = done;
        }
    })
}

/// The bridge's Prometheus counters (plain HTTP/1.0 GET, 1 s timeouts).
fn scrape(addr: SocketAddr) -> Option<BTreeMap<String, u64>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_string(), v.trim().parse().ok()?))
            })
            .collect(),
    )
}

/// The bridge's own latency over the measured part of a run: the
/// `uns_kafka_delivery_seconds` buckets scraped after minus before, and for
/// p50 and p99 the upper bound (ms) of the first bucket that reaches it.
/// Coarse (the buckets' resolution), but it tells the bridge's share of the
/// end-to-end latency apart from the publisher's and the consumer's.
fn own_latency(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> Option<(f64, f64)> {
    let mut buckets: Vec<(f64, u64)> = after
        .iter()
        .filter_map(|(k, v)| {
            let le = k
                .strip_prefix("uns_kafka_delivery_seconds_bucket{le=\"")?
                .strip_suffix("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse::<f64>().ok()? * 1000.0
            };
            Some((le, v.saturating_sub(before.get(k).copied().unwrap_or(0))))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let at = |q: f64| {
        buckets
            .iter()
            .find(|(_, n)| *n as f64 >= q * total as f64)
            .map_or(f64::INFINITY, |(le, _)| *le)
    };
    Some((at(0.5), at(0.99)))
}

/// How a stage's wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Complete,
    Idle,
    Timeout,
}

impl End {
    fn name(self) -> &'static str {
        match self {
            End::Complete => "complete",
            End::Idle => "idle",
            End::Timeout => "timeout",
        }
    }
}

/// Waits until `total` are done, nothing moved for `idle` (after the
/// publisher finished, or at all), or `timeout` passed since `start`.
async fn wait_done(live: &Live, total: u64, start: Instant, opts: &Opts) -> End {
    let mut last_change = Instant::now();
    let mut last_seen = (0, 0);
    loop {
        let done = live.done.load(Ordering::Relaxed);
        if done >= total {
            return End::Complete;
        }
        let seen = (done, live.published.load(Ordering::Relaxed));
        if seen != last_seen {
            last_seen = seen;
            last_change = Instant::now();
        }
        if last_change.elapsed() >= opts.idle {
            return End::Idle;
        }
        if start.elapsed() >= opts.timeout {
            return End::Timeout;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Debug, Default, Clone)]
struct StageResult {
    delivered: u64,
    secs: f64,
    msgs_per_s: f64,
    mb_per_s: f64,
    end: Option<End>,
    /// Publisher's own rate (messages handed to the client per second).
    publish_rate: Option<f64>,
    machine_busy_pct: Option<f64>,
    latency: Option<Latency>,
    bridge_cpu_s_per_million: Option<f64>,
    /// The Kafka baseline's own CPU (this process, i.e. the producers and
    /// their librdkafka threads) per million records: what producing
    /// alone costs, to set beside the bridge's figure.
    client_cpu_s_per_million: Option<f64>,
    bridge_rss_mb: Option<f64>,
    /// The bridge's RSS at each tenth of the measured time, in MB: flat
    /// means memory is bounded, a rising line means something accumulates.
    bridge_rss_series_mb: Vec<f64>,
    /// p50 and p99 bucket bounds (ms) of `uns_kafka_delivery_seconds`.
    bridge_own_latency: Option<(f64, f64)>,
    duplicates: u64,
    dead_letters: u64,
    unparsed: u64,
    errors: u64,
    notes: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
struct Latency {
    p50: f64,
    p99: f64,
    max: f64,
}

fn latency_of(mut v: Vec<f64>) -> Option<Latency> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Some(Latency {
        p50: at(0.50),
        p99: at(0.99),
        max: v[v.len() - 1],
    })
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// Seconds from `start` to the [`now_ns`] stamp `ns`.
fn secs_since(start: Instant, ns: u64) -> f64 {
    let start_ns = start.duration_since(epoch()).as_nanos() as u64;
    ns.saturating_sub(start_ns) as f64 / 1e9
}

// ---------------------------------------------------------------------------
// MQTT

fn mqtt_qos(qos: u8) -> QoS {
    if qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    }
}

/// An MQTT 5 connection (like the bridge's default) with its event loop in a
/// task.
struct Mqtt {
    client: AsyncClient,
    task: tokio::task::JoinHandle<()>,
    /// Set before DISCONNECT: the event loop's errors are expected then.
    closing: Arc<AtomicBool>,
    subacks: Arc<AtomicU64>,
    /// Receive Maximum the broker announced in CONNACK.
    server_receive_max: Arc<AtomicU64>,
}

/// Requests each MQTT client queues before `publish` waits.
const PUBLISH_QUEUE: usize = 256;

impl Mqtt {
    /// `on_publish` runs for every incoming PUBLISH, `on_puback` for every
    /// PUBACK, `on_sent` for every PUBLISH written to the socket.
    async fn connect(
        opts: &Opts,
        name: &str,
        on_publish: impl Fn() + Send + 'static,
        on_puback: impl Fn() + Send + 'static,
        on_sent: impl Fn() + Send + 'static,
    ) -> anyhow::Result<Mqtt> {
        let mut o = MqttOptions::new(unique(name), &opts.mqtt_host, opts.mqtt_port);
        o.set_keep_alive(Duration::from_secs(30))
            .set_clean_start(true)
            .set_max_packet_size(Some(16 * 1024 * 1024))
            // As many unacknowledged messages towards us as the bridge
            // allows by default (its bridge.max_in_flight).
            .set_receive_maximum(Some(10_000))
            // Short queues in the client: a payload is stamped when it is
            // handed over, so a long queue (it was 10,000 per connection,
            // 0.4 s at full speed over four) would count the publisher's
            // own wait as the brokers' and the bridge's latency.
            .set_request_channel_capacity(PUBLISH_QUEUE);
        let (client, mut eventloop) = AsyncClient::new(o, PUBLISH_QUEUE);
        let connected = Arc::new(AtomicBool::new(false));
        let subacks = Arc::new(AtomicU64::new(0));
        let server_receive_max = Arc::new(AtomicU64::new(0));
        let closing = Arc::new(AtomicBool::new(false));
        let (c, s, r, q) = (
            connected.clone(),
            subacks.clone(),
            server_receive_max.clone(),
            closing.clone(),
        );
        let label = name.to_string();
        let task = tokio::spawn(async move {
            let mut errors = 0u64;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(_))) => on_publish(),
                    Ok(Event::Incoming(Packet::PubAck(_))) => on_puback(),
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        s.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        let max = ack
                            .properties
                            .and_then(|p| p.receive_max)
                            .map_or(65_535, u64::from);
                        r.store(max, Ordering::SeqCst);
                        c.store(true, Ordering::SeqCst);
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(_))) => on_sent(),
                    Ok(_) => {}
                    Err(e) => {
                        errors += 1;
                        if errors <= 3 && !q.load(Ordering::Relaxed) {
                            eprintln!("bench: MQTT {label}: {e}");
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(15);
        while !connected.load(Ordering::SeqCst) {
            if Instant::now() >= deadline {
                task.abort();
                bail!(
                    "no CONNACK from MQTT {}:{} within 15 s",
                    opts.mqtt_host,
                    opts.mqtt_port
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Mqtt {
            client,
            task,
            closing,
            subacks,
            server_receive_max,
        })
    }

    async fn subscribe(&self, filter: &str, qos: u8) -> anyhow::Result<()> {
        let before = self.subacks.load(Ordering::SeqCst);
        self.client
            .subscribe(filter, mqtt_qos(qos))
            .await
            .map_err(|e| anyhow!("subscribe {filter}: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.subacks.load(Ordering::SeqCst) <= before {
            if Instant::now() >= deadline {
                bail!("no SUBACK for {filter} within 15 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }

    async fn close(self) {
        self.closing.store(true, Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.disconnect()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.task.abort();
    }
}

/// The publisher: `--publishers` MQTT connections, each publishing the
/// messages of its share of the topics (so every topic keeps its order), at
/// full speed or `--rate` in all. Each payload carries the wall-clock time
/// at which it is handed to the client.
struct Publisher {
    conns: Vec<Mqtt>,
    acked: Arc<AtomicU64>,
    /// PUBLISH packets written to the socket (not just queued in the
    /// client), and when the last one was.
    sent: Arc<AtomicU64>,
    last_sent_ns: Arc<AtomicU64>,
}

impl Publisher {
    async fn connect(opts: &Opts) -> anyhow::Result<Publisher> {
        let acked = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let last_sent_ns = Arc::new(AtomicU64::new(0));
        let mut conns = Vec::with_capacity(opts.publishers);
        for _ in 0..opts.publishers {
            let (a, s, l) = (acked.clone(), sent.clone(), last_sent_ns.clone());
            conns.push(
                Mqtt::connect(
                    opts,
                    "bench-pub",
                    || {},
                    move || {
                        a.fetch_add(1, Ordering::Relaxed);
                    },
                    move || {
                        s.fetch_add(1, Ordering::Relaxed);
                        l.store(now_ns(), Ordering::Relaxed);
                    },
                )
                .await?,
            );
        }
        Ok(Publisher {
            conns,
            acked,
            sent,
            last_sent_ns,
        })
    }

    /// The broker's Receive Maximum for one publishing connection.
    fn server_receive_max(&self) -> u64 {
        self.conns[0].server_receive_max.load(Ordering::SeqCst)
    }

    async fn close(self) {
        for c in self.conns {
            c.close().await;
        }
    }

    /// Publishes sequence numbers `seqs` in a task (full speed, or `rate`
    /// per second in all when not 0), counting them into `live.published`.
    /// Aborting the task stops every connection's share.
    fn start(
        &self,
        qos: u8,
        rate: u64,
        seqs: std::ops::Range<u64>,
        workload: Arc<Workload>,
        live: Arc<Live>,
    ) -> tokio::task::JoinHandle<()> {
        let clients: Vec<AsyncClient> = self.conns.iter().map(|c| c.client.clone()).collect();
        tokio::spawn(async move {
            let start = Instant::now();
            let n = clients.len();
            // Dropped with this task, which aborts the shares.
            let mut shares = tokio::task::JoinSet::new();
            for (i, client) in clients.into_iter().enumerate() {
                let (seqs, workload, live) = (seqs.clone(), workload.clone(), live.clone());
                shares.spawn(async move {
                    let first = seqs.start;
                    for seq in seqs {
                        let topic = workload.topic_of(seq);
                        if topic % n != i {
                            continue;
                        }
                        if rate > 0 {
                            let due =
                                start + Duration::from_secs_f64((seq - first) as f64 / rate as f64);
                            tokio::time::sleep_until(due.into()).await;
                        }
                        let payload = workload.payload(seq, wall_ms());
                        if let Err(e) = client
                            .publish(
                                workload.mqtt_topics[topic].as_str(),
                                mqtt_qos(qos),
                                false,
                                payload,
                            )
                            .await
                        {
                            eprintln!("bench: publish failed at seq {seq}: {e}");
                            return;
                        }
                        live.published.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            while shares.join_next().await.is_some() {}
            live.published_all_ns.store(now_ns(), Ordering::Relaxed);
        })
    }

    /// Messages per second written to the socket from `start` to the last
    /// of `n` sent after the first `before`; `None` until all were sent.
    fn rate_since(&self, start: Instant, before: u64, n: u64) -> Option<f64> {
        let sent = self.sent.load(Ordering::Relaxed);
        (sent >= before + n).then(|| {
            rate(
                n,
                secs_since(start, self.last_sent_ns.load(Ordering::Relaxed)),
            )
        })
    }
}

// ---------------------------------------------------------------------------
// Kafka

fn kafka_base(opts: &Opts) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &opts.kafka);
    c
}

/// Creates topics with `--partitions` partitions, one replica, ignoring
/// ones that exist (the harness's `create_topics`, with `--kafka`).
async fn create_topics(opts: &Opts, names: &[String]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = kafka_base(opts).create()?;
    let adm = AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
    for chunk in names.chunks(500) {
        let topics: Vec<NewTopic<'_>> = chunk
            .iter()
            .map(|n| NewTopic::new(n, opts.partitions, TopicReplication::Fixed(1)))
            .collect();
        for result in admin.create_topics(&topics, &adm).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => bail!("create topic {name}: {code}"),
            }
        }
    }
    wait_listed(&admin, names).await
}

/// Waits until the broker lists every topic with a leader for each
/// partition. CreateTopics returns when the controller has them, and a
/// broker busy with thousands of new partitions can take longer than
/// librdkafka's `topic.metadata.propagation.max.ms` (30 s) to serve them:
/// a stage started then sees its records dead-lettered as unknown topics.
async fn wait_listed(
    admin: &AdminClient<DefaultClientContext>,
    names: &[String],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let metadata = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(30))?;
        let ready: HashSet<&str> = metadata
            .topics()
            .iter()
            .filter(|t| {
                t.error().is_none()
                    && !t.partitions().is_empty()
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            })
            .map(|t| t.name())
            .collect();
        let missing = names.iter().filter(|n| !ready.contains(n.as_str())).count();
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{missing} of {} new topics still not listed by the broker after 300 s",
                names.len()
            );
        }
        eprintln!(
            "bench: waiting for the broker to list {missing} of {} new topics",
            names.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn delete_topics(opts: &Opts, names: &[String]) {
    let Ok(admin) = kafka_base(opts).create::<AdminClient<DefaultClientContext>>() else {
        return;
    };
    let adm = AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)));
    for chunk in names.chunks(500) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        if let Err(e) = admin.delete_topics(&refs, &adm).await {
            eprintln!("bench: deleting topics: {e}");
        }
    }
}

/// The producer settings `uns-kafka` uses when `kafka.config` has only
/// `bootstrap.servers`: its data-protecting defaults (`KAFKA_DEFAULTS`, the
/// bridge's own constant) on top of librdkafka's (linger.ms 5, batch.size
/// 1 MB, batch.num.messages 10000, no compression), plus `--kafka-set`.
fn producer_config(opts: &Opts) -> ClientConfig {
    let mut c = kafka_base(opts);
    for (k, v) in uns_kafka::config::KAFKA_DEFAULTS {
        c.set(*k, *v);
    }
    for (k, v) in &opts.kafka_set {
        c.set(k, v);
    }
    c
}

/// One record as the bridge would write it for a topic: the default
/// component's output for a representative message.
struct Template {
    topic: String,
    key: Vec<u8>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    bytes: usize,
}

fn templates(workload: &Workload) -> anyhow::Result<Vec<Template>> {
    let config =
        uns_default::Config::from_json(r#"{"topic_separator":"_"}"#).map_err(|e| anyhow!("{e}"))?;
    let now = wall_ms();
    workload
        .mqtt_topics
        .iter()
        .enumerate()
        .map(|(t, topic)| {
            let payload = workload.payload(t as u64 + 100_000, now);
            let msg = uns_default::Message {
                topic,
                payload: &payload,
                qos: workload.qos,
                retain: false,
                user_properties: &[],
                content_type: None,
                received_at_ms: now,
            };
            let mut records =
                uns_default::transform(&config, &msg).map_err(|e| anyhow!("{e:?}"))?;
            let r = records.pop().context("the component returned no record")?;
            let key = r.key.unwrap_or_default();
            let value = r.value.unwrap_or_default();
            let bytes = key.len()
                + value.len()
                + r.headers
                    .iter()
                    .map(|(k, v)| k.len() + v.len())
                    .sum::<usize>();
            Ok(Template {
                topic: r.topic,
                key,
                value,
                headers: r.headers,
                bytes,
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Stages

/// The clocks of the two baselines when they run together (`--stages
/// brokers`): each side waits here, set up and warmed up, so neither
/// measures while the other is still connecting.
type Together = Option<Arc<tokio::sync::Barrier>>;

async fn stage_mqtt(opts: &Opts, together: Together) -> anyhow::Result<StageResult> {
    let label = match together {
        Some(_) => "both brokers: mqtt",
        None => Stage::Mqtt.label(),
    };
    let workload = Arc::new(Workload::new(opts.kind, opts.qos, opts.topics));
    let live = Arc::new(Live::default());
    let l = live.clone();
    let sub = Mqtt::connect(opts, "bench-sub", move || l.mark_done(1), || {}, || {}).await?;
    sub.subscribe(&workload.filter, opts.qos).await?;
    let publisher = Publisher::connect(opts).await?;
    eprintln!(
        "bench: [{label}] broker Receive Maximum for each publisher connection: {}",
        publisher.server_receive_max()
    );
    if let Some(gate) = &together {
        gate.wait().await;
    }
    let progress = spawn_progress(label, opts.messages, live.clone(), None);
    let cpu = MachineCpu::start();
    let start = Instant::now();
    let pub_task = publisher.start(
        opts.qos,
        opts.rate,
        0..opts.messages,
        workload.clone(),
        live.clone(),
    );
    let end = wait_done(&live, opts.messages, start, opts).await;
    let busy = cpu.busy_pct();
    progress.abort();
    pub_task.abort();
    let delivered = live.done.load(Ordering::Relaxed);
    let secs = secs_since(start, live.last_done_ns.load(Ordering::Relaxed));
    let bytes = workload.mean_payload_bytes(opts.messages);
    let publish_rate = publisher.rate_since(start, 0, opts.messages);
    publisher.close().await;
    sub.close().await;
    Ok(StageResult {
        delivered,
        secs,
        msgs_per_s: rate(delivered, secs),
        mb_per_s: rate(delivered, secs) * bytes / 1e6,
        end: Some(end),
        publish_rate,
        machine_busy_pct: busy,
        ..Default::default()
    })
}

fn publish_rate(live: &Live, start: Instant) -> Option<f64> {
    let ns = live.published_all_ns.load(Ordering::Relaxed);
    (ns > 0).then(|| {
        rate(
            live.published.load(Ordering::Relaxed),
            secs_since(start, ns),
        )
    })
}

async fn stage_kafka(
    opts: &Opts,
    created: &mut Vec<String>,
    together: Together,
) -> anyhow::Result<StageResult> {
    let label = match together {
        Some(_) => "both brokers: kafka",
        None => Stage::Kafka.label(),
    };
    let workload = Workload::new(opts.kind, opts.qos, opts.topics);
    let templates = templates(&workload)?;
    let names: Vec<String> = templates.iter().map(|t| t.topic.clone()).collect();
    created.extend(names.iter().cloned());
    create_topics(opts, &names).await?;
    // As many producers as the bridge, each topic always on the same one.
    let producers: Vec<FutureProducer> = (0..opts.producers)
        .map(|_| producer_config(opts).create())
        .collect::<Result<_, _>>()?;
    let producer_of = |topic: usize| &producers[topic % producers.len()];
    let live = Arc::new(Live::default());
    let errors = Arc::new(AtomicU64::new(0));
    let progress = spawn_progress(label, opts.messages, live.clone(), None);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(DeliveryFuture, i64)>();
    // Delivery reports, in send order (as the bridge acknowledges), each
    // with its time from send to report: Kafka's own latency at this rate,
    // to set beside the bridge's (`uns_kafka_delivery_seconds`).
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(
        opts.messages as usize,
    )));
    let (l, errs, lat) = (live.clone(), errors.clone(), latencies.clone());
    let collector = tokio::spawn(async move {
        while let Some((f, ts)) = rx.recv().await {
            match f.await {
                Ok(Ok(_)) => {
                    let ms = wall_ms_f64() - ts as f64;
                    lat.lock().unwrap_or_else(|e| e.into_inner()).push(ms);
                    l.mark_done(1);
                }
                Ok(Err((e, _))) => {
                    if errs.fetch_add(1, Ordering::Relaxed) < 3 {
                        eprintln!("bench: [{label}] delivery failed: {e}");
                    }
                }
                Err(_) => {
                    errs.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    // Warm-up, not timed: `--warm-up` records per topic, so the producer
    // has its producer id and every topic's metadata, and Kafka has written
    // each new partition's first index entries, before the clock starts (the
    // bridge stage warms up the same way).
    let warm: Vec<DeliveryFuture> = (0..opts.warm_up.max(1))
        .flat_map(|_| templates.iter().enumerate())
        .map(|(i, tpl)| {
            producer_of(i)
                .send_result(
                    FutureRecord::to(&tpl.topic)
                        .key(tpl.key.as_slice())
                        .payload(tpl.value.as_slice()),
                )
                .map_err(|(e, _)| anyhow!("warm-up send: {e}"))
        })
        .collect::<anyhow::Result<_>>()?;
    for f in warm {
        match tokio::time::timeout(Duration::from_secs(60), f).await {
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err((e, _)))) => bail!("warm-up delivery: {e}"),
            Ok(Err(_)) => bail!("warm-up delivery cancelled"),
            Err(_) => bail!("warm-up delivery took over 60 s"),
        }
    }
    if let Some(gate) = &together {
        gate.wait().await;
    }
    let cpu = MachineCpu::start();
    // Side by side, this process also runs the MQTT clients.
    let own_cpu = together
        .is_none()
        .then(|| proc_cpu_secs(std::process::id()))
        .flatten();
    let start = Instant::now();
    let (p, l, messages, rate_limit) = (producers.clone(), live.clone(), opts.messages, opts.rate);
    let templates = Arc::new(templates);
    let t = templates.clone();
    let sender = tokio::spawn(async move {
        for seq in 0..messages {
            if rate_limit > 0 {
                let due = start + Duration::from_secs_f64(seq as f64 / rate_limit as f64);
                tokio::time::sleep_until(due.into()).await;
            }
            let i = (seq % t.len() as u64) as usize;
            let tpl = &t[i];
            let p = &p[i % p.len()];
            let ts = wall_ms();
            loop {
                // Headers built per record, as the bridge does.
                let mut headers = OwnedHeaders::new_with_capacity(tpl.headers.len());
                for (k, v) in &tpl.headers {
                    headers = headers.insert(Header {
                        key: k,
                        value: Some(v.as_slice()),
                    });
                }
                let record = FutureRecord::to(&tpl.topic)
                    .key(tpl.key.as_slice())
                    .payload(tpl.value.as_slice())
                    .headers(headers)
                    .timestamp(ts);
                match p.send_result(record) {
                    Ok(f) => {
                        let _ = tx.send((f, ts));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err((e, _)) => {
                        eprintln!("bench: [{label}] send failed: {e}");
                        return;
                    }
                }
            }
            l.published.fetch_add(1, Ordering::Relaxed);
        }
        l.published_all_ns.store(now_ns(), Ordering::Relaxed);
    });
    let end = wait_done(&live, opts.messages, start, opts).await;
    let busy = cpu.busy_pct();
    let own_cpu = own_cpu
        .zip(proc_cpu_secs(std::process::id()))
        .map(|(before, after)| after - before);
    progress.abort();
    sender.abort();
    collector.abort();
    let delivered = live.done.load(Ordering::Relaxed);
    let secs = secs_since(start, live.last_done_ns.load(Ordering::Relaxed));
    let bytes = templates.iter().map(|t| t.bytes).sum::<usize>() as f64 / templates.len() as f64;
    for p in &producers {
        let _ = p.flush(Duration::from_secs(5));
    }
    let latencies = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(StageResult {
        delivered,
        secs,
        msgs_per_s: rate(delivered, secs),
        mb_per_s: rate(delivered, secs) * bytes / 1e6,
        end: Some(end),
        latency: latency_of(latencies),
        publish_rate: publish_rate(&live, start),
        machine_busy_pct: busy,
        client_cpu_s_per_million: own_cpu
            .filter(|_| delivered > 0)
            .map(|s| s * 1e6 / delivered as f64),
        errors: errors.load(Ordering::Relaxed),
        ..Default::default()
    })
}

/// Both baselines at once, started together. The rate is every message
/// through both brokers over the time the slower one took: the one that
/// finishes first leaves the other the machine for the rest, so this errs
/// towards a higher limit, i.e. against the bridge.
async fn stage_brokers(opts: &Opts, created: &mut Vec<String>) -> anyhow::Result<StageResult> {
    let gate = Arc::new(tokio::sync::Barrier::new(2));
    // `try_join`: if one side fails before the gate, the other is dropped
    // rather than left waiting there.
    let (m, k) = tokio::try_join!(
        stage_mqtt(opts, Some(gate.clone())),
        stage_kafka(opts, created, Some(gate)),
    )?;
    Ok(side_by_side(&m, &k))
}

/// One row from the two baselines run together: every message through
/// both brokers (the smaller count) over the time the slower one took.
fn side_by_side(m: &StageResult, k: &StageResult) -> StageResult {
    let delivered = m.delivered.min(k.delivered);
    let secs = m.secs.max(k.secs);
    let msgs_per_s = rate(delivered, secs);
    let end = match (m.end, k.end) {
        (Some(End::Complete), other) => other,
        (first, _) => first,
    };
    StageResult {
        delivered,
        secs,
        msgs_per_s,
        // MQTT payload, as in the other MQTT rows.
        mb_per_s: if m.msgs_per_s > 0.0 {
            m.mb_per_s / m.msgs_per_s * msgs_per_s
        } else {
            0.0
        },
        end,
        publish_rate: m.publish_rate,
        machine_busy_pct: match (m.machine_busy_pct, k.machine_busy_pct) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        },
        errors: k.errors,
        notes: vec![format!(
            "side by side: mqtt {} in {:.2} s ({:.0} msg/s), kafka {} in {:.2} s ({:.0} msg/s)",
            m.delivered, m.secs, m.msgs_per_s, k.delivered, k.secs, k.msgs_per_s
        )],
        ..Default::default()
    }
}

/// What the bridge-stage consumer saw.
#[derive(Default)]
struct Consumed {
    /// Warm-up records (sequence numbers from `--messages` up).
    warm: u64,
    latencies_ms: Vec<f64>,
    duplicates: u64,
    dead_letters: u64,
    unparsed: u64,
}

/// Reads every partition of `topics` from the beginning (assigned, no
/// group rebalance) on its own thread until `stop`; counts distinct
/// sequence numbers into `live` and records latencies.
fn spawn_consumer(
    opts: &Opts,
    topics: Vec<String>,
    dlq: String,
    live: Arc<Live>,
    warm: Arc<Live>,
    ready: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<std::thread::JoinHandle<Consumed>> {
    let consumer: BaseConsumer = kafka_base(opts)
        .set("group.id", unique("bench-group"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // Few, large fetches: librdkafka matches every partition of a fetch
        // response to its topic by a linear search over the subscribed
        // topics, so with 1000 topics many small fetches cost this process
        // a whole core (perf: memcmp/strcmp under
        // rd_kafka_topic_find_by_topic_id) and steal it from the bridge.
        .set("fetch.wait.max.ms", opts.fetch_wait_ms.to_string())
        .set("fetch.min.bytes", "262144")
        .set("fetch.queue.backoff.ms", "10")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for t in &topics {
        for p in 0..opts.partitions {
            tpl.add_partition_offset(t, p, Offset::Beginning)?;
        }
    }
    tpl.add_partition_offset(&dlq, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let messages = opts.messages;
    Ok(std::thread::spawn(move || {
        let mut seen = vec![false; messages as usize];
        let mut out = Consumed {
            latencies_ms: Vec::with_capacity(messages as usize),
            ..Default::default()
        };
        let mut polled = false;
        while !stop.load(Ordering::Relaxed) {
            let Some(result) = consumer.poll(Duration::from_millis(50)) else {
                if !polled {
                    polled = true;
                    ready.store(true, Ordering::SeqCst);
                }
                continue;
            };
            let m = match result {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("bench: [bridge] consumer: {e}");
                    continue;
                }
            };
            let now = wall_ms_f64();
            if m.topic() == dlq {
                out.dead_letters += 1;
                continue;
            }
            let stamp = m
                .payload()
                .and_then(|v| serde_json::from_slice::<Stamp>(v).ok());
            let Some((seq, ts)) = stamp.and_then(|s| Some((s.seq?, s.ts.or(s.timestamp)?))) else {
                out.unparsed += 1;
                continue;
            };
            match seen.get_mut(seq as usize) {
                Some(slot) if !*slot => {
                    *slot = true;
                    out.latencies_ms.push(now - ts as f64);
                    live.mark_done(1);
                }
                Some(_) => out.duplicates += 1,
                None => {
                    out.warm += 1;
                    warm.mark_done(1);
                }
            }
        }
        out
    }))
}

/// Most warm-up messages published before waiting for them to arrive: half
/// of what the test broker queues for one client (`max_queued_messages
/// 100000` in tests/brokers.sh).
const WARM_CHUNK: u64 = 50_000;

async fn stage_bridge(opts: &Opts, created: &mut Vec<String>) -> anyhow::Result<StageResult> {
    let workload = Arc::new(Workload::new(opts.kind, opts.qos, opts.topics));
    let topics = workload.kafka_topics();
    let dlq = format!("{}-dlq", unique("bench"));
    let mut all = topics.clone();
    all.push(dlq.clone());
    created.extend(all.iter().cloned());
    create_topics(opts, &topics).await?;
    {
        // The dead-letter topic with one partition, whatever --partitions.
        let one = Opts {
            partitions: 1,
            ..opts.clone()
        };
        create_topics(&one, std::slice::from_ref(&dlq)).await?;
    }

    let dir = ConfigDir::new();
    let mut kafka_config: BTreeMap<String, String> = BTreeMap::new();
    kafka_config.insert("bootstrap.servers".into(), opts.kafka.clone());
    for (k, v) in &opts.kafka_set {
        kafka_config.insert(k.clone(), v.clone());
    }
    let mut yaml = format!(
        "mqtt:\n  host: '{}'\n  port: {}\n  topics: ['{}']\n  qos: {}\n",
        opts.mqtt_host, opts.mqtt_port, workload.filter, opts.qos
    );
    if opts.persistent {
        // Gone a minute after the run.
        let id = std::process::id();
        yaml.push_str(&format!(
            "  clean_session: false\n  client_id: 'uns-kafka-bench-{id}'\n  session_expiry: 60\n"
        ));
    }
    yaml.push_str("kafka:\n  config:\n");
    for (k, v) in &kafka_config {
        yaml.push_str(&format!("    {k}: '{v}'\n"));
    }
    yaml.push_str(&format!("  dead_letter_topic: '{dlq}'\n"));
    yaml.push_str(&format!("  producers: {}\n", opts.producers));
    // /metrics for the progress line, on a port free a moment ago.
    let metrics: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    yaml.push_str(&format!("bridge:\n  health_listen: '{metrics}'\n"));
    if let Some(n) = opts.max_in_flight {
        yaml.push_str(&format!("  max_in_flight: {n}\n"));
    }
    if let Some(n) = opts.batch_size {
        yaml.push_str(&format!("  batch_size: {n}\n"));
    }
    dir.write_settings(&yaml);
    let config = dir.path().to_string_lossy().into_owned();
    let comp = component("uns-default").to_string_lossy().into_owned();
    let mut bridge = Bridge::start(["run", "--config", &config, "--component", &comp], &[]);
    bridge.wait_ready(Duration::from_secs(120)).await;
    let pid = bridge.pid();
    eprintln!(
        "bench: [bridge] uns-kafka ready (pid {pid}), log {}",
        bridge.log_path().display()
    );

    let live = Arc::new(Live::default());
    let warm = Arc::new(Live::default());
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicBool::new(false));
    let consumer = spawn_consumer(
        opts,
        topics,
        dlq.clone(),
        live.clone(),
        warm.clone(),
        ready.clone(),
        stop.clone(),
    )?;
    // Let the consumer fetch its start offsets, so the first records do
    // not wait for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready.load(Ordering::SeqCst) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let publisher = Publisher::connect(opts).await?;
    // Warm-up, not timed: `--warm-up` messages per topic (sequence numbers
    // after the measured ones), so the bridge's producer has its producer id
    // and every topic's metadata, Kafka has written each new partition's
    // first index entries, and the consumer is fetching, before the clock
    // starts.
    // In chunks of at most WARM_CHUNK, each waited for: the whole warm-up at
    // full speed (128,000 messages at 4,000 topics) outran what Mosquitto
    // queues for one client, which dropped the excess.
    let n_warm = workload.mqtt_topics.len() as u64 * opts.warm_up.max(1);
    let warm_start = Instant::now();
    let mut warm_end = End::Complete;
    let mut from = opts.messages;
    while from < opts.messages + n_warm && warm_end == End::Complete {
        let to = (from + WARM_CHUNK).min(opts.messages + n_warm);
        let warm_task = publisher.start(
            opts.qos,
            0,
            from..to,
            workload.clone(),
            Arc::new(Live::default()),
        );
        warm_end = wait_done(&warm, to - opts.messages, warm_start, opts).await;
        warm_task.abort();
        from = to;
    }
    if warm_end != End::Complete {
        eprintln!(
            "bench: [bridge] warm-up: only {}/{n_warm} arrived ({})",
            warm.done.load(Ordering::Relaxed),
            warm_end.name()
        );
    }
    let sent_before = publisher.sent.load(Ordering::Relaxed);
    let progress = spawn_progress(
        Stage::Bridge.label(),
        opts.messages,
        live.clone(),
        Some(metrics),
    );
    let cpu0 = proc_cpu_secs(pid);
    let counters0 = scrape(metrics);
    let machine = MachineCpu::start();
    let start = Instant::now();
    let rss_sampler = spawn_rss_sampler(pid);
    let pub_task = publisher.start(
        opts.qos,
        opts.rate,
        0..opts.messages,
        workload.clone(),
        live.clone(),
    );
    let end = wait_done(&live, opts.messages, start, opts).await;
    let busy = machine.busy_pct();
    let cpu1 = proc_cpu_secs(pid);
    let rss = proc_status_mb(pid, "VmHWM:");
    let rss_series = rss_sampler.finish();
    progress.abort();
    pub_task.abort();
    let published = live.published.load(Ordering::Relaxed);
    let acked = publisher
        .acked
        .load(Ordering::Relaxed)
        .saturating_sub(sent_before);
    let publish_rate = publisher.rate_since(start, sent_before, opts.messages);
    publisher.close().await;
    stop.store(true, Ordering::SeqCst);
    let consumed = consumer
        .join()
        .map_err(|_| anyhow!("consumer thread panicked"))?;
    let counters = scrape(metrics);
    let bridge_own_latency = match (&counters0, &counters) {
        (Some(a), Some(b)) => own_latency(a, b),
        _ => None,
    };
    let mut notes = Vec::new();
    if let Some((p50, p99)) = bridge_own_latency {
        notes.push(format!(
            "its own latency (uns_kafka_delivery_seconds, receive to Kafka confirm): p50 <= {p50} ms, p99 <= {p99} ms"
        ));
    }
    if let Some(m) = &counters {
        let get = |k: &str| m.get(k).copied().unwrap_or(0);
        let (rx, ack) = (
            get("uns_kafka_messages_received_total"),
            get("uns_kafka_messages_acknowledged_total"),
        );
        if end != End::Complete || rx != ack {
            notes.push(format!(
                "bridge counters at the end: received {rx}, acknowledged {ack} (warm-up included)"
            ));
        }
        let never_received = published.saturating_sub(rx.saturating_sub(n_warm));
        if end != End::Complete && never_received > 0 && rx == ack {
            // Not the bridge's loss: it acknowledged all it got. A publisher
            // that outruns the bridge by more than the broker queues for one
            // client loses the excess in the broker (Mosquitto:
            // max_queued_messages; its log says "Outgoing messages are being
            // dropped").
            notes.push(format!(
                "{never_received} published messages never reached the bridge: the broker dropped \
                 them (more queued for it than max_queued_messages); use fewer --messages or a --rate"
            ));
        }
    }
    // Not the harness's `terminate`, which panics: a bridge that does not
    // stop is a finding to report, not a reason to lose the figures.
    bridge.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    while bridge.is_running() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if bridge.is_running() {
        notes.push("uns-kafka did not exit within 30 s of SIGTERM (killed)".to_string());
        eprintln!(
            "bench: [bridge] uns-kafka (pid {pid}) still running 30 s after SIGTERM; killing it. log {}",
            bridge.log_path().display()
        );
        bridge.signal(libc::SIGKILL);
    }
    if end != End::Complete {
        notes.push(format!(
            "stage ended by {}: see the bridge log {}",
            end.name(),
            bridge.log_path().display()
        ));
    }
    if opts.qos > 0 && acked < published {
        eprintln!("bench: [bridge] publisher: {acked}/{published} QoS 1 messages acknowledged");
    }

    let delivered = live.done.load(Ordering::Relaxed);
    let secs = secs_since(start, live.last_done_ns.load(Ordering::Relaxed));
    let bytes = workload.mean_payload_bytes(opts.messages);
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) if delivered > 0 => Some((b - a) / delivered as f64 * 1e6),
        _ => None,
    };
    Ok(StageResult {
        delivered,
        secs,
        msgs_per_s: rate(delivered, secs),
        mb_per_s: rate(delivered, secs) * bytes / 1e6,
        end: Some(end),
        publish_rate,
        machine_busy_pct: busy,
        latency: latency_of(consumed.latencies_ms),
        bridge_cpu_s_per_million: cpu,
        client_cpu_s_per_million: None,
        bridge_rss_mb: rss,
        bridge_rss_series_mb: rss_series,
        bridge_own_latency,
        duplicates: consumed.duplicates,
        dead_letters: consumed.dead_letters,
        unparsed: consumed.unparsed,
        errors: 0,
        notes,
    })
}

// ---------------------------------------------------------------------------
// Report

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".into(), |x| format!("{x:.prec$}"))
}

fn print_table(opts: &Opts, payload_bytes: usize, results: &[(Stage, StageResult)]) {
    println!();
    println!(
        "uns-kafka-bench  {}  messages {}  payload {} ({payload_bytes} B)  qos {}  topics {}  partitions {}",
        utc_now(),
        opts.messages,
        opts.kind.name(),
        opts.qos,
        opts.topics,
        opts.partitions
    );
    println!(
        "mqtt {}:{}  kafka {}  bridge {}  max_in_flight {}  batch_size {}  producers {}  publishers {}  warm-up {}{}{}",
        opts.mqtt_host,
        opts.mqtt_port,
        opts.kafka,
        opts.bin.display(),
        opts.max_in_flight
            .map_or("default".into(), |n| n.to_string()),
        opts.batch_size.map_or("default".into(), |n| n.to_string()),
        opts.producers,
        opts.publishers,
        opts.warm_up,
        if opts.rate > 0 {
            format!("  rate {} msg/s", opts.rate)
        } else {
            String::new()
        },
        if opts.persistent {
            "  persistent session"
        } else {
            ""
        }
    );
    println!();
    println!(
        "{:<15} {:>9} {:>8} {:>8} {:>10} {:>7} {:>8} {:>8} {:>8} {:>9} {:>8} {:>6} {:>9}",
        "stage",
        "delivered",
        "missing",
        "secs",
        "msgs/s",
        "MB/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "cpu s/M",
        "RSS MB",
        "busy%",
        "end"
    );
    for (stage, r) in results {
        let lost = opts.messages.saturating_sub(r.delivered);
        println!(
            "{:<15} {:>9} {:>8} {:>8.2} {:>10.0} {:>7.2} {:>8} {:>8} {:>8} {:>9} {:>8} {:>6} {:>9}",
            stage.label(),
            r.delivered,
            lost,
            r.secs,
            r.msgs_per_s,
            r.mb_per_s,
            fmt_opt(r.latency.map(|l| l.p50), 1),
            fmt_opt(r.latency.map(|l| l.p99), 1),
            fmt_opt(r.latency.map(|l| l.max), 1),
            fmt_opt(r.bridge_cpu_s_per_million.or(r.client_cpu_s_per_million), 1),
            fmt_opt(r.bridge_rss_mb, 1),
            fmt_opt(r.machine_busy_pct, 0),
            r.end.map_or("-", End::name),
        );
    }
    println!();
    let brokers = results
        .iter()
        .find(|(s, _)| *s == Stage::Brokers)
        .map(|(_, r)| r.msgs_per_s)
        .filter(|r| *r > 0.0);
    for (stage, r) in results {
        let mut notes = Vec::new();
        if let (Stage::Bridge, Some(b)) = (stage, brokers) {
            notes.push(format!(
                "{:.2} of what both brokers carried side by side",
                r.msgs_per_s / b
            ));
        }
        if let Some(p) = r.publish_rate {
            notes.push(format!("publisher {p:.0} msg/s"));
        }
        if opts.qos == 0 && *stage != Stage::Kafka && r.delivered < opts.messages {
            let lost = opts.messages - r.delivered;
            notes.push(format!(
                "QoS 0 loss {lost} ({:.2}%)",
                lost as f64 * 100.0 / opts.messages as f64
            ));
        }
        for (n, what) in [
            (r.duplicates, "duplicates"),
            (r.dead_letters, "dead-lettered"),
            (r.unparsed, "unparsable records"),
            (r.errors, "delivery errors"),
        ] {
            if n > 0 {
                notes.push(format!("{n} {what}"));
            }
        }
        if !r.bridge_rss_series_mb.is_empty() {
            let series: Vec<String> = r
                .bridge_rss_series_mb
                .iter()
                .map(|mb| format!("{mb:.0}"))
                .collect();
            notes.push(format!(
                "RSS MB at each tenth of the run: {}",
                series.join(" ")
            ));
        }
        notes.extend(r.notes.iter().cloned());
        if !notes.is_empty() {
            println!("  {}: {}", stage.label(), notes.join("; "));
        }
    }
    println!(
        "  msgs/s = distinct messages arrived / (last arrival - first publish); MB/s of MQTT payload \
         (kafka baseline: key + value + headers); latency = consumer read time - publisher \"ts\" \
         (kafka baseline: send to delivery report, in send order); \
         cpu s/M = bridge utime+stime per million messages \
         (kafka baseline: its producers'); RSS = bridge VmHWM; busy% = all cores, whole machine"
    );
}

fn json_line(opts: &Opts, payload_bytes: usize, results: &[(Stage, StageResult)]) -> String {
    let get = |s: Stage| results.iter().find(|(st, _)| *st == s).map(|(_, r)| r);
    let mqtt = get(Stage::Mqtt).map(|r| r.msgs_per_s);
    let kafka = get(Stage::Kafka).map(|r| r.msgs_per_s);
    let bridge = get(Stage::Bridge);
    let limit = match (mqtt, kafka) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let bridge_rate = bridge.map(|r| r.msgs_per_s);
    let ratio_to = |limit: Option<f64>| match (bridge_rate, limit) {
        (Some(b), Some(l)) if l > 0.0 => Some(b / l),
        _ => None,
    };
    let ratio = ratio_to(limit);
    let brokers = get(Stage::Brokers).map(|r| r.msgs_per_s);
    let round = |v: Option<f64>, digits: i32| {
        v.map(|x| {
            let f = 10f64.powi(digits);
            (x * f).round() / f
        })
    };
    let lat = bridge.and_then(|r| r.latency);
    let kafka_lat = get(Stage::Kafka).and_then(|r| r.latency);
    serde_json::json!({
        "bridge_msgs_per_s": round(bridge_rate, 0),
        "limit_msgs_per_s": round(limit, 0),
        "ratio": round(ratio, 3),
        "p50_ms": round(lat.map(|l| l.p50), 1),
        "p99_ms": round(lat.map(|l| l.p99), 1),
        "max_ms": round(lat.map(|l| l.max), 1),
        "rss_mb": round(bridge.and_then(|r| r.bridge_rss_mb), 1),
        "rss_series_mb": bridge.map(|r| r.bridge_rss_series_mb.iter().map(|v| round(Some(*v), 0)).collect::<Vec<_>>()),
        "cpu_s_per_million": round(bridge.and_then(|r| r.bridge_cpu_s_per_million), 2),
        "bridge_own_p50_ms_le": bridge.and_then(|r| r.bridge_own_latency).map(|l| l.0).filter(|v| v.is_finite()),
        "bridge_own_p99_ms_le": bridge.and_then(|r| r.bridge_own_latency).map(|l| l.1).filter(|v| v.is_finite()),
        "qos": opts.qos,
        "payload": opts.kind.name(),
        "payload_bytes": payload_bytes,
        "messages": opts.messages,
        "topics": opts.topics,
        "partitions": opts.partitions,
        "date": utc_now(),
        "mqtt_msgs_per_s": round(mqtt, 0),
        "kafka_msgs_per_s": round(kafka, 0),
        "kafka_client_cpu_s_per_million": round(get(Stage::Kafka).and_then(|r| r.client_cpu_s_per_million), 2),
        "kafka_own_p50_ms": round(kafka_lat.map(|l| l.p50), 1),
        "kafka_own_p99_ms": round(kafka_lat.map(|l| l.p99), 1),
        "brokers_msgs_per_s": round(brokers, 0),
        "brokers_ratio": round(ratio_to(brokers), 3),
        "bridge_delivered": bridge.map(|r| r.delivered),
        "bridge_missing": bridge.map(|r| opts.messages.saturating_sub(r.delivered)),
        "mqtt_delivered": get(Stage::Mqtt).map(|r| r.delivered),
        "complete": results.iter().all(|(_, r)| r.end == Some(End::Complete)),
        "max_in_flight": opts.max_in_flight,
        "batch_size": opts.batch_size,
        "producers": opts.producers,
        "publishers": opts.publishers,
        "persistent": opts.persistent,
        "warm_up": opts.warm_up,
        "rate": opts.rate,
    })
    .to_string()
}

// ---------------------------------------------------------------------------

fn main() {
    let opts = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("uns-kafka-bench: {e:#}");
            std::process::exit(2);
        }
    };
    if opts.stages.contains(&Stage::Bridge) && !opts.bin.is_file() {
        eprintln!(
            "uns-kafka-bench: the bridge binary {} does not exist: \
             cargo build --release -p uns-kafka (or pass --bin)",
            opts.bin.display()
        );
        std::process::exit(2);
    }
    // The harness's `Bridge::start` runs `$UNS_KAFKA_BIN`. Set before any
    // thread exists.
    std::env::set_var("UNS_KAFKA_BIN", &opts.bin);
    epoch();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(opts)) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("uns-kafka-bench: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn run(opts: Opts) -> anyhow::Result<()> {
    let payload_bytes = Workload::new(opts.kind, opts.qos, 1)
        .mean_payload_bytes(opts.messages)
        .round() as usize;
    eprintln!(
        "bench: {} messages, payload {} ({payload_bytes} B), qos {}, {} topics; mqtt {}:{}, kafka {}, bridge {}",
        opts.messages,
        opts.kind.name(),
        opts.qos,
        opts.topics,
        opts.mqtt_host,
        opts.mqtt_port,
        opts.kafka,
        opts.bin.display()
    );
    let mut created = Vec::new();
    let mut results = Vec::new();
    let mut failure = None;
    for stage in opts.stages.clone() {
        eprintln!("bench: [{}] starting", stage.label());
        let r = match stage {
            Stage::Mqtt => stage_mqtt(&opts, None).await,
            Stage::Kafka => stage_kafka(&opts, &mut created, None).await,
            Stage::Brokers => stage_brokers(&opts, &mut created).await,
            Stage::Bridge => stage_bridge(&opts, &mut created).await,
        };
        match r {
            Ok(r) => {
                eprintln!(
                    "bench: [{}] {} delivered in {:.2} s: {:.0} msg/s ({})",
                    stage.label(),
                    r.delivered,
                    r.secs,
                    r.msgs_per_s,
                    r.end.map_or("-", End::name)
                );
                results.push((stage, r));
            }
            Err(e) => {
                eprintln!("bench: [{}] failed: {e:#}", stage.label());
                failure = Some(e.context(format!("stage {}", stage.label())));
                break;
            }
        }
    }
    if !opts.keep_topics && !created.is_empty() {
        delete_topics(&opts, &created).await;
    }
    print_table(&opts, payload_bytes, &results);
    println!("{}", json_line(&opts, payload_bytes, &results));
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::{own_latency, side_by_side, tenths, End, StageResult};
    use std::collections::BTreeMap;

    fn buckets(counts: &[(&str, u64)]) -> BTreeMap<String, u64> {
        counts
            .iter()
            .map(|(le, n)| {
                (
                    format!("uns_kafka_delivery_seconds_bucket{{le=\"{le}\"}}"),
                    *n,
                )
            })
            .chain([("uns_kafka_messages_received_total".to_owned(), 999)])
            .collect()
    }

    #[test]
    fn own_latency_counts_only_what_the_measured_part_added() {
        // Before: 100 warm-up deliveries, all slow.
        let before = buckets(&[("0.01", 0), ("0.05", 0), ("1", 100), ("+Inf", 100)]);
        // After: 100 more, 60 within 10 ms, 99 within 50 ms, 1 within 1 s.
        let after = buckets(&[("0.01", 60), ("0.05", 99), ("1", 200), ("+Inf", 200)]);
        assert_eq!(own_latency(&before, &after), Some((10.0, 50.0)));
        // Nothing delivered in between: no figure rather than a wrong one.
        assert_eq!(own_latency(&after, &after), None);
        // Beyond the last finite bucket.
        let slow = buckets(&[("0.01", 0), ("0.05", 0), ("1", 100), ("+Inf", 110)]);
        assert_eq!(
            own_latency(&before, &slow),
            Some((f64::INFINITY, f64::INFINITY))
        );
    }

    #[test]
    fn both_brokers_count_what_went_through_both_over_the_slower_time() {
        let mqtt = StageResult {
            delivered: 1000,
            secs: 2.0,
            msgs_per_s: 500.0,
            mb_per_s: 0.1,
            end: Some(End::Complete),
            machine_busy_pct: Some(90.0),
            ..Default::default()
        };
        let kafka = StageResult {
            delivered: 800,
            secs: 4.0,
            msgs_per_s: 200.0,
            end: Some(End::Idle),
            machine_busy_pct: Some(99.0),
            errors: 3,
            ..Default::default()
        };
        let both = side_by_side(&mqtt, &kafka);
        assert_eq!(both.delivered, 800);
        assert_eq!(both.secs, 4.0);
        assert_eq!(both.msgs_per_s, 200.0);
        // MQTT payload bytes per message (0.1 MB/s / 500 msg/s) at 200 msg/s.
        assert!((both.mb_per_s - 0.04).abs() < 1e-12, "{}", both.mb_per_s);
        // The side that did not complete says how the row ended.
        assert_eq!(both.end, Some(End::Idle));
        assert_eq!(both.machine_busy_pct, Some(99.0));
        assert_eq!(both.errors, 3);
        assert_eq!(side_by_side(&kafka, &mqtt).end, Some(End::Idle));
    }

    #[test]
    fn tenths_pick_the_sample_ending_each_tenth() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(
            tenths(&samples),
            vec![10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0]
        );
        assert_eq!(tenths(&[3.0, 4.0]), vec![3.0, 4.0]);
        assert_eq!(
            tenths(&(1..=15).map(f64::from).collect::<Vec<_>>())[9],
            15.0
        );
    }
}
