//! Whether the process is serving or winding down: set by the supervisor (signals) and the console
//! (SHUTDOWN), read by logins and the metrics endpoint.

/// How the process is winding down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// SHUTDOWN, or a second signal: every client gets 57P01 now.
    Immediate,
    /// SIGINT / SHUTDOWN WAIT_FOR_SERVERS: transactions in flight finish, then exit.
    WaitForServers,
    /// SIGTERM / SHUTDOWN WAIT_FOR_CLIENTS: exit once every client has left.
    WaitForClients,
}

/// The process's state, held in `Shared::run_state`, read by logins (new clients are refused while draining).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Draining(ShutdownMode),
}
