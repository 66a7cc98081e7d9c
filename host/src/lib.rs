//! uns-kafka: an MQTT to Apache Kafka bridge whose message logic runs in a
//! sandboxed WebAssembly component.
//!
//! Flow, one direction only:
//! MQTT in ([`mqtt`]) -> component ([`transform`]) -> Kafka out ([`kafka`])
//! -> MQTT ack, wired together by [`pipeline`].

pub mod check;
pub mod config;
pub mod demo;
pub mod error;
pub mod health;
pub mod kafka;
pub mod logging;
pub mod message;
pub mod metrics;
pub mod mqtt;
pub mod offline;
pub mod pipeline;
pub mod tls;
pub mod transform;
