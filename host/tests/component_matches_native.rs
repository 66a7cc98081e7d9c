//! The compiled default component and the same transform called natively
//! give the same answer for every message, over many batches in one
//! instance.
//!
//! Why: the component allocates from an arena that starts over between
//! batches (`components/uns-default/src/arena.rs`). A block reused while
//! still live would show up here as a record that differs from the native
//! one, in some later batch. The batches vary in size (1 to 600 messages)
//! and in payload size (a few bytes to 700 KB), so the arena fills, spills
//! to the system allocator, grows and starts over again many times; some
//! payloads are broken, so error results cross the boundary too.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use uns_default::sparkplug::{payload::metric, payload::Metric, Payload};
use uns_kafka::message::MqttMessage;
use uns_kafka::transform::{RuntimeOptions, TransformRuntime};

mod common;
use common::{component, native_batch};

/// xorshift64*: deterministic, so a failure replays with the same seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "plant",
    "area",
    "line",
    "cell",
    "temp",
    "ß-zone",
    "über",
    "a b",
    "x.y",
    "timestamp",
    "secret",
    "nested",
    "ünï",
    "__",
    "-",
];

fn text(rng: &mut Rng, len: usize) -> String {
    let mut s = String::with_capacity(len);
    while s.len() < len {
        match rng.below(12) {
            0 => s.push_str("\\\"esc\\n"),
            1 => s.push_str("\\u00e9"),
            2 => s.push('€'),
            _ => s.push_str(rng.pick(WORDS)),
        }
    }
    s
}

fn json_value(rng: &mut Rng, depth: u32) -> String {
    match rng.below(if depth > 3 { 5 } else { 7 }) {
        0 => format!("{}", rng.next() as i64 >> rng.below(60)),
        1 => format!("{}.{}e{}", rng.below(1000), rng.below(100), rng.below(20)),
        2 => "true".to_owned(),
        3 => "null".to_owned(),
        4 => format!("\"{}\"", {
            let n = rng.below(40) as usize;
            text(rng, n)
        }),
        5 => {
            let items: Vec<String> = {
                let n = rng.below(5);
                (0..n).map(|_| json_value(rng, depth + 1)).collect()
            };
            format!("[{}]", items.join(", "))
        }
        _ => json_object(rng, depth + 1, 0),
    }
}

fn json_object(rng: &mut Rng, depth: u32, big: usize) -> String {
    let mut fields: Vec<String> = (0..rng.below(8))
        .map(|i| format!("\"{}{i}\": {}", rng.pick(WORDS), json_value(rng, depth)))
        .collect();
    if rng.below(2) == 0 {
        fields.push(format!("\"timestamp\": {}", rng.below(2_000_000_000_000)));
    }
    if big > 0 {
        let unit = text(rng, 64);
        fields.push(format!(
            "\"blob\": \"{}\"",
            unit.repeat(big / unit.len() + 1)
        ));
    }
    format!("{{{}}}", fields.join(", "))
}

/// A BIRTH declares every metric's datatype; a DATA leaves it out at
/// random (as Sparkplug 3.0 would have it), so that both sides must read
/// the sign from the BIRTH they remember.
fn sparkplug(rng: &mut Rng, birth: bool) -> Vec<u8> {
    use metric::Value::*;
    let metrics = (0..rng.below(12))
        .map(|i| {
            let (datatype, value) = match rng.below(5) {
                0 => (3, IntValue(rng.next() as u32)),
                1 => (4, LongValue(rng.next())),
                2 => (10, DoubleValue(rng.below(1 << 40) as f64 / 7.0)),
                3 => (11, BooleanValue(rng.below(2) == 0)),
                _ => (
                    12,
                    StringValue({
                        let n = rng.below(30) as usize;
                        text(rng, n)
                    }),
                ),
            };
            Metric {
                name: Some(format!("{}/{i}", rng.pick(WORDS))),
                alias: Some(i),
                timestamp: Some(rng.below(2_000_000_000_000)),
                datatype: (birth || rng.below(2) == 0).then_some(datatype),
                value: Some(value),
                ..Default::default()
            }
        })
        .collect();
    Payload {
        timestamp: Some(rng.below(2_000_000_000_000)),
        metrics,
        seq: Some(rng.below(256)),
        ..Default::default()
    }
    .encode_to_vec()
}

fn message(rng: &mut Rng) -> MqttMessage {
    let levels: Vec<&str> = (0..1 + rng.below(6)).map(|_| rng.pick(WORDS)).collect();
    let (topic, payload) = match rng.below(20) {
        0 => (levels.join("/"), Vec::new()),
        1 => {
            let mut bytes = json_object(rng, 0, 0).into_bytes();
            bytes.truncate(bytes.len() / 2);
            (levels.join("/"), bytes)
        }
        2..=6 => {
            let birth = rng.below(4) == 0;
            let mut bytes = sparkplug(rng, birth);
            if rng.below(8) == 0 {
                bytes.truncate(bytes.len().saturating_sub(3));
            }
            let kind = if birth { "NBIRTH" } else { "NDATA" };
            (
                format!("spBv1.0/{}/{kind}/{}", levels[0], levels.join("-")),
                bytes,
            )
        }
        7 => {
            let big = 1_000 + rng.below(700_000) as usize;
            (levels.join("/"), json_object(rng, 0, big).into_bytes())
        }
        _ => (levels.join("/"), json_object(rng, 0, 0).into_bytes()),
    };
    let user_properties = (0..rng.below(3))
        .map(|_| (rng.pick(WORDS).to_owned(), text(rng, 10)))
        .collect();
    MqttMessage {
        topic,
        payload: Bytes::from(payload),
        qos: rng.below(3) as u8,
        retain: rng.below(2) == 0,
        user_properties,
        content_type: (rng.below(3) == 0).then(|| "application/json".to_owned()),
        received_at_ms: rng.below(2_000_000_000_000) as i64,
        subscribed: None,
    }
}

fn check(config_json: &str, seed: u64) {
    let runtime = Arc::new(
        TransformRuntime::load(&component("uns_default"), RuntimeOptions::default())
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let mut wasm = runtime
        .instantiate(config_json)
        .unwrap_or_else(|e| panic!("{e}"));
    let config = uns_default::Config::from_json(config_json).unwrap();
    let mut rng = Rng(seed);
    let (mut messages, mut failures) = (0, 0);
    // The native side's memory of BIRTHs, as the component instance keeps its own.
    let mut births = uns_default::Births::default();
    for batch_no in 0..121 {
        let size = match rng.below(4) {
            // Last, one batch larger than the arena's largest size.
            _ if batch_no == 120 => 40,
            0 => 1,
            1 => 1 + rng.below(16),
            2 => 200 + rng.below(400),
            _ => 1 + rng.below(256),
        } as usize;
        let mut batch: Vec<MqttMessage> = (0..size).map(|_| message(&mut rng)).collect();
        if batch_no == 120 {
            for m in &mut batch {
                m.topic = "big/batch".to_owned();
                m.payload = Bytes::from(json_object(&mut rng, 0, 500_000).into_bytes());
            }
        }
        let native = native_batch(&config, &mut births, &batch);
        let sandboxed = wasm.transform_batch(&batch);
        assert_eq!(sandboxed.len(), batch.len());
        for (i, (n, w)) in native.iter().zip(&sandboxed).enumerate() {
            assert_eq!(
                n, w,
                "seed {seed}, batch {batch_no}, message {i} (topic {:?}): wasm and native differ",
                batch[i].topic
            );
        }
        messages += size;
        failures += native.iter().filter(|o| o.is_err()).count();
    }
    // The corpus must reach both kinds of result to test both.
    assert!(
        failures > 0 && failures < messages,
        "{failures} of {messages} failed"
    );
}

#[test]
fn unfiltered_records_match_over_many_batches() {
    check(
        r#"{"timestamp_attribute":"timestamp","topic_separator":"_"}"#,
        0x5eed_0001,
    );
}

#[test]
fn filtered_records_match_over_many_batches() {
    check(
        r##"{"ignored_attributes":{"#":["secret0","nested1.temp2","blob"]},"topic_separator":"."}"##,
        0x5eed_0002,
    );
}
