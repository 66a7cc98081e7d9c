//! MQTT in: connects with rumqttc (MQTT 5 or 3.1.1, TCP/TLS/websockets),
//! subscribes, and hands every publish to the pipeline together with a
//! token to acknowledge it later.
//!
//! Acknowledgements are manual: the broker only forgets a QoS 1/2 message
//! when Kafka has it. Each message handed on holds [`Room`] until it is
//! done: a permit of a semaphore sized `bridge.max_in_flight`, and its
//! payload's bytes of one sized `bridge.max_in_flight_mb` (a count alone
//! lets large messages take gigabytes). Messages that arrive while there
//! is no room wait in a small buffer (256 messages, or a quarter of the
//! byte bound); when that is full the reader stops polling the connection,
//! so a slow Kafka slows the broker down instead of filling our memory.
//!
//! The waiting buffer stays bounded while acknowledgements are queued. A
//! broker is meant to stop sending at our Receive Maximum
//! (`bridge.max_in_flight`), but Mosquitto 2.0.11 (Debian 12's) does not
//! once acknowledgements flow: acking its oldest in-flight message moves up
//! to a whole window of queued messages into flight (`database.c`,
//! `db__message_delete_outgoing`). Polling then reads as fast as the broker
//! sends, and the load benchmark saw 65,000 messages pile up here. Not
//! polling leaves acknowledgements queued in rumqttc instead (it writes one
//! per poll, rumqtt#810), which costs a fraction of a message each.
//!
//! Queuing an acknowledgement never waits for the reader, so the pipeline
//! always frees permits and a reader parked on the buffer always wakes (the
//! deadlock a load benchmark once found was an `ack().await` blocked on a
//! full request channel). Should acknowledgements pile up beyond four
//! windows, the reader polls regardless and the buffer grows past its bound:
//! each unsent acknowledgement is a message the broker would send again
//! after a crash, and a poll writes only one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use crate::config::{MqttSettings, MqttVersion, Transport};
use crate::message::{now_ms, MqttMessage};

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("MQTT TLS setup: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("MQTT broker {addr} refused the connection: {reason}")]
    Refused { addr: String, reason: String },
    #[error("MQTT broker {addr} refused the subscription to {filter:?}: {reason}")]
    SubscriptionRefused {
        addr: String,
        filter: String,
        reason: String,
    },
    #[error("MQTT connection to {addr} lost and mqtt.reconnect_on_failure is false: {reason}")]
    Lost { addr: String, reason: String },
}

/// One received message and what it takes to acknowledge it.
pub struct Inbound {
    pub message: MqttMessage,
    pub ack: AckToken,
}

/// Packet ids the bridge's own requests (SUBSCRIBE, UNSUBSCRIBE) cycle
/// through on an MQTT 5 connection.
const OWN_PACKET_IDS: u16 = 16;

/// UNSUBSCRIBEs a clean session's drain keeps unacknowledged: rumqttc
/// hands out its ids from a cycle of [`OWN_PACKET_IDS`] (MQTT 3.1.1: 100)
/// without checking which are in use, so all of many filters at once
/// would reuse ids a broker may refuse (0x91) while it goes on sending
/// that filter's messages; one at a time would cost a round trip per
/// filter, each behind the backlog the reader is still bridging. Two ids
/// are left for a SUBSCRIBE the stop found in flight.
const UNSUBSCRIBES_IN_FLIGHT: usize = OWN_PACKET_IDS as usize - 2;

/// Acknowledges one message; dropping it without [`Acker::ack`] leaves the
/// message unacknowledged (the broker redelivers it to a persistent
/// session).
pub struct AckToken {
    generation: u64,
    inner: AckInner,
    _room: Room,
}

/// What a message handed on holds until it is done: a place in
/// `bridge.max_in_flight` and its payload's bytes (at most all) of
/// `bridge.max_in_flight_mb`.
struct Room {
    /// Declared first, so back before `_place`: a reader that sees every
    /// place back finds every byte back too.
    bytes: OwnedSemaphorePermit,
    _place: OwnedSemaphorePermit,
    stats: Arc<crate::metrics::Stats>,
}

impl Room {
    fn new(
        place: OwnedSemaphorePermit,
        bytes: OwnedSemaphorePermit,
        stats: Arc<crate::metrics::Stats>,
    ) -> Room {
        stats.in_flight_bytes.add(bytes.num_permits() as u64);
        Room {
            bytes,
            _place: place,
            stats,
        }
    }
}

impl Drop for Room {
    fn drop(&mut self) {
        self.stats
            .in_flight_bytes
            .sub(self.bytes.num_permits() as u64);
    }
}

/// Waits for a place and `need` bytes. Waiting for a place first and bytes
/// second holds no bytes while places are short; only the reader takes
/// either, so neither wait can starve the other.
async fn room_for(
    places: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    need: u32,
    stats: Arc<crate::metrics::Stats>,
) -> Result<Room, tokio::sync::AcquireError> {
    let place = places.acquire_owned().await?;
    let bytes = bytes.acquire_many_owned(need).await?;
    Ok(Room::new(place, bytes, stats))
}

/// Packet id and QoS, all an acknowledgement needs: a message in flight
/// keeps these rather than rumqttc's whole `Publish`.
enum AckInner {
    None,
    V311(u16, rumqttc::QoS),
    V5(u16, v5::mqttbytes::QoS),
}

#[derive(Clone)]
enum Client {
    V311(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

/// Sends acknowledgements; cheap to clone.
#[derive(Clone)]
pub struct Acker {
    client: Client,
    generation: Arc<AtomicU64>,
    /// Acknowledgements queued in rumqttc and not yet written.
    unsent: Arc<AtomicI64>,
}

impl Acker {
    /// Queues the acknowledgement. A message received on an earlier
    /// connection is not acknowledged on this one: its packet id means
    /// nothing to the broker any more (a persistent session redelivers it).
    pub async fn ack(&self, token: AckToken) {
        if token.generation != self.generation.load(Ordering::Acquire) {
            tracing::debug!("not acknowledging a message from an earlier connection");
            return;
        }
        // Counted before queuing: the event loop may write it (and the
        // reader count it written) before `ack` returns.
        self.unsent.fetch_add(1, Ordering::AcqRel);
        let result = match (&self.client, &token.inner) {
            (Client::V311(c), &AckInner::V311(pkid, qos)) => {
                let mut p = rumqttc::Publish::new("", qos, Vec::new());
                p.pkid = pkid;
                c.ack(&p).await.map_err(|e| e.to_string())
            }
            (Client::V5(c), &AckInner::V5(pkid, qos)) => {
                let mut p = v5::mqttbytes::v5::Publish::new("", qos, Bytes::new(), None);
                p.pkid = pkid;
                c.ack(&p).await.map_err(|e| e.to_string())
            }
            // QoS 0: nothing to send.
            _ => Err(String::new()),
        };
        if result.is_err() {
            self.unsent.fetch_sub(1, Ordering::AcqRel);
        }
        if let Err(e) = result.as_ref().map_err(String::as_str) {
            if !e.is_empty() {
                tracing::warn!(error = %e, "could not queue an MQTT acknowledgement");
            }
        }
    }
}

/// A handle to stop reading and to close the connection.
#[derive(Clone)]
pub struct Control {
    client: Client,
    topics: Vec<String>,
    clean_session: bool,
    unsubscribing: Arc<AtomicBool>,
    hand_on: Arc<AtomicBool>,
}

impl Control {
    /// Call before a persistent session's stop that will read what the
    /// reader hands on: it then hands on the QoS 0 messages it holds. A
    /// stop that reads nothing more (Kafka failed) leaves them counted as
    /// not bridged instead.
    pub fn hand_on_held(&self) {
        self.hand_on.store(true, Ordering::Release);
    }

    /// Stops new messages at the broker. With a clean session we
    /// unsubscribe, so the broker stops sending; with a persistent
    /// session unsubscribing would make the broker forget what it should
    /// keep for us while we are down, so the reader simply stops
    /// forwarding and the broker redelivers the rest next time.
    pub async fn stop_subscriptions(&self) {
        if !self.clean_session {
            return;
        }
        // Before the request: a reconnect from here on must not subscribe
        // again (rumqttc does not carry an UNSUBSCRIBE over a reconnect).
        self.unsubscribing.store(true, Ordering::Release);
        // The first few filters; the reader sends the next one as each is
        // acknowledged.
        for topic in self.topics.iter().take(UNSUBSCRIBES_IN_FLIGHT) {
            unsubscribe(&self.client, topic).await;
        }
    }

    pub async fn disconnect(&self) {
        let r = match &self.client {
            Client::V311(c) => c.disconnect().await.map_err(|e| e.to_string()),
            Client::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
        };
        if let Err(e) = r {
            tracing::debug!(error = %e, "disconnect on shutdown");
        }
    }
}

/// Received messages held without room in the pipeline, at most.
pub const WAITING_CAP: usize = 256;

/// How long the broker must stay silent after confirming our unsubscribe
/// before the drain at shutdown ends. Mosquitto sends what it queued for
/// us right behind the UNSUBACK, so a quarter second is ample on any link
/// that keeps up with the bridge at all.
const QUIET_AFTER_UNSUBSCRIBE: Duration = Duration::from_millis(250);

/// What the reader reports besides messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Connecting,
    /// Connected and every subscription granted.
    Ready,
    /// The broker confirmed our unsubscribe at shutdown, and every message
    /// it sent us since is handed to the pipeline.
    Unsubscribed,
    /// A persistent session's stop: the QoS 0 messages received before it
    /// are handed to the pipeline; the broker keeps QoS 1 and 2.
    HandedOn,
    Disconnected,
}

/// A received message waiting for room: the message, what acknowledges
/// it, and the connection generation it came on.
type Held = (MqttMessage, AckInner, u64);

/// The running reader: poll it to completion on a task.
pub struct Reader {
    events: EventLoop,
    client: Client,
    topics: Vec<String>,
    qos: u8,
    reconnect: bool,
    addr: String,
    generation: Arc<AtomicU64>,
    permits: Arc<Semaphore>,
    /// `bridge.max_in_flight`: all of `permits`, none of ours outstanding.
    window: usize,
    /// Payload bytes, `bridge.max_in_flight_mb` of them.
    bytes: Arc<Semaphore>,
    /// All of `bytes`; also the most one message takes, so that one larger
    /// than the bound still passes, alone.
    bytes_cap: usize,
    /// Payload bytes in `waiting`.
    waiting_bytes: usize,
    /// Set once a clean session's drain has unsubscribed (`Control`).
    unsubscribing: Arc<AtomicBool>,
    /// The MQTT 5 subscription identifier of each of `topics`
    /// ([`subscription_id`]), which the broker puts on what it sends for
    /// that filter, so a message says which filter it came for
    /// (`MqttMessage::subscribed`).
    subscription_ids: Vec<usize>,
    /// The filter (index into `topics`) whose SUBACK is awaited where each
    /// has a SUBSCRIBE of its own (with its identifier); the next follows
    /// it, and ready comes after the last.
    subscribing: Option<usize>,
    /// Received, waiting for room.
    waiting: VecDeque<Held>,
    unsent: Arc<AtomicI64>,
    /// Poll even with a full buffer once this many acknowledgements are
    /// unsent (four windows, at least 65,536): each is a message the broker
    /// sends again after a crash, and rumqttc holds it in 216 bytes.
    unsent_cap: i64,
    stats: Arc<crate::metrics::Stats>,
    tx: mpsc::UnboundedSender<Inbound>,
    state: watch::Sender<State>,
    /// Whether the broker forgets the session when the connection ends.
    clean_session: bool,
    /// Becomes true when the pipeline is draining: stop forwarding.
    stopping: watch::Receiver<bool>,
    /// Messages read but not handed on because the bridge was stopping:
    /// QoS 0, then QoS 1 and 2. Said when the reader ends, as QoS 0 ones
    /// are gone for good.
    not_bridged: [u64; 2],
    /// A persistent session's stop has handed on what it must (or, with
    /// `hand_on` unset, found that nobody would read it).
    handed_on: bool,
    /// Set by [`Control::hand_on_held`].
    hand_on: Arc<AtomicBool>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.drop_waiting();
        let [qos0, qos12] = self.not_bridged;
        if qos0 > 0 {
            tracing::warn!(
                qos0,
                qos12,
                "stopping: QoS 0 messages received as the reader ended were not bridged \
                 (no broker delivers QoS 0 again)"
            );
        } else if qos12 > 0 && self.clean_session {
            tracing::warn!(
                qos12,
                "stopping: QoS 1/2 messages received as the reader ended were not bridged \
                 (a clean session's broker does not send them again)"
            );
        } else if qos12 > 0 {
            tracing::info!(
                qos12,
                "stopping: QoS 1/2 messages received as the reader ended were not bridged \
                 nor acknowledged (a persistent session gets them again)"
            );
        }
    }
}

enum EventLoop {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

impl EventLoop {
    /// Drops the SUBSCRIBEs rumqttc took from its request channel when the
    /// connection failed, to send first on the next (it keeps them where
    /// the broker resumes the session).
    fn forget_pending_subscriptions(&mut self) {
        match self {
            EventLoop::V311(e) => e
                .pending
                .retain(|r| !matches!(r, rumqttc::Request::Subscribe(_))),
            EventLoop::V5(e) => e
                .pending
                .retain(|r| !matches!(r, v5::Request::Subscribe(_))),
        }
    }

    /// Forgets the QoS 1 and 2 messages rumqttc read before the connection
    /// failed but has not handed out: it would after the reconnect, and
    /// their acknowledgements would go out on the new connection, where a
    /// persistent session's broker has sent them again or given their
    /// packet ids to other messages. The broker delivers them again. QoS 0
    /// messages stay: nothing acknowledges them, and no broker sends them
    /// twice.
    fn forget_unread_messages(&mut self) -> usize {
        let before;
        let after;
        match self {
            EventLoop::V311(e) => {
                before = e.state.events.len();
                e.state.events.retain(|ev| {
                    !matches!(ev, rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))
                        if p.qos != rumqttc::QoS::AtMostOnce)
                });
                after = e.state.events.len();
            }
            EventLoop::V5(e) => {
                before = e.state.events.len();
                e.state.events.retain(|ev| {
                    !matches!(
                        ev,
                        v5::Event::Incoming(v5::mqttbytes::v5::Packet::Publish(p))
                            if p.qos != v5::mqttbytes::QoS::AtMostOnce
                    )
                });
                after = e.state.events.len();
            }
        }
        before - after
    }

    /// Makes rumqttc answer a PUBREL for any packet id with PUBCOMP. A QoS
    /// 2 message whose PUBREC an earlier connection (or an earlier process)
    /// sent comes back as a PUBREL on the resumed persistent session, as
    /// MQTT requires; rumqttc forgets the ids it owes a PUBCOMP when a
    /// connection drops, calls such a PUBREL unsolicited and drops the
    /// connection, and the broker sends it again on the next one
    /// (rumqtt#664). Marking one id per failure took a reconnect per PUBREL
    /// and, with two in one read, never ended (the first, answered in a
    /// write the failure cut off, was forgotten again). Marking every id
    /// takes none: a new QoS 2 message with a marked id is handled as
    /// usual, and only the broker's own PUBRELs are ever answered.
    fn expect_any_pubrel(&mut self) {
        match self {
            EventLoop::V311(e) => {
                let before = e.state.events.len();
                for pkid in 1..=u16::MAX {
                    let mut fake =
                        rumqttc::Publish::new("", rumqttc::QoS::ExactlyOnce, Vec::<u8>::new());
                    fake.pkid = pkid;
                    let _ = e
                        .state
                        .handle_incoming_packet(rumqttc::Packet::Publish(fake));
                    // The marking's own event is taken back at once: no
                    // message reaches the pipeline, and the queue stays small.
                    e.state.events.truncate(before);
                }
            }
            EventLoop::V5(e) => {
                use v5::mqttbytes::v5::{Packet, Publish};
                let before = e.state.events.len();
                for pkid in 1..=u16::MAX {
                    let mut fake =
                        Publish::new("", v5::mqttbytes::QoS::ExactlyOnce, Vec::<u8>::new(), None);
                    fake.pkid = pkid;
                    let _ = e.state.handle_incoming_packet(Packet::Publish(fake));
                    e.state.events.truncate(before);
                }
            }
        }
    }
}

enum Event {
    Connected {
        session_present: bool,
        /// MQTT 5: the broker takes subscription identifiers (absent from
        /// its CONNACK means yes); false for 3.1.1.
        ids_taken: bool,
    },
    Refused(String),
    Subscribed {
        refused: Vec<String>,
        /// The QoS the broker granted each filter it accepted.
        granted: Vec<u8>,
    },
    Publish(Box<(MqttMessage, AckInner)>),
    /// A PUBACK or PUBREC we queued has been written.
    AckSent,
    Unsubscribed,
    Other,
}

/// Builds the client from settings. Nothing touches the network until the
/// reader runs.
pub fn connect(
    settings: &MqttSettings,
    max_in_flight: usize,
    max_in_flight_bytes: usize,
    stats: Arc<crate::metrics::Stats>,
    tx: mpsc::UnboundedSender<Inbound>,
    stopping: watch::Receiver<bool>,
) -> Result<(Reader, Acker, Control, watch::Receiver<State>), MqttError> {
    let host = settings.host.clone().unwrap_or_default();
    let client_id = settings
        .client_id
        .clone()
        .unwrap_or_else(|| format!("uns-kafka-{}", uuid::Uuid::new_v4().simple()));
    let transport = transport(settings)?;
    let (broker_host, addr) = match settings.transport {
        Transport::Tcp => (host.clone(), format!("{host}:{}", settings.port)),
        Transport::Websockets => {
            let scheme = if settings.tls.is_some() { "wss" } else { "ws" };
            let url = format!(
                "{scheme}://{}:{}{}",
                settings.url_host(),
                settings.port,
                settings.websocket_path
            );
            (url.clone(), url)
        }
    };
    let keep_alive = Duration::from_secs(settings.keep_alive);
    // Queuing an acknowledgement must never wait for the event loop (which
    // may be waiting for the pipeline): a bound far above what can be owed.
    // flume allocates as it fills, so the bound costs nothing.
    let capacity = max_in_flight.saturating_mul(16).max(1 << 20);
    let (events, client) = match settings.version {
        MqttVersion::V311 => {
            let mut o = rumqttc::MqttOptions::new(client_id, broker_host, settings.port);
            o.set_keep_alive(keep_alive)
                .set_clean_session(settings.clean_session)
                .set_manual_acks(true)
                .set_transport(transport)
                .set_request_channel_capacity(capacity)
                .set_max_packet_size(256 * 1024 * 1024, 256 * 1024 * 1024);
            if let Some(user) = &settings.username {
                let pass = settings.password.as_ref().map(|p| p.expose()).unwrap_or("");
                o.set_credentials(user.clone(), pass.to_owned());
            }
            let (c, e) = rumqttc::AsyncClient::new(o, capacity);
            (EventLoop::V311(Box::new(e)), Client::V311(c))
        }
        MqttVersion::V5 => {
            let mut o = v5::MqttOptions::new(client_id, broker_host, settings.port);
            o.set_keep_alive(keep_alive)
                .set_clean_start(settings.clean_session)
                .set_manual_acks(true)
                .set_transport(transport)
                .set_request_channel_capacity(capacity)
                .set_max_packet_size(Some(256 * 1024 * 1024))
                .set_receive_maximum(Some(max_in_flight.min(65_535) as u16))
                // rumqttc sizes a table of our own unacknowledged publishes
                // by this (65,535 entries, 14 MB, by default); the bridge
                // publishes nothing, and its subscribe packets need an id
                // or two.
                .set_outgoing_inflight_upper_limit(OWN_PACKET_IDS);
            if settings.session_expiry > 0 {
                o.set_session_expiry_interval(Some(settings.session_expiry));
            }
            if let Some(user) = &settings.username {
                let pass = settings.password.as_ref().map(|p| p.expose()).unwrap_or("");
                o.set_credentials(user.clone(), pass.to_owned());
            }
            let (c, e) = v5::AsyncClient::new(o, capacity);
            (EventLoop::V5(Box::new(e)), Client::V5(c))
        }
    };
    let generation = Arc::new(AtomicU64::new(0));
    let unsent = Arc::new(AtomicI64::new(0));
    let unsubscribing = Arc::new(AtomicBool::new(false));
    let hand_on = Arc::new(AtomicBool::new(false));
    let (state_tx, state_rx) = watch::channel(State::Connecting);
    let reader = Reader {
        events,
        client: client.clone(),
        topics: settings.topics.clone(),
        qos: settings.qos,
        reconnect: settings.reconnect_on_failure,
        addr,
        generation: generation.clone(),
        permits: Arc::new(Semaphore::new(max_in_flight)),
        window: max_in_flight,
        bytes: Arc::new(Semaphore::new(max_in_flight_bytes)),
        bytes_cap: max_in_flight_bytes,
        waiting_bytes: 0,
        unsubscribing: unsubscribing.clone(),
        subscription_ids: settings.topics.iter().map(|t| subscription_id(t)).collect(),
        subscribing: None,
        waiting: VecDeque::new(),
        unsent: unsent.clone(),
        unsent_cap: max_in_flight.saturating_mul(4).clamp(1 << 16, capacity / 2) as i64,
        stats,
        tx,
        state: state_tx,
        stopping,
        clean_session: settings.clean_session,
        not_bridged: [0; 2],
        handed_on: false,
        hand_on: hand_on.clone(),
    };
    let acker = Acker {
        client: client.clone(),
        generation,
        unsent,
    };
    let control = Control {
        client,
        topics: settings.topics.clone(),
        clean_session: settings.clean_session,
        unsubscribing,
        hand_on,
    };
    Ok((reader, acker, control, state_rx))
}

/// Resolves when a stop begins, if `wanted`; never otherwise (nor when the
/// pipeline that would stop us is gone).
async fn stop_to_hand_on(mut stopping: watch::Receiver<bool>, wanted: bool) {
    if !wanted || stopping.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Waits `wait` before the next connection attempt; true if shutdown
/// began before or meanwhile, so that SIGTERM does not wait out a backoff
/// of up to 30 s.
async fn pause(mut stopping: watch::Receiver<bool>, wait: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(wait) => false,
        // An error: the pipeline that would stop us is gone.
        _ = stopping.wait_for(|stop| *stop) => true,
    }
}

impl Reader {
    /// Runs until the connection is closed on purpose (Ok) or lost for
    /// good (Err).
    pub async fn run(mut self) -> Result<(), MqttError> {
        if !self.clean_session {
            // An earlier process may owe the session PUBCOMPs.
            self.events.expect_any_pubrel();
        }
        let mut backoff = Backoff::new();
        // When the connection up now was made: one that lasted resets the
        // backoff when it drops.
        let mut connected_at: Option<std::time::Instant> = None;
        // Between a drop and the next CONNACK, a poll is a connection
        // attempt: nothing may cut it short.
        let mut connected = false;
        // Set at the (last) SUBACK: connected and subscribed at least once.
        let mut connected_once = false;
        let mut unsubscribed = 0;
        let mut announced = false;
        // Said once, not at each filter's SUBACK.
        let mut warned_grant = false;
        loop {
            if *self.stopping.borrow() {
                self.hand_on_at_stop();
            }
            // Hand on what the pipeline has room for.
            while let Some(room) = self.try_room() {
                if !self.forward(room) {
                    return Ok(());
                }
            }
            let unsent = self.unsent.load(Ordering::Acquire);
            self.stats.mqtt_acks_unsent.set(unsent.max(0) as u64);
            self.stats.mqtt_waiting.set(self.waiting.len() as u64);
            // A persistent session's stop, seen where the reader waits.
            let stop = stop_to_hand_on(
                self.stopping.clone(),
                !self.handed_on && !self.clean_session,
            );
            // With the buffer full, wait for room (or a persistent
            // session's stop) only: the broker keeps the rest. With
            // messages waiting and nothing to write, for a
            // room or a packet, whichever comes first: a QoS 0 message
            // frees its room without writing anything, so a poll on a
            // quiet connection alone would hold them until the next packet
            // (a keep-alive away). Dropping a pending poll is safe while no
            // acknowledgement is queued: it is waiting to read, or at worst
            // flushing bytes that stay buffered.
            let next = if self.waiting_full() && unsent < self.unsent_cap {
                let room = self.wait_for_room();
                tokio::select! {
                    biased;
                    _ = stop => Next::Stop,
                    room = room => Next::Room(room),
                }
            } else if unsubscribed >= self.topics.len()
                && !announced
                && self.waiting.is_empty()
                && unsent == 0
            {
                // Unsubscribed, but the broker may still send what it had
                // queued for us (MQTT lets it): with a clean session that is
                // ours to bridge or nobody's, so the pipeline hears
                // `Unsubscribed` only once everything is handed on and the
                // broker has gone quiet. Quiet counts only with every
                // message of ours acknowledged: before that, a broker at its
                // flow-control limit is silent with more to send. The last
                // permit may come back with no packet (a QoS 0 message, or
                // one of an earlier connection, is acknowledged by writing
                // nothing), so it is waited for as well as the next packet.
                if self.permits.available_permits() == self.window {
                    tokio::select! {
                        biased;
                        event = self.poll() => Next::Event(event),
                        _ = tokio::time::sleep(QUIET_AFTER_UNSUBSCRIBE) => Next::Quiet,
                    }
                } else {
                    let permits = self.permits.clone();
                    let window = u32::try_from(self.window).unwrap_or(u32::MAX);
                    tokio::select! {
                        biased;
                        // All back: dropped, the loop looks again.
                        _ = permits.acquire_many_owned(window) => Next::AllBack,
                        event = self.poll() => Next::Event(event),
                    }
                }
            } else if !self.waiting.is_empty() && unsent == 0 && connected {
                let room = self.wait_for_room();
                tokio::select! {
                    biased;
                    _ = stop => Next::Stop,
                    room = room => Next::Room(room),
                    event = self.poll() => Next::Event(event),
                }
            } else if unsent == 0 && connected {
                tokio::select! {
                    biased;
                    _ = stop => Next::Stop,
                    event = self.poll() => Next::Event(event),
                }
            } else {
                Next::Event(self.poll().await)
            };
            let polled = match next {
                Next::Room(Ok(room)) => {
                    if !self.forward(room) {
                        return Ok(());
                    }
                    continue;
                }
                Next::Room(Err(_)) => return Ok(()),
                Next::AllBack => continue,
                Next::Stop => continue,
                Next::Quiet => {
                    announced = true;
                    let _ = self.state.send(State::Unsubscribed);
                    continue;
                }
                Next::Event(polled) => polled,
            };
            let event = match polled {
                Ok(e) => e,
                Err(closed) => {
                    connected = false;
                    let reason = match closed {
                        Closed::OnPurpose => {
                            // Said on purpose, still true: a scrape during
                            // the drain must not show a connection that is
                            // gone.
                            self.stats.mqtt_connected.set(0);
                            return Ok(());
                        }
                        Closed::Error(reason) => reason,
                    };
                    // Acknowledgements for messages of the lost connection
                    // would otherwise queue up during the backoff and be
                    // written on the next one, where a broker that lost the
                    // session has given their packet ids to new messages,
                    // not yet in Kafka.
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    // Subscribing starts over on the next connection; a
                    // SUBSCRIBE of this one that rumqttc kept to send first
                    // there would bring a SUBACK taken for another filter's.
                    self.events.forget_pending_subscriptions();
                    self.subscribing = None;
                    if !self.clean_session {
                        // A clean session's broker forgets them: bridged,
                        // they are not lost (an ack of theirs on the new
                        // connection can only come early for a message a
                        // crash would lose anyway).
                        let forgotten = self.events.forget_unread_messages();
                        if forgotten > 0 {
                            tracing::debug!(
                                forgotten,
                                "messages of the lost connection left to the broker to send again"
                            );
                        }
                        // rumqttc forgot them with the connection.
                        self.events.expect_any_pubrel();
                    }
                    let _ = self.state.send(State::Disconnected);
                    self.stats.mqtt_connected.set(0);
                    if connected_at
                        .take()
                        .is_some_and(|at| at.elapsed() >= Backoff::STABLE)
                    {
                        backoff.reset();
                    }
                    if !self.reconnect {
                        return Err(MqttError::Lost {
                            addr: self.addr.clone(),
                            reason,
                        });
                    }
                    let wait = backoff.next();
                    if connected_once {
                        tracing::warn!(broker = %self.addr, error = %reason, retry_in_ms = wait.as_millis() as u64, "MQTT connection lost; reconnecting");
                    } else {
                        tracing::warn!(broker = %self.addr, error = %reason, retry_in_ms = wait.as_millis() as u64, "cannot connect to MQTT broker; retrying");
                    }
                    if pause(self.stopping.clone(), wait).await {
                        self.hand_on_at_stop();
                        return Ok(());
                    }
                    continue;
                }
            };
            match event {
                Event::Connected {
                    session_present,
                    ids_taken,
                } => {
                    self.generation.fetch_add(1, Ordering::AcqRel);
                    // rumqttc keeps queued acknowledgements across a
                    // reconnect and writes them (as harmless acks of
                    // redelivered packet ids); counting restarts here.
                    self.unsent.store(0, Ordering::Release);
                    // Not a reset of the backoff yet: a broker that takes
                    // the connection and drops it at once (another client
                    // with our client id taking the session over, a quota)
                    // would be asked again every 250 ms for ever.
                    connected_at = Some(std::time::Instant::now());
                    connected = true;
                    self.stats.mqtt_connected.set(1);
                    self.stats.mqtt_connections.add(1);
                    tracing::info!(broker = %self.addr, session_present, "connected to MQTT broker");
                    if *self.stopping.borrow() {
                        continue;
                    }
                    if self.unsubscribing.load(Ordering::Acquire) {
                        // Lost during a clean session's drain: the new
                        // session has no subscriptions, and subscribing
                        // would bring every retained message again.
                        unsubscribed = self.topics.len();
                        continue;
                    }
                    if session_present && connected_once && matches!(self.client, Client::V311(_)) {
                        // The session kept this run's subscriptions. MQTT
                        // 3.1.1 re-sends every retained message on a
                        // subscribe, each a duplicate in Kafka; MQTT 5 asks
                        // for them on new subscriptions only (below).
                        self.say_ready();
                        continue;
                    }
                    // Subscribe on every other connection: the broker may
                    // have lost our session, and the first of a run may find
                    // one made with other filters.
                    self.subscribing = None;
                    if ids_taken {
                        self.subscribe_one(0).await;
                    } else {
                        subscribe(&self.client, &self.topics, self.qos, None).await;
                    }
                }
                Event::Refused(reason) => {
                    connected = false;
                    let _ = self.state.send(State::Disconnected);
                    self.stats.mqtt_connected.set(0);
                    if !connected_once || !self.reconnect {
                        return Err(MqttError::Refused {
                            addr: self.addr.clone(),
                            reason,
                        });
                    }
                    let wait = backoff.next();
                    tracing::error!(broker = %self.addr, %reason, "MQTT broker refused the connection; retrying");
                    if pause(self.stopping.clone(), wait).await {
                        self.hand_on_at_stop();
                        return Ok(());
                    }
                }
                Event::Subscribed { refused, granted } => {
                    // A grant below `mqtt.qos` (a broker with `max_qos 0`)
                    // would quietly make the bridge at most once.
                    // 1 for 2 only costs what Kafka's side costs anyway
                    // (a duplicate after a crash).
                    if granted.contains(&1) && self.qos == 2 && !connected_once && !warned_grant {
                        warned_grant = true;
                        tracing::warn!("MQTT broker granted QoS 1 for mqtt.qos 2: a crash or reconnect may bring duplicates");
                    }
                    let downgraded = granted.iter().find(|g| **g == 0 && self.qos > 0).map(|g| {
                        format!(
                            "granted QoS {g}, below mqtt.qos {}: a crash or reconnect would \
                             lose messages; set mqtt.qos: {g} to accept that",
                            self.qos
                        )
                    });
                    if let Some(reason) = refused.first().cloned().or(downgraded) {
                        return Err(MqttError::SubscriptionRefused {
                            addr: self.addr.clone(),
                            filter: match self.subscribing {
                                Some(i) => self.topics[i].clone(),
                                None => self.topics.join(", "),
                            },
                            reason,
                        });
                    }
                    // The next filter's turn, if each has its own SUBACK.
                    if let Some(i) = self.subscribing {
                        if self.subscribe_one(i + 1).await {
                            continue;
                        }
                    }
                    if self.stopping_or_unsubscribing() {
                        // Not every filter is subscribed, and the state
                        // the stop set (`HandedOn`) must stand.
                        continue;
                    }
                    // Ready first, then say so: whoever waits for the log
                    // line and then asks /health must hear the same.
                    self.say_ready();
                    if !connected_once {
                        tracing::info!(topics = ?self.topics, "uns-kafka ready: subscribed to {} topic filter(s)", self.topics.len());
                    }
                    connected_once = true;
                }
                Event::Publish(publish) => {
                    let (message, inner) = *publish;
                    if *self.stopping.borrow() {
                        // Not acknowledged: a persistent session gets QoS 1
                        // and 2 again.
                        self.count_not_bridged(message.qos);
                        continue;
                    }
                    let generation = self.generation.load(Ordering::Acquire);
                    self.stats.received.add(1);
                    self.waiting_bytes += message.payload.len();
                    self.waiting.push_back((message, inner, generation));
                }
                Event::AckSent => {
                    // Never below zero: acks queued before a reconnect.
                    let _ = self
                        .unsent
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                            (n > 0).then(|| n - 1)
                        });
                }
                Event::Unsubscribed => {
                    unsubscribed += 1;
                    // A few at a time, for the packet ids' sake.
                    if let Some(next) = self.topics.get(unsubscribed + UNSUBSCRIBES_IN_FLIGHT - 1) {
                        unsubscribe(&self.client, next).await;
                    }
                }
                Event::Other => {}
            }
        }
    }
}

/// The subscription identifier of `filter`: FNV-1a of its text, in MQTT 5's
/// 1..=268,435,455. Derived from the filter, not made up per run, because
/// the broker stamps a message with it when it queues the message: what a
/// persistent session held while the bridge was away carries the earlier
/// run's identifiers, and is this run's too where the filter is. So it must
/// not change between versions either (nor use std's hasher, which may).
fn subscription_id(filter: &str) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in filter.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % 268_435_455) as usize + 1
}

/// Unsubscribes from `topic` (a clean session's drain).
async fn unsubscribe(client: &Client, topic: &str) {
    let r = match client {
        Client::V311(c) => c.unsubscribe(topic).await.map_err(|e| e.to_string()),
        Client::V5(c) => c.unsubscribe(topic).await.map_err(|e| e.to_string()),
    };
    if let Err(e) = r {
        tracing::debug!(error = %e, "unsubscribe on shutdown");
    }
}

/// Subscribes to `topics` in one SUBSCRIBE; on MQTT 5 with `id` as its
/// subscription identifier (one covers a whole packet).
async fn subscribe(client: &Client, topics: &[String], qos: u8, id: Option<usize>) {
    let r = match client {
        Client::V311(c) => {
            let q = rumqttc::qos(qos).unwrap_or(rumqttc::QoS::AtLeastOnce);
            c.subscribe_many(
                topics
                    .iter()
                    .map(|t| rumqttc::SubscribeFilter::new(t.clone(), q)),
            )
            .await
            .map_err(|e| e.to_string())
        }
        Client::V5(c) => {
            let q = v5::mqttbytes::qos(qos).unwrap_or(v5::mqttbytes::QoS::AtLeastOnce);
            let filters = topics.iter().map(|t| {
                let mut filter = v5::mqttbytes::v5::Filter::new(t.clone(), q);
                // Retained messages when the subscription is new, not again
                // when a persistent session already has it: the bridge
                // wrote them to Kafka the first time.
                filter.retain_forward_rule = v5::mqttbytes::v5::RetainForwardRule::OnNewSubscribe;
                filter
            });
            match id {
                Some(id) => {
                    let properties = v5::mqttbytes::v5::SubscribeProperties {
                        id: Some(id),
                        user_properties: Vec::new(),
                    };
                    c.subscribe_many_with_properties(filters, properties).await
                }
                None => c.subscribe_many(filters).await,
            }
            .map_err(|e| e.to_string())
        }
    };
    if let Err(e) = r {
        tracing::warn!(error = %e, "could not queue the subscription");
    }
}

impl Reader {
    fn stopping_or_unsubscribing(&self) -> bool {
        *self.stopping.borrow() || self.unsubscribing.load(Ordering::Acquire)
    }

    /// `Ready`, unless a stop has begun: the pipeline waits for the state
    /// the stop sets (`HandedOn`, `Unsubscribed`), and a `Ready` sent over
    /// it before the pipeline looked would hide it (a false "did not hand
    /// on in time" a second later), and tell `/health` a stopping bridge
    /// is ready.
    fn say_ready(&self) {
        if !self.stopping_or_unsubscribing() {
            let _ = self.state.send(State::Ready);
        }
    }

    /// Subscribes to filter `i` alone, with its identifier; false when there
    /// is no such filter, or the bridge is stopping (a filter subscribed
    /// after a clean session's unsubscribe would keep its drain from going
    /// quiet). One at a time: rumqttc hands the bridge's own packet ids from
    /// a small cycle (`OWN_PACKET_IDS`, or the broker's Receive Maximum if
    /// lower) without checking which are still in use, and a broker may
    /// refuse a SUBSCRIBE with one that is.
    async fn subscribe_one(&mut self, i: usize) -> bool {
        if i >= self.topics.len() || self.stopping_or_unsubscribing() {
            self.subscribing = None;
            return false;
        }
        self.subscribing = Some(i);
        let id = self.subscription_ids[i];
        subscribe(&self.client, &self.topics[i..=i], self.qos, Some(id)).await;
        true
    }

    /// A persistent session's stop. The broker sends QoS 1 and 2 again,
    /// but no broker keeps QoS 0: those received and waiting for room are
    /// handed on now, past the window (by at most the waiting buffer), and
    /// the pipeline hears `HandedOn` before it stops taking input. Once;
    /// nothing for a clean session, whose stop drains instead.
    fn hand_on_at_stop(&mut self) {
        if self.handed_on || self.clean_session {
            return;
        }
        self.handed_on = true;
        if !self.hand_on.load(Ordering::Acquire) {
            // Nobody would read them: counted as not bridged by `forward`,
            // or when the reader ends.
            return;
        }
        let waiting = std::mem::take(&mut self.waiting);
        self.waiting_bytes = 0;
        let (qos0, qos12): (Vec<Held>, Vec<Held>) =
            waiting.into_iter().partition(|held| held.0.qos == 0);
        for held in qos12 {
            // Not acknowledged: the broker sends it again.
            self.count_not_bridged(held.0.qos);
        }
        // Room past both bounds for every one of them (by at most the
        // waiting buffer): never short.
        let needs: Vec<u32> = qos0.iter().map(|held| self.need(&held.0)).collect();
        let places = Arc::new(Semaphore::new(qos0.len()));
        let bytes = Arc::new(Semaphore::new(needs.iter().map(|&n| n as usize).sum()));
        for (held, need) in qos0.into_iter().zip(needs) {
            let (Ok(place), Ok(bytes)) = (
                places.clone().try_acquire_owned(),
                bytes.clone().try_acquire_many_owned(need),
            ) else {
                self.count_not_bridged(0);
                continue;
            };
            if !self.hand(held, Room::new(place, bytes, self.stats.clone())) {
                self.count_not_bridged(0);
            }
        }
        self.stats.mqtt_waiting.set(0);
        let _ = self.state.send(State::HandedOn);
    }

    fn count_not_bridged(&mut self, qos: u8) {
        self.not_bridged[usize::from(qos > 0)] += 1;
    }

    /// Counts what still waits as not bridged, and lets it go.
    fn drop_waiting(&mut self) {
        self.waiting_bytes = 0;
        for (m, _, _) in std::mem::take(&mut self.waiting) {
            self.count_not_bridged(m.qos);
        }
    }

    /// Whether the reader stops reading: 256 messages wait, or a quarter of
    /// `bridge.max_in_flight_mb` does (so that the buffer adds at most a
    /// quarter, and one message, to the byte bound).
    fn waiting_full(&self) -> bool {
        self.waiting.len() >= WAITING_CAP
            || (!self.waiting.is_empty() && self.waiting_bytes >= self.bytes_cap / 4)
    }

    /// The bytes `message` takes of the byte bound: its payload, or all of
    /// the bound for a message larger than it.
    fn need(&self, message: &MqttMessage) -> u32 {
        u32::try_from(message.payload.len().min(self.bytes_cap)).unwrap_or(u32::MAX)
    }

    /// Room for the oldest waiting message, if there is some now.
    fn try_room(&self) -> Option<Room> {
        let need = self.need(&self.waiting.front()?.0);
        let place = self.permits.clone().try_acquire_owned().ok()?;
        let bytes = self.bytes.clone().try_acquire_many_owned(need).ok()?;
        Some(Room::new(place, bytes, self.stats.clone()))
    }

    /// Waits for room for the oldest waiting message (of which there must
    /// be one); borrows nothing, so it can race a poll.
    fn wait_for_room(
        &self,
    ) -> impl std::future::Future<Output = Result<Room, tokio::sync::AcquireError>> + 'static {
        let need = self.waiting.front().map_or(0, |held| self.need(&held.0));
        room_for(
            self.permits.clone(),
            self.bytes.clone(),
            need,
            self.stats.clone(),
        )
    }

    /// Hands the oldest waiting message to the pipeline with `room`;
    /// false when the pipeline is gone.
    fn forward(&mut self, room: Room) -> bool {
        if *self.stopping.borrow() {
            // The stop may have come between the reader's look and this
            // call: the room goes back for the hand-on.
            drop(room);
            self.hand_on_at_stop();
            // Not acknowledged: a persistent session gets QoS 1 and 2 again.
            self.drop_waiting();
            return true;
        }
        match self.waiting.pop_front() {
            Some(held) => {
                self.waiting_bytes -= held.0.payload.len();
                self.hand(held, room)
            }
            None => true,
        }
    }

    /// Sends one received message on with its acknowledgement; false when
    /// the pipeline is gone.
    fn hand(&self, (message, inner, generation): Held, room: Room) -> bool {
        let ack = AckToken {
            generation,
            inner,
            _room: room,
        };
        self.tx.send(Inbound { message, ack }).is_ok()
    }

    async fn poll(&mut self) -> Result<Event, Closed> {
        match &mut self.events {
            EventLoop::V311(e) => {
                use rumqttc::{ConnectReturnCode, Event as E, Packet};
                match e.poll().await {
                    Ok(E::Incoming(Packet::ConnAck(c))) => {
                        if c.code == ConnectReturnCode::Success {
                            Ok(Event::Connected {
                                session_present: c.session_present,
                                ids_taken: false,
                            })
                        } else {
                            Ok(Event::Refused(format!("{:?}", c.code)))
                        }
                    }
                    Ok(E::Incoming(Packet::SubAck(s))) => Ok(Event::Subscribed {
                        refused: s
                            .return_codes
                            .iter()
                            .filter(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                            .map(|c| format!("{c:?}"))
                            .collect(),
                        granted: s
                            .return_codes
                            .iter()
                            .filter_map(|c| match c {
                                rumqttc::SubscribeReasonCode::Success(q) => Some(*q as u8),
                                _ => None,
                            })
                            .collect(),
                    }),
                    Ok(E::Incoming(Packet::Publish(p))) => {
                        let message = MqttMessage {
                            topic: p.topic.clone(),
                            payload: p.payload.clone(),
                            qos: p.qos as u8,
                            retain: p.retain,
                            user_properties: Vec::new(),
                            content_type: None,
                            received_at_ms: now_ms(),
                            subscribed: None,
                        };
                        let inner = if p.qos == rumqttc::QoS::AtMostOnce {
                            AckInner::None
                        } else {
                            AckInner::V311(p.pkid, p.qos)
                        };
                        Ok(Event::Publish(Box::new((message, inner))))
                    }
                    Ok(E::Incoming(Packet::UnsubAck(_))) => Ok(Event::Unsubscribed),
                    Ok(E::Outgoing(rumqttc::Outgoing::Disconnect)) => Err(Closed::OnPurpose),
                    Ok(E::Outgoing(
                        rumqttc::Outgoing::PubAck(_) | rumqttc::Outgoing::PubRec(_),
                    )) => Ok(Event::AckSent),
                    Ok(_) => Ok(Event::Other),
                    Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
                        Ok(Event::Refused(format!("{code:?}")))
                    }
                    Err(rumqttc::ConnectionError::RequestsDone) => Err(Closed::OnPurpose),
                    Err(e) => Err(Closed::Error(e.to_string())),
                }
            }
            EventLoop::V5(e) => {
                use v5::mqttbytes::v5::{ConnectReturnCode, Packet, SubscribeReasonCode};
                let ours = &self.subscription_ids;
                use v5::Event as E;
                match e.poll().await {
                    Ok(E::Incoming(Packet::ConnAck(c))) => {
                        if c.code == ConnectReturnCode::Success {
                            Ok(Event::Connected {
                                session_present: c.session_present,
                                ids_taken: c
                                    .properties
                                    .as_ref()
                                    .and_then(|p| p.subscription_identifiers_available)
                                    != Some(0),
                            })
                        } else {
                            Ok(Event::Refused(format!("{:?}", c.code)))
                        }
                    }
                    Ok(E::Incoming(Packet::SubAck(s))) => Ok(Event::Subscribed {
                        refused: s
                            .return_codes
                            .iter()
                            .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                            .map(|c| format!("{c:?}"))
                            .collect(),
                        granted: s
                            .return_codes
                            .iter()
                            .filter_map(|c| match c {
                                SubscribeReasonCode::Success(q) => Some(*q as u8),
                                _ => None,
                            })
                            .collect(),
                    }),
                    Ok(E::Incoming(Packet::Publish(p))) => {
                        let topic = match std::str::from_utf8(&p.topic) {
                            Ok(t) => t.to_owned(),
                            Err(_) => String::from_utf8_lossy(&p.topic).into_owned(),
                        };
                        let (user_properties, content_type, ids) = match &p.properties {
                            Some(props) => (
                                props.user_properties.clone(),
                                props.content_type.clone(),
                                &props.subscription_identifiers[..],
                            ),
                            None => (Vec::new(), None, &[][..]),
                        };
                        let message = MqttMessage {
                            topic,
                            payload: p.payload.clone(),
                            qos: p.qos as u8,
                            retain: p.retain,
                            user_properties,
                            content_type,
                            received_at_ms: now_ms(),
                            // No identifier: a subscription made without
                            // one (an earlier version's), or a broker that
                            // sends none; the topic decides then.
                            // 0 is no identifier (MQTT 5 forbids it).
                            subscribed: ids
                                .iter()
                                .any(|&id| id != 0)
                                .then(|| ids.iter().any(|id| ours.contains(id))),
                        };
                        let inner = if p.qos == v5::mqttbytes::QoS::AtMostOnce {
                            AckInner::None
                        } else {
                            AckInner::V5(p.pkid, p.qos)
                        };
                        Ok(Event::Publish(Box::new((message, inner))))
                    }
                    Ok(E::Incoming(Packet::UnsubAck(_))) => Ok(Event::Unsubscribed),
                    Ok(E::Outgoing(rumqttc::Outgoing::Disconnect)) => Err(Closed::OnPurpose),
                    Ok(E::Outgoing(
                        rumqttc::Outgoing::PubAck(_) | rumqttc::Outgoing::PubRec(_),
                    )) => Ok(Event::AckSent),
                    Ok(_) => Ok(Event::Other),
                    Err(v5::ConnectionError::ConnectionRefused(code)) => {
                        Ok(Event::Refused(format!("{code:?}")))
                    }
                    Err(v5::ConnectionError::RequestsDone) => Err(Closed::OnPurpose),
                    Err(e) => Err(Closed::Error(e.to_string())),
                }
            }
        }
    }
}

/// What the reader's wait ended with.
enum Next {
    /// Room for the oldest waiting message: a place and its bytes.
    Room(Result<Room, tokio::sync::AcquireError>),
    /// Every place is back (a clean session's drain waits for this).
    AllBack,
    /// A persistent session's stop began: hand on what is held.
    Stop,
    Event(Result<Event, Closed>),
    /// Unsubscribed, nothing held, nothing heard for a while.
    Quiet,
}

enum Closed {
    OnPurpose,
    Error(String),
}

/// Exponential backoff from 250 ms to 30 s, so a restarting broker is
/// found quickly and a dead one is not hammered.
struct Backoff {
    current: Duration,
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(30);
    /// A connection that lasted this long starts the backoff over when it
    /// drops; one that dropped sooner waits longer each time.
    const STABLE: Duration = Duration::from_secs(10);
    fn new() -> Self {
        Self { current: Self::MIN }
    }
    fn next(&mut self) -> Duration {
        let wait = self.current;
        self.current = (self.current * 2).min(Self::MAX);
        wait
    }
    fn reset(&mut self) {
        self.current = Self::MIN;
    }
}

fn transport(settings: &MqttSettings) -> Result<rumqttc::Transport, MqttError> {
    match (&settings.tls, settings.transport) {
        (None, Transport::Tcp) => Ok(rumqttc::Transport::Tcp),
        (None, Transport::Websockets) => Ok(rumqttc::Transport::Ws),
        (Some(tls), t) => {
            if tls.cert_reqs == Some(false) || tls.insecure_cert {
                tracing::warn!(
                    cert_reqs = ?tls.cert_reqs,
                    insecure_cert = tls.insecure_cert,
                    "MQTT TLS: broker certificate checks relaxed by settings"
                );
            }
            let config =
                rumqttc::TlsConfiguration::Rustls(Arc::new(crate::tls::client_config(tls)?));
            Ok(match t {
                Transport::Tcp => rumqttc::Transport::Tls(config),
                Transport::Websockets => rumqttc::Transport::Wss(config),
            })
        }
    }
}

/// The filters this run subscribes with. A persistent session also keeps
/// the subscriptions of earlier runs, and MQTT has no way to list them (nor
/// to unsubscribe one without its exact filter): a message that matches
/// none of this run's filters came for a filter the user has taken out of
/// `mqtt.topics` (or a broker rewrote its topic), and is not bridged. Asked
/// only where the broker does not say which subscription a message came
/// for (`MqttMessage::subscribed`).
#[derive(Debug, Clone)]
pub struct Subscriptions {
    /// What a topic is matched against: each filter as written, and a
    /// shared subscription's also without its prefix. `None` when a filter
    /// (or a shared one's inner filter) has a `$` prefix whose meaning is
    /// the broker's own: then every
    /// message counts as subscribed, as a wrong guess would turn away
    /// messages the user asked for.
    patterns: Option<Vec<String>>,
}

impl Subscriptions {
    pub fn new(filters: &[String]) -> Self {
        let brokers_own = |f: &str| f.starts_with('$') && f != "$SYS" && !f.starts_with("$SYS/");
        let mut patterns = Vec::with_capacity(filters.len());
        for f in filters {
            match unshared(f) {
                Some(inner) if !brokers_own(inner) => patterns.push(inner.to_owned()),
                None if !brokers_own(f) => {}
                _ => return Self { patterns: None },
            }
            patterns.push(f.clone());
        }
        Self {
            patterns: Some(patterns),
        }
    }

    pub fn matches(&self, topic: &str) -> bool {
        self.patterns
            .as_ref()
            .is_none_or(|p| p.iter().any(|f| filter_matches(f, topic)))
    }
}

/// The filter a shared or exclusive subscription matches with: MQTT 5's
/// `$share/<group>/<filter>`, and EMQX's `$queue/<filter>` (one group) and
/// `$exclusive/<filter>`; `None` for any other filter.
fn unshared(filter: &str) -> Option<&str> {
    if let Some(rest) = filter.strip_prefix("$share/") {
        return rest.split_once('/').map(|(_group, f)| f);
    }
    filter
        .strip_prefix("$queue/")
        .or_else(|| filter.strip_prefix("$exclusive/"))
}

/// MQTT's topic matching (3.1.1 section 4.7, 5.0 section 4.7): `+` is one
/// level, `#` the rest (and the level above it), and a topic that starts
/// with `$` is matched only by a filter that names that first level.
fn filter_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut levels = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return true;
        }
        match levels.next() {
            Some(level) if f == "+" || f == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// The examples of MQTT 5.0 section 4.7, and the shared prefixes.
    #[test]
    fn a_topic_matches_the_filters_the_spec_says_it_does() {
        let yes = [
            ("sport/tennis/player1/#", "sport/tennis/player1"),
            ("sport/tennis/player1/#", "sport/tennis/player1/ranking"),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
            ),
            ("sport/#", "sport"),
            ("#", "sport/tennis"),
            ("sport/tennis/+", "sport/tennis/player1"),
            ("sport/+/player1", "sport/tennis/player1"),
            ("+/+", "/finance"),
            ("/+", "/finance"),
            ("+", "sport"),
            ("a/+/c", "a//c"),
            ("$SYS/#", "$SYS/broker/load"),
            ("$SYS/monitor/+", "$SYS/monitor/Clients"),
            ("spBv1.0/#", "spBv1.0/G/NDATA/E"),
            ("$share/g1/plant/#", "plant/line1"),
            ("$queue/plant/+", "plant/line1"),
            ("$exclusive/plant/#", "plant/line1"),
            // A broker without `$queue` takes it as a topic's first level.
            ("$queue/plant/+", "$queue/plant/line1"),
        ];
        let no = [
            ("sport/tennis/+", "sport/tennis/player1/ranking"),
            ("sport/+", "sport"),
            ("+", "/finance"),
            ("sport/tennis/player1", "sport/tennis"),
            ("sport/tennis", "sport/tennis/player1"),
            ("#", "$SYS/broker"),
            ("+/monitor/Clients", "$SYS/monitor/Clients"),
            ("Sport/#", "sport/tennis"),
            ("$share/g1/plant/#", "other/line1"),
            ("$share/g1/plant/#", "g1/plant/x"),
        ];
        for (filter, topic) in yes {
            let s = Subscriptions::new(&[filter.to_owned()]);
            assert!(s.matches(topic), "{filter} should match {topic}");
        }
        for (filter, topic) in no {
            let s = Subscriptions::new(&[filter.to_owned()]);
            assert!(!s.matches(topic), "{filter} should not match {topic}");
        }
        let both = Subscriptions::new(&["a/#".into(), "b/+".into()]);
        assert!(both.matches("b/1") && both.matches("a") && !both.matches("c/1"));
        // A `$` prefix of some broker's own: nothing is taken for stale.
        let odd = Subscriptions::new(&["a/#".into(), "$vendor/b/#".into()]);
        assert!(odd.matches("b/1") && odd.matches("c/1"));
        // `$aws/...` (AWS IoT) is such a prefix too, `$SYS` is not.
        assert!(Subscriptions::new(&["$aws/things/#".into()]).matches("x"));
        assert!(Subscriptions::new(&["$share/g/$aws/things/#".into()]).matches("x"));
        assert!(Subscriptions::new(&["$share/g".into()]).matches("x"));
        assert!(!Subscriptions::new(&["$SYS/#".into()]).matches("x"));
    }

    /// One MQTT packet: its first byte and its body.
    async fn read_packet(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
        let first = s.read_u8().await.ok()?;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = s.read_u8().await.ok()?;
            len |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let mut body = vec![0; len];
        s.read_exact(&mut body).await.ok()?;
        Some((first, body))
    }

    /// CONNACK resuming a session (session present), MQTT 5 or 3.1.1.
    fn connack_resumed(v5: bool) -> &'static [u8] {
        if v5 {
            &[0x20, 0x03, 0x01, 0x00, 0x00]
        } else {
            &[0x20, 0x02, 0x01, 0x00]
        }
    }

    /// QoS 1 PUBLISH of `x` on a/b, packet 3; QoS 0 PUBLISH of `z` on a/b.
    fn publish_x_and_z(v5: bool) -> Vec<u8> {
        if v5 {
            [
                &[0x32, 0x09, 0, 3, b'a', b'/', b'b', 0, 3, 0x00, b'x'][..],
                &[0x30, 0x07, 0, 3, b'a', b'/', b'b', 0x00, b'z'][..],
            ]
            .concat()
        } else {
            [
                &[0x32, 0x08, 0, 3, b'a', b'/', b'b', 0, 3, b'x'][..],
                &[0x30, 0x06, 0, 3, b'a', b'/', b'b', b'z'][..],
            ]
            .concat()
        }
    }

    fn persistent_qos2(port: u16, version: &str, reconnect: bool) -> String {
        format!(
            "host: 127.0.0.1, port: {port}, version: {version}, qos: 2, \
             clean_session: false, client_id: pubrel-test, session_expiry: 60, \
             reconnect_on_failure: {reconnect}"
        )
    }

    /// A broker resuming a persistent session in which the bridge (an
    /// earlier process, or an earlier connection) had sent PUBREC for
    /// packets 7 and 8 but not yet got the PUBRELs: it sends both at once,
    /// in one write with a message, as MQTT requires on a resumed session.
    /// The packets are written by hand because no real broker can be made
    /// to stop in that state on cue. rumqttc alone calls such a PUBREL
    /// unsolicited and drops the connection (rumqtt#664); marking one id
    /// per drop took a reconnect per PUBREL and, with two in one read,
    /// never ended. Both are completed on the first connection, whether or
    /// not reconnects are allowed, and the message is bridged.
    async fn owed_pubrels_are_completed_at_once(version: &str, reconnect: bool) {
        let v5 = version == "5";
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mut rx, _acker, _control, _state, reader) =
            start_reader(&persistent_qos2(port, version, reconnect), 100);
        let (mut s, _) = listener.accept().await.unwrap();
        let (connect, _) = read_packet(&mut s).await.unwrap();
        assert_eq!(connect, 0x10, "CONNECT first");
        s.write_all(connack_resumed(v5)).await.unwrap();
        let mut burst = publish_x_and_z(v5);
        burst.extend_from_slice(&[0x62, 0x02, 0x00, 0x07, 0x62, 0x02, 0x00, 0x08]);
        s.write_all(&burst).await.unwrap();
        let mut completed = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while completed.len() < 2 {
            let packet = tokio::time::timeout_at(deadline, read_packet(&mut s))
                .await
                .unwrap_or_else(|_| panic!("MQTT {version}: PUBCOMPs {completed:?} only"));
            let Some((kind, body)) = packet else {
                panic!("MQTT {version}: connection dropped, PUBCOMPs {completed:?} only");
            };
            if kind == 0x70 {
                completed.push(body[1]);
            }
        }
        assert_eq!(completed, [7, 8], "MQTT {version}");
        for payload in [b'x', b'z'] {
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&got.message.payload[..], [payload], "MQTT {version}");
        }
        reader.abort();
    }

    #[tokio::test]
    async fn owed_pubrels_are_completed_at_once_mqtt5() {
        owed_pubrels_are_completed_at_once("5", true).await;
    }

    #[tokio::test]
    async fn owed_pubrels_are_completed_at_once_mqtt311() {
        owed_pubrels_are_completed_at_once("4", true).await;
    }

    #[tokio::test]
    async fn owed_pubrels_are_completed_at_once_without_reconnects_mqtt5() {
        owed_pubrels_are_completed_at_once("5", false).await;
    }

    #[tokio::test]
    async fn owed_pubrels_are_completed_at_once_without_reconnects_mqtt311() {
        owed_pubrels_are_completed_at_once("4", false).await;
    }

    /// A persistent session's connection breaks (here on a stray PUBACK)
    /// right after rumqttc read a QoS 1 and a QoS 0 message: the QoS 1 one
    /// is left to the broker, which sends it again (an ack of it on the new
    /// connection would acknowledge whatever now has its packet id); the
    /// QoS 0 one, which no broker sends again, is bridged; and a PUBREL on
    /// the new connection is answered.
    async fn a_qos0_message_read_before_a_drop_is_kept(version: &str) {
        let v5 = version == "5";
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mut rx, _acker, _control, _state, reader) =
            start_reader(&persistent_qos2(port, version, true), 100);
        let (mut s, _) = listener.accept().await.unwrap();
        read_packet(&mut s).await.unwrap();
        s.write_all(connack_resumed(v5)).await.unwrap();
        let mut burst = publish_x_and_z(v5);
        burst.extend_from_slice(&[0x40, 0x02, 0x00, 0x09]);
        s.write_all(&burst).await.unwrap();
        // The reconnect.
        let (mut s2, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
            .await
            .unwrap()
            .unwrap();
        read_packet(&mut s2).await.unwrap();
        s2.write_all(connack_resumed(v5)).await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (got.message.qos, &got.message.payload[..]),
            (0, &b"z"[..]),
            "MQTT {version}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rx.try_recv().is_err(), "MQTT {version}");
        // rumqttc forgot the PUBCOMPs it owes with the connection; the
        // next one still answers a PUBREL.
        s2.write_all(&[0x62, 0x02, 0x00, 0x07]).await.unwrap();
        let pubcomp = tokio::time::timeout(Duration::from_secs(5), until(&mut s2, 0x70))
            .await
            .expect("PUBCOMP on the new connection");
        assert_eq!(pubcomp, [0x00, 0x07], "MQTT {version}");
        reader.abort();
        drop(s);
    }

    #[tokio::test]
    async fn a_qos0_message_read_before_a_drop_is_kept_mqtt5() {
        a_qos0_message_read_before_a_drop_is_kept("5").await;
    }

    #[tokio::test]
    async fn a_qos0_message_read_before_a_drop_is_kept_mqtt311() {
        a_qos0_message_read_before_a_drop_is_kept("4").await;
    }

    /// A broker that grants QoS 0 (Mosquitto's `max_qos 0`) to a bridge
    /// asking for 1 stops it with the reason, rather than letting it run at
    /// most once without a word.
    async fn a_qos_downgrade_is_refused(version: &str) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (_rx, _acker, _control, _state, bridge) = start_reader(
            &format!("host: 127.0.0.1, port: {port}, version: {version}, qos: 1, topics: ['a/#']"),
            100,
        );
        let v5 = version == "5";
        let broker = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.ok()?;
            let (connect, _) = read_packet(&mut s).await?;
            assert_eq!(connect, 0x10, "CONNECT first");
            let connack: &[u8] = if v5 {
                &[0x20, 0x03, 0x00, 0x00, 0x00]
            } else {
                &[0x20, 0x02, 0x00, 0x00]
            };
            s.write_all(connack).await.ok()?;
            loop {
                let (kind, body) = read_packet(&mut s).await?;
                if kind == 0x82 {
                    let suback: Vec<u8> = if v5 {
                        vec![0x90, 0x04, body[0], body[1], 0x00, 0x00]
                    } else {
                        vec![0x90, 0x03, body[0], body[1], 0x00]
                    };
                    s.write_all(&suback).await.ok()?;
                    // Held open: the bridge, not the broker, must end it.
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return Some(());
                }
            }
        });
        let ended = tokio::time::timeout(Duration::from_secs(20), bridge)
            .await
            .expect("the bridge went on with QoS 0")
            .unwrap();
        broker.abort();
        let e = ended.expect_err("the bridge went on with QoS 0");
        assert!(
            e.to_string()
                .contains("refused the subscription to \"a/#\": granted QoS 0, below mqtt.qos 1"),
            "MQTT version {version}: {e}"
        );
    }

    #[tokio::test]
    async fn a_qos_downgrade_is_refused_mqtt5() {
        a_qos_downgrade_is_refused("5").await;
    }

    #[tokio::test]
    async fn a_qos_downgrade_is_refused_mqtt311() {
        a_qos_downgrade_is_refused("4").await;
    }

    type TestReader = (
        mpsc::UnboundedReceiver<Inbound>,
        Acker,
        Control,
        watch::Receiver<State>,
        tokio::task::JoinHandle<Result<(), MqttError>>,
    );

    /// A reader with the `mqtt` settings `{mqtt}` (a YAML flow mapping's
    /// inside) and a window of `window` messages, started; never told to
    /// stop (these tests are about what comes before).
    fn start_reader(mqtt: &str, window: usize) -> TestReader {
        start_reader_bounded(mqtt, window, 1 << 20).0
    }

    /// [`start_reader`] with a bound of `bytes` payload bytes, and the
    /// reader's metrics.
    fn start_reader_bounded(
        mqtt: &str,
        window: usize,
        bytes: usize,
    ) -> (TestReader, Arc<crate::metrics::Stats>) {
        let (reader, stats, stop) = start_reader_with(mqtt, window, bytes);
        std::mem::forget(stop);
        (reader, stats)
    }

    /// [`start_reader`] with the sender of the pipeline's stop.
    fn start_reader_stoppable(mqtt: &str, window: usize) -> (TestReader, watch::Sender<bool>) {
        let (reader, _, stop) = start_reader_with(mqtt, window, 1 << 20);
        (reader, stop)
    }

    fn start_reader_with(
        mqtt: &str,
        window: usize,
        bytes: usize,
    ) -> (TestReader, Arc<crate::metrics::Stats>, watch::Sender<bool>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("settings.yaml"),
            format!(
                "mqtt: {{{mqtt}}}\n\
                 kafka: {{config: {{bootstrap.servers: 'localhost:9092'}}}}\n"
            ),
        )
        .unwrap();
        let settings =
            crate::config::load_from(dir.path(), Vec::new(), crate::config::Mode::Bridge).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let stats = Arc::new(crate::metrics::Stats::default());
        let (reader, acker, control, state) =
            connect(&settings.mqtt, window, bytes, stats.clone(), tx, stop_rx).unwrap();
        (
            (rx, acker, control, state, tokio::spawn(reader.run())),
            stats,
            stop_tx,
        )
    }

    /// A clean-session reader (MQTT 3.1.1) subscribed to `a/#` at QoS 1.
    fn clean_reader(port: u16, window: usize) -> TestReader {
        start_reader(
            &format!("host: 127.0.0.1, port: {port}, version: 4, qos: 1, topics: ['a/#']"),
            window,
        )
    }

    /// CONNECT in, CONNACK out (MQTT 3.1.1).
    async fn accept_311(listener: &TcpListener) -> TcpStream {
        let (mut s, _) = listener.accept().await.unwrap();
        let (connect, _) = read_packet(&mut s).await.unwrap();
        assert_eq!(connect, 0x10, "CONNECT first");
        s.write_all(&[0x20, 0x02, 0x00, 0x00]).await.unwrap();
        s
    }

    /// CONNECT in, CONNACK out, SUBSCRIBE in, SUBACK (QoS 1) out.
    async fn accept_subscribed_311(listener: &TcpListener) -> TcpStream {
        let mut s = accept_311(listener).await;
        let sub = until(&mut s, 0x82).await;
        s.write_all(&[0x90, 0x03, sub[0], sub[1], 0x01])
            .await
            .unwrap();
        s
    }

    /// UNSUBSCRIBE in, UNSUBACK out.
    async fn unsubscribe_acked(s: &mut TcpStream) {
        let unsub = until(s, 0xa2).await;
        s.write_all(&[0xb0, 0x02, unsub[0], unsub[1]])
            .await
            .unwrap();
    }

    /// Whether the reader says the broker is quiet within `wait`.
    async fn quiet_within(state: &mut watch::Receiver<State>, wait: Duration) -> bool {
        tokio::time::timeout(wait, state.wait_for(|s| *s == State::Unsubscribed))
            .await
            .is_ok()
    }

    /// Reads packets until one of `kind`; returns its body.
    async fn until(s: &mut TcpStream, kind: u8) -> Vec<u8> {
        loop {
            let (k, body) = read_packet(s).await.expect("connection open");
            if k == kind {
                return body;
            }
        }
    }

    /// QoS 1 PUBLISH of `payload` on a/b with packet id `pkid`.
    fn publish_311(pkid: u8, payload: u8) -> [u8; 10] {
        [0x32, 0x08, 0, 3, b'a', b'/', b'b', 0, pkid, payload]
    }

    /// What rumqttc kept of a lost connection to send first on the next:
    /// its SUBSCRIBEs go (subscribing starts over, and their SUBACKs would
    /// be taken for other filters'), the rest stays.
    #[test]
    fn a_lost_connections_pending_subscribes_are_dropped_and_nothing_else() {
        use v5::mqttbytes::v5::{Filter, Subscribe};
        let (_client, e) = v5::AsyncClient::new(v5::MqttOptions::new("t", "127.0.0.1", 1), 8);
        let mut events = EventLoop::V5(Box::new(e));
        if let EventLoop::V5(e) = &mut events {
            let subscribe = |f: &str| {
                v5::Request::Subscribe(Subscribe::new(
                    Filter::new(f, v5::mqttbytes::QoS::AtLeastOnce),
                    None,
                ))
            };
            e.pending
                .extend([subscribe("a/#"), v5::Request::PingReq, subscribe("b/#")]);
        }
        events.forget_pending_subscriptions();
        let EventLoop::V5(e) = &events else {
            unreachable!()
        };
        assert_eq!(e.pending, [v5::Request::PingReq]);
        let (_client, e) =
            rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("t", "127.0.0.1", 1), 8);
        let mut events = EventLoop::V311(Box::new(e));
        if let EventLoop::V311(e) = &mut events {
            e.pending.extend([
                rumqttc::Request::Subscribe(rumqttc::Subscribe::new(
                    "a/#",
                    rumqttc::QoS::AtLeastOnce,
                )),
                rumqttc::Request::PingReq(rumqttc::PingReq),
            ]);
        }
        events.forget_pending_subscriptions();
        let EventLoop::V311(e) = &events else {
            unreachable!()
        };
        assert_eq!(e.pending.len(), 1);
        assert!(matches!(e.pending[0], rumqttc::Request::PingReq(_)));
    }

    /// MQTT's variable byte integer.
    fn varint(mut n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let byte = (n % 128) as u8;
            n /= 128;
            out.push(if n > 0 { byte | 0x80 } else { byte });
            if n == 0 {
                return out;
            }
        }
    }

    /// The variable byte integer `bytes` starts with, and its length.
    fn read_varint(bytes: &[u8]) -> (usize, usize) {
        let mut n = 0;
        for (i, b) in bytes.iter().enumerate() {
            n |= usize::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return (n, i + 1);
            }
        }
        panic!("a variable byte integer runs off the end");
    }

    /// MQTT 5 QoS 0 PUBLISH of `p` on `topic`, with these subscription
    /// identifiers.
    fn publish_v5_qos0(topic: &str, ids: &[usize]) -> Vec<u8> {
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(topic.as_bytes());
        let properties: Vec<u8> = ids
            .iter()
            .flat_map(|&id| [vec![0x0b], varint(id)].concat())
            .collect();
        body.extend(varint(properties.len()));
        body.extend(properties);
        body.push(b'p');
        [vec![0x30], varint(body.len()), body].concat()
    }

    /// MQTT 5: the bridge subscribes to each filter with an identifier of
    /// its own (one SUBSCRIBE each, as an identifier covers a packet, and
    /// the next only once the last is granted), is ready once every SUBACK
    /// is in, and a message says whether the broker sent it for one of
    /// those subscriptions, which its topic cannot tell when the broker
    /// rewrote it or an earlier run's filter matches it too.
    #[tokio::test]
    async fn mqtt5_messages_say_whether_they_came_for_this_runs_subscription() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mut rx, _acker, _control, mut state, reader) = start_reader(
            &format!("host: 127.0.0.1, port: {port}, version: 5, qos: 0, topics: ['a/#', 'b/#']"),
            10,
        );
        let (mut s, _) = listener.accept().await.unwrap();
        let (connect, _) = read_packet(&mut s).await.unwrap();
        assert_eq!(connect, 0x10, "CONNECT first");
        // CONNACK: no session, success, no properties (identifiers allowed).
        s.write_all(&[0x20, 0x03, 0x00, 0x00, 0x00]).await.unwrap();
        for filter in ["a/#", "b/#"] {
            let sub = tokio::time::timeout(Duration::from_secs(5), until(&mut s, 0x82))
                .await
                .unwrap_or_else(|_| panic!("no SUBSCRIBE for {filter}"));
            let (properties, at) = read_varint(&sub[2..]);
            assert!(
                properties >= 2 && sub[2 + at] == 0x0b,
                "no subscription identifier in {sub:?}"
            );
            let (id, _) = read_varint(&sub[2 + at + 1..]);
            assert_eq!(id, subscription_id(filter));
            // This filter alone, with its options byte.
            let named = &sub[2 + at + properties..];
            assert_eq!(named.len(), 2 + filter.len() + 1, "{sub:?}");
            assert_eq!(&named[2..2 + filter.len()], filter.as_bytes(), "{sub:?}");
            let ready = tokio::time::timeout(
                Duration::from_millis(300),
                state.wait_for(|s| *s == State::Ready),
            )
            .await
            .is_ok();
            assert!(!ready, "ready before {filter} was granted");
            let more = tokio::time::timeout(Duration::from_millis(300), read_packet(&mut s)).await;
            assert!(
                more.is_err(),
                "a packet before {filter} was granted: {more:?}"
            );
            // SUBACK: QoS 0 granted.
            s.write_all(&[0x90, 0x04, sub[0], sub[1], 0x00, 0x00])
                .await
                .unwrap();
        }
        tokio::time::timeout(
            Duration::from_secs(5),
            state.wait_for(|s| *s == State::Ready),
        )
        .await
        .expect("ready once both are granted")
        .unwrap();
        let (a, b) = (subscription_id("a/#"), subscription_id("b/#"));
        let other = (1..).find(|i| ![a, b].contains(i)).unwrap();
        for (topic, ids) in [
            ("rewritten/x", &[a][..]),
            ("a/1", &[other][..]),
            ("a/2", &[]),
            ("a/3", &[other, b]),
            ("a/4", &[0]),
        ] {
            s.write_all(&publish_v5_qos0(topic, ids)).await.unwrap();
        }
        let mut got = Vec::new();
        for _ in 0..5 {
            let m = next(&mut rx, Duration::from_secs(5))
                .await
                .expect("a message");
            got.push((m.message.topic.clone(), m.message.subscribed));
        }
        let expected = [
            ("rewritten/x", Some(true)),
            ("a/1", Some(false)),
            ("a/2", None),
            // Any of them ours.
            ("a/3", Some(true)),
            // 0 is no identifier at all.
            ("a/4", None),
        ]
        .map(|(t, v)| (t.to_owned(), v));
        assert_eq!(got, expected);
        reader.abort();
    }

    /// A persistent session's stop between the first filter's SUBACK and
    /// the last's: no further SUBSCRIBE, and the `HandedOn` the stop set
    /// stands. A `Ready` sent over it on the next SUBACK kept the pipeline
    /// waiting a second for a hand-on that had come (and warning it had
    /// not), and told `/health` a stopping bridge was ready.
    #[tokio::test]
    async fn a_stop_while_subscribing_is_not_overwritten_by_ready() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ((_rx, _acker, control, mut state, reader), stop) = start_reader_stoppable(
            &format!(
                "host: 127.0.0.1, port: {port}, version: 5, qos: 1, clean_session: false, \
                 session_expiry: 60, client_id: stop-test, topics: ['a/#', 'b/#']"
            ),
            10,
        );
        let (mut s, _) = listener.accept().await.unwrap();
        read_packet(&mut s).await.unwrap();
        s.write_all(&[0x20, 0x03, 0x00, 0x00, 0x00]).await.unwrap();
        let sub = until(&mut s, 0x82).await;
        control.hand_on_held();
        stop.send(true).unwrap();
        tokio::time::timeout(
            Duration::from_secs(5),
            state.wait_for(|s| *s == State::HandedOn),
        )
        .await
        .expect("handed on")
        .unwrap();
        // SUBACK for a/#: QoS 1 granted.
        s.write_all(&[0x90, 0x04, sub[0], sub[1], 0x00, 0x01])
            .await
            .unwrap();
        let changed = tokio::time::timeout(Duration::from_millis(500), state.changed()).await;
        assert!(
            changed.is_err(),
            "the state changed after the stop: {:?}",
            *state.borrow()
        );
        let more = tokio::time::timeout(Duration::from_millis(300), read_packet(&mut s)).await;
        assert!(
            !matches!(more, Ok(Some((0x82, _)))),
            "b/# subscribed after the stop"
        );
        reader.abort();
    }

    /// Websockets to an IPv6 address, also one with a (numeric) zone: the
    /// URL brackets it (bare, rumqttc could not parse `ws://::1:port/mqtt`
    /// and never connected).
    #[tokio::test]
    async fn websockets_reach_an_ipv6_address() {
        for host in ["::1", "::1%1"] {
            let listener = TcpListener::bind("[::1]:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let (_rx, _acker, _control, _state, reader) = start_reader(
                &format!("host: '{host}', port: {port}, transport: websockets, topics: ['a/#']"),
                10,
            );
            let (mut s, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
                .await
                .unwrap_or_else(|_| panic!("no connection to {host}"))
                .unwrap();
            let mut request = vec![0u8; 16];
            s.read_exact(&mut request).await.unwrap();
            assert!(
                request.starts_with(b"GET /mqtt "),
                "{host}: {}",
                String::from_utf8_lossy(&request)
            );
            reader.abort();
        }
    }

    /// A filter's identifier is what the broker stamped on the messages a
    /// persistent session queued under an earlier version: it must not
    /// change from one version to the next.
    #[test]
    fn a_filters_subscription_identifier_never_changes() {
        assert_eq!(subscription_id("spBv1.0/#"), 179_441_778);
        assert_eq!(subscription_id("a/#"), 108_616_933);
        assert_ne!(subscription_id("a/#"), subscription_id("a/+"));
    }

    /// A broker that says it takes no subscription identifiers gets none
    /// (one would be a protocol error it disconnects for).
    #[tokio::test]
    async fn no_subscription_identifier_for_a_broker_without_them() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (_rx, _acker, _control, _state, reader) = start_reader(
            &format!("host: 127.0.0.1, port: {port}, version: 5, qos: 0, topics: ['a/#']"),
            10,
        );
        let (mut s, _) = listener.accept().await.unwrap();
        read_packet(&mut s).await.unwrap();
        // CONNACK with Subscription Identifier Available (0x29) = 0.
        s.write_all(&[0x20, 0x05, 0x00, 0x00, 0x02, 0x29, 0x00])
            .await
            .unwrap();
        let sub = until(&mut s, 0x82).await;
        let (properties, _) = read_varint(&sub[2..]);
        assert_eq!(properties, 0, "properties in {sub:?}");
        reader.abort();
    }

    /// QoS 1 PUBLISH on a/b with packet id `pkid` and `len` bytes of
    /// payload.
    fn publish_311_sized(pkid: u8, len: usize) -> Vec<u8> {
        let mut p = [vec![0x32], varint(2 + 3 + 2 + len)].concat();
        p.extend_from_slice(&[0, 3, b'a', b'/', b'b', 0, pkid]);
        p.resize(p.len() + len, b'x');
        p
    }

    /// The next message handed on within `wait`, if any.
    async fn next(rx: &mut mpsc::UnboundedReceiver<Inbound>, wait: Duration) -> Option<Inbound> {
        tokio::time::timeout(wait, rx.recv()).await.ok().flatten()
    }

    /// Large messages: the byte bound, not the message window, holds them
    /// back, and a message larger than the whole bound still passes, alone.
    #[tokio::test]
    async fn payload_bytes_bound_what_is_in_flight() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let ((mut rx, _acker, _control, _state, reader), stats) = start_reader_bounded(
            &format!("host: 127.0.0.1, port: {port}, version: 4, qos: 1, topics: ['a/#']"),
            100,
            1000,
        );
        let mut s = accept_subscribed_311(&listener).await;
        s.write_all(&publish_311_sized(1, 600)).await.unwrap();
        s.write_all(&publish_311_sized(2, 600)).await.unwrap();
        s.write_all(&publish_311_sized(3, 5000)).await.unwrap();
        let first = next(&mut rx, Duration::from_secs(5))
            .await
            .expect("the first");
        assert_eq!(first.message.payload.len(), 600);
        assert_eq!(stats.in_flight_bytes.get(), 600);
        assert!(
            next(&mut rx, Duration::from_millis(500)).await.is_none(),
            "a second 600 bytes handed on with 1000 allowed"
        );
        // The second waits, a quarter of the bound and more: the reader
        // stops reading, and the third stays unread (in rumqttc, which
        // decodes a few packets a read, or with the broker).
        assert_eq!(stats.received.get(), 2);
        drop(first);
        let second = next(&mut rx, Duration::from_secs(5))
            .await
            .expect("the second");
        assert_eq!(second.message.payload.len(), 600);
        assert!(
            next(&mut rx, Duration::from_millis(500)).await.is_none(),
            "a message larger than the bound handed on beside another"
        );
        drop(second);
        let third = next(&mut rx, Duration::from_secs(5))
            .await
            .expect("the large one");
        assert_eq!(third.message.payload.len(), 5000);
        // Counted up to the bound, all of which it holds.
        assert_eq!(stats.in_flight_bytes.get(), 1000);
        drop(third);
        assert_eq!(stats.in_flight_bytes.get(), 0);
        reader.abort();
    }

    /// After a drop, with messages waiting for room, a permit coming back
    /// while the reader connects again must not cut the attempt short: it
    /// used to, and each acknowledgement of the old connection's messages
    /// abandoned another handshake.
    #[tokio::test]
    async fn a_permit_coming_back_does_not_abandon_a_connection_attempt() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mut rx, acker, _control, _state, reader) = clean_reader(port, 1);
        let mut s = accept_subscribed_311(&listener).await;
        for pkid in 1..=3 {
            s.write_all(&publish_311(pkid, b'0' + pkid)).await.unwrap();
        }
        // One in the window, two waiting for room; then the connection drops.
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        drop(s);
        // The next attempt: CONNECT read, CONNACK held back for a second,
        // while the first message's permit comes back.
        let (mut s, _) = listener.accept().await.unwrap();
        let (connect, _) = read_packet(&mut s).await.unwrap();
        assert_eq!(connect, 0x10, "CONNECT first");
        acker.ack(first.ack).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        s.write_all(&[0x20, 0x02, 0x00, 0x00]).await.unwrap();
        // Still the same attempt: it subscribes on this connection.
        let sub = tokio::time::timeout(Duration::from_secs(5), until(&mut s, 0x82))
            .await
            .expect("SUBSCRIBE on the connection the permit found connecting");
        assert!(!sub.is_empty());
        reader.abort();
    }

    /// A broker at its flow-control limit is silent with more to send: the
    /// drain of a clean session must not take that for the end while the
    /// bridge holds unacknowledged messages.
    #[tokio::test]
    async fn a_clean_drain_waits_for_its_acks_before_calling_the_broker_quiet() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mut rx, acker, control, mut state, reader) = clean_reader(port, 2);
        let mut s = accept_subscribed_311(&listener).await;
        s.write_all(&publish_311(1, b'1')).await.unwrap();
        s.write_all(&publish_311(2, b'2')).await.unwrap();
        let first = rx.recv().await.unwrap();
        let second = rx.recv().await.unwrap();
        control.stop_subscriptions().await;
        unsubscribe_acked(&mut s).await;
        // Held for four times the quiet period: still not quiet.
        assert!(
            !quiet_within(&mut state, QUIET_AFTER_UNSUBSCRIBE * 4).await,
            "called quiet with two messages unacknowledged"
        );
        acker.ack(first.ack).await;
        acker.ack(second.ack).await;
        until(&mut s, 0x40).await;
        until(&mut s, 0x40).await;
        // What the broker held for those acks.
        s.write_all(&publish_311(3, b'3')).await.unwrap();
        let third = rx.recv().await.unwrap();
        assert_eq!(&third.message.payload[..], b"3");
        assert_ne!(*state.borrow(), State::Unsubscribed);
        acker.ack(third.ack).await;
        tokio::time::timeout(
            Duration::from_secs(5),
            state.wait_for(|s| *s == State::Unsubscribed),
        )
        .await
        .expect("quiet once all acknowledged")
        .unwrap();
        reader.abort();
    }

    /// A clean session's drain keeps at most [`UNSUBSCRIBES_IN_FLIGHT`]
    /// UNSUBSCRIBEs unacknowledged, and sends the next as each is: rumqttc
    /// gives the bridge's requests packet ids from a small cycle without
    /// checking which are in use, and with more filters than ids a broker
    /// could refuse one (0x91) and keep sending its messages while the
    /// drain counted it done.
    #[tokio::test]
    async fn a_clean_drain_keeps_few_unsubscribes_in_flight() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let filters: Vec<String> = (0..20).map(|i| format!("f{i:02}/#")).collect();
        let (_rx, _acker, control, mut state, reader) = start_reader(
            &format!("host: 127.0.0.1, port: {port}, version: 4, qos: 1, topics: {filters:?}"),
            2,
        );
        let mut s = accept_311(&listener).await;
        let sub = until(&mut s, 0x82).await;
        let mut suback = vec![0x90, 2 + 20, sub[0], sub[1]];
        suback.extend([0x01; 20]);
        s.write_all(&suback).await.unwrap();
        state.wait_for(|s| *s == State::Ready).await.unwrap();
        control.stop_subscriptions().await;
        let next_unsubscribe = async |s: &mut TcpStream| {
            tokio::time::timeout(Duration::from_secs(5), until(s, 0xa2))
                .await
                .expect("an UNSUBSCRIBE")
        };
        let mut outstanding = std::collections::VecDeque::new();
        for filter in &filters[..UNSUBSCRIBES_IN_FLIGHT] {
            let unsub = next_unsubscribe(&mut s).await;
            assert_eq!(&unsub[4..], filter.as_bytes(), "{unsub:?}");
            outstanding.push_back([unsub[0], unsub[1]]);
        }
        for filter in &filters[UNSUBSCRIBES_IN_FLIGHT..] {
            let more = tokio::time::timeout(Duration::from_millis(300), read_packet(&mut s)).await;
            assert!(
                more.is_err(),
                "more than {UNSUBSCRIBES_IN_FLIGHT} in flight: {more:?}"
            );
            let [a, b] = outstanding.pop_front().unwrap();
            s.write_all(&[0xb0, 0x02, a, b]).await.unwrap();
            let unsub = next_unsubscribe(&mut s).await;
            assert_eq!(&unsub[4..], filter.as_bytes(), "{unsub:?}");
            outstanding.push_back([unsub[0], unsub[1]]);
        }
        for [a, b] in outstanding {
            s.write_all(&[0xb0, 0x02, a, b]).await.unwrap();
        }
        tokio::time::timeout(
            Duration::from_secs(5),
            state.wait_for(|s| *s == State::Unsubscribed),
        )
        .await
        .expect("quiet once all twenty are unsubscribed")
        .unwrap();
        reader.abort();
    }

    /// A QoS 0 message is acknowledged by writing nothing, so no packet
    /// wakes the reader when its permit comes back: the drain must still
    /// see the broker quiet soon after, not at the next keep-alive.
    #[tokio::test]
    async fn a_clean_drain_ends_soon_after_its_last_qos0_message_is_done() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (mut rx, acker, control, mut state, reader) = clean_reader(port, 2);
        let mut s = accept_subscribed_311(&listener).await;
        // PUBLISH QoS 0, topic a/b, payload 0.
        s.write_all(&[0x30, 0x06, 0, 3, b'a', b'/', b'b', b'0'])
            .await
            .unwrap();
        let only = rx.recv().await.unwrap();
        control.stop_subscriptions().await;
        unsubscribe_acked(&mut s).await;
        assert!(
            !quiet_within(&mut state, QUIET_AFTER_UNSUBSCRIBE * 4).await,
            "called quiet with a message in the pipeline"
        );
        acker.ack(only.ack).await;
        tokio::time::timeout(
            QUIET_AFTER_UNSUBSCRIBE * 4,
            state.wait_for(|s| *s == State::Unsubscribed),
        )
        .await
        .expect("quiet soon after the last message was done")
        .unwrap();
        reader.abort();
    }

    /// A connection lost during a clean session's drain, before the
    /// UNSUBACK: the next connection does not subscribe again (which would
    /// bring every retained message a second time), and the drain ends.
    #[tokio::test]
    async fn a_reconnect_during_a_clean_drain_does_not_subscribe_again() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (_rx, _acker, control, mut state, reader) = clean_reader(port, 2);
        let mut s = accept_subscribed_311(&listener).await;
        state.wait_for(|s| *s == State::Ready).await.unwrap();
        control.stop_subscriptions().await;
        until(&mut s, 0xa2).await;
        drop(s);
        let mut s = accept_311(&listener).await;
        let subscribed = tokio::time::timeout(Duration::from_secs(2), until(&mut s, 0x82)).await;
        assert!(subscribed.is_err(), "subscribed again during the drain");
        tokio::time::timeout(
            Duration::from_secs(5),
            state.wait_for(|s| *s == State::Unsubscribed),
        )
        .await
        .expect("the drain ends")
        .unwrap();
        reader.abort();
    }
}
