//! Integration tests of pairgate against the wire contract (`protocol.md`,
//! version 1). One file per behaviour, one test binary so it links once.
//!
//! Every test starts its own gateway (in-process through `pairgate::run` on
//! `127.0.0.1:0`, or the real binary for durability and shutdown), uses a
//! fresh account name, short configured timers, and a timeout on every
//! receive. Nothing here depends on the server's internals.

mod support;

mod auth;
mod backpressure;
mod close_orders;
mod concurrency;
mod durability;
mod http;
mod limits;
mod pairing;
mod relay;
mod sessions;
mod shutdown;
