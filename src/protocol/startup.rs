//! The untagged packets a client may open with: StartupMessage, SSLRequest, GSSENCRequest, CancelRequest.

use super::error::ProtocolError;

/// PostgreSQL's `MAX_STARTUP_PACKET_LENGTH`.
pub const MAX_STARTUP_LEN: usize = 10_000;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartupPacket {
    /// Protocol 3.x StartupMessage. `minor` > 0 must be answered with NegotiateProtocolVersion.
    Startup {
        minor: u16,
        params: Vec<(String, String)>,
    },
    /// Any protocol major version other than 3.
    UnsupportedVersion {
        major: u16,
        minor: u16,
    },
    SslRequest,
    GssEncRequest,
    Cancel {
        pid: u32,
        key: u32,
    },
}

impl StartupPacket {
    /// Parses one packet from the front of `buf`. `Ok(None)` when more bytes are needed.
    /// Returns the packet and how many bytes it took.
    pub fn parse(buf: &[u8]) -> Result<Option<(StartupPacket, usize)>, ProtocolError> {
        let [a, b, c, d, ..] = *buf else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([a, b, c, d]) as usize;
        if !(8..=MAX_STARTUP_LEN).contains(&len) {
            return Err(ProtocolError::BadStartupLength(len));
        }
        let Some(packet) = buf.get(4..len) else {
            return Ok(None);
        };
        let (code, body) = packet.split_at(4);
        let [c1, c2, c3, c4] = *code else {
            return Err(ProtocolError::BadStartup("short packet"));
        };
        let code = u32::from_be_bytes([c1, c2, c3, c4]);
        let parsed = match code {
            SSL_REQUEST if body.is_empty() => StartupPacket::SslRequest,
            GSSENC_REQUEST if body.is_empty() => StartupPacket::GssEncRequest,
            SSL_REQUEST | GSSENC_REQUEST => {
                return Err(ProtocolError::BadStartup("bad SSL/GSS request length"));
            }
            CANCEL_REQUEST => {
                let [p1, p2, p3, p4, k1, k2, k3, k4] = *body else {
                    return Err(ProtocolError::BadStartup("bad cancel request length"));
                };
                StartupPacket::Cancel {
                    pid: u32::from_be_bytes([p1, p2, p3, p4]),
                    key: u32::from_be_bytes([k1, k2, k3, k4]),
                }
            }
            _ if code >> 16 == 3 => {
                StartupPacket::Startup { minor: (code & 0xffff) as u16, params: parse_params(body)? }
            }
            _ => StartupPacket::UnsupportedVersion { major: (code >> 16) as u16, minor: (code & 0xffff) as u16 },
        };
        Ok(Some((parsed, len)))
    }
}

/// `name\0value\0 ... \0`: the final empty name is required, as PostgreSQL requires it.
fn parse_params(mut body: &[u8]) -> Result<Vec<(String, String)>, ProtocolError> {
    let mut params = Vec::new();
    loop {
        let name = take_cstr(&mut body)?;
        if name.is_empty() {
            if !body.is_empty() {
                return Err(ProtocolError::BadStartup("data after the final terminator"));
            }
            return Ok(params);
        }
        let value = take_cstr(&mut body)?;
        // One value per name: a second `database` could otherwise pass the console's exemption from
        // max_client_conn and then log in elsewhere. GUC names are case-insensitive.
        if params.iter().any(|(n, _): &(String, String)| n.eq_ignore_ascii_case(&name)) {
            return Err(ProtocolError::DuplicateStartupParameter(name));
        }
        params.push((name, value));
    }
}

fn take_cstr(buf: &mut &[u8]) -> Result<String, ProtocolError> {
    let end = memchr::memchr(0, buf).ok_or(ProtocolError::BadStartup("missing terminator"))?;
    let (s, rest) = buf.split_at(end);
    *buf = rest.get(1..).unwrap_or_default();
    String::from_utf8(s.to_vec()).map_err(|_| ProtocolError::BadStartup("parameter is not valid UTF-8"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn packet(code: u32, body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&code.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn a_parameter_given_twice_is_refused() {
        for body in
            [&b"user\0a\0database\0pgbouncer\0database\0app\0\0"[..], b"user\0a\0DateStyle\0ISO\0datestyle\0SQL\0\0"]
        {
            let wire = packet(196_608, body);
            assert!(matches!(StartupPacket::parse(&wire), Err(ProtocolError::DuplicateStartupParameter(_))));
        }
    }

    #[test]
    fn startup_message_parses_at_every_split() {
        let wire = packet(196_608, b"user\0bob\0database\0app\0\0");
        for cut in 0..wire.len() {
            assert_eq!(StartupPacket::parse(&wire[..cut]).unwrap(), None, "cut {cut}");
        }
        let (p, n) = StartupPacket::parse(&wire).unwrap().unwrap();
        assert_eq!(n, wire.len());
        assert_eq!(
            p,
            StartupPacket::Startup {
                minor: 0,
                params: vec![("user".into(), "bob".into()), ("database".into(), "app".into())]
            }
        );
    }

    #[test]
    fn special_requests() {
        assert_eq!(StartupPacket::parse(&packet(SSL_REQUEST, b"")).unwrap().unwrap().0, StartupPacket::SslRequest);
        assert_eq!(
            StartupPacket::parse(&packet(CANCEL_REQUEST, &[0, 0, 0, 7, 0, 0, 0, 9])).unwrap().unwrap().0,
            StartupPacket::Cancel { pid: 7, key: 9 }
        );
        assert_eq!(
            StartupPacket::parse(&packet(0x0002_0000, b"")).unwrap().unwrap().0,
            StartupPacket::UnsupportedVersion { major: 2, minor: 0 }
        );
    }

    #[test]
    fn malformed_packets_are_errors() {
        assert!(StartupPacket::parse(&packet(196_608, b"user\0bob\0")).is_err()); // no final NUL
        assert!(StartupPacket::parse(&packet(196_608, b"user\0bob")).is_err());
        assert!(StartupPacket::parse(&packet(196_608, b"user\0bob\0\0x")).is_err());
        assert!(StartupPacket::parse(&[0, 0, 0, 3]).is_err());
        assert!(StartupPacket::parse(&20_000u32.to_be_bytes()).is_err());
        assert!(StartupPacket::parse(&packet(CANCEL_REQUEST, &[0, 0, 0, 7])).is_err());
    }
}
