//! The TCP options that let pgsluice notice a dead peer (keepalive timings, TCP_USER_TIMEOUT), set on
//! client and server connections alike.

use tokio::net::TcpStream;

use crate::config::TcpOptions;

/// Sets `opts` on `sock`; zero timings keep the OS defaults.
pub fn apply(sock: &TcpStream, opts: &TcpOptions) -> std::io::Result<()> {
    let sock = socket2::SockRef::from(sock);
    sock.set_keepalive(opts.keepalive)?;
    if opts.keepalive {
        let mut ka = socket2::TcpKeepalive::new();
        if !opts.keepidle.is_zero() {
            ka = ka.with_time(opts.keepidle);
        }
        if !opts.keepintvl.is_zero() {
            ka = ka.with_interval(opts.keepintvl);
        }
        if opts.keepcnt > 0 {
            ka = ka.with_retries(opts.keepcnt);
        }
        sock.set_tcp_keepalive(&ka)?;
    }
    if !opts.user_timeout.is_zero() {
        sock.set_tcp_user_timeout(Some(opts.user_timeout))?;
    }
    Ok(())
}
