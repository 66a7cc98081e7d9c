//! MQTT topic filters, matched the way the MQTT specification says (v5.0
//! section 4.7), not the way the seed's regex did.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Exact(String),
    /// `+`: exactly one level, which may be empty.
    Single,
    /// `#`: the parent level and everything below; always last.
    Multi,
}

/// A parsed, validated topic filter. Parsing once at `init` keeps matching
/// on the hot path to a walk over the topic's levels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicFilter {
    source: String,
    levels: Vec<Level>,
}

/// Why a filter string is not a valid MQTT topic filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidFilter(pub &'static str);

impl fmt::Display for InvalidFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl TopicFilter {
    pub fn parse(filter: &str) -> Result<Self, InvalidFilter> {
        if filter.is_empty() {
            return Err(InvalidFilter("a topic filter must not be empty"));
        }
        if filter.contains('\0') {
            return Err(InvalidFilter("a topic filter must not contain NUL"));
        }
        let mut levels = Vec::new();
        let mut parts = filter.split('/').peekable();
        while let Some(part) = parts.next() {
            let level = match part {
                "+" => Level::Single,
                "#" => {
                    if parts.peek().is_some() {
                        return Err(InvalidFilter("'#' must be the last level"));
                    }
                    Level::Multi
                }
                _ if part.contains('#') => {
                    return Err(InvalidFilter("'#' must occupy a whole level"));
                }
                _ if part.contains('+') => {
                    return Err(InvalidFilter("'+' must occupy a whole level"));
                }
                _ => Level::Exact(part.to_owned()),
            };
            levels.push(level);
        }
        Ok(Self {
            source: filter.to_owned(),
            levels,
        })
    }

    /// The filter as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether `topic` (a topic name, never a filter) matches.
    pub fn matches(&self, topic: &str) -> bool {
        // MQTT 5.0, 4.7.2: wildcards at the start never match `$` topics, so
        // `#` does not subscribe to `$SYS`.
        if topic.starts_with('$') && !matches!(self.levels.first(), Some(Level::Exact(_))) {
            return false;
        }
        let mut topic_levels = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Multi => return true,
                Level::Single => {
                    if topic_levels.next().is_none() {
                        return false;
                    }
                }
                Level::Exact(want) => match topic_levels.next() {
                    Some(got) if got == want => {}
                    _ => return false,
                },
            }
        }
        topic_levels.next().is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(filter: &str, topic: &str) -> bool {
        TopicFilter::parse(filter).unwrap().matches(topic)
    }

    #[test]
    fn exact_levels_match_only_themselves() {
        assert!(m("a/b/c", "a/b/c"));
        assert!(!m("a/b/c", "a/b"));
        assert!(!m("a/b", "a/b/c"));
        assert!(!m("a/b/c", "a/b/d"));
        assert!(!m("topic1", "Topic1"));
    }

    #[test]
    fn plus_matches_exactly_one_level_even_an_empty_one() {
        assert!(m("a/+/c", "a/b/c"));
        assert!(m("a/+/c", "a//c"));
        assert!(!m("a/+/c", "a/b/x/c"));
        assert!(!m("a/+", "a"));
        assert!(m("a/+", "a/"));
        assert!(m("+/+", "/a"));
        assert!(m("+", ""));
        assert!(!m("+", "a/b"));
    }

    #[test]
    fn hash_matches_the_parent_and_everything_below() {
        assert!(m("a/#", "a"));
        assert!(m("a/#", "a/"));
        assert!(m("a/#", "a/b/c/d"));
        assert!(!m("a/#", "ab"));
        assert!(!m("a/#", "b/a"));
        assert!(m("#", "anything/at/all"));
        assert!(m("+/#", "a/b"));
    }

    #[test]
    fn wildcards_first_do_not_match_dollar_topics() {
        assert!(!m("#", "$SYS/broker/uptime"));
        assert!(!m("+/broker/uptime", "$SYS/broker/uptime"));
        assert!(!m("+/#", "$SYS/x"));
        assert!(m("$SYS/#", "$SYS/broker/uptime"));
        assert!(m("$SYS/+/uptime", "$SYS/broker/uptime"));
        // Only the first character counts: `$` deeper down is an ordinary level.
        assert!(m("a/+", "a/$x"));
    }

    #[test]
    fn invalid_filters_are_refused_with_a_reason() {
        for (filter, reason) in [
            ("a/#/c", "'#' must be the last level"),
            ("#/a", "'#' must be the last level"),
            ("a/b#", "'#' must occupy a whole level"),
            ("a/#b", "'#' must occupy a whole level"),
            ("+x", "'+' must occupy a whole level"),
            ("a/x+/c", "'+' must occupy a whole level"),
            ("", "a topic filter must not be empty"),
            ("a\0b", "a topic filter must not contain NUL"),
        ] {
            assert_eq!(
                TopicFilter::parse(filter).unwrap_err(),
                InvalidFilter(reason),
                "{filter:?}"
            );
        }
    }

    #[test]
    fn valid_filters_parse() {
        for filter in ["#", "+", "a/+/#", "/", "a//b", "$SYS/#", "spBv1.0/STATE/+"] {
            assert_eq!(TopicFilter::parse(filter).unwrap().as_str(), filter);
        }
    }
}
