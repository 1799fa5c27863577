//! PgBouncer's TLS protocol, cipher and curve settings mapped onto what rustls offers. rustls has TLS
//! 1.2 and 1.3 only, AEAD suites with ECDHE only, and no finite-field DHE: a setting that asks for
//! something else is refused, naming it, rather than quietly ignored.

use rustls::SupportedCipherSuite;
use rustls::crypto::ring::{cipher_suite as cs, kx_group};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};

use super::tls::TlsError;

/// Each suite rustls (ring) has: its OpenSSL name, its IANA name, and the OpenSSL classes it is in.
const SUITES: &[(SupportedCipherSuite, &str, &str, &[&str])] = &[
    (cs::TLS13_AES_256_GCM_SHA384, "TLS_AES_256_GCM_SHA384", "TLS_AES_256_GCM_SHA384", &["AES256", "AESGCM"]),
    (cs::TLS13_AES_128_GCM_SHA256, "TLS_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256", &["AES128", "AESGCM"]),
    (cs::TLS13_CHACHA20_POLY1305_SHA256, "TLS_CHACHA20_POLY1305_SHA256", "TLS_CHACHA20_POLY1305_SHA256", &["CHACHA20"]),
    (
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        &["AES256", "AESGCM", "ECDSA", "aECDSA", "SHA384"],
    ),
    (
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        &["AES128", "AESGCM", "ECDSA", "aECDSA", "SHA256"],
    ),
    (
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        &["CHACHA20", "ECDSA", "aECDSA", "SHA256"],
    ),
    (
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        &["AES256", "AESGCM", "aRSA", "SHA384"],
    ),
    (
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        &["AES128", "AESGCM", "aRSA", "SHA256"],
    ),
    (
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        &["CHACHA20", "aRSA", "SHA256"],
    ),
];

/// Classes every rustls suite is in.
const EVERY_SUITE_CLASSES: &[&str] =
    &["DEFAULT", "ALL", "HIGH", "ECDHE", "EECDH", "kECDHE", "kEECDH", "AES", "AEAD", "TLSv1.2", "TLSv1.3", "SECURE"];

/// Classes no rustls suite is in: excluding them (`!aNULL`, `-RC4`) is accepted and changes nothing.
const NO_SUITE_CLASSES: &[&str] = &[
    "aNULL", "eNULL", "NULL", "ADH", "AECDH", "EXPORT", "EXP", "LOW", "MEDIUM", "RC4", "DES", "3DES", "MD5", "SHA1",
    "SHA", "PSK", "SRP", "DSS", "aDSS", "CAMELLIA", "SEED", "IDEA", "kRSA", "RSA", "DH", "EDH", "DHE", "kDHE", "aPSK",
    "CCM", "CCM8", "ARIA", "SSLv3",
];

fn matches(entry: &str, suite: &(SupportedCipherSuite, &str, &str, &[&str])) -> bool {
    let (_, openssl, iana, classes) = suite;
    EVERY_SUITE_CLASSES.contains(&entry) || *openssl == entry || *iana == entry || classes.contains(&entry)
}

fn known(entry: &str) -> bool {
    NO_SUITE_CLASSES.contains(&entry) || SUITES.iter().any(|s| matches(entry, s))
}

/// The suites an OpenSSL-style cipher string selects among those for one TLS version.
fn select(setting: &'static str, text: &str, tls13: bool) -> Result<Vec<SupportedCipherSuite>, TlsError> {
    let fail = |reason: String| TlsError::Setting { setting, reason };
    let pool: Vec<_> = SUITES.iter().filter(|s| s.0.tls13().is_some() == tls13).collect();
    let text = text.trim();
    if ["", "default", "secure", "fast", "normal", "all"].contains(&text.to_ascii_lowercase().as_str()) {
        return Ok(pool.iter().map(|s| s.0).collect());
    }
    let mut chosen: Vec<SupportedCipherSuite> = Vec::new();
    let mut removed: Vec<SupportedCipherSuite> = Vec::new();
    for entry in text.split([':', ',', ' ']).filter(|e| !e.is_empty()) {
        let (op, name) = if let Some(n) = entry.strip_prefix(['!', '-']) {
            ('!', n)
        } else if let Some(n) = entry.strip_prefix('+') {
            ('+', n)
        } else {
            (' ', entry)
        };
        // Each entry may join classes with '+' (ECDHE+AESGCM): a suite must be in all of them.
        let parts: Vec<&str> = name.split('+').filter(|p| !p.is_empty()).collect();
        if let Some(bad) = parts.iter().find(|p| !known(p) && !p.starts_with("@STRENGTH")) {
            return Err(fail(format!("{bad:?} is not a cipher or class rustls offers (it has {})", names())));
        }
        let picked = pool.iter().filter(|s| parts.iter().all(|p| matches(p, s))).map(|s| s.0);
        match op {
            '!' => removed.extend(picked),
            '+' => {} // moves suites to the end in OpenSSL; rustls orders by its own preference
            _ => {
                for s in picked {
                    if !chosen.contains(&s) {
                        chosen.push(s);
                    }
                }
            }
        }
    }
    chosen.retain(|s| !removed.contains(s));
    Ok(chosen)
}

/// The OpenSSL name of a suite (what PgBouncer's SHOW columns print).
pub fn openssl_name(suite: SupportedCipherSuite) -> Option<&'static str> {
    SUITES.iter().find(|s| s.0.suite() == suite.suite()).map(|s| s.1)
}

/// The OpenSSL name of a key-exchange group.
pub fn group_name(group: rustls::NamedGroup) -> String {
    match group {
        rustls::NamedGroup::X25519 => "X25519".into(),
        rustls::NamedGroup::secp256r1 => "prime256v1".into(),
        rustls::NamedGroup::secp384r1 => "secp384r1".into(),
        other => format!("{other:?}"),
    }
}

fn names() -> String {
    SUITES.iter().map(|s| s.1).collect::<Vec<_>>().join(", ")
}

/// The ring provider restricted to the suites and groups the settings choose.
pub fn provider(
    ciphers: (&'static str, &str),
    tls13_ciphers: (&'static str, &str),
    ecdhcurve: &str,
    dheparams: &str,
) -> Result<CryptoProvider, TlsError> {
    let mut suites = select(ciphers.0, ciphers.1, false)?;
    let tls13_text = if tls13_ciphers.1.trim().is_empty() { ciphers.1 } else { tls13_ciphers.1 };
    let tls13_setting = if tls13_ciphers.1.trim().is_empty() { ciphers.0 } else { tls13_ciphers.0 };
    let mut tls13 = select(tls13_setting, tls13_text, true)?;
    if tls13.is_empty() && tls13_ciphers.1.trim().is_empty() {
        // A TLS 1.2 cipher list says nothing about TLS 1.3: OpenSSL keeps its 1.3 suites then.
        tls13 = select(tls13_setting, "default", true)?;
    }
    tls13.append(&mut suites);
    if tls13.is_empty() {
        return Err(TlsError::Setting { setting: ciphers.0, reason: "leaves no cipher suite".into() });
    }
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = tls13;
    provider.kx_groups = kx_groups(ecdhcurve)?;
    match dheparams.trim().to_ascii_lowercase().as_str() {
        "" | "auto" | "none" => {}
        other => {
            let reason = format!("{other:?}: rustls has no finite-field DHE (use auto or none)");
            return Err(TlsError::Setting { setting: "client_tls_dheparams", reason });
        }
    }
    Ok(provider)
}

fn kx_groups(ecdhcurve: &str) -> Result<Vec<&'static dyn SupportedKxGroup>, TlsError> {
    let text = ecdhcurve.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("auto") {
        return Ok(rustls::crypto::ring::DEFAULT_KX_GROUPS.to_vec());
    }
    let mut groups: Vec<&'static dyn SupportedKxGroup> = Vec::new();
    for name in text.split([':', ',', ' ']).filter(|e| !e.is_empty()) {
        let group: &'static dyn SupportedKxGroup = match name.to_ascii_lowercase().as_str() {
            "x25519" => kx_group::X25519,
            "p-256" | "prime256v1" | "secp256r1" => kx_group::SECP256R1,
            "p-384" | "secp384r1" => kx_group::SECP384R1,
            _ => {
                let reason = format!("{name:?}: rustls offers X25519, P-256 (prime256v1) and P-384 (secp384r1)");
                return Err(TlsError::Setting { setting: "client_tls_ecdhcurve", reason });
            }
        };
        groups.push(group);
    }
    Ok(groups)
}

/// TLS versions from a `*_tls_protocols` setting.
pub fn versions(setting: &'static str, text: &str) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, TlsError> {
    let mut out: Vec<&'static rustls::SupportedProtocolVersion> = Vec::new();
    for word in text.split([',', ':', ' ']).filter(|w| !w.is_empty()) {
        let add: &[&'static rustls::SupportedProtocolVersion] = match word.to_ascii_lowercase().as_str() {
            // "all" and "legacy" include TLS 1.0 and 1.1, which rustls does not have: what is left is "secure".
            "secure" | "all" | "legacy" => &[&rustls::version::TLS13, &rustls::version::TLS12],
            "tlsv1.3" => &[&rustls::version::TLS13],
            "tlsv1.2" => &[&rustls::version::TLS12],
            "tlsv1.0" | "tlsv1.1" | "tlsv1" => {
                let reason = format!("{word}: rustls has TLS 1.2 and 1.3 only (use secure, tlsv1.2 or tlsv1.3)");
                return Err(TlsError::Setting { setting, reason });
            }
            _ => return Err(TlsError::Setting { setting, reason: format!("{word:?} is not a TLS version") }),
        };
        for v in add {
            if !out.iter().any(|o| o.version == v.version) {
                out.push(v);
            }
        }
    }
    if out.is_empty() {
        return Err(TlsError::Setting { setting, reason: "names no TLS version".into() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chosen(text: &str, tls13: bool) -> Vec<String> {
        select("x", text, tls13).unwrap().iter().map(|s| format!("{:?}", s.suite())).collect()
    }

    #[test]
    fn keywords_select_every_suite_and_lists_select_by_name() {
        assert_eq!(chosen("default", false).len(), 6);
        assert_eq!(chosen("HIGH:!aNULL:!MD5", false).len(), 6);
        assert_eq!(chosen("ECDHE-RSA-AES128-GCM-SHA256", false), vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]);
        assert_eq!(chosen("ECDHE+AESGCM:!aECDSA", false).len(), 2);
        assert_eq!(chosen("TLS_AES_128_GCM_SHA256", true), vec!["TLS13_AES_128_GCM_SHA256"]);
    }

    #[test]
    fn what_rustls_cannot_do_is_refused_by_name() {
        let e = select("client_tls_ciphers", "RC4-SHA", false).unwrap_err().to_string();
        assert!(e.contains("RC4-SHA"), "{e}");
        let e = versions("client_tls_protocols", "tlsv1.1,tlsv1.2").unwrap_err().to_string();
        assert!(e.contains("tlsv1.1"), "{e}");
        assert!(kx_groups("sect571r1").is_err());
        assert!(provider(("c", "default"), ("c13", ""), "auto", "legacy").is_err());
    }

    #[test]
    fn protocol_shortcuts() {
        assert_eq!(versions("p", "secure").unwrap().len(), 2);
        assert_eq!(versions("p", "all").unwrap().len(), 2);
        assert_eq!(versions("p", "tlsv1.3").unwrap().len(), 1);
        assert!(versions("p", "").is_err());
    }

    #[test]
    fn a_tls12_only_list_keeps_the_tls13_suites() {
        let p = provider(("c", "ECDHE-RSA-AES256-GCM-SHA384"), ("c13", ""), "X25519", "auto").unwrap();
        assert_eq!(p.cipher_suites.len(), 4);
        assert_eq!(p.kx_groups.len(), 1);
    }
}
