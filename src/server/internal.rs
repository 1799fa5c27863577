//! Statements pgsluice runs on a server itself (reset, check, parameter and session-state sync,
//! auth_query): sent, read to their ReadyForQuery, bounded by server_connect_timeout.

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use tokio::io::AsyncReadExt;

use super::{CloseReason, MAX_INTERNAL_MESSAGE, ServerConn, ServerError};
use crate::protocol::frame::whole_message;
use crate::protocol::messages::{self, TxStatus};
use crate::protocol::tags::backend;

/// Rows of a result, text columns, NULL as `None`.
pub type Rows = Vec<Vec<Option<String>>>;

impl ServerConn {
    /// Sends one simple query and reads until its ReadyForQuery, discarding results (tracking
    /// ParameterStatus).
    pub async fn run_internal(&mut self, sql: &str) -> Result<(), ServerError> {
        self.query_internal(sql, None).await
    }

    /// As `run_internal`, also collecting the rows of its results into `rows`.
    pub async fn query_internal(&mut self, sql: &str, rows: Option<&mut Rows>) -> Result<(), ServerError> {
        let mut out = BytesMut::new();
        messages::query(&mut out, sql);
        self.internal_request(sql, out, rows).await
    }

    /// One statement with text parameters over the extended protocol (so no parameter is ever
    /// spliced into SQL), collecting its rows. Used for auth_query.
    pub async fn query_with_params(&mut self, sql: &str, params: &[&str], rows: &mut Rows) -> Result<(), ServerError> {
        let mut out = BytesMut::new();
        frontend::parse("", sql, std::iter::empty(), &mut out)?;
        let values = params.iter().map(|p| p.as_bytes());
        frontend::bind(
            "",
            "",
            std::iter::empty(),
            values,
            |v, buf| {
                buf.extend_from_slice(v);
                Ok(postgres_protocol::IsNull::No)
            },
            std::iter::empty(),
            &mut out,
        )
        .map_err(|_| ServerError::Protocol("cannot encode parameters".into()))?;
        frontend::execute("", 0, &mut out)?;
        frontend::sync(&mut out);
        self.internal_request(sql, out, Some(rows)).await
    }

    async fn internal_request(&mut self, sql: &str, out: BytesMut, rows: Option<&mut Rows>) -> Result<(), ServerError> {
        let before = self.begin_test();
        // Bounded: a server that stops answering pgsluice's own statements is closed, not waited on.
        let result = match tokio::time::timeout(self.internal_timeout, self.exchange(out, rows)).await {
            Ok(r) => r,
            Err(_) => {
                self.close_after(CloseReason::InternalFailed);
                Err(ServerError::Io(format!("no answer to {sql:?} within {:?}", self.internal_timeout)))
            }
        };
        self.end_test(before);
        result
    }

    async fn exchange(&mut self, out: BytesMut, mut rows: Option<&mut Rows>) -> Result<(), ServerError> {
        self.stream.send(&out).await?;
        let mut first_error = None;
        loop {
            let (tag, body) = self.read_internal().await?;
            match tag {
                backend::READY_FOR_QUERY => {
                    let status = body.first().copied().and_then(TxStatus::from_byte);
                    self.model.tracker.on_ready(status.unwrap_or(TxStatus::Failed));
                    return match (first_error, status) {
                        (Some(e), _) => Err(e),
                        (None, Some(TxStatus::Idle)) => Ok(()),
                        _ => Err(ServerError::Protocol("unexpected transaction state".into())),
                    };
                }
                backend::ERROR_RESPONSE => {
                    let (severity, code, message) = messages::error_fields(&body);
                    first_error.get_or_insert(ServerError::Refused { severity, code, message });
                }
                backend::PARAMETER_STATUS => {
                    if let Some((n, v)) = messages::parameter_status_fields(&body) {
                        self.set_param(n, v);
                    }
                }
                backend::NOTIFICATION_RESPONSE if self.notifications.len() + body.len() < 1 << 20 => {
                    messages::put_message(&mut self.notifications, backend::NOTIFICATION_RESPONSE, |m| {
                        m.extend_from_slice(&body)
                    });
                }
                backend::DATA_ROW => {
                    if let Some(rows) = rows.as_deref_mut() {
                        rows.push(
                            messages::data_row_text(&body)
                                .ok_or_else(|| ServerError::Protocol("bad DataRow".into()))?,
                        );
                    }
                }
                // A reset query such as DISCARD ALL drops every prepared statement on the server.
                backend::COMMAND_COMPLETE if matches!(&body[..], b"DISCARD ALL\0" | b"DEALLOCATE ALL\0") => {
                    self.model.statements.clear();
                    self.session.sql_statements.clear();
                    if body.starts_with(b"DISCARD") {
                        self.session.settings.clear();
                    }
                }
                _ => {}
            }
        }
    }

    /// Reads one whole message for pgsluice's own use.
    pub(super) async fn read_internal(&mut self) -> Result<(u8, Vec<u8>), ServerError> {
        loop {
            if let Some((tag, body, n)) =
                whole_message(&self.rbuf, MAX_INTERNAL_MESSAGE).map_err(|e| ServerError::Protocol(e.to_string()))?
            {
                let out = (tag, body.to_vec());
                let _ = self.rbuf.split_to(n);
                return Ok(out);
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(ServerError::Closed);
            }
        }
    }
}
