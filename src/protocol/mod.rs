//! PostgreSQL wire protocol v3: framing, the startup packet, and the few messages the proxy reads or writes.
//! Knows nothing of pools, sockets or configuration. Imports only crates.
#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

pub mod error;
pub mod frame;
pub mod messages;
pub mod startup;
pub mod tags;

pub use error::{PgError, ProtocolError, Severity, SqlState};
pub use frame::{FrameScanner, Scan};
