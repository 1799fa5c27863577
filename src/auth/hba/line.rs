//! One line of the HBA file: connection type, database and user columns, address, method, options.

use super::address::parse_address;
use super::ident::IdentMap;
use super::lexer::{Lexer, Tok, describe};
use super::names::{Column, Fail, Height, Includes, NameSet, parse_name_list};
use super::{ConnType, HbaMethod, HbaRule};

/// Parses one line; `Ok(None)` for blank and comment lines.
pub(super) fn parse_line(
    text: &str,
    line: usize,
    ident: Option<&IdentMap>,
    inc: &mut Includes<'_>,
) -> Result<Option<HbaRule>, Fail> {
    parse_fields(text, line, ident, inc).map_err(|fail| match fail {
        Fail::Line(msg) if text.trim_end().ends_with('\\') => Fail::Line(format!(
            "{msg} (continuing a line with '\\' is not supported: PgBouncer reads each line on its own)"
        )),
        other => other,
    })
}

fn parse_fields(
    text: &str,
    line: usize,
    ident: Option<&IdentMap>,
    inc: &mut Includes<'_>,
) -> Result<Option<HbaRule>, Fail> {
    if text.contains('\0') {
        return Err(Fail::Line("the line contains a NUL byte".to_string()));
    }
    let mut lx = Lexer::new(text);
    let Some(conn_type) = parse_type(lx.next_tok()?)? else {
        return Ok(None);
    };
    let mut databases = NameSet::default();
    parse_name_list(&mut lx, Column::Database, &mut databases, inc, "", &mut Height(1))?;
    let mut users = NameSet::default();
    parse_name_list(&mut lx, Column::User, &mut users, inc, "", &mut Height(1))?;
    let address = match conn_type {
        ConnType::Local => None,
        _ => Some(parse_address(&mut lx)?),
    };
    let method = parse_method(lx.next_tok()?)?;
    let mut rule = HbaRule { line, conn_type, method, ident_map: None, ldap_options: None, databases, users, address };
    if method == HbaMethod::Ldap {
        // PgBouncer hands LDAP the raw rest of the line and reads nothing more of it
        rule.ldap_options = Some(lx.rest().to_string());
        return Ok(Some(rule));
    }
    rule.ident_map = parse_options(&mut lx, ident)?;
    Ok(Some(rule))
}

fn parse_type(tok: Tok<'_>) -> Result<Option<ConnType>, String> {
    let word = match tok {
        Tok::End => return Ok(None),
        Tok::Word(w) => w,
        other => return Err(format!("expected a connection type, found {}", describe(&other))),
    };
    Ok(Some(match word {
        "local" => ConnType::Local,
        "host" => ConnType::Host,
        "hostssl" => ConnType::HostSsl,
        "hostnossl" => ConnType::HostNoSsl,
        "hostgssenc" | "hostnogssenc" => {
            return Err(format!("connection type '{word}' is not supported (PgBouncer does not support it either)"));
        }
        "include" | "include_if_exists" | "include_dir" => {
            return Err(format!("'{word}' directives are not supported (PgBouncer does not support them either)"));
        }
        _ => {
            return Err(format!("unknown connection type '{word}' (expected local, host, hostssl or hostnossl)"));
        }
    }))
}

fn parse_method(tok: Tok<'_>) -> Result<HbaMethod, String> {
    let word = match tok {
        Tok::Word(w) => w,
        other => return Err(format!("expected an authentication method, found {}", describe(&other))),
    };
    Ok(match word {
        "trust" => HbaMethod::Trust,
        "reject" => HbaMethod::Reject,
        "md5" => HbaMethod::Md5,
        "password" => HbaMethod::Password,
        "scram-sha-256" => HbaMethod::ScramSha256,
        "cert" => HbaMethod::Cert,
        "peer" => HbaMethod::Peer,
        "ldap" => HbaMethod::Ldap,
        "ident" => return Err("method 'ident' is not supported (PgBouncer neither); use 'peer'".to_string()),
        "pam" | "any" => {
            return Err(format!("method '{word}' works only as the global auth_type, not in the HBA file"));
        }
        _ => return Err(format!("unsupported authentication method '{word}'")),
    })
}

/// After the method PgBouncer accepts at most one option, `map=NAME`, naming a map of the ident file.
fn parse_options(lx: &mut Lexer<'_>, ident: Option<&IdentMap>) -> Result<Option<String>, String> {
    let map = match lx.next_tok()? {
        Tok::End => return Ok(None),
        Tok::Word(w) => match w.strip_prefix("map=") {
            Some(name) => name.to_string(),
            None => return Err(format!("unsupported option '{w}' (only map=NAME is supported)")),
        },
        other => return Err(format!("unexpected {} after the method", describe(&other))),
    };
    match lx.next_tok()? {
        Tok::End => {}
        other => return Err(format!("unexpected {} after map={map} (one option only)", describe(&other))),
    }
    match ident {
        None => Err(format!("map={map}, but no ident map file (auth_ident_file) is loaded")),
        Some(ident) if !ident.has_map(&map) => Err(format!("map={map}: the ident map file has no map '{map}'")),
        Some(_) => Ok(Some(map)),
    }
}
