//! A throwaway `redis-server` on a free loopback port, for the queue's many-worker tests.
//!
//! Nothing is persisted (no RDB, no AOF) and the process dies with the test (see
//! [`crate::process`]'s guard), so each test gets an empty Redis of its own.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::process::{Guarded, free_port, program, tail};

/// A running `redis-server`.
pub struct RedisServer {
    server: Option<Guarded>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl RedisServer {
    /// Starts one and returns once it answers `PING` (about 20 ms here).
    pub fn start() -> Result<RedisServer, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let log: PathBuf = dir.path().join("redis.log");
        let mut last = String::new();
        for _ in 0..5 {
            let port = free_port();
            let args: Vec<String> = [
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                &dir.path().display().to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            let server = Guarded::spawn(&program("redis-server"), &args, &log, None)?;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if ping(port) {
                    return Ok(RedisServer {
                        server: Some(server),
                        port,
                        _dir: dir,
                    });
                }
                if !server.alive() {
                    break;
                }
                // A poll interval, not synchronisation: the loop ends on the server's answer.
                std::thread::sleep(Duration::from_millis(20));
            }
            last = tail(&log);
            server.stop();
        }
        Err(format!("redis-server did not answer PING:\n{last}"))
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server now.
    pub fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    stream.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
