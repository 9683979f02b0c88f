//! Why a read of a directory server failed, one variant per thing an operator would fix
//! differently.
//!
//! "The LDAP read failed" helps nobody at 2 a.m.: a firewall, an expired CA, a wrong password, a
//! locked service account and a mistyped base DN each need a different fix, so each gets its own
//! variant whose message says what to check. AD's bind diagnostics carry a data code (52e, 775…,
//! listed in docs/troubleshooting.md) that is named in words here.
//!
//! No variant ever carries the bind password: it is a [`rollcall_core::Secret`] and never leaves
//! the bind call.

use std::fmt;

/// A read that could not start or could not go on. A read that went partly well is not an error
/// but an incomplete read; [`LdapError::SizeLimit`], [`LdapError::TimeLimit`],
/// [`LdapError::ConnectionLost`] and [`LdapError::Referral`] then word its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LdapError {
    #[error(
        "`url` {url:?} is not an LDAP URL: {detail} (write ldaps://host[:636] or ldap://host[:389])"
    )]
    InvalidUrl { url: String, detail: String },

    #[error(
        "refusing a simple bind in clear text to {server}: the password would cross the network unencrypted \
         (use an ldaps:// URL or `starttls: true`; only if the network is trusted, set `allow_plaintext: true`)"
    )]
    PlaintextRefused { server: String },

    #[error("cannot read `ca_file` {path}: {detail}")]
    CaFile { path: String, detail: String },

    #[error(
        "{server} is unreachable: {detail} (check the host, the port and any firewall between)"
    )]
    Unreachable { server: String, detail: String },

    #[error(
        "TLS with {server} failed: {detail} (check that `ca_file` holds the CA that issued the server's \
         certificate and that the certificate names the host in `url`)"
    )]
    Tls { server: String, detail: String },

    #[error("{server} refused the bind as {bind_dn}: {}{diagnostic}", code.map(|c| format!("{c}; ")).unwrap_or_default())]
    BadCredentials {
        server: String,
        bind_dn: String,
        code: Option<AdBindCode>,
        /// The server's own diagnostic text (never contains the password).
        diagnostic: String,
    },

    #[error(
        "{server} requires a protected connection for a simple bind: {diagnostic} (use ldaps:// or `starttls: true`)"
    )]
    StrongAuthRequired { server: String, diagnostic: String },

    #[error(
        "{bind_dn} may not read {dn}: {diagnostic} (grant the account read access, or pick another base DN)"
    )]
    InsufficientAccess {
        bind_dn: String,
        dn: String,
        diagnostic: String,
    },

    #[error(
        "base DN {base_dn} does not exist on {server}{} (check `base_dns`)",
        matched_hint(matched)
    )]
    NoSuchBase {
        server: String,
        base_dn: String,
        matched: String,
    },

    #[error(
        "{server} stopped the search of {base_dn} at its size limit after {entries} entries \
         (raise the server's limit for this account; on OpenLDAP `size.prtotal`)"
    )]
    SizeLimit {
        server: String,
        base_dn: String,
        entries: usize,
    },

    #[error("{server} stopped the search of {base_dn} at its time limit after {entries} entries")]
    TimeLimit {
        server: String,
        base_dn: String,
        entries: usize,
    },

    #[error(
        "no answer from {server} within {secs} s while {during} (raise `operation_timeout_secs` if the directory is slow)"
    )]
    Timeout {
        server: String,
        during: String,
        secs: u64,
    },

    #[error("the connection to {server} was lost while {during}: {detail}")]
    ConnectionLost {
        server: String,
        during: String,
        detail: String,
    },

    #[error(
        "{server} referred the search of {base_dn} to {to}, which is not followed (point `url` at a server holding that naming context)"
    )]
    Referral {
        server: String,
        base_dn: String,
        to: String,
    },

    #[error("{server} answered {during} with result {rc}: {text}")]
    Protocol {
        server: String,
        during: String,
        rc: u32,
        text: String,
    },

    #[error("{server}: {dn}: {detail}")]
    BadEntry {
        server: String,
        dn: String,
        detail: String,
    },
}

fn matched_hint(matched: &str) -> String {
    if matched.is_empty() {
        String::new()
    } else {
        format!("; the nearest existing entry is {matched}")
    }
}

/// AD's reason for refusing a bind, the "data" code in its diagnostic message
/// (`80090308: LdapErr: DSID-0C09041C, comment: AcceptSecurityContext error, data 52e, v4563`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdBindCode {
    /// 525
    NoSuchUser,
    /// 52e
    InvalidCredentials,
    /// 530
    NotPermittedAtThisTime,
    /// 531
    NotPermittedAtThisWorkstation,
    /// 532
    PasswordExpired,
    /// 533
    AccountDisabled,
    /// 701
    AccountExpired,
    /// 773
    MustResetPassword,
    /// 775
    AccountLockedOut,
}

impl AdBindCode {
    /// The code as AD writes it.
    pub fn code(self) -> &'static str {
        match self {
            AdBindCode::NoSuchUser => "525",
            AdBindCode::InvalidCredentials => "52e",
            AdBindCode::NotPermittedAtThisTime => "530",
            AdBindCode::NotPermittedAtThisWorkstation => "531",
            AdBindCode::PasswordExpired => "532",
            AdBindCode::AccountDisabled => "533",
            AdBindCode::AccountExpired => "701",
            AdBindCode::MustResetPassword => "773",
            AdBindCode::AccountLockedOut => "775",
        }
    }

    fn meaning(self) -> &'static str {
        match self {
            AdBindCode::NoSuchUser => "no such user (check `bind_dn`)",
            AdBindCode::InvalidCredentials => "wrong password (check the secret behind `password`)",
            AdBindCode::NotPermittedAtThisTime => "the account may not log on at this time",
            AdBindCode::NotPermittedAtThisWorkstation => {
                "the account may not log on from this computer"
            }
            AdBindCode::PasswordExpired => "the account's password has expired",
            AdBindCode::AccountDisabled => "the account is disabled",
            AdBindCode::AccountExpired => "the account has expired",
            AdBindCode::MustResetPassword => "the account's password must be reset before use",
            AdBindCode::AccountLockedOut => "the account is locked out",
        }
    }

    /// Finds the data code in an AD (or Samba) bind diagnostic; `None` when there is none, as
    /// from servers other than AD.
    pub fn from_diagnostic(text: &str) -> Option<AdBindCode> {
        let lower = text.to_ascii_lowercase();
        let at = lower.find("data ")?;
        let code: String = lower[at + 5..]
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        Some(match code.as_str() {
            "525" => AdBindCode::NoSuchUser,
            "52e" => AdBindCode::InvalidCredentials,
            "530" => AdBindCode::NotPermittedAtThisTime,
            "531" => AdBindCode::NotPermittedAtThisWorkstation,
            "532" => AdBindCode::PasswordExpired,
            "533" => AdBindCode::AccountDisabled,
            "701" => AdBindCode::AccountExpired,
            "773" => AdBindCode::MustResetPassword,
            "775" => AdBindCode::AccountLockedOut,
            _ => return None,
        })
    }
}

impl fmt::Display for AdBindCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AD data code {}: {}", self.code(), self.meaning())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ad_bind_codes_are_found_in_diagnostics() {
        let text = "80090308: LdapErr: DSID-0C09041C, comment: AcceptSecurityContext error, data 52e, v4563";
        assert_eq!(
            AdBindCode::from_diagnostic(text),
            Some(AdBindCode::InvalidCredentials)
        );
        assert_eq!(
            AdBindCode::from_diagnostic("... data 775, v4563"),
            Some(AdBindCode::AccountLockedOut)
        );
        assert_eq!(
            AdBindCode::from_diagnostic("DATA 532"),
            Some(AdBindCode::PasswordExpired)
        );
        assert_eq!(AdBindCode::from_diagnostic("Invalid credentials"), None);
        assert_eq!(AdBindCode::from_diagnostic("data 999"), None);
    }

    #[test]
    fn bad_credentials_name_the_code_in_words() {
        let e = LdapError::BadCredentials {
            server: "ldaps://dc1".into(),
            bind_dn: "svc@acme".into(),
            code: Some(AdBindCode::InvalidCredentials),
            diagnostic: "AcceptSecurityContext error, data 52e".into(),
        };
        let text = e.to_string();
        assert!(text.contains("AD data code 52e: wrong password"), "{text}");
    }
}
