//! `uns-kafka run`: MQTT in -> component -> Kafka out -> MQTT ack.
//!
//! One task owns the flow. It takes what the MQTT reader has received (up
//! to `bridge.batch_size`) and hands it to the component on a dedicated
//! thread; when a batch comes back it enqueues the records with the
//! producer in receive order and keeps one future per message in a
//! `FuturesOrdered`. That queue yields messages in the order they arrived,
//! which is the order MQTT requires for acknowledgements, so a message is
//! acknowledged exactly when it and every message before it are safely in
//! Kafka (or in the dead-letter topic).
//!
//! A batch being transformed is a future the loop waits on beside the
//! others, never an `await` that holds the loop: while the component works
//! (or loops until `transform.timeout_ms`), earlier messages are still
//! acknowledged, the next batch is already received, and SIGTERM's deadline
//! still holds.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesOrdered;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{self, ConfigError, Settings};
use crate::error::CliError;
use crate::kafka::{Confirmed, DeliveryError, DeliveryFuture, Failed, Sink, Undelivered};
use crate::message::{KafkaRecord, MessageError, MqttMessage, TransformOutcome};
use crate::metrics::Stats;
use crate::mqtt::{self, AckToken, Inbound, State};
use crate::transform::{self, ComponentInfo, RuntimeOptions, TransformRuntime, Transformer};

/// Arguments of `uns-kafka run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Configuration directory holding settings.yaml (and .secrets.yaml).
    #[arg(long, value_name = "DIR", default_value = "conf")]
    pub config: PathBuf,
    /// Transform component (.wasm); overrides transform.component.
    #[arg(long, value_name = "FILE.wasm")]
    pub component: Option<PathBuf>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long)]
    pub log_json: bool,
}

/// Entry point of `uns-kafka run`.
pub fn main(args: RunArgs) -> Result<(), CliError> {
    crate::logging::init(args.log_json);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(e.into()))?;
    // Before anything slow (compiling the component takes a second or
    // more): a SIGHUP that came earlier would end the process, its default.
    let (shutdown, hangup) = {
        let _rt = runtime.enter();
        let shutdown = Shutdown::new()
            .map_err(|e| CliError::Other(anyhow::anyhow!("signal handlers: {e}")))?;
        (shutdown, Hangup::new())
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %args.config.display(),
        "uns-kafka starting"
    );
    let settings = config::load(&args.config)?;
    let bridge = Bridge::prepare(settings, args.component)?.with_hangup(hangup);
    let result = runtime.block_on(bridge.run(shutdown.recv()));
    // Dropping a runtime waits without limit for what still runs on its
    // blocking pool: a SIGHUP's compile and `init`, or rumqttc's DNS
    // lookup, which a dead resolver holds for half a minute. The stop's
    // deadline has passed by now; neither may hold the exit past it.
    runtime.shutdown_timeout(BLOCKING_AT_EXIT);
    result.map_err(CliError::from_run)
}

/// How long the exit waits for blocking work the stop left behind.
const BLOCKING_AT_EXIT: Duration = Duration::from_millis(500);

/// SIGINT or SIGTERM: stop taking messages and finish those in flight.
/// Registered when made (tokio's `ctrl_c()` registers only when first
/// polled, i.e. once the pipeline runs).
struct Shutdown {
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
}

impl Shutdown {
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                int: signal(SignalKind::interrupt())?,
                term: signal(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn recv(mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// How long a clean-session shutdown waits for the broker to confirm the
/// unsubscribes (a few at a time, see `mqtt::UNSUBSCRIBES_IN_FLIGHT`)
/// before it watches for the broker falling silent instead.
const UNSUBACK_WAIT: Duration = Duration::from_secs(5);

/// How long a persistent session's stop waits for the reader to hand on
/// the QoS 0 messages it holds: it does so as soon as it sees the stop,
/// unless a connection attempt holds it.
const HANDOFF_WAIT: Duration = Duration::from_secs(1);

/// Shutdown gave up on messages Kafka had not confirmed (left
/// unacknowledged, so a persistent session gets them again): the process
/// exits 3, not 0, so that a supervisor sees the stop was not clean.
#[derive(Debug, thiserror::Error)]
#[error(
    "stopped with {count} message(s) Kafka did not confirm within bridge.shutdown_timeout_ms \
     (unacknowledged: with mqtt.clean_session: false the broker delivers them again)"
)]
pub struct Unconfirmed {
    pub count: usize,
}

/// Everything checked and built before the first connection, so a bad
/// setting or a broken component stops the process at once with exit 2.
pub struct Bridge {
    settings: Settings,
    runtime: Arc<TransformRuntime>,
    transformer: Transformer,
    sink: Sink,
    stats: Arc<Stats>,
    ready: Option<oneshot::Sender<()>>,
    hangup: Option<Hangup>,
    /// `--component`, which SIGHUP keeps over `transform.component`.
    component: Option<PathBuf>,
}

impl Bridge {
    pub fn prepare(settings: Settings, component: Option<PathBuf>) -> Result<Self, CliError> {
        let (runtime, transformer) = load_component(&settings, component.clone())?;
        let stats = Arc::new(Stats::default());
        let sink = Sink::new(
            &settings.kafka.config,
            settings.kafka.producers,
            stats.clone(),
        )
        .map_err(|e| ConfigError {
            file: settings.origins_under("kafka.config"),
            key: "kafka.config".into(),
            message: e.to_string(),
        })?;
        Ok(Self {
            settings,
            runtime,
            transformer,
            sink,
            stats,
            ready: None,
            hangup: None,
            component,
        })
    }

    /// SIGHUP as registered before the component was compiled; without it
    /// `run` registers its own when it starts.
    fn with_hangup(mut self, hangup: Hangup) -> Self {
        self.hangup = Some(hangup);
        self
    }

    /// Resolves when the bridge is connected and subscribed for the first
    /// time (the demo publishes only then).
    pub fn ready(&mut self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.ready = Some(tx);
        rx
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What the component says it is, and where it was loaded from.
    pub fn component(&self) -> (&ComponentInfo, &std::path::Path) {
        (self.transformer.info(), self.runtime.path())
    }

    /// Bridges until `shutdown` resolves or the MQTT connection is lost for
    /// good; then stops reading, lets Kafka confirm what is in flight,
    /// acknowledges it, and disconnects.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Bridge {
            settings,
            runtime,
            transformer,
            sink,
            stats,
            ready,
            hangup,
            component,
        } = self;
        let info = transformer.info().clone();
        stats.set_info(info.clone());
        tracing::info!(
            component = %info.name,
            version = %info.version,
            path = %runtime.path().display(),
            "transform component loaded"
        );
        let worker = Worker::spawn(transformer, runtime, settings.component_config())
            .map_err(|e| anyhow::anyhow!("cannot start the transform thread: {e}"))?;
        let mut worker_lost = false;
        let mut kafka_fatal = sink.fatal();
        let mut kafka_failed: Option<String> = None;
        let mut hangup = hangup.unwrap_or_else(Hangup::new);
        let mut reloading: Option<tokio::task::JoinHandle<Result<Loaded, CliError>>> = None;

        let (tx, mut rx) = mpsc::unbounded_channel::<Inbound>();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (reader, acker, control, mut state) = mqtt::connect(
            &settings.mqtt,
            settings.bridge.max_in_flight,
            settings.bridge.max_in_flight_bytes(),
            stats.clone(),
            tx,
            stop_rx,
        )?;
        // Before the reader connects: a port that cannot be had is a
        // configuration error (exit 2, as `check` says), found before any
        // message is taken.
        let health = match settings.bridge.health_listen {
            Some(addr) => Some(
                crate::health::serve(
                    addr,
                    state.clone(),
                    stats.clone(),
                    Duration::from_millis(settings.bridge.health_stall_timeout_ms),
                )
                .await
                .map_err(|e| crate::health::listen_error(&settings, addr, &e))?,
            ),
            None => None,
        };
        let mut reader_task = tokio::spawn(reader.run());
        if let Some(ready) = ready {
            let mut st = state.clone();
            tokio::spawn(async move {
                while *st.borrow_and_update() != State::Ready {
                    if st.changed().await.is_err() {
                        return;
                    }
                }
                let _ = ready.send(());
            });
        }

        let mut out = Arc::new(Output {
            sink: sink.clone(),
            dead_letter_topic: settings.kafka.dead_letter_topic.clone(),
            info: info.clone(),
            stats: stats.clone(),
        });
        let batch_size = settings.bridge.batch_size;
        // `mut`: a reload may bring another `transform.max_memory_mb`.
        let mut batch_bytes = batch_byte_budget(settings.transform.max_memory_mb);
        let clean_session = settings.mqtt.clean_session;
        // Only a persistent session can hold filters this run did not ask for.
        let unsubscribed =
            (!clean_session).then(|| Arc::new(Unsubscribed::new(&settings.mqtt.topics)));
        let mut pending = FuturesOrdered::new();
        // Batches with the component, in receive order, and how many
        // messages they hold (unacknowledged, for the count at a deadline).
        let mut transforming: InTransform = FuturesOrdered::new();
        let mut in_transform = 0usize;
        // Input is closed but what the reader already handed on is still
        // bridged (a persistent session's stop, an unsubscribed drain).
        let mut flush_rx = false;
        // The signal is watched on a task of its own, not only in the loop
        // below: a batch waiting for room in librdkafka's full queue holds
        // the loop, and SIGTERM's deadline must hold even then.
        let (term_tx, mut term) = watch::channel::<Option<tokio::time::Instant>>(None);
        let term_tx = Arc::new(term_tx);
        let signal_task = {
            let term_tx = term_tx.clone();
            tokio::spawn(async move {
                shutdown.await;
                term_tx.send_replace(Some(tokio::time::Instant::now()));
            })
        };
        let abandon_task = {
            let (sink, mut term) = (sink.clone(), term.clone());
            let timeout = Duration::from_millis(settings.bridge.shutdown_timeout_ms);
            tokio::spawn(async move {
                let at = term.wait_for(Option::is_some).await.ok().and_then(|t| *t);
                if let Some(at) = at {
                    sink.abandon_at(at + timeout);
                }
            })
        };
        let mut draining = false;
        let mut input_open = true;
        let mut reader_result: Option<anyhow::Result<()>> = None;
        let mut drain_deadline = None;
        let mut handoff_deadline = None;
        // From the moment draining starts, Kafka has this long to confirm
        // what is in flight; a Kafka that is down or refuses the bridge
        // must not keep SIGTERM from ending it.
        let shutdown_timeout = Duration::from_millis(settings.bridge.shutdown_timeout_ms);
        let mut give_up_at: Option<tokio::time::Instant> = None;
        let mut abandon_armed = false;
        let mut unconfirmed = 0;
        // Received from a clean session and still in the reader when input
        // closed: bridged by nobody, so a stop that leaves any is not clean.
        let mut unconfirmed_at_stop = 0;
        let mut received_at_deadline = 0;

        loop {
            if draining
                && !input_open
                && (!flush_rx || rx.is_empty())
                && transforming.is_empty()
                && pending.is_empty()
            {
                break;
            }
            if draining && give_up_at.is_none() {
                // From the signal, if there was one: the loop may have been
                // held since.
                let from = term.borrow().unwrap_or_else(tokio::time::Instant::now);
                give_up_at = Some(from + shutdown_timeout);
            }
            if let (Some(at), false) = (give_up_at, abandon_armed) {
                // A batch waiting for room in librdkafka's queue holds this
                // loop; the sink must let go by itself at the deadline.
                sink.abandon_at(at);
                abandon_armed = true;
            }
            tokio::select! {
                biased;
                _ = async { term.wait_for(Option::is_some).await.map(|_| ()) }, if !draining => {
                    tracing::info!("shutting down: no new messages; waiting for Kafka to confirm those in flight");
                    draining = true;
                    if clean_session && *state.borrow() == State::Ready {
                        // Unsubscribe and bridge everything the broker still
                        // sends: with a clean session, whatever we do not
                        // bridge now is gone.
                        control.stop_subscriptions().await;
                        drain_deadline = Some(tokio::time::Instant::now() + UNSUBACK_WAIT);
                        received_at_deadline = stats.received.get();
                    } else if clean_session {
                        // No connection to drain: bridge what we hold; what
                        // the reader still buffers is gone, and said so.
                        let _ = stop_tx.send(true);
                        input_open = false;
                        unconfirmed_at_stop = stats.mqtt_waiting.get() as usize;
                        flush_rx = true;
                    } else {
                        // A persistent session keeps the rest of QoS 1 and 2
                        // for next time; what the pipeline already holds is
                        // bridged (and acknowledged, if Kafka confirms it in
                        // time), as QoS 0 gets no second chance: so are the
                        // QoS 0 messages the reader holds, which it hands on
                        // before it says `HandedOn`. A reader busy with a
                        // connection attempt may not say it soon.
                        control.hand_on_held();
                        let _ = stop_tx.send(true);
                        handoff_deadline = Some(tokio::time::Instant::now() + HANDOFF_WAIT);
                    }
                }
                done = pending.next(), if !pending.is_empty() => {
                    if let Some(Some(token)) = done {
                        acker.ack(token).await;
                        stats.acked.add(1);
                    }
                }
                _ = sleep_until_opt(give_up_at), if give_up_at.is_some() => {
                    unconfirmed = pending.len() + in_transform + rx.len() + unconfirmed_at_stop;
                    // Still in the reader: a clean session's drain, or a
                    // persistent session's hand-on that has not come.
                    if input_open {
                        unconfirmed += stats.mqtt_waiting.get() as usize;
                    }
                    if in_transform > 0 {
                        tracing::warn!(
                            messages = in_transform,
                            "the transform component had not finished with these messages \
                             (a call may take up to transform.timeout_ms); they are among those \
                             not acknowledged"
                        );
                    }
                    if kafka_failed.is_some() {
                        tracing::warn!(unconfirmed, "stopping without acknowledging the messages in flight");
                        break;
                    }
                    tracing::warn!(
                        unconfirmed,
                        "Kafka did not confirm every message within bridge.shutdown_timeout_ms; \
                         stopping without acknowledging them (with mqtt.clean_session: false the \
                         broker delivers them again, with a clean session they are gone)"
                    );
                    break;
                }
                changed = state.changed(), if draining && input_open => {
                    let unsubscribed = changed.is_err()
                        || matches!(*state.borrow(), State::Unsubscribed | State::HandedOn);
                    if unsubscribed {
                        input_open = false;
                        flush_rx = true;
                    }
                }
                _ = sleep_until_opt(handoff_deadline), if draining && input_open && handoff_deadline.is_some() => {
                    tracing::warn!(
                        "the MQTT reader did not hand on in time (a connection attempt holds it); \
                         QoS 0 messages it holds are not bridged"
                    );
                    input_open = false;
                    flush_rx = true;
                }
                _ = sleep_until_opt(drain_deadline), if draining && input_open && drain_deadline.is_some() => {
                    // The reader has not said the broker is done (no
                    // UNSUBACK yet, or not quiet yet). While messages still
                    // arrive the UNSUBACK is queued behind them, and while
                    // Kafka has not confirmed ours the broker may be holding
                    // the rest for their acks (its flow control); once
                    // neither, the broker is not answering and waiting
                    // longer gains nothing. `give_up_at` bounds it all.
                    let received = stats.received.get();
                    if received != received_at_deadline
                        || !pending.is_empty()
                        || !transforming.is_empty()
                    {
                        received_at_deadline = received;
                        drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                    } else {
                        // The reader must stop handing on too: nobody reads
                        // what it would send, and the count below would miss it.
                        let _ = stop_tx.send(true);
                        input_open = false;
                        unconfirmed_at_stop = stats.mqtt_waiting.get() as usize;
                        flush_rx = true;
                    }
                }
                why = async {
                    let why = kafka_fatal
                        .wait_for(Option::is_some)
                        .await
                        .map(|why| why.clone().unwrap_or_default());
                    match why {
                        Ok(why) => why,
                        // Cannot happen: the sink, which sends, outlives
                        // this loop.
                        Err(_) => std::future::pending().await,
                    }
                }, if kafka_failed.is_none() => {
                    // Nothing this producer holds will be delivered: stop
                    // now, acknowledging nothing more, and let a restart (a
                    // fresh producer) take the rest.
                    tracing::error!(error = %why, "Kafka producer failed for good; stopping without waiting for Kafka");
                    draining = true;
                    input_open = false;
                    let _ = stop_tx.send(true);
                    give_up_at = Some(tokio::time::Instant::now());
                    kafka_failed = Some(why);
                }
                _ = hangup.recv(), if !draining && reloading.is_none() => {
                    tracing::info!(
                        config = %settings.dir.display(),
                        "SIGHUP: reading the settings again and reloading the transform component"
                    );
                    let (dir, component) = (settings.dir.clone(), component.clone());
                    reloading = Some(tokio::task::spawn_blocking(move || {
                        let settings = config::load(&dir)?;
                        let (runtime, transformer) = load_component(&settings, component)?;
                        let budget = batch_byte_budget(settings.transform.max_memory_mb);
                        Ok((runtime, transformer, settings.component_config(), budget))
                    }));
                }
                loaded = join_opt(&mut reloading), if reloading.is_some() => {
                    reloading = None;
                    let loaded = loaded
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()));
                    match loaded {
                        Ok((runtime, transformer, config, budget)) => {
                            let info = transformer.info().clone();
                            tracing::info!(
                                component = %info.name,
                                version = %info.version,
                                path = %runtime.path().display(),
                                "transform component reloaded"
                            );
                            worker.replace(transformer, runtime, config);
                            // Batches cut from here on go to the new
                            // instance, sized to its memory.
                            batch_bytes = budget;
                            stats.set_info(info.clone());
                            stats.component_reloads.add(1);
                            // Messages in flight keep the Output (and the
                            // component name in their dead-letter headers)
                            // they were transformed with.
                            out = Arc::new(out.with_info(info));
                        }
                        Err(why) => {
                            stats.component_reload_failures.add(1);
                            tracing::error!(error = %why, "transform component not reloaded; the one running stays");
                        }
                    }
                }
                transformed = transforming.next(), if !transforming.is_empty() => {
                    if let Some(transformed) = transformed {
                        in_transform -= transformed.tokens.len();
                        enqueue(transformed, &mut pending).await;
                    }
                }
                received = rx.recv(),
                    if (input_open || (flush_rx && !rx.is_empty()))
                        && transforming.len() < TRANSFORM_DEPTH =>
                {
                    let Some(first) = received else {
                        input_open = false;
                        continue;
                    };
                    let batch = fill_batch(first, &mut rx, batch_size, batch_bytes, |m| {
                        m.message.payload.len()
                    });
                    in_transform += batch.len();
                    transforming.push_back(transform(batch, &worker, &out, unsubscribed.as_ref()));
                }
                result = &mut reader_task, if reader_result.is_none() => {
                    let result = match result {
                        Ok(r) => r.map_err(anyhow::Error::from),
                        Err(e) => Err(anyhow::anyhow!("MQTT reader failed: {e}")),
                    };
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "MQTT input stopped; finishing what is in flight");
                    }
                    reader_result = Some(result);
                    draining = true;
                    // What it handed on before it ended is still bridged;
                    // input closed for another reason (Kafka failed, the
                    // transform thread gone) is not opened again.
                    if input_open {
                        input_open = false;
                        flush_rx = true;
                    }
                }
            }
            if worker.is_gone() && !worker_lost {
                // Not one message more: each would fail. What Kafka has
                // is acknowledged; the rest is not, for a restart to take.
                tracing::error!(
                    "the transform thread stopped; finishing what is in flight and exiting"
                );
                worker_lost = true;
                draining = true;
                input_open = false;
                flush_rx = false;
                let _ = stop_tx.send(true);
            }
        }

        // Messages given up on release their room: a reader waiting for
        // room polls again, so the acknowledgements already queued and the
        // DISCONNECT get written instead of cut off after 5 s.
        let _ = stop_tx.send(true);
        drop(pending);
        drop(transforming);
        let timeout = give_up_at.map_or(shutdown_timeout, |t| {
            t.saturating_duration_since(tokio::time::Instant::now())
        });
        let flush_sink = sink.clone();
        let _ = tokio::task::spawn_blocking(move || flush_sink.flush(timeout)).await;
        control.disconnect().await;
        let reader_result = match reader_result {
            Some(r) => r,
            None => match tokio::time::timeout(Duration::from_secs(5), &mut reader_task).await {
                Ok(Ok(r)) => r.map_err(anyhow::Error::from),
                Ok(Err(e)) => Err(anyhow::anyhow!("MQTT reader failed: {e}")),
                Err(_) => {
                    reader_task.abort();
                    Ok(())
                }
            },
        };
        // The reader checks for the stop and then hands a message on, with
        // nothing between: one that saw no stop yet can land after the last
        // look. Counted once the reader is done, said unless the deadline
        // already counted it, never dropped unseen.
        let late = rx.len();
        if late > 0 && unconfirmed == 0 && kafka_failed.is_none() && !worker_lost {
            tracing::warn!(
                late,
                "messages received as the bridge stopped were not bridged (with a persistent \
                 session the broker delivers QoS 1 and 2 again)"
            );
        }
        signal_task.abort();
        abandon_task.abort();
        drop(term_tx);
        if let Some(h) = health {
            h.abort();
        }
        tracing::info!(
            received = stats.received.get(),
            records = stats.records.get(),
            dead_lettered = stats.dead_lettered.get(),
            lost = stats.lost.get(),
            acknowledged = stats.acked.get(),
            "uns-kafka stopped"
        );
        // A lost MQTT connection says more than what it left unconfirmed.
        reader_result?;
        if let Some(why) = kafka_failed {
            anyhow::bail!(
                "Kafka producer failed for good ({why}); messages it held were not acknowledged"
            );
        }
        if worker_lost {
            anyhow::bail!(
                "the transform thread stopped; messages it did not finish were not acknowledged"
            );
        }
        // `unconfirmed` counted `rx` too when the deadline struck.
        let unconfirmed = unconfirmed.max(unconfirmed_at_stop + late);
        if unconfirmed > 0 {
            return Err(Unconfirmed { count: unconfirmed }.into());
        }
        Ok(())
    }
}

/// Loads and instantiates the component once, so a missing file or a
/// configuration the component rejects is a startup error (exit 2).
pub fn load_component(
    settings: &Settings,
    component: Option<PathBuf>,
) -> Result<(Arc<TransformRuntime>, Transformer), CliError> {
    let (path, key) = match (component, &settings.transform.component) {
        (Some(p), _) => (p, "--component"),
        (None, Some(p)) => (p.clone(), "transform.component"),
        (None, None) => (
            transform::default_component_path(),
            "transform.component (not set: the default component)",
        ),
    };
    let config_error = |message: String| ConfigError {
        file: match key {
            "--component" => "command line".to_owned(),
            "transform.component" => settings.origin_of(key),
            // Set by no file: the nearest parent's origin would blame one.
            _ => "built-in default".to_owned(),
        },
        key: key.to_owned(),
        message,
    };
    let runtime = TransformRuntime::load(&path, RuntimeOptions::from(&settings.transform))
        .map_err(|e| config_error(format!("{}: {e}", path.display())))?;
    let runtime = Arc::new(runtime);
    let transformer = runtime
        .instantiate(&settings.component_config())
        .map_err(|e| ConfigError {
            file: init_error_origin(settings, &e.to_string()),
            key: "transform (component init)".into(),
            message: e.to_string(),
        })?;
    Ok((runtime, transformer))
}

/// Where the settings a component's `init` refused came from: the key its
/// error starts with, when it names one of those the host hands on (the
/// default component does), else every source of them.
fn init_error_origin(settings: &Settings, error: &str) -> String {
    const HANDED_ON: [&str; 4] = [
        "mqtt.ignored_attributes",
        "mqtt.timestamp_attribute",
        "transform.topic_separator",
        "transform.config",
    ];
    // The message reads "<component> init: <key>: <why>" or "<key>: <why>";
    // the key's own origin (its nearest parent's if it came with a map).
    let named = error.split(": ").find(|part| {
        HANDED_ON
            .iter()
            .any(|key| part == key || part.starts_with(&format!("{key}.")))
    });
    match named {
        Some(key) => settings.origin_of(key),
        None => {
            let mut all: Vec<String> = HANDED_ON
                .iter()
                .map(|key| settings.origins_under(key))
                .collect();
            all.sort_unstable();
            all.dedup();
            all.join(" and ")
        }
    }
}

/// A component compiled and instantiated by [`load_component`] on SIGHUP,
/// the configuration its `init` took (for a fresh instance later), and
/// the batch byte budget of its `transform.max_memory_mb`.
type Loaded = (Arc<TransformRuntime>, Transformer, String, usize);

/// SIGHUP, the usual "reload" signal: with a handler installed it no longer
/// ends the process (its default), which would drop what is in flight.
struct Hangup(#[cfg(unix)] Option<tokio::signal::unix::Signal>);

impl Hangup {
    fn new() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Self(signal(SignalKind::hangup()).ok())
        }
        #[cfg(not(unix))]
        Self()
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.0 {
            if s.recv().await.is_some() {
                return;
            }
        }
        std::future::pending().await
    }
}

/// Awaits the task in `handle`; like [`sleep_until_opt`], only polled by a
/// branch guarded by `handle.is_some()`.
async fn join_opt<T>(
    handle: &mut Option<tokio::task::JoinHandle<T>>,
) -> Result<T, tokio::task::JoinError> {
    match handle {
        Some(h) => h.await,
        None => std::future::pending().await,
    }
}

/// Runs the component on its own thread: a call may take up to
/// `transform.timeout_ms`, which must not stall the async runtime.
struct Worker {
    tx: std::sync::mpsc::Sender<Job>,
    /// Set when the thread is found gone: every later message would fail,
    /// so the pipeline stops (exit 1) rather than dead-letter them all.
    gone: Arc<std::sync::atomic::AtomicBool>,
}

enum Job {
    Batch(
        Vec<MqttMessage>,
        oneshot::Sender<(Vec<MqttMessage>, Vec<TransformOutcome>)>,
    ),
    /// A reloaded component: every batch sent after this runs in it.
    Replace(Transformer, Arc<TransformRuntime>, String),
}

impl Worker {
    fn spawn(
        mut transformer: Transformer,
        mut runtime: Arc<TransformRuntime>,
        mut config: String,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("uns-transform".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    let (messages, reply) = match job {
                        Job::Batch(messages, reply) => (messages, reply),
                        Job::Replace(t, r, c) => {
                            (transformer, runtime, config) = (t, r, c);
                            continue;
                        }
                    };
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        transformer.transform_batch(&messages)
                    }));
                    let outcomes = match result {
                        Ok(o) => o,
                        Err(_) => {
                            tracing::error!(
                                "transform panicked in the host; starting a fresh instance"
                            );
                            // Guarded too: a panic here would end the
                            // thread, and with it the bridge.
                            let fresh =
                                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    runtime.instantiate(&config)
                                }));
                            if let Ok(Ok(t)) = fresh {
                                transformer = t;
                            }
                            messages
                                .iter()
                                .map(|_| {
                                    Err(MessageError::new(
                                        "internal",
                                        "host panic while transforming",
                                    ))
                                })
                                .collect()
                        }
                    };
                    let _ = reply.send((messages, outcomes));
                }
            })
            .map(|_| Self {
                tx,
                gone: Default::default(),
            })
    }

    fn is_gone(&self) -> bool {
        self.gone.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Queues `messages` for the thread at once (batches run in the order
    /// they were queued) and returns the answer to wait for; an empty
    /// answer makes the caller leave the batch unacknowledged.
    fn submit(
        &self,
        messages: Vec<MqttMessage>,
    ) -> impl Future<Output = (Vec<MqttMessage>, Vec<TransformOutcome>)> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let gone = self.gone.clone();
        let refused = match self.tx.send(Job::Batch(messages, reply)) {
            Ok(()) => None,
            Err(std::sync::mpsc::SendError(job)) => {
                gone.store(true, std::sync::atomic::Ordering::Release);
                Some(match job {
                    Job::Batch(messages, _) => messages,
                    Job::Replace(..) => Vec::new(),
                })
            }
        };
        async move {
            if let Some(messages) = refused {
                return (messages, Vec::new());
            }
            answer.await.unwrap_or_else(|_| {
                gone.store(true, std::sync::atomic::Ordering::Release);
                Default::default()
            })
        }
    }

    /// Batches sent after this run in `transformer`.
    fn replace(&self, transformer: Transformer, runtime: Arc<TransformRuntime>, config: String) {
        if self
            .tx
            .send(Job::Replace(transformer, runtime, config))
            .is_err()
        {
            tracing::error!("transform thread is gone; the reloaded component is not used");
        }
    }
}

/// One future per message in receive order; `None` leaves the message
/// unacknowledged (a persistent session gets it again).
type Pending = FuturesOrdered<std::pin::Pin<Box<dyn Future<Output = Option<AckToken>> + Send>>>;

/// Sleeps until `deadline`; a `select!` branch guarded by
/// `deadline.is_some()` never polls it with `None`, so pending forever then
/// is only a safe default.
async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// How many batches may be with the component at once: the one it works
/// on and the next, already received, so the thread never waits for the
/// loop to enqueue a batch's records before it starts on the next.
const TRANSFORM_DEPTH: usize = 2;

/// A batch back from the component, with what it needs to go on: the
/// acknowledgement tokens, and the [`Output`] current when the batch was
/// received (a reload since then does not relabel its dead letters).
struct Transformed {
    messages: Vec<MqttMessage>,
    outcomes: Vec<TransformOutcome>,
    tokens: Vec<AckToken>,
    out: Arc<Output>,
}

/// Batches with the component, in receive order.
type InTransform = FuturesOrdered<std::pin::Pin<Box<dyn Future<Output = Transformed> + Send>>>;

/// Payload bytes after which a batch takes no more messages (so it holds
/// at most this plus one message; a larger one may go alone). The component holds a batch's payloads and its records at once;
/// 256 large messages of a backlog would pass `transform.max_memory_mb`,
/// and the instance replaced for it forgets what it learned (Sparkplug
/// BIRTHs) although no message was at fault.
pub(crate) fn batch_byte_budget(max_memory_mb: u64) -> usize {
    usize::try_from(max_memory_mb.saturating_mul(1 << 20) / 8).unwrap_or(usize::MAX)
}

/// `first` and what else is waiting, up to `max_len` messages and
/// `max_bytes` of payload (stopping after the message that reaches it).
fn fill_batch<T>(
    first: T,
    rx: &mut mpsc::UnboundedReceiver<T>,
    max_len: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<T> {
    let mut bytes = size(&first);
    let mut batch = Vec::with_capacity(max_len.min(64));
    batch.push(first);
    while batch.len() < max_len && bytes < max_bytes {
        match rx.try_recv() {
            Ok(m) => {
                bytes = bytes.saturating_add(size(&m));
                batch.push(m);
            }
            Err(_) => break,
        }
    }
    batch
}

/// Messages sent for none of this run's subscriptions, looked for with a
/// persistent session only: it keeps the subscriptions of earlier runs, so
/// a filter taken out of the settings goes on delivering until the session
/// ends. With MQTT 5 the broker says which subscription a message came for
/// (`MqttMessage::subscribed`); otherwise a message whose topic matches
/// none of `mqtt.topics` counts as such (and so does one whose topic the
/// broker rewrote, as EMQX's rewrite rules can; with a clean session they
/// are not looked for, and are bridged). They skip the component and go to
/// the dead-letter topic with the remedy: dropped, a rewritten topic would
/// be lost without a trace. Logged once a minute rather than each.
struct Unsubscribed {
    subscriptions: mqtt::Subscriptions,
    /// Found by its topic.
    reason: MessageError,
    /// Found by the broker's subscription identifier.
    reason_by_id: MessageError,
    logged: crate::logging::Sparse,
}

/// `dlq_error_kind` of a message sent for none of this run's subscriptions.
const UNSUBSCRIBED: &str = "unsubscribed";

impl Unsubscribed {
    fn new(filters: &[String]) -> Self {
        Self {
            subscriptions: mqtt::Subscriptions::new(filters),
            reason: MessageError::new(
                UNSUBSCRIBED,
                format!(
                    "the topic matches none of mqtt.topics {filters:?}: the persistent session \
                     still holds a subscription of an earlier run (change mqtt.client_id, or run \
                     once with mqtt.clean_session: true, to end it), or the broker rewrote the topic"
                ),
            ),
            reason_by_id: MessageError::new(
                UNSUBSCRIBED,
                format!(
                    "the broker sent this for a subscription of an earlier run, not for this \
                     run's mqtt.topics {filters:?} (its MQTT 5 subscription identifier says so): \
                     the persistent session still holds that subscription (change \
                     mqtt.client_id, or run once with mqtt.clean_session: true, to end it)"
                ),
            ),
            logged: Default::default(),
        }
    }

    /// Whether `m` came for one of this run's subscriptions: as the broker
    /// says (MQTT 5), or else as its topic says.
    fn subscribed(&self, m: &MqttMessage) -> bool {
        m.subscribed
            .unwrap_or_else(|| self.subscriptions.matches(&m.topic))
    }

    /// The dead-letter reason of a message [`Unsubscribed::take`] took.
    fn reason(&self, m: &MqttMessage) -> &MessageError {
        match m.subscribed {
            Some(false) => &self.reason_by_id,
            _ => &self.reason,
        }
    }

    /// Takes the messages that came for none of this run's subscriptions
    /// out of `messages`, each with its place in the batch.
    fn take(&self, messages: &mut Vec<MqttMessage>) -> Vec<(usize, MqttMessage)> {
        let Some(first) = messages.iter().position(|m| !self.subscribed(m)) else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        for (i, m) in messages.split_off(first).into_iter().enumerate() {
            // The first of these is the one just found.
            if i > 0 && self.subscribed(&m) {
                messages.push(m);
            } else {
                taken.push((first + i, m));
            }
        }
        taken
    }

    /// Puts the messages [`Unsubscribed::take`] took back in their places,
    /// each with the reason to dead-letter it. An answer short of the
    /// `submitted` messages (the thread died) is left as it is, for
    /// `enqueue` to leave the batch unacknowledged.
    fn put_back(
        &self,
        (mut messages, mut outcomes): (Vec<MqttMessage>, Vec<TransformOutcome>),
        submitted: usize,
        taken: Vec<(usize, MqttMessage)>,
        stats: &Stats,
    ) -> (Vec<MqttMessage>, Vec<TransformOutcome>) {
        if messages.len() == submitted && outcomes.len() == submitted {
            stats.unsubscribed.add(taken.len() as u64);
            if !taken.is_empty() && self.logged.due() {
                tracing::warn!(
                    mqtt_topic = %taken[0].1.topic,
                    total = stats.unsubscribed.get(),
                    "{} (dead-lettered; logged at most once a minute)",
                    self.reason(&taken[0].1).message
                );
            }
            // In ascending order, so each lands where it was.
            for (at, m) in taken {
                outcomes.insert(at, Err(self.reason(&m).clone()));
                messages.insert(at, m);
            }
        }
        (messages, outcomes)
    }
}

/// Hands a batch to the component thread; the future resolves when it is
/// transformed.
fn transform(
    batch: Vec<Inbound>,
    worker: &Worker,
    out: &Arc<Output>,
    unsubscribed: Option<&Arc<Unsubscribed>>,
) -> std::pin::Pin<Box<dyn Future<Output = Transformed> + Send>> {
    let (mut messages, tokens): (Vec<MqttMessage>, Vec<AckToken>) =
        batch.into_iter().map(|i| (i.message, i.ack)).unzip();
    let taken = match unsubscribed {
        Some(u) => u.take(&mut messages),
        None => Vec::new(),
    };
    let unsubscribed = (!taken.is_empty()).then(|| unsubscribed.cloned()).flatten();
    let submitted = messages.len();
    let answer = (submitted > 0).then(|| worker.submit(messages));
    let out = out.clone();
    Box::pin(async move {
        let answer = match answer {
            Some(answer) => answer.await,
            None => Default::default(),
        };
        let (messages, outcomes) = match unsubscribed {
            Some(u) => u.put_back(answer, submitted, taken, &out.stats),
            None => answer,
        };
        Transformed {
            messages,
            outcomes,
            tokens,
            out,
        }
    })
}

/// Enqueues a transformed batch's records, in receive order.
async fn enqueue(transformed: Transformed, pending: &mut Pending) {
    let Transformed {
        messages,
        outcomes,
        tokens,
        out,
    } = transformed;
    if messages.len() != tokens.len() || outcomes.len() != tokens.len() {
        // Cannot happen unless the transform thread died mid-call; the
        // messages are not acknowledged, so a persistent session gets them
        // again.
        tracing::error!("transform thread lost a batch; its messages are not acknowledged");
        return;
    }
    for ((message, outcome), token) in messages.into_iter().zip(outcomes).zip(tokens) {
        match outcome {
            Ok(records) => {
                // Only the delivery futures are kept: a failed delivery
                // hands its record back, so the message in flight costs no
                // second copy of its records.
                // A record for a topic Kafka would refuse is the
                // component's bug: the whole message is dead-lettered and
                // none of its records produced, so a replay from the
                // dead-letter topic duplicates nothing (and `uns-kafka
                // transform` shows the same outcome).
                let failure = records.iter().find_map(invalid_topic);
                let records = if failure.is_some() {
                    Vec::new()
                } else {
                    records
                };
                let mut sends = Vec::with_capacity(records.len());
                for record in records {
                    sends.push(match out.sink.send(&record).await {
                        Ok(f) => Ok(f),
                        Err(error) => Err(Undelivered::refused(error, record)),
                    });
                }
                // Enqueued, not attempted: one refused at once is no
                // record produced (its message goes to the dead-letter topic).
                out.stats
                    .records
                    .add(sends.iter().filter(|s| s.is_ok()).count() as u64);
                pending.push_back(Box::pin(confirm_message(
                    sends,
                    failure,
                    message,
                    token,
                    out.clone(),
                )));
            }
            Err(reason) => {
                let out = out.clone();
                out.stats.count_component_failure(&reason.kind);
                // Not the component's: it never saw the message.
                let stage = if reason.kind == UNSUBSCRIBED {
                    "receive"
                } else {
                    "transform"
                };
                pending.push_back(Box::pin(async move {
                    if out.dead_letter(&message, &reason, stage).await {
                        observe_delivery(&out.stats, &message);
                    }
                    Some(token)
                }));
            }
        }
    }
}

/// Waits until Kafka has confirmed every record of one message (or it is
/// dead-lettered), then yields its acknowledgement. A whole window of these
/// (`bridge.max_in_flight`) waits at once, so what the state machine holds
/// across an await is memory per message in flight. The rare paths (retry,
/// dead letter) run in boxed futures of their own, a failure arrives boxed,
/// and the body is an async block (below): together these took this future
/// from 1,072 to 400 bytes (`size_of_val`, release build), and one shared
/// [`Output`] instead of three handles to 376.
// Not an async fn on purpose: see the comment on the block.
#[allow(clippy::manual_async_fn)]
fn confirm_message(
    sends: Vec<Result<DeliveryFuture, Undelivered>>,
    mut failure: Option<MessageError>,
    message: MqttMessage,
    token: AckToken,
    out: Arc<Output>,
) -> impl Future<Output = Option<AckToken>> {
    // An async block, not an async fn: its captures are used in place,
    // where an async fn's arguments would be stored twice
    // (rust-lang/rust#62958).
    async move {
        // A message the component filtered out (no records) was delivered
        // nowhere: its time would pull the histogram's quantiles towards 0.
        let filtered = sends.is_empty() && failure.is_none();
        for sent in sends {
            let result = match sent {
                Ok(f) => Sink::confirm(f).await,
                Err(u) => Err(u),
            };
            match result {
                Ok(confirmed) => count_confirmed(&out.stats, confirmed, &message),
                Err(Undelivered::Failed(failed)) => {
                    let first_time = !failed.enqueued;
                    match Box::pin(retry(&out.sink, *failed)).await {
                        Ok(confirmed) => {
                            if first_time {
                                out.stats.records.add(1);
                            }
                            count_confirmed(&out.stats, confirmed, &message);
                        }
                        Err(reason) => failure = Some(reason),
                    }
                }
                Err(Undelivered::Canceled) => {
                    tracing::error!(mqtt_topic = %message.topic,
                        "Kafka producer stopped before confirming; the message is not acknowledged");
                    return None;
                }
            }
        }
        let delivered = match failure {
            Some(reason) => Box::pin(out.dead_letter(&message, &reason, "produce")).await,
            None => true,
        };
        // A lost message's time is no delivery time.
        if delivered && !filtered {
            observe_delivery(&out.stats, &message);
        }
        Some(token)
    }
}

/// Counts a record Kafka confirmed, on the first attempt or a retry.
fn count_confirmed(stats: &Stats, confirmed: Confirmed, message: &MqttMessage) {
    stats.confirmed.add(1);
    if confirmed == Confirmed::WithoutOffset {
        stats.confirmed_without_offset.add(1);
        tracing::warn!(mqtt_topic = %message.topic,
            "Kafka reported a record delivered without an offset; if \
             kafka.config raises max.in.flight.requests.per.connection above 1 \
             on a broker before Kafka 4.5, it may be lost (KAFKA-15591)");
    }
}

/// A record Kafka refused: retried until it succeeds unless the refusal is
/// permanent, in which case the reason is the message's dead-letter reason.
async fn retry(sink: &Sink, failed: Failed) -> Result<Confirmed, MessageError> {
    sink.redeliver(&failed)
        .await
        .map_err(|e| produce_error(&failed.record.topic, &e))
}

/// Wall-clock, like `received_at_ms` (the component's fallback record
/// timestamp); a clock stepped back counts as 0.
fn observe_delivery(stats: &Stats, message: &MqttMessage) {
    let ms = crate::message::now_ms().saturating_sub(message.received_at_ms);
    stats.delivery.observe_ms(u64::try_from(ms).unwrap_or(0));
}

fn produce_error(topic: &str, e: &DeliveryError) -> MessageError {
    let mut reason = format!("Kafka rejected the record for topic {topic:?}: {e}");
    if let Some(remedy) = e.remedy() {
        reason.push_str("; ");
        reason.push_str(remedy);
    }
    MessageError::new("kafka-rejected", reason)
}

/// Where every message's records go, and what counts them: the producers,
/// the dead-letter topic and the bridge's counters. One `Arc` of these per
/// message in flight rather than a handle to each.
struct Output {
    sink: Sink,
    dead_letter_topic: String,
    info: ComponentInfo,
    stats: Arc<Stats>,
}

impl Output {
    /// The same outputs for messages a reloaded component transforms.
    fn with_info(&self, info: ComponentInfo) -> Self {
        Self {
            sink: self.sink.clone(),
            dead_letter_topic: self.dead_letter_topic.clone(),
            info,
            stats: self.stats.clone(),
        }
    }

    /// Writes a message that could not be bridged, with the reason, so
    /// nothing is dropped silently. False if the dead-letter topic refused
    /// it too: lost, and counted so.
    async fn dead_letter(&self, message: &MqttMessage, reason: &MessageError, stage: &str) -> bool {
        let topic = &self.dead_letter_topic;
        let reason = &MessageError::new(reason.kind.clone(), clip_reason(&reason.message));
        // Those of an old filter may be every message: `Unsubscribed` logs.
        if reason.kind != UNSUBSCRIBED {
            tracing::warn!(mqtt_topic = %message.topic, kind = %reason.kind, reason = %reason.message, "message dead-lettered to {topic}");
        }
        let mut record = dead_letter_record(topic, message, reason, stage, &self.info);
        // `deliver` tries a record Kafka refused with its batch alone.
        let written = match self.sink.deliver(&record).await {
            Ok(_) => true,
            Err(e) => {
                // Usually too large for the dead-letter topic as well: keep
                // the reason and the topic, say how big the payload was.
                // Empty rather than null: a null value is a tombstone, which
                // on a compacted dead-letter topic deletes the earlier dead
                // letters of the same MQTT topic (the key).
                record.value = Some(Vec::new());
                record.headers.push((
                    "dlq_payload_dropped".into(),
                    format!("{} bytes: {e}", message.payload.len()).into_bytes(),
                ));
                match self.sink.deliver(&record).await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::error!(mqtt_topic = %message.topic, error = %e, dead_letter_topic = %topic,
                            "cannot write to the dead-letter topic; the message is lost");
                        false
                    }
                }
            }
        };
        if written {
            self.stats.dead_lettered.add(1);
        } else {
            self.stats.lost.add(1);
        }
        written
    }
}

/// The error a record earns if Kafka would refuse its topic's name (a
/// component's bug); `uns-kafka transform` shows the same, so an author
/// sees it before a rollout.
pub fn invalid_topic(record: &KafkaRecord) -> Option<MessageError> {
    config::check_kafka_topic(&record.topic).err().map(|why| {
        MessageError::new(
            "invalid-topic",
            format!("component returned Kafka topic {:?}: {why}", record.topic),
        )
    })
}

/// Most bytes of a reason in `dlq_reason` and the log line, the note of
/// what was cut included. A component may put anything in its error's
/// message (a `{:?}` of the whole payload is easy to write); uncut, a
/// reason of a megabyte makes the dead-letter record too large for Kafka
/// even without its payload, and the message would be lost instead of
/// dead-lettered.
const REASON_MAX_BYTES: usize = 4096;

/// `reason` cut on a character boundary to at most [`REASON_MAX_BYTES`],
/// saying how much was cut.
fn clip_reason(reason: &str) -> String {
    if reason.len() <= REASON_MAX_BYTES {
        return reason.to_owned();
    }
    // Room for the note: "... (" + up to 19 digits (a usize) + " more
    // bytes cut)" is at most 40 bytes.
    let mut end = REASON_MAX_BYTES - 40;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}... ({} more bytes cut)",
        &reason[..end],
        reason.len() - end
    )
}

/// The dead-letter record: raw payload as value, MQTT topic as key, and
/// the reason in headers (`dlq_reason`, `dlq_error_kind`, `dlq_stage`).
pub fn dead_letter_record(
    topic: &str,
    message: &MqttMessage,
    reason: &MessageError,
    stage: &str,
    info: &ComponentInfo,
) -> KafkaRecord {
    let mut headers = vec![
        ("dlq_reason".to_owned(), reason.message.clone().into_bytes()),
        (
            "dlq_error_kind".to_owned(),
            reason.kind.clone().into_bytes(),
        ),
        ("dlq_stage".to_owned(), stage.as_bytes().to_vec()),
        ("mqtt_topic".to_owned(), message.topic.clone().into_bytes()),
        ("mqtt_qos".to_owned(), message.qos.to_string().into_bytes()),
        (
            "mqtt_retain".to_owned(),
            message.retain.to_string().into_bytes(),
        ),
        (
            "received_at_ms".to_owned(),
            message.received_at_ms.to_string().into_bytes(),
        ),
        ("transform_name".to_owned(), info.name.clone().into_bytes()),
        (
            "transform_version".to_owned(),
            info.version.clone().into_bytes(),
        ),
    ];
    if let Some(ct) = &message.content_type {
        headers.push(("mqtt_content_type".to_owned(), ct.clone().into_bytes()));
    }
    KafkaRecord {
        topic: topic.to_owned(),
        key: Some(message.topic.clone().into_bytes()),
        value: Some(message.payload.to_vec()),
        headers,
        timestamp_ms: Some(message.received_at_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_ends_at_its_count_or_its_payload_bytes() {
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let sizes = |b: &[Vec<u8>]| b.iter().map(Vec::len).collect::<Vec<_>>();
        for n in [10, 10, 10, 10] {
            tx.send(vec![0; n]).unwrap();
        }
        // By count.
        let b = fill_batch(vec![0; 1], &mut rx, 3, 1000, Vec::len);
        assert_eq!(sizes(&b), [1, 10, 10]);
        // By bytes: the message that reaches the budget is the last.
        let b = fill_batch(vec![0; 5], &mut rx, 100, 15, Vec::len);
        assert_eq!(sizes(&b), [5, 10]);
        // A message over the budget goes alone.
        tx.send(vec![0; 1]).unwrap();
        let b = fill_batch(vec![0; 50], &mut rx, 100, 15, Vec::len);
        assert_eq!(sizes(&b), [50]);
        // What is left comes next, up to what is there.
        let b = fill_batch(vec![0; 1], &mut rx, 100, 1000, Vec::len);
        assert_eq!(sizes(&b), [1, 10, 1]);
        assert_eq!(batch_byte_budget(128), 16 << 20);
    }

    /// An empty QoS 1 message on `topic`, with nothing said of its
    /// subscription.
    fn received_on(topic: &str) -> MqttMessage {
        MqttMessage {
            topic: topic.into(),
            payload: Default::default(),
            qos: 1,
            retain: false,
            user_properties: Vec::new(),
            content_type: None,
            received_at_ms: 0,
            subscribed: None,
        }
    }

    /// Where the broker says which subscription a message came for (MQTT 5),
    /// that decides, not the topic: a topic the broker rewrote is bridged,
    /// and a message an earlier run's filter brought is dead-lettered even
    /// when this run's filters match its topic too, with a reason that says
    /// how it was told.
    #[test]
    fn the_brokers_word_on_a_subscription_outranks_the_topic() {
        let message = |topic: &str, subscribed| MqttMessage {
            subscribed,
            ..received_on(topic)
        };
        let u = Unsubscribed::new(&["a/#".into()]);
        let mut batch = vec![
            message("rewritten/1", Some(true)),
            message("a/1", Some(false)),
            message("a/2", None),
            message("old/1", None),
        ];
        let taken = u.take(&mut batch);
        let topics = |b: &[MqttMessage]| b.iter().map(|m| m.topic.clone()).collect::<Vec<_>>();
        assert_eq!(topics(&batch), ["rewritten/1", "a/2"]);
        let reasons: Vec<(usize, &str)> = taken
            .iter()
            .map(|(i, m)| (*i, u.reason(m).message.as_str()))
            .collect();
        assert_eq!(reasons.len(), 2);
        assert_eq!(reasons[0].0, 1);
        assert!(
            reasons[0].1.contains("subscription identifier"),
            "{}",
            reasons[0].1
        );
        assert_eq!(reasons[1].0, 3);
        assert!(
            reasons[1].1.starts_with("the topic matches none"),
            "{}",
            reasons[1].1
        );
    }

    /// Messages for a filter this run does not subscribe to skip the
    /// component and come back in their places with the reason to
    /// dead-letter them, so they are acknowledged in receive order.
    #[test]
    fn unsubscribed_messages_skip_the_component_and_keep_their_places() {
        let message = received_on;
        let stats = Stats::default();
        let u = Unsubscribed::new(&["a/#".into()]);
        let mut batch: Vec<MqttMessage> = ["old/1", "a/1", "old/2", "old/3", "a/2"]
            .map(message)
            .into();
        let taken = u.take(&mut batch);
        let topics = |b: &[MqttMessage]| b.iter().map(|m| m.topic.clone()).collect::<Vec<_>>();
        assert_eq!(topics(&batch), ["a/1", "a/2"]);
        assert_eq!(taken.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 2, 3]);
        // What the component made of the two it saw: one record each.
        let record = |t: &str| KafkaRecord {
            topic: t.into(),
            ..Default::default()
        };
        let outcomes = vec![Ok(vec![record("k1")]), Ok(vec![record("k2")])];
        let (messages, outcomes) = u.put_back((batch, outcomes), 2, taken, &stats);
        assert_eq!(stats.unsubscribed.get(), 3);
        assert_eq!(topics(&messages), ["old/1", "a/1", "old/2", "old/3", "a/2"]);
        let records: Vec<Result<usize, &str>> = outcomes
            .iter()
            .map(|o| o.as_ref().map(Vec::len).map_err(|e| e.kind.as_str()))
            .collect();
        let gone = Err(UNSUBSCRIBED);
        assert_eq!(records, [gone, Ok(1), gone, gone, Ok(1)]);
        let Err(reason) = &outcomes[0] else {
            unreachable!()
        };
        assert!(
            reason.message.contains(r#"mqtt.topics ["a/#"]"#)
                && reason.message.contains("mqtt.client_id"),
            "{reason}"
        );
        // A batch every message of which matches is left alone.
        let mut batch: Vec<MqttMessage> = ["a/1", "a"].map(message).into();
        assert!(u.take(&mut batch).is_empty());
        assert_eq!(batch.len(), 2);
        // An answer short of its batch (the thread died) stays short, and
        // `enqueue` leaves the whole batch unacknowledged.
        // (Refused at once: the messages come back without outcomes; or
        // the reply dropped: neither comes back.)
        let (messages, outcomes) = u.put_back(
            (vec![message("a/1")], Vec::new()),
            1,
            vec![(0, message("old"))],
            &stats,
        );
        assert_eq!((messages.len(), outcomes.len()), (1, 0));
        let (messages, outcomes) =
            u.put_back(Default::default(), 1, vec![(0, message("old"))], &stats);
        assert_eq!((messages.len(), outcomes.len()), (0, 0));
        // Not counted: the broker sends them again.
        assert_eq!(stats.unsubscribed.get(), 3);
        // A batch every message of which was taken needs no answer.
        let (messages, outcomes) =
            u.put_back(Default::default(), 0, vec![(0, message("old"))], &stats);
        assert_eq!((messages.len(), outcomes.len()), (1, 1));
        // All taken, and one in the middle.
        let mut batch: Vec<MqttMessage> = ["old/1", "old/2"].map(message).into();
        let taken = u.take(&mut batch);
        assert!(batch.is_empty());
        assert_eq!(taken.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1]);
        let mut batch: Vec<MqttMessage> = ["a/1", "old", "a/2"].map(message).into();
        let taken = u.take(&mut batch);
        assert_eq!(topics(&batch), ["a/1", "a/2"]);
        assert_eq!(taken.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1]);
        // The last one taken goes back last.
        let mut batch: Vec<MqttMessage> = ["a/1", "old"].map(message).into();
        let taken = u.take(&mut batch);
        let outcomes = vec![Ok(Vec::new())];
        let (messages, outcomes) = u.put_back((batch, outcomes), 1, taken, &stats);
        assert_eq!(topics(&messages), ["a/1", "old"]);
        assert!(outcomes[0].is_ok() && outcomes[1].is_err());
    }

    #[test]
    fn a_long_reason_is_cut_to_the_limit_on_a_character_boundary() {
        assert_eq!(clip_reason("short"), "short");
        let exact = "x".repeat(REASON_MAX_BYTES);
        assert_eq!(clip_reason(&exact), exact);
        // Two-byte characters, one of them across the cut.
        for lead in 0..2 {
            let long = format!("{}{}", "x".repeat(lead), "é".repeat(REASON_MAX_BYTES));
            let cut = clip_reason(&long);
            assert!(cut.len() <= REASON_MAX_BYTES, "{}", cut.len());
            let kept = cut.split("... (").next().unwrap();
            assert!(long.starts_with(kept));
            assert!(
                cut.ends_with(&format!(" ({} more bytes cut)", long.len() - kept.len())),
                "{cut}"
            );
        }
    }
}
