//! pgsluice: a transaction-pooling PostgreSQL proxy.
//!
//! Layers (a module imports only from lower layers):
//! ```text
//! L0 protocol/ config/ stats/ run_state.rs sql.rs workers.rs sd_notify.rs   leaf modules
//! L1 auth/ pool/ transport/     + L0; pool/ is generic over Connect/Poolable: no sockets, no protocol;
//!                               transport/ is the stream type and the TLS configurations
//! L2 server/ cancel.rs          + L0-L1: connections to PostgreSQL, and cancel requests to them
//! L3 shared.rs                  + L0-L2: the process's pools, limits, registries and running config
//! L4 client/ admin/             + L0-L3: the per-client session and the admin console
//! L5 listener.rs metrics.rs     + L0-L4
//! L6 supervisor.rs bin/         wires everything
//! ```
/// The version `--version` prints after the name and SHOW VERSION shows (`pgsluice <this>`): the PgBouncer
/// version pgsluice's console follows is in it, where pgbouncer_exporter reads it.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (PgBouncer 1.25.0 compatible)");

pub mod admin;
pub mod auth;
pub mod cancel;
pub mod client;
pub mod config;
pub mod listener;
pub mod metrics;
pub mod pool;
pub mod protocol;
pub mod run_state;
pub mod sd_notify;
pub mod server;
pub mod shared;
pub mod sql;
pub mod stats;
pub mod supervisor;
pub mod transport;
pub mod workers;
