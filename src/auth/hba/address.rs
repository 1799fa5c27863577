//! The address column of `host*` lines, as PgBouncer reads it: `all`, `addr/bits`, or `addr` with the
//! netmask in the next column; IPv4 and IPv6 only (no host names, `samehost`, `samenet`). An IPv4 rule
//! matches only IPv4 clients and an IPv6 rule only IPv6 clients.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::lexer::{Lexer, Tok, describe};

/// Which client addresses a `host*` line covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Address {
    /// The `all` keyword: any address.
    All,
    /// An IPv4 network: client matches when `client & mask == addr`.
    V4 { addr: u32, mask: u32 },
    /// An IPv6 network: client matches when `client & mask == addr`.
    V6 { addr: u128, mask: u128 },
}

impl Address {
    /// Whether `ip` (already canonical: IPv4-mapped IPv6 turned into IPv4) is covered.
    pub(super) fn matches(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Address::All, _) => true,
            (Address::V4 { addr, mask }, IpAddr::V4(ip)) => u32::from(ip) & mask == *addr,
            (Address::V6 { addr, mask }, IpAddr::V6(ip)) => u128::from(ip) & mask == *addr,
            _ => false,
        }
    }
}

/// Reads the address (and, without a `/bits`, the netmask column) of a `host*` line.
pub(super) fn parse_address(lx: &mut Lexer<'_>) -> Result<Address, String> {
    let word = match lx.next_tok()? {
        Tok::Word(w) => w,
        Tok::Quoted(q) => return Err(format!("the address \"{q}\" must not be quoted")),
        other => return Err(format!("expected an address, found {}", describe(&other))),
    };
    match word {
        "all" => return Ok(Address::All),
        "samehost" | "samenet" => {
            return Err(format!("'{word}' is not supported (PgBouncer does not support it either)"));
        }
        _ => {}
    }
    let (ip_text, bits) = match word.split_once('/') {
        Some((ip, bits)) => (ip, Some(bits)),
        None => (word, None),
    };
    let ip = parse_ip(ip_text)?;
    let address = match bits {
        Some(bits) => with_prefix(ip, bits)?,
        None => with_netmask(ip, lx)?,
    };
    check_host_bits(word, &address)?;
    Ok(address)
}

/// Parses an address the way PgBouncer does (IPv6 first, then IPv4 dotted quad).
fn parse_ip(text: &str) -> Result<IpAddr, String> {
    if let Ok(v6) = text.parse::<Ipv6Addr>() {
        return Ok(IpAddr::V6(v6));
    }
    if let Ok(v4) = text.parse::<Ipv4Addr>() {
        return Ok(IpAddr::V4(v4));
    }
    if text.bytes().any(|b| b.is_ascii_alphabetic()) || text.starts_with('.') {
        return Err(format!(
            "'{text}' looks like a host name; host names and domain suffixes are not supported \
             (PgBouncer does not resolve them): write an IP address"
        ));
    }
    Err(format!("invalid IP address '{text}'"))
}

fn with_prefix(ip: IpAddr, bits: &str) -> Result<Address, String> {
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let n: u32 = match bits.parse() {
        Ok(n) if (1..=3).contains(&bits.len()) && bits.bytes().all(|b| b.is_ascii_digit()) && n <= max => n,
        _ => return Err(format!("invalid CIDR mask length '/{bits}' (expected 0 to {max})")),
    };
    Ok(match ip {
        IpAddr::V4(a) => Address::V4 { addr: u32::from(a), mask: u32::MAX.checked_shl(32 - n).unwrap_or(0) },
        IpAddr::V6(a) => Address::V6 { addr: u128::from(a), mask: u128::MAX.checked_shl(128 - n).unwrap_or(0) },
    })
}

/// The netmask column after a bare address; it must be of the address's family. PgBouncer does not
/// require the mask's bits to be contiguous, and neither does this.
fn with_netmask(ip: IpAddr, lx: &mut Lexer<'_>) -> Result<Address, String> {
    let mask = match lx.next_tok()? {
        Tok::Word(w) => w,
        other => return Err(format!("expected a netmask after the address, found {}", describe(&other))),
    };
    match ip {
        IpAddr::V4(a) => match mask.parse::<Ipv4Addr>() {
            Ok(m) => Ok(Address::V4 { addr: u32::from(a), mask: u32::from(m) }),
            Err(_) => Err(format!("invalid IPv4 netmask '{mask}'")),
        },
        IpAddr::V6(a) => match mask.parse::<Ipv6Addr>() {
            Ok(m) => Ok(Address::V6 { addr: u128::from(a), mask: u128::from(m) }),
            Err(_) => Err(format!("invalid IPv6 netmask '{mask}'")),
        },
    }
}

/// PgBouncer keeps a line whose address has bits outside its mask (with a warning) but compares the
/// masked client address with the unmasked one, so such a line never matches; it is reported here.
fn check_host_bits(word: &str, address: &Address) -> Result<(), String> {
    let stray = match *address {
        Address::All => false,
        Address::V4 { addr, mask } => addr & !mask != 0,
        Address::V6 { addr, mask } => addr & !mask != 0,
    };
    if stray {
        return Err(format!(
            "address '{word}' has bits set outside its mask, so PgBouncer would never match this line: \
             write the network address (e.g. 10.0.0.0/8)"
        ));
    }
    Ok(())
}
