//! A transform component that misbehaves on request, so the host's tests can
//! check that a trap, a runaway loop or a memory hog costs one message, not
//! the bridge. Payload `trap` traps, `loop` never returns, `sleep` sleeps
//! an hour (waiting in the host, not in wasm), `leak` keeps 8 MiB for the
//! instance's life and is then bridged, `alloc` grows
//! memory until the limit traps; `noisy` writes a line to stderr and then
//! is bridged like anything else; `huge-error` is rejected with a 2 MiB
//! reason; `bad-topic` becomes a record for a Kafka topic with a space in
//! its name; `half-bad-topic` becomes a good record and then a bad-topic
//! one; `drop` becomes no record at all (the WIT's way to filter a message
//! out); anything else becomes one record on the
//! topic with `/` replaced by `_`, keyed by the topic, payload unchanged.
//! `init` fails when its configuration mentions `fail_init`, and spins
//! until `transform.timeout_ms` stops it when it mentions `slow_init` (a
//! component may not sleep).

#[cfg(target_arch = "wasm32")]
mod component {
    wit_bindgen::generate!({
        world: "transformer",
        path: "../../wit",
    });

    use exports::uns::bridge::transform::Guest;
    use uns::bridge::types::{ComponentInfo, ErrorKind, KafkaRecord, MqttMessage, TransformError};

    struct Faulty;

    impl Guest for Faulty {
        fn info() -> ComponentInfo {
            ComponentInfo {
                name: "test-faulty".to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
            }
        }

        fn init(config: String) -> Result<(), String> {
            if config.contains("fail_init") {
                return Err("asked to fail init".to_owned());
            }
            if config.contains("slow_init") {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Ok(())
        }

        fn transform_batch(
            messages: Vec<MqttMessage>,
        ) -> Vec<Result<Vec<KafkaRecord>, TransformError>> {
            messages.into_iter().map(one).collect()
        }
    }

    std::thread_local! {
        static LEAKED: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    fn one(m: MqttMessage) -> Result<Vec<KafkaRecord>, TransformError> {
        match m.payload.as_slice() {
            b"trap" => panic!("asked to trap"),
            b"leak" => {
                // 8 MiB kept for the instance's life, as a leak would.
                LEAKED.with(|l| {
                    l.borrow_mut()
                        .push(std::hint::black_box(vec![1u8; 8 << 20]))
                });
                Ok(vec![record(m.topic.replace('/', "_"), None, m.payload)])
            }
            b"sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Err(TransformError {
                    kind: ErrorKind::Internal,
                    message: "slept an hour".to_owned(),
                })
            }
            b"loop" => {
                let mut n = 0u64;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            b"alloc" => {
                // Kept alive and written to, so every page really is claimed.
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    hog.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hog);
                }
            }
            b"noisy" => {
                eprintln!("noisy line from {}", m.topic);
                Ok(vec![record(m.topic.replace('/', "_"), None, m.payload)])
            }
            b"huge-error" => Err(TransformError {
                kind: ErrorKind::Rejected,
                message: format!("rejected: {}", "x".repeat(2 << 20)),
            }),
            b"half-bad-topic" => Ok(vec![
                record(m.topic.replace('/', "_"), None, m.payload.clone()),
                record(format!("bad topic {}", m.topic), None, m.payload),
            ]),
            b"drop" => Ok(Vec::new()),
            b"bad-topic" => Ok(vec![record(
                format!("bad topic {}", m.topic),
                None,
                m.payload,
            )]),
            _ => Ok(vec![record(
                m.topic.replace('/', "_"),
                Some(m.topic.into_bytes()),
                m.payload,
            )]),
        }
    }

    fn record(topic: String, key: Option<Vec<u8>>, value: Vec<u8>) -> KafkaRecord {
        KafkaRecord {
            topic,
            key,
            value: Some(value),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    export!(Faulty);
}
