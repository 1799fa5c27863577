//! How bytes reach a peer: the stream type every connection uses (TCP, TLS, Unix socket), and the
//! TLS configurations made from the settings. Imports: config.

pub mod buffers;
pub mod cert;
mod stream;
mod suites;
pub mod system;
pub mod tls;

pub use stream::{Duplex, Stream, describe};
pub use tls::{Acceptor, Connector, TlsError, TlsSetup, TlsState};
