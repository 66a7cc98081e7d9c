//! Property-based tests (proptest): the topic mapper and the payload decoder
//! against generated input.
//!
//! The number of cases per property is proptest's default, 256, unless the
//! environment sets `PROPTEST_CASES`; a long run:
//! `PROPTEST_CASES=20000 cargo test -p uns-default --test proptest_fuzz`.
//! A failing case is shrunk and saved in `proptest_fuzz.proptest-regressions`
//! next to this file, and replayed first on every later run.
//!
//! What these properties found while they were written (256 cases):
//! - the fast JSON path (no ignore rule on the topic) skipped nested values
//!   with serde's `IgnoredAny`, which checks only the syntax of numbers and
//!   escapes, so it forwarded `{"a": 1e400}` and `{"a": "\ud800"}` that the
//!   filtered (`Value`) path refuses as "payload is not JSON". Fixed in
//!   `src/json.rs` (`Skip`); unit tests there and in `tests/transform.rs`;
//! - the filtered path re-serialises numbers from serde_json's `f64`, which
//!   without serde_json's `float_roundtrip` feature is read 1 ULP off for
//!   some 16-17 digit numbers (`-2.837106866967087e230` is forwarded as
//!   `-2.8371068669670866e230`). First tolerated here (the feature was
//!   thought to cost parsing speed); since 2026-12-05 the component is
//!   built with `float_roundtrip` (the transform bench showed no cost:
//!   347k and 354k msg/s with it, 350k without, alternating) and
//!   `same_json` asked for the same float, bit for bit. Since the filtered
//!   path removes attributes from the compact text instead of a `Value`
//!   (`uns_default::json::remove_path`), the two paths write the same bytes,
//!   and `all_outcomes` asks for exactly that.
//!
//! Long run, after those: `PROPTEST_CASES=20000`, debug build, on a busy
//! 2-core machine: all 9 properties passed, nothing found, 284 s (the
//! Sparkplug prefix property takes most of it; the default 256 cases take
//! about 3 s).

use std::collections::HashMap;

use proptest::prelude::*;
use proptest::sample::Index;
use prost::Message as _;
use serde_json::{Map, Value};
use uns_default::json::remove_path;
use uns_default::sparkplug::payload::{
    data_set, metric, property_value, DataSet, MetaData, Metric, PropertySet, PropertyValue,
    Template,
};
use uns_default::sparkplug::Payload;
use uns_default::topic::{fnv1a64, kafka_topic, SEPARATORS};
use uns_default::{transform, Config, ErrorKind, Message, Record};

const RECEIVED: i64 = 1_111;
const NDATA: &str = "spBv1.0/g/NDATA/n";

// ---------------------------------------------------------------------------
// Topic mapper
// ---------------------------------------------------------------------------

/// What the component's documentation promises, written out again rather
/// than calling `is_legal_kafka_topic`, so a bug there cannot hide one in
/// the mapper.
fn is_legal(name: &str) -> bool {
    (1..=249).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The name a topic gets when it needs no change: `/` replaced, nothing else.
fn plain(mqtt: &str, sep: char) -> String {
    mqtt.replace('/', &sep.to_string())
}

/// MQTT topic names: any UTF-8 without the wildcards and NUL, 1 to 400
/// characters, mixed with shapes that reach the mapper's edges more often
/// than uniform Unicode does (legal-only names, tiny alphabets that give `.`,
/// `..` and near misses, names around the 249-character cut).
fn mqtt_topic() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[^#+\\x00]{1,400}",
        2 => "[A-Za-z0-9._/-]{1,400}",
        2 => "[ab/. °_-]{1,8}",
        1 => "[./]{1,3}",
        2 => ("[a-z/]{225,260}", "[^#+\\x00]{0,30}").prop_map(|(a, b)| a + &b),
    ]
}

/// A topic and a near miss of it: one character replaced by another
/// (legal or not), one appended, or one removed.
fn topic_and_near_miss() -> impl Strategy<Value = (String, String)> {
    let replacement = prop_oneof![
        Just('°'),
        Just(' '),
        Just('ü'),
        Just('\t'),
        Just('$'),
        Just('/'),
        Just('_'),
        Just('.'),
        Just('-'),
        Just('a'),
        any::<char>().prop_filter("no wildcard or NUL", |c| !matches!(c, '#' | '+' | '\0')),
    ];
    (mqtt_topic(), any::<Index>(), replacement, 0..3u8).prop_map(|(a, at, c, edit)| {
        let mut chars: Vec<char> = a.chars().collect();
        let i = at.index(chars.len());
        match edit {
            0 => chars[i] = c,
            1 => chars.push(c),
            _ if chars.len() > 1 => {
                chars.remove(i);
            }
            _ => chars.push(c),
        }
        let b = chars.into_iter().collect();
        (a, b)
    })
}

proptest! {
    #[test]
    fn kafka_topics_are_legal_and_deterministic(mqtt in mqtt_topic()) {
        for sep in SEPARATORS {
            let name = kafka_topic(&mqtt, sep);
            prop_assert!(is_legal(&name), "{:?} -> {:?}", mqtt, name);
            prop_assert_eq!(&kafka_topic(&mqtt, sep), &name);
            if name != plain(&mqtt, sep) {
                // Changed names carry the hash of the whole MQTT topic.
                let suffix = format!("-{:016x}", fnv1a64(mqtt.as_bytes()));
                prop_assert!(name.ends_with(&suffix), "{:?} -> {:?}", mqtt, name);
            }
        }
    }

    #[test]
    fn changed_topics_never_collide_with_near_misses((a, b) in topic_and_near_miss()) {
        prop_assume!(a != b);
        for sep in SEPARATORS {
            let (ka, kb) = (kafka_topic(&a, sep), kafka_topic(&b, sep));
            if ka != plain(&a, sep) && kb != plain(&b, sep) {
                prop_assert_ne!(&ka, &kb, "{:?} and {:?}", a, b);
            }
        }
    }

    #[test]
    fn changed_topics_never_collide_in_a_crowd(
        topics in prop::collection::vec(
            prop_oneof!["[a /°.]{1,6}", mqtt_topic()],
            2..64,
        )
    ) {
        for sep in SEPARATORS {
            let mut seen: HashMap<String, &str> = HashMap::new();
            for t in &topics {
                let name = kafka_topic(t, sep);
                if name == plain(t, sep) {
                    continue;
                }
                if let Some(other) = seen.insert(name.clone(), t) {
                    prop_assert_eq!(other, t.as_str(), "both map to {:?}", name);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Decoder
// ---------------------------------------------------------------------------

fn msg<'a>(topic: &'a str, payload: &'a [u8]) -> Message<'a> {
    Message {
        topic,
        payload,
        qos: 1,
        retain: false,
        user_properties: &[],
        content_type: None,
        received_at_ms: RECEIVED,
    }
}

fn config(json: &str) -> Config {
    Config::from_json(json).unwrap()
}

/// Every combination of the two switches that change the decoding path:
/// no ignore rule, or one that matches every topic but names no attribute
/// the generators produce (so the text goes through the remover), refusing
/// or accepting non-object JSON.
fn configs() -> [(&'static str, Config); 4] {
    const NOTHING: &str = r##""ignored_attributes": {"#": "zz.none", "spBv1.0/#": "zz.none"}"##;
    [
        ("fast", Config::default()),
        ("fast+accept", config(r#"{"accept_non_object_json": true}"#)),
        ("filtered", config(&format!("{{{NOTHING}}}"))),
        (
            "filtered+accept",
            config(&format!(r#"{{{NOTHING}, "accept_non_object_json": true}}"#)),
        ),
    ]
}

/// Runs the transform and checks what holds for any input: one record
/// whose value is JSON (an object unless non-objects are accepted) on a
/// legal topic, or a `decode` error with a reason. Returns the value's
/// text.
fn outcome(name: &str, config: &Config, topic: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    match transform(config, &msg(topic, payload)) {
        Ok(records) => {
            assert_eq!(records.len(), 1, "{name}: one record per message");
            let r: &Record = &records[0];
            assert!(is_legal(&r.topic), "{name}: {:?}", r.topic);
            assert_eq!(r.key.as_deref(), Some(topic.as_bytes()));
            let bytes = r.value.as_deref().expect("a value, not a tombstone");
            let value: Value = serde_json::from_slice(bytes)
                .unwrap_or_else(|e| panic!("{name}: the record value is not JSON ({e})"));
            assert!(
                value.is_object() || config.accept_non_object_json,
                "{name}: a non-object was forwarded: {value}"
            );
            let ts = r.timestamp_ms.expect("a timestamp");
            assert!(ts >= 0, "{name}: negative timestamp {ts}");
            Ok(bytes.to_vec())
        }
        Err(e) => {
            // Bytes fail to decode, or decode to JSON that is not an
            // object, which is refused as such (STATE topics are JSON too).
            let json_topic = !topic.starts_with("spBv1.0/") || topic.starts_with("spBv1.0/STATE/");
            let refused_shape = json_topic
                && serde_json::from_slice::<Value>(payload).is_ok_and(|v| !v.is_object());
            assert_eq!(
                e.kind,
                if refused_shape {
                    ErrorKind::Rejected
                } else {
                    ErrorKind::Decode
                },
                "{name}: {}",
                e.message
            );
            assert!(!e.message.trim().is_empty(), "{name}: empty error message");
            Err(e.message)
        }
    }
}

/// [`outcome`] under every config; the fast and the filtered path must agree
/// on whether the payload is accepted and on the JSON text it becomes, byte
/// for byte (a rule that removes nothing changes nothing).
fn all_outcomes(topic: &str, payload: &[u8]) {
    let results: Vec<(&str, Result<Vec<u8>, String>)> = configs()
        .iter()
        .map(|(name, c)| (*name, outcome(name, c, topic, payload)))
        .collect();
    for pair in [(0, 2), (1, 3)] {
        let (fast, filtered) = (&results[pair.0], &results[pair.1]);
        match (&fast.1, &filtered.1) {
            (Ok(a), Ok(b)) => assert!(
                a == b,
                "{} and {} disagree:\n{}\n{}",
                fast.0,
                filtered.0,
                String::from_utf8_lossy(a),
                String::from_utf8_lossy(b),
            ),
            (Err(_), Err(_)) => {}
            (a, b) => panic!(
                "{} gave {a:?} but {} gave {b:?} for {topic} {payload:?}",
                fast.0, filtered.0
            ),
        }
    }
}

/// Bytes, from random to nearly valid JSON: random bytes, JSON's own
/// characters in random order, and generated JSON values (objects or not)
/// left whole, cut short, or with one byte replaced, inserted or removed.
fn jsonish_bytes() -> impl Strategy<Value = Vec<u8>> {
    let json_text = prop_oneof![
        json_object(short_float().boxed()).prop_map(Value::Object),
        json_value(short_float().boxed()),
    ]
    .prop_map(|v| serde_json::to_vec(&v).unwrap());
    let edit_byte = prop_oneof![
        prop::sample::select(b"{}[]\",:0123456789-+.eE \\tfnu\x00\xff".to_vec()),
        any::<u8>(),
    ];
    let edited = (json_text, 0..5u8, any::<Index>(), edit_byte).prop_map(|(mut v, edit, at, b)| {
        if v.is_empty() {
            return v;
        }
        let i = at.index(v.len());
        match edit {
            0 => {}
            1 => v.truncate(i),
            2 => v[i] = b,
            3 => v.insert(i, b),
            _ => {
                v.remove(i);
            }
        }
        v
    });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..512),
        1 => "[\\[\\]{}\",:0-9a-z tfnul.eE+\\\\-]{0,200}".prop_map(String::into_bytes),
        3 => edited,
    ]
}

// A Sparkplug payload generator: every message type and `oneof` variant,
// datatypes that match their value, contradict it, or are out of range, and
// random bytes under the array datatypes.

fn text() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-zA-Z0-9 _./]{0,12}", 1 => any::<String>()]
}

fn datatype() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![
        1 => Just(None),
        6 => (0u32..=36).prop_map(Some),
        1 => any::<u32>().prop_map(Some),
    ]
}

fn bytes_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..40),
        // Well-formed array layouts: a multiple of 8 bytes, a 4-byte count
        // then bits, NUL-terminated strings.
        prop::collection::vec(any::<u8>(), 0..5).prop_map(|v| v.repeat(8)),
        (0u32..64, prop::collection::vec(any::<u8>(), 0..9)).prop_map(|(n, bits)| [
            n.to_le_bytes().to_vec(),
            bits
        ]
        .concat()),
        prop::collection::vec("[a-z]{0,4}", 0..4)
            .prop_map(|v| { v.iter().flat_map(|s| s.bytes().chain([0])).collect() }),
    ]
}

fn property_set() -> impl Strategy<Value = PropertySet> {
    let scalar = prop_oneof![
        any::<u32>().prop_map(property_value::Value::IntValue),
        any::<u64>().prop_map(property_value::Value::LongValue),
        any::<f32>().prop_map(property_value::Value::FloatValue),
        any::<f64>().prop_map(property_value::Value::DoubleValue),
        any::<bool>().prop_map(property_value::Value::BooleanValue),
        text().prop_map(property_value::Value::StringValue),
    ];
    let value = (datatype(), any::<Option<bool>>(), prop::option::of(scalar)).prop_map(
        |(r#type, is_null, value)| PropertyValue {
            r#type,
            is_null,
            value,
        },
    );
    (
        prop::collection::vec(text(), 0..4),
        prop::collection::vec(value, 0..4),
    )
        .prop_map(|(keys, values)| PropertySet { keys, values })
}

fn data_set() -> impl Strategy<Value = DataSet> {
    let element = prop_oneof![
        any::<u32>().prop_map(data_set::data_set_value::Value::IntValue),
        any::<u64>().prop_map(data_set::data_set_value::Value::LongValue),
        any::<f32>().prop_map(data_set::data_set_value::Value::FloatValue),
        any::<f64>().prop_map(data_set::data_set_value::Value::DoubleValue),
        any::<bool>().prop_map(data_set::data_set_value::Value::BooleanValue),
        text().prop_map(data_set::data_set_value::Value::StringValue),
    ];
    let row =
        prop::collection::vec(prop::option::of(element), 0..4).prop_map(|elements| data_set::Row {
            elements: elements
                .into_iter()
                .map(|value| data_set::DataSetValue { value })
                .collect(),
        });
    (
        prop::option::of(0u64..6),
        prop::collection::vec(text(), 0..4),
        prop::collection::vec(0u32..=36, 0..4),
        prop::collection::vec(row, 0..4),
    )
        .prop_map(|(num_of_columns, columns, types, rows)| DataSet {
            num_of_columns,
            columns,
            types,
            rows,
        })
}

fn leaf_value() -> impl Strategy<Value = metric::Value> {
    prop_oneof![
        any::<u32>().prop_map(metric::Value::IntValue),
        any::<u64>().prop_map(metric::Value::LongValue),
        any::<f32>().prop_map(metric::Value::FloatValue),
        any::<f64>().prop_map(metric::Value::DoubleValue),
        any::<bool>().prop_map(metric::Value::BooleanValue),
        text().prop_map(metric::Value::StringValue),
        bytes_value().prop_map(metric::Value::BytesValue),
        data_set().prop_map(metric::Value::DatasetValue),
        Just(metric::Value::ExtensionValue(
            metric::MetricValueExtension {}
        )),
    ]
}

fn metric_with(
    value: impl Strategy<Value = Option<metric::Value>>,
) -> impl Strategy<Value = Metric> {
    (
        (
            prop::option::of(text()),
            any::<Option<u64>>(),
            any::<Option<u64>>(),
        ),
        datatype(),
        (
            any::<Option<bool>>(),
            any::<Option<bool>>(),
            any::<Option<bool>>(),
        ),
        prop::option::of((prop::option::of(text()), any::<Option<u64>>()).prop_map(
            |(content_type, size)| MetaData {
                content_type,
                size,
                ..Default::default()
            },
        )),
        prop::option::of(property_set()),
        value,
    )
        .prop_map(
            |((name, alias, timestamp), datatype, (h, t, n), metadata, properties, value)| Metric {
                name,
                alias,
                timestamp,
                datatype,
                is_historical: h,
                is_transient: t,
                is_null: n,
                metadata,
                properties,
                value,
            },
        )
}

/// Metrics, with templates nesting metrics a few levels deep.
fn metric_strategy() -> impl Strategy<Value = Metric> {
    metric_with(prop::option::of(leaf_value())).prop_recursive(3, 24, 4, |inner| {
        let template = (
            prop::option::of(text()),
            prop::collection::vec(inner, 0..4),
            prop::option::of(text()),
            any::<Option<bool>>(),
        )
            .prop_map(|(version, metrics, template_ref, is_definition)| {
                metric::Value::TemplateValue(Template {
                    version,
                    metrics,
                    parameters: Vec::new(),
                    template_ref,
                    is_definition,
                })
            });
        metric_with(template.prop_map(Some))
    })
}

fn sparkplug_payload() -> impl Strategy<Value = Payload> {
    (
        any::<Option<u64>>(),
        prop::collection::vec(metric_strategy(), 0..6),
        any::<Option<u64>>(),
        prop::option::of(text()),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
    )
        .prop_map(|(timestamp, metrics, seq, uuid, body)| Payload {
            timestamp,
            metrics,
            seq,
            uuid,
            body,
        })
}

// JSON objects for the round trip. Numbers are integers and floats with few
// significant digits; see `arbitrary_floats_...` for the rest.

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z]{1,3}",
        2 => any::<String>(),
        1 => Just("timestamp".to_owned()),
        1 => Just("k".to_owned()),
    ]
}

fn short_float() -> impl Strategy<Value = f64> {
    (any::<i32>(), 0i32..8).prop_map(|(m, e)| f64::from(m) / 10f64.powi(e))
}

fn json_value(float: BoxedStrategy<f64>) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        float.prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn json_object(float: BoxedStrategy<f64>) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec((key(), json_value(float)), 0..8).prop_map(|kv| kv.into_iter().collect())
}

fn json_topic() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("a/b"), Just("spBv1.0/STATE/host1")]
}

/// Steps of an attribute path: each picks a key of the object reached so
/// far (by the `Index`), or, one time in four or where there is no object,
/// the generated key, which may or may not be there.
fn path_steps() -> impl Strategy<Value = Vec<(Index, u8, String)>> {
    prop::collection::vec((any::<Index>(), 0..4u8, key()), 1..5)
}

fn path_into(object: &Map<String, Value>, steps: &[(Index, u8, String)]) -> Vec<String> {
    let mut path = Vec::new();
    let mut current = Some(object);
    for (at, pick, other) in steps {
        let existing = match current {
            Some(map) if *pick != 0 && !map.is_empty() => map.keys().nth(at.index(map.len())),
            _ => None,
        };
        let key = existing.unwrap_or(other).clone();
        current = match current.and_then(|map| map.get(&key)) {
            Some(Value::Object(map)) => Some(map),
            _ => None,
        };
        path.push(key);
    }
    path
}

/// The specification's rule on a `Value` (what the transform did before it
/// filtered the text): the last key goes, a missing key or a non-object on
/// the way leaves the object as it is.
fn remove_from_value(object: &mut Map<String, Value>, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = object;
    for key in parents {
        match current.get_mut(key) {
            Some(Value::Object(child)) => current = child,
            _ => return,
        }
    }
    current.shift_remove(last);
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(payload in jsonish_bytes()) {
        for topic in ["a/b", "spBv1.0/STATE/h", NDATA] {
            all_outcomes(topic, &payload);
        }
    }

    #[test]
    fn generated_sparkplug_payloads_and_their_prefixes_never_panic(
        payload in sparkplug_payload()
    ) {
        let bytes = payload.encode_to_vec();
        all_outcomes(NDATA, &bytes);
        // Every prefix up to 512 bytes, then a spread of longer ones and the
        // last few.
        let n = bytes.len();
        let step = 1.max(n / 256);
        let cuts = (0..n.min(512))
            .chain((512..n).step_by(step))
            .chain(n.saturating_sub(16)..n);
        for cut in cuts {
            all_outcomes(NDATA, &bytes[..cut]);
        }
    }

    #[test]
    fn sparkplug_payloads_with_one_byte_changed_never_panic(
        payload in sparkplug_payload(),
        at in any::<Index>(),
        byte in any::<u8>(),
    ) {
        let mut bytes = payload.encode_to_vec();
        prop_assume!(!bytes.is_empty());
        let i = at.index(bytes.len());
        bytes[i] = byte;
        all_outcomes(NDATA, &bytes);
    }

    #[test]
    fn json_objects_round_trip(
        object in json_object(short_float().boxed()),
        pretty in any::<bool>(),
        topic in json_topic(),
    ) {
        let compact = serde_json::to_vec(&object).unwrap();
        let text = if pretty { serde_json::to_vec_pretty(&object).unwrap() } else { compact.clone() };
        let expected_ts = object
            .get("timestamp")
            .and_then(Value::as_i64)
            .filter(|ts| *ts >= 0)
            .unwrap_or(RECEIVED);
        for (name, c) in configs() {
            let records = transform(&c, &msg(topic, &text)).unwrap();
            let r = &records[0];
            let value = r.value.as_deref().unwrap();
            // The publisher's text minus whitespace, filtered or not (the
            // filter names no key these objects have).
            prop_assert_eq!(value, &compact[..], "{}", name);
            let back: Map<String, Value> = serde_json::from_slice(value).unwrap();
            prop_assert_eq!(&back, &object, "{}", name);
            // Same keys in the same order, not only the same map.
            prop_assert!(back.keys().eq(object.keys()), "{}", name);
            prop_assert_eq!(r.timestamp_ms, Some(expected_ts), "{}", name);
        }
        // A rule that removes a top-level key removes exactly that key.
        let c = config(&format!(r#"{{"ignored_attributes": {{"{topic}": "k"}}}}"#));
        let r = &transform(&c, &msg(topic, &text)).unwrap()[0];
        let back: Map<String, Value> = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        let mut without = object.clone();
        without.shift_remove("k");
        prop_assert_eq!(back, without);
        prop_assert_eq!(r.timestamp_ms, Some(expected_ts));
    }

    #[test]
    fn arbitrary_floats_read_the_same_on_the_fast_and_the_filtered_path(
        object in json_object(any::<f64>().prop_filter("finite", |f| f.is_finite()).boxed()),
        topic in json_topic(),
    ) {
        let text = serde_json::to_vec(&object).unwrap();
        all_outcomes(topic, &text);
    }

    #[test]
    fn removing_a_path_from_the_text_is_removing_it_from_the_value(
        object in json_object(any::<f64>().prop_filter("finite", |f| f.is_finite()).boxed()),
        steps in path_steps(),
    ) {
        let path = path_into(&object, &steps);
        let mut text = serde_json::to_vec(&object).unwrap();
        remove_path(&mut text, &path).unwrap();
        let mut expected = object.clone();
        remove_from_value(&mut expected, &path);
        let back: Value = serde_json::from_slice(&text).unwrap();
        let expected = Value::Object(expected);
        prop_assert_eq!(&back, &expected, "{:?}", path);
        // The same text, too: every other member as it was, in its place.
        prop_assert_eq!(
            String::from_utf8(text).unwrap(),
            serde_json::to_string(&expected).unwrap(),
            "{:?}", path
        );
    }

    #[test]
    fn removing_any_path_from_any_text_never_panics(
        payload in jsonish_bytes(),
        path in prop::collection::vec(key(), 0..4),
    ) {
        let mut text = payload.clone();
        if remove_path(&mut text, &path).is_err() {
            prop_assert_eq!(text, payload);
        }
    }

    #[test]
    fn non_object_json_is_refused_unless_accepted(
        value in json_value(short_float().boxed()).prop_filter("not an object", |v| !v.is_object()),
        topic in json_topic(),
    ) {
        let text = serde_json::to_vec(&value).unwrap();
        for (name, c) in configs() {
            match transform(&c, &msg(topic, &text)) {
                Ok(records) => {
                    prop_assert!(c.accept_non_object_json, "{} forwarded {}", name, value);
                    let back: Value = serde_json::from_slice(records[0].value.as_deref().unwrap()).unwrap();
                    prop_assert_eq!(&back, &value);
                    prop_assert_eq!(records[0].timestamp_ms, Some(RECEIVED));
                }
                Err(e) => {
                    prop_assert!(!c.accept_non_object_json, "{}: {}", name, e);
                    prop_assert_eq!(e.kind, ErrorKind::Rejected);
                    prop_assert!(e.message.contains(", not an object: UNS messages are JSON objects"), "{}", e.message);
                }
            }
        }
    }
}
