//! What a Sparkplug payload will take once decoded, read off the wire
//! before prost builds it ([`check`]), and what it takes written out as
//! JSON, counted as it is written ([`write_json`]). Protobuf is dense: an
//! empty metric is two bytes on the wire and a whole `Metric` struct (a
//! few hundred bytes) decoded, so a 1 MB payload of empty metrics asks for
//! more than the instance's default 128 MiB; and JSON can be larger still:
//! 2 MB of BooleanArray bits are 16 million `false,`, 100 MB. Left to the
//! memory limit, that traps, and the instance replaced forgets every BIRTH
//! it had learned ([`crate::births`]); refused here it is one message
//! dead-lettered with a reason.

use std::io;
use std::mem::size_of;

use super::payload::{data_set, template, DataSet, MetaData, Metric, Template};
use super::payload::{PropertySet, PropertySetList, PropertyValue};
use super::Payload;

/// Bytes one payload may take decoded and written out, estimated: half the
/// default memory limit. The estimate counts each struct in a `Vec` twice
/// (its spare capacity; while the `Vec` grows, old and new blocks together
/// take about a half more) and each string or bytes field four times its
/// length (the decoded copy, and the JSON written from it, base64 for
/// bytes, in a growing buffer), so the real peak stays under 128 MiB (a
/// flood of empty metrics estimated just under this took 121).
/// That is JSON of at most 4/3 of a field's length; JSON that is more is
/// held to [`MAX_JSON_BYTES`] as it is written. An NBIRTH of
/// 100,000 ordinary metrics is estimated at about 48 MiB (the host's
/// `component_limits` test bridges one through the component); a single
/// bytes value may be up to 16 MiB.
pub const MAX_DECODED_BYTES: usize = 64 << 20;

/// What a string or bytes field costs per byte on the wire: the decoded
/// copy, and up to three more in the JSON written from it (base64 makes
/// four bytes of three, and the output buffer grows by doubling). JSON
/// that takes more is held to [`MAX_JSON_BYTES`] instead.
const BYTES_FACTOR: usize = 4;

/// Bytes of JSON one payload may be written out as. What a value writes
/// can be many times its wire size, and only its datatype says how many:
/// a BooleanArray writes `false,` (six bytes) for each bit, so 2 MB of
/// bits are 100 MB of JSON; an Int8Array `-128,` (five) for each byte; a
/// string `\u0001` (six) for each control character; a dataset cell of
/// 13 bytes on the wire `{"value":18446744073709551615},` (31). A metric
/// without a datatype is read with the one its BIRTH declared
/// ([`crate::births`]), which the wire does not say, so this is not
/// estimated up front but measured as the JSON is written ([`write_json`]).
/// A 16 MiB bytes value's base64 takes about 21 MiB, an NBIRTH of 100,000
/// ordinary metrics 7 to 10. Written into a buffer of its size, within
/// the room the estimate leaves: a payload just under both limits (a
/// flood of empty metrics and 32 MiB of BooleanArray JSON) took the
/// component 123 MiB, the flood alone 121.
pub const MAX_JSON_BYTES: usize = 32 << 20;

/// Nesting followed at most; prost refuses deeper payloads anyway (its
/// recursion limit is 100).
const MAX_DEPTH: usize = 100;

#[derive(Clone, Copy)]
enum Msg {
    Payload,
    Metric,
    MetaData,
    Template,
    Parameter,
    DataSet,
    Row,
    DataSetValue,
    PropertySet,
    PropertyValue,
    PropertySetList,
}

impl Msg {
    fn size(self) -> usize {
        match self {
            Msg::Payload => size_of::<Payload>(),
            Msg::Metric => size_of::<Metric>(),
            Msg::MetaData => size_of::<MetaData>(),
            Msg::Template => size_of::<Template>(),
            Msg::Parameter => size_of::<template::Parameter>(),
            Msg::DataSet => size_of::<DataSet>(),
            Msg::Row => size_of::<data_set::Row>(),
            Msg::DataSetValue => size_of::<data_set::DataSetValue>(),
            Msg::PropertySet => size_of::<PropertySet>(),
            Msg::PropertyValue => size_of::<PropertyValue>(),
            Msg::PropertySetList => size_of::<PropertySetList>(),
        }
    }

    /// The message a length-delimited field holds, if it is one, and
    /// whether it is repeated (each one a struct in a `Vec`; a singular one
    /// sits inside its parent's struct, already counted).
    fn child(self, field: u64) -> Option<(Msg, bool)> {
        Some(match (self, field) {
            (Msg::Payload, 2) => (Msg::Metric, true),
            (Msg::Metric, 8) => (Msg::MetaData, false),
            (Msg::Metric, 9) => (Msg::PropertySet, false),
            (Msg::Metric, 17) => (Msg::DataSet, false),
            (Msg::Metric, 18) => (Msg::Template, false),
            (Msg::Template, 2) => (Msg::Metric, true),
            (Msg::Template, 3) => (Msg::Parameter, true),
            (Msg::DataSet, 4) => (Msg::Row, true),
            (Msg::Row, 1) => (Msg::DataSetValue, true),
            (Msg::PropertySet, 2) => (Msg::PropertyValue, true),
            (Msg::PropertyValue, 9) => (Msg::PropertySet, false),
            (Msg::PropertyValue, 10) => (Msg::PropertySetList, false),
            (Msg::PropertySetList, 1) => (Msg::PropertySet, true),
            _ => return None,
        })
    }
}

/// The largest struct a wire byte can become: a child message takes at
/// least two bytes, and a `Vec` growing by doubling may hold twice what it
/// keeps.
fn worst_per_wire_byte() -> usize {
    [
        Msg::Metric,
        Msg::MetaData,
        Msg::Template,
        Msg::Parameter,
        Msg::DataSet,
        Msg::Row,
        Msg::DataSetValue,
        Msg::PropertySet,
        Msg::PropertyValue,
        Msg::PropertySetList,
    ]
    .iter()
    .map(|m| m.size())
    .max()
    .unwrap_or(0)
    .max(4 * size_of::<u32>())
}

/// Refuses a payload that would take more than [`MAX_DECODED_BYTES`]
/// decoded and written out. Payloads too small to get there are not read.
/// One that is malformed is left to prost, which says what is wrong with
/// it, unless what comes before the fault is already too much: prost
/// builds that much before it finds the fault.
pub fn check(bytes: &[u8]) -> Result<(), String> {
    if bytes.len().saturating_mul(worst_per_wire_byte()) <= MAX_DECODED_BYTES {
        return Ok(());
    }
    let mut total = Msg::Payload.size();
    // Malformed or not, the total so far is what counts.
    let _ = estimate(bytes, Msg::Payload, 0, &mut total);
    if total > MAX_DECODED_BYTES {
        return Err(format!(
            "payload of {} bytes would take about {} MiB decoded, over the {} MiB one message may \
             take (so many metrics, rows or properties that decoding it would exhaust the \
             component's memory)",
            bytes.len(),
            total >> 20,
            MAX_DECODED_BYTES >> 20
        ));
    }
    Ok(())
}

/// JSON up to this is written in one pass into a buffer that grows as it
/// goes; larger JSON is measured by that pass and written again into a
/// buffer of its size. A buffer that grows by doubling takes up to twice
/// what it keeps, and more while it moves to a larger block: a 15.9 MiB
/// bytes value (21 MiB of base64) took the component 132 MiB so, 91
/// written to size.
const ONE_PASS_JSON_BYTES: usize = 1 << 20;

/// `value` written as JSON, or why not: more than [`MAX_JSON_BYTES`], or
/// its own error. One pass, and a second for JSON over
/// [`ONE_PASS_JSON_BYTES`] (the first measured it).
pub fn write_json<T: serde::Serialize + ?Sized>(
    capacity: usize,
    value: &T,
) -> Result<Vec<u8>, String> {
    let mut out = Capped::new(capacity.min(ONE_PASS_JSON_BYTES), ONE_PASS_JSON_BYTES);
    serde_json::to_writer(&mut out, value).map_err(|e| e.to_string())?;
    if out.skipped == 0 {
        return Ok(out.buf);
    }
    let len = out.buf.len() + out.skipped;
    drop(out);
    if len > MAX_JSON_BYTES {
        return Err(format!(
            "payload would take more than {} MiB written out as JSON, the most one message \
             may take (BooleanArray bits, small array elements, dataset cells or escaped \
             control characters can take many times their size on the wire)",
            MAX_JSON_BYTES >> 20
        ));
    }
    let mut out = Capped::new(len, len);
    serde_json::to_writer(&mut out, value).map_err(|e| e.to_string())?;
    if out.skipped > 0 {
        // `value` wrote more than it did when measured.
        return Err("payload written out as JSON changed between passes".into());
    }
    Ok(out.buf)
}

/// A buffer that takes at most `limit` bytes and counts what it skips past
/// that, rather than failing: serde_json writes through it a few bytes at
/// a time, and a writer that can fail gives every one of those writes an
/// error path, which made the sandboxed Sparkplug transform a tenth slower
/// (transform bench).
struct Capped {
    buf: Vec<u8>,
    limit: usize,
    skipped: usize,
}

impl Capped {
    fn new(capacity: usize, limit: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
            limit,
            skipped: 0,
        }
    }
}

impl io::Write for Capped {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.write_all(bytes)?;
        Ok(bytes.len())
    }

    #[inline]
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.len() > self.limit - self.buf.len() {
            // A hole in the JSON, which is then thrown away; every byte
            // offered is written or skipped, so the two add up to its size.
            self.skipped += bytes.len();
        } else {
            self.buf.extend_from_slice(bytes);
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Adds to `total` the bytes the fields of one `msg` in `bytes` take
/// decoded, beyond the struct itself (which its parent counted). `None`
/// at a wire error, or once `total` is over the limit (no need to read
/// on).
fn estimate(mut bytes: &[u8], msg: Msg, depth: usize, total: &mut usize) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(&mut bytes)?;
                // Repeated `types` unpacked: one u32 each.
                if let (Msg::DataSet, 3) = (msg, field) {
                    *total += 2 * size_of::<u32>();
                }
            }
            1 => bytes = bytes.get(8..)?,
            5 => bytes = bytes.get(4..)?,
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).ok()?;
                let body = bytes.get(..len)?;
                bytes = &bytes[len..];
                match msg.child(field) {
                    Some((child, repeated)) => {
                        if repeated {
                            *total += 2 * child.size();
                        }
                        estimate(body, child, depth + 1, total)?;
                    }
                    // Packed `types`: at least one byte each on the wire.
                    None if matches!((msg, field), (Msg::DataSet, 3)) => {
                        *total += 2 * len * size_of::<u32>();
                    }
                    // A string or bytes (its own allocation, and the JSON
                    // written from it), in a `Vec` of them where repeated.
                    None => *total += 2 * size_of::<String>() + BYTES_FACTOR * len,
                }
            }
            // A group (proto2's, long deprecated): prost skips it, and so
            // does this, whatever it holds.
            3 => skip_group(&mut bytes, field, depth + 1)?,
            _ => return None,
        }
        if *total > MAX_DECODED_BYTES {
            return None;
        }
    }
    Some(())
}

/// Reads past a group's fields and the end of group `field`.
fn skip_group(bytes: &mut &[u8], field: u64, depth: usize) -> Option<()> {
    if depth > MAX_DEPTH {
        return None;
    }
    loop {
        let key = varint(bytes)?;
        let (inner, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(bytes)?;
            }
            1 => *bytes = bytes.get(8..)?,
            5 => *bytes = bytes.get(4..)?,
            2 => {
                let len = usize::try_from(varint(bytes)?).ok()?;
                *bytes = bytes.get(len..)?;
            }
            3 => skip_group(bytes, inner, depth + 1)?,
            4 if inner == field => return Some(()),
            _ => return None,
        }
    }
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    /// `n` empty metrics: two bytes each on the wire.
    fn empty_metrics(n: usize) -> Vec<u8> {
        [0x12u8, 0x00].repeat(n)
    }

    #[test]
    fn a_flood_of_empty_metrics_is_refused_before_it_is_decoded() {
        let bytes = empty_metrics(600_000);
        let mut total = 0;
        let _ = estimate(&bytes, Msg::Payload, 0, &mut total);
        assert!(total > MAX_DECODED_BYTES, "{total}");
        let why = check(&bytes).unwrap_err();
        assert!(
            why.starts_with("payload of 1200000 bytes would take about "),
            "{why}"
        );
        // The same inside a template, one level down.
        let template = empty_metrics(600_000);
        let mut metric = vec![0x92, 0x01];
        push_varint(&mut metric, template.len());
        metric.extend_from_slice(&template);
        let mut payload = vec![0x12];
        push_varint(&mut payload, metric.len());
        payload.extend_from_slice(&metric);
        if let Err(e) = Payload::decode(&payload[..]) {
            panic!("not well-formed: {e}");
        }
        assert!(check(&payload).is_err());
    }

    #[test]
    fn large_payloads_of_ordinary_shape_pass() {
        // One metric with 8 MB of bytes: 8 MB decoded.
        let big = Payload {
            metrics: vec![Metric {
                name: Some("blob".into()),
                value: Some(super::super::payload::metric::Value::BytesValue(vec![
                    7u8;
                    8 << 20
                ])),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(check(&big.encode_to_vec()), Ok(()));
        // 20 MB of bytes: with its base64 and the JSON buffer around it,
        // more than the instance has room for.
        let mut huge = big.clone();
        let twenty_mb = vec![7u8; 20 << 20];
        huge.metrics[0].value = Some(super::super::payload::metric::Value::BytesValue(twenty_mb));
        assert!(check(&huge.encode_to_vec()).is_err());
        // 60,000 ordinary metrics (name, alias, datatype, a value); the
        // host's test takes 100,000 through the component, where structs
        // are smaller.
        let many = Payload {
            metrics: (0..60_000)
                .map(|i| Metric {
                    name: Some(format!("line/{i}/temperature")),
                    alias: Some(i),
                    datatype: Some(10),
                    value: Some(super::super::payload::metric::Value::DoubleValue(1.5)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let bytes = many.encode_to_vec();
        assert!(
            bytes.len() * worst_per_wire_byte() > MAX_DECODED_BYTES,
            "scanned"
        );
        assert_eq!(check(&bytes), Ok(()));
        let mut total = 0;
        estimate(&bytes, Msg::Payload, 0, &mut total).unwrap();
        assert!(total < MAX_DECODED_BYTES, "{total}");
    }

    #[test]
    fn a_malformed_payload_is_left_to_prost() {
        let mut bytes = empty_metrics(10);
        bytes.push(0x12);
        bytes.push(0x7f); // a length past the end
        assert!(estimate(&bytes, Msg::Payload, 0, &mut 0).is_none());
        assert_eq!(check(&[0x12, 0x7f]), Ok(()));
        // Malformed only after more than the limit: prost would build that
        // much before it found the fault.
        let mut bytes = empty_metrics(600_000);
        bytes.extend_from_slice(&[0x12, 0x7f]);
        assert!(check(&bytes).is_err());
    }

    /// prost skips groups (proto2) on unknown fields; a group in front of
    /// the flood must not end the estimate early.
    #[test]
    fn a_group_in_front_does_not_hide_the_flood() {
        let mut bytes = vec![0x33, 0x08, 0x01, 0x34]; // field 6: a group holding a varint
        bytes.extend(empty_metrics(600_000));
        assert!(Payload::decode(&bytes[..]).is_ok(), "prost takes it");
        assert!(check(&bytes).is_err());
    }

    use super::super::datatype::*;
    use super::super::payload::metric::Value;
    use crate::{transform_with, Births, Config, ErrorKind, Message};

    /// `p` through the transform on `topic`, as the component runs it: the
    /// record's value, or the decode error's reason.
    fn bridge(births: &mut Births, topic: &str, p: &Payload) -> Result<Vec<u8>, String> {
        let bytes = p.encode_to_vec();
        let msg = Message {
            topic,
            payload: &bytes,
            qos: 0,
            retain: false,
            user_properties: &[],
            content_type: None,
            received_at_ms: 1,
        };
        match transform_with(&Config::default(), Some(births), &msg) {
            Ok(mut records) => Ok(records.remove(0).value.unwrap()),
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::Decode, "{}", e.message);
                Err(e.message)
            }
        }
    }

    fn one(datatype: Option<u32>, value: Value) -> Payload {
        Payload {
            metrics: vec![Metric {
                name: Some("m".into()),
                alias: Some(1),
                datatype,
                value: Some(value),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// Refused as it is written, by the reason it gives; the estimate lets
    /// it through (the wire cannot say what its JSON will take).
    fn refused(births: &mut Births, topic: &str, p: &Payload) {
        assert_eq!(check(&p.encode_to_vec()), Ok(()));
        let why = bridge(births, topic, p).map(|v| v.len()).unwrap_err();
        assert!(
            why.contains("would take more than 32 MiB written out as JSON"),
            "{why}"
        );
    }

    const NDATA: &str = "spBv1.0/g/NDATA/e";

    /// 2 MiB of BooleanArray bits: 16,777,216 `false,`, 100 MB of JSON.
    fn sixteen_million_booleans() -> Vec<u8> {
        let mut b = (1u32 << 24).to_le_bytes().to_vec();
        b.extend(vec![0u8; 1 << 21]);
        b
    }

    /// What the component trapped on (its memory limit, 128 MiB) is a
    /// decode error with a reason: a BooleanArray, a string of control
    /// characters (`\u0001`, six bytes each), an Int8Array (`-128,`).
    #[test]
    fn json_many_times_its_wire_size_is_refused() {
        let mut births = Births::default();
        let bits = sixteen_million_booleans();
        refused(
            &mut births,
            NDATA,
            &one(Some(BOOLEAN_ARRAY), Value::BytesValue(bits)),
        );
        let controls = "\u{1}".repeat(10 << 20);
        refused(
            &mut births,
            NDATA,
            &one(Some(STRING), Value::StringValue(controls)),
        );
        let int8 = vec![0x80; 12 << 20];
        refused(
            &mut births,
            NDATA,
            &one(Some(INT8_ARRAY), Value::BytesValue(int8)),
        );
    }

    /// Each array type at its longest JSON per wire byte, 15 MiB of it
    /// (under the estimate's limit): every one over [`MAX_JSON_BYTES`].
    #[test]
    fn every_array_type_at_its_widest_is_refused() {
        fn repeat<const N: usize>(x: [u8; N]) -> Vec<u8> {
            x.repeat((15 << 20) / N)
        }
        let mut strings = vec![1u8; 15 << 20];
        strings.push(0);
        let widest = [
            (INT8_ARRAY, repeat(i8::MIN.to_le_bytes())),
            (UINT8_ARRAY, repeat(u8::MAX.to_le_bytes())),
            (INT16_ARRAY, repeat(i16::MIN.to_le_bytes())),
            (UINT16_ARRAY, repeat(u16::MAX.to_le_bytes())),
            (INT32_ARRAY, repeat(i32::MIN.to_le_bytes())),
            (UINT32_ARRAY, repeat(u32::MAX.to_le_bytes())),
            (INT64_ARRAY, repeat(i64::MIN.to_le_bytes())),
            (UINT64_ARRAY, repeat(u64::MAX.to_le_bytes())),
            (DATETIME_ARRAY, repeat(u64::MAX.to_le_bytes())),
            (FLOAT_ARRAY, repeat((-1.234_567_8e15_f32).to_le_bytes())),
            (
                DOUBLE_ARRAY,
                repeat((-1.2345678901234567e-300f64).to_le_bytes()),
            ),
            (STRING_ARRAY, strings),
        ];
        let mut births = Births::default();
        for (datatype, bytes) in widest {
            refused(
                &mut births,
                NDATA,
                &one(Some(datatype), Value::BytesValue(bytes)),
            );
        }
    }

    /// A DATA metric without a datatype is read as its BIRTH declared it:
    /// the same bits, which the wire alone would have as 2 MiB of base64,
    /// are refused, and the BIRTH is still known.
    #[test]
    fn an_array_its_birth_declared_is_refused_too() {
        let mut births = Births::default();
        let birth = one(Some(BOOLEAN_ARRAY), Value::BytesValue(vec![0; 4]));
        bridge(&mut births, "spBv1.0/g/NBIRTH/e", &birth).unwrap();
        let data = |bits: Vec<u8>| Payload {
            metrics: vec![Metric {
                alias: Some(1),
                value: Some(Value::BytesValue(bits)),
                ..Default::default()
            }],
            ..Default::default()
        };
        refused(&mut births, NDATA, &data(sixteen_million_booleans()));
        let json = bridge(&mut births, NDATA, &data(vec![3, 0, 0, 0, 0xA0])).unwrap();
        assert_eq!(
            json,
            br#"{"metrics":[{"alias":1,"value":[true,false,true]}]}"#
        );
    }

    /// Large JSON of ordinary payloads is written, into a buffer of its
    /// size (one grown by doubling took the component past its limit for
    /// a 15.9 MiB bytes value), and is the JSON a single pass writes.
    #[test]
    fn large_json_of_ordinary_payloads_is_written_to_size() {
        let mut births = Births::default();
        let blob: Vec<u8> = (0..(15_900u32 << 10)).map(|i| (i * 7) as u8).collect();
        let p = one(Some(BYTES), Value::BytesValue(blob));
        let json = bridge(&mut births, NDATA, &p).unwrap();
        assert_eq!(json.len(), 21_708_861);
        assert_eq!(json.capacity(), json.len());
        assert_eq!(
            json,
            serde_json::to_vec(&super::super::to_value(&p).unwrap()).unwrap()
        );
        // 60,000 ordinary metrics, as above (the host's component_limits
        // test bridges 100,000 through the component).
        let birth = Payload {
            metrics: (0..60_000u64)
                .map(|i| Metric {
                    name: Some(format!("line/{i}/temperature")),
                    alias: Some(i),
                    timestamp: Some(1_700_000_000_000),
                    datatype: Some(DOUBLE),
                    value: Some(Value::DoubleValue(1.5)),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let json = bridge(&mut births, "spBv1.0/g/NBIRTH/big", &birth).unwrap();
        assert_eq!(json.capacity(), json.len());
        assert_eq!(
            json,
            serde_json::to_vec(&super::super::to_value(&birth).unwrap()).unwrap()
        );
        // A million booleans: 6 MB of JSON from 125 kB.
        let mut bits = 1_000_000u32.to_le_bytes().to_vec();
        bits.extend(vec![0xFF; 125_000]);
        let json = bridge(
            &mut births,
            NDATA,
            &one(Some(BOOLEAN_ARRAY), Value::BytesValue(bits)),
        );
        assert_eq!(json.unwrap().len(), 5_000_060);
    }

    fn push_varint(out: &mut Vec<u8>, mut n: usize) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
}
