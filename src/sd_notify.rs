//! systemd's service notifications (`Type=notify`, sd_notify(3)): one datagram of `KEY=value` lines to
//! the Unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace). Without the
//! variable nothing is sent; a failed send is logged at debug and never stops the caller.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Listeners bound and serving, or a reload finished (`status`, when not empty, goes in a `STATUS=` line).
pub fn ready(status: &str) {
    notify(&with_status("READY=1", status));
}

/// A reload starts: `RELOADING=1` with the CLOCK_MONOTONIC time systemd pairs it with.
pub fn reloading() {
    notify(&format!("RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the configuration", monotonic_usec()));
}

/// Shutting down (drain started).
pub fn stopping(status: &str) {
    notify(&with_status("STOPPING=1", status));
}

fn with_status(state: &str, status: &str) -> String {
    if status.is_empty() {
        return state.to_string();
    }
    // One line: a newline in the status would start another assignment.
    format!("{state}\nSTATUS={}", status.replace('\n', " "))
}

/// Sends `state` to `$NOTIFY_SOCKET`; false when it is unset or the send failed.
pub fn notify(state: &str) -> bool {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    match send(&socket, state) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(socket = ?socket, error = %e, "could not notify systemd");
            false
        }
    }
}

fn send(socket: &OsStr, state: &str) -> std::io::Result<()> {
    let addr = address(socket.as_bytes())?;
    let sock = UnixDatagram::unbound()?;
    let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
    if sent != state.len() {
        return Err(std::io::Error::other("short send"));
    }
    Ok(())
}

/// `@name` is `name` in the abstract namespace (Linux), anything else a path.
fn address(socket: &[u8]) -> std::io::Result<SocketAddr> {
    match socket.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)
        }
        None if socket.first() == Some(&b'/') => SocketAddr::from_pathname(OsStr::from_bytes(socket)),
        None => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is not an absolute path")),
    }
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares MONOTONIC_USEC with.
fn monotonic_usec() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_a_path_and_to_an_abstract_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("pgsluice-test-{}", std::process::id());
        let abs = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        send(OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = abs.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_missing_or_relative_socket_is_an_error_not_a_panic() {
        assert!(send(OsStr::new("/nonexistent/notify"), "READY=1").is_err());
        assert!(send(OsStr::new("relative"), "READY=1").is_err());
        assert_eq!(with_status("READY=1", "a\nb"), "READY=1\nSTATUS=a b");
    }

    #[test]
    fn monotonic_time_moves_forward() {
        let a = monotonic_usec();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(monotonic_usec() >= a + 1_000 && a > 0);
    }
}
