//! The whole transform, message in, record out, through the public API the
//! component and the host's benchmark use.

use prost::Message as _;
use serde_json::{json, Value};
use uns_default::sparkplug::datatype::INT8;
use uns_default::sparkplug::payload::{metric, Metric};
use uns_default::sparkplug::Payload;
use uns_default::{transform, Config, ErrorKind, Message, Record, TransformError, NAME, VERSION};

const RECEIVED: i64 = 1_111;

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

fn run(config: &Config, topic: &str, payload: &[u8]) -> Result<Record, TransformError> {
    let mut records = transform(config, &msg(topic, payload))?;
    assert_eq!(records.len(), 1, "one record per message");
    Ok(records.remove(0))
}

fn value_text(r: &Record) -> String {
    String::from_utf8(r.value.clone().unwrap()).unwrap()
}

fn value(r: &Record) -> Value {
    serde_json::from_slice(r.value.as_deref().unwrap()).unwrap()
}

fn cfg(json: &str) -> Config {
    Config::from_json(json).unwrap()
}

#[test]
fn seed_case_a_b_c_json() {
    let r = run(&Config::default(), "a/b/c", br#"{"x": 1, "y": "z"}"#).unwrap();
    assert_eq!(r.topic, "a_b_c");
    assert_eq!(r.key.as_deref(), Some(&b"a/b/c"[..]));
    assert_eq!(value_text(&r), r#"{"x":1,"y":"z"}"#);
    assert_eq!(r.timestamp_ms, Some(RECEIVED));
}

#[test]
fn seed_case_abc() {
    let r = run(&Config::default(), "abc", br#"{"k": true}"#).unwrap();
    assert_eq!(r.topic, "abc");
    assert_eq!(r.key.as_deref(), Some(&b"abc"[..]));
    assert_eq!(value_text(&r), r#"{"k":true}"#);
}

#[test]
fn value_is_compact_json_in_the_publishers_key_order() {
    let r = run(
        &Config::default(),
        "t",
        b"{ \"z\" : 1,\n \"a\" : [ 1 , 2 ],\t\"m\": {\"y\": null, \"b\": 1.5} }",
    )
    .unwrap();
    assert_eq!(
        value_text(&r),
        r#"{"z":1,"a":[1,2],"m":{"y":null,"b":1.5}}"#
    );
}

#[test]
fn json_keeps_the_publishers_spelling_filtered_or_not() {
    let payload =
        br#"{ "n": 1.0e3, "s": "caf\u00e9", "big": 123456789012345678901234567890, "drop": 1 }"#;
    let r = run(&Config::default(), "t", payload).unwrap();
    assert_eq!(
        value_text(&r),
        r#"{"n":1.0e3,"s":"caf\u00e9","big":123456789012345678901234567890,"drop":1}"#
    );
    let c = cfg(r#"{"ignored_attributes": {"t": "drop"}}"#);
    let r = run(&c, "t", payload).unwrap();
    assert_eq!(
        value_text(&r),
        r#"{"n":1.0e3,"s":"caf\u00e9","big":123456789012345678901234567890}"#
    );
}

/// A rule that matches the topic changes nothing but the members it
/// removes: no digits lost to a float, no repeated key collapsed, no number
/// respelled, whether or not the path exists.
#[test]
fn a_matching_rule_removes_its_members_and_nothing_else() {
    let payload = br#"{"big": 123456789012345678901234567890, "x": 1, "x": 2, "f": 1.10}"#;
    let unfiltered = value_text(&run(&Config::default(), "t", payload).unwrap());
    assert_eq!(
        unfiltered,
        r#"{"big":123456789012345678901234567890,"x":1,"x":2,"f":1.10}"#
    );
    let missing = cfg(r##"{"ignored_attributes": {"#": "zz"}}"##);
    assert_eq!(
        value_text(&run(&missing, "t", payload).unwrap()),
        unfiltered
    );
    let x = cfg(r##"{"ignored_attributes": {"#": "x"}}"##);
    assert_eq!(
        value_text(&run(&x, "t", payload).unwrap()),
        r#"{"big":123456789012345678901234567890,"f":1.10}"#
    );
    // Keys match by their decoded value, however the publisher spelled them.
    let c = cfg(r#"{"ignored_attributes": {"t": ["secret", "a.b"]}}"#);
    let r = run(
        &c,
        "t",
        br#"{"\u0073ecret": 1, "a": {"\u0062": 2, "c": 3e0}, "v": 2}"#,
    )
    .unwrap();
    assert_eq!(value_text(&r), r#"{"a":{"c":3e0},"v":2}"#);
}

#[test]
fn filtered_sparkplug_is_the_unfiltered_text_minus_the_attribute() {
    let p = Payload {
        timestamp: Some(1_700_000_000_000),
        seq: Some(3),
        uuid: Some("u".into()),
        metrics: vec![
            Metric {
                name: Some("f".into()),
                value: Some(metric::Value::FloatValue(1.1)),
                ..Default::default()
            },
            Metric {
                name: Some("l".into()),
                value: Some(metric::Value::LongValue(u64::MAX)),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
    .encode_to_vec();
    let topic = "spBv1.0/g/NDATA/n";
    let unfiltered = value_text(&run(&Config::default(), topic, &p).unwrap());
    // Both members are there to be removed (else the comparison below
    // would hold with nothing removed); `metrics.name` removes nothing, as
    // `metrics` is an array and paths walk objects only.
    assert!(
        unfiltered.contains(r#""timestamp":1700000000000,"#) && unfiltered.contains(r#""seq":3,"#),
        "{unfiltered}"
    );
    let c = cfg(r#"{"ignored_attributes": {"spBv1.0/#": ["seq", "timestamp", "metrics.name"]}}"#);
    let r = run(&c, topic, &p).unwrap();
    assert_eq!(
        value_text(&r),
        unfiltered
            .replacen(r#""timestamp":1700000000000,"#, "", 1)
            .replacen(r#""seq":3,"#, "", 1)
    );
    // Read before the attribute went.
    assert_eq!(r.timestamp_ms, Some(1_700_000_000_000));
}

#[test]
fn sparkplug_timestamp_attribute_can_name_any_top_level_integer() {
    let p = Payload {
        timestamp: Some(10),
        seq: Some(20),
        uuid: Some("u".into()),
        ..Default::default()
    }
    .encode_to_vec();
    for (attribute, expected) in [
        ("timestamp", 10),
        ("seq", 20),
        ("uuid", RECEIVED),
        ("x", RECEIVED),
    ] {
        let c = cfg(&format!(r#"{{"timestamp_attribute": "{attribute}"}}"#));
        assert_eq!(
            run(&c, "spBv1.0/g/NDATA/n", &p).unwrap().timestamp_ms,
            Some(expected)
        );
        // The same through the filtering path.
        let c = cfg(&format!(
            r##"{{"timestamp_attribute": "{attribute}", "ignored_attributes": {{"#": "none"}}}}"##
        ));
        assert_eq!(
            run(&c, "spBv1.0/g/NDATA/n", &p).unwrap().timestamp_ms,
            Some(expected)
        );
    }
    let huge = Payload {
        timestamp: Some(u64::MAX),
        ..Default::default()
    }
    .encode_to_vec();
    assert_eq!(
        run(&Config::default(), "spBv1.0/g/NDATA/n", &huge)
            .unwrap()
            .timestamp_ms,
        Some(RECEIVED)
    );
}

#[test]
fn separator_and_empty_levels_and_illegal_characters() {
    let dot = cfg(r#"{"topic_separator": "."}"#);
    assert_eq!(run(&dot, "a/b/c", b"{}").unwrap().topic, "a.b.c");
    let d = Config::default();
    assert_eq!(run(&d, "a//b", b"{}").unwrap().topic, "a__b");
    assert_eq!(run(&d, "/a", b"{}").unwrap().topic, "_a");
    assert_eq!(run(&d, "a/", b"{}").unwrap().topic, "a_");
    let umlaut = run(&d, "Halle 1/Füllstand", b"{}").unwrap();
    assert!(
        umlaut.topic.starts_with("Halle_1_F_llstand-"),
        "{}",
        umlaut.topic
    );
    assert_eq!(umlaut.topic.len(), "Halle_1_F_llstand-".len() + 16);
    assert_eq!(umlaut.key.as_deref(), Some("Halle 1/Füllstand".as_bytes()));
    let long = "l/".repeat(200);
    let r = run(&d, &long, b"{}").unwrap();
    assert_eq!(r.topic.len(), 249);
    assert_eq!(r.key.as_deref(), Some(long.as_bytes()));
}

#[test]
fn headers_carry_mqtt_metadata_user_properties_and_the_component() {
    let props = vec![
        ("site".to_owned(), "Berlin".to_owned()),
        ("site".to_owned(), "Köln".to_owned()),
    ];
    let m = Message {
        topic: "a/b",
        payload: b"{}",
        qos: 2,
        retain: true,
        user_properties: &props,
        content_type: Some("application/json"),
        received_at_ms: RECEIVED,
    };
    let r = transform(&Config::default(), &m).unwrap().remove(0);
    let h: Vec<(&str, &[u8])> = r
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_slice()))
        .collect();
    assert_eq!(
        h,
        vec![
            ("site", &b"Berlin"[..]),
            ("site", "Köln".as_bytes()),
            ("mqtt_topic", b"a/b"),
            ("mqtt_qos", b"2"),
            ("mqtt_retain", b"true"),
            ("mqtt_content_type", b"application/json"),
            ("transform_name", NAME.as_bytes()),
            ("transform_version", VERSION.as_bytes()),
        ]
    );
    // Renamed with the package (README, *Writing a transform component*).
    assert_eq!(NAME, env!("CARGO_PKG_NAME"));
    assert_eq!(VERSION, env!("CARGO_PKG_VERSION"));
}

/// A publisher's user property named like one of ours cannot pass for it
/// where a consumer takes the last header of a name.
#[test]
fn a_user_property_cannot_forge_the_component_headers() {
    let props = [
        ("mqtt_topic".to_owned(), "forged".to_owned()),
        ("transform_name".to_owned(), "forged".to_owned()),
    ];
    let m = Message {
        user_properties: &props,
        ..msg("a/b", b"{}")
    };
    let r = transform(&Config::default(), &m).unwrap().remove(0);
    let last = |name: &str| {
        r.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    };
    assert_eq!(last("mqtt_topic"), Some(&b"a/b"[..]));
    assert_eq!(last("transform_name"), Some(NAME.as_bytes()));
    // Kept, not dropped: the publisher's properties are data too.
    assert_eq!(r.headers.iter().filter(|(_, v)| v == b"forged").count(), 2);
}

#[test]
fn headers_without_content_type_or_properties() {
    for (qos, q) in [(0u8, "0"), (1, "1"), (2, "2")] {
        let m = Message {
            qos,
            ..msg("x", b"{}")
        };
        let r = transform(&Config::default(), &m).unwrap().remove(0);
        let names: Vec<&str> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "mqtt_topic",
                "mqtt_qos",
                "mqtt_retain",
                "transform_name",
                "transform_version"
            ]
        );
        assert_eq!(r.headers[1].1, q.as_bytes());
        assert_eq!(r.headers[2].1, b"false");
    }
}

#[test]
fn timestamp_attribute_present_absent_or_not_an_integer() {
    let d = Config::default();
    let f = cfg(r##"{"ignored_attributes": {"#": "none"}}"##);
    let ts = |payload: &str| {
        let fast = run(&d, "t", payload.as_bytes()).unwrap().timestamp_ms;
        let filtered = run(&f, "t", payload.as_bytes()).unwrap().timestamp_ms;
        assert_eq!(fast, filtered, "{payload}");
        fast
    };
    assert_eq!(
        ts(r#"{"timestamp": 1700000000000}"#),
        Some(1_700_000_000_000)
    );
    assert_eq!(ts(r#"{"other": 5}"#), Some(RECEIVED));
    assert_eq!(ts(r#"{"timestamp": "1700000000000"}"#), Some(RECEIVED));
    assert_eq!(ts(r#"{"timestamp": 1700000000000.5}"#), Some(RECEIVED));
    assert_eq!(ts(r#"{"timestamp": 1.7e12}"#), Some(RECEIVED));
    assert_eq!(ts(r#"{"timestamp": null}"#), Some(RECEIVED));
    assert_eq!(ts(r#"{"timestamp": -5}"#), Some(RECEIVED));
    assert_eq!(ts(r#"{"timestamp": 0}"#), Some(RECEIVED));
    assert_eq!(ts(r#"{"timestamp": 1}"#), Some(1));
    assert_eq!(ts(r#"{"timestamp": 18446744073709551615}"#), Some(RECEIVED));
    // Only the top level counts.
    assert_eq!(ts(r#"{"a": {"timestamp": 5}}"#), Some(RECEIVED));
    // The configured name, not "timestamp".
    let custom = cfg(r#"{"timestamp_attribute": "ts"}"#);
    let r = run(&custom, "t", br#"{"ts": 42, "timestamp": 7}"#).unwrap();
    assert_eq!(r.timestamp_ms, Some(42));
}

#[test]
fn timestamp_is_read_before_the_attribute_is_filtered_out() {
    let c = cfg(r#"{"ignored_attributes": {"t": "timestamp"}}"#);
    let r = run(&c, "t", br#"{"timestamp": 99, "v": 1}"#).unwrap();
    assert_eq!(r.timestamp_ms, Some(99));
    assert_eq!(value_text(&r), r#"{"v":1}"#);
}

#[test]
fn sparkplug_timestamp_becomes_the_record_timestamp() {
    let p = Payload {
        timestamp: Some(1_700_000_000_000),
        seq: Some(1),
        ..Default::default()
    };
    let r = run(&Config::default(), "spBv1.0/g/NDATA/n", &p.encode_to_vec()).unwrap();
    assert_eq!(r.timestamp_ms, Some(1_700_000_000_000));
    assert_eq!(r.topic, "spBv1.0_g_NDATA_n");
    assert_eq!(value_text(&r), r#"{"timestamp":1700000000000,"seq":1}"#);
}

#[test]
fn ignored_attributes_seed_example() {
    let c = cfg(r#"{"ignored_attributes": {
        "topic1": ["attr1", "attr2.subAttr1"],
        "topic2/+": "A.B.C",
        "topic3/#": ["x"]}}"#);
    let r = run(
        &c,
        "topic1",
        br#"{"attr1": 1, "attr2": {"subAttr1": 2, "subAttr2": 3}, "keep": 4}"#,
    )
    .unwrap();
    assert_eq!(value_text(&r), r#"{"attr2":{"subAttr2":3},"keep":4}"#);
    let r = run(&c, "topic2/x", br#"{"A": {"B": {"C": 1, "D": 2}}}"#).unwrap();
    assert_eq!(value(&r), json!({"A": {"B": {"D": 2}}}));
    // `+` needs exactly one level.
    let r = run(&c, "topic2/x/y", br#"{"A": {"B": {"C": 1}}}"#).unwrap();
    assert_eq!(value(&r), json!({"A": {"B": {"C": 1}}}));
    // `#` covers the parent level and below.
    for t in ["topic3", "topic3/a", "topic3/a/b"] {
        let r = run(&c, t, br#"{"x": 1, "y": 2}"#).unwrap();
        assert_eq!(value(&r), json!({"y": 2}), "{t}");
    }
    let r = run(&c, "other", br#"{"attr1": 1, "x": 1}"#).unwrap();
    assert_eq!(value(&r), json!({"attr1": 1, "x": 1}));
}

#[test]
fn every_matching_filter_applies() {
    let c = cfg(r#"{"ignored_attributes": {"a/+": "x", "a/#": ["y"], "+/b": "z", "a/b": "w"}}"#);
    let r = run(&c, "a/b", br#"{"x": 1, "y": 2, "z": 3, "w": 4, "keep": 5}"#).unwrap();
    assert_eq!(value_text(&r), r#"{"keep":5}"#);
}

#[test]
fn null_valued_keys_are_removed_and_any_value_type() {
    let c = cfg(r#"{"ignored_attributes": {"t": ["n", "o", "l", "s"]}}"#);
    let r = run(
        &c,
        "t",
        br#"{"n": null, "o": {"deep": 1}, "l": [1], "s": "x", "k": 0}"#,
    )
    .unwrap();
    assert_eq!(value_text(&r), r#"{"k":0}"#);
}

#[test]
fn missing_keys_and_non_objects_on_the_path_leave_the_message_as_is() {
    let c = cfg(r#"{"ignored_attributes": {"t": ["a.b.c", "missing", "l.0", "s.x"]}}"#);
    let payload = br#"{"a": {"b": 5}, "l": [{"0": 1}], "s": "text"}"#;
    let r = run(&c, "t", payload).unwrap();
    assert_eq!(value_text(&r), r#"{"a":{"b":5},"l":[{"0":1}],"s":"text"}"#);
    let r = run(&c, "t", br#"{"a": {"b": null}}"#).unwrap();
    assert_eq!(value_text(&r), r#"{"a":{"b":null}}"#);
    let r = run(&c, "t", br#"{"a": {"b": {"c": 1, "d": 2}}}"#).unwrap();
    assert_eq!(value_text(&r), r#"{"a":{"b":{"d":2}}}"#);
}

#[test]
fn wildcard_filters_skip_dollar_topics() {
    let c = cfg(r##"{"ignored_attributes": {"#": "x", "+/y": "x", "$SYS/#": "z"}}"##);
    let r = run(&c, "$SYS/y", br#"{"x": 1, "z": 2}"#).unwrap();
    assert_eq!(value(&r), json!({"x": 1}));
    assert!(r.topic.starts_with("_SYS_y-"));
    let r = run(&c, "plain/y", br#"{"x": 1, "z": 2}"#).unwrap();
    assert_eq!(value(&r), json!({"z": 2}));
}

#[test]
fn filters_apply_to_sparkplug_json_too() {
    let c = cfg(r#"{"ignored_attributes": {"spBv1.0/+/NDATA/#": ["seq", "uuid"]}}"#);
    let p = Payload {
        timestamp: Some(5),
        seq: Some(3),
        uuid: Some("u".into()),
        metrics: vec![Metric {
            name: Some("m".into()),
            datatype: Some(INT8),
            value: Some(metric::Value::IntValue(251)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let r = run(&c, "spBv1.0/g/NDATA/n/d", &p.encode_to_vec()).unwrap();
    assert_eq!(
        value_text(&r),
        r#"{"timestamp":5,"metrics":[{"name":"m","datatype":1,"value":-5}]}"#
    );
}

#[test]
fn state_topic_is_json() {
    let r = run(
        &Config::default(),
        "spBv1.0/STATE/host1",
        br#"{"online":false}"#,
    )
    .unwrap();
    assert_eq!(r.topic, "spBv1.0_STATE_host1");
    assert_eq!(value_text(&r), r#"{"online":false}"#);
    // Not exactly one level after STATE: protobuf, so JSON text fails.
    let e = run(
        &Config::default(),
        "spBv1.0/STATE/a/b",
        br#"{"online":false}"#,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Decode);
}

/// Every JSON top level that is not an object, with its compact form and
/// the words the error uses for it.
const NON_OBJECTS: [(&str, &str, &str); 7] = [
    (
        "[1, {\"timestamp\": 5}]",
        r#"[1,{"timestamp":5}]"#,
        "a JSON array",
    ),
    ("[]", "[]", "a JSON array"),
    ("42", "42", "a JSON number"),
    ("\"text\"", "\"text\"", "a JSON string"),
    (" true ", "true", "a JSON boolean"),
    ("false", "false", "a JSON boolean"),
    ("null", "null", "JSON null"),
];

#[test]
fn non_object_json_is_rejected_by_default() {
    let d = Config::default();
    // A matching rule changes nothing about which payloads are refused.
    let f = cfg(r##"{"ignored_attributes": {"#": "timestamp", "spBv1.0/#": "x"}}"##);
    for topic in ["t", "a/b/c", "spBv1.0/STATE/host1"] {
        for (payload, _, described) in NON_OBJECTS {
            for c in [&d, &f] {
                let e = run(c, topic, payload.as_bytes()).unwrap_err();
                // It is JSON: `decode` would send the user looking for a
                // broken payload where the shape is what is refused.
                assert_eq!(e.kind, ErrorKind::Rejected, "{topic} {payload}");
                assert_eq!(
                    e.message,
                    format!(
                        "payload is {described}, not an object: UNS messages are JSON objects \
                         (transform.config.accept_non_object_json: true forwards other JSON values)"
                    )
                );
                assert_eq!(
                    e.to_string(),
                    format!("rejected: {}", e.message),
                    "the kind is reported as a refusal, not as bad JSON"
                );
            }
        }
        // Objects still pass, explicitly refusing or not.
        let off = cfg(r#"{"accept_non_object_json": false}"#);
        assert_eq!(value_text(&run(&off, topic, b" {} ").unwrap()), "{}");
    }
}

#[test]
fn accept_non_object_json_forwards_them_unfiltered_with_the_receive_time() {
    let fast = cfg(r#"{"accept_non_object_json": true}"#);
    let filtered = cfg(
        r##"{"accept_non_object_json": true, "ignored_attributes": {"#": "timestamp", "spBv1.0/#": "x"}}"##,
    );
    for topic in ["t", "spBv1.0/STATE/host1"] {
        for (payload, out, _) in NON_OBJECTS {
            for c in [&fast, &filtered] {
                let r = run(c, topic, payload.as_bytes()).unwrap();
                assert_eq!(value_text(&r), out, "{topic} {payload}");
                assert_eq!(r.timestamp_ms, Some(RECEIVED));
            }
        }
        // Objects are unchanged by the switch.
        let r = run(&fast, topic, br#"{"timestamp": 7, "v": [1]}"#).unwrap();
        assert_eq!(value_text(&r), r#"{"timestamp":7,"v":[1]}"#);
        assert_eq!(r.timestamp_ms, Some(7));
    }
    // The switch does not make bad JSON or a non-object Sparkplug topic pass.
    let e = run(&fast, "t", b"[1,").unwrap_err();
    assert!(
        e.message.starts_with("payload is not JSON: "),
        "{}",
        e.message
    );
    let e = run(&fast, "spBv1.0/g/NDATA/n", b"42").unwrap_err();
    assert!(
        e.message
            .starts_with("payload is not a Sparkplug B protobuf: "),
        "{}",
        e.message
    );
}

#[test]
fn ten_thousand_levels_of_nesting_fail_within_a_small_stack() {
    // 1 MiB, the stack a wasm32 Rust program gets by default: the nesting
    // must hit serde_json's recursion limit (128), never the stack's end,
    // on every path and with either setting of the switch.
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(|| {
            let arrays = "[".repeat(10_000) + &"]".repeat(10_000);
            let objects = "{\"a\":".repeat(10_000) + "1" + &"}".repeat(10_000);
            let configs = [
                Config::default(),
                cfg(r#"{"accept_non_object_json": true}"#),
                cfg(r##"{"ignored_attributes": {"#": "a", "spBv1.0/#": "a"}}"##),
                cfg(
                    r##"{"accept_non_object_json": true, "ignored_attributes": {"#": "a", "spBv1.0/#": "a"}}"##,
                ),
            ];
            for c in &configs {
                for deep in [&arrays, &objects] {
                    for topic in ["t", "spBv1.0/STATE/h"] {
                        let e = run(c, topic, deep.as_bytes()).unwrap_err();
                        assert_eq!(e.kind, ErrorKind::Decode);
                        assert!(
                            e.message.contains("recursion limit exceeded"),
                            "{}",
                            e.message
                        );
                    }
                }
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn undecodable_payloads_are_decode_errors() {
    let d = Config::default();
    let f = cfg(r##"{"ignored_attributes": {"#": "none", "spBv1.0/#": "none"}}"##);
    for (topic, payload) in [
        ("t", &b""[..]),
        ("t", b"{not json"),
        ("t", b"{\"a\": 1} trailing"),
        ("t", b"\xff\xfe"),
        ("spBv1.0/g/NDATA/n", b"\xff\xff\xff\xff"),
        ("spBv1.0/g/NDATA/n", b""),
        ("spBv1.0/STATE/h", b"not json"),
        // What serde_json refuses to read into a `Value`, deep inside an
        // object: refused here too, so no consumer that reads records into
        // a `Value` chokes on one (found by proptest_fuzz.rs).
        ("t", br#"{"a": [1, {"b": 1e400}]}"#),
        ("t", br#"{"a": "\ud800"}"#),
        ("spBv1.0/STATE/h", br#"{"online": true, "x": -1e999}"#),
    ] {
        let e = run(&d, topic, payload).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Decode, "{topic} {payload:?}");
        assert!(!e.message.is_empty());
        let e = run(&f, topic, payload).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Decode, "{topic} {payload:?}");
    }
    let deep = "[".repeat(10_000) + &"]".repeat(10_000);
    for c in [&d, &f] {
        let e = run(c, "t", deep.as_bytes()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Decode);
        assert!(
            e.message.contains("recursion limit exceeded"),
            "{}",
            e.message
        );
    }
}
