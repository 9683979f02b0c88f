//! A `chromedriver` on a free loopback port, driving Debian's headless Chromium, for the
//! console's browser tests: a real browser follows the console's redirects, keeps its cookies
//! (or refuses them) and submits its forms the way a person's would.
//!
//! The driver is a W3C WebDriver server; tests speak to it over HTTP ([`ChromeDriver::url`]).
//! It is handed over only once `GET /status` says it is ready; `Drop` asks it to shut down (which
//! closes any browser it started) and then kills it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::process::{Guarded, find, free_port, tail};

/// Debian's Chromium.
pub const CHROMIUM: &str = "chromium";
/// Debian's driver for it (package `chromium-driver`).
pub const CHROMEDRIVER: &str = "chromedriver";

/// A running `chromedriver`.
pub struct ChromeDriver {
    server: Option<Guarded>,
    port: u16,
    chromium: PathBuf,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for ChromeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChromeDriver")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl ChromeDriver {
    /// Starts one and returns once it reports ready.
    pub fn start() -> Result<ChromeDriver, String> {
        let chromium = find(CHROMIUM).ok_or("chromium is not installed")?;
        let driver = find(CHROMEDRIVER).ok_or("chromedriver is not installed")?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log = dir.path().join("chromedriver.log");
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let args = vec![format!("--port={port}"), "--log-level=WARNING".to_owned()];
            let server = Guarded::spawn(&driver, &args, &log, None)?;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if ready(port) {
                    return Ok(ChromeDriver {
                        server: Some(server),
                        port,
                        chromium,
                        _dir: dir,
                    });
                }
                if !server.alive() {
                    break;
                }
                // A poll interval, not synchronisation: the loop ends on the driver's answer.
                std::thread::sleep(Duration::from_millis(50));
            }
            last = tail(&log);
            server.stop();
        }
        Err(format!("chromedriver did not become ready:\n{last}"))
    }

    /// `http://127.0.0.1:PORT`, the WebDriver endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The browser the driver is to start (sessions name it in their capabilities).
    pub fn chromium(&self) -> &std::path::Path {
        &self.chromium
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // Closes the browsers of sessions a failed test left open, before the driver is killed.
        let _ = get(self.port, "/shutdown");
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }
}

fn ready(port: u16) -> bool {
    get(port, "/status").is_some_and(|body| body.contains("\"ready\":true"))
}

/// A plain HTTP/1.1 GET on loopback (chromedriver refuses 1.0); the answer's text, read up to
/// its `Content-Length` (chromedriver keeps the connection open after answering).
fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .ok()?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())
                    .flatten()
            });
            if length.is_some_and(|len| body.len() >= len) {
                break;
            }
        }
    }
    Some(String::from_utf8_lossy(&answer).into_owned())
}
