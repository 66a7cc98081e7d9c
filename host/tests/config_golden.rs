//! Configuration errors as golden files: each directory under
//! `tests/config/` is a configuration directory (`settings.yaml`, maybe
//! `.secrets.yaml`, maybe an `env` file of `NAME=value` lines) and
//! `expected.txt` is the exact message a user gets, with the directory
//! written as `$DIR`. Run with `UPDATE_GOLDEN=1` to rewrite the expected
//! files after a deliberate change, then review the diff.

use std::path::Path;

use uns_kafka::config::{load_from, Mode};

mod common;
use common::{golden_cases, golden_env};

#[test]
fn every_bad_configuration_gives_its_exact_message() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let cases = golden_cases();
    assert!(cases.len() >= 10, "golden cases missing");
    for case in cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let got = match load_from(&case, golden_env(&case), Mode::Bridge) {
            Ok(_) => format!("(no error: {name} loaded fine)"),
            Err(e) => e.to_string().replace(&case.display().to_string(), "$DIR"),
        };
        let expected_path = case.join("expected.txt");
        if update {
            // A case that no longer fails is a lost check, not a new answer.
            assert!(!got.starts_with("(no error"), "{got}");
            std::fs::write(&expected_path, format!("{got}\n")).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path)
            .unwrap_or_else(|_| panic!("{name}: expected.txt missing; run with UPDATE_GOLDEN=1"));
        if expected.trim_end() != got {
            failures.push(format!(
                "{name}:\n  expected: {}\n  got:      {got}",
                expected.trim_end()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The configuration we ship must load as it is.
#[test]
fn shipped_conf_loads() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf");
    let settings = load_from(&conf, Vec::new(), Mode::Bridge).expect("conf/ loads");
    assert_eq!(settings.mqtt.host.as_deref(), Some("localhost"));
    assert_eq!(settings.kafka.config["acks"], "all");
    // The template has the same shape as .secrets.yaml: it must load too.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(conf.join("settings.yaml"), dir.path().join("settings.yaml")).unwrap();
    std::fs::copy(
        conf.join(".secrets_template.yaml"),
        dir.path().join(".secrets.yaml"),
    )
    .unwrap();
    let s = load_from(dir.path(), Vec::new(), Mode::Bridge).expect("template loads");
    assert_eq!(s.mqtt.username.as_deref(), Some("uns-bridge"));
    // Its Kafka block, uncommented as it says, loads too.
    let template = std::fs::read_to_string(conf.join(".secrets_template.yaml")).unwrap();
    let start = template.find("# kafka:").expect("a commented kafka block");
    let (head, block) = template.split_at(start);
    let uncommented: String = block
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(
        dir.path().join(".secrets.yaml"),
        format!("{head}{uncommented}"),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("tls")).unwrap();
    std::fs::write(dir.path().join("tls/kafka-ca.crt"), "").unwrap();
    let s = load_from(dir.path(), Vec::new(), Mode::Bridge).expect("kafka block loads");
    assert_eq!(s.kafka.config["security.protocol"], "SASL_SSL");
    assert_eq!(
        Path::new(&s.kafka.config["ssl.ca.location"]),
        dir.path().join("tls/kafka-ca.crt")
    );
}
