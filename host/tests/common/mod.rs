//! Helpers shared by the host's integration tests and its benchmark.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use uns_kafka::message::{KafkaRecord, MessageError, MqttMessage, TransformOutcome};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Cargo's target directory, honouring `CARGO_TARGET_DIR` as cargo does.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace().join(dir),
        _ => workspace().join("target"),
    }
}

/// Path of a compiled component, building both test components once if
/// either is missing.
pub fn component(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let dir = target_dir().join("wasm32-wasip2/release");
    let path = dir.join(format!("{name}.wasm"));
    BUILT.get_or_init(|| {
        if dir.join("uns_default.wasm").is_file() && dir.join("test_faulty.wasm").is_file() {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(workspace())
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "-p",
                "uns-default",
                "-p",
                "test-faulty",
            ])
            .status()
            .expect("run cargo");
        assert!(
            status.success(),
            "building the components failed; run: cargo build --release --target wasm32-wasip2 -p uns-default -p test-faulty"
        );
    });
    assert!(
        path.is_file(),
        "{} missing; run: cargo build --release --target wasm32-wasip2 -p uns-default -p test-faulty",
        path.display()
    );
    path
}

/// A QoS 1 message on `topic`, received at a fixed time.
pub fn message(topic: &str, payload: Vec<u8>) -> MqttMessage {
    MqttMessage {
        topic: topic.to_owned(),
        payload: bytes::Bytes::from(payload),
        qos: 1,
        retain: false,
        user_properties: Vec::new(),
        content_type: None,
        received_at_ms: 1_700_000_000_000,
        subscribed: None,
    }
}

/// The same transform as the default component, called natively and shaped
/// like `Transformer::transform_batch`'s answer, so the two can be compared
/// (and timed) on equal terms.
pub fn native_batch(
    config: &uns_default::Config,
    births: &mut uns_default::Births,
    batch: &[MqttMessage],
) -> Vec<TransformOutcome> {
    batch
        .iter()
        .map(|m| {
            let msg = uns_default::Message {
                topic: &m.topic,
                payload: &m.payload,
                qos: m.qos,
                retain: m.retain,
                user_properties: &m.user_properties,
                content_type: m.content_type.as_deref(),
                received_at_ms: m.received_at_ms,
            };
            match uns_default::transform_with(config, Some(&mut *births), &msg) {
                Ok(records) => Ok(records
                    .into_iter()
                    .map(|r| KafkaRecord {
                        topic: r.topic,
                        key: r.key,
                        value: r.value,
                        headers: r.headers,
                        timestamp_ms: r.timestamp_ms,
                    })
                    .collect()),
                Err(e) => Err(MessageError::new(
                    format!("{:?}", e.kind).to_lowercase(),
                    e.message,
                )),
            }
        })
        .collect()
}

/// The golden configuration cases: each directory under `tests/config/`
/// holds a bad configuration and `expected.txt`, the exact message.
pub fn golden_cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    cases
}

/// A golden case's environment: its `env` file's `NAME=value` lines.
pub fn golden_env(case: &Path) -> Vec<(String, String)> {
    match std::fs::read_to_string(case.join("env")) {
        Ok(text) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').expect("env lines are NAME=value");
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}
