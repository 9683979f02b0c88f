//! `rollcall connect`: an operator approves rollcall's access to an accounting system once, in a
//! browser, and the tokens land in the store.
//!
//! The consent redirect comes back to a loopback port this command listens on (the vendors allow
//! `http://localhost` redirect URIs for exactly this), so no public endpoint is needed. One
//! request is all it has to understand, so it reads the request line itself rather than
//! starting a web server.

use std::collections::HashMap;
use std::time::Duration;

use rollcall_core::oauth::ConnectApp;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::store::Store;

/// Why a connect attempt ended without tokens.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot listen for the consent redirect on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("no consent came back within {0:?}")]
    TimedOut(Duration),
    #[error("the redirect's state does not match this attempt (an old or forged redirect)")]
    StateMismatch,
    #[error("{0}")]
    Setup(String),
    #[error(transparent)]
    Remote(#[from] rollcall_core::RemoteError),
    #[error(transparent)]
    Vault(#[from] rollcall_core::oauth::VaultError),
}

/// How the consent is handed to the operator: the CLI prints the URL; tests follow it.
pub trait ShowConsent {
    fn show(&self, url: &str);
}

/// Runs one consent: listens on `port`, shows the consent URL, waits for the redirect, trades
/// the code for tokens and saves them under the app's connection name. Returns the tenant.
pub async fn connect(
    app: &ConnectApp,
    store: &Store,
    port: u16,
    wait: Duration,
    show: &dyn ShowConsent,
) -> Result<String, ConnectError> {
    let addr = format!("127.0.0.1:{port}");
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| ConnectError::Listen {
            addr: addr.clone(),
            source,
        })?;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(port);
    let redirect_uri = format!("http://localhost:{port}/callback");
    let state = uuid::Uuid::new_v4().simple().to_string();
    let url = app
        .consent_url(&redirect_uri, &state)
        .map_err(ConnectError::Setup)?;
    show.show(&url);

    let query = tokio::time::timeout(wait, next_callback(&listener))
        .await
        .map_err(|_| ConnectError::TimedOut(wait))??;
    // The state is compared in constant time: it stands between the operator's consent and a
    // stranger's redirect.
    let given = query.get("state").map(String::as_str).unwrap_or_default();
    let same = given.len() == state.len()
        && given
            .bytes()
            .zip(state.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return Err(ConnectError::StateMismatch);
    }
    let http = reqwest::Client::new();
    let tokens = app.finish(&http, &redirect_uri, &query).await?;
    store.token_vault().save(&app.connection, &tokens).await?;
    Ok(tokens.tenant.unwrap_or_default())
}

/// Waits for the redirect to `/callback` and answers the browser; other requests (a favicon)
/// get a 404 and the wait goes on.
async fn next_callback(listener: &TcpListener) -> Result<HashMap<String, String>, ConnectError> {
    loop {
        let (mut socket, _) = listener
            .accept()
            .await
            .map_err(|e| ConnectError::Setup(format!("accepting the redirect: {e}")))?;
        let mut buffer = vec![0u8; 16 * 1024];
        let mut read = 0;
        while read < buffer.len() {
            match socket.read(&mut buffer[read..]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => read += n,
            }
            if buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let head = String::from_utf8_lossy(&buffer[..read]);
        let target = head
            .lines()
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .unwrap_or("/");
        let Ok(url) = reqwest::Url::parse(&format!("http://localhost{target}")) else {
            continue;
        };
        if url.path() != "/callback" {
            let _ = socket
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                )
                .await;
            continue;
        }
        let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
        let body = if query.contains_key("error") {
            "rollcall: access was not granted. You can close this tab."
        } else {
            "rollcall: access granted. You can close this tab and return to the terminal."
        };
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = socket.write_all(answer.as_bytes()).await;
        return Ok(query);
    }
}
