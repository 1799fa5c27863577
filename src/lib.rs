//! pgsluice: a transaction-pooling PostgreSQL proxy.
//!
//! Layers (a module imports only from lower layers):
//! ```text
//! L0 protocol/ config/ stats/   leaf modules
//! L1 auth/ pool/                + L0; pool/ is generic over Connect/Poolable: no sockets, no protocol
//! L2 server/                    + L0-L1: connections to PostgreSQL
//! L3 client/ admin/ cancel.rs   + L0-L2: the per-client session and the admin console
//! L4 listener.rs metrics.rs     + L0-L3
//! L5 supervisor.rs main.rs      wires everything
//! ```
pub mod admin;
pub mod auth;
pub mod cancel;
pub mod client;
pub mod config;
pub mod listener;
pub mod metrics;
pub mod pool;
pub mod protocol;
pub mod server;
pub mod shared;
pub mod stats;
pub mod supervisor;
