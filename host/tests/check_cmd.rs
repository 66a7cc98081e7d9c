//! `uns-kafka check` end to end: the real binary, the shipped settings, the
//! real default component, and every golden bad configuration.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod common;
use common::{component, golden_cases, golden_env};

/// The compile cache the other binary tests share, so Cranelift runs once.
fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("uns-kafka-test-cache")
}

/// Runs `uns-kafka check` with `args` and only `env` of the `UNS_`
/// variables (a developer's own must not change the outcome).
fn check(args: &[&str], env: &[(String, String)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_uns-kafka"));
    for (k, _) in std::env::vars() {
        if k.starts_with("UNS_") {
            command.env_remove(k);
        }
    }
    command
        .arg("check")
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run uns-kafka check")
}

/// `check` of `settings` (a settings.yaml) in `dir`, with the default
/// component and the shared compile cache.
fn check_settings(dir: &Path, settings: &str) -> Output {
    std::fs::write(dir.join("settings.yaml"), settings).unwrap();
    check_dir(dir, &[])
}

/// `check` of the configuration in `dir` with the default component, the
/// shared compile cache and `env`.
fn check_dir(dir: &Path, env: &[(&str, &str)]) -> Output {
    let wasm = component("uns_default");
    let cache = shared_cache().display().to_string();
    let env: Vec<(String, String)> = std::iter::once(("UNS_TRANSFORM__CACHE_DIR", cache.as_str()))
        .chain(env.iter().copied())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    check(
        &[
            "--config",
            dir.to_str().unwrap(),
            "--component",
            wasm.to_str().unwrap(),
        ],
        &env,
    )
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_shipped_settings_pass_and_check_says_what_run_would_use() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf");
    let conf = conf.to_str().unwrap();
    let wasm = component("uns_default");
    let cache = shared_cache().display().to_string();
    let out = check(
        &["--config", conf, "--component", wasm.to_str().unwrap()],
        &[("UNS_TRANSFORM__CACHE_DIR".into(), cache)],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let expected = format!(
        "ok: {conf}/settings.yaml\n  \
         mqtt: mqtt://localhost:1883 (MQTT 5), QoS 1: spBv1.0/#, enterprise/#\n  \
         kafka: localhost:9092 (plaintext), 4 producer(s), dead letters to uns_kafka_dlq\n  \
         component: {} (uns-default {})\n",
        wasm.display(),
        // The component and the host both take the workspace's version.
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(text(&out.stdout), expected);
}

/// `check` stops where `run` would, with the same line: each golden case's
/// expected message, after `error: `, and exit code 2.
#[test]
fn every_golden_bad_configuration_fails_check_with_its_message() {
    let cases = golden_cases();
    assert!(cases.len() >= 10, "golden cases missing");
    for case in cases {
        let env = golden_env(&case);
        let dir = case.display().to_string();
        let out = check(&["--config", &dir], &env);
        let expected = std::fs::read_to_string(case.join("expected.txt"))
            .unwrap()
            .replace("$DIR", &dir);
        assert_eq!(out.status.code(), Some(2), "{dir}: {}", text(&out.stderr));
        assert_eq!(text(&out.stderr), format!("error: {expected}"), "{dir}");
        assert!(out.stdout.is_empty(), "{dir}: {}", text(&out.stdout));
    }
}

/// A `--component` that is not there is the command line's fault, not the
/// settings file's.
#[test]
fn a_missing_component_on_the_command_line_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("settings.yaml"),
        "mqtt:\n  host: h\nkafka: {config: {bootstrap.servers: 'localhost:9092'}}\n",
    )
    .unwrap();
    let missing = dir.path().join("nowhere.wasm");
    let out = check(
        &[
            "--config",
            dir.path().to_str().unwrap(),
            "--component",
            missing.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let line = format!("error: command line: --component: {}: ", missing.display());
    assert!(
        text(&out.stderr).starts_with(&line),
        "{}",
        text(&out.stderr)
    );
}

/// A configuration the component's `init` refuses is found by `check`
/// too, named as the component's.
#[test]
fn a_configuration_the_component_refuses_fails_check() {
    let dir = tempfile::tempdir().unwrap();
    let out = check_settings(
        dir.path(),
        "mqtt:\n  host: h\nkafka: {config: {bootstrap.servers: 'localhost:9092'}}\n\
         transform:\n  config: {ignored_attributes: {'a/#/b': [x]}}\n",
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let line = format!(
        "error: {}: transform (component init): ",
        dir.path().join("settings.yaml").display()
    );
    assert!(
        text(&out.stderr).starts_with(&line),
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("'#' must be the last level"),
        "{}",
        text(&out.stderr)
    );
}

/// A refusal of settings that came from elsewhere names where they came
/// from, not `settings.yaml`: the component's `init` refusing a value set
/// by an environment variable, and librdkafka refusing the Kafka settings
/// as a whole when part of them is in `.secrets.yaml`.
#[test]
fn a_refusal_names_the_source_of_the_settings_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let settings = "mqtt:\n  host: h\nkafka: {config: {bootstrap.servers: 'localhost:9092'}}\n";
    std::fs::write(dir.path().join("settings.yaml"), settings).unwrap();
    let out = check_dir(dir.path(), &[("UNS_MQTT__IGNORED_ATTRIBUTES", "[a]")]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).starts_with(
            "error: environment variable UNS_MQTT__IGNORED_ATTRIBUTES: transform (component \
             init): mqtt.ignored_attributes: must be a map"
        ),
        "{}",
        text(&out.stderr)
    );

    std::fs::write(
        dir.path().join(".secrets.yaml"),
        "kafka:\n  config:\n    security.protocol: SASL_PLAINTEXT\n    sasl.mechanism: PLAIN\n",
    )
    .unwrap();
    let out = check_dir(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let d = dir.path().display();
    assert!(
        text(&out.stderr).starts_with(&format!(
            "error: {d}/.secrets.yaml and {d}/settings.yaml: kafka.config: librdkafka rejected"
        )),
        "{}",
        text(&out.stderr)
    );
}

/// `run`'s flags belong after the subcommand they are for: given before
/// `check`, they were once parsed as `run`'s and dropped, and `check` read
/// `conf` instead of the directory the user named.
#[test]
fn flags_before_a_subcommand_are_a_usage_error_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_uns-kafka"))
        .args(["--config", dir.path().to_str().unwrap(), "check"])
        .output()
        .expect("run uns-kafka");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: the subcommand 'check' cannot be used with"),
        "{stderr}"
    );
    // Without a subcommand the flags are still `run`'s.
    let out = Command::new(env!("CARGO_BIN_EXE_uns-kafka"))
        .args(["--config", dir.path().to_str().unwrap()])
        .output()
        .expect("run uns-kafka");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("{}", dir.path().join("settings.yaml").display())),
        "{}",
        text(&out.stderr)
    );
}

/// A typo under `transform.config` reaches the default component, which
/// knows every key the host sends it: the typo is an error, not a setting
/// that silently does nothing.
#[test]
fn an_unknown_key_for_the_default_component_fails_check() {
    let dir = tempfile::tempdir().unwrap();
    let out = check_settings(
        dir.path(),
        "mqtt:\n  host: h\nkafka: {config: {bootstrap.servers: 'localhost:9092'}}\n\
         transform:\n  config: {accept_non_object_jsn: true}\n",
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: {}: transform (component init): transform.config.accept_non_object_jsn: \
             unknown key; the default component takes ignored_attributes, timestamp_attribute, \
             topic_separator, accept_non_object_json\n",
            dir.path().join("settings.yaml").display()
        )
    );
}

/// `UNS_MQTT_HOST` (one underscore) is not a setting: ignored, as any
/// other `UNS_` variable, but said, with the name it should have had.
#[test]
fn a_variable_with_one_underscore_after_the_section_gets_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("settings.yaml"),
        "mqtt: {host: 127.0.0.1}\nkafka: {config: {bootstrap.servers: '127.0.0.1:9'}}\n",
    )
    .unwrap();
    let out = check_dir(
        dir.path(),
        &[
            ("UNS_MQTT_HOST", "broker"),
            ("UNS_KAFKA_SERVICE_HOST", "10.0.0.1"),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "environment variable UNS_MQTT_HOST ignored: settings take two underscores \
             between section and key (did you mean UNS_MQTT__HOST?)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("UNS_KAFKA_SERVICE_HOST"), "{stderr}");
    // Ignored: the file's host stands.
    assert!(
        text(&out.stdout).contains("mqtt: mqtt://127.0.0.1:1883"),
        "{}",
        text(&out.stdout)
    );
}

/// What `run` would only warn about shows in `check` too: here a consumer
/// setting in `kafka.config`, which the producers ignore.
#[test]
fn check_shows_the_warnings_run_would_log() {
    let dir = tempfile::tempdir().unwrap();
    let out = check_settings(
        dir.path(),
        "mqtt: {host: 127.0.0.1}\n\
         kafka: {config: {bootstrap.servers: '127.0.0.1:9', group.id: plant}}\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("Configuration property group.id is a consumer property and will be ignored"),
        "{}",
        text(&out.stderr)
    );
}

/// `run` binds `bridge.health_listen` before it bridges: `check` refuses
/// an address this host does not have (exit 2, naming the key), and warns
/// of a port in use, which the running bridge holds when `check` vets a
/// change beside it.
#[test]
fn a_health_address_is_checked_and_a_port_in_use_is_a_warning() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let in_use = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run_check = |listen: &str| {
        check_settings(
            dir.path(),
            &format!(
                "mqtt:\n  host: h\nkafka: {{config: {{bootstrap.servers: 'localhost:9092'}}}}\n\
                 bridge:\n  health_listen: '{listen}'\n"
            ),
        )
    };
    let out = run_check(&in_use.to_string());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!(
            "warning: bridge.health_listen {in_use} is in use now"
        )),
        "{}",
        text(&out.stderr)
    );
    // TEST-NET-3: an address no host here has (else this proves nothing).
    assert!(
        std::net::TcpListener::bind("203.0.113.1:0").is_err(),
        "this host can bind 203.0.113.1: pick another address for this test"
    );
    let out = run_check("203.0.113.1:8080");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).starts_with(&format!(
            "error: {}: bridge.health_listen: cannot listen on 203.0.113.1:8080: ",
            dir.path().join("settings.yaml").display()
        )),
        "{}",
        text(&out.stderr)
    );
    // Set by a variable (as the image does), the error names the variable,
    // not a file that does not mention the key.
    std::fs::write(
        dir.path().join("settings.yaml"),
        "mqtt:\n  host: h\nkafka: {config: {bootstrap.servers: 'localhost:9092'}}\n",
    )
    .unwrap();
    let out = check_dir(
        dir.path(),
        &[("UNS_BRIDGE__HEALTH_LISTEN", "203.0.113.1:8080")],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).starts_with(
            "error: environment variable UNS_BRIDGE__HEALTH_LISTEN: bridge.health_listen: \
             cannot listen on 203.0.113.1:8080: "
        ),
        "{}",
        text(&out.stderr)
    );
}

/// `run` binds the health port before it connects to MQTT: a port in use
/// stops it with the configuration exit code (2) and a line naming the key,
/// with no message taken.
#[test]
fn run_stops_with_exit_2_when_the_health_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    // Where the MQTT broker would be: nothing may connect to it.
    let broker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mqtt_port = broker.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("settings.yaml"),
        format!(
            "mqtt:\n  host: 127.0.0.1\n  port: {mqtt_port}\n\
             kafka: {{config: {{bootstrap.servers: '127.0.0.1:9'}}}}\n\
             bridge:\n  health_listen: '{addr}'\n"
        ),
    )
    .unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_uns-kafka"));
    for (k, _) in std::env::vars() {
        if k.starts_with("UNS_") {
            command.env_remove(k);
        }
    }
    let out = command
        .args(["run", "--config", dir.path().to_str().unwrap()])
        .args(["--component", component("uns_default").to_str().unwrap()])
        .env("UNS_TRANSFORM__CACHE_DIR", shared_cache())
        // A typo in RUST_LOG is reported by `run` too, not ignored.
        .env("RUST_LOG", "info,uns_kafka=loud")
        .output()
        .expect("run uns-kafka");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("RUST_LOG ignored, using \"info,librdkafka=warn,"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "error: {}: bridge.health_listen: cannot listen on {addr}: ",
            dir.path().join("settings.yaml").display()
        )),
        "{stderr}"
    );
    broker.set_nonblocking(true).unwrap();
    assert!(
        matches!(broker.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the bridge connected to MQTT before it failed"
    );
}

/// With `--log-json` the reason `run` stops is a JSON log line like every
/// other, with the exit code; without, the plain `error:` line.
#[test]
fn run_with_log_json_says_why_it_stopped_in_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("settings.yaml"),
        "mqtt: {host: h, port: 99999}\nkafka: {config: {bootstrap.servers: '127.0.0.1:9'}}\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_uns-kafka"))
        .args([
            "run",
            "--log-json",
            "--config",
            dir.path().to_str().unwrap(),
        ])
        .env_remove("RUST_LOG")
        .output()
        .expect("run uns-kafka");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let last: serde_json::Value = serde_json::from_str(stderr.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("last line is not JSON ({e}):\n{stderr}"));
    assert_eq!(last["level"], "ERROR", "{last}");
    assert_eq!(last["exit_code"], 2, "{last}");
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("settings.yaml: mqtt.port: ")),
        "{last}"
    );
    assert!(
        !stderr.contains("\nerror: ") && !stderr.starts_with("error: "),
        "{stderr}"
    );
}
