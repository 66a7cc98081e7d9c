//! `uns-kafka transform` end to end: the real binary running the real
//! compiled components (`uns_default.wasm`, `test_faulty.wasm`).
//!
//! The components are built with
//! `cargo build --release --target wasm32-wasip2 -p uns-default -p test-faulty`
//! when missing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use prost::Message as _;
use serde_json::{json, Value};
use uns_default::sparkplug::{datatype, payload::metric, payload::Metric, Payload};

mod common;
use common::component;

/// A shared compile cache, so each test does not pay for Cranelift again.
fn shared_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("uns-kafka-test-cache")
}

/// A config dir holding `settings` as settings.yaml (plus the shared cache
/// unless the settings name one).
fn config_dir(settings: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut text = settings.to_owned();
    if !text.contains("cache_dir") {
        let cache = shared_cache().display().to_string();
        if text.contains("transform:") {
            text = text.replace("transform:", &format!("transform:\n  cache_dir: {cache:?}"));
        } else {
            text.push_str(&format!("\ntransform:\n  cache_dir: {cache:?}\n"));
        }
    }
    std::fs::write(dir.path().join("settings.yaml"), text).unwrap();
    dir
}

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_uns-kafka"))
        .arg("transform")
        .args(args)
        // Keep the user's cache and environment out of the tests.
        .env("XDG_CACHE_HOME", shared_cache())
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

/// `uns-kafka transform --input -` with `component` over `stdin`.
fn run_stdin(config: &Path, component_name: &str, stdin: &[u8]) -> Output {
    run(
        &[
            "--config",
            config.to_str().unwrap(),
            "--component",
            component(component_name).to_str().unwrap(),
            "--input",
            "-",
        ],
        stdin,
    )
}

/// Runs over stdin lines and returns the parsed output lines, asserting
/// success and one output line per input line.
fn transform_lines(config: &Path, component_path: &Path, lines: &[Value]) -> Vec<Value> {
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let out = run(
        &[
            "--config",
            config.to_str().unwrap(),
            "--component",
            component_path.to_str().unwrap(),
            "--input",
            "-",
        ],
        input.as_bytes(),
    );
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed = parse_output(&out.stdout);
    assert_eq!(parsed.len(), lines.len(), "one output line per input line");
    parsed
}

fn parse_output(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8(stdout.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad output line {l}: {e}")))
        .collect()
}

fn only_record(out: &Value) -> &Value {
    let records = out["records"]
        .as_array()
        .unwrap_or_else(|| panic!("expected records, got {out}"));
    assert_eq!(records.len(), 1, "{out}");
    &records[0]
}

fn error_kind(out: &Value) -> &str {
    out["error"]["kind"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error, got {out}"))
}

#[test]
fn json_message_becomes_one_record() {
    let conf = config_dir("");
    let out = transform_lines(
        conf.path(),
        &component("uns_default"),
        &[json!({"topic": "a/b/c", "payload": {"timestamp": 1700000000000u64, "x": 1}})],
    );
    let r = only_record(&out[0]);
    assert_eq!(r["topic"], "a_b_c");
    assert_eq!(r["key"], "a/b/c");
    assert_eq!(r["timestamp"], 1_700_000_000_000u64);
    assert_eq!(r["value"], json!({"timestamp": 1700000000000u64, "x": 1}));
    assert_eq!(r["headers"]["mqtt_topic"], "a/b/c");
    assert_eq!(r["headers"]["mqtt_qos"], "0");
    assert_eq!(r["headers"]["mqtt_retain"], "false");
    assert_eq!(r["headers"]["transform_name"], "uns-default");
    assert!(r["headers"]["transform_version"].is_string());
}

#[test]
fn payload_b64_and_optional_fields_reach_the_component() {
    let conf = config_dir("");
    let payload = B64.encode(br#"{"v": 2}"#);
    let out = transform_lines(
        conf.path(),
        &component("uns_default"),
        &[json!({
            "topic": "plant/x",
            "payload_b64": payload,
            "qos": 2,
            "retain": true,
            "user_properties": [["site", "north"], ["site", "south"]],
            "content_type": "application/json",
        })],
    );
    let r = only_record(&out[0]);
    assert_eq!(r["value"], json!({"v": 2}));
    assert_eq!(r["headers"]["mqtt_qos"], "2");
    assert_eq!(r["headers"]["mqtt_retain"], "true");
    assert_eq!(r["headers"]["mqtt_content_type"], "application/json");
    // Repeated names: the last value, as Kafka's header lookup returns it.
    assert_eq!(r["headers"]["site"], "south");
    // No timestamp attribute: the receive time, i.e. about now.
    let ts = r["timestamp"].as_i64().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        (now - 60_000..=now).contains(&ts),
        "timestamp {ts}, now {now}"
    );
}

/// `"payload": <JSON>` reaches the component as the user wrote it, less
/// the whitespace: `1e3`, `1.50`, an id beyond 64 bits and `\u00e9` keep
/// their spelling, as a device would publish them (test-faulty echoes the
/// payload, and the output keeps the record's text).
#[test]
fn a_json_payload_reaches_the_component_as_written() {
    let conf = config_dir("");
    let line = r#"{"topic": "a/b", "payload": {"v": 1e3, "p": 1.50, "id": 123456789012345678901234567890, "s": "\u00e9 x"}}"#;
    let out = run_stdin(conf.path(), "test_faulty", format!("{line}\n").as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(
            r#","value":{"v":1e3,"p":1.50,"id":123456789012345678901234567890,"s":"\u00e9 x"}}"#
        ),
        "{text}"
    );
}

#[test]
fn sparkplug_state_message_is_json() {
    let conf = config_dir("");
    let out = transform_lines(
        conf.path(),
        &component("uns_default"),
        &[
            json!({"topic": "spBv1.0/STATE/host1", "payload": {"online": true, "timestamp": 1700000000123u64}}),
        ],
    );
    let r = only_record(&out[0]);
    assert_eq!(r["topic"], "spBv1.0_STATE_host1");
    assert_eq!(r["key"], "spBv1.0/STATE/host1");
    assert_eq!(r["timestamp"], 1_700_000_000_123u64);
    assert_eq!(
        r["value"],
        json!({"online": true, "timestamp": 1700000000123u64})
    );
}

fn metric(name: &str, dt: u32, value: metric::Value) -> Metric {
    Metric {
        name: Some(name.to_owned()),
        datatype: Some(dt),
        value: Some(value),
        ..Default::default()
    }
}

#[test]
fn sparkplug_nbirth_decodes_metrics_of_several_datatypes() {
    use metric::Value::*;
    let int16s: Vec<u8> = [-300i16, 7].iter().flat_map(|x| x.to_le_bytes()).collect();
    let payload = Payload {
        timestamp: Some(1_700_000_000_500),
        seq: Some(0),
        metrics: vec![
            metric("bdSeq", datatype::INT64, LongValue(3)),
            // Int8 -5 travels as two's complement in a uint32.
            metric("i8", datatype::INT8, IntValue((-5i8) as u8 as u32)),
            metric(
                "i64",
                datatype::INT64,
                LongValue((-9_000_000_000i64) as u64),
            ),
            metric("f", datatype::FLOAT, FloatValue(1.5)),
            metric("d", datatype::DOUBLE, DoubleValue(-2.25)),
            metric("b", datatype::BOOLEAN, BooleanValue(true)),
            metric("s", datatype::STRING, StringValue("hello".into())),
            metric("arr", datatype::INT16_ARRAY, BytesValue(int16s)),
        ],
        ..Default::default()
    };
    let conf = config_dir("");
    let out = transform_lines(
        conf.path(),
        &component("uns_default"),
        &[
            json!({"topic": "spBv1.0/G1/NBIRTH/edge1", "payload_b64": B64.encode(payload.encode_to_vec())}),
        ],
    );
    let r = only_record(&out[0]);
    assert_eq!(r["topic"], "spBv1.0_G1_NBIRTH_edge1");
    assert_eq!(r["timestamp"], 1_700_000_000_500u64);
    let v = &r["value"];
    assert_eq!(v["timestamp"], 1_700_000_000_500u64);
    assert_eq!(v["seq"], 0);
    let metrics = v["metrics"].as_array().unwrap();
    let by_name = |n: &str| {
        metrics
            .iter()
            .find(|m| m["name"] == n)
            .unwrap_or_else(|| panic!("no metric {n} in {v}"))
    };
    assert_eq!(by_name("bdSeq")["value"], 3);
    assert_eq!(by_name("i8")["value"], -5);
    assert_eq!(by_name("i8")["datatype"], datatype::INT8);
    assert_eq!(by_name("i64")["value"], -9_000_000_000i64);
    assert_eq!(by_name("f")["value"], 1.5);
    assert_eq!(by_name("d")["value"], -2.25);
    assert_eq!(by_name("b")["value"], true);
    assert_eq!(by_name("s")["value"], "hello");
    assert_eq!(by_name("arr")["value"], json!([-300, 7]));
}

/// An input line carrying `p` on `topic`.
fn sparkplug_line(topic: &str, p: &Payload) -> Value {
    json!({"topic": topic, "payload_b64": B64.encode(p.encode_to_vec())})
}

/// An NBIRTH declaring metric `temp`, alias 1, an Int32.
fn nbirth_int32_alias_1() -> Payload {
    Payload {
        seq: Some(0),
        metrics: vec![Metric {
            alias: Some(1),
            ..metric("temp", datatype::INT32, metric::Value::IntValue(0))
        }],
        ..Default::default()
    }
}

/// An NDATA of alias 1 alone, without its datatype: `value` as the wire
/// carries an Int32 (its unsigned 32 bits).
fn ndata_alias_1(seq: u64, value: i32) -> Payload {
    Payload {
        seq: Some(seq),
        metrics: vec![Metric {
            alias: Some(1),
            value: Some(metric::Value::IntValue(value as u32)),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// In the compiled component, over batches: NDATA metrics that carry only
/// an alias read their sign from the NBIRTH, which the instance remembers
/// (its table lives outside the per-batch arena, so hundreds of batches on
/// run as before).
#[test]
fn sparkplug_ndata_without_datatypes_takes_the_sign_from_the_nbirth() {
    let nbirth = nbirth_int32_alias_1();
    let ndata = |i: u32| ndata_alias_1(u64::from(i % 256), -(i as i32));
    let line = sparkplug_line;
    let mut lines = vec![line("spBv1.0/G1/NDATA/edge1", &ndata(7))];
    lines.push(line("spBv1.0/G1/NBIRTH/edge1", &nbirth));
    lines.extend((1..=600).map(|i| line("spBv1.0/G1/NDATA/edge1", &ndata(i))));
    let conf = config_dir("");
    let out = transform_lines(conf.path(), &component("uns_default"), &lines);
    // Before the NBIRTH: the wire's value.
    assert_eq!(
        only_record(&out[0])["value"]["metrics"][0]["value"],
        4_294_967_289u32
    );
    for (i, o) in out[2..].iter().enumerate() {
        let m = &only_record(o)["value"]["metrics"][0];
        assert_eq!(m["value"], -(i as i64 + 1), "{o}");
        assert!(m.get("datatype").is_none(), "{o}");
    }
}

/// A file's lines go to the component in batches cut as `run` cuts them,
/// also by payload bytes: a batch of 200 lines of 400 KB in a 64 MiB
/// instance failed on memory, and the fresh instance that retried them
/// had forgotten the NBIRTH of an earlier batch, so a later NDATA read
/// Int32 -5 as 4294967291 where `run` gives -5.
#[test]
fn a_file_is_cut_into_batches_by_payload_bytes_too() {
    let (nbirth, ndata) = (nbirth_int32_alias_1(), ndata_alias_1(1, -5));
    let sparkplug = |topic: &str, p: &Payload| sparkplug_line(topic, p).to_string();
    // The NBIRTH and 255 small lines fill the first batch of 256.
    let mut lines = vec![sparkplug("spBv1.0/G1/NBIRTH/edge1", &nbirth)];
    lines.extend((1..256).map(|i| json!({"topic": "a/small", "payload": {"i": i}}).to_string()));
    let big = "x".repeat(400_000);
    lines.extend((0..200).map(|_| json!({"topic": "a/big", "payload": {"x": big}}).to_string()));
    lines.push(sparkplug("spBv1.0/G1/NDATA/edge1", &ndata));
    let conf = config_dir("transform:\n  max_memory_mb: 64\n");
    let input = conf.path().join("in.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = run(
        &[
            "--config",
            conf.path().to_str().unwrap(),
            "--component",
            component("uns_default").to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("component failed on a batch"), "{stderr}");
    let parsed = parse_output(&out.stdout);
    assert_eq!(parsed.len(), lines.len());
    let last = only_record(&parsed[lines.len() - 1]);
    assert_eq!(last["value"]["metrics"][0]["value"], -5, "{last}");
}

/// The README's first way to build a component, `cargo component build`
/// (wasm32-wasip1 and the preview1 adapter, other WASI imports than the
/// wasip2 build): it loads and transforms exactly as the wasip2 build the
/// other tests run. Built here, as `scripts/test.sh` does.
#[test]
fn the_cargo_component_build_transforms_as_the_wasip2_build_does() {
    let wasip1 = common::target_dir().join("wasm32-wasip1/release/uns_default.wasm");
    // Always: a no-op when up to date, and never a stale build compared.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(common::workspace().join("components/uns-default"))
        .args(["component", "build", "--release", "--locked"])
        .stdout(Stdio::null())
        .status()
        .expect("run cargo component (cargo install cargo-component)");
    assert!(status.success(), "cargo component build failed");
    use metric::Value::*;
    // Timestamps given: without them the record's is the time of reading.
    let birth = Payload {
        timestamp: Some(1_700_000_000_100),
        seq: Some(0),
        metrics: vec![Metric {
            alias: Some(1),
            ..metric("t", datatype::INT32, IntValue(0))
        }],
        ..Default::default()
    };
    let data = Payload {
        timestamp: Some(1_700_000_000_200),
        seq: Some(1),
        metrics: vec![Metric {
            alias: Some(1),
            value: Some(IntValue((-4i32) as u32)),
            ..Default::default()
        }],
        ..Default::default()
    };
    let lines = [
        json!({"topic": "a/b/c", "payload": {"timestamp": 1700000000000u64, "x": [1, 2.5, "é"]}}),
        json!({"topic": "spBv1.0/G/NBIRTH/e", "payload_b64": B64.encode(birth.encode_to_vec())}),
        json!({"topic": "spBv1.0/G/NDATA/e", "payload_b64": B64.encode(data.encode_to_vec())}),
        json!({"topic": "a/b", "payload_b64": B64.encode(b"not json")}),
    ];
    let conf = config_dir("");
    let p2 = transform_lines(conf.path(), &component("uns_default"), &lines);
    let p1 = transform_lines(conf.path(), &wasip1, &lines);
    assert_eq!(p1, p2);
    assert_eq!(only_record(&p1[2])["value"]["metrics"][0]["value"], -4);
    assert_eq!(error_kind(&p1[3]), "decode");
}

#[test]
fn bad_payloads_and_bad_input_lines_each_get_an_error_line() {
    let conf = config_dir("");
    let input = concat!(
        // A byte order mark first, as Windows editors write: not an error.
        "\u{feff}{\"topic\": \"a/b\", \"payload_b64\": \"bm90IGpzb24=\"}\n", // "not json"
        "this is not json\n",
        "{\"payload\": 1}\n",
        "{\"topic\": \"a/b\", \"payload_b64\": \"***\"}\n",
        "\n",
        "{\"topic\": \"a/b\", \"payload\": {\"ok\": true}}\n",
        // A misspelt field is an error, not a message run without it.
        "{\"topic\": \"a/b\", \"payload\": {}, \"retained\": true}\n",
    );
    let out = run_stdin(conf.path(), "uns_default", input.as_bytes());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = parse_output(&out.stdout);
    assert_eq!(lines.len(), 7);
    assert_eq!(error_kind(&lines[0]), "decode");
    assert_eq!(error_kind(&lines[6]), "input");
    let misspelt = lines[6]["error"]["message"].as_str().unwrap();
    assert!(
        misspelt.starts_with("line 7: ") && misspelt.contains("unknown field `retained`"),
        "{misspelt}"
    );
    for (i, line) in lines.iter().enumerate().skip(1).take(4) {
        assert_eq!(error_kind(line), "input", "line {}: {line}", i + 1);
        let message = line["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("line {}: ", i + 1)),
            "{message}"
        );
    }
    assert_eq!(only_record(&lines[5])["value"], json!({"ok": true}));
}

/// Piped from `mosquitto_sub`, each line is answered as it arrives, not
/// when 256 have or the pipe closes.
#[test]
fn stdin_is_answered_line_by_line() {
    use std::io::BufRead;
    let conf = config_dir("");
    let mut child = Command::new(env!("CARGO_BIN_EXE_uns-kafka"))
        .args(["transform", "--config", conf.path().to_str().unwrap()])
        .args(["--component", component("uns_default").to_str().unwrap()])
        .args(["--input", "-"])
        .env("XDG_CACHE_HOME", shared_cache())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    // Should the answers not come, the test fails instead of hanging.
    let (done, watchdog) = std::sync::mpsc::channel::<()>();
    let pid = child.id().to_string();
    std::thread::spawn(move || {
        // Only on the timeout: a dropped sender means the child was reaped,
        // and its pid may be another process's by now.
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            watchdog.recv_timeout(std::time::Duration::from_secs(60))
        {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
    });
    for n in 0..3 {
        writeln!(stdin, "{{\"topic\": \"a/b\", \"payload\": {{\"n\": {n}}}}}").unwrap();
        stdin.flush().unwrap();
        // stdin stays open: the answer must come anyway.
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(only_record(&v)["value"], json!({"n": n}));
    }
    drop(stdin);
    let status = child.wait().unwrap();
    let _ = done.send(());
    assert!(status.success());
}

#[test]
fn trap_and_endless_loop_cost_only_their_own_message() {
    let conf = config_dir("transform:\n  timeout_ms: 500\n");
    let faulty = component("test_faulty");
    let line =
        |topic: &str, payload: &[u8]| json!({"topic": topic, "payload_b64": B64.encode(payload)});
    let out = transform_lines(
        conf.path(),
        &faulty,
        &[
            line("t/1", b"{\"n\":1}"),
            line("t/2", b"trap"),
            line("t/3", b"{\"n\":3}"),
            line("t/4", b"loop"),
            line("t/5", b"{\"n\":5}"),
        ],
    );
    assert_eq!(only_record(&out[0])["value"], json!({"n": 1}));
    assert_eq!(error_kind(&out[1]), "trap", "{}", out[1]);
    // The panic message the component wrote to stderr before it trapped
    // says why, and where.
    let reason = out[1]["error"]["message"].as_str().unwrap();
    assert!(
        reason.contains("its stderr: ")
            && reason.contains("panicked at components/test-faulty/src/lib.rs:")
            && reason.contains("asked to trap"),
        "{reason}"
    );
    assert_eq!(only_record(&out[2])["value"], json!({"n": 3}));
    assert_eq!(only_record(&out[2])["topic"], "t_3");
    assert_eq!(error_kind(&out[3]), "timeout", "{}", out[3]);
    assert_eq!(only_record(&out[4])["value"], json!({"n": 5}));
}

/// A record whose topic Kafka would refuse fails its message here as it
/// would in `run` (dead-lettered as `invalid-topic`), so an author sees it
/// before a rollout instead of a record that looks fine.
#[test]
fn a_record_for_a_topic_kafka_would_refuse_is_an_invalid_topic_error() {
    let conf = config_dir("");
    let out = transform_lines(
        conf.path(),
        &component("test_faulty"),
        &[
            json!({"topic": "m/1", "payload_b64": B64.encode(b"bad-topic")}),
            json!({"topic": "m/2", "payload_b64": B64.encode(b"plain")}),
        ],
    );
    assert_eq!(error_kind(&out[0]), "invalid-topic", "{}", out[0]);
    assert_eq!(
        out[0]["error"]["message"],
        "component returned Kafka topic \"bad topic m/1\": illegal character ' ' in \"bad topic m/1\"; Kafka topics use only [A-Za-z0-9._-]"
    );
    assert_eq!(only_record(&out[1])["topic"], "m_2");
}

#[test]
fn memory_hog_gets_a_memory_error_and_the_next_message_works() {
    let conf = config_dir("transform:\n  max_memory_mb: 32\n  timeout_ms: 500\n");
    let out = transform_lines(
        conf.path(),
        &component("test_faulty"),
        &[
            json!({"topic": "m/1", "payload_b64": B64.encode(b"alloc")}),
            json!({"topic": "m/2", "payload_b64": B64.encode(b"plain")}),
        ],
    );
    assert_eq!(error_kind(&out[0]), "memory", "{}", out[0]);
    assert!(out[0]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("32 MiB"));
    // Not JSON: the value comes back as base64.
    assert_eq!(
        only_record(&out[1])["value"],
        json!({"b64": B64.encode(b"plain")})
    );
}

#[test]
fn settings_yaml_configures_the_component() {
    let conf = config_dir(
        "mqtt:\n  ignored_attributes: {\"a/+\": [\"x\"]}\n  timestamp_attribute: ts\ntransform:\n  topic_separator: \".\"\n",
    );
    let out = transform_lines(
        conf.path(),
        &component("uns_default"),
        &[
            json!({"topic": "a/b", "payload": {"ts": 1600000000000u64, "x": 1, "y": 2}}),
            json!({"topic": "c/d", "payload": {"ts": 5, "x": 1}}),
        ],
    );
    let filtered = only_record(&out[0]);
    assert_eq!(filtered["topic"], "a.b");
    assert_eq!(filtered["value"], json!({"ts": 1600000000000u64, "y": 2}));
    assert_eq!(filtered["timestamp"], 1_600_000_000_000u64);
    let untouched = only_record(&out[1]);
    assert_eq!(untouched["value"], json!({"ts": 5, "x": 1}));
    assert_eq!(untouched["timestamp"], 5);
}

#[test]
fn component_from_settings_and_input_from_a_file() {
    let faulty = component("test_faulty");
    let conf = config_dir(&format!(
        "transform:\n  component: {:?}\n",
        faulty.display().to_string()
    ));
    let input = conf.path().join("in.jsonl");
    std::fs::write(&input, "{\"topic\": \"f/g\", \"payload\": [1, 2]}\n").unwrap();
    let out = run(
        &[
            "--config",
            conf.path().to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = parse_output(&out.stdout);
    // test-faulty names no transform headers: proves which component ran.
    let r = only_record(&lines[0]);
    assert_eq!(r["topic"], "f_g");
    assert_eq!(r["headers"], json!({}));
    assert_eq!(r["value"], json!([1, 2]));
}

/// A `RUST_LOG` with a typo is reported, not ignored in silence, and the
/// transform still runs with the default filter.
#[test]
fn a_rust_log_that_does_not_parse_is_reported() {
    let conf = config_dir("");
    let payload = conf.path().join("payload.json");
    std::fs::write(&payload, "{\"x\": 1}").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_uns-kafka"))
        .args(["transform", "--config", conf.path().to_str().unwrap()])
        .args(["--component", component("uns_default").to_str().unwrap()])
        .args([
            "--topic",
            "a/b/c",
            "--payload-file",
            payload.to_str().unwrap(),
        ])
        .env("XDG_CACHE_HOME", shared_cache())
        .env("RUST_LOG", "warn,uns_kafka=loud")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("RUST_LOG ignored, using \"warn\": \"warn,uns_kafka=loud\": "),
        "{stderr}"
    );
    assert_eq!(only_record(&parse_output(&out.stdout)[0])["topic"], "a_b_c");
}

#[test]
fn single_message_from_topic_and_payload_file() {
    let conf = config_dir("");
    let payload = conf.path().join("payload.json");
    std::fs::write(&payload, "{\"timestamp\": 1700000000000,\n \"x\": 1}\n").unwrap();
    let out = run(
        &[
            "--config",
            conf.path().to_str().unwrap(),
            "--component",
            component("uns_default").to_str().unwrap(),
            "--topic",
            "a/b/c",
            "--payload-file",
            payload.to_str().unwrap(),
        ],
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = parse_output(&out.stdout);
    assert_eq!(lines.len(), 1);
    let r = only_record(&lines[0]);
    assert_eq!(r["topic"], "a_b_c");
    assert_eq!(r["value"], json!({"timestamp": 1700000000000u64, "x": 1}));
    // One output line even though the payload spanned two.
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

#[test]
fn usage_and_configuration_errors_exit_2_and_name_the_problem() {
    let conf = config_dir("");
    let c = conf.path().to_str().unwrap();
    let wasm = component("uns_default");
    let w = wasm.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--config", c, "--component", w], "--input"),
        (
            vec![
                "--config",
                c,
                "--component",
                w,
                "--input",
                "-",
                "--topic",
                "a",
            ],
            "--topic",
        ),
        (
            vec!["--config", c, "--component", w, "--topic", "a"],
            "--payload-file",
        ),
        (
            vec![
                "--config",
                c,
                "--component",
                w,
                "--input",
                "/nonexistent/in.jsonl",
            ],
            "/nonexistent/in.jsonl",
        ),
        (
            vec![
                "--config",
                c,
                "--component",
                "/nonexistent/x.wasm",
                "--input",
                "-",
            ],
            "/nonexistent/x.wasm",
        ),
    ];
    for (args, needle) in cases {
        let out = run(&args, b"");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }

    // Not a component at all.
    let junk = conf.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let out = run(
        &[
            "--config",
            c,
            "--component",
            junk.to_str().unwrap(),
            "--input",
            "-",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.wasm"));

    // A core module (`cargo build --target wasm32-unknown-unknown`), and a
    // component built against another version of the WIT package: each
    // error says what to do about it.
    let name = b"uns:bridge/transform@0.2.0";
    let mut newer = b"\0asm\x0d\0\x01\0".to_vec();
    // An instance of no exports, exported under `name`.
    newer.extend([0x05, 0x03, 0x01, 0x01, 0x00]);
    newer.extend([0x0b, 6 + name.len() as u8, 0x01, 0x00, name.len() as u8]);
    newer.extend(name);
    newer.extend([0x05, 0x00, 0x00]);
    for (file, bytes, needle) in [
        (
            "module.wasm",
            b"\0asm\x01\0\0\0".to_vec(),
            "core WebAssembly module, not a component",
        ),
        (
            "newer.wasm",
            newer,
            "does not export uns:bridge/transform@0.1.0 but uns:bridge/transform@0.2.0",
        ),
    ] {
        let path = conf.path().join(file);
        std::fs::write(&path, bytes).unwrap();
        let out = run(
            &[
                "--config",
                c,
                "--component",
                path.to_str().unwrap(),
                "--input",
                "-",
            ],
            b"",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        assert!(stderr.contains(needle), "{file}: {stderr}");
    }

    // The component's init rejects the configuration (an invalid filter).
    let bad = config_dir("mqtt:\n  ignored_attributes: {\"a/#/c\": \"x\"}\n");
    let out = run(
        &[
            "--config",
            bad.path().to_str().unwrap(),
            "--component",
            w,
            "--input",
            "-",
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("rejected its configuration"), "{stderr}");
    assert!(stderr.contains("a/#/c"), "{stderr}");

    // A broken settings.yaml is a configuration error too.
    let broken = config_dir("transform:\n  max_memory_mb: 0\n");
    let out = run(
        &[
            "--config",
            broken.path().to_str().unwrap(),
            "--component",
            w,
            "--input",
            "-",
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("max_memory_mb"), "{stderr}");
}

#[test]
fn compiled_component_is_cached_on_disk_and_reused() {
    let cache = tempfile::tempdir().unwrap();
    let conf = config_dir(&format!(
        "transform:\n  cache_dir: {:?}\n",
        cache.path().display().to_string()
    ));
    let lines = [json!({"topic": "a/b/c", "payload": {"x": 1}})];
    let cwasm = || -> Vec<PathBuf> {
        std::fs::read_dir(cache.path())
            .map(|d| {
                d.map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(cwasm().is_empty());
    let first = transform_lines(conf.path(), &component("uns_default"), &lines);
    let entries = cwasm();
    assert_eq!(entries.len(), 1, "one cache entry after the first run");
    let modified = std::fs::metadata(&entries[0]).unwrap().modified().unwrap();

    let second = transform_lines(conf.path(), &component("uns_default"), &lines);
    assert_eq!(
        only_record(&first[0])["value"],
        only_record(&second[0])["value"]
    );
    assert_eq!(cwasm(), entries, "the second run reused the entry");
    assert_eq!(
        std::fs::metadata(&entries[0]).unwrap().modified().unwrap(),
        modified,
        "the second run did not rewrite the entry"
    );

    // A corrupt entry is recompiled, not fatal.
    std::fs::write(&entries[0], b"garbage").unwrap();
    let third = transform_lines(conf.path(), &component("uns_default"), &lines);
    assert_eq!(only_record(&third[0])["value"], json!({"x": 1}));
    assert!(
        std::fs::read(&entries[0]).unwrap().len() > 1000,
        "entry rewritten"
    );
}

#[test]
fn large_input_streams_in_order() {
    let conf = config_dir("");
    let lines: Vec<Value> = (0..1000)
        .map(|i| json!({"topic": format!("s/{i}"), "payload": {"i": i}}))
        .collect();
    let out = transform_lines(conf.path(), &component("uns_default"), &lines);
    for (i, o) in out.iter().enumerate() {
        let r = only_record(o);
        assert_eq!(r["key"], format!("s/{i}"));
        assert_eq!(r["value"], json!({"i": i}));
    }
}
