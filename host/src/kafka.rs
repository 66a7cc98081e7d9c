//! Kafka out: `kafka.producers` rdkafka producers configured from
//! `kafka.config` (a topic always through the same one), and the
//! rule for which delivery failures are the record's fault (dead-letter it)
//! and which are the cluster's (try again, never drop).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_void, CString};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use rdkafka::bindings as rd;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers as _, OwnedMessage};
use rdkafka::producer::future_producer::{FutureProducerContext, OwnedDeliveryResult};
use rdkafka::producer::{FutureProducer, Producer, ProducerContext};
use rdkafka::util::IntoOpaque;
use rdkafka::{ClientContext, Message};
use tokio::sync::watch;

use crate::logging::Sparse;
use crate::message::KafkaRecord;
use crate::metrics::Stats;

/// The caller names the file and the key (`kafka.config`) around it.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("librdkafka rejected the configuration: {0}")]
    Config(KafkaError),
}

/// What [`watch_rebootstrap`] needs to know of a producer's errors.
#[derive(Debug, Default)]
struct Silence {
    /// librdkafka reported every broker down, and no offer followed yet.
    all_down: bool,
    /// The last error of any kind.
    last_error: Option<Instant>,
}

type AllDown = Arc<Mutex<Silence>>;

/// Routes librdkafka's own complaints (broker down, auth failed) to our
/// logs, where operators look, and counts its errors for `/metrics`.
pub struct LogContext {
    stats: Arc<Stats>,
    /// Shared with the [`Sink`]'s rebootstrap watch.
    all_down: AllDown,
    /// The last error reported and when: rdkafka 0.39 hands each producer
    /// error event to `error` twice in a row (from `Client::poll_event`,
    /// which also returns the event, then from `BaseProducer::poll`), and
    /// the second report must neither log nor count again.
    last_error: Mutex<Option<(String, Instant)>>,
    /// librdkafka's last `FAIL` log line (a connection failed) and when:
    /// the error event that follows it says the same, and one ERROR line
    /// per reconnect attempt is enough.
    last_fail: Mutex<Option<(String, Instant)>>,
    /// When "all brokers are down" was last logged: librdkafka says it again
    /// at every reconnect attempt for as long as Kafka is away or refuses
    /// the bridge, which buried the one line that says why.
    last_all_down: Sparse,
    /// Set once librdkafka reports a fatal error (with idempotence, e.g. a
    /// sequence Kafka can no longer accept): the producer is unusable from
    /// then on, and retrying its records would only stall the bridge.
    fatal: Arc<watch::Sender<Option<String>>>,
    /// This producer's librdkafka handle, set once it exists: rdkafka hands
    /// `error` the underlying code of a fatal error, not `_FATAL`, so
    /// whether it was fatal is asked of librdkafka itself.
    handle: Arc<std::sync::OnceLock<usize>>,
}

/// What [`LogContext::error`] does with one error event.
#[derive(Debug, PartialEq, Eq)]
enum Report {
    /// rdkafka's immediate second report of the same event.
    Repeat,
    /// librdkafka has just logged it (`FAIL`): count it, log nothing more.
    Count,
    /// Log it at WARN and count it.
    LogAndCount,
}

impl LogContext {
    pub fn new(stats: Arc<Stats>) -> Self {
        Self {
            stats,
            all_down: Arc::default(),
            last_error: Mutex::new(None),
            last_fail: Mutex::new(None),
            last_all_down: Sparse::default(),
            fatal: Arc::new(watch::channel(None).0),
            handle: Arc::default(),
        }
    }

    /// librdkafka's fatal error, if its producer has had one.
    fn fatal_error(&self) -> Option<String> {
        let rk = *self.handle.get()? as *mut rd::rd_kafka_t;
        let mut buf = [0 as std::ffi::c_char; 512];
        // SAFETY: the handle outlives its context (librdkafka destroys the
        // context with it), and the call only reads the handle's fatal
        // state, from any thread, into a buffer of the size given.
        let code = unsafe { rd::rd_kafka_fatal_error(rk, buf.as_mut_ptr(), buf.len()) };
        if code == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return None;
        }
        // SAFETY: librdkafka NUL-terminates within the buffer.
        let text = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
        Some(text.to_string_lossy().into_owned())
    }

    fn report(&self, error: &KafkaError, reason: &str) -> Report {
        if !self.first_report(format!("{error}: {reason}")) {
            return Report::Repeat;
        }
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            return if self.last_all_down.due() {
                Report::LogAndCount
            } else {
                Report::Count
            };
        }
        let last_fail = self.last_fail.lock().unwrap_or_else(|e| e.into_inner());
        match &*last_fail {
            // The log line is the reason behind librdkafka's thread name
            // (`[thrd:...]: `).
            Some((line, at)) if line.ends_with(reason) && at.elapsed() < Duration::from_secs(1) => {
                Report::Count
            }
            _ => Report::LogAndCount,
        }
    }

    /// False for the immediate repeat of the error just reported.
    fn first_report(&self, what: String) -> bool {
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        match last.take() {
            Some((previous, at))
                if previous == what && at.elapsed() < Duration::from_millis(100) =>
            {
                false
            }
            _ => {
                *last = Some((what, Instant::now()));
                true
            }
        }
    }
}

impl ClientContext for LogContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                if fac == "FAIL" {
                    *self.last_fail.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((log_message.to_owned(), Instant::now()));
                }
                tracing::error!(target: "librdkafka", fac, "{log_message}")
            }
            L::Warning => tracing::warn!(target: "librdkafka", fac, "{log_message}"),
            L::Notice | L::Info => tracing::info!(target: "librdkafka", fac, "{log_message}"),
            L::Debug => tracing::debug!(target: "librdkafka", fac, "{log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if self.fatal.borrow().is_none() {
            if let Some(why) = self.fatal_error() {
                tracing::error!(target: "librdkafka", %error, "Kafka producer failed for good: {why}");
                self.fatal.send_replace(Some(why));
            }
        }
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.all_down
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .all_down = true;
        }
        self.all_down
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_error = Some(Instant::now());
        match self.report(&error, reason) {
            Report::Repeat => {}
            Report::Count => self.stats.kafka_errors.add(1),
            Report::LogAndCount => {
                self.stats.kafka_errors.add(1);
                tracing::warn!(target: "librdkafka", %error, "{reason}");
            }
        }
    }
}

impl rdkafka::producer::ProducerContext for LogContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

pub type Producer_ = FutureProducer<LogContext>;

/// What `FutureProducer`'s delivery callback expects as each message's
/// opaque: written out so that a change in rdkafka fails the build here
/// instead of misreading a pointer at run time.
type Opaque = <FutureProducerContext<LogContext> as ProducerContext>::DeliveryOpaque;

/// Resolves with Kafka's answer for one record: `Err` if the producer went
/// away without one.
pub type DeliveryFuture = oneshot::Receiver<OwnedDeliveryResult>;

/// The producers, cheap to clone (librdkafka's handles are shared).
///
/// Each Kafka topic always goes through the same producer (chosen by a
/// hash of its name), so idempotence and per-partition order hold as with
/// one producer, while the producers' requests run side by side. The one
/// exception is a record sent again alone (`Sink::after_refusal`).
#[derive(Clone)]
pub struct Sink {
    producers: std::sync::Arc<[Out]>,
    /// A producer that sends each record in a request of its own, made the
    /// first time a batch comes back too large (`after_refusal`).
    alone: Arc<std::sync::OnceLock<Option<Arc<[Out]>>>>,
    /// What `alone` is made from, and how it is watched.
    config: Arc<ClientConfig>,
    rebootstrap: Option<(String, Duration)>,
    /// When a record sent alone was last logged.
    alone_logged: Arc<Sparse>,
    stats: Arc<Stats>,
    fatal: Arc<watch::Sender<Option<String>>>,
    /// Set when shutdown gives up: a send waiting for room in a full
    /// queue stops waiting, so that SIGTERM's deadline holds even then.
    abandon: Arc<std::sync::atomic::AtomicBool>,
}

/// One producer and librdkafka's handle of every topic it has written.
///
/// Producing by topic name makes librdkafka find the topic in a list,
/// comparing names one by one under a lock its broker threads also take:
/// 6% of the bridge's CPU with 250 topics per producer, and growing with
/// the namespace. A handle kept per topic costs one hash lookup instead.
struct Out {
    // Declared before `producer`, so the handles are released first, as
    // librdkafka requires before its instance is destroyed.
    topics: Mutex<HashMap<Box<str>, Topic>>,
    producer: Producer_,
    /// The producer's [`LogContext::all_down`].
    all_down: AllDown,
}

/// librdkafka's handle of one topic, held for the producer's lifetime.
struct Topic(NonNull<rd::rd_kafka_topic_t>);

// SAFETY: librdkafka's topic handles are reference-counted and safe to use
// from any thread; this one is only released on drop.
unsafe impl Send for Topic {}
unsafe impl Sync for Topic {}

impl Drop for Topic {
    fn drop(&mut self) {
        // SAFETY: the handle came from rd_kafka_topic_new and is released
        // once, here.
        unsafe { rd::rd_kafka_topic_destroy(self.0.as_ptr()) }
    }
}

impl Out {
    fn new(
        cc: &ClientConfig,
        stats: &Arc<Stats>,
        fatal: &Arc<watch::Sender<Option<String>>>,
    ) -> Result<Self, KafkaSetupError> {
        let mut context = LogContext::new(stats.clone());
        context.fatal = fatal.clone();
        let handle = context.handle.clone();
        let all_down = context.all_down.clone();
        let producer: Producer_ = cc
            .create_with_context(context)
            .map_err(KafkaSetupError::Config)?;
        let _ = handle.set(producer.client().native_ptr() as usize);
        Ok(Out {
            topics: Mutex::default(),
            producer,
            all_down,
        })
    }

    /// The handle of `name`, made on its first record.
    fn topic(&self, name: &str) -> Result<NonNull<rd::rd_kafka_topic_t>, KafkaError> {
        // A poisoned lock only means another thread panicked while
        // inserting; the map itself is still whole.
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = topics.get(name) {
            return Ok(t.0);
        }
        let invalid = || KafkaError::MessageProduction(RDKafkaErrorCode::InvalidTopic);
        let c_name = CString::new(name).map_err(|_| invalid())?;
        // SAFETY: a live instance, a NUL-terminated name, no topic config
        // (the producer's defaults, as producing by name uses).
        let raw = unsafe {
            rd::rd_kafka_topic_new(
                self.producer.client().native_ptr(),
                c_name.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        let handle = NonNull::new(raw).ok_or_else(invalid)?;
        topics.insert(name.into(), Topic(handle));
        Ok(handle)
    }

    /// Enqueues one record with librdkafka, which copies what it keeps.
    fn produce(&self, record: &KafkaRecord) -> Result<DeliveryFuture, KafkaError> {
        let topic = self.topic(&record.topic)?;
        // SAFETY: a headers list of our own, filled with the lengths given
        // (names need no NUL); librdkafka owns it once the record is
        // enqueued, we free it otherwise.
        let headers = unsafe { rd::rd_kafka_headers_new(record.headers.len()) };
        for (name, value) in &record.headers {
            // Fails only on a read-only list, which a new one never is.
            let added = unsafe {
                rd::rd_kafka_header_add(
                    headers,
                    name.as_ptr().cast(),
                    name.len() as isize,
                    value.as_ptr().cast(),
                    value.len() as isize,
                )
            };
            debug_assert_eq!(added, rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
        }
        let (tx, rx) = oneshot::channel();
        let opaque: Opaque = Box::new(tx);
        let opaque = opaque.into_ptr();
        let mem = |bytes: Option<&Vec<u8>>| rd::rd_kafka_vu_s__bindgen_ty_1 {
            mem: rd::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
                ptr: bytes.map_or(std::ptr::null_mut(), |b| b.as_ptr() as *mut c_void),
                size: bytes.map_or(0, Vec::len),
            },
        };
        let vu = |vtype, u| rd::rd_kafka_vu_t { vtype, u };
        use rd::rd_kafka_vtype_t as V;
        let args = [
            vu(
                V::RD_KAFKA_VTYPE_RKT,
                rd::rd_kafka_vu_s__bindgen_ty_1 {
                    rkt: topic.as_ptr(),
                },
            ),
            vu(
                V::RD_KAFKA_VTYPE_MSGFLAGS,
                rd::rd_kafka_vu_s__bindgen_ty_1 {
                    i: rd::RD_KAFKA_MSG_F_COPY,
                },
            ),
            vu(V::RD_KAFKA_VTYPE_VALUE, mem(record.value.as_ref())),
            vu(V::RD_KAFKA_VTYPE_KEY, mem(record.key.as_ref())),
            vu(
                V::RD_KAFKA_VTYPE_OPAQUE,
                rd::rd_kafka_vu_s__bindgen_ty_1 { ptr: opaque },
            ),
            // 0 lets librdkafka stamp the record, as producing by name does.
            vu(
                V::RD_KAFKA_VTYPE_TIMESTAMP,
                rd::rd_kafka_vu_s__bindgen_ty_1 {
                    i64_: record.timestamp_ms.unwrap_or(0),
                },
            ),
            vu(
                V::RD_KAFKA_VTYPE_HEADERS,
                rd::rd_kafka_vu_s__bindgen_ty_1 { headers },
            ),
        ];
        // SAFETY: every pointer in `args` outlives the call (MSG_F_COPY:
        // librdkafka copies key and value), and `topic` is held by `self`.
        let error = unsafe {
            rd::rd_kafka_produceva(
                self.producer.client().native_ptr(),
                args.as_ptr(),
                args.len(),
            )
        };
        if error.is_null() {
            return Ok(rx);
        }
        // SAFETY: on failure librdkafka kept neither the headers nor the
        // opaque, and the error is ours to free.
        let code = unsafe {
            rd::rd_kafka_headers_destroy(headers);
            drop(Opaque::from_ptr(opaque));
            let code = rd::rd_kafka_error_code(error);
            rd::rd_kafka_error_destroy(error);
            code
        };
        Err(KafkaError::MessageProduction(code.into()))
    }
}

/// Why a record did not make it.
#[derive(Debug, Clone)]
pub struct DeliveryError {
    pub error: KafkaError,
}

impl DeliveryError {
    /// Too large: refused by librdkafka at once (the record alone is over
    /// `message.max.bytes`), or by Kafka with the batch it was in, when the
    /// record itself may fit (see `Sink::after_refusal`).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self.error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::MessageBatchTooLarge)
        )
    }

    /// Errors no retry can fix: the record itself is wrong for this
    /// cluster. Everything else (timeouts, leaders moving, brokers down) is
    /// retried, because giving up would drop data.
    pub fn is_permanent(&self) -> bool {
        use RDKafkaErrorCode as C;
        matches!(
            self.error.rdkafka_error_code(),
            Some(
                C::MessageSizeTooLarge
                    | C::InvalidTopic
                    | C::MessageBatchTooLarge
                    | C::InvalidRecord
                    | C::InvalidMessage
                    | C::InvalidMessageSize
                    | C::TopicAuthorizationFailed
                    | C::UnknownTopic
                    | C::PolicyViolation
                    | C::InvalidTimestamp
            )
        )
    }

    /// What an operator can do about a refusal that is a setting of the
    /// cluster rather than a fault of the record, for the dead-letter
    /// reason: a bare "Unknown topic" sends people looking at the message.
    pub fn remedy(&self) -> Option<&'static str> {
        match self.error.rdkafka_error_code()? {
            // librdkafka's own code: the topic was still missing from the
            // cluster's metadata after topic.metadata.propagation.max.ms.
            RDKafkaErrorCode::UnknownTopic => Some(
                "the topic does not exist in Kafka: create it, or let the brokers create it \
                 (auto.create.topics.enable on the brokers, allow.auto.create.topics not false \
                 in kafka.config); a topic created a moment ago must appear within \
                 topic.metadata.propagation.max.ms (30 s by default)",
            ),
            // Dead-lettered only once refused alone (`Sink::after_refusal`).
            RDKafkaErrorCode::MessageSizeTooLarge => Some(
                "the record alone is larger than Kafka allows (the topic's max.message.bytes, \
                 the brokers' message.max.bytes, or message.max.bytes in kafka.config)",
            ),
            _ => None,
        }
    }
}

/// How Kafka confirmed a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    /// Written at an offset the broker returned.
    AtOffset,
    /// Reported delivered with no offset: librdkafka inferred it, from a
    /// later batch's success ("implicitly acked") or a duplicate-sequence
    /// reply. True after a lost reply; false on a broker before Kafka 4.5
    /// that accepted a later batch while this one was refused
    /// (KAFKA-15591), which one request in flight per connection (the
    /// default) rules out. Counted so that it never passes unseen.
    WithoutOffset,
}

/// How a confirmation can end other than in success.
#[derive(Debug)]
pub enum Undelivered {
    /// Kafka did not take the record. librdkafka hands the record back with
    /// the error, so the pipeline need not keep its own copy of every record
    /// in flight to retry or dead-letter one. Boxed: every message in flight
    /// holds room for one of these, and failures are rare.
    Failed(Box<Failed>),
    /// The producer went away without a report (only while shutting down):
    /// the record is gone, so its message must stay unacknowledged.
    Canceled,
}

/// A record Kafka did not take, and why.
#[derive(Debug)]
pub struct Failed {
    pub error: DeliveryError,
    pub record: KafkaRecord,
    /// False when librdkafka refused the record at once, so that a retry
    /// that gets it in is the first time it was produced.
    pub enqueued: bool,
}

impl Undelivered {
    /// Taken, then failed (a delivery report).
    pub fn failed(error: DeliveryError, record: KafkaRecord) -> Self {
        Undelivered::Failed(Box::new(Failed {
            error,
            record,
            enqueued: true,
        }))
    }

    /// Refused at once, never taken.
    pub fn refused(error: DeliveryError, record: KafkaRecord) -> Self {
        Undelivered::Failed(Box::new(Failed {
            error,
            record,
            enqueued: false,
        }))
    }
}

impl From<Undelivered> for DeliveryError {
    /// For a caller that still holds the record and retries it itself.
    fn from(u: Undelivered) -> Self {
        match u {
            Undelivered::Failed(failed) => failed.error,
            Undelivered::Canceled => DeliveryError {
                error: KafkaError::Canceled,
            },
        }
    }
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error)
    }
}

/// How often the watch looks.
const REBOOTSTRAP_EVERY: Duration = Duration::from_secs(2);

/// Works around a librdkafka 2.12 bug that stalls a producer for minutes
/// after a single-broker Kafka fences itself (a pause longer than its
/// session timeout: a GC stall, a frozen VM). For an instant its metadata
/// lists no brokers; librdkafka then drops every broker it knows, and if
/// its own re-bootstrap asks while the broker is still fenced, the answer
/// (no brokers) drops the bootstrap server too: "no usable brokers", and
/// nothing moved for the 5 minutes the fault test waited (its
/// `metadata.recovery.rebootstrap.trigger.ms` timer starts with a metadata
/// request, which it no longer sends). Records wait, none is lost, but the
/// bridge stands still.
///
/// That state is silent: with no broker left, nothing fails any more,
/// while a Kafka that is down or refuses the bridge fails again at each
/// reconnect, at most `reconnect.backoff.max.ms` apart. So after "all
/// brokers down" followed by `quiet` without any error, the bootstrap
/// servers are offered once again (`rd_kafka_brokers_add`). Once, because
/// librdkafka keeps every list offered for its own re-bootstraps: offers
/// on a timer would pile up for as long as Kafka refuses the bridge.
fn watch_rebootstrap(producers: std::sync::Weak<[Out]>, bootstrap: &str, quiet: Duration) {
    let Ok(list) = CString::new(bootstrap) else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("uns-kafka-rebootstrap".into())
        .spawn(move || loop {
            std::thread::sleep(REBOOTSTRAP_EVERY);
            let Some(producers) = producers.upgrade() else {
                return;
            };
            for out in producers.iter() {
                let mut silence = out.all_down.lock().unwrap_or_else(|e| e.into_inner());
                let quiet_long = silence.last_error.is_some_and(|t| t.elapsed() >= quiet);
                if !(silence.all_down && quiet_long) {
                    continue;
                }
                silence.all_down = false;
                drop(silence);
                tracing::info!(
                    "Kafka: no broker error for {} s after all brokers went down; offering the \
                     bootstrap servers again",
                    quiet.as_secs()
                );
                // SAFETY: a live instance (`producers` holds it) and a
                // NUL-terminated list librdkafka copies.
                unsafe {
                    rd::rd_kafka_brokers_add(out.producer.client().native_ptr(), list.as_ptr());
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "could not start the Kafka rebootstrap watch");
    }
}

impl Sink {
    /// `stats` counts the producers' errors (`kafka_errors`).
    pub fn new(
        config: &BTreeMap<String, String>,
        producers: usize,
        stats: Arc<Stats>,
    ) -> Result<Self, KafkaSetupError> {
        let mut cc = ClientConfig::new();
        for (k, v) in config {
            cc.set(k, v);
        }
        let fatal = Arc::new(watch::channel(None).0);
        let producers = (0..producers.max(1))
            .map(|_| Out::new(&cc, &stats, &fatal))
            .collect::<Result<Vec<Out>, _>>()?;
        let producers: Arc<[Out]> = producers.into();
        let rebootstrap = crate::config::kafka_property(config, "bootstrap.servers")
            .filter(|b| !b.is_empty())
            .map(|bootstrap| {
                // A refusing or absent Kafka fails again within the
                // longest reconnect backoff; give it that and a margin.
                let backoff_ms = config
                    .get("reconnect.backoff.max.ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(10_000);
                let quiet = Duration::from_millis(backoff_ms) + Duration::from_secs(5);
                (bootstrap.to_owned(), quiet)
            });
        if let Some((bootstrap, quiet)) = &rebootstrap {
            watch_rebootstrap(Arc::downgrade(&producers), bootstrap, *quiet);
        }
        Ok(Self {
            producers,
            alone: Arc::default(),
            config: Arc::new(cc),
            rebootstrap,
            alone_logged: Arc::default(),
            stats,
            fatal,
            abandon: Arc::default(),
        })
    }

    /// The producer of records sent alone, made on first use; `None` if
    /// librdkafka would not make it (it made the others from the same
    /// settings, so that is not expected).
    fn alone(&self) -> Option<&Out> {
        self.alone
            .get_or_init(|| {
                let mut cc = (*self.config).clone();
                // The one setting that matters (and it has no second name
                // that the user's could be under).
                cc.set("batch.num.messages", "1");
                let out = Out::new(&cc, &self.stats, &self.fatal).inspect_err(|e| {
                    tracing::error!(error = %e, "cannot make the producer for records sent alone");
                });
                let out: Arc<[Out]> = Arc::new([out.ok()?]);
                if let Some((bootstrap, quiet)) = &self.rebootstrap {
                    watch_rebootstrap(Arc::downgrade(&out), bootstrap, *quiet);
                }
                Some(out)
            })
            .as_ref()
            .and_then(|out| out.first())
    }

    /// From `at` on, sends fail at once with `QueueFull`, room or not (a
    /// send waiting for room in a full queue lets go too); that is never
    /// dead-lettered: the message stays unacknowledged.
    pub fn abandon_at(&self, at: tokio::time::Instant) {
        let abandon = self.abandon.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            abandon.store(true, std::sync::atomic::Ordering::Release);
        });
    }

    /// Changes to the reason when a producer fails fatally (librdkafka's
    /// `_FATAL`): nothing it holds will be delivered, so the bridge stops.
    pub fn fatal(&self) -> watch::Receiver<Option<String>> {
        self.fatal.subscribe()
    }

    fn out(&self, topic: &str) -> &Out {
        &self.producers[producer_index(topic, self.producers.len())]
    }

    /// Enqueues one record; the future resolves when Kafka confirms it.
    /// Waits (without blocking the runtime) while librdkafka's queue is
    /// full, which is back-pressure, not failure.
    pub async fn send(&self, record: &KafkaRecord) -> Result<DeliveryFuture, DeliveryError> {
        self.send_on(self.out(&record.topic), record).await
    }

    async fn send_on(
        &self,
        out: &Out,
        record: &KafkaRecord,
    ) -> Result<DeliveryFuture, DeliveryError> {
        loop {
            // Past the shutdown deadline nothing new is enqueued, room or
            // not: a record refused for want of room, then a later record
            // of its topic taken, would put the later one first in Kafka.
            if self.abandon.load(std::sync::atomic::Ordering::Acquire) {
                return Err(DeliveryError {
                    error: KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                });
            }
            match out.produce(record) {
                Ok(f) => return Ok(f),
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(error) => return Err(DeliveryError { error }),
            }
        }
    }

    /// Waits for a delivery report.
    pub async fn confirm(future: DeliveryFuture) -> Result<Confirmed, Undelivered> {
        match future.await {
            Ok(Ok(d)) if d.offset >= 0 => Ok(Confirmed::AtOffset),
            Ok(Ok(_)) => Ok(Confirmed::WithoutOffset),
            Ok(Err((error, message))) => Err(Undelivered::failed(
                DeliveryError { error },
                record_of(message),
            )),
            Err(_) => Err(Undelivered::Canceled),
        }
    }

    /// Sends and waits, retrying what can be retried until it succeeds or
    /// fails permanently; a record Kafka refused as too large with the
    /// batch it was in is tried alone (see `after_refusal`).
    pub async fn deliver(&self, record: &KafkaRecord) -> Result<Confirmed, DeliveryError> {
        match self.deliver_on(self.out(&record.topic), record).await {
            Err((error, true)) => self.after_refusal(error, record).await,
            result => result.map_err(|(e, _)| e),
        }
    }

    /// [`Sink::deliver`] for a record whose delivery failed: what `failed`
    /// says decides whether it is tried again, and how.
    pub async fn redeliver(&self, failed: &Failed) -> Result<Confirmed, DeliveryError> {
        if failed.enqueued {
            self.after_refusal(failed.error.clone(), &failed.record)
                .await
        } else if failed.error.is_permanent() {
            Err(failed.error.clone())
        } else {
            self.deliver(&failed.record).await
        }
    }

    /// After Kafka refused `record` (a delivery report): retried unless it
    /// is for good, and one refused as too large in a batch is tried
    /// alone. Kafka checks a topic's `max.message.bytes` against the whole
    /// batch, and librdkafka fails every record of a batch the broker
    /// refuses rather than split it, as Kafka's Java producer does: records
    /// far below the limit come back too large for their company. Alone
    /// (`batch.num.messages` 1), only one too large by itself is refused.
    /// It lands after the records of its topic sent since, and one request
    /// per record is slow: each one Kafka takes alone is counted (and
    /// logged once a minute), to be avoided with a smaller `batch.size`.
    /// Should the producer for it not be made, the usual one tries again.
    async fn after_refusal(
        &self,
        mut error: DeliveryError,
        record: &KafkaRecord,
    ) -> Result<Confirmed, DeliveryError> {
        while !error.is_too_large() {
            if error.is_permanent() {
                return Err(error);
            }
            // `deliver_on` gives up on permanent errors only.
            error = match self.deliver_on(self.out(&record.topic), record).await {
                Ok(confirmed) => return Ok(confirmed),
                Err((e, true)) => e,
                Err((e, false)) => return Err(e),
            };
        }
        let Some(out) = self.alone() else {
            // Logged when it could not be made: the usual producer it is.
            let out = self.out(&record.topic);
            return self.deliver_on(out, record).await.map_err(|(e, _)| e);
        };
        let confirmed = self.deliver_on(out, record).await.map_err(|(e, _)| e)?;
        // Counted once it went: refused alone too, it was the record.
        self.stats.records_sent_alone.add(1);
        if self.alone_logged.due() {
            tracing::warn!(
                topic = %record.topic,
                "Kafka refused a batch as too large for its topic and took its records one by \
                 one, which is slow: keep batch.size in kafka.config below the smallest topic's \
                 max.message.bytes (logged at most once a minute, counted in \
                 uns_kafka_records_sent_alone_total)"
            );
        }
        Ok(confirmed)
    }

    /// [`Sink::deliver`] on `out`, without what [`Sink::after_refusal`]
    /// adds; a failure says whether Kafka had the record (a delivery
    /// report) or librdkafka refused it at once.
    async fn deliver_on(
        &self,
        out: &Out,
        record: &KafkaRecord,
    ) -> Result<Confirmed, (DeliveryError, bool)> {
        let mut wait = Duration::from_millis(100);
        loop {
            let result = match self.send_on(out, record).await {
                Ok(f) => Self::confirm(f)
                    .await
                    .map_err(|u| (DeliveryError::from(u), true)),
                Err(e) => Err((e, false)),
            };
            match result {
                Ok(confirmed) => return Ok(confirmed),
                Err(e) if e.0.is_permanent() => return Err(e),
                Err((e, _)) => {
                    tracing::warn!(topic = %record.topic, error = %e, "Kafka delivery failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Waits up to `timeout` for everything queued to be confirmed.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        let deadline = std::time::Instant::now() + timeout;
        let mut result = Ok(());
        for p in self.all().map(|o| &o.producer) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if let Err(e) = p.flush(left) {
                result = Err(e);
            }
        }
        result
    }

    pub fn in_flight(&self) -> i32 {
        self.all().map(|o| o.producer.in_flight_count()).sum()
    }

    /// Every producer, the one for records sent alone too once made.
    fn all(&self) -> impl Iterator<Item = &Out> {
        self.producers.iter().chain(
            self.alone
                .get()
                .into_iter()
                .flatten()
                .flat_map(|o| o.iter()),
        )
    }
}

/// The record librdkafka handed back with a failed delivery, as it was
/// produced (a timestamp librdkafka chose is kept, so a retry does not
/// change it).
fn record_of(message: OwnedMessage) -> KafkaRecord {
    let headers = message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default();
    KafkaRecord {
        topic: message.topic().to_owned(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
        timestamp_ms: message.timestamp().to_millis(),
    }
}

/// Which of `n` producers writes `topic`: FNV-1a of the name, the same in
/// every run and on every restart.
fn producer_index(topic: &str, n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let h = topic.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (h % n as u64) as usize
}

/// Used by tests and the demo to read what the bridge wrote.
pub fn header_str<M: Message>(m: &M, name: &str) -> Option<String> {
    use rdkafka::message::Headers;
    let headers = m.headers()?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[cfg(test)]
mod tests {
    use super::{producer_index, record_of, Confirmed, DeliveryError, LogContext, Report, Sink};
    use crate::message::KafkaRecord;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};
    use rdkafka::mocking::MockCluster;
    use rdkafka::ClientContext;
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    fn record(topic: &str, n: u8) -> KafkaRecord {
        KafkaRecord {
            topic: topic.into(),
            key: Some(format!("{topic}/key").into_bytes()),
            value: Some(vec![b'{', n, b'}']),
            headers: vec![
                ("mqtt_topic".into(), b"a/b".to_vec()),
                ("empty".into(), Vec::new()),
                ("mqtt_topic".into(), vec![0, 255]),
            ],
            timestamp_ms: Some(1_700_000_000_000 + i64::from(n)),
        }
    }

    fn sink(bootstrap: &str, extra: &[(&str, &str)]) -> Sink {
        let mut config = BTreeMap::from([("bootstrap.servers".to_owned(), bootstrap.to_owned())]);
        for (k, v) in extra {
            config.insert((*k).to_owned(), (*v).to_owned());
        }
        Sink::new(&config, 2, Default::default()).unwrap()
    }

    /// Reads `n` records of `topic`'s only partition from the start.
    fn read(bootstrap: &str, topic: &str, n: usize) -> Vec<KafkaRecord> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "kafka-unit-test")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .unwrap();
        consumer.assign(&tpl).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                got.push(record_of(m.detach()));
            }
        }
        got
    }

    /// Records go out through the topic handles the sink keeps, with every
    /// field as given (repeated and empty headers included), in order, and
    /// one handle per topic however many records it gets.
    #[tokio::test(flavor = "multi_thread")]
    async fn records_arrive_whole_and_each_topic_keeps_one_handle() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t_a", 1, 1).unwrap();
        mock.create_topic("t_b", 1, 1).unwrap();
        let bootstrap = mock.bootstrap_servers();
        let sink = sink(&bootstrap, &[]);
        let sent = [
            record("t_a", 1),
            record("t_b", 2),
            record("t_a", 3),
            KafkaRecord {
                topic: "t_a".into(),
                ..KafkaRecord::default()
            },
        ];
        let mut futures = Vec::new();
        for r in &sent {
            futures.push(sink.send(r).await.unwrap());
        }
        for f in futures {
            assert_eq!(Sink::confirm(f).await.unwrap(), Confirmed::AtOffset);
        }
        let handles: usize = sink
            .producers
            .iter()
            .map(|o| o.topics.lock().unwrap().len())
            .sum();
        assert_eq!(handles, 2);

        let a = read(&bootstrap, "t_a", 3);
        assert_eq!(a[..2], [sent[0].clone(), sent[2].clone()]);
        // No timestamp given: librdkafka stamps the record itself.
        assert_eq!(a[2].key, None);
        assert_eq!(a[2].value, None);
        assert!(a[2].headers.is_empty());
        assert!(a[2].timestamp_ms.is_some_and(|t| t > 1_700_000_000_000));
        assert_eq!(read(&bootstrap, "t_b", 1), [sent[1].clone()]);
    }

    /// What librdkafka refuses before enqueueing comes back as an error
    /// that dead-letters the message, and the sink goes on working.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_record_refused_at_enqueue_is_a_permanent_error() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t_ok", 1, 1).unwrap();
        let sink = sink(&mock.bootstrap_servers(), &[("message.max.bytes", "1000")]);

        let mut big = record("t_ok", 1);
        big.value = Some(vec![b'x'; 2000]);
        assert_refused(&sink, &big, RDKafkaErrorCode::MessageSizeTooLarge).await;
        // Longer than librdkafka takes for a topic name: no handle at all.
        let long = record(&"t".repeat(600), 1);
        assert_refused(&sink, &long, RDKafkaErrorCode::InvalidTopic).await;

        let f = sink.send(&record("t_ok", 2)).await.unwrap();
        assert_eq!(Sink::confirm(f).await.unwrap(), Confirmed::AtOffset);
    }

    /// Past the shutdown deadline the sink takes nothing more, though its
    /// queue has room: a record refused there (a full queue) followed by a
    /// later one of its topic taken would reach Kafka out of order.
    #[tokio::test(flavor = "multi_thread")]
    async fn past_the_shutdown_deadline_nothing_more_is_enqueued() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t_stop", 1, 1).unwrap();
        let sink = sink(&mock.bootstrap_servers(), &[]);
        let f = sink.send(&record("t_stop", 1)).await.unwrap();
        assert_eq!(Sink::confirm(f).await.unwrap(), Confirmed::AtOffset);

        sink.abandon_at(tokio::time::Instant::now());
        // Set by a task of its own: wait for it, within reason.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sink.abandon.load(std::sync::atomic::Ordering::Acquire) {
            assert!(Instant::now() < deadline, "abandon_at never took effect");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let e = sink.send(&record("t_stop", 2)).await.unwrap_err();
        assert!(
            matches!(
                e.error,
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)
            ),
            "{e}"
        );
        assert!(!e.is_permanent(), "left unacknowledged, not dead-lettered");
        assert_eq!(sink.in_flight(), 0, "nothing was enqueued");
    }

    /// Only a refusal an operator can act on names a remedy (the flow
    /// through a real broker is the e2e test
    /// `a_record_for_a_topic_kafka_does_not_have_is_dead_lettered_with_the_remedy`;
    /// librdkafka's mock cluster answers a missing topic differently).
    #[test]
    fn a_missing_topic_and_a_size_limit_name_their_remedy_and_a_bad_record_none() {
        let refused = |code| DeliveryError {
            error: KafkaError::MessageProduction(code),
        };
        let missing = refused(RDKafkaErrorCode::UnknownTopic);
        assert!(missing.is_permanent());
        assert!(missing
            .remedy()
            .is_some_and(|r| r.contains("does not exist") && r.contains("auto.create.topics")));
        // Dead-lettered only once refused alone; a batch refused as too
        // large is tried again one record at a time.
        let too_large = refused(RDKafkaErrorCode::MessageSizeTooLarge);
        assert!(too_large.is_too_large() && too_large.is_permanent());
        assert!(too_large
            .remedy()
            .is_some_and(|r| r.contains("alone") && r.contains("max.message.bytes")));
        assert!(!missing.is_too_large());
        assert_eq!(refused(RDKafkaErrorCode::InvalidRecord).remedy(), None);
    }

    /// `record` is refused before it is enqueued, with `code`, for good.
    async fn assert_refused(sink: &Sink, record: &KafkaRecord, code: RDKafkaErrorCode) {
        let e = sink.send(record).await.unwrap_err();
        assert!(
            matches!(&e.error, KafkaError::MessageProduction(c) if *c == code),
            "{e}"
        );
        assert!(e.is_permanent());
    }

    #[test]
    fn a_failed_delivery_gives_back_the_record_as_it_was_sent() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "mqtt_topic",
                value: Some("a/b/c".as_bytes()),
            })
            .insert(Header {
                key: "mqtt_qos",
                value: Some("1".as_bytes()),
            });
        let message = OwnedMessage::new(
            Some(br#"{"x":1}"#.to_vec()),
            Some(b"a/b/c".to_vec()),
            "a_b_c".into(),
            Timestamp::CreateTime(1_700_000_000_000),
            0,
            -1,
            Some(headers),
        );
        assert_eq!(
            record_of(message),
            KafkaRecord {
                topic: "a_b_c".into(),
                key: Some(b"a/b/c".to_vec()),
                value: Some(br#"{"x":1}"#.to_vec()),
                headers: vec![
                    ("mqtt_topic".into(), b"a/b/c".to_vec()),
                    ("mqtt_qos".into(), b"1".to_vec()),
                ],
                timestamp_ms: Some(1_700_000_000_000),
            }
        );
        let bare = OwnedMessage::new(None, None, "t".into(), Timestamp::NotAvailable, 0, -1, None);
        assert_eq!(
            record_of(bare),
            KafkaRecord {
                topic: "t".into(),
                ..KafkaRecord::default()
            }
        );
    }

    /// rdkafka reports each producer error twice in a row; it is logged and
    /// counted once, while a later error, the same or not, counts again.
    #[test]
    fn an_error_reported_twice_in_a_row_counts_once() {
        let stats = std::sync::Arc::new(crate::metrics::Stats::default());
        let context = LogContext::new(stats.clone());
        let auth = || KafkaError::Global(RDKafkaErrorCode::Authentication);
        context.error(auth(), "SASL authentication error");
        context.error(auth(), "SASL authentication error");
        assert_eq!(stats.kafka_errors.get(), 1);
        context.error(auth(), "SASL authentication error");
        assert_eq!(stats.kafka_errors.get(), 2);
        context.error(auth(), "SASL authentication error");
        context.error(
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        context.error(
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert_eq!(stats.kafka_errors.get(), 3);
    }

    /// A failed connection comes as librdkafka's ERROR line and then as an
    /// error event with the same text: counted, but logged once. An event
    /// with no such line, or long after it, is logged; "all brokers are
    /// down" once a minute.
    #[test]
    fn an_error_librdkafka_has_just_logged_is_counted_not_logged_again() {
        use rdkafka::config::RDKafkaLogLevel;
        let stats = std::sync::Arc::new(crate::metrics::Stats::default());
        let context = LogContext::new(stats.clone());
        let fail = |reason: &str| {
            let line = format!("[thrd:ssl://127.0.0.1:9095/bootstrap]: {reason}");
            context.log(RDKafkaLogLevel::Error, "FAIL", &line);
        };
        let transport = || KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure);
        let bad_cert = "ssl://127.0.0.1:9095/bootstrap: Receive failed: alert bad certificate";
        fail(bad_cert);
        assert_eq!(context.report(&transport(), bad_cert), Report::Count);
        assert_eq!(context.report(&transport(), bad_cert), Report::Repeat);
        let down = KafkaError::Global(RDKafkaErrorCode::AllBrokersDown);
        let reason = "1/1 brokers are down";
        assert_eq!(context.report(&down, reason), Report::LogAndCount);
        // Said again at the next attempt: counted, logged once a minute.
        assert_eq!(context.report(&down, "0/1 brokers are down"), Report::Count);
        if let Some(long_ago) = Instant::now().checked_sub(crate::logging::LOG_EVERY) {
            context.last_all_down.set_last(long_ago);
            assert_eq!(context.report(&down, reason), Report::LogAndCount);
        }
        let refused = "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed";
        assert_eq!(context.report(&transport(), refused), Report::LogAndCount);
        // A line from long ago is not this event's.
        let reset = "127.0.0.1:9092/1: Connection reset by peer";
        *context.last_fail.lock().unwrap() = Some((
            format!("[thrd:127.0.0.1:9092/1]: {reset}"),
            Instant::now() - Duration::from_secs(2),
        ));
        assert_eq!(context.report(&transport(), reset), Report::LogAndCount);
        // Through `error`, a logged event still counts.
        let closed = "127.0.0.1:9092/1: Disconnected";
        fail(closed);
        context.error(transport(), closed);
        assert_eq!(stats.kafka_errors.get(), 1);
    }

    #[test]
    fn all_brokers_down_arms_the_rebootstrap_watch_and_other_errors_do_not() {
        let context = LogContext::new(std::sync::Arc::default());
        let armed = || context.all_down.lock().unwrap().all_down;
        context.error(
            KafkaError::Global(RDKafkaErrorCode::Authentication),
            "SASL authentication error",
        );
        assert!(!armed());
        context.error(
            KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert!(armed());
    }

    #[test]
    fn a_topic_always_has_the_same_producer_and_topics_spread_over_all() {
        let topics: Vec<String> = (0..1000)
            .map(|i| format!("plant_line{i:04}_temperature"))
            .collect();
        let mut per_producer = [0usize; 4];
        for t in &topics {
            let i = producer_index(t, 4);
            assert_eq!(i, producer_index(t, 4));
            per_producer[i] += 1;
        }
        // Each gets its share, give or take: no producer sits idle.
        for n in per_producer {
            assert!((150..=350).contains(&n), "{per_producer:?}");
        }
        assert_eq!(producer_index("anything", 1), 0);
    }

    /// A fatal producer error (librdkafka's own test hook stands in for a
    /// real one, which only a misbehaving cluster produces) reaches
    /// whoever watches `Sink::fatal`, with librdkafka's reason.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_fatal_producer_error_is_reported_once_with_its_reason() {
        let mock = MockCluster::new(1).unwrap();
        mock.create_topic("t_f", 1, 1).unwrap();
        let sink = sink(&mock.bootstrap_servers(), &[("enable.idempotence", "true")]);
        let mut fatal = sink.fatal();
        assert!(fatal.borrow().is_none());
        // A first record, so the producer runs as it would in the bridge.
        let f = sink.send(&record("t_f", 1)).await.unwrap();
        assert_eq!(Sink::confirm(f).await.unwrap(), Confirmed::AtOffset);
        let reason = std::ffi::CString::new("fabricated for the test").unwrap();
        use rdkafka::producer::Producer as _;
        let native = sink.producers[1].producer.client().native_ptr();
        // SAFETY: a live producer handle and a NUL-terminated reason.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                native,
                rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            );
        }
        tokio::time::timeout(Duration::from_secs(10), fatal.changed())
            .await
            .expect("no fatal report within 10 s")
            .unwrap();
        let why = fatal.borrow_and_update().clone().unwrap();
        assert!(why.contains("fabricated for the test"), "{why}");
        // Reported once: librdkafka's repeats change nothing.
        assert!(
            tokio::time::timeout(Duration::from_millis(500), fatal.changed())
                .await
                .is_err()
        );
    }
}
