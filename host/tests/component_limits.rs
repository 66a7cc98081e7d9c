//! The compiled default component at the host's default limits
//! (`transform.max_memory_mb` 128): a Sparkplug payload built to take more
//! memory decoded than the instance has is refused by the component with a
//! reason, and the instance, not replaced, keeps the BIRTHs it learned.

use std::sync::Arc;

use prost::Message as _;
use uns_default::sparkplug::{payload::metric, payload::Metric, Payload};
use uns_kafka::message::TransformOutcome;
use uns_kafka::transform::{RuntimeOptions, TransformRuntime, Transformer};

mod common;
use common::{component, message};

/// The compiled default component at the host's default limits.
fn instance() -> Transformer {
    let runtime = Arc::new(
        TransformRuntime::load(&component("uns_default"), RuntimeOptions::default())
            .unwrap_or_else(|e| panic!("{e}")),
    );
    runtime.instantiate("{}").unwrap_or_else(|e| panic!("{e}"))
}

fn one(outcomes: Vec<TransformOutcome>) -> TransformOutcome {
    assert_eq!(outcomes.len(), 1);
    outcomes.into_iter().next().unwrap()
}

/// An NBIRTH declaring alias 1 an Int32, bridged.
fn learn_alias_1_as_int32(wasm: &mut Transformer) {
    let birth = Payload {
        metrics: vec![Metric {
            name: Some("t".into()),
            alias: Some(1),
            datatype: Some(3), // Int32
            value: Some(metric::Value::IntValue(0)),
            ..Default::default()
        }],
        ..Default::default()
    };
    one(wasm.transform_batch(&[message("spBv1.0/g/NBIRTH/e", birth.encode_to_vec())]))
        .expect("BIRTH bridged");
}

/// The instance still knows that alias 1 is an Int32: -5 on the wire
/// (4294967291) reads as -5.
fn assert_alias_1_is_an_int32(wasm: &mut Transformer) {
    let data = Payload {
        metrics: vec![Metric {
            alias: Some(1),
            value: Some(metric::Value::IntValue(-5i32 as u32)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let records = one(wasm.transform_batch(&[message("spBv1.0/g/NDATA/e", data.encode_to_vec())]))
        .expect("DATA bridged");
    let value: serde_json::Value =
        serde_json::from_slice(records[0].value.as_deref().unwrap()).unwrap();
    assert_eq!(value["metrics"][0]["value"], -5, "{value}");
}

/// An NDATA payload of one named metric.
fn one_metric(name: &str, datatype: u32, value: metric::Value) -> Vec<u8> {
    Payload {
        metrics: vec![Metric {
            name: Some(name.into()),
            datatype: Some(datatype),
            value: Some(value),
            ..Default::default()
        }],
        ..Default::default()
    }
    .encode_to_vec()
}

/// `payload` on an NDATA topic is a decode error whose reason says `why`.
fn refused(wasm: &mut Transformer, payload: Vec<u8>, why: &str) {
    let error =
        one(wasm.transform_batch(&[message("spBv1.0/g/NDATA/e", payload)])).expect_err("refused");
    assert_eq!(error.kind, "decode", "{}", error.message);
    assert!(error.message.contains(why), "{}", error.message);
}

#[test]
fn a_flood_of_empty_metrics_is_a_decode_error_and_the_births_survive() {
    let mut wasm = instance();
    learn_alias_1_as_int32(&mut wasm);

    // 600,000 empty metrics: 1.2 MB on the wire, well over 128 MiB decoded.
    let flood = [0x12u8, 0x00].repeat(600_000);
    refused(&mut wasm, flood, "would take about");

    // The same instance still knows that alias 1 is an Int32.
    assert_alias_1_is_an_int32(&mut wasm);
}

/// The size check refuses floods, not large gateways: an NBIRTH of 100,000
/// ordinary metrics is bridged by the compiled component at the default
/// limits, and learned.
#[test]
fn an_nbirth_of_a_hundred_thousand_metrics_is_bridged() {
    let mut wasm = instance();
    let birth = Payload {
        metrics: (0..100_000u64)
            .map(|i| Metric {
                name: Some(format!("line/{i}/temperature")),
                alias: Some(i),
                datatype: Some(if i == 7 { 3 } else { 10 }), // Int32, else Double
                value: Some(if i == 7 {
                    metric::Value::IntValue(0)
                } else {
                    metric::Value::DoubleValue(1.5)
                }),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let records =
        one(wasm.transform_batch(&[message("spBv1.0/g/NBIRTH/big", birth.encode_to_vec())]))
            .unwrap_or_else(|e| panic!("{}: {}", e.kind, e.message));
    let value: serde_json::Value =
        serde_json::from_slice(records[0].value.as_deref().unwrap()).unwrap();
    assert_eq!(value["metrics"].as_array().map(Vec::len), Some(100_000));
    let data = Payload {
        metrics: vec![Metric {
            alias: Some(7),
            value: Some(metric::Value::IntValue(-5i32 as u32)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let records =
        one(wasm.transform_batch(&[message("spBv1.0/g/NDATA/big", data.encode_to_vec())]))
            .expect("DATA bridged");
    let value: serde_json::Value =
        serde_json::from_slice(records[0].value.as_deref().unwrap()).unwrap();
    assert_eq!(value["metrics"][0]["value"], -5, "{value}");
}

/// A value whose JSON is many times its wire size: 12 MiB of Int8Array
/// -128s are `-128,` each, 60 MiB of JSON, which trapped on memory and
/// cost the instance its BIRTHs. Measured as it is written and refused
/// with a reason, in the same instance, which still knows alias 1.
#[test]
fn json_many_times_its_wire_size_is_a_decode_error_and_the_births_survive() {
    let mut wasm = instance();
    learn_alias_1_as_int32(&mut wasm);
    let bytes = vec![0x80u8; 12 << 20];
    let int8s = one_metric("samples", 22, metric::Value::BytesValue(bytes)); // Int8Array
    refused(
        &mut wasm,
        int8s,
        "payload would take more than 32 MiB written out as JSON",
    );
    assert_alias_1_is_an_int32(&mut wasm);
}

/// A bytes value just under the README's 16 MiB is bridged at the default
/// limits (its base64 written into a buffer of its size; grown by
/// doubling it needed 132 MiB and trapped).
#[test]
fn a_bytes_value_of_almost_16_mib_is_bridged() {
    let mut wasm = instance();
    let len = (16 << 20) - (128 << 10);
    let payload = one_metric("blob", 17, metric::Value::BytesValue(vec![7u8; len])); // Bytes
    let records = one(wasm.transform_batch(&[message("spBv1.0/g/NDATA/e", payload)]))
        .unwrap_or_else(|e| panic!("{}: {}", e.kind, e.message));
    let value: serde_json::Value =
        serde_json::from_slice(records[0].value.as_deref().unwrap()).unwrap();
    let b64 = value["metrics"][0]["value"].as_str().expect("base64 text");
    assert_eq!(b64.len(), len.div_ceil(3) * 4);
}

/// A BooleanArray near the largest the up-front estimate lets through (15
/// MiB of bits, 126 million values, 755 MB of JSON) is refused as a decode
/// error at once, not after walking its values to find the JSON over its
/// limit (half a second on this machine, near the call's time limit of 1 s).
#[test]
fn the_largest_boolean_array_is_refused_before_it_is_walked() {
    let mut wasm = instance();
    let count = 15u32 << 23;
    let mut bits = count.to_le_bytes().to_vec();
    bits.extend(std::iter::repeat_n(0u8, (count / 8) as usize));
    let booleans = one_metric("flags", 32, metric::Value::BytesValue(bits)); // BooleanArray
    refused(&mut wasm, booleans, "BooleanArray of 125829120 values");
}
