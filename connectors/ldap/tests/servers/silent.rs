//! Servers that do not answer: nothing listening, a listener that never speaks, a server that
//! stops half-way through a page. Each must end in a clear error (or an incomplete read) within
//! the pipeline's timeouts, never a run that hangs.

use std::time::{Duration, Instant};

use rollcall_core::Directory as _;
use rollcall_harness::Slapd;
use rollcall_harness::data::{READER_DN, READER_PASSWORD, STAFF};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{config, read_err};

fn quick(url: &str) -> rollcall_ldap::Config {
    let mut c = config(url, READER_DN, READER_PASSWORD, STAFF);
    c.allow_plaintext = true;
    c.connect_timeout_secs = 1;
    c.operation_timeout_secs = 1;
    c
}

#[tokio::test]
async fn nothing_listening_is_unreachable() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let err = read_err(quick(&format!("ldap://127.0.0.1:{port}"))).await;
    assert!(err.contains("unreachable"), "{err}");
}

#[tokio::test]
async fn a_listener_that_never_answers_times_out() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accepts, reads whatever comes, and never writes a byte.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            held.push(s);
        }
    });
    let started = Instant::now();
    let err = read_err(quick(&format!("ldap://127.0.0.1:{port}"))).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        err.contains("no answer") && err.contains("within 1 s while binding"),
        "{err}"
    );
}

/// A relay in front of slapd that passes `budget` bytes of answers, then holds the connection
/// open without passing anything more: the server is alive but the read cannot go on.
async fn stalling_relay(upstream: String, budget: usize) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("ldap://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let mut passed = 0usize;
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let Ok(n) = sr.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    let n = n.min(budget.saturating_sub(passed));
                    if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    passed += n;
                }
                // Stalled: keep both halves open and silent until the test is over.
                tokio::time::sleep(Duration::from_secs(600)).await;
                drop((cw, sr));
            });
        }
    });
    url
}

#[tokio::test]
async fn a_server_that_stalls_mid_page_gives_an_incomplete_read_within_the_timeout() {
    if !rollcall_harness::servers_available("a stalled read", Slapd::PROGRAMS) {
        return;
    }
    let slapd = Slapd::start(300).expect("slapd");
    let upstream = slapd.url().trim_start_matches("ldap://").to_owned();
    // Enough for the binds, the root DSE and the groups, and part of the people's first page.
    let url = stalling_relay(upstream, 40_000).await;
    let mut c = quick(&url);
    c.group_base_dns = vec![rollcall_harness::data::GROUPS.to_owned()];
    c.page_size = 100;
    let started = Instant::now();
    let read = rollcall_ldap::LdapDirectory::new(c)
        .read(None)
        .await
        .unwrap_or_else(|e| panic!("people came before the stall, so not an error: {e}"));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let why = match &read.completeness {
        rollcall_core::Completeness::Incomplete { reason } => reason.clone(),
        c => panic!("a stalled read must be incomplete: {c:?}"),
    };
    assert!(
        why.contains("no answer") && why.contains("within 1 s"),
        "{why}"
    );
    assert!(!read.people.is_empty() && read.people.len() < 300);
}
