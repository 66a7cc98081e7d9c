//! The fast path for JSON payloads that no ignore rule touches: validate,
//! read the top-level timestamp and drop insignificant whitespace, without
//! building a `serde_json::Value`.
//!
//! The output is the payload's own text minus whitespace between tokens, so
//! numbers and string escapes keep the publisher's spelling (a payload that
//! has attributes removed is re-serialised instead, which may respell them:
//! `1e3` as `1000.0`, `"\u00e9"` as `"é"`; the values are the same, down to
//! the last bit of a float, as serde_json is built with `float_roundtrip`;
//! only an integer beyond 64 bits becomes a float).
//!
//! The fast path accepts exactly the payloads the re-serialising path does:
//! same recursion limit, same number range, same string escapes.

use std::fmt;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::decode::{not_json, JsonType};
use crate::error::TransformError;

/// Nesting serde_json accepts when it builds a `Value` (its recursion limit);
/// the fast path refuses the same payloads the `Value` path does.
pub const MAX_DEPTH: usize = 127;

/// A validated payload: the type of its top level, its top-level
/// `attribute` (if the top level is an object that holds it) and its compact
/// text.
pub struct Scanned {
    pub top: JsonType,
    pub attribute: Option<Value>,
    pub compact: Vec<u8>,
}

pub fn scan(text: &str, attribute: &str) -> Result<Scanned, TransformError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let (top, found) = TopLevel { attribute }
        .deserialize(&mut de)
        .map_err(not_json)?;
    de.end().map_err(not_json)?;
    let compact = minify(text.as_bytes())?;
    Ok(Scanned {
        top,
        attribute: found,
        compact,
    })
}

/// Drops whitespace outside strings from valid JSON and refuses nesting
/// deeper than [`MAX_DEPTH`].
///
/// Copies runs between whitespace rather than byte by byte: a payload
/// without whitespace is one copy, and byte-wise pushes are several times
/// dearer in the sandbox than natively.
fn minify(text: &[u8]) -> Result<Vec<u8>, TransformError> {
    let mut out = Vec::with_capacity(text.len());
    let mut depth = 0usize;
    // Start of the bytes not yet copied.
    let mut run = 0;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b' ' | b'\n' | b'\r' | b'\t' => {
                out.extend_from_slice(&text[run..i]);
                run = i + 1;
            }
            b'"' => {
                // Skip the whole string; the text is valid JSON, so it ends
                // at the first quote not escaped by a backslash.
                i += 1;
                while i < text.len() {
                    match text[i] {
                        b'\\' => i += 2,
                        b'"' => break,
                        _ => i += 1,
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(TransformError::decode(format!(
                        "payload is not JSON: recursion limit exceeded (more than {MAX_DEPTH} nested arrays or objects)"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    out.extend_from_slice(&text[run.min(text.len())..]);
    Ok(out)
}

/// Visits the top level: names its type and, for an object, keeps the last
/// value of `attribute` (as a `Value`, like the map serde_json would build)
/// and skips the rest.
struct TopLevel<'a> {
    attribute: &'a str,
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = (JsonType, Option<Value>);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = (JsonType, Option<Value>);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is_attribute) = map.next_key_seed(KeyIs(self.attribute))? {
            if is_attribute {
                found = Some(map.next_value::<Value>()?);
            } else {
                map.next_value::<Skip>()?;
            }
        }
        Ok((JsonType::Object, found))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok((JsonType::Array, None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok((JsonType::Boolean, None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok((JsonType::Number, None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok((JsonType::Number, None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok((JsonType::Number, None))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok((JsonType::String, None))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok((JsonType::Null, None))
    }
}

/// Skips a value without building it, but reads it as a `Value` would be
/// read. serde_json's own `IgnoredAny` only checks numbers' and escapes'
/// syntax, so it lets through what the `Value` path refuses: numbers out of
/// `f64` range (`1e400`) and lone UTF-16 surrogates (`"\ud800"`). Asking
/// for `deserialize_any` instead makes serde_json parse each number and
/// decode each string as it does for a `Value`.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> Visitor<'de> for Skip {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
}

/// Compares a key with the attribute name without allocating it.
struct KeyIs<'a>(&'a str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<bool, E> {
        Ok(key == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compact(text: &str) -> String {
        String::from_utf8(scan(text, "timestamp").unwrap().compact).unwrap()
    }

    #[test]
    fn whitespace_between_tokens_goes_and_strings_stay_verbatim() {
        assert_eq!(
            compact(" {\n\t\"a b\" : [ 1 , 2.50 , 1e3 ] ,\r\n \"s\" : \" x \\\" { \\\\\" } "),
            r#"{"a b":[1,2.50,1e3],"s":" x \" { \\"}"#
        );
        assert_eq!(compact(r#""\u00e9\/""#), r#""\u00e9\/""#);
        assert_eq!(compact(" 42 "), "42");
    }

    #[test]
    fn the_last_top_level_attribute_wins() {
        let s = scan(
            r#"{"timestamp": 1, "a": {"timestamp": 2}, "timestamp": 3}"#,
            "timestamp",
        )
        .unwrap();
        assert_eq!(s.attribute, Some(Value::from(3)));
        let s = scan(r#"{"ts\u0031": 5}"#, "ts1").unwrap();
        assert_eq!(s.attribute, Some(Value::from(5)));
        assert_eq!(scan("[1]", "timestamp").unwrap().attribute, None);
    }

    #[test]
    fn the_top_level_type_is_named_like_the_value_path_names_it() {
        for text in [
            "{}",
            "[]",
            "[{\"a\": 1}]",
            "0",
            "-1.5e300",
            "123456789012345678901234567890",
            "\"s\"",
            "\"\\u00e9\"",
            "true",
            "false",
            "null",
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(scan(text, "t").unwrap().top, JsonType::of(&value), "{text}");
        }
    }

    #[test]
    fn invalid_json_and_deep_nesting_are_refused_like_the_value_path() {
        for bad in [
            "{",
            "[1,]",
            "{\"a\":1} x",
            "NaN",
            "{'a':1}",
            "\"\t\"",
            // Found by tests/proptest_fuzz.rs: numbers out of f64 range and
            // lone surrogates, anywhere but in the timestamp attribute.
            "[1e400]",
            "{\"a\": -1e400}",
            "{\"a\": [{\"b\": 6E83521533}]}",
            "{\"1e400\": 1e400}",
            "{\"a\": \"\\ud800\"}",
            "[\"\\udc00x\"]",
            "{\"\\ud800\": 1}",
        ] {
            assert!(scan(bad, "t").is_err(), "{bad}");
            assert!(serde_json::from_str::<Value>(bad).is_err(), "{bad}");
        }
        for n in [MAX_DEPTH, MAX_DEPTH + 1, 10_000] {
            let deep = "[".repeat(n) + &"]".repeat(n);
            assert_eq!(
                scan(&deep, "t").is_ok(),
                serde_json::from_str::<Value>(&deep).is_ok(),
                "{n}"
            );
            let deep = "{\"a\":".repeat(n) + "1" + &"}".repeat(n);
            assert_eq!(
                scan(&deep, "t").is_ok(),
                serde_json::from_str::<Value>(&deep).is_ok(),
                "{n}"
            );
        }
    }
}
