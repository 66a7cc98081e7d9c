//! What a Sparkplug payload will take once decoded, read off the wire
//! before prost builds it. Protobuf is dense: an empty metric is two bytes
//! on the wire and a whole `Metric` struct (a few hundred bytes) decoded,
//! so a 1 MB payload of empty metrics asks for more than the instance's
//! default 128 MiB. Left to the memory limit, that traps, and the instance
//! replaced forgets every BIRTH it had learned ([`crate::births`]); refused
//! here it is one message dead-lettered with a reason.

use std::mem::size_of;

use super::payload::{data_set, template, DataSet, MetaData, Metric, Template};
use super::payload::{PropertySet, PropertySetList, PropertyValue};
use super::Payload;

/// Bytes one payload may take decoded and written out, estimated: half the
/// default memory limit. The estimate counts each struct in a `Vec` twice
/// (its spare capacity; while the `Vec` grows, old and new blocks together
/// take about a half more) and each string or bytes field four times its
/// length (the decoded copy, and the JSON written from it, base64 for
/// bytes, in a growing buffer), so the real peak stays within about 96 MiB.
/// An NBIRTH of 100,000 ordinary metrics is estimated at about 48 MiB (the
/// host's `component_limits` test bridges one through the component); a
/// single bytes value may be up to 16 MiB.
pub const MAX_DECODED_BYTES: usize = 64 << 20;

/// What a string or bytes field costs per byte on the wire: the decoded
/// copy, and up to three more in the JSON written from it (base64 makes
/// four bytes of three, and the output buffer grows by doubling).
const BYTES_FACTOR: usize = 4;

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

    fn push_varint(out: &mut Vec<u8>, mut n: usize) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
}
