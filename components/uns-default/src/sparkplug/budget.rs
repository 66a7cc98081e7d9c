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

/// Decoded bytes one payload may take, estimated: a quarter of the default
/// memory limit, far above any payload seen in practice (a dataset of
/// 100,000 cells takes about 5 MB).
pub const MAX_DECODED_BYTES: usize = 32 << 20;

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

    /// The message a length-delimited field holds, if it is one.
    fn child(self, field: u64) -> Option<Msg> {
        Some(match (self, field) {
            (Msg::Payload, 2) => Msg::Metric,
            (Msg::Metric, 8) => Msg::MetaData,
            (Msg::Metric, 9) => Msg::PropertySet,
            (Msg::Metric, 17) => Msg::DataSet,
            (Msg::Metric, 18) => Msg::Template,
            (Msg::Template, 2) => Msg::Metric,
            (Msg::Template, 3) => Msg::Parameter,
            (Msg::DataSet, 4) => Msg::Row,
            (Msg::Row, 1) => Msg::DataSetValue,
            (Msg::PropertySet, 2) => Msg::PropertyValue,
            (Msg::PropertyValue, 9) => Msg::PropertySet,
            (Msg::PropertyValue, 10) => Msg::PropertySetList,
            (Msg::PropertySetList, 1) => Msg::PropertySet,
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

/// Refuses a payload whose decoded structs would take more than
/// [`MAX_DECODED_BYTES`]. Payloads too small to get there are not read.
/// A malformed one is left to prost, which says what is wrong with it.
pub fn check(bytes: &[u8]) -> Result<(), String> {
    if bytes.len().saturating_mul(worst_per_wire_byte()) <= MAX_DECODED_BYTES {
        return Ok(());
    }
    let estimate = estimate(bytes, Msg::Payload, 0).unwrap_or(0) + Msg::Payload.size();
    if estimate > MAX_DECODED_BYTES {
        return Err(format!(
            "payload of {} bytes would take about {} MiB decoded, over the {} MiB one message may \
             take (so many metrics, rows or properties that decoding it would exhaust the \
             component's memory)",
            bytes.len(),
            estimate >> 20,
            MAX_DECODED_BYTES >> 20
        ));
    }
    Ok(())
}

/// Bytes the fields of one `msg` in `bytes` take decoded, beyond the
/// struct itself (which its parent counted); `None` for a wire error.
fn estimate(mut bytes: &[u8], msg: Msg, depth: usize) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut total = 0usize;
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(&mut bytes)?;
                // Repeated `types` unpacked: one u32 each.
                if let (Msg::DataSet, 3) = (msg, field) {
                    total += 2 * size_of::<u32>();
                }
            }
            1 => bytes = bytes.get(8..)?,
            5 => bytes = bytes.get(4..)?,
            2 => {
                let len = usize::try_from(varint(&mut bytes)?).ok()?;
                let body = bytes.get(..len)?;
                bytes = &bytes[len..];
                total += match msg.child(field) {
                    Some(child) => 2 * child.size() + estimate(body, child, depth + 1)?,
                    // Packed `types`: at least one byte each on the wire.
                    None if matches!((msg, field), (Msg::DataSet, 3)) => 2 * len * size_of::<u32>(),
                    // A string or bytes (its own allocation), in a `Vec`
                    // of them where repeated.
                    None => 2 * size_of::<String>() + len,
                };
            }
            _ => return None,
        }
        if total > MAX_DECODED_BYTES {
            // Enough to refuse it: no need to read the rest.
            return Some(total);
        }
    }
    Some(total)
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
        // 20,000 ordinary metrics (name, alias, datatype, a value).
        let many = Payload {
            metrics: (0..20_000)
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
    }

    #[test]
    fn a_malformed_payload_is_left_to_prost() {
        let mut bytes = empty_metrics(10);
        bytes.push(0x12);
        bytes.push(0x7f); // a length past the end
        assert!(estimate(&bytes, Msg::Payload, 0).is_none());
        assert_eq!(check(&[0x12, 0x7f]), Ok(()));
    }

    fn push_varint(out: &mut Vec<u8>, mut n: usize) {
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
    }
}
