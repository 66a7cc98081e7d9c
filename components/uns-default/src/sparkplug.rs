//! Sparkplug B payloads (Eclipse Sparkplug 3.0.0) and their JSON form.
//!
//! The structs mirror `proto/sparkplug_b.proto` field for field; they are
//! written by hand with `prost` derives so the build needs no `protoc`.
//! Extensions (`extensions N to max`) have no Rust counterpart: prost skips
//! their fields like any unknown field.
//!
//! JSON form: keys are the .proto field names, absent fields are absent
//! (empty repeated fields too, as on the wire), 64-bit integers are JSON
//! numbers, and each value `oneof` becomes one `value` key whose JSON is
//! chosen by the datatype next to it:
//! - Int8/Int16/Int32/Int64 are signed: the wire's unsigned two's complement
//!   is cut to the type's width and read as signed, so -5 stays -5 whether the
//!   publisher sign-extended it or not;
//! - UInt8..UInt64 and DateTime are unsigned numbers;
//! - Float is printed with the shortest digits that read back as the same
//!   `f32` (1.1, not 1.100000023841858); NaN and infinities, which JSON cannot
//!   hold, become `null`;
//! - Bytes and File (and the payload `body`) are standard base64 with padding;
//! - the array types are read from `bytes_value` as the specification lays
//!   them out (little-endian; BooleanArray: 4-byte count, then bits most
//!   significant first; StringArray: NUL-terminated UTF-8) into JSON arrays;
//! - DataSet, Template, PropertySet and PropertySetList recurse by these rules;
//!   an extension value, which this component cannot interpret, becomes `{}`.
//!
//! Without a datatype (a DATA metric that carries only its alias) or when
//! datatype and `oneof` disagree, the `oneof` variant decides: integers are
//! unsigned, bytes are base64.

use base64::Engine as _;
use prost::Message as _;
use serde::ser::{self, Serialize, SerializeMap, Serializer};
use serde_json::Value;

use crate::births::{Declared, Members};
use crate::error::TransformError;

/// Sparkplug 3.0 `DataType` numbers.
pub mod datatype {
    pub const UNKNOWN: u32 = 0;
    pub const INT8: u32 = 1;
    pub const INT16: u32 = 2;
    pub const INT32: u32 = 3;
    pub const INT64: u32 = 4;
    pub const UINT8: u32 = 5;
    pub const UINT16: u32 = 6;
    pub const UINT32: u32 = 7;
    pub const UINT64: u32 = 8;
    pub const FLOAT: u32 = 9;
    pub const DOUBLE: u32 = 10;
    pub const BOOLEAN: u32 = 11;
    pub const STRING: u32 = 12;
    pub const DATETIME: u32 = 13;
    pub const TEXT: u32 = 14;
    pub const UUID: u32 = 15;
    pub const DATASET: u32 = 16;
    pub const BYTES: u32 = 17;
    pub const FILE: u32 = 18;
    pub const TEMPLATE: u32 = 19;
    pub const PROPERTY_SET: u32 = 20;
    pub const PROPERTY_SET_LIST: u32 = 21;
    pub const INT8_ARRAY: u32 = 22;
    pub const INT16_ARRAY: u32 = 23;
    pub const INT32_ARRAY: u32 = 24;
    pub const INT64_ARRAY: u32 = 25;
    pub const UINT8_ARRAY: u32 = 26;
    pub const UINT16_ARRAY: u32 = 27;
    pub const UINT32_ARRAY: u32 = 28;
    pub const UINT64_ARRAY: u32 = 29;
    pub const FLOAT_ARRAY: u32 = 30;
    pub const DOUBLE_ARRAY: u32 = 31;
    pub const BOOLEAN_ARRAY: u32 = 32;
    pub const STRING_ARRAY: u32 = 33;
    pub const DATETIME_ARRAY: u32 = 34;
}

/// `Payload`, the top-level message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    #[prost(message, repeated, tag = "2")]
    pub metrics: Vec<payload::Metric>,
    #[prost(uint64, optional, tag = "3")]
    pub seq: Option<u64>,
    #[prost(string, optional, tag = "4")]
    pub uuid: Option<String>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub body: Option<Vec<u8>>,
}

/// The messages nested in `Payload`.
pub mod payload {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Template {
        #[prost(string, optional, tag = "1")]
        pub version: Option<String>,
        #[prost(message, repeated, tag = "2")]
        pub metrics: Vec<Metric>,
        #[prost(message, repeated, tag = "3")]
        pub parameters: Vec<template::Parameter>,
        #[prost(string, optional, tag = "4")]
        pub template_ref: Option<String>,
        #[prost(bool, optional, tag = "5")]
        pub is_definition: Option<bool>,
    }

    pub mod template {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Parameter {
            #[prost(string, optional, tag = "1")]
            pub name: Option<String>,
            #[prost(uint32, optional, tag = "2")]
            pub r#type: Option<u32>,
            #[prost(oneof = "parameter::Value", tags = "3, 4, 5, 6, 7, 8, 9")]
            pub value: Option<parameter::Value>,
        }

        pub mod parameter {
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum Value {
                #[prost(uint32, tag = "3")]
                IntValue(u32),
                #[prost(uint64, tag = "4")]
                LongValue(u64),
                #[prost(float, tag = "5")]
                FloatValue(f32),
                #[prost(double, tag = "6")]
                DoubleValue(f64),
                #[prost(bool, tag = "7")]
                BooleanValue(bool),
                #[prost(string, tag = "8")]
                StringValue(String),
                #[prost(message, tag = "9")]
                ExtensionValue(ParameterValueExtension),
            }

            #[derive(Clone, Copy, PartialEq, prost::Message)]
            pub struct ParameterValueExtension {}
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct DataSet {
        #[prost(uint64, optional, tag = "1")]
        pub num_of_columns: Option<u64>,
        #[prost(string, repeated, tag = "2")]
        pub columns: Vec<String>,
        #[prost(uint32, repeated, packed = "false", tag = "3")]
        pub types: Vec<u32>,
        #[prost(message, repeated, tag = "4")]
        pub rows: Vec<data_set::Row>,
    }

    pub mod data_set {
        #[derive(Clone, PartialEq, prost::Message)]
        pub struct DataSetValue {
            #[prost(oneof = "data_set_value::Value", tags = "1, 2, 3, 4, 5, 6, 7")]
            pub value: Option<data_set_value::Value>,
        }

        pub mod data_set_value {
            #[derive(Clone, PartialEq, prost::Oneof)]
            pub enum Value {
                #[prost(uint32, tag = "1")]
                IntValue(u32),
                #[prost(uint64, tag = "2")]
                LongValue(u64),
                #[prost(float, tag = "3")]
                FloatValue(f32),
                #[prost(double, tag = "4")]
                DoubleValue(f64),
                #[prost(bool, tag = "5")]
                BooleanValue(bool),
                #[prost(string, tag = "6")]
                StringValue(String),
                #[prost(message, tag = "7")]
                ExtensionValue(DataSetValueExtension),
            }

            #[derive(Clone, Copy, PartialEq, prost::Message)]
            pub struct DataSetValueExtension {}
        }

        #[derive(Clone, PartialEq, prost::Message)]
        pub struct Row {
            #[prost(message, repeated, tag = "1")]
            pub elements: Vec<DataSetValue>,
        }
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PropertyValue {
        #[prost(uint32, optional, tag = "1")]
        pub r#type: Option<u32>,
        #[prost(bool, optional, tag = "2")]
        pub is_null: Option<bool>,
        #[prost(oneof = "property_value::Value", tags = "3, 4, 5, 6, 7, 8, 9, 10, 11")]
        pub value: Option<property_value::Value>,
    }

    pub mod property_value {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(uint32, tag = "3")]
            IntValue(u32),
            #[prost(uint64, tag = "4")]
            LongValue(u64),
            #[prost(float, tag = "5")]
            FloatValue(f32),
            #[prost(double, tag = "6")]
            DoubleValue(f64),
            #[prost(bool, tag = "7")]
            BooleanValue(bool),
            #[prost(string, tag = "8")]
            StringValue(String),
            #[prost(message, tag = "9")]
            PropertysetValue(super::PropertySet),
            #[prost(message, tag = "10")]
            PropertysetsValue(super::PropertySetList),
            #[prost(message, tag = "11")]
            ExtensionValue(PropertyValueExtension),
        }

        #[derive(Clone, Copy, PartialEq, prost::Message)]
        pub struct PropertyValueExtension {}
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PropertySet {
        #[prost(string, repeated, tag = "1")]
        pub keys: Vec<String>,
        #[prost(message, repeated, tag = "2")]
        pub values: Vec<PropertyValue>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PropertySetList {
        #[prost(message, repeated, tag = "1")]
        pub propertyset: Vec<PropertySet>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetaData {
        #[prost(bool, optional, tag = "1")]
        pub is_multi_part: Option<bool>,
        #[prost(string, optional, tag = "2")]
        pub content_type: Option<String>,
        #[prost(uint64, optional, tag = "3")]
        pub size: Option<u64>,
        #[prost(uint64, optional, tag = "4")]
        pub seq: Option<u64>,
        #[prost(string, optional, tag = "5")]
        pub file_name: Option<String>,
        #[prost(string, optional, tag = "6")]
        pub file_type: Option<String>,
        #[prost(string, optional, tag = "7")]
        pub md5: Option<String>,
        #[prost(string, optional, tag = "8")]
        pub description: Option<String>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metric {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
        #[prost(uint64, optional, tag = "2")]
        pub alias: Option<u64>,
        #[prost(uint64, optional, tag = "3")]
        pub timestamp: Option<u64>,
        #[prost(uint32, optional, tag = "4")]
        pub datatype: Option<u32>,
        #[prost(bool, optional, tag = "5")]
        pub is_historical: Option<bool>,
        #[prost(bool, optional, tag = "6")]
        pub is_transient: Option<bool>,
        #[prost(bool, optional, tag = "7")]
        pub is_null: Option<bool>,
        #[prost(message, optional, tag = "8")]
        pub metadata: Option<MetaData>,
        #[prost(message, optional, tag = "9")]
        pub properties: Option<PropertySet>,
        #[prost(
            oneof = "metric::Value",
            tags = "10, 11, 12, 13, 14, 15, 16, 17, 18, 19"
        )]
        pub value: Option<metric::Value>,
    }

    pub mod metric {
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(uint32, tag = "10")]
            IntValue(u32),
            #[prost(uint64, tag = "11")]
            LongValue(u64),
            #[prost(float, tag = "12")]
            FloatValue(f32),
            #[prost(double, tag = "13")]
            DoubleValue(f64),
            #[prost(bool, tag = "14")]
            BooleanValue(bool),
            #[prost(string, tag = "15")]
            StringValue(String),
            #[prost(bytes = "vec", tag = "16")]
            BytesValue(Vec<u8>),
            #[prost(message, tag = "17")]
            DatasetValue(super::DataSet),
            #[prost(message, tag = "18")]
            TemplateValue(super::Template),
            #[prost(message, tag = "19")]
            ExtensionValue(MetricValueExtension),
        }

        #[derive(Clone, Copy, PartialEq, prost::Message)]
        pub struct MetricValueExtension {}
    }
}

use payload::{data_set, metric, property_value, template, DataSet, MetaData, Metric};
use payload::{PropertySet, PropertySetList, PropertyValue, Template};

mod budget;

/// Decodes a Sparkplug B protobuf payload, refusing one that would take
/// more memory decoded than one message may ([`budget`]).
pub fn decode(bytes: &[u8]) -> Result<Payload, TransformError> {
    budget::check(bytes).map_err(TransformError::decode)?;
    Payload::decode(bytes)
        .map_err(|e| TransformError::decode(format!("payload is not a Sparkplug B protobuf: {e}")))
}

/// The payload as compact JSON text, written straight from the protobuf
/// structs (no intermediate `Value`, which is the hot path).
pub fn to_json_bytes(p: &Payload) -> Result<Vec<u8>, TransformError> {
    to_json_bytes_with(p, &[])
}

/// [`to_json_bytes`], reading top-level metric `i` that carries no datatype
/// as `declared[i]` (what its BIRTH said, see [`crate::births`]); the
/// output still has no `datatype` key where the message had none. JSON
/// that would take more than one message may is a decode error
/// ([`budget::MAX_JSON_BYTES`]).
pub fn to_json_bytes_with(
    p: &Payload,
    declared: &[Option<Declared<'_>>],
) -> Result<Vec<u8>, TransformError> {
    budget::write_json(64 + 48 * p.metrics.len(), &WithDeclared(p, declared))
        .map_err(TransformError::decode)
}

/// The payload as a JSON `Value`, for callers that want a tree to inspect
/// ([`crate::decode::decode`]); the transform itself filters the text
/// [`to_json_bytes_with`] writes. Exactly the JSON [`to_json_bytes`] writes,
/// but held to [`budget::MAX_JSON_BYTES`] only where a value says its size
/// up front (a BooleanArray): the component does not build trees.
pub fn to_value(p: &Payload) -> Result<Value, TransformError> {
    serde_json::to_value(WithDeclared(p, &[])).map_err(|e| TransformError::decode(e.to_string()))
}

/// A payload in its JSON form, its top-level metrics read with `.1`.
struct WithDeclared<'a>(&'a Payload, &'a [Option<Declared<'a>>]);

/// A metric in its JSON form, read as `.1` says when it carries no datatype
/// (and its template members as `.1` says of them).
struct MetricAs<'a>(&'a Metric, Option<Declared<'a>>);

struct MetricsAs<'a>(&'a [Metric], &'a [Option<Declared<'a>>]);

impl Serialize for MetricsAs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let declared = |i: usize| self.1.get(i).copied().flatten();
        s.collect_seq(
            self.0
                .iter()
                .enumerate()
                .map(|(i, m)| MetricAs(m, declared(i))),
        )
    }
}

/// The payload's top-level integer attribute `name`, as the JSON form would
/// have it (`timestamp` or `seq`), for the record timestamp.
pub fn top_level_integer(p: &Payload, name: &str) -> Option<u64> {
    match name {
        "timestamp" => p.timestamp,
        "seq" => p.seq,
        _ => None,
    }
}

/// A representative NDATA, encoded: ten metrics of mixed datatypes (two
/// booleans, a double, a float, an `Int8`, an `Int32` and an `Int64`, a
/// string, a datetime and an `Int16Array`), every timestamp `timestamp_ms`. The transform
/// bench and the load bench both measure this one message, so their
/// figures describe the same payload.
pub fn sample_ndata(timestamp_ms: u64, seq: u64, count: u64) -> Vec<u8> {
    use metric::Value::*;
    let m = |name: &str, dt: u32, value: metric::Value| Metric {
        name: Some(name.to_owned()),
        timestamp: Some(timestamp_ms),
        datatype: Some(dt),
        value: Some(value),
        ..Default::default()
    };
    let samples = [1i16, -2, 300, 4].iter().flat_map(|x| x.to_le_bytes());
    Payload {
        timestamp: Some(timestamp_ms),
        seq: Some(seq),
        metrics: vec![
            m(
                "Node Control/Rebirth",
                datatype::BOOLEAN,
                BooleanValue(false),
            ),
            m("line/speed", datatype::DOUBLE, DoubleValue(12.75)),
            m("line/temperature", datatype::FLOAT, FloatValue(21.5)),
            m("line/count", datatype::INT64, LongValue(count)),
            m("line/state", datatype::INT32, IntValue(3)),
            m("line/offset", datatype::INT8, IntValue((-5i8) as u8 as u32)),
            m(
                "line/status",
                datatype::STRING,
                StringValue("RUNNING".into()),
            ),
            m("line/alarm", datatype::BOOLEAN, BooleanValue(true)),
            m(
                "line/last_change",
                datatype::DATETIME,
                LongValue(1_699_999_999_000),
            ),
            m(
                "line/samples",
                datatype::INT16_ARRAY,
                BytesValue(samples.collect()),
            ),
        ],
        ..Default::default()
    }
    .encode_to_vec()
}

/// Serialises the wrapped protobuf message in its JSON form.
struct Json<'a, T>(&'a T);

/// A `oneof` value of any of the four Sparkplug messages that carry one.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Int(u32),
    Long(u64),
    Float(f32),
    Double(f64),
    Bool(bool),
    Str(&'a str),
    Bytes(&'a [u8]),
    DataSet(&'a DataSet),
    Template(&'a Template),
    PropertySet(&'a PropertySet),
    PropertySets(&'a PropertySetList),
    Extension,
}

/// Where a value sits, so an error can say which metric or column is bad.
#[derive(Clone, Copy)]
enum Origin<'a> {
    Metric(Option<&'a str>, Option<u64>),
    Column(usize),
    Other,
}

/// A `oneof` value with the datatype that says how to read it.
struct Typed<'a> {
    datatype: Option<u32>,
    raw: Raw<'a>,
    origin: Origin<'a>,
    /// For a template instance: what its BIRTH declared of its members.
    members: Option<&'a Members>,
}

fn opt<M: SerializeMap, T: Serialize>(m: &mut M, key: &str, v: &Option<T>) -> Result<(), M::Error> {
    match v {
        Some(v) => m.serialize_entry(key, v),
        None => Ok(()),
    }
}

fn many<M: SerializeMap, T: Serialize>(m: &mut M, key: &str, v: &[T]) -> Result<(), M::Error> {
    if v.is_empty() {
        Ok(())
    } else {
        m.serialize_entry(key, v)
    }
}

/// A slice of messages, each in its JSON form.
struct List<'a, T>(&'a [T]);

impl<'a, T> Serialize for List<'a, T>
where
    Json<'a, T>: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(Json))
    }
}

fn many_json<'a, M: SerializeMap, T>(m: &mut M, key: &str, v: &'a [T]) -> Result<(), M::Error>
where
    Json<'a, T>: Serialize,
{
    if v.is_empty() {
        Ok(())
    } else {
        m.serialize_entry(key, &List(v))
    }
}

struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

impl Serialize for WithDeclared<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut m = s.serialize_map(None)?;
        opt(&mut m, "timestamp", &p.timestamp)?;
        if !p.metrics.is_empty() {
            m.serialize_entry("metrics", &MetricsAs(&p.metrics, self.1))?;
        }
        opt(&mut m, "seq", &p.seq)?;
        opt(&mut m, "uuid", &p.uuid)?;
        if let Some(body) = &p.body {
            m.serialize_entry("body", &Base64(body))?;
        }
        m.end()
    }
}

impl Serialize for Json<'_, Metric> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        MetricAs(self.0, None).serialize(s)
    }
}

impl Serialize for MetricAs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = self.0;
        let mut m = s.serialize_map(None)?;
        opt(&mut m, "name", &x.name)?;
        opt(&mut m, "alias", &x.alias)?;
        opt(&mut m, "timestamp", &x.timestamp)?;
        opt(&mut m, "datatype", &x.datatype)?;
        opt(&mut m, "is_historical", &x.is_historical)?;
        opt(&mut m, "is_transient", &x.is_transient)?;
        opt(&mut m, "is_null", &x.is_null)?;
        if let Some(md) = &x.metadata {
            m.serialize_entry("metadata", &Json(md))?;
        }
        if let Some(props) = &x.properties {
            m.serialize_entry("properties", &Json(props))?;
        }
        if let Some(v) = &x.value {
            let raw = match v {
                metric::Value::IntValue(v) => Raw::Int(*v),
                metric::Value::LongValue(v) => Raw::Long(*v),
                metric::Value::FloatValue(v) => Raw::Float(*v),
                metric::Value::DoubleValue(v) => Raw::Double(*v),
                metric::Value::BooleanValue(v) => Raw::Bool(*v),
                metric::Value::StringValue(v) => Raw::Str(v),
                metric::Value::BytesValue(v) => Raw::Bytes(v),
                metric::Value::DatasetValue(v) => Raw::DataSet(v),
                metric::Value::TemplateValue(v) => Raw::Template(v),
                metric::Value::ExtensionValue(_) => Raw::Extension,
            };
            let origin = Origin::Metric(x.name.as_deref(), x.alias);
            m.serialize_entry(
                "value",
                &Typed {
                    datatype: x.datatype.or(self.1.map(|d| d.datatype)),
                    raw,
                    origin,
                    members: self.1.and_then(|d| d.members),
                },
            )?;
        }
        m.end()
    }
}

impl Serialize for Json<'_, MetaData> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = self.0;
        let mut m = s.serialize_map(None)?;
        opt(&mut m, "is_multi_part", &x.is_multi_part)?;
        opt(&mut m, "content_type", &x.content_type)?;
        opt(&mut m, "size", &x.size)?;
        opt(&mut m, "seq", &x.seq)?;
        opt(&mut m, "file_name", &x.file_name)?;
        opt(&mut m, "file_type", &x.file_type)?;
        opt(&mut m, "md5", &x.md5)?;
        opt(&mut m, "description", &x.description)?;
        m.end()
    }
}

impl Serialize for Json<'_, DataSet> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = self.0;
        let mut m = s.serialize_map(None)?;
        opt(&mut m, "num_of_columns", &x.num_of_columns)?;
        many(&mut m, "columns", &x.columns)?;
        many(&mut m, "types", &x.types)?;
        if !x.rows.is_empty() {
            let rows = Rows {
                rows: &x.rows,
                types: &x.types,
            };
            m.serialize_entry("rows", &rows)?;
        }
        m.end()
    }
}

/// Dataset rows: each cell is read by its column's type.
struct Rows<'a> {
    rows: &'a [data_set::Row],
    types: &'a [u32],
}

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.rows.iter().map(|row| Row {
            row,
            types: self.types,
        }))
    }
}

struct Row<'a> {
    row: &'a data_set::Row,
    types: &'a [u32],
}

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if !self.row.elements.is_empty() {
            m.serialize_entry("elements", &Cells(self))?;
        }
        m.end()
    }
}

struct Cells<'a, 'b>(&'b Row<'a>);

impl Serialize for Cells<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use data_set::data_set_value::Value as V;
        let types = self.0.types;
        s.collect_seq(
            self.0
                .row
                .elements
                .iter()
                .enumerate()
                .map(|(column, cell)| {
                    let raw = cell.value.as_ref().map(|v| match v {
                        V::IntValue(v) => Raw::Int(*v),
                        V::LongValue(v) => Raw::Long(*v),
                        V::FloatValue(v) => Raw::Float(*v),
                        V::DoubleValue(v) => Raw::Double(*v),
                        V::BooleanValue(v) => Raw::Bool(*v),
                        V::StringValue(v) => Raw::Str(v),
                        V::ExtensionValue(_) => Raw::Extension,
                    });
                    ValueOnly(raw.map(|raw| Typed {
                        datatype: types.get(column).copied(),
                        raw,
                        origin: Origin::Column(column),
                        members: None,
                    }))
                }),
        )
    }
}

/// `{"value": ...}`, or `{}` when the `oneof` is unset.
struct ValueOnly<'a>(Option<Typed<'a>>);

impl Serialize for ValueOnly<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        if let Some(v) = &self.0 {
            m.serialize_entry("value", v)?;
        }
        m.end()
    }
}

impl Serialize for Json<'_, Template> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TemplateAs(self.0, None).serialize(s)
    }
}

/// A template in its JSON form, its members that carry no datatype read as
/// `.1` (its BIRTH) declared them.
struct TemplateAs<'a>(&'a Template, Option<&'a Members>);

/// A template's members, each with what its BIRTH declared.
struct MembersAs<'a>(&'a [Metric], Option<&'a Members>);

impl Serialize for MembersAs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let declared = |m: &Metric| self.1?.get(m.name.as_deref()?);
        s.collect_seq(self.0.iter().map(|m| MetricAs(m, declared(m))))
    }
}

impl Serialize for TemplateAs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = self.0;
        let mut m = s.serialize_map(None)?;
        opt(&mut m, "version", &x.version)?;
        if !x.metrics.is_empty() {
            m.serialize_entry("metrics", &MembersAs(&x.metrics, self.1))?;
        }
        many_json(&mut m, "parameters", &x.parameters)?;
        opt(&mut m, "template_ref", &x.template_ref)?;
        opt(&mut m, "is_definition", &x.is_definition)?;
        m.end()
    }
}

impl Serialize for Json<'_, template::Parameter> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use template::parameter::Value as V;
        let x = self.0;
        let mut m = s.serialize_map(None)?;
        opt(&mut m, "name", &x.name)?;
        opt(&mut m, "type", &x.r#type)?;
        if let Some(v) = &x.value {
            let raw = match v {
                V::IntValue(v) => Raw::Int(*v),
                V::LongValue(v) => Raw::Long(*v),
                V::FloatValue(v) => Raw::Float(*v),
                V::DoubleValue(v) => Raw::Double(*v),
                V::BooleanValue(v) => Raw::Bool(*v),
                V::StringValue(v) => Raw::Str(v),
                V::ExtensionValue(_) => Raw::Extension,
            };
            m.serialize_entry(
                "value",
                &Typed {
                    datatype: x.r#type,
                    raw,
                    origin: Origin::Other,
                    members: None,
                },
            )?;
        }
        m.end()
    }
}

impl Serialize for Json<'_, PropertyValue> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use property_value::Value as V;
        let x = self.0;
        let mut m = s.serialize_map(None)?;
        opt(&mut m, "type", &x.r#type)?;
        opt(&mut m, "is_null", &x.is_null)?;
        if let Some(v) = &x.value {
            let raw = match v {
                V::IntValue(v) => Raw::Int(*v),
                V::LongValue(v) => Raw::Long(*v),
                V::FloatValue(v) => Raw::Float(*v),
                V::DoubleValue(v) => Raw::Double(*v),
                V::BooleanValue(v) => Raw::Bool(*v),
                V::StringValue(v) => Raw::Str(v),
                V::PropertysetValue(v) => Raw::PropertySet(v),
                V::PropertysetsValue(v) => Raw::PropertySets(v),
                V::ExtensionValue(_) => Raw::Extension,
            };
            m.serialize_entry(
                "value",
                &Typed {
                    datatype: x.r#type,
                    raw,
                    origin: Origin::Other,
                    members: None,
                },
            )?;
        }
        m.end()
    }
}

impl Serialize for Json<'_, PropertySet> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = self.0;
        let mut m = s.serialize_map(None)?;
        many(&mut m, "keys", &x.keys)?;
        many_json(&mut m, "values", &x.values)?;
        m.end()
    }
}

impl Serialize for Json<'_, PropertySetList> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        many_json(&mut m, "propertyset", &self.0.propertyset)?;
        m.end()
    }
}

impl Serialize for Typed<'_> {
    /// Reads the value as `datatype` says where the two agree.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use datatype::*;
        let raw = self.raw;
        // Integers: the wire holds u32 (`int_value`) or u64 (`long_value`).
        let wide = match raw {
            Raw::Int(v) => Some(u64::from(v)),
            Raw::Long(v) => Some(v),
            _ => None,
        };
        if let (Some(dt), Some(v)) = (self.datatype, wide) {
            // Truncating casts on purpose: the width decides, whatever the
            // publisher did with the upper bits.
            match dt {
                INT8 => return s.serialize_i8(v as u8 as i8),
                INT16 => return s.serialize_i16(v as u16 as i16),
                INT32 => return s.serialize_i32(v as u32 as i32),
                INT64 => {
                    return s.serialize_i64(match raw {
                        // An Int64 squeezed into int_value: sign-extend from 32 bits.
                        Raw::Int(v) => i64::from(v as i32),
                        _ => v as i64,
                    });
                }
                _ => {}
            }
        }
        match raw {
            Raw::Int(v) => s.serialize_u32(v),
            Raw::Long(v) => s.serialize_u64(v),
            Raw::Float(v) => s.serialize_f64(f32_to_f64(v)),
            Raw::Double(v) => s.serialize_f64(v),
            Raw::Bool(v) => s.serialize_bool(v),
            Raw::Str(v) => s.serialize_str(v),
            Raw::Bytes(b) => match self.datatype {
                Some(dt @ INT8_ARRAY..=DATETIME_ARRAY) => Array {
                    datatype: dt,
                    bytes: b,
                }
                .serialize(s)
                .map_err(|e| self.context(e)),
                _ => Base64(b).serialize(s),
            },
            Raw::DataSet(x) => Json(x).serialize(s),
            Raw::Template(x) => TemplateAs(x, self.members).serialize(s),
            Raw::PropertySet(x) => Json(x).serialize(s),
            Raw::PropertySets(x) => Json(x).serialize(s),
            Raw::Extension => s.serialize_map(Some(0))?.end(),
        }
    }
}

impl Typed<'_> {
    /// Prefixes an array error with where the array sits.
    fn context<E: ser::Error>(&self, e: E) -> E {
        match self.origin {
            Origin::Metric(Some(name), _) => E::custom(format!("metric {name:?}: {e}")),
            Origin::Metric(None, Some(alias)) => E::custom(format!("metric alias {alias}: {e}")),
            Origin::Metric(None, None) => E::custom(format!("metric: {e}")),
            Origin::Column(c) => E::custom(format!("dataset column {c}: {e}")),
            Origin::Other => e,
        }
    }
}

/// A Sparkplug array from `bytes_value`.
struct Array<'a> {
    datatype: u32,
    bytes: &'a [u8],
}

impl Serialize for Array<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use datatype::*;
        let b = self.bytes;
        match self.datatype {
            INT8_ARRAY => s.collect_seq(b.iter().map(|&x| x as i8)),
            UINT8_ARRAY => s.collect_seq(b.iter()),
            INT16_ARRAY => le::<2, S, _>(s, b, "Int16Array", i16::from_le_bytes),
            UINT16_ARRAY => le::<2, S, _>(s, b, "UInt16Array", u16::from_le_bytes),
            INT32_ARRAY => le::<4, S, _>(s, b, "Int32Array", i32::from_le_bytes),
            UINT32_ARRAY => le::<4, S, _>(s, b, "UInt32Array", u32::from_le_bytes),
            INT64_ARRAY => le::<8, S, _>(s, b, "Int64Array", i64::from_le_bytes),
            UINT64_ARRAY => le::<8, S, _>(s, b, "UInt64Array", u64::from_le_bytes),
            DATETIME_ARRAY => le::<8, S, _>(s, b, "DateTimeArray", u64::from_le_bytes),
            FLOAT_ARRAY => le::<4, S, _>(s, b, "FloatArray", |x| f32_to_f64(f32::from_le_bytes(x))),
            DOUBLE_ARRAY => le::<8, S, _>(s, b, "DoubleArray", f64::from_le_bytes),
            BOOLEAN_ARRAY => boolean_array(s, b),
            STRING_ARRAY => string_array(s, b),
            _ => Base64(b).serialize(s),
        }
    }
}

fn le<const N: usize, S: Serializer, T: Serialize>(
    s: S,
    b: &[u8],
    name: &str,
    f: impl Fn([u8; N]) -> T,
) -> Result<S::Ok, S::Error> {
    let chunks = b.chunks_exact(N);
    if !chunks.remainder().is_empty() {
        return Err(ser::Error::custom(format!(
            "{name} of {} bytes is not a whole number of {N}-byte values",
            b.len()
        )));
    }
    s.collect_seq(chunks.map(|c| {
        let mut x = [0u8; N];
        x.copy_from_slice(c);
        f(x)
    }))
}

fn boolean_array<S: Serializer>(s: S, b: &[u8]) -> Result<S::Ok, S::Error> {
    let (count, bits) = match b {
        [a, b2, c, d, bits @ ..] => (u32::from_le_bytes([*a, *b2, *c, *d]) as usize, bits),
        _ => {
            return Err(ser::Error::custom(
                "BooleanArray shorter than its 4-byte count",
            ))
        }
    };
    let needed = count.div_ceil(8);
    if bits.len() != needed {
        return Err(ser::Error::custom(format!(
            "BooleanArray of {count} values needs {needed} bytes of bits, got {}",
            bits.len()
        )));
    }
    // Eight values a byte, at least five bytes of JSON each (`true,`):
    // refused here, as walking the 130 million values the size estimate
    // lets through only to find them over the JSON limit takes half the
    // call's time limit.
    if count.saturating_mul(5) > budget::MAX_JSON_BYTES {
        return Err(ser::Error::custom(format!(
            "BooleanArray of {count} values would take more than {} MiB written out as JSON, \
             the most one message may take",
            budget::MAX_JSON_BYTES >> 20
        )));
    }
    s.collect_seq((0..count).map(|i| bits[i / 8] & (0x80 >> (i % 8)) != 0))
}

fn string_array<S: Serializer>(s: S, b: &[u8]) -> Result<S::Ok, S::Error> {
    let Some(body) = b.strip_suffix(&[0]) else {
        return if b.is_empty() {
            s.collect_seq(std::iter::empty::<&str>())
        } else {
            Err(ser::Error::custom(
                "StringArray does not end with a NUL terminator",
            ))
        };
    };
    let text = std::str::from_utf8(body)
        .map_err(|e| ser::Error::custom(format!("StringArray holds invalid UTF-8: {e}")))?;
    s.collect_seq(text.split('\0'))
}

/// The `f64` nearest the shortest decimal that reads back as the same `f32`,
/// so 1.1f32 prints as 1.1, not 1.100000023841858. Non-finite values stay
/// non-finite, which serde_json writes as `null`.
fn f32_to_f64(v: f32) -> f64 {
    if !v.is_finite() {
        return f64::from(v);
    }
    let mut buf = String::with_capacity(24);
    let _ = std::fmt::Write::write_fmt(&mut buf, format_args!("{v}"));
    buf.parse::<f64>().unwrap_or(f64::from(v))
}
