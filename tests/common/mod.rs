//! Integration-test harness: a real PostgreSQL per test and the real pgsluice binary in front of it.
#![allow(dead_code)]

pub mod pg;
pub mod proxy;
pub mod wire;

pub use pg::TestPg;
#[allow(unused_imports)]
pub use proxy::{Proxy, ProxyBuilder, wait_for};
