//! Sparkplug B payloads, built with the crate's own prost structs, decoded
//! through the public API and compared with the JSON the spec prescribes.

use prost::Message as _;
use serde_json::{json, Value};
use uns_default::decode::decode;
use uns_default::sparkplug::datatype::*;
use uns_default::sparkplug::payload::{
    data_set, metric, property_value, template, DataSet, MetaData, Metric, PropertySet,
    PropertySetList, PropertyValue, Template,
};
use uns_default::sparkplug::{self, Payload};
use uns_default::ErrorKind;

const TOPIC: &str = "spBv1.0/plant/DDATA/edge1/dev1";

/// Decodes into a `Value` (through the public `decode`, easy to inspect) and
/// checks that the text the transform writes (`to_json_bytes`) is exactly
/// that `Value`'s JSON.
fn decode_payload(p: &Payload) -> Value {
    let bytes = p.encode_to_vec();
    let value = decode(TOPIC, &bytes).unwrap();
    let direct = sparkplug::to_json_bytes(&sparkplug::decode(&bytes).unwrap()).unwrap();
    assert_eq!(
        String::from_utf8(direct).unwrap(),
        serde_json::to_string(&value).unwrap()
    );
    value
}

fn one_metric(m: Metric) -> Value {
    let v = decode_payload(&Payload {
        metrics: vec![m],
        ..Default::default()
    });
    v["metrics"][0].clone()
}

fn typed(datatype: u32, value: metric::Value) -> Value {
    one_metric(Metric {
        datatype: Some(datatype),
        value: Some(value),
        ..Default::default()
    })["value"]
        .clone()
}

fn err_of(m: Metric) -> String {
    let bytes = Payload {
        metrics: vec![m],
        ..Default::default()
    }
    .encode_to_vec();
    let e = decode(TOPIC, &bytes).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Decode);
    let direct = sparkplug::to_json_bytes(&sparkplug::decode(&bytes).unwrap()).unwrap_err();
    assert_eq!(direct, e);
    e.message
}

use metric::Value::{
    BooleanValue, BytesValue, DatasetValue, DoubleValue, FloatValue, IntValue, LongValue,
    StringValue, TemplateValue,
};

#[test]
fn payload_fields_keep_proto_names_and_absent_fields_stay_absent() {
    let v = decode_payload(&Payload {
        timestamp: Some(1_700_000_000_123),
        metrics: vec![Metric {
            name: Some("Temperature".into()),
            alias: Some(7),
            timestamp: Some(1_700_000_000_100),
            datatype: Some(DOUBLE),
            is_historical: Some(false),
            is_transient: Some(true),
            is_null: Some(false),
            value: Some(DoubleValue(21.5)),
            ..Default::default()
        }],
        seq: Some(42),
        uuid: Some("u-1".into()),
        body: Some(vec![1, 2, 3]),
    });
    assert_eq!(
        serde_json::to_string(&v).unwrap(),
        r#"{"timestamp":1700000000123,"metrics":[{"name":"Temperature","alias":7,"timestamp":1700000000100,"datatype":10,"is_historical":false,"is_transient":true,"is_null":false,"value":21.5}],"seq":42,"uuid":"u-1","body":"AQID"}"#
    );
    // Nothing set: nothing in the JSON (an empty protobuf needs at least one
    // field here, because an empty payload is refused before decoding).
    assert_eq!(
        decode_payload(&Payload {
            seq: Some(0),
            ..Default::default()
        }),
        json!({"seq": 0})
    );
    assert_eq!(one_metric(Metric::default()), json!({}));
}

#[test]
fn sixty_four_bit_integers_are_json_numbers() {
    let v = decode_payload(&Payload {
        timestamp: Some(u64::MAX),
        seq: Some(u64::MAX - 1),
        metrics: vec![Metric {
            alias: Some(u64::MAX),
            datatype: Some(UINT64),
            value: Some(LongValue(u64::MAX)),
            ..Default::default()
        }],
        ..Default::default()
    });
    let text = serde_json::to_string(&v).unwrap();
    assert_eq!(
        text,
        r#"{"timestamp":18446744073709551615,"metrics":[{"alias":18446744073709551615,"datatype":8,"value":18446744073709551615}],"seq":18446744073709551614}"#
    );
}

#[test]
fn signed_types_decode_signed_whether_sign_extended_or_not() {
    // Int8 -5: Tahu sign-extends to 32 bits, the seed's publisher wrote 251.
    assert_eq!(typed(INT8, IntValue(-5i32 as u32)), json!(-5));
    assert_eq!(typed(INT8, IntValue(251)), json!(-5));
    assert_eq!(typed(INT8, IntValue(127)), json!(127));
    assert_eq!(typed(INT8, IntValue(0x80)), json!(-128));
    assert_eq!(typed(INT16, IntValue(-300i32 as u32)), json!(-300));
    assert_eq!(typed(INT16, IntValue((-300i16) as u16 as u32)), json!(-300));
    assert_eq!(typed(INT16, IntValue(32767)), json!(32767));
    assert_eq!(typed(INT32, IntValue(-70_000i32 as u32)), json!(-70_000));
    assert_eq!(typed(INT32, IntValue(i32::MIN as u32)), json!(i32::MIN));
    assert_eq!(typed(INT32, LongValue(-70_000i64 as u64)), json!(-70_000));
    assert_eq!(typed(INT64, LongValue(-5i64 as u64)), json!(-5));
    assert_eq!(typed(INT64, LongValue(i64::MIN as u64)), json!(i64::MIN));
    assert_eq!(typed(INT64, IntValue(-5i32 as u32)), json!(-5));
}

#[test]
fn unsigned_types_decode_unsigned() {
    assert_eq!(typed(UINT8, IntValue(250)), json!(250));
    assert_eq!(typed(UINT16, IntValue(65_000)), json!(65_000));
    assert_eq!(
        typed(UINT32, IntValue(4_000_000_000)),
        json!(4_000_000_000u32)
    );
    // Tahu (Java) carries UInt32 in long_value.
    assert_eq!(
        typed(UINT32, LongValue(4_000_000_000)),
        json!(4_000_000_000u32)
    );
    assert_eq!(typed(UINT64, LongValue(u64::MAX)), json!(u64::MAX));
    assert_eq!(
        typed(DATETIME, LongValue(1_700_000_000_000)),
        json!(1_700_000_000_000u64)
    );
}

#[test]
fn scalar_types() {
    assert_eq!(typed(FLOAT, FloatValue(1.1)), json!(1.1));
    assert_eq!(
        serde_json::to_string(&typed(FLOAT, FloatValue(1.1))).unwrap(),
        "1.1"
    );
    assert_eq!(typed(FLOAT, FloatValue(-0.25)), json!(-0.25));
    assert_eq!(typed(FLOAT, FloatValue(f32::NAN)), Value::Null);
    assert_eq!(typed(DOUBLE, DoubleValue(f64::INFINITY)), Value::Null);
    assert_eq!(typed(DOUBLE, DoubleValue(0.1)), json!(0.1));
    assert_eq!(typed(BOOLEAN, BooleanValue(true)), json!(true));
    assert_eq!(typed(STRING, StringValue("héllo".into())), json!("héllo"));
    assert_eq!(
        typed(TEXT, StringValue("long text".into())),
        json!("long text")
    );
    assert_eq!(
        typed(
            UUID,
            StringValue("123e4567-e89b-12d3-a456-426614174000".into())
        ),
        json!("123e4567-e89b-12d3-a456-426614174000")
    );
    assert_eq!(
        typed(BYTES, BytesValue(b"hello".to_vec())),
        json!("aGVsbG8=")
    );
    assert_eq!(typed(FILE, BytesValue(vec![0xff, 0x00])), json!("/wA="));
    assert_eq!(typed(UNKNOWN, BytesValue(vec![1])), json!("AQ=="));
}

#[test]
fn alias_only_metrics_are_decoded_by_their_oneof() {
    let v = one_metric(Metric {
        alias: Some(3),
        value: Some(IntValue(0xFFFF_FFFB)),
        ..Default::default()
    });
    assert_eq!(v, json!({"alias": 3, "value": 4_294_967_291u32}));
    let v = one_metric(Metric {
        alias: Some(4),
        value: Some(BytesValue(vec![1, 2])),
        ..Default::default()
    });
    assert_eq!(v, json!({"alias": 4, "value": "AQI="}));
    let v = one_metric(Metric {
        alias: Some(5),
        value: Some(FloatValue(2.5)),
        ..Default::default()
    });
    assert_eq!(v, json!({"alias": 5, "value": 2.5}));
}

#[test]
fn mismatched_datatype_falls_back_to_the_oneof() {
    assert_eq!(typed(INT32, StringValue("x".into())), json!("x"));
    assert_eq!(typed(STRING, IntValue(7)), json!(7));
    assert_eq!(typed(INT8_ARRAY, IntValue(7)), json!(7));
}

#[test]
fn every_array_type_decodes_little_endian() {
    let bytes = |dt: u32, b: Vec<u8>| typed(dt, BytesValue(b));
    assert_eq!(
        bytes(INT8_ARRAY, vec![0xFB, 0x05, 0x80]),
        json!([-5, 5, -128])
    );
    assert_eq!(bytes(UINT8_ARRAY, vec![0xFB, 0x05]), json!([251, 5]));
    let le16: Vec<u8> = [-300i16, 2].iter().flat_map(|x| x.to_le_bytes()).collect();
    assert_eq!(bytes(INT16_ARRAY, le16.clone()), json!([-300, 2]));
    assert_eq!(bytes(UINT16_ARRAY, le16), json!([65_236, 2]));
    let le32: Vec<u8> = [-70_000i32, 9]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    assert_eq!(bytes(INT32_ARRAY, le32.clone()), json!([-70_000, 9]));
    assert_eq!(bytes(UINT32_ARRAY, le32), json!([4_294_897_296u32, 9]));
    let le64: Vec<u8> = [-5i64, i64::MAX]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    assert_eq!(bytes(INT64_ARRAY, le64.clone()), json!([-5, i64::MAX]));
    assert_eq!(
        bytes(UINT64_ARRAY, le64),
        json!([u64::MAX - 4, i64::MAX as u64])
    );
    let dates: Vec<u8> = [1_700_000_000_000u64, 0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    assert_eq!(
        bytes(DATETIME_ARRAY, dates),
        json!([1_700_000_000_000u64, 0])
    );
    let floats: Vec<u8> = [1.1f32, -2.5]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    assert_eq!(bytes(FLOAT_ARRAY, floats), json!([1.1, -2.5]));
    let doubles: Vec<u8> = [0.1f64, -1e300]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    assert_eq!(bytes(DOUBLE_ARRAY, doubles), json!([0.1, -1e300]));
    // The specification's own example: 12 values, 0x34 0xD0 after the count.
    assert_eq!(
        bytes(BOOLEAN_ARRAY, vec![0x0C, 0, 0, 0, 0x34, 0xD0]),
        json!([false, false, true, true, false, true, false, false, true, true, false, true])
    );
    assert_eq!(bytes(BOOLEAN_ARRAY, vec![0, 0, 0, 0]), json!([]));
    assert_eq!(
        bytes(STRING_ARRAY, b"ABC\0hello\0\0".to_vec()),
        json!(["ABC", "hello", ""])
    );
    assert_eq!(
        bytes(STRING_ARRAY, "Grüße\0".as_bytes().to_vec()),
        json!(["Grüße"])
    );
    assert_eq!(bytes(STRING_ARRAY, vec![]), json!([]));
    assert_eq!(bytes(INT32_ARRAY, vec![]), json!([]));
}

#[test]
fn malformed_arrays_are_decode_errors_naming_the_metric() {
    let bad = |dt: u32, b: Vec<u8>| {
        err_of(Metric {
            name: Some("m".into()),
            datatype: Some(dt),
            value: Some(BytesValue(b)),
            ..Default::default()
        })
    };
    assert_eq!(
        bad(INT16_ARRAY, vec![1, 2, 3]),
        "metric \"m\": Int16Array of 3 bytes is not a whole number of 2-byte values"
    );
    assert!(bad(DOUBLE_ARRAY, vec![0; 9]).contains("DoubleArray of 9 bytes"));
    assert!(bad(BOOLEAN_ARRAY, vec![1, 0]).contains("shorter than its 4-byte count"));
    assert!(bad(BOOLEAN_ARRAY, vec![9, 0, 0, 0, 0xFF]).contains("needs 2 bytes of bits, got 1"));
    assert!(bad(STRING_ARRAY, b"abc".to_vec()).contains("NUL terminator"));
    assert!(bad(STRING_ARRAY, b"\xff\0".to_vec()).contains("invalid UTF-8"));
    let by_alias = err_of(Metric {
        alias: Some(9),
        datatype: Some(INT32_ARRAY),
        value: Some(BytesValue(vec![1])),
        ..Default::default()
    });
    assert!(
        by_alias.starts_with("metric alias 9: Int32Array"),
        "{by_alias}"
    );
}

#[test]
fn datasets_decode_rows_by_column_type() {
    use data_set::data_set_value::Value as D;
    let cell = |v: D| data_set::DataSetValue { value: Some(v) };
    let ds = DataSet {
        num_of_columns: Some(3),
        columns: vec!["a".into(), "b".into(), "c".into()],
        types: vec![INT8, STRING, FLOAT],
        rows: vec![
            data_set::Row {
                elements: vec![
                    cell(D::IntValue(-5i32 as u32)),
                    cell(D::StringValue("x".into())),
                    cell(D::FloatValue(1.5)),
                ],
            },
            data_set::Row {
                elements: vec![
                    cell(D::IntValue(3)),
                    data_set::DataSetValue { value: None },
                    cell(D::FloatValue(0.5)),
                ],
            },
        ],
    };
    let v = typed(DATASET, DatasetValue(ds));
    assert_eq!(
        serde_json::to_string(&v).unwrap(),
        r#"{"num_of_columns":3,"columns":["a","b","c"],"types":[1,12,9],"rows":[{"elements":[{"value":-5},{"value":"x"},{"value":1.5}]},{"elements":[{"value":3},{},{"value":0.5}]}]}"#
    );
}

#[test]
fn templates_recurse_into_metrics_and_parameters() {
    use template::parameter::Value as P;
    let t = Template {
        version: Some("1.0".into()),
        metrics: vec![Metric {
            name: Some("inner".into()),
            datatype: Some(INT16),
            value: Some(IntValue((-2i16) as u16 as u32)),
            ..Default::default()
        }],
        parameters: vec![
            template::Parameter {
                name: Some("p".into()),
                r#type: Some(INT32),
                value: Some(P::IntValue(-1i32 as u32)),
            },
            template::Parameter {
                name: Some("s".into()),
                r#type: Some(STRING),
                value: Some(P::StringValue("v".into())),
            },
        ],
        template_ref: Some("Motor".into()),
        is_definition: Some(false),
    };
    let v = typed(TEMPLATE, TemplateValue(t));
    assert_eq!(
        serde_json::to_string(&v).unwrap(),
        r#"{"version":"1.0","metrics":[{"name":"inner","datatype":2,"value":-2}],"parameters":[{"name":"p","type":3,"value":-1},{"name":"s","type":12,"value":"v"}],"template_ref":"Motor","is_definition":false}"#
    );
}

#[test]
fn property_sets_and_lists_and_metadata() {
    use property_value::Value as PV;
    let inner = PropertySet {
        keys: vec!["k".into()],
        values: vec![PropertyValue {
            r#type: Some(INT8),
            is_null: None,
            value: Some(PV::IntValue(0xFE)),
        }],
    };
    let props = PropertySet {
        keys: vec![
            "engUnit".into(),
            "nested".into(),
            "list".into(),
            "none".into(),
        ],
        values: vec![
            PropertyValue {
                r#type: Some(STRING),
                is_null: Some(false),
                value: Some(PV::StringValue("°C".into())),
            },
            PropertyValue {
                r#type: Some(PROPERTY_SET),
                is_null: None,
                value: Some(PV::PropertysetValue(inner.clone())),
            },
            PropertyValue {
                r#type: Some(PROPERTY_SET_LIST),
                is_null: None,
                value: Some(PV::PropertysetsValue(PropertySetList {
                    propertyset: vec![inner.clone(), PropertySet::default()],
                })),
            },
            PropertyValue {
                r#type: Some(DOUBLE),
                is_null: Some(true),
                value: None,
            },
        ],
    };
    let v = one_metric(Metric {
        name: Some("file".into()),
        datatype: Some(FILE),
        metadata: Some(MetaData {
            is_multi_part: Some(false),
            content_type: Some("text/plain".into()),
            size: Some(5_000_000_000),
            seq: Some(1),
            file_name: Some("a.txt".into()),
            file_type: Some("txt".into()),
            md5: Some("abc".into()),
            description: Some("d".into()),
        }),
        properties: Some(props),
        value: Some(BytesValue(b"hi".to_vec())),
        ..Default::default()
    });
    let inner_json = json!({"keys": ["k"], "values": [{"type": 1, "value": -2}]});
    assert_eq!(
        v,
        json!({
            "name": "file",
            "datatype": 18,
            "metadata": {
                "is_multi_part": false, "content_type": "text/plain", "size": 5_000_000_000u64,
                "seq": 1, "file_name": "a.txt", "file_type": "txt", "md5": "abc",
                "description": "d"
            },
            "properties": {
                "keys": ["engUnit", "nested", "list", "none"],
                "values": [
                    {"type": 12, "is_null": false, "value": "°C"},
                    {"type": 20, "value": inner_json},
                    {"type": 21, "value": {"propertyset": [inner_json, {}]}},
                    {"type": 10, "is_null": true}
                ]
            },
            "value": "aGk="
        })
    );
    // Order of keys follows the .proto.
    let text = serde_json::to_string(&v).unwrap();
    let pos = |k: &str| text.find(&format!("\"{k}\"")).unwrap();
    assert!(pos("name") < pos("datatype") && pos("datatype") < pos("metadata"));
    assert!(pos("metadata") < pos("properties") && pos("properties") < pos("value"));
}

#[test]
fn extension_values_become_empty_objects() {
    let v = one_metric(Metric {
        name: Some("x".into()),
        value: Some(metric::Value::ExtensionValue(
            metric::MetricValueExtension {},
        )),
        ..Default::default()
    });
    assert_eq!(v, json!({"name": "x", "value": {}}));
}

#[test]
fn state_messages_are_json_not_protobuf() {
    let v = decode(
        "spBv1.0/STATE/scada1",
        br#"{"online": true, "timestamp": 1700000000000}"#,
    )
    .unwrap();
    assert_eq!(
        v,
        json!({"online": true, "timestamp": 1_700_000_000_000u64})
    );
}

/// `p` on `topic` through the transform with `births`; the record's JSON.
fn bridged(
    config: &uns_default::Config,
    births: &mut uns_default::Births,
    topic: &str,
    p: Payload,
) -> Value {
    let bytes = p.encode_to_vec();
    let m = uns_default::Message {
        topic,
        payload: &bytes,
        qos: 0,
        retain: false,
        user_properties: &[],
        content_type: None,
        received_at_ms: 1,
    };
    let r = uns_default::transform_with(config, Some(births), &m)
        .unwrap()
        .remove(0);
    serde_json::from_slice(r.value.as_deref().unwrap()).unwrap()
}

/// A DATA metric without a datatype (as Sparkplug 3.0 would have it) keeps
/// its sign when the BIRTH of its node or device declared one: by alias,
/// else by name. An NBIRTH starts the node over, its devices included; a
/// message never gains a `datatype` key it did not carry.
#[test]
fn data_metrics_take_their_sign_from_the_birth() {
    use uns_default::{Births, Config};
    let plain = Config::default();
    let filtering = Config::from_json(r##"{"ignored_attributes": {"spBv1.0/#": "seq"}}"##).unwrap();
    let mut births = Births::default();
    let declare = |name: &str, alias: u64, dt: u32, v: metric::Value| Metric {
        name: Some(name.to_owned()),
        alias: Some(alias),
        datatype: Some(dt),
        value: Some(v),
        ..Default::default()
    };
    // One DATA metric without a datatype, by alias or name; its JSON.
    let data = |births: &mut Births, device: &str, id: (Option<u64>, Option<&str>), v| {
        let p = Payload {
            metrics: vec![Metric {
                alias: id.0,
                name: id.1.map(str::to_owned),
                value: Some(v),
                ..Default::default()
            }],
            ..Default::default()
        };
        let json = bridged(&plain, births, &format!("spBv1.0/g/DDATA/e/{device}"), p);
        assert!(json["metrics"][0].get("datatype").is_none(), "{json}");
        json["metrics"][0]["value"].clone()
    };
    let minus_5 = IntValue(0xFFFF_FFFB);

    // Before any BIRTH: the wire's unsigned value, as without the table.
    assert_eq!(
        data(&mut births, "d", (Some(3), None), minus_5.clone()),
        json!(4_294_967_291u32)
    );

    let dbirth = Payload {
        metrics: vec![
            declare("temp", 3, INT32, IntValue(0)),
            declare("level", 4, INT8, IntValue(0)),
            declare("count", 5, UINT32, IntValue(0)),
            declare("total", 6, INT64, LongValue(0)),
        ],
        ..Default::default()
    };
    bridged(&plain, &mut births, "spBv1.0/g/DBIRTH/e/d", dbirth);
    assert_eq!(births.len(), 8);
    assert_eq!(
        data(&mut births, "d", (Some(3), None), minus_5.clone()),
        json!(-5)
    );
    assert_eq!(
        data(&mut births, "d", (None, Some("level")), IntValue(251)),
        json!(-5)
    );
    assert_eq!(
        data(&mut births, "d", (Some(5), None), minus_5.clone()),
        json!(4_294_967_291u32)
    );
    assert_eq!(
        data(&mut births, "d", (Some(6), None), LongValue(u64::MAX)),
        json!(-1)
    );
    // Another device did not declare alias 3.
    assert_eq!(
        data(&mut births, "d2", (Some(3), None), minus_5.clone()),
        json!(4_294_967_291u32)
    );
    // A matching rule filters the same text.
    let p = Payload {
        metrics: vec![Metric {
            alias: Some(3),
            value: Some(minus_5.clone()),
            ..Default::default()
        }],
        ..Default::default()
    };
    let filtered = bridged(&filtering, &mut births, "spBv1.0/g/DDATA/e/d", p);
    assert_eq!(filtered["metrics"][0]["value"], json!(-5));

    // The node is born again: its devices must be born again too.
    let nbirth = Payload {
        seq: Some(0),
        ..Default::default()
    };
    bridged(&plain, &mut births, "spBv1.0/g/NBIRTH/e", nbirth);
    assert!(births.is_empty());
    assert_eq!(
        data(&mut births, "d", (Some(3), None), minus_5),
        json!(4_294_967_291u32)
    );
}

/// A template instance's members in DATA leave their datatypes out too
/// (Sparkplug 3.0): they are read as the instance in the BIRTH declared
/// them, by member name, nested templates within, on both output paths.
#[test]
fn template_members_take_their_sign_from_the_birth() {
    use uns_default::{Births, Config};
    let member = |name: &str, datatype: Option<u32>, value: metric::Value| Metric {
        name: Some(name.to_owned()),
        datatype,
        value: Some(value),
        ..Default::default()
    };
    let template = |metrics: Vec<Metric>| {
        metric::Value::TemplateValue(Template {
            template_ref: Some("Motor".into()),
            metrics,
            ..Default::default()
        })
    };
    let birth = Payload {
        metrics: vec![Metric {
            name: Some("motor".into()),
            alias: Some(5),
            datatype: Some(TEMPLATE),
            value: Some(template(vec![
                member("rpm", Some(INT32), metric::Value::IntValue(0)),
                member(
                    "gear",
                    Some(TEMPLATE),
                    metric::Value::TemplateValue(Template {
                        metrics: vec![member("t", Some(INT16), metric::Value::IntValue(0))],
                        ..Default::default()
                    }),
                ),
            ])),
            ..Default::default()
        }],
        ..Default::default()
    };
    let data = Payload {
        metrics: vec![Metric {
            alias: Some(5),
            value: Some(template(vec![
                member("rpm", None, metric::Value::IntValue(-5i32 as u32)),
                member(
                    "gear",
                    None,
                    metric::Value::TemplateValue(Template {
                        metrics: vec![member("t", None, metric::Value::IntValue(0xFFFD))],
                        ..Default::default()
                    }),
                ),
                member("unknown", None, metric::Value::IntValue(-5i32 as u32)),
            ])),
            ..Default::default()
        }],
        ..Default::default()
    };
    let filtering = Config::from_json(r##"{"ignored_attributes": {"spBv1.0/#": "seq"}}"##).unwrap();
    for config in [Config::default(), filtering] {
        let mut births = Births::default();
        // Before the BIRTH: the wire's unsigned values.
        let json = bridged(&config, &mut births, "spBv1.0/g/NDATA/e", data.clone());
        assert_eq!(
            json["metrics"][0]["value"]["metrics"][0]["value"],
            4294967291u64
        );
        bridged(&config, &mut births, "spBv1.0/g/NBIRTH/e", birth.clone());
        let json = bridged(&config, &mut births, "spBv1.0/g/NDATA/e", data.clone());
        let members = &json["metrics"][0]["value"]["metrics"];
        assert_eq!(members[0]["value"], -5, "{json}");
        assert_eq!(members[1]["value"]["metrics"][0]["value"], -3, "{json}");
        // A member the BIRTH did not declare keeps the wire's value.
        assert_eq!(members[2]["value"], 4294967291u64, "{json}");
        assert!(members[0].get("datatype").is_none(), "{json}");
        assert!(json["metrics"][0].get("datatype").is_none(), "{json}");
    }
}
