//! Local receivers notifications are delivered to in tests: an HTTP server that records every
//! request (and can fail the first ones, to see retries), and an SMTP server that speaks the
//! real dialogue over TCP and keeps every message it accepts.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A request the HTTP receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub content_type: String,
    pub body: String,
}

#[derive(Default)]
struct HttpState {
    received: Vec<Received>,
    /// Answer this status to the next N requests (recorded all the same).
    failing: Vec<u16>,
}

/// An HTTP server on a free loopback port, recording every POST.
#[derive(Clone)]
pub struct HttpReceiver {
    pub url: String,
    state: Arc<Mutex<HttpState>>,
}

impl HttpReceiver {
    pub async fn start() -> HttpReceiver {
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode, Uri};
        let state = Arc::new(Mutex::new(HttpState::default()));
        let app = axum::Router::new()
            .fallback(
                |State(s): State<Arc<Mutex<HttpState>>>,
                 uri: Uri,
                 headers: HeaderMap,
                 body: String| async move {
                    let mut s = s.lock().expect("lock");
                    s.received.push(Received {
                        path: uri.path().to_owned(),
                        content_type: headers
                            .get("content-type")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned(),
                        body,
                    });
                    let status = if s.failing.is_empty() {
                        200
                    } else {
                        s.failing.remove(0)
                    };
                    (
                        StatusCode::from_u16(status).expect("status"),
                        if status == 200 { "ok" } else { "no" },
                    )
                },
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        HttpReceiver { url, state }
    }

    /// The next `n` requests are answered `status`.
    pub fn fail_next(&self, n: usize, status: u16) {
        self.state
            .lock()
            .expect("lock")
            .failing
            .extend(std::iter::repeat_n(status, n));
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("lock").received.clone()
    }

    /// The requests to `path`.
    pub fn to(&self, path: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }
}

/// A message the SMTP sink accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The DATA as sent (headers and body, dot-stuffing undone).
    pub data: String,
}

/// An SMTP server on a free loopback port: greets, answers EHLO/HELO, MAIL, RCPT, DATA, RSET,
/// NOOP and QUIT as RFC 5321 says, and keeps each message.
#[derive(Clone)]
pub struct SmtpSink {
    pub port: u16,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let kept = mails.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let _ = session(socket, kept).await;
                });
            }
        });
        SmtpSink { port, mails }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().expect("lock").clone()
    }
}

async fn session(
    socket: tokio::net::TcpStream,
    mails: Arc<Mutex<Vec<Mail>>>,
) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink.test ESMTP ready\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let verb = command
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => {
                write
                    .write_all(b"250-sink.test\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n")
                    .await?
            }
            "HELO" => write.write_all(b"250 sink.test\r\n").await?,
            "MAIL" => {
                from = address(&command);
                to.clear();
                write.write_all(b"250 2.1.0 OK\r\n").await?;
            }
            "RCPT" => {
                to.push(address(&command));
                write.write_all(b"250 2.1.5 OK\r\n").await?;
            }
            "DATA" => {
                if from.is_empty() || to.is_empty() {
                    write
                        .write_all(b"503 5.5.1 MAIL and RCPT first\r\n")
                        .await?;
                    continue;
                }
                write
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" || line == ".\n" {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                mails.lock().expect("lock").push(Mail {
                    from: std::mem::take(&mut from),
                    to: std::mem::take(&mut to),
                    data,
                });
                write.write_all(b"250 2.0.0 Queued\r\n").await?;
            }
            "RSET" | "NOOP" => write.write_all(b"250 2.0.0 OK\r\n").await?,
            "QUIT" => {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            }
            _ => {
                write
                    .write_all(b"502 5.5.2 Command not recognized\r\n")
                    .await?
            }
        }
    }
}

/// The address in `MAIL FROM:<a@b>` or `RCPT TO:<a@b>`.
fn address(command: &str) -> String {
    command
        .split_once('<')
        .and_then(|(_, rest)| rest.split_once('>'))
        .map(|(a, _)| a.to_owned())
        .unwrap_or_default()
}
