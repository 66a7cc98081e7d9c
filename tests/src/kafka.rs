//! Kafka clients for tests: create topics, read back what the bridge
//! produced, and a producer for tests that write to Kafka themselves.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use crate::env::env;
use crate::unique;

/// One record as read back from Kafka.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// In record order; Kafka allows repeated names.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Milliseconds since the Unix epoch (create time).
    pub timestamp: Option<i64>,
}

impl Rec {
    fn from_message(m: &BorrowedMessage<'_>) -> Rec {
        let headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Rec {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
            timestamp: m.timestamp().to_millis(),
        }
    }

    /// The first header called `name`, as (lossy) UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The key as (lossy) UTF-8.
    pub fn key_str(&self) -> Option<String> {
        self.key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
    }

    /// The value as (lossy) UTF-8.
    pub fn value_str(&self) -> Option<String> {
        self.value
            .as_deref()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// The value parsed as JSON; panics (naming the record) if there is no
    /// value or it is not JSON.
    pub fn value_json(&self) -> serde_json::Value {
        let value = self.value.as_deref().unwrap_or_else(|| {
            panic!(
                "record {}/{}@{} has no value",
                self.topic, self.partition, self.offset
            )
        });
        serde_json::from_slice(value).unwrap_or_else(|e| {
            panic!(
                "record {}/{}@{} is not JSON ({e}): {}",
                self.topic,
                self.partition,
                self.offset,
                String::from_utf8_lossy(value)
            )
        })
    }
}

fn base_config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &env().kafka_bootstrap);
    c
}

/// A producer on the test Kafka (acks=all, idempotent, one request in
/// flight: the bridge's defaults, which keep records produced to a topic
/// created a moment ago from being lost; see host/src/config.rs).
pub fn producer() -> FutureProducer {
    base_config()
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("max.in.flight.requests.per.connection", "1")
        .set("linger.ms", "5")
        .create()
        .expect("create Kafka producer")
}

/// Creates topics (one replica each), ignoring ones that already exist, so a
/// test can subscribe before the bridge produces anything.
pub async fn create_topics(names: &[&str], partitions: i32) {
    create_topics_with(names, partitions, &[]).await
}

/// [`create_topics`] with topic configuration (`max.message.bytes`, ...).
pub async fn create_topics_with(names: &[&str], partitions: i32, config: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> =
        base_config().create().expect("create Kafka admin client");
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            config.iter().fold(
                NewTopic::new(n, partitions, TopicReplication::Fixed(1)),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&topics, &opts)
        .await
        .unwrap_or_else(|e| panic!("create topics {names:?}: {e}"));
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => panic!("create topic {name}: {code}"),
        }
    }
}

/// A consumer that reads every partition of its topics from the earliest
/// offset, so it sees every record whether it started before or after they
/// were produced.
///
/// It assigns partitions itself instead of joining a consumer group: the
/// bridge never uses groups, and a group's coordinator is one more broker
/// subsystem to recover after a fault test pauses or kills Kafka. (With a
/// group, a fresh consumer once read nothing for 300 s after Kafka's
/// SIGSTOP/SIGCONT while every record was in Kafka; most likely its group
/// never got a working coordinator, as in librdkafka#2944.) Topics are
/// found by polling the cluster's metadata, so ones created later are
/// picked up within ~500 ms.
pub struct Consumer {
    /// Replaced by a fresh client when this one reads nothing for
    /// [`STUCK_AFTER`] (see `collect`).
    inner: Mutex<Arc<StreamConsumer>>,
    topics: Vec<TopicMatch>,
    assignment: Mutex<Assignment>,
    /// (topic, partition, offset) already returned, so a record is counted
    /// once however it was read.
    seen: Mutex<HashSet<(String, i32, i64)>>,
}

#[derive(Default)]
struct Assignment {
    partitions: HashSet<(String, i32)>,
    /// When metadata was last read.
    checked_at: Option<Instant>,
}

/// What `Consumer::new` takes: a topic name, or `^prefix.*` for every topic
/// whose name starts with `prefix` (the only pattern the tests use; names
/// from `unique` hold no regex metacharacters but `-`).
enum TopicMatch {
    Name(String),
    Prefix(String),
}

impl TopicMatch {
    fn parse(topic: &str) -> TopicMatch {
        match topic.strip_prefix('^') {
            None => TopicMatch::Name(topic.to_owned()),
            Some(rest) => {
                let prefix = rest.strip_suffix(".*").unwrap_or_else(|| {
                    panic!("test consumer: only `^prefix.*` patterns are supported, got {topic:?}")
                });
                assert!(
                    !prefix.contains(['.', '*', '+', '?', '(', '[', '{', '|', '\\', '$', '^']),
                    "test consumer: {topic:?} is more than a prefix"
                );
                TopicMatch::Prefix(prefix.to_owned())
            }
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            TopicMatch::Name(n) => n == name,
            TopicMatch::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

/// How often `collect` looks for new topics and partitions.
const DISCOVERY_INTERVAL: Duration = Duration::from_millis(500);

/// How long `collect` waits for a record before it starts over with a
/// fresh client. After Kafka's SIGSTOP/SIGCONT a client made just then has
/// been seen to fail every metadata request (BrokerTransportFailure) for
/// 300 s while another process read every record: the test's reader, not
/// the bridge, was stuck. A fresh client reads from the beginning again;
/// what was already read is not counted twice (`seen`).
const STUCK_AFTER: Duration = Duration::from_secs(20);

fn reader_client() -> StreamConsumer {
    base_config()
        // librdkafka assigns only within a group's handle; the group is
        // never joined (nothing subscribes) and nothing is committed.
        .set("group.id", unique("e2e-reader"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("create Kafka consumer")
}

impl Consumer {
    /// Reads topic names and/or prefixes (`^prefix.*`). Topics that do not
    /// exist yet are picked up once created.
    pub fn new(topics: &[&str]) -> Consumer {
        let consumer = Consumer {
            inner: Mutex::new(Arc::new(reader_client())),
            topics: topics.iter().map(|t| TopicMatch::parse(t)).collect(),
            assignment: Mutex::default(),
            seen: Mutex::new(HashSet::new()),
        };
        consumer.discover();
        consumer
    }

    fn client(&self) -> Arc<StreamConsumer> {
        self.inner.lock().expect("consumer lock").clone()
    }

    /// Starts over with a fresh client, every partition assigned again.
    fn restart(&self) {
        eprintln!("kafka consumer: nothing read for {STUCK_AFTER:?}; starting a fresh client");
        *self.inner.lock().expect("consumer lock") = Arc::new(reader_client());
        *self.assignment.lock().expect("assignment lock") = Assignment::default();
    }

    /// Assigns, from the earliest offset, every partition of a matching
    /// topic not assigned yet. A failed metadata read is retried on the
    /// next call.
    fn discover(&self) {
        let mut assignment = self.assignment.lock().expect("assignment lock");
        if let Some(at) = assignment.checked_at {
            if at.elapsed() < DISCOVERY_INTERVAL {
                return;
            }
        }
        assignment.checked_at = Some(Instant::now());
        let client = self.client();
        let metadata = match client.fetch_metadata(None, Duration::from_secs(5)) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("kafka consumer: metadata: {e}");
                return;
            }
        };
        let mut new = TopicPartitionList::new();
        for topic in metadata.topics() {
            if topic.error().is_some() || !self.topics.iter().any(|t| t.matches(topic.name())) {
                continue;
            }
            for p in topic.partitions() {
                if assignment
                    .partitions
                    .insert((topic.name().to_owned(), p.id()))
                {
                    new.add_partition_offset(topic.name(), p.id(), Offset::Beginning)
                        .expect("offset of a new partition");
                }
            }
        }
        if new.count() > 0 {
            client
                .incremental_assign(&new)
                .unwrap_or_else(|e| panic!("assign {new:?}: {e}"));
        }
    }

    /// Reads until `n` records arrived or `timeout` passed; returns what it
    /// got (the test asserts the count).
    pub async fn collect(&self, n: usize, timeout: Duration) -> Vec<Rec> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n.min(16_384));
        let mut read_at = Instant::now();
        while out.len() < n {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                break;
            };
            if read_at.elapsed() >= STUCK_AFTER {
                self.restart();
                read_at = Instant::now();
            }
            self.discover();
            let client = self.client();
            match tokio::time::timeout(left.min(DISCOVERY_INTERVAL), client.recv()).await {
                Err(_) => continue,
                Ok(Ok(m)) => {
                    read_at = Instant::now();
                    let id = (m.topic().to_string(), m.partition(), m.offset());
                    if self.seen.lock().expect("seen lock").insert(id) {
                        out.push(Rec::from_message(&m));
                    }
                }
                Ok(Err(e)) => report(e),
            }
        }
        out
    }

    /// Reads everything that arrives within `duration` (to assert that
    /// nothing more, or nothing at all, comes).
    pub async fn collect_for(&self, duration: Duration) -> Vec<Rec> {
        self.collect(usize::MAX, duration).await
    }
}

/// Consumer errors are not the test's verdict: a topic that does not exist
/// yet is normal, anything else is printed for the post-mortem.
fn report(e: KafkaError) {
    match e {
        KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopicOrPartition)
        | KafkaError::MessageConsumption(RDKafkaErrorCode::UnknownTopic) => {}
        e => eprintln!("kafka consumer: {e}"),
    }
}
