//! The WIT binding layer: `uns:bridge/transform` on top of the native API.
//! Only renames types; all behaviour lives in the other modules.

use std::cell::RefCell;

use crate::births::Births;
use crate::config::Config;
use crate::error::ErrorKind;
use crate::transform::{transform_with, Message, NAME, VERSION};

wit_bindgen::generate!({
    world: "transformer",
    path: "../../wit",
});

use exports::uns::bridge::transform::Guest;
use uns::bridge::log::{log, Level};
use uns::bridge::types::{
    ComponentInfo, ErrorKind as WitErrorKind, Header, KafkaRecord, MqttMessage, Qos,
    TransformError as WitTransformError,
};

#[global_allocator]
static ALLOCATOR: crate::arena::BatchArena = crate::arena::BatchArena::new();

thread_local! {
    // A component instance is single-threaded; `init` fills this once.
    static CONFIG: RefCell<Option<Config>> = const { RefCell::new(None) };
    // What Sparkplug BIRTHs declared, for the instance's life; its own
    // allocations stay out of the batch arena.
    static BIRTHS: RefCell<Option<Births>> = const { RefCell::new(None) };
}

fn outside_the_arena(f: &mut dyn FnMut()) {
    ALLOCATOR.outside(f)
}

struct Component;

impl Guest for Component {
    fn info() -> ComponentInfo {
        ComponentInfo {
            name: NAME.to_owned(),
            version: VERSION.to_owned(),
        }
    }

    fn init(config: String) -> Result<(), String> {
        let config = Config::from_json(&config).map_err(|e| e.to_string())?;
        log(
            Level::Info,
            &format!(
                "{NAME} {VERSION}: {} ignored-attribute filter(s), timestamp attribute {:?}, topic separator {:?}, non-object JSON {}",
                config.ignored.len(),
                config.timestamp_attribute,
                config.separator,
                if config.accept_non_object_json { "forwarded" } else { "refused" }
            ),
        );
        CONFIG.with(|c| *c.borrow_mut() = Some(config));
        BIRTHS.with(|b| *b.borrow_mut() = Some(Births::new(outside_the_arena)));
        Ok(())
    }

    fn transform_batch(
        messages: Vec<MqttMessage>,
    ) -> Vec<Result<Vec<KafkaRecord>, WitTransformError>> {
        // After `init`, whose configuration lives as long as the instance.
        ALLOCATOR.activate();
        CONFIG.with(|c| {
            let config = c.borrow();
            BIRTHS.with(|b| {
                let mut births = b.borrow_mut();
                messages
                    .into_iter()
                    .map(|m| match config.as_ref() {
                        Some(config) => one(config, births.as_mut(), m),
                        None => Err(WitTransformError {
                            kind: WitErrorKind::Internal,
                            message: "transform-batch called before init".to_owned(),
                        }),
                    })
                    .collect()
            })
        })
    }
}

fn one(
    config: &Config,
    births: Option<&mut Births>,
    m: MqttMessage,
) -> Result<Vec<KafkaRecord>, WitTransformError> {
    let user_properties: Vec<(String, String)> = m
        .user_properties
        .into_iter()
        .map(|p| (p.name, p.value))
        .collect();
    let msg = Message {
        topic: &m.topic,
        payload: &m.payload,
        qos: match m.qos {
            Qos::AtMostOnce => 0,
            Qos::AtLeastOnce => 1,
            Qos::ExactlyOnce => 2,
        },
        retain: m.retain,
        user_properties: &user_properties,
        content_type: m.content_type.as_deref(),
        received_at_ms: m.received_at_ms,
    };
    match transform_with(config, births, &msg) {
        Ok(records) => Ok(records
            .into_iter()
            .map(|r| KafkaRecord {
                topic: r.topic,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(name, value)| Header { name, value })
                    .collect(),
                timestamp_ms: r.timestamp_ms,
            })
            .collect()),
        Err(e) => Err(WitTransformError {
            kind: match e.kind {
                ErrorKind::Decode => WitErrorKind::Decode,
                ErrorKind::Rejected => WitErrorKind::Rejected,
                ErrorKind::Internal => WitErrorKind::Internal,
            },
            message: e.message,
        }),
    }
}

export!(Component);
