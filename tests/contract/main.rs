//! Integration tests of pairgate against the wire contract (`protocol.md`,
//! version 1). One file per behaviour, one test binary so it links once.
//!
//! Every test starts its own gateway (in-process through `pairgate::run` on
//! `127.0.0.1:0`, or the real binary for durability and shutdown; for
//! cluster mode, its own `redis-server` and several binaries), uses a
//! fresh account name, short configured timers, and a timeout on every
//! receive. Nothing here depends on the server's internals.
//!
//! The machinery is in `support/`, one job per file (see `support/mod.rs`).
//! Clients speak through the crate's typed client and encoder
//! (`pairgate::client`, `ClientFrame::to_text`); a test that writes a frame
//! as literal JSON does so on purpose, because the exact text on the wire
//! (odd, extra or malformed fields) is what it checks.
//!
//! No test sleeps to let something happen: it waits for an event, polls a
//! condition with a deadline, reads an order off one connection, or (where
//! the contract is about time itself) waits for the clock (`support/clock.rs`).

mod support;

mod auth;
mod backpressure;
mod browsers;
mod close_orders;
mod cluster;
mod concurrency;
mod config_file;
mod crash_storm;
mod dashboard;
mod durability;
mod edge;
mod full_disk;
mod http;
mod limits;
mod observability;
mod operator;
mod pairing;
mod pairing_race;
mod proxy;
mod redis_harness;
mod relay;
mod secrets;
mod sessions;
mod shutdown;
mod tls;
mod wire_violations;
