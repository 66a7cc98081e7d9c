//! JSON payloads as text: validate, read the top-level timestamp and drop
//! insignificant whitespace without building a `serde_json::Value`
//! ([`scan`]), then remove ignored attributes from that compact text
//! ([`remove_path`]).
//!
//! The record is the payload's own text minus whitespace between tokens and
//! minus the removed members, so numbers, string escapes and repeated keys
//! keep the publisher's spelling whether or not a rule applies. A `Value`
//! tree would lose some of it: serde_json is built without
//! `arbitrary_precision`, so an integer beyond 64 bits would become a float
//! (`123456789012345678901234567890` as `1.2345678901234568e29`), and a
//! repeated key would keep only its last value.
//!
//! [`scan`] accepts exactly the payloads serde_json reads into a `Value`:
//! same recursion limit, same number range, same string escapes.

use std::fmt;
use std::ops::Range;

use serde::de::{Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::decode::{not_json, JsonType};
use crate::error::TransformError;

/// Nesting serde_json accepts when it builds a `Value` (its recursion limit);
/// [`scan`] refuses what it refuses, so no payload is accepted here that a
/// `Value` reader downstream (or [`crate::decode::decode`]) would refuse.
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
/// syntax, so it lets through what serde_json refuses when it builds a `Value`: numbers out of
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

/// Removes the member `path` names from compact JSON text (what [`scan`]
/// or the Sparkplug writer produce), leaving every other byte as it was:
/// the publisher's digits, escapes and key order survive filtering.
///
/// `path` walks nested objects from the top level and its last key's member
/// goes, whatever its value (`null` included), with one adjacent comma so
/// the text stays compact JSON. A missing key, a non-object on the way or a
/// top level that is not an object leaves the text as it is.
///
/// Keys compare by their decoded value (`"\u0061"` is `a`), as a JSON
/// reader would see them. JSON allows repeated keys, and readers disagree
/// on which one counts (serde_json and JavaScript keep the last, others the
/// first), so every member with the last key's name goes, and the walk goes
/// into every object-valued member with a parent's name: an attribute
/// configured to be dropped is dropped for every reader.
///
/// Text that is not compact JSON (a bug in whatever wrote it) is an
/// internal error where the walk meets it, and never a panic; on an error
/// the text is unchanged. What follows the top-level object is not read.
pub fn remove_path(compact: &mut Vec<u8>, path: &[String]) -> Result<(), TransformError> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let text = compact.as_slice();
    if text.first() != Some(&b'{') {
        return Ok(());
    }
    let mut cuts = Vec::new();
    // Objects still to search: where each opens, and how many keys of
    // `path` lead to it. A stack, not recursion: `path` may be long.
    let mut pending = vec![(0usize, 0usize)];
    let mut members = Vec::new();
    while let Some((open, level)) = pending.pop() {
        members.clear();
        object_members(text, open, &mut members)?;
        match parents.get(level) {
            Some(parent) => {
                for m in &members {
                    if text.get(m.value.start) == Some(&b'{') && key_is(text, &m.key, parent)? {
                        pending.push((m.value.start, level + 1));
                    }
                }
            }
            None => {
                let removed = members
                    .iter()
                    .map(|m| key_is(text, &m.key, last))
                    .collect::<Result<Vec<bool>, _>>()?;
                cut_members(&members, &removed, &mut cuts);
            }
        }
    }
    if cuts.is_empty() {
        return Ok(());
    }
    // The objects cut from all sit at the same depth, so no two overlap;
    // checked anyway, since slicing out of order would panic.
    cuts.sort_unstable_by_key(|c| c.start);
    let mut out = Vec::with_capacity(text.len());
    let mut from = 0;
    for cut in cuts {
        let kept = text
            .get(from..cut.start)
            .ok_or_else(|| not_compact(cut.start))?;
        out.extend_from_slice(kept);
        from = cut.end;
    }
    out.extend_from_slice(text.get(from..).ok_or_else(|| not_compact(from))?);
    *compact = out;
    Ok(())
}

/// Where one object member sits: its key, quotes included, and its value.
struct Member {
    key: Range<usize>,
    value: Range<usize>,
}

/// The cuts that take the `removed` members out of an object and leave
/// valid JSON: a member before the last kept one goes with the comma after
/// it, the members after the last kept one go with the comma before them,
/// and if none is kept the object is left `{}`.
fn cut_members(members: &[Member], removed: &[bool], cuts: &mut Vec<Range<usize>>) {
    let Some(last_kept) = removed.iter().rposition(|r| !r) else {
        if let (Some(first), Some(end)) = (members.first(), members.last()) {
            cuts.push(first.key.start..end.value.end);
        }
        return;
    };
    let (Some(kept), Some(end)) = (members.get(last_kept), members.last()) else {
        return;
    };
    for (j, (m, &gone)) in members.iter().zip(removed).enumerate() {
        if !gone {
            continue;
        }
        if j < last_kept {
            if let Some(next) = members.get(j + 1) {
                cuts.push(m.key.start..next.key.start);
            }
        } else if j == last_kept + 1 {
            cuts.push(kept.value.end..end.value.end);
        }
    }
}

/// The members of the object that opens at `open`.
fn object_members(text: &[u8], open: usize, out: &mut Vec<Member>) -> Result<(), TransformError> {
    let mut i = open + 1;
    if text.get(i) == Some(&b'}') {
        return Ok(());
    }
    loop {
        if text.get(i) != Some(&b'"') {
            return Err(not_compact(i));
        }
        let key_end = skip_string(text, i)?;
        if text.get(key_end) != Some(&b':') {
            return Err(not_compact(key_end));
        }
        let value_end = skip_value(text, key_end + 1)?;
        out.push(Member {
            key: i..key_end,
            value: key_end + 1..value_end,
        });
        match text.get(value_end) {
            Some(b',') => i = value_end + 1,
            Some(b'}') => return Ok(()),
            _ => return Err(not_compact(value_end)),
        }
    }
}

/// Whether the key spelled at `span` (quotes included) is `key` once its
/// escapes are decoded; most keys have none, and are compared as bytes.
fn key_is(text: &[u8], span: &Range<usize>, key: &str) -> Result<bool, TransformError> {
    let quoted = text
        .get(span.clone())
        .ok_or_else(|| not_compact(span.start))?;
    let raw = quoted
        .get(1..quoted.len().saturating_sub(1))
        .ok_or_else(|| not_compact(span.start))?;
    if !raw.contains(&b'\\') {
        return Ok(raw == key.as_bytes());
    }
    // An escape never spells a character with fewer bytes than its UTF-8.
    if raw.len() < key.len() {
        return Ok(false);
    }
    let decoded: String = serde_json::from_slice(quoted).map_err(|e| {
        TransformError::internal(format!(
            "cannot filter the record: bad key at byte {}: {e}",
            span.start
        ))
    })?;
    Ok(decoded == key)
}

/// The end of the value that starts at `i`. The text has no whitespace, so
/// a number or literal ends where `,`, `}` or `]` (or the text) does, and
/// an array or object is skipped by counting brackets outside strings,
/// without recursion.
fn skip_value(text: &[u8], i: usize) -> Result<usize, TransformError> {
    match text.get(i) {
        None | Some(b',' | b'}' | b']' | b':') => Err(not_compact(i)),
        Some(b'"') => skip_string(text, i),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match text.get(j) {
                    None => return Err(not_compact(j)),
                    Some(b'"') => {
                        j = skip_string(text, j)?;
                        continue;
                    }
                    Some(b'{' | b'[') => depth += 1,
                    Some(b'}' | b']') => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            return Ok(j + 1);
                        }
                    }
                    Some(_) => {}
                }
                j += 1;
            }
        }
        Some(_) => {
            let mut j = i;
            while let Some(b) = text.get(j) {
                if matches!(b, b',' | b'}' | b']') {
                    break;
                }
                j += 1;
            }
            Ok(j)
        }
    }
}

/// The end (after the closing quote) of the string that opens at `i`.
fn skip_string(text: &[u8], i: usize) -> Result<usize, TransformError> {
    let mut j = i + 1;
    loop {
        match text.get(j) {
            None => return Err(not_compact(j)),
            Some(b'\\') => j += 2,
            Some(b'"') => return Ok(j + 1),
            Some(_) => j += 1,
        }
    }
}

fn not_compact(at: usize) -> TransformError {
    TransformError::internal(format!(
        "cannot filter the record: its JSON text is not compact JSON at byte {at}"
    ))
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
    /// `text` without `path` (split on `.`, as the configuration does).
    fn without(text: &str, path: &str) -> String {
        let path: Vec<String> = path.split('.').map(str::to_owned).collect();
        without_keys(text, &path)
    }

    fn without_keys(text: &str, path: &[String]) -> String {
        let mut bytes = text.as_bytes().to_vec();
        remove_path(&mut bytes, path).unwrap();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn removing_the_first_middle_last_or_only_member_keeps_the_json_valid() {
        let text = r#"{"a":1,"b":2,"c":3}"#;
        assert_eq!(without(text, "a"), r#"{"b":2,"c":3}"#);
        assert_eq!(without(text, "b"), r#"{"a":1,"c":3}"#);
        assert_eq!(without(text, "c"), r#"{"a":1,"b":2}"#);
        assert_eq!(without(r#"{"a":1,"b":2}"#, "a"), r#"{"b":2}"#);
        assert_eq!(without(r#"{"a":1,"b":2}"#, "b"), r#"{"a":1}"#);
        assert_eq!(without(r#"{"a":1}"#, "a"), "{}");
        assert_eq!(without("{}", "a"), "{}");
    }

    #[test]
    fn a_nested_path_walks_objects_and_removes_only_its_last_key() {
        let text = r#"{"a":{"b":{"c":1,"d":2},"c":3},"c":4}"#;
        assert_eq!(without(text, "a.b.c"), r#"{"a":{"b":{"d":2},"c":3},"c":4}"#);
        assert_eq!(without(text, "a.b"), r#"{"a":{"c":3},"c":4}"#);
        assert_eq!(without(text, "a.c"), r#"{"a":{"b":{"c":1,"d":2}},"c":4}"#);
        assert_eq!(
            without(r#"{"a":{"a":{"a":1}}}"#, "a.a.a"),
            r#"{"a":{"a":{}}}"#
        );
        // A path longer than the text is deep.
        assert_eq!(
            without(r#"{"a":{"a":1}}"#, &["a"; 200].join(".")),
            r#"{"a":{"a":1}}"#
        );
    }

    #[test]
    fn a_missing_key_or_a_non_object_on_the_way_leaves_the_text_as_is() {
        for (text, path) in [
            (r#"{"a":{"b":1}}"#, "x"),
            (r#"{"a":{"b":1}}"#, "a.x"),
            (r#"{"a":{"b":1}}"#, "x.b"),
            (r#"{"a":{"b":1}}"#, "a.b.c"),
            (r#"{"a":{"b":null}}"#, "a.b.c"),
            (r#"{"a":[{"b":1}]}"#, "a.b"),
            (r#"{"a":[{"b":1}]}"#, "a.0.b"),
            (r#"{"s":"x"}"#, "s.x"),
            (r#"{"s":"{\"x\":1}"}"#, "s.x"),
            (r#"{"ab":1,"b":2}"#, "a"),
            (r#"{"a":1}"#, "A"),
            // A top level that is not an object has nothing to walk.
            (r#"[{"a":1}]"#, "a"),
            (r#""a""#, "a"),
            ("1", "a"),
            ("null", "a"),
            ("", "a"),
        ] {
            assert_eq!(without(text, path), text, "{text} {path}");
        }
        assert_eq!(without_keys(r#"{"a":1}"#, &[]), r#"{"a":1}"#);
    }

    #[test]
    fn keys_compare_by_their_decoded_value() {
        assert_eq!(without(r#"{"\u0061":1,"b":2}"#, "a"), r#"{"b":2}"#);
        assert_eq!(without(r#"{"a":1,"\u0062":2}"#, "\u{62}"), r#"{"a":1}"#);
        assert_eq!(
            without(r#"{"caf\u00e9":{"x":1,"y":2}}"#, "café.x"),
            r#"{"caf\u00e9":{"y":2}}"#
        );
        assert_eq!(without(r#"{"\ud83d\ude00":1}"#, "😀"), "{}");
        assert_eq!(without(r#"{"a\"b":1,"c":2}"#, "a\"b"), r#"{"c":2}"#);
        assert_eq!(without(r#"{"\\":1,"c":2}"#, "\\"), r#"{"c":2}"#);
        assert_eq!(without(r#"{"a\/b":1}"#, "a/b"), "{}");
        // A backslash the publisher escaped is a backslash, not an escape.
        let text = r#"{"a\\u0062":1}"#;
        assert_eq!(without(text, "ab"), text);
        assert_eq!(without(text, "a\\u0062"), "{}");
        // A key may hold the separator when the path is given whole.
        assert_eq!(
            without_keys(r#"{"a.b":1,"a":{"b":2}}"#, &["a.b".to_owned()]),
            r#"{"a":{"b":2}}"#
        );
    }

    #[test]
    fn every_member_with_a_repeated_name_is_removed_or_walked() {
        for (text, path, expected) in [
            (r#"{"x":1,"y":0,"x":2}"#, "x", r#"{"y":0}"#),
            (r#"{"x":1,"x":2}"#, "x", "{}"),
            (r#"{"x":1,"x":2,"y":3}"#, "x", r#"{"y":3}"#),
            (r#"{"y":0,"x":1,"x":2}"#, "x", r#"{"y":0}"#),
            (
                r#"{"x":1,"y":0,"x":2,"z":3,"x":4}"#,
                "x",
                r#"{"y":0,"z":3}"#,
            ),
            (r#"{"x":1,"\u0078":2,"y":3}"#, "x", r#"{"y":3}"#),
            (
                r#"{"a":{"b":1,"c":2},"a":5,"a":{"b":3}}"#,
                "a.b",
                r#"{"a":{"c":2},"a":5,"a":{}}"#,
            ),
            (
                r#"{"a":{"b":{"c":1},"b":{"c":2,"d":3}}}"#,
                "a.b.c",
                r#"{"a":{"b":{},"b":{"d":3}}}"#,
            ),
        ] {
            assert_eq!(without(text, path), expected, "{text} {path}");
        }
    }

    #[test]
    fn any_value_is_removed_whole_whatever_it_holds() {
        let text = concat!(
            r#"{"n":null,"o":{"k":"},\"{["},"l":[1,{"d":"]"}],"#,
            r#""s":"x,}\"\\","e":"\\","u":"\u007d","big":123456789012345678901234567890,"#,
            r#""f":-1.5e-3,"t":true,"z":0}"#
        );
        for (path, expected) in [
            ("n", text.replacen(r#""n":null,"#, "", 1)),
            ("o", text.replacen(r#""o":{"k":"},\"{["},"#, "", 1)),
            ("l", text.replacen(r#""l":[1,{"d":"]"}],"#, "", 1)),
            ("s", text.replacen(r#""s":"x,}\"\\","#, "", 1)),
            ("e", text.replacen(r#""e":"\\","#, "", 1)),
            ("u", text.replacen(r#""u":"\u007d","#, "", 1)),
            (
                "big",
                text.replacen(r#""big":123456789012345678901234567890,"#, "", 1),
            ),
            ("f", text.replacen(r#""f":-1.5e-3,"#, "", 1)),
            ("t", text.replacen(r#""t":true,"#, "", 1)),
            ("z", text.replacen(r#","z":0"#, "", 1)),
        ] {
            let out = without(text, path);
            assert_eq!(out, expected, "{path}");
            let mut value: Value = serde_json::from_str(text).unwrap();
            value.as_object_mut().unwrap().shift_remove(path);
            assert_eq!(
                serde_json::from_str::<Value>(&out).unwrap(),
                value,
                "{path}"
            );
        }
    }

    #[test]
    fn text_that_is_not_compact_json_is_an_error_never_a_panic() {
        let e = remove_path(&mut b"{ \"a\":1}".to_vec(), &["a".to_owned()]).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Internal);
        let texts = [
            r#"{"a":{"b":[1,{"c":"},\"\\"}],"b":null},"a":{"b":2},"\u0062":"x"}"#,
            r#"{"a":1,"b":{"a":{}}}"#,
        ];
        let paths: Vec<Vec<String>> = ["a", "a.b", "b", "b.a", "a.b.c", "\\"]
            .iter()
            .map(|p| p.split('.').map(str::to_owned).collect())
            .collect();
        for text in texts {
            let text = text.as_bytes();
            for cut in 0..=text.len() {
                for byte in [
                    None,
                    Some(b'{'),
                    Some(b'}'),
                    Some(b'"'),
                    Some(b'\\'),
                    Some(b','),
                    Some(b':'),
                    Some(b']'),
                ] {
                    let mut broken = text[..cut].to_vec();
                    if let Some(b) = byte {
                        broken.extend_from_slice(&text[cut..]);
                        if let Some(at) = broken.get_mut(cut) {
                            *at = b;
                        }
                    }
                    for path in &paths {
                        let mut bytes = broken.clone();
                        // Either outcome is fine; only a panic is not.
                        let _ = remove_path(&mut bytes, path);
                    }
                }
            }
        }
    }
}
