//! Who may make rollcall resync a client: the check of the signature a client's own system
//! puts on its requests (vendors' webhooks check their own, in their connectors). Every
//! comparison is constant-time (`hmac`'s `verify_slice`), and a failed check says nothing about
//! why beyond "refused", so a prober learns nothing.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How old a generic webhook's timestamp may be, either way, before it is refused as a replay.
pub const REPLAY_WINDOW_SECS: i64 = 300;

pub use rollcall_core::inbound::{client_key, same_secret};

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

/// Signs a generic webhook body as a sender must: `t=<unix seconds>,v1=<hex HMAC-SHA256 of
/// "<t>.<body>">`. The timestamp is inside the signature, so an old request cannot be replayed
/// with a new time.
pub fn sign(key: &str, timestamp: i64, body: &[u8]) -> String {
    let mut m = mac(key.as_bytes());
    m.update(format!("{timestamp}.").as_bytes());
    m.update(body);
    format!("t={timestamp},v1={}", hex(&m.finalize().into_bytes()))
}

/// Why a generic webhook was refused (for metrics; the sender only sees 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Malformed,
    Stale,
    Forged,
}

/// Checks `X-Rollcall-Signature` against the client's key at time `now`.
pub fn generic(key: &str, body: &[u8], header: &str, now: i64) -> Result<(), Refused> {
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => timestamp = v.parse::<i64>().ok(),
            Some(("v1", v)) => signature = unhex(v),
            _ => {}
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(Refused::Malformed);
    };
    // `abs_diff` cannot overflow: `now - t` for a `t` near `i64::MIN` would wrap to a small or
    // negative age and pass as fresh.
    if now.abs_diff(timestamp) > REPLAY_WINDOW_SECS.unsigned_abs() {
        return Err(Refused::Stale);
    }
    let mut m = mac(key.as_bytes());
    m.update(format!("{timestamp}.").as_bytes());
    m.update(body);
    m.verify_slice(&signature).map_err(|_| Refused::Forged)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_body_passes_and_any_change_fails() {
        let key = client_key("secret", "demo", "Acme");
        let body = br#"{"event":"employee.created"}"#;
        let header = sign(&key, 1_000_000, body);
        assert_eq!(generic(&key, body, &header, 1_000_010), Ok(()));
        assert_eq!(
            generic(&key, b"{}", &header, 1_000_010),
            Err(Refused::Forged)
        );
        assert_eq!(
            generic(
                &client_key("secret", "demo", "Globex"),
                body,
                &header,
                1_000_010
            ),
            Err(Refused::Forged)
        );
        assert_eq!(
            generic(&key, body, &header, 1_000_000 + REPLAY_WINDOW_SECS + 1),
            Err(Refused::Stale)
        );
        assert_eq!(
            generic(&key, body, "v1=abc", 1_000_000),
            Err(Refused::Malformed)
        );
        assert_eq!(
            client_key("secret", "demo", "ACME"),
            key,
            "client names compare without case"
        );
    }

    #[test]
    fn timestamps_at_the_limits_of_i64_are_stale_not_fresh() {
        let key = client_key("secret", "demo", "Acme");
        let body = b"{}";
        let now = 1_800_000_000_i64;
        for t in [
            now + i64::MIN,
            i64::MIN,
            i64::MIN + 1,
            i64::MAX,
            -1,
            0,
            now + REPLAY_WINDOW_SECS + 1,
            now - REPLAY_WINDOW_SECS - 1,
        ] {
            assert_eq!(
                generic(&key, body, &sign(&key, t, body), now),
                Err(Refused::Stale),
                "t = {t}"
            );
        }
        for now in [i64::MIN, i64::MAX] {
            let t = now.saturating_add(1);
            assert_eq!(generic(&key, body, &sign(&key, t, body), now), Ok(()));
        }
        for t in ["", "abc", "1e9", "99999999999999999999", " ", "+-1", "0x10"] {
            let header = sign(&key, 1, body).replacen("t=1", &format!("t={t}"), 1);
            assert_eq!(
                generic(&key, body, &header, now),
                Err(Refused::Malformed),
                "t = {t:?}"
            );
        }
    }
}
