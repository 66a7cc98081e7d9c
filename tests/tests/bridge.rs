//! The real `uns-kafka run` against the real brokers of `tests/brokers.sh`:
//! publish with an MQTT client, read back with a Kafka consumer, assert
//! topic, key, headers, timestamp and value.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use prost::Message as _;
use serde_json::json;
use uns_default::sparkplug::{self, payload::metric};
use uns_kafka_e2e::*;

const READY: Duration = Duration::from_secs(60);
const ARRIVE: Duration = Duration::from_secs(60);

/// A running bridge and the directory its configuration lives in, kept
/// for as long as the bridge may read it.
struct Setup {
    bridge: Bridge,
    _dir: ConfigDir,
}

/// A bridge configured for `topics` with `extra_mqtt` YAML lines under
/// `mqtt:`, dead-lettering to `dlq`.
fn settings(port: u16, topics: &[String], extra_mqtt: &str, dlq: &str) -> String {
    settings_with_kafka(port, topics, extra_mqtt, "", dlq)
}

/// [`settings`], with `extra_kafka` YAML lines under `kafka.config:`.
fn settings_with_kafka(
    port: u16,
    topics: &[String],
    extra_mqtt: &str,
    extra_kafka: &str,
    dlq: &str,
) -> String {
    let topics: Vec<String> = topics.iter().map(|t| format!("'{t}'")).collect();
    format!(
        "mqtt:\n  host: 127.0.0.1\n  port: {port}\n  topics: [{}]\n  qos: 1\n{extra_mqtt}\
         kafka:\n  config:\n    bootstrap.servers: '{}'\n    linger.ms: 5\n{extra_kafka}  \
         dead_letter_topic: '{dlq}'\n",
        topics.join(", "),
        env().kafka_bootstrap
    )
}

async fn start(settings_yaml: &str, secrets_yaml: Option<&str>) -> Setup {
    let dir = ConfigDir::new();
    dir.write_settings(settings_yaml);
    if let Some(s) = secrets_yaml {
        dir.write_secrets(s);
    }
    start_in(dir).await
}

/// Starts the bridge on a configuration directory written by the caller.
async fn start_in(dir: ConfigDir) -> Setup {
    let config = dir.path().to_string_lossy().into_owned();
    let component = component("uns-default").to_string_lossy().into_owned();
    let mut bridge = Bridge::start(["run", "--config", &config, "--component", &component], &[]);
    bridge.wait_ready(READY).await;
    Setup { bridge, _dir: dir }
}

/// `start` with the default settings plus `/health` and `/metrics` on a
/// free port, which it returns.
async fn start_with_health(topics: &[String], dlq: &str) -> (Setup, u16) {
    let port = free_port();
    let yaml = format!(
        "{}bridge:\n  health_listen: '127.0.0.1:{port}'\n",
        settings(env().mqtt_port, topics, "", dlq)
    );
    (start(&yaml, None).await, port)
}

/// Publishes `value` to `<p>/m` at `qos`, checks that exactly it arrives on
/// `consumer`, and that SIGTERM then ends the bridge with 0: the whole of a
/// session test once its connections are set up. Returns the record and
/// the bridge's log.
async fn one_message_crosses(
    mut s: Setup,
    publisher: MqttClient,
    consumer: &Consumer,
    p: &str,
    value: serde_json::Value,
    qos: u8,
) -> (Rec, String) {
    publisher
        .publish(&format!("{p}/m"), value.to_string(), qos, false)
        .await;
    publisher.wait_acked(ARRIVE).await;
    let mut got = consumer.collect(1, ARRIVE).await;
    assert_eq!(got.len(), 1, "log:\n{}", s.bridge.log());
    assert_eq!(got[0].value_json(), value);
    publisher.disconnect().await;
    let status = s.bridge.terminate(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", s.bridge.log());
    (got.remove(0), s.bridge.log())
}

/// Publishes a payload that is not JSON to `bad`, then `{"value": 2}` to
/// `good`, both QoS 1, and waits until the broker has acknowledged both.
async fn publish_bad_then_good(bad: &str, good: &str) -> MqttClient {
    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    publisher.publish(bad, "{\"value\": 1,", 1, false).await;
    publisher
        .publish(good, json!({"value": 2}).to_string(), 1, false)
        .await;
    publisher.wait_acked(ARRIVE).await;
    publisher
}

/// For a test of what is dead-lettered under prefix `p`: the dead-letter
/// topic and the MQTT topic of a good message (`<p>/line/good`), both Kafka
/// topics created, and a consumer of each.
async fn dlq_and_good(p: &str) -> (String, String, Consumer, Consumer) {
    let dlq = format!("{p}-dlq");
    let k_good = format!("{p}_line_good");
    create_topics(&[&dlq, &k_good], 1).await;
    let (dlq_consumer, good_consumer) = (Consumer::new(&[&dlq]), Consumer::new(&[&k_good]));
    (dlq, format!("{p}/line/good"), dlq_consumer, good_consumer)
}

fn headers(rec: &Rec) -> BTreeMap<String, String> {
    rec.headers
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_cases_json_abc_and_sparkplug_nbirth() {
    let p = unique("seed");
    let group = unique("grp");
    let json_topic = format!("{p}/a/b/c");
    let plain_topic = format!("abc{p}");
    let birth_topic = format!("spBv1.0/{group}/NBIRTH/eon1");
    let kafka_json = format!("{p}_a_b_c");
    let kafka_plain = plain_topic.clone();
    let kafka_birth = format!("spBv1.0_{group}_NBIRTH_eon1");
    create_topics(&[&kafka_json, &kafka_plain, &kafka_birth], 3).await;
    let consumer = Consumer::new(&[&kafka_json, &kafka_plain, &kafka_birth]);

    let dlq = format!("{p}-dlq");
    let mut s = start(
        &settings(
            env().mqtt_port,
            &[
                json_topic.clone(),
                plain_topic.clone(),
                format!("spBv1.0/{group}/#"),
            ],
            "",
            &dlq,
        ),
        None,
    )
    .await;

    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    publisher
        .publish_with_properties(
            &json_topic,
            json!({"timestamp": 1_700_000_000_123_i64, "temperature": 21.5, "unit": "C"})
                .to_string(),
            1,
            false,
            Some("application/json"),
            &[("site", "plant-1")],
        )
        .await;
    publisher
        .publish(&plain_topic, json!({"value": 42}).to_string(), 1, false)
        .await;
    let birth = sparkplug::Payload {
        timestamp: Some(1_700_000_000_999),
        seq: Some(0),
        metrics: vec![
            sparkplug::payload::Metric {
                name: Some("bdSeq".into()),
                datatype: Some(sparkplug::datatype::INT64),
                value: Some(metric::Value::LongValue(7)),
                ..Default::default()
            },
            sparkplug::payload::Metric {
                name: Some("Temperature".into()),
                datatype: Some(sparkplug::datatype::DOUBLE),
                value: Some(metric::Value::DoubleValue(21.25)),
                ..Default::default()
            },
            sparkplug::payload::Metric {
                name: Some("Offset".into()),
                datatype: Some(sparkplug::datatype::INT8),
                value: Some(metric::Value::IntValue((-5i8) as u8 as u32)),
                ..Default::default()
            },
            sparkplug::payload::Metric {
                name: Some("Running".into()),
                datatype: Some(sparkplug::datatype::BOOLEAN),
                value: Some(metric::Value::BooleanValue(true)),
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    publisher
        .publish(&birth_topic, birth.encode_to_vec(), 1, false)
        .await;
    publisher.wait_acked(ARRIVE).await;

    let records = consumer.collect(3, ARRIVE).await;
    assert_eq!(
        records.len(),
        3,
        "records: {records:#?}\nlog:\n{}",
        s.bridge.log()
    );
    let by_topic: BTreeMap<String, Rec> =
        records.into_iter().map(|r| (r.topic.clone(), r)).collect();

    let r = &by_topic[&kafka_json];
    assert_eq!(r.key_str().as_deref(), Some(json_topic.as_str()));
    assert_eq!(r.timestamp, Some(1_700_000_000_123));
    assert_eq!(
        r.value_json(),
        json!({"timestamp": 1_700_000_000_123_i64, "temperature": 21.5, "unit": "C"})
    );
    let h = headers(r);
    assert_eq!(h["mqtt_topic"], json_topic);
    assert_eq!(h["mqtt_qos"], "1");
    assert_eq!(h["mqtt_retain"], "false");
    assert_eq!(h["mqtt_content_type"], "application/json");
    assert_eq!(h["site"], "plant-1");
    assert_eq!(h["transform_name"], "uns-default");
    assert!(!h["transform_version"].is_empty());

    let r = &by_topic[&kafka_plain];
    assert_eq!(r.key_str().as_deref(), Some(plain_topic.as_str()));
    assert_eq!(r.value_json(), json!({"value": 42}));
    // No timestamp attribute: the time the bridge received it.
    let ts = r.timestamp.expect("timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        (now - ts).abs() < 120_000,
        "timestamp {ts} is not recent ({now})"
    );

    let r = &by_topic[&kafka_birth];
    assert_eq!(r.key_str().as_deref(), Some(birth_topic.as_str()));
    assert_eq!(r.timestamp, Some(1_700_000_000_999));
    let v = r.value_json();
    assert_eq!(v["timestamp"], json!(1_700_000_000_999_i64));
    assert_eq!(v["seq"], json!(0));
    let metrics = v["metrics"].as_array().expect("metrics");
    let value_of = |name: &str| {
        metrics
            .iter()
            .find(|m| m["name"] == json!(name))
            .map(|m| m["value"].clone())
            .unwrap_or_else(|| panic!("metric {name} missing in {v}"))
    };
    assert_eq!(value_of("bdSeq"), json!(7));
    assert_eq!(value_of("Temperature"), json!(21.25));
    assert_eq!(value_of("Offset"), json!(-5));
    assert_eq!(value_of("Running"), json!(true));

    publisher.disconnect().await;
    let status = s.bridge.terminate(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", s.bridge.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn ignored_attributes_follow_mqtt_wildcards() {
    let p = unique("ign");
    let dlq = format!("{p}-dlq");
    let extra = format!(
        "  ignored_attributes:\n    '{p}/+/sensor': ['secret', 'nested.drop']\n    '{p}/#': 'debug'\n"
    );
    let sensor = format!("{p}/x/sensor");
    let other = format!("{p}/x/y/other");
    let k_sensor = format!("{p}_x_sensor");
    let k_other = format!("{p}_x_y_other");
    create_topics(&[&k_sensor, &k_other], 3).await;
    let consumer = Consumer::new(&[&k_sensor, &k_other]);
    let mut s = start(
        &settings(env().mqtt_port, &[format!("{p}/#")], &extra, &dlq),
        None,
    )
    .await;

    let body = json!({"v": 1, "secret": "s3cr3t", "debug": true, "nested": {"drop": 1, "keep": 2}});
    publish(env().mqtt_port, &sensor, body.to_string(), 1, false).await;
    publish(env().mqtt_port, &other, body.to_string(), 1, false).await;

    let records = consumer.collect(2, ARRIVE).await;
    assert_eq!(records.len(), 2, "log:\n{}", s.bridge.log());
    let topics: std::collections::BTreeSet<&str> =
        records.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(topics, [k_sensor.as_str(), k_other.as_str()].into());
    for r in records {
        if r.topic == k_sensor {
            assert_eq!(r.value_json(), json!({"v": 1, "nested": {"keep": 2}}));
        } else {
            assert_eq!(r.topic, k_other);
            // `+` matches one level only: the sensor rule does not apply.
            assert_eq!(
                r.value_json(),
                json!({"v": 1, "secret": "s3cr3t", "nested": {"drop": 1, "keep": 2}})
            );
        }
    }
    assert_eq!(
        s.bridge.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_json_goes_to_the_dead_letter_topic_with_its_reason() {
    let p = unique("dlq");
    let bad_topic = format!("{p}/line/bad");
    let (dlq, good_topic, dlq_consumer, good_consumer) = dlq_and_good(&p).await;
    let mut s = start(
        &settings(env().mqtt_port, &[format!("{p}/#")], "", &dlq),
        None,
    )
    .await;

    let publisher = publish_bad_then_good(&bad_topic, &good_topic).await;

    let dead = dlq_consumer.collect(1, ARRIVE).await;
    assert_eq!(dead.len(), 1, "log:\n{}", s.bridge.log());
    let r = &dead[0];
    assert_eq!(r.value.as_deref(), Some(&b"{\"value\": 1,"[..]));
    assert_eq!(r.key_str().as_deref(), Some(bad_topic.as_str()));
    let h = headers(r);
    assert_eq!(h["mqtt_topic"], bad_topic);
    assert_eq!(h["dlq_error_kind"], "decode");
    assert_eq!(h["dlq_stage"], "transform");
    assert!(
        h["dlq_reason"].to_lowercase().contains("json"),
        "reason should say what was wrong: {:?}",
        h["dlq_reason"]
    );
    // The bad message does not hold up the next one.
    let good = good_consumer.collect(1, ARRIVE).await;
    assert_eq!(good.len(), 1);
    assert_eq!(good[0].value_json(), json!({"value": 2}));
    // Nothing else in the dead-letter topic.
    assert!(dlq_consumer
        .collect_for(Duration::from_secs(2))
        .await
        .is_empty());
    publisher.disconnect().await;
    assert_eq!(
        s.bridge.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );
}

/// Kafka checks a topic's `max.message.bytes` against whole batches, and
/// librdkafka fails every record of a refused batch rather than split it:
/// records far below the limit, packed together, came back "too large".
/// Each is produced again alone, and only one too large by itself goes to
/// the dead-letter topic; dead letters packed together the same way keep
/// their payloads.
#[tokio::test(flavor = "multi_thread")]
async fn small_records_of_a_batch_too_large_for_their_topic_all_arrive() {
    let p = unique("batchsize");
    let (dlq, k_small) = (format!("{p}-dlq"), format!("{p}_small"));
    create_topics_with(&[&dlq], 1, &[("max.message.bytes", "9000")]).await;
    create_topics_with(&[&k_small], 1, &[("max.message.bytes", "4000")]).await;
    let consumer = Consumer::new(&[&k_small]);
    let dlq_consumer = Consumer::new(&[&dlq]);
    // A long linger, so that the burst below is packed into batches.
    let port = free_port();
    let yaml = settings_with_kafka(
        env().mqtt_port,
        &[format!("{p}/#")],
        "",
        "    linger.ms: 200\n",
        &dlq,
    )
    .replace("    linger.ms: 5\n", "")
        + &format!("bridge:\n  health_listen: '127.0.0.1:{port}'\n");
    let mut s = start(&yaml, None).await;
    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    let filler = "x".repeat(500);
    for i in 0..40 {
        publisher
            .publish(
                &format!("{p}/small"),
                json!({"seq": i, "filler": filler}).to_string(),
                1,
                false,
            )
            .await;
    }
    // One too large on its own.
    publisher
        .publish(
            &format!("{p}/small"),
            json!({"seq": 40, "filler": "y".repeat(5000)}).to_string(),
            1,
            false,
        )
        .await;
    // Ten that are not JSON: 15 KB of dead letters at once.
    for i in 0..10 {
        publisher
            .publish(
                &format!("{p}/bad"),
                format!("{{\"bad\": {i}, {}", "z".repeat(1500)),
                1,
                false,
            )
            .await;
    }
    publisher.wait_acked(ARRIVE).await;
    let mut got = consumer.collect(40, ARRIVE).await;
    got.extend(consumer.collect_for(Duration::from_secs(2)).await);
    let mut seqs: Vec<i64> = got
        .iter()
        .map(|r| r.value_json()["seq"].as_i64().unwrap_or(-1))
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (0..40).collect::<Vec<i64>>(),
        "log {}",
        s.bridge.log_path().display()
    );
    let mut dead = dlq_consumer.collect(11, ARRIVE).await;
    dead.extend(dlq_consumer.collect_for(Duration::from_secs(2)).await);
    assert_eq!(dead.len(), 11, "log:\n{}", s.bridge.log());
    let big: Vec<&Rec> = dead
        .iter()
        .filter(|r| headers(r)["mqtt_topic"] == format!("{p}/small"))
        .collect();
    assert_eq!(big.len(), 1);
    assert!(headers(big[0])["dlq_reason"].contains("too large"));
    for r in &dead {
        let h = headers(r);
        let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
        assert!(
            !h.contains_key("dlq_payload_dropped")
                && (value.contains("\"seq\":40") || value.starts_with("{\"bad\": ")),
            "{h:?}"
        );
    }
    let metrics = metrics_with(port, &["uns_kafka_messages_acknowledged_total 51"]).await;
    assert!(
        metrics.contains("uns_kafka_messages_dead_lettered_total 11")
            && metrics.contains("uns_kafka_messages_lost_total 0"),
        "{metrics}"
    );
    // Records went alone: the 40 small ones once Kafka refused the batch
    // the burst made in one linger, and dead letters refused the same way
    // (this bound does not tell the two apart; the records' arrival above
    // is what shows the small ones were not dead-lettered).
    assert!(
        metric_value(&metrics, "uns_kafka_records_sent_alone_total") >= 40,
        "{metrics}"
    );
    assert!(
        s.bridge
            .log()
            .contains("keep batch.size in kafka.config below"),
        "log:\n{}",
        s.bridge.log()
    );
    publisher.disconnect().await;
    assert_eq!(
        s.bridge.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );
}

/// A record for a topic Kafka does not have, on a cluster that will not
/// create it, goes to the dead-letter topic once librdkafka stops waiting
/// for the topic (`topic.metadata.propagation.max.ms`), with a reason that
/// names the topic and the remedy; the next message is not held up.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_for_a_topic_kafka_does_not_have_is_dead_lettered_with_the_remedy() {
    let p = unique("notopic");
    let missing_topic = format!("{p}/line/missing");
    let k_missing = format!("{p}_line_missing");
    let (dlq, good_topic, dlq_consumer, good_consumer) = dlq_and_good(&p).await;
    // The test broker creates topics on demand; the producer can tell it
    // not to, as a cluster with auto.create.topics.enable=false would.
    let yaml = settings_with_kafka(
        env().mqtt_port,
        &[format!("{p}/#")],
        "",
        "    allow.auto.create.topics: false\n    topic.metadata.propagation.max.ms: 2000\n",
        &dlq,
    );
    let mut s = start(&yaml, None).await;

    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    publisher
        .publish(&missing_topic, json!({"value": 1}).to_string(), 1, false)
        .await;
    publisher
        .publish(&good_topic, json!({"value": 2}).to_string(), 1, false)
        .await;
    publisher.wait_acked(ARRIVE).await;

    let dead = dlq_consumer.collect(1, ARRIVE).await;
    assert_eq!(dead.len(), 1, "log:\n{}", s.bridge.log());
    let h = headers(&dead[0]);
    assert_eq!(h["mqtt_topic"], missing_topic);
    assert_eq!(h["dlq_error_kind"], "kafka-rejected");
    assert_eq!(h["dlq_stage"], "produce");
    assert!(
        h["dlq_reason"].contains(&format!("{k_missing:?}"))
            && h["dlq_reason"].contains("the topic does not exist in Kafka"),
        "reason should name the topic and the remedy: {:?}",
        h["dlq_reason"]
    );
    assert_eq!(dead[0].value_json(), json!({"value": 1}));
    let good = good_consumer.collect(1, ARRIVE).await;
    assert_eq!(good.len(), 1, "log:\n{}", s.bridge.log());
    assert_eq!(good[0].value_json(), json!({"value": 2}));
    publisher.disconnect().await;
    assert_eq!(
        s.bridge.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );
}

/// What a component author's bugs cost, through the real brokers: each
/// message is dead-lettered with a reason that helps and fits. A panic's
/// message (written to the sandbox's stderr) is in the reason; a 2 MiB
/// error message is cut to a few KiB, where uncut it made the dead-letter
/// record too large for Kafka and the message was lost; a record for a
/// topic name Kafka refuses is `invalid-topic`, and none of that
/// message's records is produced, not even its good ones.
#[tokio::test(flavor = "multi_thread")]
async fn component_bugs_are_dead_lettered_with_a_reason_that_says_why_and_fits() {
    let p = unique("authorbugs");
    let (dlq, good_topic, dlq_consumer, good_consumer) = dlq_and_good(&p).await;
    let dir = ConfigDir::new();
    dir.write_settings(&settings(env().mqtt_port, &[format!("{p}/#")], "", &dlq));
    let config = dir.path().to_string_lossy().into_owned();
    let faulty = component("test-faulty").to_string_lossy().into_owned();
    let mut bridge = Bridge::start(["run", "--config", &config, "--component", &faulty], &[]);
    bridge.wait_ready(READY).await;

    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    for payload in ["huge-error", "trap", "bad-topic"] {
        publisher
            .publish(&format!("{p}/line/{payload}"), payload, 1, false)
            .await;
    }
    // One good record and one for a bad topic: neither is produced, so
    // the good topic gets only "fine".
    publisher
        .publish(&good_topic, "half-bad-topic", 1, false)
        .await;
    publisher.publish(&good_topic, "fine", 1, false).await;
    publisher.wait_acked(ARRIVE).await;

    let dead = dlq_consumer.collect(4, ARRIVE).await;
    assert_eq!(dead.len(), 4, "log:\n{}", bridge.log());
    let by_payload: BTreeMap<String, BTreeMap<String, String>> = dead
        .iter()
        .map(|r| (r.value_str().unwrap_or_default(), headers(r)))
        .collect();
    let huge = &by_payload["huge-error"];
    assert_eq!(huge["dlq_error_kind"], "rejected");
    assert!(
        huge["dlq_reason"].len() <= 4096
            && huge["dlq_reason"].starts_with("rejected: xxx")
            && huge["dlq_reason"].ends_with(" more bytes cut)"),
        "{} bytes: ...{}",
        huge["dlq_reason"].len(),
        &huge["dlq_reason"][huge["dlq_reason"].len().saturating_sub(60)..]
    );
    let trap = &by_payload["trap"];
    assert_eq!(trap["dlq_error_kind"], "trap");
    assert!(
        trap["dlq_reason"].contains("panicked at components/test-faulty/src/lib.rs:")
            && trap["dlq_reason"].contains("asked to trap"),
        "{}",
        trap["dlq_reason"]
    );
    let bad_topic = &by_payload["bad-topic"];
    assert_eq!(bad_topic["dlq_error_kind"], "invalid-topic");
    assert!(
        bad_topic["dlq_reason"].contains(&format!("\"bad topic {p}/line/bad-topic\"")),
        "{}",
        bad_topic["dlq_reason"]
    );
    assert_eq!(
        by_payload["half-bad-topic"]["dlq_error_kind"],
        "invalid-topic"
    );
    let good = good_consumer.collect(1, ARRIVE).await;
    assert_eq!(good.len(), 1, "log:\n{}", bridge.log());
    assert_eq!(good[0].value.as_deref(), Some(&b"fine"[..]));
    assert!(good_consumer
        .collect_for(Duration::from_secs(2))
        .await
        .is_empty());
    assert!(!bridge.log().contains("is lost"), "{}", bridge.log());
    publisher.disconnect().await;
    assert_eq!(
        bridge.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );
}

/// A message the component turns into no records is acknowledged and
/// counted as such, and nowhere else: not as a record, and not in the
/// delivery histogram, where a component that filters most traffic out
/// would make the p99 read near 0 while real records take seconds.
#[tokio::test(flavor = "multi_thread")]
async fn a_message_filtered_out_is_acknowledged_and_not_timed() {
    let p = unique("filtered");
    let (dlq, good_topic, dlq_consumer, good_consumer) = dlq_and_good(&p).await;
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write_settings(&format!(
        "{}bridge:\n  health_listen: '127.0.0.1:{port}'\n",
        settings(env().mqtt_port, &[format!("{p}/#")], "", &dlq)
    ));
    let config = dir.path().to_string_lossy().into_owned();
    let faulty = component("test-faulty").to_string_lossy().into_owned();
    let mut bridge = Bridge::start(["run", "--config", &config, "--component", &faulty], &[]);
    bridge.wait_ready(READY).await;

    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    for payload in ["drop", "drop", "fine"] {
        publisher.publish(&good_topic, payload, 1, false).await;
    }
    publisher.wait_acked(ARRIVE).await;
    let good = good_consumer.collect(1, ARRIVE).await;
    assert_eq!(good.len(), 1, "log:\n{}", bridge.log());
    assert_eq!(good[0].value.as_deref(), Some(&b"fine"[..]));
    let metrics = metrics_with(port, &["uns_kafka_messages_acknowledged_total 3"]).await;
    for (name, value) in [
        ("uns_kafka_messages_received_total", 3),
        ("uns_kafka_records_produced_total", 1),
        ("uns_kafka_records_confirmed_total", 1),
        ("uns_kafka_messages_dead_lettered_total", 0),
        ("uns_kafka_delivery_seconds_count", 1),
    ] {
        assert_eq!(metric_value(&metrics, name), value, "{name}\n{metrics}");
    }
    assert!(good_consumer
        .collect_for(Duration::from_secs(1))
        .await
        .is_empty());
    assert!(dlq_consumer
        .collect_for(Duration::from_secs(1))
        .await
        .is_empty());
    publisher.disconnect().await;
    assert_eq!(
        bridge.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );
}

/// A dead-letter topic that refuses every record (here Kafka's internal
/// offsets topic, as one without write permission would): the bad message
/// is logged and counted as lost, not as dead-lettered, and the bridge
/// goes on with the next one.
#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_topic_that_refuses_records_counts_the_message_lost() {
    let p = unique("lost");
    let good_topic = format!("{p}/line/good");
    let k_good = format!("{p}_line_good");
    create_topics(&[&k_good], 1).await;
    let good_consumer = Consumer::new(&[&k_good]);
    let (mut s, port) = start_with_health(&[format!("{p}/#")], "__consumer_offsets").await;

    let publisher = publish_bad_then_good(&format!("{p}/line/bad"), &good_topic).await;

    let good = good_consumer.collect(1, ARRIVE).await;
    assert_eq!(good.len(), 1, "log:\n{}", s.bridge.log());
    assert_eq!(good[0].value_json(), json!({"value": 2}));
    let metrics = metrics_with(port, &["uns_kafka_messages_acknowledged_total 2"]).await;
    assert!(
        metrics.contains("uns_kafka_messages_lost_total 1")
            && metrics.contains("uns_kafka_messages_dead_lettered_total 0"),
        "{metrics}"
    );
    assert!(
        s.bridge
            .log()
            .contains("cannot write to the dead-letter topic; the message is lost"),
        "log:\n{}",
        s.bridge.log()
    );
    publisher.disconnect().await;
    assert_eq!(
        s.bridge.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );
    // The last line an operator reads names the loss too.
    assert!(
        s.bridge
            .log()
            .contains("dead_lettered=0 lost=1 acknowledged=2"),
        "log:\n{}",
        s.bridge.log()
    );
}

/// A lost message is acknowledged like a delivered one, but nothing of it
/// reached Kafka: a bridge that loses every message it gets must not
/// answer `ready` (it did, as `acknowledged` kept rising).
#[tokio::test(flavor = "multi_thread")]
async fn a_bridge_losing_every_message_is_not_healthy() {
    let p = unique("losing");
    let port = free_port();
    let yaml = format!(
        "{}bridge:\n  health_listen: '127.0.0.1:{port}'\n  health_stall_timeout_ms: 1000\n",
        settings(
            env().mqtt_port,
            &[format!("{p}/#")],
            "",
            "__consumer_offsets"
        )
    );
    let mut s = start(&yaml, None).await;
    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    // Bad JSON, which the dead-letter topic refuses too, every 100 ms
    // until /health says so (or 15 s).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let (code, body) = loop {
        publisher
            .publish(&format!("{p}/line/bad"), "{\"value\": 1,", 1, false)
            .await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (code, body) = health(port);
        if code != "200" || std::time::Instant::now() > deadline {
            break (code, body);
        }
    };
    assert_eq!(code, "503", "{body}\nlog:\n{}", s.bridge.log());
    assert!(
        body.starts_with("stalled: no message delivered to Kafka for ")
            && body.contains(" lost (Kafka refused their records and their dead letters)"),
        "{body}"
    );
    let metrics = metrics_with(port, &["uns_kafka_messages_dead_lettered_total 0"]).await;
    assert!(
        metric_value(&metrics, "uns_kafka_messages_lost_total") >= 2,
        "{metrics}"
    );
    publisher.disconnect().await;
    assert_eq!(
        s.bridge.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );
}

/// Publishes `per_topic` JSON messages `{"seq": i, "topic": t}` to each of
/// `topics` in turn (`<prefix>/<name><t>`), then waits for the broker's
/// acknowledgements.
async fn publish_round_robin(prefix: &str, name: &str, topics: usize, per_topic: usize, qos: u8) {
    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    for i in 0..per_topic {
        for t in 0..topics {
            let payload = json!({"seq": i, "topic": t}).to_string();
            publisher
                .publish(&format!("{prefix}/{name}{t}"), payload, qos, false)
                .await;
        }
    }
    publisher.wait_acked(Duration::from_secs(120)).await;
    publisher.disconnect().await;
}

/// Every topic got `0..per_topic` exactly once and in order; on failure
/// the message names what is missing where, and the bridge log.
fn assert_each_topic_in_order(records: &[Rec], topics: usize, per_topic: usize, bridge: &Bridge) {
    let mut per_topic_seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in records {
        let seq = r.value_json()["seq"].as_u64().expect("seq");
        per_topic_seqs.entry(r.topic.clone()).or_default().push(seq);
    }
    let expected: Vec<u64> = (0..per_topic as u64).collect();
    let wrong: Vec<String> = per_topic_seqs
        .iter()
        .filter(|(_, seqs)| **seqs != expected)
        .map(|(topic, seqs)| {
            let missing: Vec<u64> = expected
                .iter()
                .filter(|s| !seqs.contains(s))
                .copied()
                .collect();
            format!(
                "{topic}: missing {missing:?}, got {} in order {:?}",
                seqs.len(),
                seqs.is_sorted()
            )
        })
        .collect();
    assert!(
        records.len() == topics * per_topic && per_topic_seqs.len() == topics && wrong.is_empty(),
        "{} of {} records in {} of {} topics; wrong: {wrong:?}; log: {}",
        records.len(),
        topics * per_topic,
        per_topic_seqs.len(),
        topics,
        bridge.log_path().display()
    );
}

/// Kafka topics `<p>_t0..` (3 partitions each) for the MQTT topics
/// `<p>/t0..`, a dead-letter topic name, and a consumer already reading
/// them; `p` is a fresh prefix from `name`.
async fn numbered_topics(name: &str, topics: usize) -> (String, String, Consumer) {
    let p = unique(name);
    let dlq = format!("{p}-dlq");
    let kafka_topics: Vec<String> = (0..topics).map(|t| format!("{p}_t{t}")).collect();
    let names: Vec<&str> = kafka_topics.iter().map(String::as_str).collect();
    create_topics(&names, 3).await;
    let consumer = Consumer::new(&[&format!("^{p}_t.*")]);
    (p, dlq, consumer)
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_qos1_messages_over_100_topics_exactly_once_in_order() {
    const TOPICS: usize = 100;
    const PER_TOPIC: usize = 100;
    let (p, dlq, consumer) = numbered_topics("load", TOPICS).await;
    let mut s = start(
        &settings(env().mqtt_port, &[format!("{p}/#")], "", &dlq),
        None,
    )
    .await;

    publish_round_robin(&p, "t", TOPICS, PER_TOPIC, 1).await;
    let records = consumer
        .collect(TOPICS * PER_TOPIC, Duration::from_secs(180))
        .await;
    let extra = consumer.collect_for(Duration::from_secs(3)).await;
    assert!(
        extra.is_empty(),
        "{} duplicate or unexpected records",
        extra.len()
    );
    assert_each_topic_in_order(&records, TOPICS, PER_TOPIC, &s.bridge);
    assert_eq!(
        s.bridge.terminate(Duration::from_secs(60)).await.code(),
        Some(0)
    );
}

/// A QoS 0 burst past a small in-flight window ends with messages waiting in
/// the reader's buffer and a quiet connection. QoS 0 writes no
/// acknowledgement, so nothing wakes a reader blocked on the connection: the
/// tail must still go on as soon as the pipeline has room, not at the next
/// packet (the keep-alive, a minute later).
#[tokio::test(flavor = "multi_thread")]
async fn qos0_burst_past_the_window_arrives_without_more_traffic() {
    const TOPICS: usize = 10;
    const PER_TOPIC: usize = 300;
    let (p, dlq, consumer) = numbered_topics("qos0burst", TOPICS).await;
    let yaml = settings(env().mqtt_port, &[format!("{p}/#")], "", &dlq).replace("qos: 1", "qos: 0")
        + "bridge:\n  max_in_flight: 20\n";
    let mut s = start(&yaml, None).await;

    // Everything written out before it returns.
    publish_round_robin(&p, "t", TOPICS, PER_TOPIC, 0).await;
    // Inside the 60 s keep-alive that would otherwise release them, with
    // room for a loaded machine: 150 rounds of 20 messages through Kafka
    // (20 s once fell short beside the other tests).
    let records = consumer
        .collect(TOPICS * PER_TOPIC, Duration::from_secs(45))
        .await;
    assert_each_topic_in_order(&records, TOPICS, PER_TOPIC, &s.bridge);
    assert_eq!(
        s.bridge.terminate(Duration::from_secs(60)).await.code(),
        Some(0)
    );
}

/// Topics created just before their first records: the broker has them in
/// its metadata (leader known) some time before it has set up every
/// partition's log, and meanwhile refuses produce requests with
/// NOT_LEADER_OR_FOLLOWER. A refused request may be followed by one already
/// in flight that lands once the log exists; a broker before 4.5
/// (KAFKA-15591) takes that later batch as the producer's first, and
/// librdkafka then reports the refused records as delivered: lost, unless
/// the producer keeps one request in flight per connection.
#[tokio::test(flavor = "multi_thread")]
async fn records_for_topics_created_a_moment_ago_all_arrive_in_order() {
    const TOPICS: usize = 300;
    const PER_TOPIC: usize = 30;
    let p = unique("fresh");
    let dlq = format!("{p}-dlq");
    let mut s = start(
        &settings(env().mqtt_port, &[format!("{p}/#")], "", &dlq),
        None,
    )
    .await;
    let kafka_topics: Vec<String> = (0..TOPICS).map(|t| format!("{p}_n{t}")).collect();
    let names: Vec<&str> = kafka_topics.iter().map(String::as_str).collect();
    create_topics(&names, 3).await;
    publish_round_robin(&p, "n", TOPICS, PER_TOPIC, 1).await;

    let consumer = Consumer::new(&[&format!("^{p}_n.*")]);
    let records = consumer
        .collect(TOPICS * PER_TOPIC, Duration::from_secs(180))
        .await;
    assert_each_topic_in_order(&records, TOPICS, PER_TOPIC, &s.bridge);
    assert_eq!(
        s.bridge.terminate(Duration::from_secs(60)).await.code(),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn mqtt_311_session() {
    let p = unique("v311");
    let dlq = format!("{p}-dlq");
    let k = format!("{p}_m");
    create_topics(&[&k], 1).await;
    let consumer = Consumer::new(&[&k]);
    let s = start(
        // Subscribed at QoS 2, so a QoS 2 publish arrives as QoS 2.
        &settings(env().mqtt_port, &[format!("{p}/#")], "  version: 4\n", &dlq)
            .replace("qos: 1", "qos: 2"),
        None,
    )
    .await;
    let publisher = MqttClient::connect(MqttConnect::anonymous().version(MqttVersion::V311))
        .await
        .unwrap();
    let (got, _) = one_message_crosses(s, publisher, &consumer, &p, json!({"v": 311}), 2).await;
    assert_eq!(headers(&got)["mqtt_qos"], "2");
}

#[tokio::test(flavor = "multi_thread")]
async fn username_and_password_session() {
    let p = unique("auth");
    let dlq = format!("{p}-dlq");
    let k = format!("{p}_m");
    create_topics(&[&k], 1).await;
    let consumer = Consumer::new(&[&k]);
    let e = env();
    let s = start(
        &settings(e.mqtt_auth_port, &[format!("{p}/#")], "", &dlq),
        Some(&format!(
            "dynaconf_merge: true\nmqtt:\n  username: '{}'\n  password: '{}'\n",
            e.mqtt_user, e.mqtt_password
        )),
    )
    .await;
    let publisher = MqttClient::connect(MqttConnect::authenticated())
        .await
        .unwrap();
    let (_, log) = one_message_crosses(s, publisher, &consumer, &p, json!({"v": "auth"}), 1).await;
    assert!(
        !log.contains(&e.mqtt_password),
        "password leaked into the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_is_a_clear_startup_error() {
    let p = unique("badauth");
    let dir = ConfigDir::new();
    dir.write_settings(&settings(
        env().mqtt_auth_port,
        &[format!("{p}/#")],
        "",
        "dlq-x",
    ));
    dir.write_secrets("mqtt:\n  username: uns\n  password: wrong-password\n");
    let log = mqtt_refuses_the_bridge(&dir).await;
    assert!(log.contains("refused"), "log:\n{log}");
    assert!(!log.contains("wrong-password"), "password leaked:\n{log}");
}

/// Runs the bridge with `dir` until it exits, which it must do with 1 (the
/// MQTT broker would not have it) without ever being ready; the log.
async fn mqtt_refuses_the_bridge(dir: &ConfigDir) -> String {
    let config = dir.path().to_string_lossy().into_owned();
    let component = component("uns-default").to_string_lossy().into_owned();
    let out = run_to_exit(
        ["run", "--config", &config, "--component", &component],
        &[],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(out.code(), Some(1), "log:\n{}", out.log);
    assert!(!out.log.contains("uns-kafka ready"), "log:\n{}", out.log);
    out.log
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_session_with_a_generated_ca() {
    let p = unique("tls");
    let dlq = format!("{p}-dlq");
    let k = format!("{p}_m");
    create_topics(&[&k], 1).await;
    let consumer = Consumer::new(&[&k]);
    let e = env();
    let yaml = settings(e.mqtt_tls_port, &[format!("{p}/#")], "", &dlq)
        .replace("host: 127.0.0.1", "host: localhost");
    let s = start(
        &yaml,
        Some(&format!(
            "mqtt:\n  tls:\n    ca_certs: '{}'\n",
            e.ca_cert().display()
        )),
    )
    .await;
    let publisher = MqttClient::connect(MqttConnect::tls()).await.unwrap();
    one_message_crosses(s, publisher, &consumer, &p, json!({"v": "tls"}), 1).await;
}

/// A configuration directory for the MQTT listener that requires a client
/// certificate, with the CA and, if `with_cert`, the test client's
/// certificate and key copied into `tls/` and named relative to it.
fn mqtt_mtls_dir(p: &str, with_cert: bool, extra_mqtt: &str) -> ConfigDir {
    let e = env();
    let dir = ConfigDir::new();
    dir.write_settings(
        &settings(
            e.mqtt_mtls_port,
            &[format!("{p}/#")],
            extra_mqtt,
            &format!("{p}-dlq"),
        )
        .replace("host: 127.0.0.1", "host: localhost"),
    );
    dir.copy_in(&e.ca_cert(), "tls/ca.crt");
    let mut tls = String::from("mqtt:\n  tls:\n    ca_certs: tls/ca.crt\n");
    if with_cert {
        dir.copy_in(&e.client_cert(), "tls/client.crt");
        dir.copy_in(&e.client_key(), "tls/client.key");
        tls.push_str("    certfile: tls/client.crt\n    keyfile: tls/client.key\n");
    }
    dir.write_secrets(&tls);
    dir
}

/// Brokers such as AWS IoT Core take only clients with a certificate.
#[tokio::test(flavor = "multi_thread")]
async fn mqtt_mutual_tls_with_a_client_certificate() {
    let p = unique("mtls");
    let k = format!("{p}_m");
    create_topics(&[&k], 1).await;
    let consumer = Consumer::new(&[&k]);
    let s = start_in(mqtt_mtls_dir(&p, true, "")).await;
    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    one_message_crosses(s, publisher, &consumer, &p, json!({"v": "mtls"}), 1).await;
}

/// The same listener without the certificate: the broker refuses the
/// bridge, which says so and, told not to reconnect, exits 1 (so the test
/// above really went through mutual TLS).
#[tokio::test(flavor = "multi_thread")]
async fn mqtt_mutual_tls_without_a_client_certificate_is_refused() {
    let p = unique("mtlsbad");
    let dir = mqtt_mtls_dir(&p, false, "  reconnect_on_failure: false\n");
    let log = mqtt_refuses_the_bridge(&dir).await;
    assert!(log.contains("CertificateRequired"), "log:\n{log}");
}

/// How the bridge proves who it is to one of Kafka's TLS listeners.
enum KafkaAuth<'a> {
    /// SASL (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`) as the test user with this password,
    /// on the SASL_SSL listener.
    Sasl(&'a str, &'a str),
    /// A client certificate and its key (mutual TLS), on the SSL listener;
    /// `None` shows no certificate.
    Certificate(Option<(&'a Path, &'a Path)>),
}

/// A configuration directory for Kafka over TLS, set up as the secrets
/// template shows: the security settings in `.secrets.yaml`, the CA (`ca`)
/// and any client certificate copied into `tls/` and named relative to the
/// directory. `/health` and `/metrics` on the port returned.
fn kafka_tls_dir(p: &str, ca: &Path, auth: KafkaAuth) -> (ConfigDir, u16) {
    let e = env();
    let dir = ConfigDir::new();
    let yaml = settings(e.mqtt_port, &[format!("{p}/#")], "", &format!("{p}-dlq"));
    let port = free_port();
    dir.write_settings(&format!(
        "{yaml}bridge:\n  shutdown_timeout_ms: 3000\n  health_stall_timeout_ms: 2000\n  \
         health_listen: '127.0.0.1:{port}'\n"
    ));
    dir.copy_in(ca, "tls/kafka-ca.crt");
    let security = match auth {
        KafkaAuth::Sasl(mechanism, password) => format!(
            "    bootstrap.servers: '127.0.0.1:{}'\n    security.protocol: SASL_SSL\n    \
             sasl.mechanisms: {mechanism}\n    sasl.username: '{}'\n    \
             sasl.password: '{password}'\n",
            e.kafka_sasl_ssl_port, e.kafka_user
        ),
        KafkaAuth::Certificate(cert) => {
            let mut s = format!(
                "    bootstrap.servers: '127.0.0.1:{}'\n    security.protocol: SSL\n",
                e.kafka_ssl_port
            );
            if let Some((cert, key)) = cert {
                dir.copy_in(cert, "tls/client.crt");
                dir.copy_in(key, "tls/client.key");
                s.push_str(
                    "    ssl.certificate.location: tls/client.crt\n    \
                     ssl.key.location: tls/client.key\n",
                );
            }
            s
        }
    };
    dir.write_secrets(&format!(
        "kafka:\n  config:\n{security}    ssl.ca.location: tls/kafka-ca.crt\n"
    ));
    (dir, port)
}

/// Starts the bridge with `dir`, sends one message through and checks no
/// `secret` shows in its log.
async fn crosses_over_kafka_tls(p: &str, dir: ConfigDir, secret: &str) {
    let k = format!("{p}_m");
    create_topics(&[&k], 1).await;
    let consumer = Consumer::new(&[&k]);
    let s = start_in(dir).await;
    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    let (_, log) = one_message_crosses(s, publisher, &consumer, p, json!({"v": p}), 1).await;
    assert!(!log.contains(secret), "secret logged:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_over_tls_with_a_password_from_the_secrets_file() {
    let p = unique("kafkasasl");
    let password = &env().kafka_password;
    let (dir, _) = kafka_tls_dir(&p, &env().ca_cert(), KafkaAuth::Sasl("PLAIN", password));
    crosses_over_kafka_tls(&p, dir, password).await;
}

/// SCRAM, which managed Kafka services use where PLAIN would send the
/// password itself, on the same listener; both of its hashes (MSK, Aiven
/// and Strimzi default to different ones).
#[tokio::test(flavor = "multi_thread")]
async fn kafka_over_tls_with_scram() {
    let password = &env().kafka_password;
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let p = unique("kafkascram");
        let auth = KafkaAuth::Sasl(mechanism, password);
        let (dir, _) = kafka_tls_dir(&p, &env().ca_cert(), auth);
        crosses_over_kafka_tls(&p, dir, password).await;
    }
}

/// Mutual TLS: a listener that takes only clients with a certificate its
/// CA signed; the certificate and key named relative to the configuration
/// directory. The key must not reach the log.
#[tokio::test(flavor = "multi_thread")]
async fn kafka_over_mutual_tls_with_a_client_certificate() {
    let p = unique("kafkamtls");
    let e = env();
    let (cert, key) = (e.client_cert(), e.client_key());
    let auth = KafkaAuth::Certificate(Some((&cert, &key)));
    let (dir, _) = kafka_tls_dir(&p, &e.ca_cert(), auth);
    let key_text = std::fs::read_to_string(&key).expect("client key");
    let key_body = key_text.lines().nth(1).expect("a PEM body line");
    crosses_over_kafka_tls(&p, dir, key_body).await;
}

/// The same listener without a certificate: refused, nothing written (so
/// the test above really went through mutual TLS).
#[tokio::test(flavor = "multi_thread")]
async fn kafka_without_the_client_certificate_it_requires_is_refused() {
    let p = unique("kafkamtlsbad");
    let (dir, port) = kafka_tls_dir(&p, &env().ca_cert(), KafkaAuth::Certificate(None));
    kafka_refuses_the_bridge(&p, dir, port, "alert bad certificate").await;
}

/// The same listener with a wrong password: the bridge says why Kafka
/// refuses it, without the password, and writes nothing (so the settings
/// above really went through SASL_SSL).
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_kafka_password_is_a_clear_error() {
    let p = unique("kafkasaslbad");
    let auth = KafkaAuth::Sasl("PLAIN", "wrong-kafka-password");
    let (dir, port) = kafka_tls_dir(&p, &env().ca_cert(), auth);
    let log = kafka_refuses_the_bridge(&p, dir, port, "Authentication failed").await;
    assert!(
        !log.contains("wrong-kafka-password"),
        "password logged:\n{log}"
    );
}

/// A CA that did not sign the broker's certificate (here the client
/// certificate, signed by the test CA but no CA itself): the bridge refuses
/// the broker rather than fall back to an unverified connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_kafka_certificate_the_ca_did_not_sign_is_refused() {
    let p = unique("kafkasslbad");
    let auth = KafkaAuth::Sasl("PLAIN", &env().kafka_password);
    let (dir, port) = kafka_tls_dir(&p, &env().client_cert(), auth);
    kafka_refuses_the_bridge(&p, dir, port, "SSL handshake failed").await;
}

/// Starts a bridge Kafka will not take (`why` in its log): the message
/// published stays unwritten and unacknowledged, the refusal counts in
/// `uns_kafka_kafka_errors_total`, and SIGTERM still ends the bridge once
/// `bridge.shutdown_timeout_ms` has passed. Returns the log.
async fn kafka_refuses_the_bridge(p: &str, dir: ConfigDir, port: u16, why: &str) -> String {
    let k = format!("{p}_m");
    create_topics(&[&k], 1).await;
    let consumer = Consumer::new(&[&k]);
    let mut s = start_in(dir).await;
    // Subscribed and nothing waiting: healthy, whatever Kafka thinks.
    let (code, body) = health(port);
    assert_eq!((code.as_str(), body.as_str()), ("200", "ready\n"));
    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    publisher
        .publish(
            &format!("{p}/m"),
            json!({"v": "refused"}).to_string(),
            1,
            false,
        )
        .await;
    publisher.wait_acked(ARRIVE).await;
    s.bridge.wait_for_log(why, Duration::from_secs(30)).await;
    let got = consumer.collect(1, Duration::from_secs(3)).await;
    assert!(got.is_empty(), "written although refused: {got:?}");
    let metrics = http_get(port, "/metrics");
    assert!(
        metric_value(&metrics, "uns_kafka_kafka_errors_total") > 0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "uns_kafka_messages_acknowledged_total"),
        0,
        "{metrics}"
    );
    // The message has waited longer than bridge.health_stall_timeout_ms
    // (2 s here): MQTT is fine, but the bridge is not, and says why.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let (code, body) = loop {
        let (code, body) = health(port);
        if code != "200" || std::time::Instant::now() > deadline {
            break (code, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(code, "503", "{body}");
    assert!(
        body.starts_with("stalled: no message delivered to Kafka for ")
            && body.ends_with(" s, 1 waiting (bridge.health_stall_timeout_ms)\n"),
        "{body}"
    );
    let url = format!("http://127.0.0.1:{port}/health");
    let probe = run_to_exit(["health", "--url", &url], &[], Duration::from_secs(30)).await;
    assert_eq!(probe.code(), Some(1), "probe: {}", probe.log);
    assert!(
        probe
            .log
            .contains("503 Service Unavailable: stalled: no message delivered"),
        "probe: {}",
        probe.log
    );
    publisher.disconnect().await;
    let status = s.bridge.terminate(Duration::from_secs(30)).await;
    let log = s.bridge.log();
    // Exit 3: stopped, but not cleanly; the message was left unacknowledged.
    assert_eq!(status.code(), Some(3), "log:\n{log}");
    assert!(
        log.contains("Kafka did not confirm every message within bridge.shutdown_timeout_ms"),
        "log:\n{log}"
    );
    assert!(
        log.contains(
            "error: stopped with 1 message(s) Kafka did not confirm within \
             bridge.shutdown_timeout_ms"
        ),
        "log:\n{log}"
    );
    log
}

/// With Kafka away and librdkafka's queue full, the pipeline waits for room
/// to enqueue; SIGTERM's deadline (`bridge.shutdown_timeout_ms`) must hold
/// even then: exit 3, the messages unacknowledged, within seconds.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_with_kafka_away_and_its_queue_full_still_stops_on_time() {
    let p = unique("qfull");
    let closed_port = free_port();
    let dir = ConfigDir::new();
    dir.write_settings(&format!(
        "mqtt:\n  host: 127.0.0.1\n  port: {}\n  topics: ['{p}/#']\n  qos: 1\n\
         kafka:\n  config:\n    bootstrap.servers: '127.0.0.1:{closed_port}'\n    \
         queue.buffering.max.messages: 5\n  dead_letter_topic: '{p}-dlq'\n\
         bridge:\n  shutdown_timeout_ms: 2000\n",
        env().mqtt_port
    ));
    let mut s = start_in(dir).await;
    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    for i in 0..20 {
        publisher
            .publish(&format!("{p}/m"), format!("{{\"i\":{i}}}"), 1, false)
            .await;
    }
    publisher.wait_acked(ARRIVE).await;
    // Five records fill the queue; the sixth waits for room that never comes.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = std::time::Instant::now();
    let status = s.bridge.terminate(Duration::from_secs(30)).await;
    let log = s.bridge.log();
    assert_eq!(status.code(), Some(3), "log:\n{log}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}; log:\n{log}",
        started.elapsed()
    );
    assert!(log.contains("error: stopped with "), "log:\n{log}");
    publisher.disconnect().await;
}

/// A component that loops until `transform.timeout_ms` does not hold the
/// bridge: the batch being transformed is waited on beside SIGTERM's
/// deadline, so the bridge stops at `bridge.shutdown_timeout_ms` (1 s
/// here) with exit 3 and the messages unacknowledged, where it used to
/// sit out every call (here 4 s for the batch, then 4 s for each message
/// retried alone).
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_the_component_loops_still_stops_on_time() {
    let p = unique("loopterm");
    let port = free_port();
    let dir = ConfigDir::new();
    dir.write_settings(&format!(
        "{}transform:\n  timeout_ms: 4000\nbridge:\n  shutdown_timeout_ms: 1000\n  \
         health_listen: '127.0.0.1:{port}'\n",
        settings(
            env().mqtt_port,
            &[format!("{p}/#")],
            "",
            &format!("{p}-dlq")
        )
    ));
    let config = dir.path().to_string_lossy().into_owned();
    let faulty = component("test-faulty").to_string_lossy().into_owned();
    let mut bridge = Bridge::start(["run", "--config", &config, "--component", &faulty], &[]);
    bridge.wait_ready(READY).await;
    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    for _ in 0..3 {
        publisher.publish(&format!("{p}/m"), "loop", 1, false).await;
    }
    publisher.wait_acked(ARRIVE).await;
    metrics_with(port, &["uns_kafka_messages_received_total 3"]).await;
    // The component is in its first call, with at least 3 s of it to go.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let status = bridge.terminate(Duration::from_secs(60)).await;
    let took = started.elapsed();
    let log = bridge.log();
    assert_eq!(status.code(), Some(3), "log:\n{log}");
    assert!(
        took < Duration::from_millis(3500),
        "took {took:?}; log:\n{log}"
    );
    assert!(
        log.contains("error: stopped with 3 message(s)")
            && log.contains("the transform component had not finished with these messages"),
        "log:\n{log}"
    );
    publisher.disconnect().await;
}

/// Two bridges with one `mqtt.client_id` take the session from each other:
/// each connection the broker accepts is dropped at once. The backoff grows
/// all the same (a connection resets it only once it has lasted), where it
/// used to start over at every CONNACK and the pair reconnected every
/// 250 ms for ever.
#[tokio::test(flavor = "multi_thread")]
async fn a_connection_taken_over_at_once_backs_off_further_each_time() {
    let p = unique("takeover");
    let id = unique("shared-id");
    let yaml = settings(
        env().mqtt_port,
        &[format!("{p}/#")],
        &format!("  client_id: '{id}'\n"),
        &format!("{p}-dlq"),
    );
    let dirs = [ConfigDir::new(), ConfigDir::new()];
    let component = component("uns-default").to_string_lossy().into_owned();
    let mut bridges = Vec::new();
    for dir in &dirs {
        dir.write_settings(&yaml);
        let config = dir.path().to_string_lossy().into_owned();
        let mut bridge =
            Bridge::start(["run", "--config", &config, "--component", &component], &[]);
        if bridges.is_empty() {
            bridge.wait_ready(READY).await;
        }
        bridges.push(bridge);
    }
    // 250, 500, 1000: a few seconds of fighting, where the old backoff
    // never got past 250 ms.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let found = loop {
        if bridges.iter().any(|b| b.log().contains("retry_in_ms=1000")) {
            break true;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let logs: Vec<String> = bridges.iter().map(Bridge::log).collect();
    assert!(
        logs.iter()
            .any(|l| l.contains("MQTT connection lost; reconnecting")),
        "no takeover seen:\n{}",
        logs.join("\n----\n")
    );
    assert!(found, "backoff never grew:\n{}", logs.join("\n----\n"));
    for mut b in bridges {
        b.terminate(Duration::from_secs(30)).await;
    }
}

/// SIGTERM while the bridge waits to retry an MQTT broker it cannot reach
/// ends it then, not after the wait (which grows to 30 s, past Docker's
/// 10 s before SIGKILL): no connection attempt follows the signal.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_an_mqtt_reconnect_wait_ends_the_bridge_at_once() {
    let closed_port = free_port();
    let mut s = {
        let dir = ConfigDir::new();
        dir.write_settings(&settings(closed_port, &["x/#".to_owned()], "", "dlq-x"));
        let config = dir.path().to_string_lossy().into_owned();
        let component = component("uns-default").to_string_lossy().into_owned();
        let bridge = Bridge::start(["run", "--config", &config, "--component", &component], &[]);
        Setup { bridge, _dir: dir }
    };
    // Attempts follow at 0.25, 0.5, 1, 2 s...: signal during the 4 s wait.
    s.bridge
        .wait_for_log("retry_in_ms=4000", Duration::from_secs(30))
        .await;
    // Well inside the 4 s wait: a bridge that slept it out fails here.
    let status = s.bridge.terminate(Duration::from_secs(2)).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", s.bridge.log());
    let log = s.bridge.log();
    assert!(
        !log.contains("retry_in_ms=8000"),
        "retried after SIGTERM:\n{log}"
    );
    assert!(log.contains("uns-kafka stopped"), "log:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_an_unknown_ca_never_connects() {
    // The system roots do not know the test CA: the bridge must refuse the
    // broker, not fall back to an unverified connection.
    let p = unique("tlsbad");
    let e = env();
    let dir = ConfigDir::new();
    dir.write_settings(
        &settings(
            e.mqtt_tls_port,
            &[format!("{p}/#")],
            "  reconnect_on_failure: false\n",
            "dlq-x",
        )
        .replace("host: 127.0.0.1", "host: localhost"),
    );
    dir.write_secrets("mqtt:\n  tls: {}\n");
    let log = mqtt_refuses_the_bridge(&dir).await;
    // Refused for its certificate, not for any failure to connect.
    assert!(log.contains("UnknownIssuer"), "log:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn websockets_session_on_a_broker_that_speaks_them() {
    // Debian's Mosquitto has no websockets: rumqttd, a real broker, does.
    let ws_port = free_port();
    let tcp_port = free_port();
    let config: rumqttd::Config = serde_json::from_value(json!({
        "id": 0,
        "router": {"max_connections": 100, "max_outgoing_packet_count": 1000,
                   "max_segment_size": 104857600, "max_segment_count": 10},
        "v4": {"1": {"name": "tcp", "listen": format!("127.0.0.1:{tcp_port}"), "next_connection_delay_ms": 1,
                     "connections": {"connection_timeout_ms": 60000, "max_payload_size": 1048576,
                                     "max_inflight_count": 1000, "dynamic_filters": true}}},
        "ws": {"1": {"name": "ws", "listen": format!("127.0.0.1:{ws_port}"), "next_connection_delay_ms": 1,
                     "connections": {"connection_timeout_ms": 60000, "max_payload_size": 1048576,
                                     "max_inflight_count": 1000, "dynamic_filters": true}}}
    }))
    .unwrap();
    std::thread::spawn(move || {
        let _ = rumqttd::Broker::new(config).start();
    });
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", ws_port)).is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let p = unique("ws");
    let dlq = format!("{p}-dlq");
    let k = format!("{p}_m");
    create_topics(&[&k], 1).await;
    let consumer = Consumer::new(&[&k]);
    let s = start(
        &settings(
            ws_port,
            &[format!("{p}/#")],
            "  version: 4\n  transport: websockets\n",
            &dlq,
        ),
        None,
    )
    .await;
    let publisher = MqttClient::connect(MqttConnect::new(tcp_port).version(MqttVersion::V311))
        .await
        .unwrap();
    one_message_crosses(s, publisher, &consumer, &p, json!({"v": "ws"}), 1).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn configuration_errors_exit_2_and_name_the_key() {
    // (settings.yaml, the key named, how the reason begins)
    let cases: &[(&str, &str, &str)] = &[
        (
            "mqtt:\n  port: 1883\nkafka: {config: {bootstrap.servers: x}}\n",
            "mqtt.host",
            "is mandatory",
        ),
        (
            "mqtt:\n  host: h\n  port: abc\nkafka: {config: {bootstrap.servers: x}}\n",
            "mqtt.port",
            "invalid type",
        ),
        (
            "mqtt:\n  host: h\n  version: 3\nkafka: {config: {bootstrap.servers: x}}\n",
            "mqtt.version",
            "MQTT 3.1 (version 3) is not supported",
        ),
        (
            "mqtt:\n  host: h\n  tls: {ca_certs: /nonexistent/ca.pem}\nkafka: {config: {bootstrap.servers: x}}\n",
            "mqtt.tls.ca_certs",
            "file not found",
        ),
        (
            // A file that exists but holds no certificate: this one.
            "mqtt:\n  host: h\n  tls: {ca_certs: settings.yaml}\nkafka: {config: {bootstrap.servers: x}}\n",
            "mqtt.tls.ca_certs",
            "no PEM certificate in ",
        ),
        (
            "mqtt:\n  host: h\nkafka: {config: {bootstrap.servers: x, no.such.property: 1}}\n",
            "kafka.config.no.such.property",
            "No such configuration property: \"no.such.property\"",
        ),
    ];
    for (yaml, key, reason) in cases {
        let dir = ConfigDir::new();
        let file = dir.write_settings(yaml);
        let config = dir.path().to_string_lossy().into_owned();
        let out = run_to_exit(["run", "--config", &config], &[], Duration::from_secs(60)).await;
        assert_eq!(out.code(), Some(2), "{key}: log:\n{}", out.log);
        // File, key, then the reason, in that order and in one line: the
        // form every configuration error takes, librdkafka's refusals
        // included.
        let line = format!("{}: {key}: {reason}", file.display());
        assert!(out.log.contains(&line), "not {line:?}:\n{}", out.log);
    }
    // An environment override is named as such.
    let dir = ConfigDir::new();
    dir.write_settings("mqtt:\n  host: h\nkafka: {config: {bootstrap.servers: x}}\n");
    let config = dir.path().to_string_lossy().into_owned();
    let out = run_to_exit(
        ["run", "--config", &config],
        &[("UNS_MQTT__QOS", "7")],
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(out.code(), Some(2), "log:\n{}", out.log);
    assert!(
        out.log
            .contains("environment variable UNS_MQTT__QOS: mqtt.qos"),
        "log:\n{}",
        out.log
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_stream_then_restart_loses_nothing_with_a_persistent_session() {
    const TOPICS: usize = 10;
    const PER_TOPIC: usize = 300;
    let p = unique("term");
    let dlq = format!("{p}-dlq");
    let kafka_topics: Vec<String> = (0..TOPICS).map(|t| format!("{p}_t{t}")).collect();
    let names: Vec<&str> = kafka_topics.iter().map(String::as_str).collect();
    create_topics(&names, 3).await;
    let consumer = Consumer::new(&[&format!("^{p}_t.*")]);
    let extra =
        format!("  client_id: '{p}-bridge'\n  clean_session: false\n  session_expiry: 600\n");
    let yaml = settings(env().mqtt_port, &[format!("{p}/#")], &extra, &dlq);
    let port = free_port();
    let mut first = start(
        &format!("{yaml}bridge:\n  health_listen: '127.0.0.1:{port}'\n"),
        None,
    )
    .await;

    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    for i in 0..PER_TOPIC {
        for t in 0..TOPICS {
            let payload = json!({"seq": i, "topic": t}).to_string();
            publisher
                .publish(&format!("{p}/t{t}"), payload, 1, false)
                .await;
        }
        if i == PER_TOPIC / 3 {
            // Mid-stream: the bridge has messages in every stage. Publishing
            // only queues them in the client: wait for the first to arrive.
            metrics_where(port, |m| {
                metric_value(m, "uns_kafka_messages_received_total") > 0
            })
            .await;
            let status = first.bridge.terminate(Duration::from_secs(60)).await;
            assert_eq!(status.code(), Some(0), "log:\n{}", first.bridge.log());
            assert!(first.bridge.log().contains("uns-kafka stopped"));
            // Mid-stream for real: it had some (else this would test only
            // the broker's queue for a persistent session), and no more
            // than had been published.
            let received = stop_count(&first.bridge.log(), "received");
            assert!(
                received > 0 && received <= (PER_TOPIC / 3 + 1) * TOPICS,
                "the first bridge received {received}; log:\n{}",
                first.bridge.log()
            );
        }
    }
    publisher.wait_acked(Duration::from_secs(120)).await;

    // The broker kept what the first bridge did not acknowledge.
    let mut second = start(&yaml, None).await;
    let records = consumer
        .collect(TOPICS * PER_TOPIC, Duration::from_secs(180))
        .await;
    let mut seen = std::collections::BTreeSet::new();
    for r in &records {
        let v = r.value_json();
        seen.insert((v["topic"].as_u64().unwrap(), v["seq"].as_u64().unwrap()));
    }
    let more = consumer.collect_for(Duration::from_secs(3)).await;
    for r in &more {
        let v = r.value_json();
        seen.insert((v["topic"].as_u64().unwrap(), v["seq"].as_u64().unwrap()));
    }
    assert_eq!(
        seen.len(),
        TOPICS * PER_TOPIC,
        "messages lost across a SIGTERM and restart; logs {} and {}",
        first.bridge.log_path().display(),
        second.bridge.log_path().display()
    );
    publisher.disconnect().await;
    let status = second.bridge.interrupt(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", second.bridge.log());
}

/// A clean session keeps nothing for next time, so SIGTERM under load must
/// bridge every message the broker sent: those queued behind the window
/// of a bridge slowed by a small `bridge.max_in_flight`, and those the
/// broker still sends after confirming the unsubscribe (MQTT allows it).
/// Whatever Mosquitto dropped from its own queue never reached the bridge;
/// what it did send, counted by the bridge as received, is all in Kafka.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_load_with_a_clean_session_bridges_all_it_received() {
    const TOPICS: usize = 10;
    const PER_TOPIC: usize = 200;
    let (p, dlq, consumer) = numbered_topics("clean", TOPICS).await;
    // Slow, and patient: the drain takes seconds, more beside other tests.
    let yaml = format!(
        "{}bridge:\n  max_in_flight: 4\n  shutdown_timeout_ms: 120000\n",
        settings(env().mqtt_port, &[format!("{p}/#")], "", &dlq)
    );
    let mut s = start(&yaml, None).await;

    publish_round_robin(&p, "t", TOPICS, PER_TOPIC, 1).await;
    let (received, records) = sigterm_then_collect_what_was_received(&mut s, &consumer).await;
    assert_eq!(
        records.len(),
        received,
        "the bridge received {received} messages and Kafka has {} records; log {}",
        records.len(),
        s.bridge.log_path().display()
    );
}

/// SIGTERM, a clean exit, every message received done (acknowledged,
/// QoS 0 included, for which nothing is written to the broker), and what
/// Kafka then holds: the number received and the records.
async fn sigterm_then_collect_what_was_received(
    s: &mut Setup,
    consumer: &Consumer,
) -> (usize, Vec<Rec>) {
    let status = s.bridge.terminate(Duration::from_secs(150)).await;
    let log = s.bridge.log();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    let received = stop_count(&log, "received");
    assert!(received > 0, "nothing received; log:\n{log}");
    assert_eq!(stop_count(&log, "acknowledged"), received, "log:\n{log}");
    let mut records = consumer.collect(received, ARRIVE).await;
    records.extend(consumer.collect_for(Duration::from_secs(3)).await);
    // Each record a different message: so a count equal to `received`
    // cannot be a loss and a duplicate cancelling out.
    let distinct: std::collections::HashSet<(&str, Option<&[u8]>)> = records
        .iter()
        .map(|r| (r.topic.as_str(), r.value.as_deref()))
        .collect();
    assert_eq!(
        distinct.len(),
        records.len(),
        "duplicates in Kafka; log:\n{log}"
    );
    (received, records)
}

/// The number after `field=` in the bridge's `uns-kafka stopped` line.
fn stop_count(log: &str, field: &str) -> usize {
    let stopped = log
        .lines()
        .find(|l| l.contains("uns-kafka stopped"))
        .unwrap_or_else(|| panic!("no stop line in the log:\n{log}"));
    let at = stopped
        .find(&format!("{field}="))
        .unwrap_or_else(|| panic!("no {field} in {stopped}"));
    stopped[at + field.len() + 1..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// A persistent session keeps QoS 1 and 2 for next time, but no broker
/// keeps QoS 0: on SIGTERM the bridge bridges the QoS 0 messages it holds
/// (it used to drop those not yet transformed, and those waiting in the
/// reader for room in `bridge.max_in_flight`, which is small here so that
/// some always wait).
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_under_qos0_load_with_a_persistent_session_bridges_all_it_received() {
    const TOPICS: usize = 10;
    const PER_TOPIC: usize = 500;
    let (p, dlq, consumer) = numbered_topics("q0term", TOPICS).await;
    let extra =
        format!("  client_id: '{p}-bridge'\n  clean_session: false\n  session_expiry: 600\n");
    let yaml = format!(
        "{}bridge:\n  max_in_flight: 8\n  shutdown_timeout_ms: 120000\n",
        settings(env().mqtt_port, &[format!("{p}/#")], &extra, &dlq)
    );
    let mut s = start(&yaml, None).await;

    publish_round_robin(&p, "t", TOPICS, PER_TOPIC, 0).await;
    let (received, records) = sigterm_then_collect_what_was_received(&mut s, &consumer).await;
    // All different messages (checked in the helper), as many as received.
    assert_eq!(
        records.len(),
        received,
        "the bridge received {received} QoS 0 messages; Kafka has {} records; log {}",
        records.len(),
        s.bridge.log_path().display()
    );
}

/// `mqtt:` lines for a persistent session of `version` as `client_id`.
fn persistent_session(version: MqttVersion, client_id: &str) -> String {
    match version {
        MqttVersion::V5 => {
            format!("  client_id: '{client_id}'\n  clean_session: false\n  session_expiry: 600\n")
        }
        MqttVersion::V311 => {
            format!("  version: 4\n  client_id: '{client_id}'\n  clean_session: false\n")
        }
    }
}

/// A retained message is bridged once. A persistent session keeps the
/// bridge's subscriptions, so re-subscribing must not have the broker send
/// the retained messages again: MQTT 5 asks for them on new subscriptions
/// only (across a restart here), and MQTT 3.1.1, which cannot ask, does not
/// re-subscribe when its session survived a reconnect (forced here by a
/// client taking the session over).
#[tokio::test(flavor = "multi_thread")]
async fn a_persistent_session_does_not_bridge_retained_messages_again() {
    for version in [MqttVersion::V5, MqttVersion::V311] {
        let p = unique(if version == MqttVersion::V5 {
            "ret5"
        } else {
            "ret4"
        });
        let dlq = format!("{p}-dlq");
        let (retained_topic, marker_topic) = (format!("{p}_r"), format!("{p}_m"));
        create_topics(&[&retained_topic, &marker_topic, &dlq], 1).await;
        let consumer = Consumer::new(&[&retained_topic, &marker_topic]);
        let client_id = format!("{p}-bridge");
        let extra = persistent_session(version, &client_id);
        let yaml = settings(env().mqtt_port, &[format!("{p}/#")], &extra, &dlq);
        let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
        // QoS 0, so the bridge gets it at QoS 0: at QoS 1 a session taken
        // over before its PUBACK was written (it follows Kafka's confirm)
        // is rightly sent it again, which this test would read as the
        // retained message re-sent on a subscribe.
        publisher
            .publish(
                &format!("{p}/r"),
                json!({"retained": true}).to_string(),
                0,
                true,
            )
            .await;
        // Written (QoS 0 has no acknowledgement to wait for).
        publisher.wait_acked(ARRIVE).await;

        let mut s = start(&yaml, None).await;
        let first = consumer.collect(1, ARRIVE).await;
        assert_eq!(
            first.len(),
            1,
            "{version:?}: the retained message did not arrive"
        );
        assert_eq!(first[0].topic, retained_topic);

        match version {
            MqttVersion::V5 => {
                let status = s.bridge.terminate(Duration::from_secs(60)).await;
                assert_eq!(status.code(), Some(0), "log:\n{}", s.bridge.log());
                s = start(&yaml, None).await;
            }
            MqttVersion::V311 => {
                // Same client id: the broker closes the bridge's connection
                // and hands this client the session, which outlives it.
                let taker = MqttClient::connect(
                    MqttConnect::anonymous()
                        .version(MqttVersion::V311)
                        .client_id(&client_id)
                        .clean(false),
                )
                .await
                .unwrap();
                taker.disconnect().await;
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                while !s.bridge.log().contains("session_present=true") {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "no reconnect to the kept session; log:\n{}",
                        s.bridge.log()
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        // Still subscribed: a new message arrives, and the retained one
        // did not come again before it.
        publisher
            .publish(
                &format!("{p}/m"),
                json!({"marker": true}).to_string(),
                1,
                false,
            )
            .await;
        let mut after = consumer.collect(1, ARRIVE).await;
        after.extend(consumer.collect_for(Duration::from_secs(3)).await);
        let topics: Vec<&str> = after.iter().map(|r| r.topic.as_str()).collect();
        assert_eq!(
            topics,
            [marker_topic.as_str()],
            "{version:?}: after the reconnect Kafka got {topics:?}; log {}",
            s.bridge.log_path().display()
        );
        // Leave no retained message behind on the shared broker.
        publisher.publish(&format!("{p}/r"), "", 1, true).await;
        publisher.disconnect().await;
        let status = s.bridge.terminate(Duration::from_secs(60)).await;
        assert_eq!(status.code(), Some(0), "log:\n{}", s.bridge.log());
    }
}

/// A persistent session keeps the subscriptions of earlier runs, and MQTT
/// cannot list them: after a filter is taken out of `mqtt.topics`, the
/// broker goes on delivering what it matched. Those messages go to the
/// dead-letter topic with the remedy, not to their Kafka topic, and are
/// acknowledged (the broker does not send them again, even to a run that
/// subscribes to them once more); the filters still in the settings are
/// bridged as before.
#[tokio::test(flavor = "multi_thread")]
async fn a_filter_taken_out_of_a_persistent_session_is_not_bridged() {
    for version in [MqttVersion::V5, MqttVersion::V311] {
        let p = unique(if version == MqttVersion::V5 {
            "stale5"
        } else {
            "stale4"
        });
        let dlq = format!("{p}-dlq");
        let (kept_topic, removed_topic) = (format!("{p}_kept"), format!("{p}_gone"));
        create_topics(&[&kept_topic, &removed_topic, &dlq], 1).await;
        let consumer = Consumer::new(&[&kept_topic, &removed_topic, &dlq]);
        let client_id = format!("{p}-bridge");
        let session = persistent_session(version, &client_id);
        let with = |filters: &[String], port: u16| {
            format!(
                "{}bridge:\n  health_listen: '127.0.0.1:{port}'\n",
                settings(env().mqtt_port, filters, &session, &dlq)
            )
        };
        let both = [format!("{p}/kept"), format!("{p}/gone")];
        let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();

        // A run that subscribes to both, then one without `gone`.
        let mut s = start(&with(&both, free_port()), None).await;
        let status = s.bridge.terminate(Duration::from_secs(60)).await;
        assert_eq!(status.code(), Some(0), "log:\n{}", s.bridge.log());
        let port = free_port();
        let mut s = start(&with(&both[..1], port), None).await;
        for topic in [&both[1], &both[0]] {
            publisher
                .publish(topic, json!({"topic": topic}).to_string(), 1, false)
                .await;
        }
        publisher.wait_acked(ARRIVE).await;
        let mut got = consumer.collect(1, ARRIVE).await;
        let metrics = metrics_with(
            port,
            &[
                "uns_kafka_messages_received_total 2",
                "uns_kafka_messages_acknowledged_total 2",
            ],
        )
        .await;
        got.extend(consumer.collect_for(Duration::from_secs(3)).await);
        // The dead letter first.
        got.sort_by_key(|r| r.topic != dlq);
        let topics: Vec<&str> = got.iter().map(|r| r.topic.as_str()).collect();
        assert_eq!(
            topics,
            [dlq.as_str(), kept_topic.as_str()],
            "{version:?}: log {}",
            s.bridge.log_path().display()
        );
        let h = headers(&got[0]);
        assert_eq!(
            (
                h["mqtt_topic"].as_str(),
                h["dlq_error_kind"].as_str(),
                h["dlq_stage"].as_str()
            ),
            (both[1].as_str(), "unsubscribed", "receive")
        );
        // MQTT 5 brokers say which subscription a message came for; with
        // 3.1.1 the topic tells.
        let told_by = match version {
            MqttVersion::V5 => "MQTT 5 subscription identifier says so",
            MqttVersion::V311 => "matches none of mqtt.topics",
        };
        assert!(
            h["dlq_reason"].contains(told_by) && h["dlq_reason"].contains("mqtt.client_id"),
            "{h:?}"
        );
        assert_eq!(got[0].value_json(), json!({"topic": both[1]}));
        assert!(
            metrics.contains("uns_kafka_messages_unsubscribed_total 1")
                && metrics.contains("uns_kafka_messages_dead_lettered_total 1"),
            "{version:?}: {metrics}"
        );
        let log = s.bridge.log();
        assert!(
            log.contains(told_by)
                && log.contains("logged at most once a minute")
                && !log.contains("message dead-lettered to"),
            "{version:?}: log:\n{log}"
        );
        let status = s.bridge.terminate(Duration::from_secs(60)).await;
        assert_eq!(status.code(), Some(0), "log:\n{}", s.bridge.log());

        // It was acknowledged: a run that subscribes to `gone` again does
        // not get it, only what is published from now on.
        let mut s = start(&with(&both, free_port()), None).await;
        publisher
            .publish(&both[1], json!({"after": true}).to_string(), 1, false)
            .await;
        let mut after = consumer.collect(1, ARRIVE).await;
        after.extend(consumer.collect_for(Duration::from_secs(3)).await);
        let values: Vec<serde_json::Value> = after.iter().map(|r| r.value_json()).collect();
        assert_eq!(
            values,
            [json!({"after": true})],
            "{version:?}: log {}",
            s.bridge.log_path().display()
        );
        assert_eq!(after[0].topic, removed_topic);
        publisher.disconnect().await;
        let status = s.bridge.terminate(Duration::from_secs(60)).await;
        assert_eq!(status.code(), Some(0), "log:\n{}", s.bridge.log());
    }
}

/// A SIGTERM while a SIGHUP's reload is still loading (here a component
/// whose `init` spins for the two minutes of its `transform.timeout_ms`)
/// stops the bridge on time: the reload runs on tokio's blocking pool,
/// which the exit used to wait for without limit.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_slow_reload_still_stops_on_time() {
    let p = unique("slowreload");
    let dir = ConfigDir::new();
    let settings_with = |config: &str| {
        format!(
            "{}transform:\n  component: transform.wasm\n  timeout_ms: 120000\n  config: {{{config}}}\n",
            settings(env().mqtt_port, &[format!("{p}/#")], "", &format!("{p}-dlq"))
        )
    };
    dir.write_settings(&settings_with(""));
    dir.copy_in(&component("test-faulty"), "transform.wasm");
    let config = dir.path().to_string_lossy().into_owned();
    let mut bridge = Bridge::start(["run", "--config", &config], &[]);
    bridge.wait_ready(READY).await;
    dir.write_settings(&settings_with("slow_init: true"));
    bridge.signal(libc::SIGHUP);
    bridge
        .wait_for_log(
            "SIGHUP: reading the settings again",
            Duration::from_secs(30),
        )
        .await;
    // Into `init` (compiling a component this small takes far less).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = std::time::Instant::now();
    bridge.signal(libc::SIGTERM);
    // Nothing in flight: the stop itself takes a moment; `init` would hold
    // the exit for the rest of its two minutes.
    let status = bridge.wait_exit(Duration::from_secs(45)).await;
    let log = bridge.log();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    assert!(
        sent.elapsed() < Duration::from_secs(30),
        "exit took {:?}; log:\n{log}",
        sent.elapsed()
    );
    assert!(!log.contains("transform component reloaded"), "log:\n{log}");
}

/// A reload that lowers `transform.max_memory_mb` cuts batches to the new
/// memory: a backlog of large messages went on in batches of an eighth of
/// the old limit (here 128 MiB into a 64 MiB instance), failed on memory,
/// and the instance replaced for it forgot what it had learned. The
/// backlog forms behind a message that keeps the component busy.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_to_less_memory_cuts_batches_to_it() {
    let p = unique("reloadmem");
    let dlq = format!("{p}-dlq");
    let k = format!("{p}_big");
    create_topics(&[&k, &dlq], 1).await;
    let consumer = Consumer::new(&[&k]);
    let dir = ConfigDir::new();
    let settings_with = |mb: u64| {
        format!(
            "{}transform:\n  component: transform.wasm\n  timeout_ms: 3000\n  max_memory_mb: {mb}\n",
            settings(env().mqtt_port, &[format!("{p}/#")], "", &dlq)
        )
    };
    dir.write_settings(&settings_with(1024));
    dir.copy_in(&component("test-faulty"), "transform.wasm");
    let config = dir.path().to_string_lossy().into_owned();
    let mut bridge = Bridge::start(["run", "--config", &config], &[]);
    bridge.wait_ready(READY).await;
    dir.write_settings(&settings_with(64));
    bridge.signal(libc::SIGHUP);
    bridge
        .wait_for_log("transform component reloaded", Duration::from_secs(60))
        .await;

    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    // Three seconds of the component's time, while 80 MB queue behind.
    publisher
        .publish(&format!("{p}/busy"), "loop", 1, false)
        .await;
    let big = vec![b'x'; 400_000];
    for _ in 0..200 {
        publisher
            .publish(&format!("{p}/big"), big.clone(), 1, false)
            .await;
    }
    publisher.wait_acked(Duration::from_secs(60)).await;
    let got = consumer.collect(200, Duration::from_secs(60)).await;
    let log = bridge.log();
    assert_eq!(got.len(), 200, "log:\n{log}");
    // (The busy message may share a batch, which then fails on time.)
    assert!(!log.contains("kind=memory"), "log:\n{log}");
    publisher.disconnect().await;
    assert_eq!(
        bridge.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );
}

/// SIGHUP reads the settings again and reloads the component: a new
/// transform ships without a restart or a reconnect, in place of the old
/// file or under a new name in `transform.component`; a file or settings
/// that do not load leave the running one in place; and the component named
/// in dead-letter headers and `/metrics` is the one that transformed the
/// message.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_reloads_the_component_without_reconnecting() {
    let p = unique("reload");
    let dlq = format!("{p}-dlq");
    let k = format!("{p}_m");
    create_topics(&[&k, &dlq], 1).await;
    let consumer = Consumer::new(&[&k, &dlq]);
    let port = free_port();
    let dir = ConfigDir::new();
    let settings_naming = |file: &str, extra_mqtt: &str| {
        format!(
            "{}transform:\n  component: {file}\nbridge:\n  health_listen: '127.0.0.1:{port}'\n",
            settings(env().mqtt_port, &[format!("{p}/#")], extra_mqtt, &dlq)
        )
    };
    // The component's settings kept under `mqtt` are re-read too.
    let ignoring = format!("  ignored_attributes:\n    '{p}/#': [debug]\n");
    dir.write_settings(&settings_naming("transform.wasm", ""));
    let wasm = dir.copy_in(&component("uns-default"), "transform.wasm");
    let config = dir.path().to_string_lossy().into_owned();
    let mut bridge = Bridge::start(["run", "--config", &config], &[]);
    bridge.wait_ready(READY).await;
    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    let topic = format!("{p}/m");
    let log = bridge.log_path().display().to_string();
    let send = async |payload: &str| {
        publisher.publish(&topic, payload, 1, false).await;
        publisher.wait_acked(ARRIVE).await;
        let got = consumer.collect(1, ARRIVE).await;
        assert_eq!(got.len(), 1, "{payload}: log {log}");
        got.into_iter().next().unwrap()
    };
    let reload = async |bridge: &mut Bridge, outcome: &str, n: usize| {
        bridge.signal(libc::SIGHUP);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while bridge.log().matches(outcome).count() < n {
            assert!(
                std::time::Instant::now() < deadline && bridge.is_running(),
                "no {n}th {outcome:?}; log:\n{}",
                bridge.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    // The default component compacts JSON and adds its headers.
    let before = send(r#"{"v": 1}"#).await;
    assert_eq!(before.value.as_deref(), Some(&br#"{"v":1}"#[..]));
    assert!(!before.headers.is_empty());

    // A new component in the same file, then SIGHUP: test-faulty copies the
    // payload as it is, with no headers.
    std::fs::copy(component("test-faulty"), &wasm).unwrap();
    reload(&mut bridge, "transform component reloaded", 1).await;
    let after = send(r#"{"v": 2}"#).await;
    assert_eq!(after.value.as_deref(), Some(&br#"{"v": 2}"#[..]));
    assert!(after.headers.is_empty(), "{:?}", after.headers);
    let trapped = send("trap").await;
    assert_eq!(trapped.topic, dlq);
    assert_eq!(
        trapped.header("transform_name").as_deref(),
        Some("test-faulty")
    );
    let metrics = http_get(port, "/metrics");
    assert!(metrics.contains(",component=\"test-faulty\","), "{metrics}");

    // Settings that name another file: read again, and that file runs.
    dir.copy_in(&component("uns-default"), "transform-v2.wasm");
    dir.write_settings(&settings_naming("transform-v2.wasm", &ignoring));
    reload(&mut bridge, "transform component reloaded", 2).await;
    let renamed = send(r#"{"v": 3, "debug": "x"}"#).await;
    assert_eq!(renamed.value.as_deref(), Some(&br#"{"v":3}"#[..]));
    assert!(!renamed.headers.is_empty());

    // Settings that do not load: logged with the key, and the component
    // keeps running.
    dir.write_settings(&format!(
        "{}transform:\n  timeout_ms: soon\n",
        settings(env().mqtt_port, &[format!("{p}/#")], "", &dlq)
    ));
    reload(&mut bridge, "transform component not reloaded", 1).await;
    assert!(
        bridge.log().contains("transform.timeout_ms"),
        "{}",
        bridge.log()
    );
    let kept = send(r#"{"v": 4}"#).await;
    assert_eq!(kept.value.as_deref(), Some(&br#"{"v":4}"#[..]));

    // A file that is no component: logged, and the running one stays.
    dir.write_settings(&settings_naming("transform-v2.wasm", &ignoring));
    dir.write_file("transform-v2.wasm", b"not a component");
    reload(&mut bridge, "transform component not reloaded", 2).await;
    let kept = send(r#"{"v": 5}"#).await;
    assert_eq!(kept.value.as_deref(), Some(&br#"{"v":5}"#[..]));

    let metrics = http_get(port, "/metrics");
    assert_eq!(
        metric_value(&metrics, "uns_kafka_component_reloads_total"),
        2
    );
    assert_eq!(
        metric_value(&metrics, "uns_kafka_component_reload_failures_total"),
        2
    );
    // One connection throughout ("ready" is logged once per process,
    // whatever the reconnects, so the counter is what tells).
    assert_eq!(
        metric_value(&metrics, "uns_kafka_mqtt_connections_total"),
        1
    );
    publisher.disconnect().await;
    let status = bridge.terminate(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", bridge.log());
}

/// A signal that arrives while the component compiles (the bridge has logged
/// `uns-kafka starting`, not yet `ready`) is handled, not left to its
/// default action: SIGHUP, which would end the process, reloads the
/// component once the bridge runs; SIGTERM stops it cleanly, exit 0.
#[tokio::test(flavor = "multi_thread")]
async fn signals_during_startup_are_handled() {
    let p = unique("earlysig");
    let start = |p: &str| {
        let dir = ConfigDir::new();
        // An empty compilation cache: the component compiles from scratch,
        // which takes long enough for the signal to arrive meanwhile.
        let cache = dir.path().join("cache");
        dir.write_settings(&format!(
            "{}transform:\n  cache_dir: '{}'\n",
            settings(
                env().mqtt_port,
                &[format!("{p}/#")],
                "",
                &format!("{p}-dlq")
            ),
            cache.display()
        ));
        let config = dir.path().to_string_lossy().into_owned();
        let wasm = component("uns-default").to_string_lossy().into_owned();
        let bridge = Bridge::start(["run", "--config", &config, "--component", &wasm], &[]);
        Setup { bridge, _dir: dir }
    };

    let mut s = start(&p);
    s.bridge
        .wait_for_log("uns-kafka starting", Duration::from_secs(30))
        .await;
    // Else this run shows nothing about startup.
    assert!(
        !s.bridge.log().contains("transform component loaded"),
        "loaded already"
    );
    s.bridge.signal(libc::SIGHUP);
    s.bridge.wait_ready(READY).await;
    s.bridge
        .wait_for_log("transform component reloaded", Duration::from_secs(60))
        .await;
    assert!(s.bridge.is_running(), "log:\n{}", s.bridge.log());
    let status = s.bridge.terminate(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", s.bridge.log());

    let mut s = start(&p);
    s.bridge
        .wait_for_log("uns-kafka starting", Duration::from_secs(30))
        .await;
    assert!(
        !s.bridge.log().contains("transform component loaded"),
        "loaded already"
    );
    s.bridge.signal(libc::SIGTERM);
    let status = s.bridge.wait_exit(Duration::from_secs(30)).await;
    let log = s.bridge.log();
    assert_eq!(status.code(), Some(0), "log:\n{log}");
    assert!(log.contains("uns-kafka stopped"), "log:\n{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn health_endpoint_and_probe_command() {
    let p = unique("health");
    let dlq = format!("{p}-dlq");
    let k = format!("{p}_m");
    create_topics(&[&k], 1).await;
    let consumer = Consumer::new(&[&k]);
    let (mut s, port) = start_with_health(&[format!("{p}/#")], &dlq).await;
    let url = format!("http://127.0.0.1:{port}/health");
    let probe = run_to_exit(["health", "--url", &url], &[], Duration::from_secs(30)).await;
    assert_eq!(probe.code(), Some(0), "probe: {}", probe.log);

    publish(env().mqtt_port, &format!("{p}/m"), "{\"v\": 1}", 1, false).await;
    assert_eq!(consumer.collect(1, ARRIVE).await.len(), 1);
    let metrics = metrics_with(
        port,
        &[
            "uns_kafka_messages_acknowledged_total 1",
            "uns_kafka_delivery_seconds_count 1",
        ],
    )
    .await;
    assert!(
        metrics.contains("uns_kafka_messages_received_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("uns_kafka_records_produced_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("uns_kafka_records_confirmed_total 1")
            && metrics.contains("uns_kafka_records_confirmed_without_offset_total 0"),
        "{metrics}"
    );
    // One delivery, well inside the last finite bucket (5 minutes).
    assert!(
        metrics.contains("# TYPE uns_kafka_delivery_seconds histogram")
            && metrics.contains("uns_kafka_delivery_seconds_bucket{le=\"300\"} 1")
            && metrics.contains("uns_kafka_delivery_seconds_bucket{le=\"+Inf\"} 1"),
        "{metrics}"
    );
    // Which transform runs, and that it has not failed.
    let info = format!(
        "uns_kafka_info{{version=\"{v}\",component=\"uns-default\",component_version=\"{v}\"}} 1",
        v = env!("CARGO_PKG_VERSION")
    );
    assert!(metrics.contains(&info), "{metrics}");
    assert!(
        metrics.contains("uns_kafka_component_failures_total{kind=\"trap\"} 0"),
        "{metrics}"
    );
    // Connected, once.
    assert_eq!(metric_value(&metrics, "uns_kafka_mqtt_connected"), 1);
    assert_eq!(
        metric_value(&metrics, "uns_kafka_mqtt_connections_total"),
        1
    );

    assert_eq!(
        s.bridge.terminate(Duration::from_secs(30)).await.code(),
        Some(0)
    );
    // Nobody listens any more: the probe says so.
    let probe = run_to_exit(["health", "--url", &url], &[], Duration::from_secs(30)).await;
    assert_eq!(probe.code(), Some(1), "probe: {}", probe.log);
}

/// `/metrics` once it has every line in `want`: the counters move when a
/// message is acknowledged, a moment after its records reach Kafka.
async fn metrics_with(port: u16, want: &[&str]) -> String {
    metrics_where(port, |m| want.iter().all(|w| m.contains(w))).await
}

/// `/metrics` once `ready` holds for it.
async fn metrics_where(port: u16, ready: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + ARRIVE;
    loop {
        let m = http_get(port, "/metrics");
        if ready(&m) {
            return m;
        }
        assert!(std::time::Instant::now() < deadline, "metrics: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `uns-kafka demo` (the README's *Trying it*): the whole job with nothing
/// installed (an embedded MQTT broker, librdkafka's mock cluster), then the
/// same against the real brokers, and a malformed address as a usage
/// error. Run as a user runs it, without the tests' `NO_COLOR`: output that
/// is not a terminal carries no colour codes.
#[tokio::test(flavor = "multi_thread")]
async fn demo_bridges_its_samples_embedded_and_against_the_real_brokers() {
    let component = component("uns-default").to_string_lossy().into_owned();
    let mqtt = format!("127.0.0.1:{}", env().mqtt_port);
    let demo = |extra: &[&str]| {
        let mut cmd = tokio::process::Command::new(bridge_bin());
        cmd.arg("demo")
            .args(extra)
            .args(["--component", &component])
            .env_remove("NO_COLOR")
            .env_remove("RUST_LOG")
            .kill_on_drop(true);
        async move {
            let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
                .await
                .expect("demo within 120 s")
                .expect("run uns-kafka demo");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    // Someone else's Sparkplug traffic on the real broker, retained so
    // that any subscription to it gets it at once: not the demo's to take.
    let foreign = format!("spBv1.0/{}/NDATA/e1", unique("foreign"));
    publish(env().mqtt_port, &foreign, "not the demo's", 1, true).await;
    let mut runs = Vec::new();
    for extra in [
        &[][..],
        &["--mqtt", &mqtt, "--kafka", &env().kafka_bootstrap][..],
    ] {
        runs.push((format!("{extra:?}"), demo(extra).await));
    }
    // Cleared before anything is asserted, so no failure leaves it behind.
    publish(env().mqtt_port, &foreign, "", 1, true).await;
    for (extra, (code, stdout, stderr)) in runs {
        assert_eq!(code, Some(0), "demo {extra}:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains("published 6 MQTT messages; 6 Kafka records arrived"),
            "demo {extra}:\n{stdout}"
        );
        // One of each kind: UNS JSON, Sparkplug B, and the broken sample's
        // dead-letter record.
        for needle in ["_plant1_area1_line1_temperature", "NDATA", "dlq_reason"] {
            assert!(
                stdout.contains(needle),
                "no {needle} in demo {extra}:\n{stdout}"
            );
        }
        assert!(
            !stderr.contains('\u{1b}'),
            "colour codes in a log that is not a terminal:\n{stderr}"
        );
        assert!(stderr.contains("uns-kafka stopped"), "{stderr}");
        assert!(
            !stderr.contains(&foreign) && !stdout.contains(&foreign),
            "{stdout}\n{stderr}"
        );
    }
    let (code, _, stderr) = demo(&["--mqtt", "no-port-here"]).await;
    assert_eq!(code, Some(2), "{stderr}");
}

/// The health endpoint drops a client that connects and never finishes its
/// request, and keeps answering others meanwhile: silent connections must
/// not pile up until the process has no file descriptors left for MQTT and
/// Kafka (they did, with no timeout at all).
#[tokio::test(flavor = "multi_thread")]
async fn the_health_endpoint_drops_clients_that_never_finish_a_request() {
    use std::io::{Read, Write};
    let p = unique("slow");
    let dlq = format!("{p}-dlq");
    let (mut s, port) = start_with_health(&[format!("{p}/#")], &dlq).await;
    let mut silent = Vec::new();
    for _ in 0..10 {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .expect("half a request");
        c.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        silent.push(c);
    }
    // Meanwhile the endpoint answers.
    assert_eq!(health(port).0, "200", "log:\n{}", s.bridge.log());
    for mut c in silent {
        let mut buf = Vec::new();
        // Closed by the server (perhaps after a 408): the read ends, with
        // what the server sent, instead of waiting for the test's timeout.
        let read = c.read_to_end(&mut buf);
        let waited_out = matches!(&read, Err(e) if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ));
        assert!(
            !waited_out,
            "the server kept a silent connection open for 30 s; it sent {:?}",
            String::from_utf8_lossy(&buf)
        );
    }
    assert_eq!(health(port).0, "200");
    let status = s.bridge.terminate(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", s.bridge.log());
}

/// Large messages are held back by their bytes (`bridge.max_in_flight_mb`),
/// not only by their number: with Kafka away, six 400 KB messages against a
/// 1 MB bound put two in the pipeline and one in the reader's buffer (a
/// quarter of the bound), and the broker keeps the rest, where all six used
/// to be read into memory. Nothing is lost by it: the next run of the
/// persistent session, with Kafka there, bridges all six under the same
/// bound.
#[tokio::test(flavor = "multi_thread")]
async fn large_messages_are_held_back_by_their_bytes_and_all_arrive() {
    const MESSAGES: usize = 6;
    const SIZE: usize = 400 * 1024;
    let p = unique("bigmsgs");
    let kafka_topic = format!("{p}_big");
    let dlq = format!("{p}-dlq");
    create_topics(&[&kafka_topic, &dlq], 1).await;
    let consumer = Consumer::new(&[&kafka_topic]);
    let session =
        format!("  client_id: '{p}-bridge'\n  clean_session: false\n  session_expiry: 600\n");
    let port = free_port();
    let bridge_yaml = format!(
        "bridge:\n  max_in_flight_mb: 1\n  shutdown_timeout_ms: 1000\n  \
         health_listen: '127.0.0.1:{port}'\n"
    );
    let closed_port = free_port();
    let away = settings(env().mqtt_port, &[format!("{p}/#")], &session, &dlq).replace(
        &format!("bootstrap.servers: '{}'", env().kafka_bootstrap),
        &format!("bootstrap.servers: '127.0.0.1:{closed_port}'"),
    );
    assert!(away.contains(&closed_port.to_string()), "{away}");
    let mut first = start(&format!("{away}{bridge_yaml}"), None).await;

    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    let payloads: Vec<String> = (0..MESSAGES)
        .map(|i| json!({"i": i, "pad": "x".repeat(SIZE)}).to_string())
        .collect();
    for payload in &payloads {
        publisher
            .publish(&format!("{p}/big"), payload.as_str(), 1, false)
            .await;
    }
    publisher.wait_acked(ARRIVE).await;
    // All three together: the gauges are set a moment after the count.
    let metrics = metrics_with(
        port,
        &[
            "uns_kafka_messages_received_total 3\n",
            "uns_kafka_mqtt_waiting_messages 1\n",
            &format!(
                "uns_kafka_in_flight_payload_bytes {}\n",
                2 * payloads[0].len()
            ),
        ],
    )
    .await;
    // Given time to read more, it does not.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics_later = http_get(port, "/metrics");
    for m in [&metrics, &metrics_later] {
        assert_eq!(
            metric_value(m, "uns_kafka_messages_received_total"),
            3,
            "{m}"
        );
        assert_eq!(
            metric_value(m, "uns_kafka_in_flight_payload_bytes"),
            2 * payloads[0].len() as u64,
            "{m}"
        );
        assert_eq!(metric_value(m, "uns_kafka_mqtt_waiting_messages"), 1, "{m}");
    }
    // Nothing confirmed: exit 3, and the broker keeps all six.
    assert_eq!(
        first.bridge.terminate(Duration::from_secs(30)).await.code(),
        Some(3),
        "log:\n{}",
        first.bridge.log()
    );

    let mut second = start(
        &format!(
            "{}{bridge_yaml}",
            settings(env().mqtt_port, &[format!("{p}/#")], &session, &dlq)
        ),
        None,
    )
    .await;
    let mut records = consumer.collect(MESSAGES, ARRIVE).await;
    records.extend(consumer.collect_for(Duration::from_secs(2)).await);
    let got: Vec<u64> = records
        .iter()
        .map(|r| r.value_json()["i"].as_u64().expect("i"))
        .collect();
    assert_eq!(
        got,
        (0..MESSAGES as u64).collect::<Vec<_>>(),
        "log:\n{}",
        second.bridge.log()
    );
    publisher.disconnect().await;
    assert_eq!(
        second
            .bridge
            .terminate(Duration::from_secs(30))
            .await
            .code(),
        Some(0),
        "log:\n{}",
        second.bridge.log()
    );
}

/// MQTT 5: a persistent session whose filter was narrowed (`<p>/#`, then
/// `<p>/kept`) still holds the wide one, and a message on `<p>/kept`
/// matches both. The broker says which subscription each copy it sends came
/// for, so the wide one's copy is dead-lettered, not written to Kafka a
/// second time (by its topic it matches this run's filter: it was), and a
/// message only the wide filter matches is dead-lettered as well.
#[tokio::test(flavor = "multi_thread")]
async fn a_narrowed_filter_of_a_persistent_session_brings_no_duplicates() {
    let p = unique("narrow5");
    let dlq = format!("{p}-dlq");
    let (kept_topic, other_topic) = (format!("{p}_kept"), format!("{p}_other"));
    create_topics(&[&kept_topic, &other_topic, &dlq], 1).await;
    let consumer = Consumer::new(&[&kept_topic, &other_topic]);
    let dlq_consumer = Consumer::new(&[&dlq]);
    let session = persistent_session(MqttVersion::V5, &format!("{p}-bridge"));
    let with = |filter: String| settings(env().mqtt_port, &[filter], &session, &dlq);

    let mut s = start(&with(format!("{p}/#")), None).await;
    let status = s.bridge.terminate(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", s.bridge.log());
    let mut s = start(&with(format!("{p}/kept")), None).await;
    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    for topic in [format!("{p}/kept"), format!("{p}/other")] {
        publisher
            .publish(&topic, json!({"topic": topic}).to_string(), 1, false)
            .await;
    }
    publisher.wait_acked(ARRIVE).await;
    let mut bridged = consumer.collect(1, ARRIVE).await;
    // Mosquitto sends a copy per subscription: the wide filter's copy of
    // `kept` and `other` come for the earlier run's subscription.
    let mut dead = dlq_consumer.collect(2, ARRIVE).await;
    bridged.extend(consumer.collect_for(Duration::from_secs(3)).await);
    dead.extend(dlq_consumer.collect_for(Duration::from_secs(1)).await);
    let topics: Vec<&str> = bridged.iter().map(|r| r.topic.as_str()).collect();
    assert_eq!(
        topics,
        [kept_topic.as_str()],
        "log {}",
        s.bridge.log_path().display()
    );
    let mut dead_topics: Vec<String> = dead
        .iter()
        .map(|r| headers(r)["mqtt_topic"].clone())
        .collect();
    dead_topics.sort();
    assert_eq!(dead_topics, [format!("{p}/kept"), format!("{p}/other")]);
    assert!(
        dead.iter()
            .all(|r| headers(r)["dlq_error_kind"] == "unsubscribed"),
        "{dead_topics:?}"
    );
    publisher.disconnect().await;
    let status = s.bridge.terminate(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", s.bridge.log());
}
