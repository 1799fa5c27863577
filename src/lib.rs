//! pgsluice: a transaction-pooling PostgreSQL proxy.
//!
//! Layers (a module imports only from lower layers; `tests/layers.rs` checks every `crate::` path):
//! ```text
//! L0 protocol/ stats/ run_state.rs sql.rs workers.rs sd_notify.rs   leaf modules
//! L1 config/                    + protocol (its frame limits cap max_packet_size)
//! L2 auth/ pool/ transport/     + L0-L1; pool/ is generic over Connect/Poolable: no sockets, no protocol;
//!                               transport/ is the stream type and the TLS configurations
//! L3 server/                    + L0-L2: connections to PostgreSQL
//! L4 cancel/                    + L0-L3: clients' cancel keys and the cancel requests sent for them
//! L5 shared.rs                  + L0-L4: the process's pools, limits, registries and running config
//! L6 client/                    + L0-L5: the per-client login and session
//! L7 admin/                     + L0-L6: the console, serving the console logins client/ hands over
//! L8 listener.rs metrics.rs     + L0-L7
//! L9 supervisor.rs bin/         wires everything
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
