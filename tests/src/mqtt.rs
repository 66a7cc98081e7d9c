//! MQTT clients for tests: publish (and wait until the broker has every QoS 1/2
//! message) and subscribe, over MQTT 5 or 3.1.1, plain, with a password or
//! with TLS.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rumqttc::{TlsConfiguration, Transport};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::env::env;
use crate::unique;

/// Large enough for any payload a test sends; the clients' own default (10 KiB
/// for 3.1.1) would refuse big messages before the broker sees them.
const MAX_PACKET: usize = 64 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MqttVersion {
    V311,
    V5,
}

/// How to connect. Defaults: 127.0.0.1, MQTT 5, anonymous, no TLS, a unique
/// client id, clean session.
#[derive(Debug, Clone)]
pub struct MqttConnect {
    pub host: String,
    pub port: u16,
    pub version: MqttVersion,
    pub credentials: Option<(String, String)>,
    /// TLS with this CA certificate (PEM).
    pub tls_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    pub client_id: String,
    pub clean: bool,
}

impl MqttConnect {
    pub fn new(port: u16) -> MqttConnect {
        MqttConnect {
            host: "127.0.0.1".into(),
            port,
            version: MqttVersion::V5,
            credentials: None,
            tls_ca: None,
            tls_client: None,
            client_id: unique("e2e-client"),
            clean: true,
        }
    }

    /// The anonymous listener of the test Mosquitto.
    pub fn anonymous() -> MqttConnect {
        MqttConnect::new(env().mqtt_port)
    }

    /// The password listener with the right credentials.
    pub fn authenticated() -> MqttConnect {
        let e = env();
        MqttConnect::new(e.mqtt_auth_port).credentials(&e.mqtt_user, &e.mqtt_password)
    }

    /// The TLS listener, trusting the generated CA, by host name `localhost`
    /// (the name in the server certificate).
    pub fn tls() -> MqttConnect {
        let e = env();
        MqttConnect::new(e.mqtt_tls_port)
            .host("localhost")
            .tls_ca(e.ca_cert())
    }

    pub fn host(mut self, host: &str) -> Self {
        self.host = host.into();
        self
    }
    pub fn version(mut self, version: MqttVersion) -> Self {
        self.version = version;
        self
    }
    pub fn credentials(mut self, user: &str, password: &str) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }
    pub fn tls_ca(mut self, ca: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(ca.into());
        self
    }
    pub fn tls_client(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_client = Some((cert.into(), key.into()));
        self
    }
    pub fn client_id(mut self, id: &str) -> Self {
        self.client_id = id.into();
        self
    }
    pub fn clean(mut self, clean: bool) -> Self {
        self.clean = clean;
        self
    }

    fn transport(&self) -> anyhow::Result<Option<Transport>> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let ca = std::fs::read(ca).with_context(|| format!("read {}", ca.display()))?;
        let client_auth = match &self.tls_client {
            Some((cert, key)) => Some((
                std::fs::read(cert).with_context(|| format!("read {}", cert.display()))?,
                std::fs::read(key).with_context(|| format!("read {}", key.display()))?,
            )),
            None => None,
        };
        Ok(Some(Transport::Tls(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        })))
    }
}

/// A message a subscription received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    /// MQTT 5 only.
    pub content_type: Option<String>,
    /// MQTT 5 only.
    pub user_properties: Vec<(String, String)>,
}

/// What the event-loop task has seen, for [`MqttClient::wait_acked`].
#[derive(Default)]
struct Counters {
    /// Publishes handed to the client.
    requested: AtomicU64,
    /// Of those, QoS 1 and 2.
    requested_acked: AtomicU64,
    /// PUBLISH packets written to the socket.
    sent: AtomicU64,
    /// PUBACK (QoS 1) and PUBCOMP (QoS 2) received.
    acked: AtomicU64,
    subacks: AtomicU64,
    last_error: Mutex<Option<String>>,
}

enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// One MQTT connection with its event loop running in a task. Reconnects by
/// itself if the broker goes away after the first connection.
pub struct MqttClient {
    client: Client,
    counters: Arc<Counters>,
    incoming: mpsc::UnboundedReceiver<Received>,
    task: JoinHandle<()>,
}

/// A client used to publish.
pub type Publisher = MqttClient;
/// A client used to subscribe.
pub type Subscriber = MqttClient;

fn qos_of(qos: u8) -> rumqttc::QoS {
    match qos {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        2 => rumqttc::QoS::ExactlyOnce,
        _ => panic!("QoS {qos} does not exist"),
    }
}

fn qos5_of(qos: u8) -> rumqttc::v5::mqttbytes::QoS {
    use rumqttc::v5::mqttbytes::QoS;
    match qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        2 => QoS::ExactlyOnce,
        _ => panic!("QoS {qos} does not exist"),
    }
}

impl MqttClient {
    /// Connects and waits for the CONNACK; an error if the broker refuses
    /// (e.g. a wrong password) or cannot be reached.
    pub async fn connect(opts: MqttConnect) -> anyhow::Result<MqttClient> {
        let counters = Arc::new(Counters::default());
        let (tx, incoming) = mpsc::unbounded_channel();
        let (connected_tx, connected_rx) = oneshot::channel();
        let transport = opts.transport()?;
        let (client, task) = match opts.version {
            MqttVersion::V311 => {
                let mut o = rumqttc::MqttOptions::new(&opts.client_id, &opts.host, opts.port);
                o.set_keep_alive(Duration::from_secs(30))
                    .set_clean_session(opts.clean)
                    .set_max_packet_size(MAX_PACKET, MAX_PACKET);
                if let Some((u, p)) = &opts.credentials {
                    o.set_credentials(u, p);
                }
                if let Some(t) = transport {
                    o.set_transport(t);
                }
                let (client, eventloop) = rumqttc::AsyncClient::new(o, 1000);
                let task = tokio::spawn(drive_v4(eventloop, counters.clone(), tx, connected_tx));
                (Client::V4(client), task)
            }
            MqttVersion::V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(&opts.client_id, &opts.host, opts.port);
                o.set_keep_alive(Duration::from_secs(30))
                    .set_clean_start(opts.clean)
                    .set_max_packet_size(Some(MAX_PACKET as u32));
                if let Some((u, p)) = &opts.credentials {
                    o.set_credentials(u, p);
                }
                if let Some(t) = transport {
                    o.set_transport(t);
                }
                let (client, eventloop) = rumqttc::v5::AsyncClient::new(o, 1000);
                let task = tokio::spawn(drive_v5(eventloop, counters.clone(), tx, connected_tx));
                (Client::V5(client), task)
            }
        };
        let target = format!("{}:{} ({:?})", opts.host, opts.port, opts.version);
        match tokio::time::timeout(CONNECT_TIMEOUT, connected_rx).await {
            Ok(Ok(Ok(()))) => Ok(MqttClient {
                client,
                counters,
                incoming,
                task,
            }),
            Ok(Ok(Err(e))) => bail!("MQTT connection to {target} failed: {e}"),
            Ok(Err(_)) => bail!("MQTT event loop for {target} ended before connecting"),
            Err(_) => {
                task.abort();
                bail!("no CONNACK from {target} within {CONNECT_TIMEOUT:?}")
            }
        }
    }

    /// Publishes one message (returns once the client has queued it; see
    /// [`MqttClient::wait_acked`]).
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, qos: u8, retain: bool) {
        self.publish_with_properties(topic, payload, qos, retain, None, &[])
            .await
    }

    /// Publishes with MQTT 5 content type and user properties (which MQTT
    /// 3.1.1 cannot carry: panics if this is a 3.1.1 client and any is set).
    pub async fn publish_with_properties(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        qos: u8,
        retain: bool,
        content_type: Option<&str>,
        user_properties: &[(&str, &str)],
    ) {
        let payload: Vec<u8> = payload.into();
        let result = match &self.client {
            Client::V4(c) => {
                assert!(
                    content_type.is_none() && user_properties.is_empty(),
                    "MQTT 3.1.1 has no content type or user properties"
                );
                c.publish(topic, qos_of(qos), retain, payload)
                    .await
                    .map_err(|e| anyhow!(e))
            }
            Client::V5(c) => {
                let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
                    content_type: content_type.map(str::to_string),
                    user_properties: user_properties
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    ..Default::default()
                };
                c.publish_with_properties(topic, qos5_of(qos), retain, payload, props)
                    .await
                    .map_err(|e| anyhow!(e))
            }
        };
        if let Err(e) = result {
            panic!("publish to {topic:?} failed: {e}");
        }
        self.counters.requested.fetch_add(1, Ordering::SeqCst);
        if qos > 0 {
            self.counters.requested_acked.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Waits until every message published so far has been written out and
    /// every QoS 1/2 one acknowledged by the broker (PUBACK/PUBCOMP); panics
    /// with the counts after `timeout`.
    pub async fn wait_acked(&self, timeout: Duration) {
        let c = &self.counters;
        let deadline = Instant::now() + timeout;
        loop {
            let requested = c.requested.load(Ordering::SeqCst);
            let requested_acked = c.requested_acked.load(Ordering::SeqCst);
            let sent = c.sent.load(Ordering::SeqCst);
            let acked = c.acked.load(Ordering::SeqCst);
            if sent >= requested && acked >= requested_acked {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "after {timeout:?}: {sent}/{requested} publishes sent, \
                     {acked}/{requested_acked} acknowledged; last error: {:?}",
                    self.last_error()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Subscribes and waits for the SUBACK.
    pub async fn subscribe(&self, filter: &str, qos: u8) {
        let before = self.counters.subacks.load(Ordering::SeqCst);
        let result = match &self.client {
            Client::V4(c) => c
                .subscribe(filter, qos_of(qos))
                .await
                .map_err(|e| anyhow!(e)),
            Client::V5(c) => c
                .subscribe(filter, qos5_of(qos))
                .await
                .map_err(|e| anyhow!(e)),
        };
        if let Err(e) = result {
            panic!("subscribe to {filter:?} failed: {e}");
        }
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        while self.counters.subacks.load(Ordering::SeqCst) <= before {
            assert!(
                Instant::now() < deadline,
                "no SUBACK for {filter:?}; last error: {:?}",
                self.last_error()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The next message on this client's subscriptions, or `None` after
    /// `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Received> {
        tokio::time::timeout(timeout, self.incoming.recv())
            .await
            .ok()
            .flatten()
    }

    /// The last connection error since connecting (the client reconnects by
    /// itself).
    pub fn last_error(&self) -> Option<String> {
        self.counters
            .last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or(None)
    }

    /// Waits for outstanding acknowledgements (up to 30 s), then sends
    /// DISCONNECT.
    pub async fn disconnect(self) {
        self.wait_acked(Duration::from_secs(30)).await;
        let _ = match &self.client {
            Client::V4(c) => c.disconnect().await.map_err(|e| anyhow!(e)),
            Client::V5(c) => c.disconnect().await.map_err(|e| anyhow!(e)),
        };
        // Give the event loop a moment to write DISCONNECT before the task
        // is aborted on drop.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for MqttClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes one message on `127.0.0.1:port` (MQTT 5, anonymous) and returns
/// once the broker has it (acknowledged for QoS 1/2).
pub async fn publish(port: u16, topic: &str, payload: impl Into<Vec<u8>>, qos: u8, retain: bool) {
    let client = MqttClient::connect(MqttConnect::new(port))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    client.publish(topic, payload, qos, retain).await;
    client.disconnect().await;
}

/// After the first CONNACK, errors are recorded and the loop keeps polling,
/// which makes rumqttc reconnect (brokers are stopped on purpose in fault
/// tests). Before it, the first error is the answer to `connect`.
async fn handle_error(
    counters: &Counters,
    connected: &mut Option<oneshot::Sender<Result<(), String>>>,
    error: String,
) -> bool {
    if let Some(tx) = connected.take() {
        let _ = tx.send(Err(error));
        return false;
    }
    if let Ok(mut last) = counters.last_error.lock() {
        *last = Some(error);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    true
}

async fn drive_v4(
    mut eventloop: rumqttc::EventLoop,
    counters: Arc<Counters>,
    tx: mpsc::UnboundedSender<Received>,
    connected: oneshot::Sender<Result<(), String>>,
) {
    use rumqttc::{Event, Outgoing, Packet};
    let mut connected = Some(connected);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Some(c) = connected.take() {
                    let _ = c.send(Ok(()));
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let _ = tx.send(Received {
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                    qos: p.qos as u8,
                    retain: p.retain,
                    content_type: None,
                    user_properties: Vec::new(),
                });
            }
            Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => {
                counters.acked.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                counters.subacks.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                counters.sent.fetch_add(1, Ordering::SeqCst);
            }
            Ok(_) => {}
            Err(e) => {
                if !handle_error(&counters, &mut connected, e.to_string()).await {
                    return;
                }
            }
        }
    }
}

async fn drive_v5(
    mut eventloop: rumqttc::v5::EventLoop,
    counters: Arc<Counters>,
    tx: mpsc::UnboundedSender<Received>,
    connected: oneshot::Sender<Result<(), String>>,
) {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::Event;
    use rumqttc::Outgoing;
    let mut connected = Some(connected);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if let Some(c) = connected.take() {
                    let _ = c.send(Ok(()));
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let props = p.properties.unwrap_or_default();
                let _ = tx.send(Received {
                    topic: String::from_utf8_lossy(&p.topic).into_owned(),
                    payload: p.payload.to_vec(),
                    qos: p.qos as u8,
                    retain: p.retain,
                    content_type: props.content_type,
                    user_properties: props.user_properties,
                });
            }
            Ok(Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_))) => {
                counters.acked.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                counters.subacks.fetch_add(1, Ordering::SeqCst);
            }
            Ok(Event::Outgoing(Outgoing::Publish(_))) => {
                counters.sent.fetch_add(1, Ordering::SeqCst);
            }
            Ok(_) => {}
            Err(e) => {
                if !handle_error(&counters, &mut connected, e.to_string()).await {
                    return;
                }
            }
        }
    }
}
