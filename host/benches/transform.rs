//! The cost of the sandbox: messages per second through
//! `Transformer::transform_batch` (the default component in wasmtime) against
//! the same transform called natively (`uns_default::transform`), for a UNS
//! JSON message and a Sparkplug B NDATA.
//!
//! Run: `cargo bench -p uns-kafka --bench transform`
//! (needs `cargo build --release --target wasm32-wasip2 -p uns-default`).
//!
//! Rounds alternate native and wasm and the table shows medians, so a noisy
//! neighbour slows both sides rather than one.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uns_default::sparkplug::sample_ndata;
use uns_kafka::message::MqttMessage;
use uns_kafka::transform::{RuntimeOptions, TransformRuntime};

// The native side, shared with the test that holds wasm and native equal.
#[path = "../tests/common/mod.rs"]
mod common;
use common::{message, native_batch};

const BATCH: usize = 256;
const ROUNDS: usize = 11;
/// Messages per round and side: long enough to dwarf timer noise.
const PER_ROUND: usize = BATCH * 200;
/// The configuration `uns-kafka` passes with default settings.
const CONFIG: &str = r#"{"timestamp_attribute":"timestamp","topic_separator":"_"}"#;

fn main() {
    println!("cargo bench -p uns-kafka --bench transform");
    println!(
        "batch size {BATCH}, {ROUNDS} alternating rounds of {PER_ROUND} messages per side, medians\n"
    );
    // UNS_BENCH_COMPONENT compares another build of the same component.
    let wasm = std::env::var_os("UNS_BENCH_COMPONENT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/wasm32-wasip2/release/uns_default.wasm")
        });
    if !wasm.is_file() {
        eprintln!(
            "{} is missing; build it with: cargo build --release --target wasm32-wasip2 -p uns-default",
            wasm.display()
        );
        std::process::exit(2);
    }
    let cache = std::env::temp_dir().join("uns-kafka-bench-cache");
    let runtime = Arc::new(
        TransformRuntime::load(
            &wasm,
            RuntimeOptions {
                cache_dir: Some(cache),
                ..RuntimeOptions::default()
            },
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let mut transformer = runtime
        .instantiate(CONFIG)
        .unwrap_or_else(|e| panic!("{e}"));
    let config = uns_default::Config::from_json(CONFIG).unwrap();

    let cases = [
        ("UNS JSON", uns_json()),
        ("Sparkplug NDATA, 10 metrics", ndata()),
    ];
    println!(
        "{:<30} {:>8} {:>15} {:>15} {:>11}",
        "message", "bytes", "native msg/s", "wasm msg/s", "wasm/native"
    );
    for (name, msg) in cases {
        let batch: Vec<MqttMessage> = vec![msg; BATCH];
        // Same work, same answer: check before timing.
        let native_out = native_batch(&config, &mut uns_default::Births::default(), &batch);
        let wasm_out = transformer.transform_batch(&batch);
        assert_eq!(native_out, wasm_out, "native and wasm disagree on {name}");
        assert!(
            wasm_out.iter().all(|o| o.is_ok()),
            "{name}: {:?}",
            wasm_out[0]
        );

        let (mut native, mut wasm) = (Vec::new(), Vec::new());
        // As the component keeps its own across batches.
        let mut births = uns_default::Births::default();
        for _ in 0..ROUNDS {
            native.push(rate(|| {
                black_box(native_batch(&config, &mut births, black_box(&batch)));
            }));
            wasm.push(rate(|| {
                black_box(transformer.transform_batch(black_box(&batch)));
            }));
        }
        let (n, w) = (median(native), median(wasm));
        println!(
            "{:<30} {:>8} {:>15.0} {:>15.0} {:>10.2}x",
            name,
            batch[0].payload.len(),
            n,
            w,
            n / w
        );
    }
    boundary_row();
    println!("\nwasm/native is time per message in wasm over time per message natively (1.00x = no overhead).");
}

/// The crossing alone: `test-faulty` copies each message into a record and
/// does nothing else, so its rate bounds what any component can reach.
fn boundary_row() {
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/wasm32-wasip2/release/test_faulty.wasm");
    let Ok(runtime) = TransformRuntime::load(&wasm, RuntimeOptions::default()) else {
        println!("(boundary row skipped: build test-faulty for wasm32-wasip2 to see it)");
        return;
    };
    let runtime = Arc::new(runtime);
    let Ok(mut transformer) = runtime.instantiate("{}") else {
        return;
    };
    let batch = vec![uns_json(); BATCH];
    let rates: Vec<f64> = (0..ROUNDS)
        .map(|_| {
            rate(|| {
                black_box(transformer.transform_batch(black_box(&batch)));
            })
        })
        .collect();
    println!(
        "{:<30} {:>8} {:>15} {:>15.0} {:>11}",
        "crossing only (test-faulty)",
        batch[0].payload.len(),
        "-",
        median(rates),
        "-"
    );
}

/// Messages per second of one round.
fn rate(mut one_batch: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..PER_ROUND / BATCH {
        one_batch();
    }
    PER_ROUND as f64 / start.elapsed().max(Duration::from_nanos(1)).as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// About 200 bytes: a timestamp and six fields, as UNS publishers send.
fn uns_json() -> MqttMessage {
    let payload = br#"{"timestamp": 1700000000000, "value": 21.5, "unit": "degC", "quality": "GOOD", "sensor": "TT-1042", "alarm": false, "setpoint": 22.0, "description": "cell temperature"}"#;
    message(
        "enterprise/site/area/line/cell/temperature",
        payload.to_vec(),
    )
}

/// An NDATA with ten metrics of mixed datatypes.
fn ndata() -> MqttMessage {
    let payload = sample_ndata(1_700_000_000_000, 7, 123_456_789);
    message("spBv1.0/plant1/NDATA/edge7", payload)
}
