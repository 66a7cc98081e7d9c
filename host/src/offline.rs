//! `uns-kafka transform`: runs a component over messages from a file, with
//! no broker, so a transform author can see what the bridge would produce.
//!
//! One JSON line in, one JSON line out, in order, whatever happened to the
//! message; a bad input line gets an `input` error line rather than stopping
//! the run, so the output can be pasted beside the input.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;

use crate::config;
use crate::error::CliError;
use crate::message::{now_ms, KafkaRecord, MessageError, MqttMessage, TransformOutcome};
use crate::pipeline::{batch_byte_budget, invalid_topic};
use crate::transform::{default_component_path, RuntimeOptions, TransformError, TransformRuntime};

/// Messages per component call: enough to amortise the sandbox crossing,
/// small enough to stream.
const BATCH: usize = 256;

/// Arguments of `uns-kafka transform`.
#[derive(Debug, clap::Args)]
pub struct TransformArgs {
    /// Configuration directory (settings.yaml; broker settings not needed).
    #[arg(long, value_name = "DIR", default_value = "conf")]
    pub config: PathBuf,
    /// The component to run; default: transform.component, else the
    /// default component installed with uns-kafka.
    #[arg(long, value_name = "FILE.wasm")]
    pub component: Option<PathBuf>,
    /// JSON lines, `{"topic": ..., "payload_b64": ...}` or `{"topic": ...,
    /// "payload": <JSON>}`; `-` reads stdin.
    #[arg(long, value_name = "FILE.jsonl", conflicts_with_all = ["topic", "payload_file"])]
    pub input: Option<String>,
    /// Topic of a single message (with --payload-file).
    #[arg(long, value_name = "T", requires = "payload_file")]
    pub topic: Option<String>,
    /// Payload of a single message, as raw bytes (with --topic).
    #[arg(long, value_name = "F", requires = "topic")]
    pub payload_file: Option<PathBuf>,
}

/// Runs the subcommand. Usage and configuration problems (exit 2) are found
/// before any output is written.
pub fn main(args: TransformArgs) -> Result<(), CliError> {
    crate::logging::init_warnings();
    let source = input_source(&args)?;
    let settings = config::load_offline(&args.config)?;
    let path = args
        .component
        .clone()
        .or_else(|| settings.transform.component.clone())
        .unwrap_or_else(default_component_path);
    let opts = RuntimeOptions::from(&settings.transform);
    let runtime =
        Arc::new(TransformRuntime::load(&path, opts).map_err(|e| CliError::Usage(e.to_string()))?);
    let mut transformer =
        runtime
            .instantiate(&settings.component_config())
            .map_err(|e| match e {
                TransformError::Init(why) => CliError::Usage(format!(
                    "component {} rejected its configuration (from {}): {why}",
                    path.display(),
                    settings.settings_file()
                )),
                other => CliError::Usage(other.to_string()),
            })?;

    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut line_buf = Vec::with_capacity(256);
    match source {
        Source::Single { topic, payload } => {
            let msg = message(topic, Bytes::from(payload), 0, false, Vec::new(), None);
            let outcome = transformer.transform_batch(std::slice::from_ref(&msg));
            for o in &outcome {
                write_outcome(&mut line_buf, o);
                out.write_all(&line_buf).map_err(write_err)?;
            }
        }
        Source::Lines { mut reader, stream } => {
            // From a pipe (`mosquitto_sub ... | uns-kafka transform --input
            // -`) each line is answered as it comes; from a file, in batches.
            let batch_size = if stream { 1 } else { BATCH };
            // As `run` cuts its batches: more payload than an eighth of the
            // instance's memory fails on memory, and the instance replaced
            // forgets its BIRTHs, so later output would differ from `run`'s.
            let batch_bytes = batch_byte_budget(settings.transform.max_memory_mb);
            let mut batch = Batch::default();
            let mut raw = Vec::with_capacity(1024);
            let mut line_no = 0usize;
            loop {
                raw.clear();
                let n = match reader.read_until(b'\n', &mut raw) {
                    Ok(n) => n,
                    Err(e) => {
                        // What was read gets its lines first.
                        batch.flush(&mut transformer, &mut out, &mut line_buf)?;
                        out.flush().map_err(write_err)?;
                        return Err(CliError::Other(anyhow::anyhow!("reading input: {e}")));
                    }
                };
                if n == 0 {
                    break;
                }
                line_no += 1;
                batch.push(parse_line(line_no, &raw));
                if batch.len() >= batch_size || batch.bytes >= batch_bytes {
                    batch.flush(&mut transformer, &mut out, &mut line_buf)?;
                    if stream {
                        out.flush().map_err(write_err)?;
                    }
                }
            }
            batch.flush(&mut transformer, &mut out, &mut line_buf)?;
        }
    }
    out.flush().map_err(write_err)?;
    Ok(())
}

enum Source {
    Single {
        topic: String,
        payload: Vec<u8>,
    },
    Lines {
        reader: Box<dyn BufRead>,
        /// stdin: answer each line as it arrives.
        stream: bool,
    },
}

fn input_source(args: &TransformArgs) -> Result<Source, CliError> {
    match (&args.input, &args.topic, &args.payload_file) {
        (Some(input), None, None) if input == "-" => Ok(Source::Lines {
            reader: Box::new(BufReader::with_capacity(1 << 16, io::stdin())),
            stream: true,
        }),
        (Some(input), None, None) => File::open(input)
            .map(|f| Source::Lines {
                reader: Box::new(BufReader::with_capacity(1 << 16, f)),
                stream: false,
            })
            .map_err(|e| CliError::Usage(format!("cannot read input file {input}: {e}"))),
        (None, Some(topic), Some(file)) => {
            let mut payload = Vec::new();
            File::open(file)
                .and_then(|mut f| f.read_to_end(&mut payload))
                .map_err(|e| {
                    CliError::Usage(format!("cannot read payload file {}: {e}", file.display()))
                })?;
            Ok(Source::Single {
                topic: topic.clone(),
                payload,
            })
        }
        _ => Err(CliError::Usage(
            "give either --input FILE.jsonl (- for stdin) or --topic T --payload-file F".into(),
        )),
    }
}

fn write_err(e: io::Error) -> CliError {
    CliError::Other(anyhow::anyhow!("writing output: {e}"))
}

/// Input lines in order; only the parsable ones go to the component.
#[derive(Default)]
struct Batch {
    /// Per line: the index into `messages`, or the line's input error.
    slots: Vec<Result<usize, MessageError>>,
    messages: Vec<MqttMessage>,
    /// Payload bytes in `messages`.
    bytes: usize,
}

impl Batch {
    fn len(&self) -> usize {
        self.slots.len()
    }

    fn push(&mut self, parsed: Result<MqttMessage, MessageError>) {
        self.slots.push(parsed.map(|m| {
            self.bytes += m.payload.len();
            self.messages.push(m);
            self.messages.len() - 1
        }));
    }

    fn flush(
        &mut self,
        transformer: &mut crate::transform::Transformer,
        out: &mut impl Write,
        line_buf: &mut Vec<u8>,
    ) -> Result<(), CliError> {
        let outcomes = transformer.transform_batch(&self.messages);
        for slot in self.slots.drain(..) {
            match slot {
                Ok(i) => match outcomes.get(i) {
                    // As `run` would: a record Kafka would refuse fails its
                    // message.
                    Some(o) => match o.iter().flatten().find_map(invalid_topic) {
                        Some(invalid) => write_outcome(line_buf, &Err(invalid)),
                        None => write_outcome(line_buf, o),
                    },
                    None => write_outcome(
                        line_buf,
                        &Err(MessageError::new("internal", "no outcome from the runtime")),
                    ),
                },
                Err(e) => write_outcome(line_buf, &Err(e)),
            }
            out.write_all(line_buf).map_err(write_err)?;
        }
        self.messages.clear();
        self.bytes = 0;
        Ok(())
    }
}

/// Unknown fields are errors: `"retained": true` would otherwise run the
/// message as not retained without a word.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputLine {
    topic: String,
    #[serde(default)]
    payload_b64: Option<String>,
    /// `Some` even for `"payload": null` (a JSON `null` payload).
    #[serde(default, deserialize_with = "present")]
    payload: Option<Box<serde_json::value::RawValue>>,
    #[serde(default)]
    qos: Option<u8>,
    #[serde(default)]
    retain: Option<bool>,
    #[serde(default)]
    user_properties: Option<UserProperties>,
    #[serde(default)]
    content_type: Option<String>,
}

/// The payload's own text: numbers keep the digits the user wrote (`1e3`,
/// `1.50`, an id beyond 64 bits), as a device would publish them; a trip
/// through serde's numbers would respell them.
fn present<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Box<serde_json::value::RawValue>>, D::Error> {
    Box::<serde_json::value::RawValue>::deserialize(d).map(Some)
}

fn parse_line(line_no: usize, raw: &[u8]) -> Result<MqttMessage, MessageError> {
    let input_err = |why: String| MessageError::new("input", format!("line {line_no}: {why}"));
    let mut text = raw.trim_ascii();
    if line_no == 1 {
        // A byte order mark, as Windows editors write it.
        text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
    }
    if text.is_empty() {
        return Err(input_err("empty line".into()));
    }
    let line: InputLine =
        serde_json::from_slice(text).map_err(|e| input_err(format!("not an input object: {e}")))?;
    let payload = match (line.payload_b64, line.payload) {
        (Some(b64), None) => B64
            .decode(b64.as_bytes())
            .map_err(|e| input_err(format!("payload_b64 is not base64: {e}")))?,
        (None, Some(json)) => {
            let mut compact = Vec::with_capacity(json.get().len());
            minify_into(&mut compact, json.get());
            compact
        }
        (Some(_), Some(_)) => {
            return Err(input_err("give payload or payload_b64, not both".into()))
        }
        (None, None) => return Err(input_err("no payload or payload_b64".into())),
    };
    let qos = line.qos.unwrap_or(0);
    if qos > 2 {
        return Err(input_err(format!("qos must be 0, 1 or 2, got {qos}")));
    }
    Ok(message(
        line.topic,
        Bytes::from(payload),
        qos,
        line.retain.unwrap_or(false),
        line.user_properties
            .map(UserProperties::into_pairs)
            .unwrap_or_default(),
        line.content_type,
    ))
}

fn message(
    topic: String,
    payload: Bytes,
    qos: u8,
    retain: bool,
    user_properties: Vec<(String, String)>,
    content_type: Option<String>,
) -> MqttMessage {
    MqttMessage {
        topic,
        payload,
        qos,
        retain,
        user_properties,
        content_type,
        received_at_ms: now_ms(),
        subscribed: None,
    }
}

/// `{"name": "value"}` or `[["name", "value"], ...]` (MQTT allows repeats).
#[derive(Deserialize)]
#[serde(untagged)]
enum UserProperties {
    Pairs(Vec<(String, String)>),
    Map(serde_json::Map<String, serde_json::Value>),
}

impl UserProperties {
    fn into_pairs(self) -> Vec<(String, String)> {
        match self {
            UserProperties::Pairs(p) => p,
            UserProperties::Map(m) => m
                .into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect(),
        }
    }
}

/// Writes one output line (with its newline) into `buf`, replacing it.
fn write_outcome(buf: &mut Vec<u8>, outcome: &TransformOutcome) {
    buf.clear();
    match outcome {
        Ok(records) => {
            buf.extend_from_slice(b"{\"records\":[");
            for (i, r) in records.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                write_record(buf, r);
            }
            buf.extend_from_slice(b"]}");
        }
        Err(e) => {
            buf.extend_from_slice(b"{\"error\":{\"kind\":");
            json_string(buf, &e.kind);
            buf.extend_from_slice(b",\"message\":");
            json_string(buf, &e.message);
            buf.extend_from_slice(b"}}");
        }
    }
    buf.push(b'\n');
}

fn write_record(buf: &mut Vec<u8>, r: &KafkaRecord) {
    buf.extend_from_slice(b"{\"topic\":");
    json_string(buf, &r.topic);
    buf.extend_from_slice(b",\"key\":");
    match &r.key {
        Some(k) => text_or_b64(buf, k),
        None => buf.extend_from_slice(b"null"),
    }
    // A JSON object cannot repeat a name; Kafka's header lookup takes the
    // last value, so each name appears once, where it first occurs, with
    // the last value.
    // Linear, not a scan per header: a component can return millions.
    buf.extend_from_slice(b",\"headers\":{");
    let mut last: std::collections::HashMap<&str, &[u8]> =
        std::collections::HashMap::with_capacity(r.headers.len());
    for (name, value) in &r.headers {
        last.insert(name.as_str(), value.as_slice());
    }
    let mut first = true;
    for (name, _) in &r.headers {
        let Some(value) = last.remove(name.as_str()) else {
            continue;
        };
        if !first {
            buf.push(b',');
        }
        first = false;
        json_string(buf, name);
        buf.push(b':');
        text_or_b64(buf, value);
    }
    buf.extend_from_slice(b"},\"timestamp\":");
    match r.timestamp_ms {
        Some(ts) => buf.extend_from_slice(ts.to_string().as_bytes()),
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"value\":");
    match &r.value {
        None => buf.extend_from_slice(b"null"),
        Some(v) => match json_text(v) {
            Some(text) => minify_into(buf, text),
            None => {
                buf.extend_from_slice(b"{\"b64\":\"");
                buf.extend_from_slice(B64.encode(v).as_bytes());
                buf.extend_from_slice(b"\"}");
            }
        },
    }
    buf.push(b'}');
}

/// Bytes as a JSON string when they are UTF-8, else as `{"b64": "..."}`,
/// as values are: replacement characters would hide what Kafka gets.
fn text_or_b64(buf: &mut Vec<u8>, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => json_string(buf, text),
        Err(_) => {
            buf.extend_from_slice(b"{\"b64\":\"");
            buf.extend_from_slice(B64.encode(bytes).as_bytes());
            buf.extend_from_slice(b"\"}");
        }
    }
}

fn json_string(buf: &mut Vec<u8>, s: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// The value as JSON text, if it is one JSON value in UTF-8.
fn json_text(v: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(v).ok()?;
    serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
    Some(text)
}

/// Copies valid JSON text without the whitespace between tokens, so it fits
/// on one output line and keeps the component's key order and number
/// spelling exactly (a round trip through `serde_json::Value` would not).
fn minify_into(buf: &mut Vec<u8>, json: &str) {
    let mut in_string = false;
    let mut escaped = false;
    for &b in json.as_bytes() {
        if in_string {
            buf.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            if b == b'"' {
                in_string = true;
            }
            buf.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys and header values that are not UTF-8 are shown as base64, as
    /// values are, never with replacement characters.
    #[test]
    fn bytes_that_are_not_utf8_are_shown_as_base64() {
        let record = KafkaRecord {
            topic: "t".into(),
            key: Some(vec![0xff, b'a']),
            value: Some(vec![0xfe]),
            headers: vec![("h".into(), vec![0xc3]), ("ok".into(), b"fine".to_vec())],
            timestamp_ms: Some(1),
        };
        let mut buf = Vec::new();
        write_record(&mut buf, &record);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            r#"{"topic":"t","key":{"b64":"/2E="},"headers":{"h":{"b64":"ww=="},"ok":"fine"},"timestamp":1,"value":{"b64":"/g=="}}"#
        );
    }
}
