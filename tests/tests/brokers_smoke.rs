//! The harness and the brokers of `tests/brokers.sh`, without the bridge: if
//! these fail, the bridge's end-to-end tests cannot say anything.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use uns_kafka_e2e::{
    create_topics, env, producer, publish, run_to_exit, unique, Consumer, MqttClient, MqttConnect,
    MqttVersion,
};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn mqtt_messages_cross_between_v5_and_v311_clients_in_order() {
    let topic = format!("{}/a/b", unique("smoke"));
    let mut sub = MqttClient::connect(MqttConnect::anonymous().version(MqttVersion::V311))
        .await
        .unwrap();
    sub.subscribe(&topic, 1).await;
    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    for i in 0..3 {
        publisher.publish(&topic, format!("m{i}"), 1, false).await;
    }
    publisher.wait_acked(WAIT).await;
    for i in 0..3 {
        let got = sub.recv(WAIT).await.expect("message");
        assert_eq!(got.topic, topic);
        assert_eq!(got.payload, format!("m{i}").into_bytes());
        assert_eq!(got.qos, 1);
    }
    assert!(sub.recv(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn mqtt5_content_type_and_user_properties_arrive() {
    let topic = format!("{}/props", unique("smoke"));
    let mut sub = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    sub.subscribe(&topic, 2).await;
    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    publisher
        .publish_with_properties(
            &topic,
            "{}",
            2,
            false,
            Some("application/json"),
            &[("site", "a"), ("site", "b")],
        )
        .await;
    publisher.wait_acked(WAIT).await;
    let got = sub.recv(WAIT).await.expect("message");
    assert_eq!(got.qos, 2);
    assert_eq!(got.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        got.user_properties,
        vec![("site".into(), "a".into()), ("site".into(), "b".into())]
    );
}

#[tokio::test]
async fn a_burst_of_qos1_messages_is_acknowledged_and_delivered_whole() {
    const N: usize = 2000;
    let topic = format!("{}/burst", unique("smoke"));
    let mut sub = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    sub.subscribe(&topic, 1).await;
    let publisher = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    for i in 0..N {
        publisher.publish(&topic, i.to_string(), 1, false).await;
    }
    publisher.wait_acked(Duration::from_secs(60)).await;
    for i in 0..N {
        let got = sub
            .recv(WAIT)
            .await
            .unwrap_or_else(|| panic!("message {i} missing"));
        assert_eq!(got.payload, i.to_string().into_bytes());
    }
}

#[tokio::test]
async fn one_shot_publish_leaves_a_retained_message() {
    let topic = format!("{}/retained", unique("smoke"));
    publish(env().mqtt_port, &topic, "kept", 1, true).await;
    let mut sub = MqttClient::connect(MqttConnect::anonymous()).await.unwrap();
    sub.subscribe(&topic, 1).await;
    let got = sub.recv(WAIT).await.expect("retained message");
    assert_eq!(got.payload, b"kept");
    assert!(got.retain);
    // Clear it so the broker does not keep test data around.
    publish(env().mqtt_port, &topic, "", 1, true).await;
}

#[tokio::test]
async fn password_listener_accepts_the_right_password_only() {
    let e = env();
    for version in [MqttVersion::V5, MqttVersion::V311] {
        let ok = MqttClient::connect(MqttConnect::authenticated().version(version)).await;
        assert!(ok.is_ok(), "{version:?}: {:?}", ok.err());
        let wrong = MqttClient::connect(
            MqttConnect::new(e.mqtt_auth_port)
                .version(version)
                .credentials(&e.mqtt_user, "not-the-password"),
        )
        .await;
        assert!(wrong.is_err(), "{version:?}: wrong password accepted");
        let anonymous =
            MqttClient::connect(MqttConnect::new(e.mqtt_auth_port).version(version)).await;
        assert!(anonymous.is_err(), "{version:?}: anonymous accepted");
    }
}

#[tokio::test]
async fn tls_listener_works_with_the_generated_ca_and_client_certificate() {
    let e = env();
    let topic = format!("{}/tls", unique("smoke"));
    let mut sub = MqttClient::connect(MqttConnect::tls().version(MqttVersion::V311))
        .await
        .unwrap();
    sub.subscribe(&topic, 1).await;
    let mtls = MqttClient::connect(MqttConnect::tls().tls_client(e.client_cert(), e.client_key()))
        .await
        .unwrap();
    mtls.publish(&topic, "secure", 1, false).await;
    mtls.wait_acked(WAIT).await;
    assert_eq!(sub.recv(WAIT).await.expect("message").payload, b"secure");

    let plain = MqttClient::connect(MqttConnect::new(e.mqtt_tls_port)).await;
    assert!(plain.is_err(), "plain MQTT accepted on the TLS port");
}

#[tokio::test]
async fn kafka_record_round_trips_with_key_headers_and_timestamp() {
    let topic = unique("smoke-kafka");
    create_topics(&[&topic], 3).await;
    let consumer = Consumer::new(&[&topic]);
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 1000;
    producer()
        .send(
            FutureRecord::to(&topic)
                .key("k1")
                .payload(r#"{"v":1}"#)
                .timestamp(ts)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "mqtt_topic",
                    value: Some("a/b/c"),
                })),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    let recs = consumer.collect(1, Duration::from_secs(60)).await;
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!(r.topic, topic);
    assert_eq!(r.key_str().as_deref(), Some("k1"));
    assert_eq!(r.header("mqtt_topic").as_deref(), Some("a/b/c"));
    assert_eq!(r.timestamp, Some(ts));
    assert_eq!(r.value_json(), serde_json::json!({"v": 1}));
    assert!(consumer
        .collect_for(Duration::from_secs(1))
        .await
        .is_empty());
}

#[tokio::test]
async fn regex_consumer_sees_auto_created_topics() {
    let prefix = unique("smoke-auto");
    let consumer = Consumer::new(&[&format!("^{prefix}-.*")]);
    let p = producer();
    for t in ["x", "y"] {
        p.send(
            FutureRecord::<(), _>::to(&format!("{prefix}-{t}")).payload(t),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    }
    let mut topics: Vec<String> = consumer
        .collect(2, Duration::from_secs(60))
        .await
        .into_iter()
        .map(|r| r.topic)
        .collect();
    topics.sort();
    assert_eq!(topics, vec![format!("{prefix}-x"), format!("{prefix}-y")]);
}

#[tokio::test]
async fn bridge_runner_captures_output_and_exit_code() {
    let done = run_to_exit(["--version"], &[], WAIT).await;
    assert_eq!(done.code(), Some(0), "{}", done.log);
    assert!(done.log.contains("uns-kafka"), "{}", done.log);
}
