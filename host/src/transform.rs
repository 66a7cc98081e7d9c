//! The sandbox: runs a transform component (`uns:bridge/transformer`) with
//! wasmtime.
//!
//! A component is compiled once per load, at start and on each SIGHUP
//! ([`TransformRuntime`]), and the compiled form is cached on disk, keyed by the hash of the `.wasm` file and
//! the wasmtime build, so a restart does not pay for Cranelift again. Each
//! [`Transformer`] owns one store and instance; every call into the component
//! is bounded in time (epoch interruption) and memory ([`ResourceLimiter`]),
//! and a component that traps, loops or hogs memory costs the offending
//! message, never the host: the instance is replaced and the batch is rerun
//! one message at a time.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentType, HasSelf, Instance, Linker, Lower, ResourceTable,
};
use wasmtime::{Config, Engine, ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::config::TransformSettings;

mod stderr;
use crate::message::{KafkaRecord, MessageError, MqttMessage, TransformOutcome};
use stderr::StderrTail;

mod bindings {
    wasmtime::component::bindgen!({
        world: "transformer",
        path: "../wit",
    });
}

use bindings::uns::bridge::log::Level;
use bindings::uns::bridge::types::{ErrorKind, Qos, TransformError as WitTransformError};

/// The interface the host calls; its version pins the WIT package.
const TRANSFORM_INTERFACE: &str = "uns:bridge/transform@0.1.0";

/// The ways the sandbox stops a component on one message, as named in the
/// dead-letter record's `dlq_error_kind` and in
/// `uns_kafka_component_failures_total{kind}`.
pub const TRAP: &str = "trap";
pub const TIMEOUT: &str = "timeout";
pub const MEMORY: &str = "memory";
/// No instance to run the message on: the replacement for one that failed
/// could not be started (its `init` refused, timed out or trapped).
pub const START: &str = "start";
pub const SANDBOX_FAILURES: [&str; 4] = [TRAP, TIMEOUT, MEMORY, START];

/// How often the background ticker advances the engine's epoch. Call
/// deadlines are rounded up to this granularity.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// A component has no business with huge tables; this bounds the host memory
/// one can claim through `table.grow` (one pointer per element).
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// Limits and caching for a component.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Wall-clock budget of one call into the component (a whole batch).
    pub timeout: Duration,
    /// Largest linear memory an instance may grow to, in bytes.
    pub max_memory_bytes: usize,
    /// Directory for compiled components. `None` means the default:
    /// `$XDG_CACHE_HOME/uns-kafka`, else `$HOME/.cache/uns-kafka`; when
    /// neither is set, nothing is cached on disk.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(1000),
            max_memory_bytes: 128 << 20,
            cache_dir: None,
        }
    }
}

impl From<&TransformSettings> for RuntimeOptions {
    fn from(t: &TransformSettings) -> Self {
        Self {
            timeout: Duration::from_millis(t.timeout_ms),
            max_memory_bytes: usize::try_from(t.max_memory_mb.saturating_mul(1 << 20))
                .unwrap_or(usize::MAX),
            cache_dir: t.cache_dir.clone(),
        }
    }
}

/// Why a component could not be loaded or started. Per-message failures are
/// not errors of this type: they are [`MessageError`]s in the outcomes.
#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("cannot read component {}: {source}", path.display())]
    Load {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    #[error("cannot compile component {}: {message}", path.display())]
    Compile { path: PathBuf, message: String },
    #[error("component {} does not fit the uns:bridge world: {message}", path.display())]
    Instantiate { path: PathBuf, message: String },
    /// The component's `info` or `init` trapped or ran out of time/memory.
    #[error("component {name} failed while starting: {message}")]
    Start { name: String, message: String },
    /// The component's `init` rejected its configuration; the text is the
    /// component's.
    #[error("{0}")]
    Init(String),
}

/// Name and version the component reports through `info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentInfo {
    pub name: String,
    pub version: String,
}

/// A compiled component, ready to instantiate. Created once per process and
/// shared (`Arc`) by every [`Transformer`].
pub struct TransformRuntime {
    engine: Engine,
    component: Component,
    linker: Linker<HostState>,
    transform_batch: ComponentExportIndex,
    path: PathBuf,
    opts: RuntimeOptions,
    /// Epoch ticks a call may use (timeout rounded up, plus one because the
    /// current tick is already partly spent).
    deadline_ticks: u64,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for TransformRuntime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl TransformRuntime {
    /// Reads and compiles (or loads the cached compilation of) the component
    /// at `path`, and checks that it exports `uns:bridge/transform`.
    pub fn load(path: &Path, opts: RuntimeOptions) -> Result<Self, TransformError> {
        let wasm = fs::read(path).map_err(|source| TransformError::Load {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.wasm_component_model(true);
        let engine = Engine::new(&config).map_err(|e| TransformError::Engine(format!("{e:#}")))?;

        let cache_dir = opts.cache_dir.clone().or_else(default_cache_dir);
        let component = load_component(&engine, path, &wasm, cache_dir.as_deref())?;

        let instantiate_err = |message: String| TransformError::Instantiate {
            path: path.to_owned(),
            message,
        };
        let iface = component
            .get_export_index(None, TRANSFORM_INTERFACE)
            .ok_or_else(|| instantiate_err(missing_export(&engine, &component)))?;
        let transform_batch = component
            .get_export_index(Some(&iface), "transform-batch")
            .ok_or_else(|| {
                instantiate_err(format!("{TRANSFORM_INTERFACE} has no transform-batch"))
            })?;

        let mut linker: Linker<HostState> = Linker::new(&engine);
        bindings::Transformer::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| instantiate_err(format!("{e:#}")))?;
        // Components built for wasm32-wasip2 import WASI for the standard
        // library's sake even when they never use it. Those get WASI with an
        // empty context (see `HostState::new`); a component that imports no
        // WASI gets none.
        let imports_wasi = component
            .component_type()
            .imports(&engine)
            .any(|(name, _)| name.starts_with("wasi:"));
        if imports_wasi {
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
                .and_then(|()| forbid_waiting(&mut linker))
                .map_err(|e| instantiate_err(format!("{e:#}")))?;
        }
        // Fail here, with the import's name, rather than at the first
        // instantiation.
        linker
            .instantiate_pre(&component)
            .map_err(|e| instantiate_err(format!("{e:#}")))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        spawn_ticker(engine.clone(), ticker_stop.clone());
        let deadline_ticks = (opts.timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64 + 1;
        Ok(Self {
            engine,
            component,
            linker,
            transform_batch,
            path: path.to_owned(),
            opts,
            deadline_ticks,
            ticker_stop,
        })
    }

    /// The `.wasm` file this runtime compiled: which one of the places
    /// [`default_component_path`] looks in won is worth a log line.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new instance: calls `info`, then `init(config_json)`.
    pub fn instantiate(self: &Arc<Self>, config_json: &str) -> Result<Transformer, TransformError> {
        let fallback_name = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "component".to_owned());
        let live = self.start(config_json, &fallback_name)?;
        Ok(Transformer {
            runtime: Arc::clone(self),
            config_json: config_json.to_owned(),
            info: live.info.clone(),
            live: Some(live),
            start_error: None,
        })
    }

    fn start(&self, config_json: &str, name: &str) -> Result<Live, TransformError> {
        let mut store = Store::new(
            &self.engine,
            HostState::new(name.to_owned(), self.opts.max_memory_bytes),
        );
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.deadline_ticks);

        let start_err = |store: &Store<HostState>, e: wasmtime::Error| TransformError::Start {
            name: store.data().name.clone(),
            message: self.describe_failure(store, &e).message,
        };
        let instance = self
            .linker
            .instantiate(&mut store, &self.component)
            .map_err(|e| match classify(&store, &e) {
                // Traps (e.g. a start function out of memory) are failures to
                // start; anything else is a mismatch with the world.
                FailureKind::Other => TransformError::Instantiate {
                    path: self.path.clone(),
                    message: format!("{e:#}"),
                },
                _ => start_err(&store, e),
            })?;
        let api = bindings::Transformer::new(&mut store, &instance).map_err(|e| {
            TransformError::Instantiate {
                path: self.path.clone(),
                message: format!("{e:#}"),
            }
        })?;
        let transform = api.uns_bridge_transform();

        store.set_epoch_deadline(self.deadline_ticks);
        let mut info = transform
            .call_info(&mut store)
            .map_err(|e| start_err(&store, e))?;
        for text in [&mut info.name, &mut info.version] {
            if text.len() > MAX_INFO_BYTES {
                *text = format!("{}...", clip(text, MAX_INFO_BYTES));
            }
        }
        store.data_mut().name = info.name.clone();

        store.set_epoch_deadline(self.deadline_ticks);
        transform
            .call_init(&mut store, config_json)
            .map_err(|e| start_err(&store, e))?
            .map_err(TransformError::Init)?;

        Ok(Live {
            store,
            instance,
            served: 0,
            info: ComponentInfo {
                name: info.name,
                version: info.version,
            },
        })
    }

    /// Turns a failed call into the message-level error users see.
    fn describe_failure(&self, store: &Store<HostState>, e: &wasmtime::Error) -> MessageError {
        match classify(store, e) {
            FailureKind::Timeout => MessageError::new(
                TIMEOUT,
                format!(
                    "component exceeded its time limit of {} ms (transform.timeout_ms)",
                    self.opts.timeout.as_millis()
                ),
            ),
            FailureKind::Memory => MessageError::new(
                MEMORY,
                format!(
                    "component exceeded its memory limit of {} MiB (transform.max_memory_mb)",
                    self.opts.max_memory_bytes >> 20
                ),
            ),
            FailureKind::Trap(trap) => MessageError::new(
                TRAP,
                with_stderr(format!("component trapped: {trap}"), store),
            ),
            FailureKind::Other => MessageError::new(
                TRAP,
                with_stderr(format!("component failed: {}", e.root_cause()), store),
            ),
        }
    }
}

/// A trap's reason with what the component wrote to stderr during the
/// call: for a Rust component, the panic message and where it panicked.
fn with_stderr(reason: String, store: &Store<HostState>) -> String {
    match store.data().stderr.last() {
        Some(text) => format!("{reason}; its stderr: {text}"),
        None => reason,
    }
}

/// One running instance of the component, with its own store.
pub struct Transformer {
    runtime: Arc<TransformRuntime>,
    config_json: String,
    info: ComponentInfo,
    /// `None` after a failure whose replacement could not be started; the
    /// next batch tries again.
    live: Option<Live>,
    /// Why the last replacement failed, for the messages it costs.
    start_error: Option<String>,
}

struct Live {
    store: Store<HostState>,
    instance: Instance,
    info: ComponentInfo,
    /// Calls this instance has finished: a failure on one that served
    /// none is the message's own.
    served: u64,
}

/// The host's view of `mqtt-message` for lowering: borrows everything from
/// [`MqttMessage`], so nothing is copied twice on the way into the guest.
#[derive(ComponentType, Lower)]
#[component(record)]
struct MessageRef<'a> {
    topic: &'a str,
    payload: &'a [u8],
    qos: Qos,
    retain: bool,
    #[component(name = "user-properties")]
    user_properties: Vec<UserPropertyRef<'a>>,
    #[component(name = "content-type")]
    content_type: Option<&'a str>,
    #[component(name = "received-at-ms")]
    received_at_ms: i64,
}

#[derive(ComponentType, Lower)]
#[component(record)]
struct UserPropertyRef<'a> {
    name: &'a str,
    value: &'a str,
}

type WitOutcome = Result<Vec<bindings::uns::bridge::types::KafkaRecord>, WitTransformError>;

impl<'a> MessageRef<'a> {
    fn new(m: &'a MqttMessage) -> Self {
        Self {
            topic: &m.topic,
            payload: &m.payload,
            qos: match m.qos {
                0 => Qos::AtMostOnce,
                1 => Qos::AtLeastOnce,
                _ => Qos::ExactlyOnce,
            },
            retain: m.retain,
            // `Vec::new` does not allocate: MQTT 3.1.1 messages cost nothing.
            user_properties: m
                .user_properties
                .iter()
                .map(|(name, value)| UserPropertyRef { name, value })
                .collect(),
            content_type: m.content_type.as_deref(),
            received_at_ms: m.received_at_ms,
        }
    }
}

impl Transformer {
    /// What the component said about itself in `info`.
    pub fn info(&self) -> &ComponentInfo {
        &self.info
    }

    /// Transforms a batch. Always returns exactly `msgs.len()` outcomes, in
    /// order; a component that traps, times out or runs out of memory costs
    /// only the message(s) that caused it.
    pub fn transform_batch(&mut self, msgs: &[MqttMessage]) -> Vec<TransformOutcome> {
        if msgs.is_empty() {
            return Vec::new();
        }
        if self.live.is_none() {
            // The last replacement failed; one new attempt per batch.
            self.replace_instance();
        }
        if self.live.is_none() {
            return msgs.iter().map(|_| Err(self.not_running())).collect();
        }
        let refs: Vec<MessageRef<'_>> = msgs.iter().map(MessageRef::new).collect();
        let worn = self.worn();
        let failure = match self.call(&refs) {
            Ok(outcomes) => return outcomes,
            Err(failure) => failure,
        };
        self.replace_instance();
        if msgs.len() == 1 {
            return vec![self.again_alone(&refs[0], failure, worn)];
        }
        tracing::warn!(
            component = %self.info.name,
            kind = %failure.kind,
            error = %failure.message,
            batch = msgs.len(),
            "component failed on a batch; retrying its messages one by one on a fresh instance"
        );
        // Whichever message(s) broke the batch break their own call again;
        // the others get their normal results.
        let mut outcomes = Vec::with_capacity(refs.len());
        for r in &refs {
            if self.live.is_none() {
                outcomes.push(Err(self.not_running()));
                continue;
            }
            let worn = self.worn();
            outcomes.push(match self.call(std::slice::from_ref(r)) {
                Ok(mut one) => one.pop().unwrap_or_else(|| {
                    Err(MessageError::new(
                        "internal",
                        "component returned no result",
                    ))
                }),
                Err(failure) => {
                    self.replace_instance();
                    self.again_alone(r, failure, worn)
                }
            });
        }
        outcomes
    }

    /// Whether the instance has served calls, whose leftovers (memory
    /// never shrinks; state a bug corrupted) can make an innocent message
    /// the one that crosses the line.
    fn worn(&self) -> bool {
        self.live.as_ref().is_some_and(|l| l.served > 0)
    }

    /// A message that failed alone on a `worn` instance gets one more try
    /// on the fresh instance that replaced it, and is blamed only if it
    /// fails there too; on an instance that had served nothing the failure
    /// is its own already. A timeout is not tried again: it would cost the
    /// whole `timeout_ms` once more.
    fn again_alone(
        &mut self,
        r: &MessageRef<'_>,
        failure: MessageError,
        worn: bool,
    ) -> TransformOutcome {
        if !worn || failure.kind == TIMEOUT || self.live.is_none() {
            return Err(failure);
        }
        match self.call(std::slice::from_ref(r)) {
            Ok(mut one) => one.pop().unwrap_or_else(|| {
                Err(MessageError::new(
                    "internal",
                    "component returned no result",
                ))
            }),
            Err(again) => {
                self.replace_instance();
                Err(again)
            }
        }
    }

    fn not_running(&self) -> MessageError {
        MessageError::new(
            START,
            format!(
                "no component instance: a fresh one could not be started ({})",
                self.start_error.as_deref().unwrap_or("unknown reason")
            ),
        )
    }

    /// One call into the component. `Err` means the instance is broken (a
    /// trap) and must be replaced; per-message errors the component returns
    /// are `Ok` outcomes.
    fn call(&mut self, refs: &[MessageRef<'_>]) -> Result<Vec<TransformOutcome>, MessageError> {
        let runtime = Arc::clone(&self.runtime);
        let Some(live) = self.live.as_mut() else {
            return Err(self.not_running());
        };
        let func = live
            .instance
            .get_func(&mut live.store, runtime.transform_batch)
            .ok_or_else(|| MessageError::new("internal", "transform-batch export vanished"))?;
        // Typed per call because `MessageRef` borrows the batch; the check
        // walks a small type tree, negligible against a batch.
        let typed = func
            .typed::<(&[MessageRef<'_>],), (Vec<WitOutcome>,)>(&live.store)
            .map_err(|e| MessageError::new("internal", format!("transform-batch: {e:#}")))?;
        live.store.set_epoch_deadline(runtime.deadline_ticks);
        live.store.data_mut().memory_exceeded = false;
        let state = live.store.data_mut();
        state.logged = 0;
        state.log_budget = u32::try_from(refs.len())
            .unwrap_or(u32::MAX)
            .saturating_mul(MAX_LOG_LINES_PER_MESSAGE)
            .max(MIN_LOG_LINES_PER_CALL);
        live.store.data().stderr.clear();
        let (results,) = typed
            .call(&mut live.store, (refs,))
            .map_err(|e| runtime.describe_failure(&live.store, &e))?;
        live.served += 1;
        if results.len() != refs.len() {
            // A contract violation, but the instance itself is healthy.
            let why = format!(
                "component returned {} results for {} messages",
                results.len(),
                refs.len()
            );
            return Ok(refs
                .iter()
                .map(|_| Err(MessageError::new("internal", why.clone())))
                .collect());
        }
        Ok(results.into_iter().map(convert_outcome).collect())
    }

    /// Drops the broken instance (and its store, so its memory is freed) and
    /// starts a fresh one with the same configuration.
    fn replace_instance(&mut self) {
        // Dropped first, so the old store's memory is free before the new
        // one claims its own.
        self.live = None;
        match self.runtime.start(&self.config_json, &self.info.name) {
            Ok(live) => {
                self.live = Some(live);
                self.start_error = None;
            }
            Err(e) => {
                tracing::error!(
                    component = %self.info.name,
                    error = %e,
                    "cannot start a fresh component instance"
                );
                self.start_error = Some(e.to_string());
            }
        }
    }
}

fn convert_outcome(outcome: WitOutcome) -> TransformOutcome {
    match outcome {
        Ok(records) => Ok(records
            .into_iter()
            .map(|r| KafkaRecord {
                topic: r.topic,
                key: r.key,
                value: r.value,
                headers: r.headers.into_iter().map(|h| (h.name, h.value)).collect(),
                timestamp_ms: r.timestamp_ms,
            })
            .collect()),
        Err(e) => Err(MessageError {
            kind: match e.kind {
                ErrorKind::Decode => "decode",
                ErrorKind::Rejected => "rejected",
                ErrorKind::Internal => "internal",
            }
            .to_owned(),
            message: e.message,
        }),
    }
}

enum FailureKind {
    Timeout,
    Memory,
    Trap(Trap),
    Other,
}

fn classify(store: &Store<HostState>, e: &wasmtime::Error) -> FailureKind {
    if store.data().memory_exceeded || e.downcast_ref::<MemoryLimitExceeded>().is_some() {
        return FailureKind::Memory;
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => FailureKind::Timeout,
        Some(trap) => FailureKind::Trap(*trap),
        None => FailureKind::Other,
    }
}

/// Returned from the limiter so the grow traps at once (instead of the
/// guest's allocator aborting with an anonymous `unreachable`).
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (wanted {desired})")]
struct MemoryLimitExceeded {
    limit: usize,
    desired: usize,
}

/// Per-instance host state: limits, the WASI context and the log tag.
struct HostState {
    /// The component's name, for log lines; the file stem until `info` ran.
    name: String,
    max_memory: usize,
    memory_exceeded: bool,
    /// Bytes of every linear memory of the instance together: the limit is
    /// the instance's, and wasmtime enables multi-memory by default, so a
    /// component with many memories must not get the limit for each.
    memory_total: usize,
    /// The last growth allowed, as (from, to), undone if it then failed.
    memory_last_growth: (usize, usize),
    /// Elements of every table together, for the same reason.
    table_total: usize,
    /// What the component wrote to stderr in the current call.
    stderr: StderrTail,
    /// `log` lines in the current call, and how many it may log.
    logged: u32,
    log_budget: u32,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl HostState {
    fn new(name: String, max_memory: usize) -> Self {
        // The sandbox grants nothing: `WasiCtxBuilder::new()` has no
        // preopened directories, no environment variables, no arguments,
        // stdin closed, stdout discarded, stderr kept only as the tail of
        // the current call, to explain a trap (`stderr.rs`). Networking in
        // wasmtime-wasi 48 is denied by default too: the socket address check
        // refuses every address and TCP, UDP and name lookup are off
        // (`AllowedNetworkUses::default()` is all false); we say so
        // explicitly so a future default change cannot open it. The wall
        // clock is frozen at the epoch, as the WIT promises no wall clock beyond
        // the messages' own.
        let stderr = StderrTail::default();
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(FrozenWallClock)
            .build();
        Self {
            name,
            max_memory,
            memory_exceeded: false,
            memory_total: 0,
            memory_last_growth: (0, 0),
            table_total: 0,
            stderr,
            logged: 0,
            log_budget: MIN_LOG_LINES_PER_CALL,
            wasi,
            table: ResourceTable::new(),
        }
    }
}

struct FrozenWallClock;

impl wasmtime_wasi::HostWallClock for FrozenWallClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Only a growth allowed here may be undone by `memory_grow_failed`.
        self.memory_last_growth = (0, 0);
        // Called for each memory's creation too (from 0), so the total
        // counts every memory the instance has.
        let total = (self.memory_total - current.min(self.memory_total)).saturating_add(desired);
        if total > self.max_memory {
            self.memory_exceeded = true;
            return Err(MemoryLimitExceeded {
                limit: self.max_memory,
                desired: total,
            }
            .into());
        }
        if maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        self.memory_total = total;
        self.memory_last_growth = (current, desired);
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        let (from, to) = std::mem::take(&mut self.memory_last_growth);
        self.memory_total = self.memory_total.saturating_sub(to - from.min(to));
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = (self.table_total - current.min(self.table_total)).saturating_add(desired);
        if total > MAX_TABLE_ELEMENTS || maximum.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        self.table_total = total;
        Ok(true)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::uns::bridge::types::Host for HostState {}

impl bindings::uns::bridge::log::Host for HostState {
    fn log(&mut self, level: Level, message: String) {
        let enabled = match level {
            Level::Trace => tracing::enabled!(tracing::Level::TRACE),
            Level::Debug => tracing::enabled!(tracing::Level::DEBUG),
            Level::Info => tracing::enabled!(tracing::Level::INFO),
            Level::Warn => tracing::enabled!(tracing::Level::WARN),
            Level::Error => tracing::enabled!(tracing::Level::ERROR),
        };
        if !enabled {
            return;
        }
        self.logged += 1;
        let component = self.name.as_str();
        if self.logged > self.log_budget {
            if self.logged == self.log_budget + 1 {
                tracing::warn!(
                    component,
                    "the component logged more than {} lines in one call; the rest of this \
                     call's are dropped",
                    self.log_budget
                );
            }
            return;
        }
        // One line per call, however many the component put in it.
        let message = clip(&message, MAX_LOG_BYTES).replace(['\n', '\r'], " ");
        match level {
            Level::Trace => tracing::trace!(component, "{message}"),
            Level::Debug => tracing::debug!(component, "{message}"),
            Level::Info => tracing::info!(component, "{message}"),
            Level::Warn => tracing::warn!(component, "{message}"),
            Level::Error => tracing::error!(component, "{message}"),
        }
    }
}

/// The WASI calls that wait (`poll`, `pollable.block`: what
/// `std::thread::sleep` and any blocking read come down to) fail at once
/// instead. A call waiting in the host is beyond the epoch deadline, which
/// only interrupts wasm code: a component that slept for ever held the
/// transform thread, SIGHUP and SIGTERM with it. A transform has nothing
/// to wait for; its messages arrive in its arguments.
fn forbid_waiting(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let refuse = |_: wasmtime::StoreContextMut<'_, HostState>,
                  _: wasmtime::component::types::ComponentFunc,
                  _: &[wasmtime::component::Val],
                  _: &mut [wasmtime::component::Val]| {
        Err(wasmtime::Error::msg(
            "a transform component may not wait (a sleep, or a blocking read or poll)",
        ))
    };
    // Defining it without shadowing must fail, since WASI has: if it does
    // not, wasmtime-wasi moved to another version and the guard would
    // silently guard nothing.
    if linker.instance(WASI_POLL)?.func_new("poll", refuse).is_ok() {
        wasmtime::bail!("wasmtime-wasi does not provide {WASI_POLL}; update WASI_POLL");
    }
    linker.allow_shadowing(true);
    let mut poll = linker.instance(WASI_POLL)?;
    for name in ["poll", "[method]pollable.block"] {
        poll.func_new(name, refuse)?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// The `wasi:io/poll` wasmtime-wasi 48 provides; the linker hands it to a
/// component that imports any 0.2 version.
const WASI_POLL: &str = "wasi:io/poll@0.2.12";

/// Most bytes of a component's name or version kept: they go into every
/// dead letter's headers and log line, and a component must not be able to
/// make every dead letter too large for Kafka.
const MAX_INFO_BYTES: usize = 256;
/// Most bytes of one `log` line, and most lines one call may log: a
/// component must not be able to flood the host's log.
const MAX_LOG_BYTES: usize = 4096;
/// Lines per message of a call (a call is a whole batch), and at least
/// [`MIN_LOG_LINES_PER_CALL`] per call (`init`, a batch of one).
const MAX_LOG_LINES_PER_MESSAGE: u32 = 16;
const MIN_LOG_LINES_PER_CALL: u32 = 1000;

/// `text` cut to at most `max` bytes at a character boundary.
fn clip(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until the runtime is
/// dropped; store deadlines count these ticks.
fn spawn_ticker(engine: Engine, stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("uns-kafka-epoch".to_owned())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        });
    if let Err(e) = spawned {
        // Without the ticker a looping component would hang its caller.
        tracing::error!(error = %e, "cannot start the epoch ticker: component calls have no time limit");
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let non_empty = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    non_empty("XDG_CACHE_HOME")
        .filter(|p| p.is_absolute())
        .or_else(|| non_empty("HOME").map(|h| h.join(".cache")))
        .map(|d| d.join("uns-kafka"))
}

/// The cache file name: what was compiled, and by which compiler with which
/// settings. Entries of another wasmtime build simply never match.
fn cache_key(engine: &Engine, wasm: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    let mut compat = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut compat);
    let mut h = Sha256::new();
    h.update(wasm);
    h.update(b"\0wasmtime-48\0");
    h.update(compat.finish().to_le_bytes());
    let digest = h.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}.cwasm")
}

fn load_component(
    engine: &Engine,
    path: &Path,
    wasm: &[u8],
    cache_dir: Option<&Path>,
) -> Result<Component, TransformError> {
    let cached = cache_dir.map(|d| d.join(cache_key(engine, wasm)));
    if let Some(file) = cached.as_deref().filter(|f| f.is_file()) {
        // SAFETY: `deserialize_file` trusts the file to be a compilation by
        // this wasmtime. The cache directory is ours, entries are only ever
        // written whole (temp file + rename, below) from `serialize`, and
        // the name includes the hash of the source and of the engine's
        // compatibility settings; wasmtime also checks its own version and
        // settings in the header and errors (handled: we recompile) on a
        // mismatch.
        match unsafe { Component::deserialize_file(engine, file) } {
            Ok(component) => {
                tracing::debug!(component = %path.display(), cache = %file.display(), "loaded compiled component from cache");
                return Ok(component);
            }
            Err(e) => tracing::warn!(
                cache = %file.display(),
                error = %e,
                "ignoring unusable compiled-component cache entry; recompiling"
            ),
        }
    }
    let component = Component::new(engine, wasm).map_err(|e| TransformError::Compile {
        path: path.to_owned(),
        // wasmtime's words for it ("attempted to parse a wasm module with a
        // component parser") do not say what to do.
        message: if wasm.starts_with(CORE_MODULE_HEADER) {
            "it is a core WebAssembly module, not a component: build it with \
             `cargo build --target wasm32-wasip2` or `cargo component build`"
                .to_owned()
        } else {
            format!("{e:#}")
        },
    })?;
    if let Some(file) = cached {
        if let Err(e) = store_cache(&component, &file) {
            tracing::warn!(cache = %file.display(), error = %e, "cannot cache the compiled component");
        }
    }
    Ok(component)
}

/// The magic number and version of a core module (a component's version
/// is `0d 00`, layer `01 00`).
const CORE_MODULE_HEADER: &[u8] = b"\0asm\x01\0\0\0";

/// Why a component lacks [`TRANSFORM_INTERFACE`]: most often it was built
/// against another version of `uns:bridge`, which the message names.
fn missing_export(engine: &Engine, component: &Component) -> String {
    let ty = component.component_type();
    let ours: Vec<&str> = ty
        .exports(engine)
        .map(|(name, _)| name)
        .filter(|name| name.starts_with("uns:bridge/"))
        .collect();
    if ours.is_empty() {
        format!("it does not export {TRANSFORM_INTERFACE}")
    } else {
        format!(
            "it does not export {TRANSFORM_INTERFACE} but {}: it was built against another \
             version of wit/world.wit than this bridge's",
            ours.join(", ")
        )
    }
}

fn store_cache(component: &Component, file: &Path) -> std::io::Result<()> {
    let bytes = component.serialize().map_err(std::io::Error::other)?;
    let dir = file.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    // Unique even across containers sharing a cache volume (each bridge is
    // pid 1 there), and never an existing file or a link planted in its
    // place: two writers of one name would interleave their bytes.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{}.{}.{nanos}.tmp",
        file.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    // Ours from here on (`create_new` failed otherwise, and left whatever
    // was there alone): removed if it cannot be completed.
    let result = f
        .write_all(&bytes)
        .and_then(|()| f.sync_all())
        // Rename is atomic: a reader sees no file or the whole file.
        .and_then(|()| fs::rename(&tmp, file));
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Where the default component is found when neither `--component` nor
/// `transform.component` names one: beside the binary, in the install
/// prefix's `share/`, in `/usr/local/share`, and (during development) in the
/// workspace's `target/wasm32-wasip2/release/`. The first that exists wins;
/// if none does, the first candidate, so the error names where it belongs.
pub fn default_component_path() -> PathBuf {
    const FILE: &str = "uns_default.wasm";
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.canonicalize().ok().or(Some(p)))
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let mut candidates = Vec::new();
    if let Some(dir) = &exe_dir {
        candidates.push(dir.join(FILE));
        if let Some(prefix) = dir.parent() {
            candidates.push(prefix.join("share/uns-kafka").join(FILE));
        }
    }
    candidates.push(PathBuf::from("/usr/local/share/uns-kafka").join(FILE));
    if let Some(dir) = &exe_dir {
        for ancestor in dir.ancestors() {
            let candidate = ancestor.join("target/wasm32-wasip2/release").join(FILE);
            if candidate.is_file() {
                candidates.push(candidate);
                break;
            }
            if ancestor.file_name().is_some_and(|n| n == "target") {
                let candidate = ancestor.join("wasm32-wasip2/release").join(FILE);
                if candidate.is_file() {
                    candidates.push(candidate);
                    break;
                }
            }
        }
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| candidates[0].clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>() {}
    fn assert_send_sync<T: Send + Sync>() {}

    const MIB: usize = 1 << 20;

    #[test]
    fn the_memory_limit_holds_for_all_memories_of_an_instance_together() {
        let mut state = HostState::new("t".into(), 128 * MIB);
        // Two memories created at 60 MiB each: 120 MiB in all.
        assert!(state.memory_growing(0, 60 * MIB, None).unwrap());
        assert!(state.memory_growing(0, 60 * MIB, None).unwrap());
        // Either growing by 10 MiB would pass alone, not beside the other.
        let e = state.memory_growing(60 * MIB, 70 * MIB, None).unwrap_err();
        assert!(state.memory_exceeded);
        let exceeded = e
            .downcast_ref::<MemoryLimitExceeded>()
            .expect("the limit's error");
        assert_eq!((exceeded.limit, exceeded.desired), (128 * MIB, 130 * MIB));
        // Within the limit it grows, and a growth that then fails is undone.
        assert!(state.memory_growing(60 * MIB, 64 * MIB, None).unwrap());
        state
            .memory_grow_failed(wasmtime::format_err!("no memory"))
            .unwrap();
        assert_eq!(state.memory_total, 120 * MIB);
        // A growth past the memory's own maximum is refused, not counted,
        // and the failure wasmtime then reports undoes nothing.
        assert!(!state
            .memory_growing(60 * MIB, 64 * MIB, Some(62 * MIB))
            .unwrap());
        state
            .memory_grow_failed(wasmtime::format_err!("past maximum"))
            .unwrap();
        assert_eq!(state.memory_total, 120 * MIB);
    }

    #[test]
    fn the_table_limit_holds_for_all_tables_of_an_instance_together() {
        let mut state = HostState::new("t".into(), 128 * MIB);
        let half = MAX_TABLE_ELEMENTS / 2;
        assert!(state.table_growing(0, half, None).unwrap());
        assert!(state.table_growing(0, half, None).unwrap());
        assert!(!state.table_growing(half, half + 1, None).unwrap());
        assert!(!state.table_growing(0, 1, None).unwrap());
    }

    /// The test-faulty component, built.
    fn test_faulty() -> PathBuf {
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir)
            }
            _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
        };
        let wasm = target.join("wasm32-wasip2/release/test_faulty.wasm");
        assert!(
            wasm.is_file(),
            "{} missing; run: cargo build --release --target wasm32-wasip2 -p test-faulty",
            wasm.display()
        );
        wasm
    }

    /// An instance of test-faulty with no configuration.
    fn faulty_instance() -> Transformer {
        let runtime =
            Arc::new(TransformRuntime::load(&test_faulty(), RuntimeOptions::default()).unwrap());
        runtime.instantiate("{}").unwrap()
    }

    /// A QoS 1 message on plant/line with `payload`, for test-faulty.
    fn message(payload: &'static str) -> MqttMessage {
        MqttMessage {
            topic: "plant/line".into(),
            payload: bytes::Bytes::from_static(payload.as_bytes()),
            qos: 1,
            retain: false,
            user_properties: Vec::new(),
            content_type: None,
            received_at_ms: 1,
            subscribed: None,
        }
    }

    /// A component that traps is replaced by a fresh instance; when that
    /// one cannot start, each message after it fails as `start` (counted
    /// in `uns_kafka_component_failures_total`; it was `internal`, which is
    /// not, so the alert stayed quiet) with the reason `init` gave, and
    /// every batch tries once more.
    #[test]
    fn messages_without_an_instance_fail_as_start_with_the_reason() {
        let mut t = faulty_instance();
        assert!(t.transform_batch(&[message("a")])[0].is_ok());
        // What a loaded machine can do to a fresh instance's `init` (time
        // out), a configuration does here on cue.
        t.config_json = r#"{"fail_init": true}"#.into();
        let out = t.transform_batch(&[message("trap")]);
        assert_eq!(out[0].as_ref().unwrap_err().kind, TRAP);
        let out = t.transform_batch(&[message("b")]);
        let e = out[0].as_ref().unwrap_err();
        assert_eq!(e.kind, START);
        assert!(
            e.message.contains("could not be started") && e.message.contains("asked to fail init"),
            "{}",
            e.message
        );
        assert!(SANDBOX_FAILURES.contains(&e.kind.as_str()));
        let again = t.transform_batch(&[message("c")]);
        assert_eq!(again[0].as_ref().unwrap_err().kind, START);
        // Once `init` works again, so do the messages.
        t.config_json = "{}".into();
        assert!(t.transform_batch(&[message("d")])[0].is_ok());
    }

    /// A trap's reason quotes the stderr of its own call only: what an
    /// earlier, successful call on the same instance wrote is not the
    /// trap's explanation.
    #[test]
    fn a_trap_reason_quotes_only_its_own_calls_stderr() {
        let mut t = faulty_instance();
        // In one batch: the batch traps, then each message runs alone, the
        // trap after `noisy` succeeded on the same instance.
        let out = t.transform_batch(&[message("noisy"), message("trap")]);
        assert!(out[0].is_ok());
        let reason = &out[1].as_ref().unwrap_err().message;
        assert!(reason.contains("asked to trap"), "{reason}");
        assert!(!reason.contains("noisy line"), "{reason}");
    }

    /// Memory an instance grew for earlier messages stays grown: the
    /// message that crosses the limit is not the one that used it all, and
    /// is not blamed once a fresh instance carries it.
    #[test]
    fn a_message_that_fails_on_a_worn_instance_is_tried_on_a_fresh_one() {
        let runtime = Arc::new(
            TransformRuntime::load(
                &test_faulty(),
                RuntimeOptions {
                    max_memory_bytes: 48 << 20,
                    ..RuntimeOptions::default()
                },
            )
            .unwrap(),
        );
        let mut t = runtime.instantiate("{}").unwrap();
        // Each `leak` keeps 8 MiB for the instance's life: the fifth or
        // sixth on one instance crosses 48 MiB.
        for i in 0..12 {
            let out = t.transform_batch(&[message("leak")]);
            assert!(out[0].is_ok(), "leak {i}: {out:?}");
        }
        // In a batch too, where the batch fails and its messages run alone.
        let batch: Vec<MqttMessage> = (0..8).map(|_| message("leak")).collect();
        let out = t.transform_batch(&batch);
        assert!(out.iter().all(Result::is_ok), "{out:?}");
        // A message that fails on a fresh instance too is still blamed.
        let out = t.transform_batch(&[message("trap")]);
        assert_eq!(out[0].as_ref().unwrap_err().kind, TRAP);
    }

    /// A component that sleeps waits in the host, where the epoch deadline
    /// cannot reach it: it held the transform thread for good. Waiting now
    /// fails the call at once, costing that message alone.
    #[test]
    fn a_component_that_sleeps_fails_its_message_at_once() {
        let mut t = faulty_instance();
        let started = std::time::Instant::now();
        let out = t.transform_batch(&[message("a"), message("sleep"), message("b")]);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        assert!(out[0].is_ok() && out[2].is_ok(), "{out:?}");
        let e = out[1].as_ref().unwrap_err();
        assert_eq!(e.kind, TRAP);
        assert!(e.message.contains("may not wait"), "{}", e.message);
    }

    #[test]
    fn thread_safety_the_pipeline_relies_on() {
        assert_send_sync::<TransformRuntime>();
        assert_send::<Transformer>();
    }
}
