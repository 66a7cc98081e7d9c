//! The component's configuration, parsed once at `init`.
//!
//! The host sends one JSON object: the keys it derives from `mqtt.*` and
//! `transform.topic_separator`, all known here, and `transform.config` as
//! the user wrote it. A key this component does not know can only be a typo
//! there (`accept_non_object_jsn`), so it is an error, as is a known key
//! with a wrong value; each names the key, because the host stops at
//! startup with that text.

use serde_json::{Map, Value};

use crate::error::ConfigError;
use crate::filter::TopicFilter;
use crate::topic::SEPARATORS;

/// Every key [`Config::from_json`] reads.
pub const KEYS: [&str; 4] = [
    "ignored_attributes",
    "timestamp_attribute",
    "topic_separator",
    "accept_non_object_json",
];

/// Default for `timestamp_attribute`, as in the seed.
pub const DEFAULT_TIMESTAMP_ATTRIBUTE: &str = "timestamp";
/// Default for `topic_separator`, as in the seed.
pub const DEFAULT_SEPARATOR: char = '_';

/// One `ignored_attributes` entry: a filter and the attribute paths it
/// removes, each already split on `.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoreRule {
    pub filter: TopicFilter,
    pub paths: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub ignored: Vec<IgnoreRule>,
    pub timestamp_attribute: String,
    pub separator: char,
    /// `accept_non_object_json`: forward a JSON payload whose top level is
    /// not an object (array, number, string, boolean, null) instead of
    /// refusing it. Off by default: UNS messages are JSON objects.
    pub accept_non_object_json: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            ignored: Vec::new(),
            timestamp_attribute: DEFAULT_TIMESTAMP_ATTRIBUTE.to_owned(),
            separator: DEFAULT_SEPARATOR,
            accept_non_object_json: false,
        }
    }
}

impl Config {
    /// Parses the `init` configuration, e.g.
    /// `{"ignored_attributes": {"a/+": ["x", "y.z"]}, "timestamp_attribute":
    /// "ts", "topic_separator": ".", "accept_non_object_json": true}`. Every
    /// key is optional; `null` means the default.
    pub fn from_json(json: &str) -> Result<Config, ConfigError> {
        let value: Value =
            serde_json::from_str(json).map_err(|e| ConfigError::NotJson(e.to_string()))?;
        let Value::Object(object) = value else {
            return Err(ConfigError::NotJson(format!("got {}", type_name(&value))));
        };
        if let Some(unknown) = object.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(ConfigError::UnknownKey(unknown.clone()));
        }
        let mut config = Config::default();
        match object.get("ignored_attributes") {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => config.ignored = ignore_rules(map)?,
            Some(other) => {
                return Err(ConfigError::IgnoredAttributes(format!(
                    "must be a map from topic filter to attribute path(s), got {}",
                    type_name(other)
                )))
            }
        }
        match object.get("timestamp_attribute") {
            None | Some(Value::Null) => {}
            Some(Value::String(name)) => config.timestamp_attribute = name.clone(),
            Some(other) => {
                return Err(ConfigError::TimestampAttribute(format!(
                    "must be a string, got {}",
                    type_name(other)
                )))
            }
        }
        match object.get("topic_separator") {
            None | Some(Value::Null) => {}
            Some(Value::String(sep)) => config.separator = separator(sep)?,
            Some(other) => {
                return Err(ConfigError::TopicSeparator(format!(
                    "must be one of \"_\", \".\", \"-\", got {}",
                    type_name(other)
                )))
            }
        }
        match object.get("accept_non_object_json") {
            None | Some(Value::Null) => {}
            Some(Value::Bool(accept)) => config.accept_non_object_json = *accept,
            Some(other) => {
                return Err(ConfigError::AcceptNonObjectJson(format!(
                    "must be true or false, got {}",
                    type_name(other)
                )))
            }
        }
        Ok(config)
    }
}

fn separator(sep: &str) -> Result<char, ConfigError> {
    let mut chars = sep.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if SEPARATORS.contains(&c) => Ok(c),
        _ => Err(ConfigError::TopicSeparator(format!(
            "{sep:?} is not allowed; use one of \"_\", \".\", \"-\" (characters legal in Kafka topic names)"
        ))),
    }
}

fn ignore_rules(map: &Map<String, Value>) -> Result<Vec<IgnoreRule>, ConfigError> {
    let mut rules = Vec::with_capacity(map.len());
    for (filter, paths) in map {
        let topic_filter =
            TopicFilter::parse(filter).map_err(|reason| ConfigError::InvalidFilter {
                filter: filter.clone(),
                reason: reason.to_string(),
            })?;
        let paths = match paths {
            Value::String(path) => vec![split_path(filter, path)?],
            Value::Array(list) => list
                .iter()
                .map(|item| match item {
                    Value::String(path) => split_path(filter, path),
                    other => Err(ConfigError::IgnoredAttributes(format!(
                        "attribute paths for {filter:?} must be strings, got {}",
                        type_name(other)
                    ))),
                })
                .collect::<Result<_, _>>()?,
            other => {
                return Err(ConfigError::IgnoredAttributes(format!(
                    "{filter:?} must map to an attribute path or a list of them, got {}",
                    type_name(other)
                )))
            }
        };
        rules.push(IgnoreRule {
            filter: topic_filter,
            paths,
        });
    }
    Ok(rules)
}

fn split_path(filter: &str, path: &str) -> Result<Vec<String>, ConfigError> {
    if path.is_empty() {
        return Err(ConfigError::IgnoredAttributes(format!(
            "empty attribute path for {filter:?}"
        )));
    }
    Ok(path.split('.').map(str::to_owned).collect())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_object_gives_the_defaults() {
        let c = Config::from_json("{}").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.timestamp_attribute, "timestamp");
        assert_eq!(c.separator, '_');
        assert!(c.ignored.is_empty());
        assert!(!c.accept_non_object_json);
    }

    #[test]
    fn accept_non_object_json_is_a_boolean_switch() {
        for (json, expected) in [
            (r#"{"accept_non_object_json": true}"#, true),
            (r#"{"accept_non_object_json": false}"#, false),
            (r#"{"accept_non_object_json": null}"#, false),
        ] {
            let c = Config::from_json(json).unwrap();
            assert_eq!(c.accept_non_object_json, expected, "{json}");
        }
        for bad in [r#""true""#, "1", "[]", "{}"] {
            let err = Config::from_json(&format!(r#"{{"accept_non_object_json": {bad}}}"#))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(
                    "transform.config.accept_non_object_json: must be true or false, got "
                ),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn nulls_give_the_defaults() {
        let c = Config::from_json(
            r#"{"ignored_attributes": null, "timestamp_attribute": null,
                "topic_separator": null, "accept_non_object_json": null}"#,
        )
        .unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn an_unknown_key_is_an_error_naming_it_and_the_known_ones() {
        let err = Config::from_json(r#"{"accept_non_object_jsn": true, "topic_separator": "."}"#)
            .unwrap_err();
        assert_eq!(err, ConfigError::UnknownKey("accept_non_object_jsn".into()));
        assert_eq!(
            err.to_string(),
            "transform.config.accept_non_object_jsn: unknown key; the default component takes \
             ignored_attributes, timestamp_attribute, topic_separator, accept_non_object_json"
        );
    }

    #[test]
    fn full_config_parses() {
        let c = Config::from_json(
            r#"{"ignored_attributes": {"topic1": ["attr1", "attr2.subAttr1"],
                                       "topic2/+": "A.B.C", "topic3/#": []},
                "timestamp_attribute": "ts", "topic_separator": "."}"#,
        )
        .unwrap();
        assert_eq!(c.timestamp_attribute, "ts");
        assert_eq!(c.separator, '.');
        assert_eq!(c.ignored.len(), 3);
        assert_eq!(c.ignored[0].filter.as_str(), "topic1");
        assert_eq!(
            c.ignored[0].paths,
            vec![
                vec!["attr1".to_owned()],
                vec!["attr2".into(), "subAttr1".into()]
            ]
        );
        assert_eq!(c.ignored[1].filter.as_str(), "topic2/+");
        assert_eq!(c.ignored[1].paths, vec![vec!["A", "B", "C"]]);
        assert!(c.ignored[2].paths.is_empty());
    }

    #[test]
    fn invalid_filters_are_named_in_the_error() {
        for (filter, reason) in [
            ("a/#/c", "'#' must be the last level"),
            ("a/b#", "'#' must occupy a whole level"),
            ("+x", "'+' must occupy a whole level"),
        ] {
            let json = format!(r#"{{"ignored_attributes": {{"{filter}": "x"}}}}"#);
            let err = Config::from_json(&json).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("mqtt.ignored_attributes: invalid topic filter \"{filter}\": {reason}")
            );
        }
    }

    #[test]
    fn separators_other_than_kafka_legal_ones_are_refused() {
        for ok in ["_", ".", "-"] {
            let c = Config::from_json(&format!(r#"{{"topic_separator": "{ok}"}}"#)).unwrap();
            assert_eq!(c.separator.to_string(), ok);
        }
        for bad in [r#""/""#, r#""""#, r#""__""#, r#""+""#, r#"" ""#, "1"] {
            let err = Config::from_json(&format!(r#"{{"topic_separator": {bad}}}"#))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("transform.topic_separator: "), "{err}");
        }
    }

    #[test]
    fn wrong_shapes_are_refused_with_the_key_name() {
        for (json, prefix) in [
            ("[]", "configuration is not a JSON object"),
            ("not json", "configuration is not a JSON object"),
            (
                r#"{"ignored_attributes": ["a"]}"#,
                "mqtt.ignored_attributes: must be a map",
            ),
            (
                r#"{"ignored_attributes": {"a": 1}}"#,
                "mqtt.ignored_attributes: \"a\" must map",
            ),
            (
                r#"{"ignored_attributes": {"a": [1]}}"#,
                "mqtt.ignored_attributes: attribute paths",
            ),
            (
                r#"{"ignored_attributes": {"a": ""}}"#,
                "mqtt.ignored_attributes: empty attribute path",
            ),
            (
                r#"{"timestamp_attribute": 5}"#,
                "mqtt.timestamp_attribute: must be a string",
            ),
        ] {
            let err = Config::from_json(json).unwrap_err().to_string();
            assert!(err.starts_with(prefix), "{json}: {err}");
        }
    }
}
