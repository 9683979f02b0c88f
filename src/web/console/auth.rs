//! Who may use the console, and that a form was sent by the console itself.
//!
//! The console can approve plans that lower clients' bills, so nothing in it answers before
//! sign-in. Sign-in is one shared token (`ROLLCALL_CONSOLE_TOKEN`): a script sends it as a
//! bearer header on every request; a person types it once into the login form, which answers
//! with a session cookie. The cookie holds no secret: it is an expiry and a random nonce signed
//! with a key derived from the token, so every replica of the service accepts it, a restart keeps
//! people signed in, and changing the token signs everybody out. The token is compared in
//! constant time and never logged or echoed.
//!
//! Forms are protected against cross-site requests three times: the cookie is `SameSite=Strict`,
//! a POST whose `Origin` (or `Sec-Fetch-Site`) says it came from another site is refused, and
//! every POST signed in by cookie must carry the session's CSRF token (an HMAC of the session's
//! nonce) in its `csrf` field. A bearer header is no ambient credential, so a bearer POST needs
//! no CSRF token; its `Origin` is still checked.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use axum::http::{HeaderMap, header};
use hmac::{Hmac, Mac};
use rollcall_core::Secret;
use sha2::{Digest, Sha256};

/// The name of the session cookie.
pub const COOKIE: &str = "rollcall_console";
/// The form field every POST carries its CSRF token in.
pub const CSRF_FIELD: &str = "csrf";
/// How long a session lasts: a working day, then the token is asked for again.
pub const SESSION_SECONDS: i64 = 12 * 3600;
/// Shorter tokens are refused: a guessable token would open the console to anyone.
pub const MIN_TOKEN_CHARS: usize = 16;

/// The console's settings, from the environment.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `ROLLCALL_CONSOLE_TOKEN`: without it (or when shorter than [`MIN_TOKEN_CHARS`]) the
    /// console is off and refuses every sign-in.
    pub token: Option<Secret>,
    /// Single sign-on (`ROLLCALL_CONSOLE_OIDC_*`), or why its settings cannot be used.
    pub oidc: Option<Result<super::oidc::OidcSettings, String>>,
}

impl Settings {
    pub fn from_env() -> Settings {
        Settings {
            token: std::env::var("ROLLCALL_CONSOLE_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
                .map(Secret::new),
            oidc: super::oidc::OidcSettings::from_env(),
        }
    }

    /// Why the console is off, or `None` when it is on.
    pub fn off_because(&self) -> Option<&'static str> {
        match &self.token {
            None => Some("ROLLCALL_CONSOLE_TOKEN is not set"),
            Some(t) if t.expose().chars().count() < MIN_TOKEN_CHARS => {
                Some("ROLLCALL_CONSOLE_TOKEN is shorter than 16 characters")
            }
            Some(_) => None,
        }
    }
}

/// How a request proved it may use the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignedIn {
    /// The token as an `Authorization: Bearer` header.
    Bearer,
    /// A session cookie from the login form, or from single sign-on (`user`: who the identity
    /// provider said signed in).
    Session { nonce: String, user: Option<String> },
}

/// The keys derived from the token, and the sessions signed out before they expired.
pub struct Auth {
    keys: Option<Keys>,
    off_because: Option<&'static str>,
    /// Nonces of sessions signed out (kept by this process until they would have expired).
    revoked: Mutex<HashSet<(String, i64)>>,
}

struct Keys {
    /// SHA-256 of the token: what a presented token's digest is compared with, so the
    /// comparison takes the same time whatever its length.
    digest: [u8; 32],
    /// Signs session cookies and derives CSRF tokens.
    mac: [u8; 32],
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("on", &self.keys.is_some())
            .finish_non_exhaustive()
    }
}

impl Auth {
    pub fn new(settings: &Settings) -> Auth {
        let off_because = settings.off_because();
        let keys = match (&settings.token, off_because) {
            (Some(token), None) => {
                let digest: [u8; 32] = Sha256::digest(token.expose().as_bytes()).into();
                let mut h = Sha256::new();
                h.update(b"rollcall console session key\0");
                h.update(token.expose().as_bytes());
                Some(Keys {
                    digest,
                    mac: h.finalize().into(),
                })
            }
            _ => None,
        };
        Auth {
            keys,
            off_because,
            revoked: Mutex::new(HashSet::new()),
        }
    }

    /// Why the console is off, or `None` when it is on.
    pub fn off_because(&self) -> Option<&'static str> {
        self.off_because
    }

    /// Whether `presented` is the token (constant time in its content and length).
    pub fn is_token(&self, presented: &str) -> bool {
        let Some(keys) = &self.keys else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest
            .iter()
            .zip(keys.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// Who signed this request in, if anyone: a right bearer header wins; else a valid,
    /// unexpired, not signed-out session cookie.
    pub fn signed_in(&self, headers: &HeaderMap, now: i64) -> Option<SignedIn> {
        if let Some(bearer) = bearer(headers) {
            return self.is_token(bearer).then_some(SignedIn::Bearer);
        }
        let value = cookie(headers, COOKIE)?;
        let (expires, nonce, user) = self.verify_session(value, now)?;
        let revoked = self
            .revoked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&(nonce.clone(), expires));
        (!revoked).then_some(SignedIn::Session { nonce, user })
    }

    /// A new session's cookie value, valid until `now + SESSION_SECONDS`.
    pub fn new_session(&self, now: i64) -> Option<String> {
        let keys = self.keys.as_ref()?;
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let expires = now + SESSION_SECONDS;
        let mac = sign(&keys.mac, &format!("session|{expires}|{nonce}"));
        Some(format!("v1.{expires}.{nonce}.{mac}"))
    }

    /// A new session's cookie value for `user`, whom single sign-on vouched for.
    pub fn new_session_as(&self, now: i64, user: &str) -> Option<String> {
        let keys = self.keys.as_ref()?;
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let expires = now + SESSION_SECONDS;
        let user = hex(user.as_bytes());
        let mac = sign(&keys.mac, &format!("session2|{expires}|{nonce}|{user}"));
        Some(format!("v2.{expires}.{nonce}.{user}.{mac}"))
    }

    /// `value` signed for `purpose` (a cookie the console gets back, such as sign-on's state).
    pub fn seal(&self, purpose: &str, value: &str) -> Option<String> {
        let keys = self.keys.as_ref()?;
        let value = hex(value.as_bytes());
        Some(format!(
            "{value}.{}",
            sign(&keys.mac, &format!("seal|{purpose}|{value}"))
        ))
    }

    /// What [`Auth::seal`] signed, if `sealed` is intact.
    pub fn unseal(&self, purpose: &str, sealed: &str) -> Option<String> {
        let keys = self.keys.as_ref()?;
        let (value, mac) = sealed.split_once('.')?;
        let expected = sign(&keys.mac, &format!("seal|{purpose}|{value}"));
        if !crate::web::signature::same_secret(mac, &expected) {
            return None;
        }
        String::from_utf8(unhex(value)?).ok()
    }

    /// Ends the session in `headers`' cookie for this process (the cookie is also cleared).
    pub fn sign_out(&self, headers: &HeaderMap, now: i64) {
        let Some((expires, nonce, _)) =
            cookie(headers, COOKIE).and_then(|v| self.verify_session(v, now))
        else {
            return;
        };
        let mut revoked = self.revoked.lock().unwrap_or_else(PoisonError::into_inner);
        revoked.retain(|(_, until)| *until > now);
        revoked.insert((nonce, expires));
    }

    fn verify_session(&self, value: &str, now: i64) -> Option<(i64, String, Option<String>)> {
        let keys = self.keys.as_ref()?;
        // v1: a token sign-in; v2 also names the person single sign-on let in (hex, no dots).
        let parts: Vec<&str> = value.split('.').collect();
        let (expires, nonce, user, mac, signed) = match parts.as_slice() {
            ["v2", expires, nonce, user, mac] => (
                *expires,
                *nonce,
                Some(*user),
                *mac,
                format!("session2|{expires}|{nonce}|{user}"),
            ),
            ["v1", expires, nonce, mac] => (
                *expires,
                *nonce,
                None,
                *mac,
                format!("session|{expires}|{nonce}"),
            ),
            _ => return None,
        };
        if !crate::web::signature::same_secret(mac, &sign(&keys.mac, &signed)) {
            return None;
        }
        let expires: i64 = expires.parse().ok()?;
        let user = match user {
            Some(hex) => Some(String::from_utf8(unhex(hex)?).ok()?),
            None => None,
        };
        (expires > now).then(|| (expires, nonce.to_owned(), user))
    }

    /// The CSRF token forms carry for this sign-in.
    pub fn csrf(&self, who: &SignedIn) -> String {
        let Some(keys) = &self.keys else {
            return String::new();
        };
        match who {
            SignedIn::Session { nonce, .. } => sign(&keys.mac, &format!("csrf|{nonce}")),
            SignedIn::Bearer => sign(&keys.mac, "csrf|bearer"),
        }
    }

    /// Whether a POST's `csrf` field is right for this sign-in.
    pub fn csrf_ok(&self, who: &SignedIn, presented: Option<&str>) -> bool {
        match who {
            // No ambient credential: a page on another site cannot send the header.
            SignedIn::Bearer => true,
            SignedIn::Session { .. } => presented.is_some_and(|p| {
                let expected = self.csrf(who);
                !expected.is_empty() && crate::web::signature::same_secret(p, &expected)
            }),
        }
    }
}

fn sign(key: &[u8; 32], message: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The value of cookie `name`, if the request sent it.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

/// Whether the browser reached the console over plain HTTP on this machine: the only place a
/// session cookie may go without `Secure` (browsers would drop a `Secure` cookie there).
/// Behind a TLS proxy, `Host` is the public name or `X-Forwarded-Proto` says https.
pub fn loopback_http(headers: &HeaderMap) -> bool {
    let forwarded_https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    !forwarded_https && is_loopback_host(host)
}

fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The `Set-Cookie` value that starts a session.
pub fn session_cookie(value: &str, headers: &HeaderMap) -> String {
    let secure = if loopback_http(headers) {
        ""
    } else {
        "; Secure"
    };
    format!(
        "{COOKIE}={value}; Path=/console; Max-Age={SESSION_SECONDS}; HttpOnly; SameSite=Strict{secure}"
    )
}

/// The `Set-Cookie` value that ends one.
pub fn cleared_cookie(headers: &HeaderMap) -> String {
    let secure = if loopback_http(headers) {
        ""
    } else {
        "; Secure"
    };
    format!("{COOKIE}=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict{secure}")
}

/// Whether a POST may have come from a page on another site: its `Origin` names another host
/// than the one it was sent to, or the browser says so in `Sec-Fetch-Site`.
pub fn cross_site(headers: &HeaderMap) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let origin_elsewhere = headers
        .get(header::ORIGIN)
        .map(|o| {
            let o = o.to_str().unwrap_or_default();
            // `null` (a sandboxed or privacy-sensitive context) is never the console's page.
            let origin_host = o.split_once("://").map(|(_, h)| h).unwrap_or_default();
            !origin_host.eq_ignore_ascii_case(host) || host.is_empty()
        })
        .unwrap_or(false);
    let fetched_elsewhere = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| s != "same-origin" && s != "none");
    origin_elsewhere || fetched_elsewhere
}

/// `path` if it is a page of the console to go back to after sign-in, else the console's home
/// (never another site: `//evil.example` and `/console\@evil` are not paths of ours).
pub fn safe_next(path: Option<&str>) -> String {
    match path {
        Some(p)
            if (p == "/console" || p.starts_with("/console/") || p.starts_with("/console?"))
                && !p.contains("//")
                && !p.contains('\\')
                && !p.chars().any(char::is_control) =>
        {
            p.to_owned()
        }
        _ => "/console".to_owned(),
    }
}

/// Percent-encodes `s` for a query parameter.
pub fn encode_component(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn auth() -> Auth {
        Auth::new(&Settings {
            token: Some(Secret::new("a-console-token-of-length")),
            oidc: None,
        })
    }

    fn with(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn the_token_opens_the_console_and_nothing_else_does() {
        let a = auth();
        assert!(a.is_token("a-console-token-of-length"));
        for wrong in [
            "",
            "a-console-token-of-lengt",
            "a-console-token-of-length ",
            "x",
        ] {
            assert!(!a.is_token(wrong), "{wrong:?}");
        }
        let h = with(&[("authorization", "Bearer a-console-token-of-length")]);
        assert_eq!(a.signed_in(&h, 0), Some(SignedIn::Bearer));
        let h = with(&[("authorization", "Bearer nope")]);
        assert_eq!(a.signed_in(&h, 0), None);
        // Off: no token, or a short one, opens nothing.
        for token in [None, Some("short")] {
            let off = Auth::new(&Settings {
                token: token.map(Secret::new),
                oidc: None,
            });
            assert!(off.off_because().is_some());
            assert!(!off.is_token(token.unwrap_or_default()));
            assert_eq!(off.new_session(0), None);
        }
    }

    #[test]
    fn sessions_expire_cannot_be_forged_and_end_at_sign_out() {
        let a = auth();
        let now = 1_800_000_000;
        let value = a.new_session(now).expect("a session");
        let h = with(&[("cookie", &format!("other=1; {COOKIE}={value}"))]);
        let who = a.signed_in(&h, now + 60).expect("signed in");
        assert!(matches!(who, SignedIn::Session { .. }));
        assert_eq!(a.signed_in(&h, now + SESSION_SECONDS + 1), None, "expired");
        // A later expiry, a changed nonce or another token's key: refused.
        let parts: Vec<&str> = value.split('.').collect();
        let longer = format!(
            "v1.{}.{}.{}",
            now + 10 * SESSION_SECONDS,
            parts[2],
            parts[3]
        );
        let h2 = with(&[("cookie", &format!("{COOKIE}={longer}"))]);
        assert_eq!(a.signed_in(&h2, now), None);
        let other = Auth::new(&Settings {
            token: Some(Secret::new("another-token-entirely")),
            oidc: None,
        });
        assert_eq!(other.signed_in(&h, now), None);
        // CSRF: the session's own token only.
        let csrf = a.csrf(&who);
        assert!(a.csrf_ok(&who, Some(&csrf)));
        assert!(!a.csrf_ok(&who, None));
        assert!(!a.csrf_ok(&who, Some("")));
        let another = a
            .signed_in(
                &with(&[(
                    "cookie",
                    &format!("{COOKIE}={}", a.new_session(now).expect("s")),
                )]),
                now,
            )
            .expect("second session");
        assert!(!a.csrf_ok(&another, Some(&csrf)), "another session's token");
        a.sign_out(&h, now + 1);
        assert_eq!(a.signed_in(&h, now + 2), None, "signed out");
    }

    #[test]
    fn cookies_are_secure_except_over_loopback_http() {
        let local = with(&[("host", "127.0.0.1:8080")]);
        let c = session_cookie("v", &local);
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict"),
            "{c}"
        );
        assert!(!c.contains("Secure"), "{c}");
        for h in [
            with(&[("host", "rollcall.example.com")]),
            with(&[("host", "127.0.0.1:8080"), ("x-forwarded-proto", "https")]),
            with(&[("host", "127.example.com")]),
            with(&[]),
        ] {
            assert!(session_cookie("v", &h).ends_with("; Secure"), "{h:?}");
        }
        assert!(!session_cookie("v", &with(&[("host", "[::1]:80")])).contains("Secure"));
        assert!(!session_cookie("v", &with(&[("host", "localhost")])).contains("Secure"));
    }

    #[test]
    fn cross_site_posts_and_open_redirects_are_recognised() {
        let same = with(&[
            ("host", "c.example:8080"),
            ("origin", "https://c.example:8080"),
        ]);
        assert!(!cross_site(&same));
        assert!(!cross_site(&with(&[("host", "c.example")])), "no Origin");
        for h in [
            with(&[("host", "c.example"), ("origin", "https://evil.example")]),
            with(&[("host", "c.example"), ("origin", "null")]),
            with(&[("host", "c.example"), ("sec-fetch-site", "cross-site")]),
            with(&[("host", "c.example"), ("sec-fetch-site", "same-site")]),
        ] {
            assert!(cross_site(&h), "{h:?}");
        }
        assert_eq!(safe_next(Some("/console/jobs?x=1")), "/console/jobs?x=1");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/console//evil",
            "/consolex",
            "/console\\@evil",
        ] {
            assert_eq!(safe_next(Some(bad)), "/console", "{bad}");
        }
    }

    #[test]
    fn a_single_sign_on_session_names_its_person_and_cannot_be_renamed() {
        let a = auth();
        let value = a.new_session_as(0, "alice@msp.example").expect("session");
        let h = with(&[("cookie", &format!("{COOKIE}={value}"))]);
        assert_eq!(
            a.signed_in(&h, 1),
            Some(SignedIn::Session {
                nonce: value.split('.').nth(2).expect("nonce").to_owned(),
                user: Some("alice@msp.example".into()),
            })
        );
        let renamed = value.replace(&hex(b"alice@msp.example"), &hex(b"mallory@msp.example"));
        let h = with(&[("cookie", &format!("{COOKIE}={renamed}"))]);
        assert_eq!(a.signed_in(&h, 1), None);
        let sealed = a.seal("sso", "state|nonce").expect("sealed");
        assert_eq!(a.unseal("sso", &sealed).as_deref(), Some("state|nonce"));
        assert_eq!(a.unseal("other", &sealed), None);
    }
}
