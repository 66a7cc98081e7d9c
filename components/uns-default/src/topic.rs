//! Kafka topic names from MQTT topic names.
//!
//! Every `/` becomes the separator. If the result is still not a legal Kafka
//! topic (a character outside `[A-Za-z0-9._-]`, longer than 249 characters,
//! empty, `.` or `..`), each illegal character becomes `_`, the name is cut so
//! the whole fits in 249 characters, and `-` plus a 16-digit hash of the
//! original MQTT topic is appended. The hash keeps two MQTT topics that differ
//! only in what was replaced or cut (`temp °C` and `temp °F`) on different
//! Kafka topics.
//!
//! The hash is 64-bit FNV-1a over the MQTT topic's UTF-8 bytes (offset basis
//! `0xcbf29ce484222325`, prime `0x100000001b3`), printed as 16 lowercase hex
//! digits. It is defined by those constants alone, so it is the same on every
//! platform and in every version of this component; changing it would move
//! data to new Kafka topics.

/// Kafka's limit on topic name length.
pub const MAX_KAFKA_TOPIC_LEN: usize = 249;

/// `-` plus 16 hex digits.
const HASH_SUFFIX_LEN: usize = 17;

/// The separators that are legal in a Kafka topic.
pub const SEPARATORS: [char; 3] = ['_', '.', '-'];

/// 64-bit FNV-1a; see the module docs for why this exact function.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn is_legal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Byte-wise twin of [`is_legal_char`]: every legal character is ASCII, so
/// a byte of a multi-byte UTF-8 character (>= 0x80) is never legal.
fn is_legal_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Whether Kafka accepts `name` as a topic name.
pub fn is_legal_kafka_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_KAFKA_TOPIC_LEN
        && name != "."
        && name != ".."
        && name.chars().all(is_legal_char)
}

/// The Kafka topic for `mqtt_topic`, with `separator` in place of `/`.
/// `separator` must be one of [`SEPARATORS`]; the config checks that.
pub fn kafka_topic(mqtt_topic: &str, separator: char) -> String {
    // Every message goes through here, so the common case works on bytes:
    // decoding and re-encoding `char`s cost a sandboxed transform a tenth
    // of its time.
    let plain_fits = mqtt_topic.len() <= MAX_KAFKA_TOPIC_LEN
        && mqtt_topic.bytes().all(|b| b == b'/' || is_legal_byte(b));
    if plain_fits {
        // `/` and the separator are single ASCII bytes: same length, and
        // legal unless it spells `.` or `..` (`/` with `.`, for one).
        let mut buf = [0u8; 4];
        let name = mqtt_topic.replace('/', separator.encode_utf8(&mut buf));
        if !matches!(name.as_str(), "" | "." | "..") {
            return name;
        }
    }
    let mut name = String::with_capacity(MAX_KAFKA_TOPIC_LEN);
    for c in mqtt_topic
        .chars()
        .take(MAX_KAFKA_TOPIC_LEN - HASH_SUFFIX_LEN)
    {
        name.push(match c {
            '/' => separator,
            c if is_legal_char(c) => c,
            _ => '_',
        });
    }
    name.push('-');
    // Formatting into a String cannot fail.
    let _ = std::fmt::Write::write_fmt(
        &mut name,
        format_args!("{:016x}", fnv1a64(mqtt_topic.as_bytes())),
    );
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suffix(topic: &str) -> String {
        format!("-{:016x}", fnv1a64(topic.as_bytes()))
    }

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn slashes_become_the_separator() {
        assert_eq!(kafka_topic("a/b/c", '_'), "a_b_c");
        assert_eq!(kafka_topic("a/b/c", '.'), "a.b.c");
        assert_eq!(kafka_topic("a/b/c", '-'), "a-b-c");
        assert_eq!(kafka_topic("abc", '_'), "abc");
        assert_eq!(
            kafka_topic("spBv1.0/group/NDATA/node", '_'),
            "spBv1.0_group_NDATA_node"
        );
    }

    #[test]
    fn empty_levels_stay_legal_without_a_hash() {
        assert_eq!(kafka_topic("a//b", '_'), "a__b");
        assert_eq!(kafka_topic("/a", '_'), "_a");
        assert_eq!(kafka_topic("a/", '_'), "a_");
    }

    #[test]
    fn illegal_characters_are_replaced_and_hashed() {
        let t = "plant 1/temp°C/Müller";
        let got = kafka_topic(t, '_');
        assert_eq!(got, format!("plant_1_temp_C_M_ller{}", suffix(t)));
        assert!(is_legal_kafka_topic(&got));
        assert_eq!(
            kafka_topic("$SYS/broker", '_'),
            format!("_SYS_broker{}", suffix("$SYS/broker"))
        );
    }

    #[test]
    fn topics_differing_only_in_replaced_characters_stay_apart() {
        let c = kafka_topic("temp °C", '_');
        let f = kafka_topic("temp °F", '_');
        assert_ne!(c, f);
        let a = kafka_topic("a b", '_');
        let b = kafka_topic("a\tb", '_');
        assert_ne!(a, b);
        assert!(a.starts_with("a_b-") && b.starts_with("a_b-"));
    }

    #[test]
    fn dot_and_dot_dot_are_never_produced() {
        let one = kafka_topic("/", '.');
        assert_eq!(one, format!(".{}", suffix("/")));
        let two = kafka_topic("//", '.');
        assert_eq!(two, format!("..{}", suffix("//")));
        assert_eq!(kafka_topic(".", '_'), format!(".{}", suffix(".")));
        assert_eq!(kafka_topic("..", '_'), format!("..{}", suffix("..")));
        assert_eq!(kafka_topic("", '_'), suffix(""));
        for name in [one, two] {
            assert!(is_legal_kafka_topic(&name));
        }
        // `/` with `_` is just `_`, a legal name.
        assert_eq!(kafka_topic("/", '_'), "_");
    }

    #[test]
    fn exactly_249_characters_pass_unchanged() {
        let t = "a/".repeat(124) + "b";
        assert_eq!(t.len(), 249);
        let got = kafka_topic(&t, '_');
        assert_eq!(got, t.replace('/', "_"));
    }

    #[test]
    fn longer_names_are_cut_to_249_with_the_hash() {
        let t = "x".repeat(250);
        let got = kafka_topic(&t, '_');
        assert_eq!(got.len(), 249);
        assert_eq!(got, format!("{}{}", "x".repeat(232), suffix(&t)));
        assert!(is_legal_kafka_topic(&got));
        // Two long topics that differ only after the cut do not collide.
        let u = "x".repeat(251);
        assert_ne!(kafka_topic(&u, '_'), got);
    }

    #[test]
    fn long_names_with_multibyte_characters_fit_in_249() {
        let t = "ü".repeat(300);
        let got = kafka_topic(&t, '_');
        assert_eq!(got.len(), 249);
        assert!(is_legal_kafka_topic(&got));
        // 200 umlauts are 400 bytes, too long even though 200 characters.
        let t = "ü".repeat(200);
        assert!(kafka_topic(&t, '_').ends_with(&suffix(&t)));
    }

    #[test]
    fn legality_check() {
        assert!(is_legal_kafka_topic("a.b_c-D9"));
        for bad in ["", ".", "..", "a b", "a/b", "ä", &"a".repeat(250)] {
            assert!(!is_legal_kafka_topic(bad), "{bad:?}");
        }
    }
}
