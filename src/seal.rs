//! OAuth tokens encrypted at rest, when the operator gives a store key.
//!
//! A refresh token opens a customer's books for months; a copied store file or Redis dump
//! should not. With a key (`ROLLCALL_STORE_KEY`, or `--store-key-file`), tokens are written as
//! `rcv1:` and base64 of a random 96-bit nonce and the ChaCha20-Poly1305 ciphertext of their
//! JSON, authenticated with the connection's name (a row copied onto another connection does
//! not open). Rows written before a key was set are plain JSON and still read; they are
//! encrypted the next time they are written (the next refresh, or `rollcall connect`).
//!
//! The cipher is aws-lc-rs's, the provider rustls already uses here: no second crypto stack.

use std::path::Path;

use aws_lc_rs::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;
use rollcall_core::oauth::{TokenSet, VaultError};

/// The prefix of an encrypted token row, with the format's version.
const SEALED_V1: &str = "rcv1:";

/// The environment variable that holds the key itself.
pub const KEY_ENV: &str = "ROLLCALL_STORE_KEY";

const KEY_HINT: &str =
    "a store key is 32 random bytes written in base64: make one with `openssl rand -base64 32`";

/// The key tokens are encrypted with. `Debug` never shows it.
pub struct StoreKey(LessSafeKey);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

/// A store key that cannot be used; the message names where it came from and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

impl StoreKey {
    /// A key from its base64 text (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<StoreKey, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|_| format!("it is not base64 ({KEY_HINT})"))?;
        if bytes.len() != 32 {
            return Err(format!("it is {} bytes, not 32 ({KEY_HINT})", bytes.len()));
        }
        let key = UnboundKey::new(&CHACHA20_POLY1305, &bytes)
            .map_err(|_| format!("it cannot be used as a key ({KEY_HINT})"))?;
        Ok(StoreKey(LessSafeKey::new(key)))
    }

    /// The key the operator configured: `ROLLCALL_STORE_KEY` (the key itself) or `file`
    /// (a file holding it); none is no encryption. Both at once is refused: one would be
    /// silently ignored.
    pub fn configured(file: Option<&Path>) -> Result<Option<StoreKey>, KeyError> {
        let env = std::env::var(KEY_ENV).ok().filter(|v| !v.trim().is_empty());
        match (env, file) {
            (Some(_), Some(file)) => Err(KeyError(format!(
                "both {KEY_ENV} and --store-key-file ({}) are set (hint: keep one)",
                file.display()
            ))),
            (Some(text), None) => StoreKey::parse(&text)
                .map(Some)
                .map_err(|e| KeyError(format!("{KEY_ENV}: {e}"))),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file).map_err(|e| {
                    KeyError(format!(
                        "cannot read the store key file {}: {e}",
                        file.display()
                    ))
                })?;
                StoreKey::parse(&text)
                    .map(Some)
                    .map_err(|e| KeyError(format!("the store key file {}: {e}", file.display())))
            }
            (None, None) => Ok(None),
        }
    }
}

fn aad(connection: &str) -> String {
    format!("rollcall-oauth\0{connection}")
}

/// Tokens as a store row: sealed with `key`, or plain JSON without one.
pub fn seal(
    key: Option<&StoreKey>,
    connection: &str,
    tokens: &TokenSet,
) -> Result<String, VaultError> {
    let json = serde_json::to_string(tokens).map_err(|e| VaultError::Store(e.to_string()))?;
    let Some(key) = key else {
        return Ok(json);
    };
    let mut nonce = [0u8; NONCE_LEN];
    aws_lc_rs::rand::fill(&mut nonce)
        .map_err(|_| VaultError::Store("no random numbers for a nonce".into()))?;
    let mut sealed = json.into_bytes();
    key.0
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(connection).as_bytes()),
            &mut sealed,
        )
        .map_err(|_| VaultError::Store("cannot encrypt the tokens".into()))?;
    let mut row = nonce.to_vec();
    row.extend_from_slice(&sealed);
    Ok(format!(
        "{SEALED_V1}{}",
        base64::engine::general_purpose::STANDARD.encode(row)
    ))
}

/// Tokens from a store row, sealed or plain (see the module's documentation).
pub fn unseal(key: Option<&StoreKey>, connection: &str, row: &str) -> Result<TokenSet, VaultError> {
    let Some(sealed) = row.strip_prefix(SEALED_V1) else {
        return serde_json::from_str(row).map_err(|e| {
            VaultError::Store(format!(
                "the stored tokens of `{connection}` are unreadable: {e} (hint: run `rollcall connect` for it again)"
            ))
        });
    };
    let Some(key) = key else {
        return Err(VaultError::Store(format!(
            "the OAuth tokens of `{connection}` are encrypted and no store key is set (hint: set \
             {KEY_ENV} or --store-key-file to the key they were saved with)"
        )));
    };
    let wrong_key = || {
        VaultError::Store(format!(
            "the OAuth tokens of `{connection}` do not open with this store key: it is not the key \
             they were saved with, or the row was altered (hint: set the key they were saved with, \
             or run `rollcall connect` for it again)"
        ))
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|_| wrong_key())?;
    if bytes.len() < NONCE_LEN {
        return Err(wrong_key());
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong_key())?;
    let mut buffer = ciphertext.to_vec();
    let plain = key
        .0
        .open_in_place(nonce, Aad::from(aad(connection).as_bytes()), &mut buffer)
        .map_err(|_| wrong_key())?;
    serde_json::from_slice(plain).map_err(|_| wrong_key())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    fn tokens() -> TokenSet {
        TokenSet {
            access_token: "access-secret".into(),
            refresh_token: "refresh-secret".into(),
            expires_at: chrono::DateTime::from_timestamp(1_800_000_000, 0).expect("time"),
            scope: None,
            tenant: Some("t1".into()),
        }
    }

    #[test]
    fn sealed_rows_hide_the_tokens_and_open_only_with_their_key_and_connection() {
        let key = StoreKey::parse(KEY).expect("key");
        let row = seal(Some(&key), "xero", &tokens()).expect("seal");
        assert!(row.starts_with(SEALED_V1));
        assert!(!row.contains("secret"));
        assert_ne!(
            row,
            seal(Some(&key), "xero", &tokens()).expect("seal"),
            "fresh nonce"
        );
        assert_eq!(unseal(Some(&key), "xero", &row).expect("open"), tokens());
        let other = StoreKey::parse(&base64::engine::general_purpose::STANDARD.encode([7u8; 32]))
            .expect("key");
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut bytes = b64.decode(&row[SEALED_V1.len()..]).expect("base64");
        bytes[NONCE_LEN + 3] ^= 1;
        let tampered = format!("{SEALED_V1}{}", b64.encode(bytes));
        for (key, connection, row) in [
            (Some(&other), "xero", row.clone()),
            (Some(&key), "qbo", row.clone()),
            (Some(&key), "xero", tampered),
            (Some(&key), "xero", "rcv1:".to_owned()),
            (Some(&key), "xero", "rcv1:!!".to_owned()),
        ] {
            let e = unseal(key, connection, &row)
                .expect_err("refused")
                .to_string();
            assert!(e.contains("do not open with this store key"), "{e}");
        }
        let e = unseal(None, "xero", &row).expect_err("no key").to_string();
        assert!(e.contains("no store key is set"), "{e}");
    }

    #[test]
    fn plain_rows_still_read_with_or_without_a_key() {
        let key = StoreKey::parse(KEY).expect("key");
        let plain = seal(None, "xero", &tokens()).expect("plain");
        assert!(plain.starts_with('{'));
        assert_eq!(unseal(Some(&key), "xero", &plain).expect("read"), tokens());
        assert_eq!(unseal(None, "xero", &plain).expect("read"), tokens());
    }

    #[test]
    fn bad_keys_say_what_a_key_is() {
        for bad in ["", "not base64!", "c2hvcnQ="] {
            let e = StoreKey::parse(bad).expect_err("bad key");
            assert!(e.contains("openssl rand -base64 32"), "{e}");
        }
        assert_eq!(
            format!("{:?}", StoreKey::parse(KEY).expect("key")),
            "StoreKey(..)"
        );
    }
}
