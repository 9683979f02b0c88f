//! The connection that carries a read's paged searches, decoding answers where they arrived.
//!
//! ldap3 does everything else (it opens the first connection, so its errors name a wrong
//! password, a bad CA or a firewall; it reads the root DSE and finishes ranged attributes), but
//! its codec parses every message into a tree of owned buffers and the stream then clones that
//! tree: for a 100,000-user read that was most of rollcall's CPU, more than slapd spent serving
//! the entries (BENCHMARKS.md). This connection writes the same requests (search filters are
//! still compiled by ldap3's parser) and reads the answers with [`crate::ber`] straight out of
//! its read buffer, so a value is copied once, into the person who keeps it.
//!
//! It speaks the few operations a read needs: StartTLS, simple bind, search with the
//! paged-results control, abandon and unbind (RFC 4511; paging RFC 2696). One request is in
//! flight at a time; answers to an abandoned request are skipped by message id.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::ber::{self, Malformed, Reader, Tag, Writer};
use crate::error::LdapError;

/// The paged-results control (RFC 2696; AD's OID).
pub(crate) const PAGED_RESULTS: &str = "1.2.840.113556.1.4.319";
const START_TLS: &str = "1.3.6.1.4.1.1466.20037";
/// How much is asked of the socket at once: a few dozen entries, so one wake-up hands over
/// many of them.
const READ_CHUNK: usize = 256 * 1024;
/// The largest single message accepted (a group with a few hundred thousand member DNs).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// Protocol operations by their APPLICATION tag number (RFC 4511 §4.2–4.14).
mod op {
    pub const BIND_REQUEST: u32 = 0;
    pub const BIND_RESPONSE: u32 = 1;
    pub const UNBIND_REQUEST: u32 = 2;
    pub const SEARCH_REQUEST: u32 = 3;
    pub const SEARCH_ENTRY: u32 = 4;
    pub const SEARCH_DONE: u32 = 5;
    pub const ABANDON_REQUEST: u32 = 16;
    pub const SEARCH_REFERENCE: u32 = 19;
    pub const EXTENDED_REQUEST: u32 = 23;
    pub const EXTENDED_RESPONSE: u32 = 24;
    pub const INTERMEDIATE: u32 = 25;
}

/// How a request ended: an LDAPResult, with the paged-results cookie when one came back.
#[derive(Debug, Clone, Default)]
pub(crate) struct Outcome {
    pub rc: u32,
    pub matched: String,
    pub text: String,
    pub refs: Vec<String>,
    /// `None` when the server sent no paged-results control.
    pub cookie: Option<Vec<u8>>,
}

/// One answer to a search, borrowed from the read buffer until the handler returns.
pub(crate) enum Item<'a> {
    /// The contents of a SearchResultEntry (`objectName`, `attributes`).
    Entry(&'a [u8]),
    /// A SearchResultReference's URLs.
    Reference(Vec<String>),
}

/// What a search asks for, in the form it is sent.
pub(crate) struct Search<'a> {
    pub base: &'a str,
    /// 0 base, 1 one level, 2 subtree.
    pub scope: i64,
    /// The filter, compiled once by [`compile_filter`].
    pub filter: &'a [u8],
    pub attrs: &'a [String],
}

/// A filter string in BER, or `None` when it is not valid LDAP filter syntax.
pub(crate) fn compile_filter(filter: &str) -> Option<Vec<u8>> {
    use ldap3::asn1::ASNTag;
    let tag = ldap3::parse_filter(filter).ok()?;
    let mut out = bytes::BytesMut::new();
    ldap3::asn1::write::encode_into(&mut out, tag.into_structure()).ok()?;
    Some(out.to_vec())
}

/// Where a server listens, from its URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub host: String,
    pub port: u16,
    pub ldaps: bool,
}

impl Endpoint {
    /// `ldap[s]://host[:port][/…]`, with IPv6 hosts in brackets.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let url = url.trim();
        let lower = url.to_ascii_lowercase();
        let (ldaps, rest) = if lower.starts_with("ldaps://") {
            (true, &url["ldaps://".len()..])
        } else if lower.starts_with("ldap://") {
            (false, &url["ldap://".len()..])
        } else {
            return Err("the scheme must be ldaps:// or ldap://".to_owned());
        };
        let authority = rest.split(['/', '?']).next().unwrap_or_default();
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| "an IPv6 host without its closing `]`".to_owned())?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err("no host".to_owned());
        }
        let port = match port {
            None | Some("") => {
                if ldaps {
                    636
                } else {
                    389
                }
            }
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("the port {p:?} is not a number from 1 to 65535"))?,
        };
        Ok(Endpoint {
            host: host.to_owned(),
            port,
            ldaps,
        })
    }
}

/// How the connection is carried.
enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Between the plain and the TLS stream during StartTLS, or after a failure.
    Gone,
}

/// One connection to a directory server, used by one task.
pub(crate) struct Wire {
    io: Io,
    server: String,
    timeout: Duration,
    buf: Vec<u8>,
    /// The unread bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    next_id: i32,
}

/// What a connection needs to be opened.
pub(crate) struct Opening<'a> {
    pub server: &'a str,
    pub endpoint: &'a Endpoint,
    pub starttls: bool,
    pub tls: Option<Arc<ClientConfig>>,
    pub connect_timeout: Duration,
    pub op_timeout: Duration,
}

impl Wire {
    /// Connects, and sets up TLS (ldaps:// or StartTLS) when asked to. Errors say whether the
    /// server could not be reached or TLS failed, as ldap3's do.
    pub async fn open(o: Opening<'_>) -> Result<Wire, LdapError> {
        let unreachable = |detail: String| LdapError::Unreachable {
            server: o.server.to_owned(),
            detail,
        };
        let tcp = match tokio::time::timeout(
            o.connect_timeout,
            TcpStream::connect((o.endpoint.host.as_str(), o.endpoint.port)),
        )
        .await
        {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => {
                return Err(unreachable(format!(
                    "no connection within {} s (`connect_timeout_secs`)",
                    o.connect_timeout.as_secs()
                )));
            }
        };
        // Requests are small and answered before the next is sent: no Nagle delay on them.
        let _ = tcp.set_nodelay(true);
        let mut wire = Wire {
            io: Io::Plain(tcp),
            server: o.server.to_owned(),
            timeout: o.op_timeout,
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            next_id: 1,
        };
        if o.endpoint.ldaps || o.starttls {
            let config = o.tls.ok_or_else(|| LdapError::Tls {
                server: o.server.to_owned(),
                detail: "no TLS settings".to_owned(),
            })?;
            if o.starttls && !o.endpoint.ldaps {
                wire.start_tls().await?;
            }
            wire.handshake(config, &o.endpoint.host, o.connect_timeout)
                .await?;
        }
        Ok(wire)
    }

    async fn start_tls(&mut self) -> Result<(), LdapError> {
        let mut w = Writer::default();
        let m = w.mark();
        w.bytes(Tag::context(0, false), START_TLS.as_bytes());
        w.wrap(m, Tag::application(op::EXTENDED_REQUEST, true));
        let id = self.send(w, None).await?;
        let during = "starting TLS";
        let outcome = self.result(id, op::EXTENDED_RESPONSE, during).await?;
        if outcome.rc != 0 {
            return Err(LdapError::Tls {
                server: self.server.clone(),
                detail: format!("StartTLS refused: {} (result {})", outcome.text, outcome.rc),
            });
        }
        if self.start != self.end {
            return Err(self.malformed(during, Malformed("bytes after the StartTLS answer")));
        }
        Ok(())
    }

    async fn handshake(
        &mut self,
        config: Arc<ClientConfig>,
        host: &str,
        within: Duration,
    ) -> Result<(), LdapError> {
        let tls_error = |detail: String| LdapError::Tls {
            server: self.server.clone(),
            detail,
        };
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| tls_error(format!("{host:?} is not a host name: {e}")))?;
        let Io::Plain(tcp) = std::mem::replace(&mut self.io, Io::Gone) else {
            return Err(tls_error("TLS over TLS".to_owned()));
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        match tokio::time::timeout(within, connector.connect(name, tcp)).await {
            Ok(Ok(tls)) => {
                self.io = Io::Tls(Box::new(tls));
                Ok(())
            }
            Ok(Err(e)) => Err(tls_error(e.to_string())),
            Err(_) => Err(tls_error(format!(
                "no TLS handshake within {} s",
                within.as_secs()
            ))),
        }
    }

    /// A simple bind: the server's answer, for the caller to word.
    pub async fn bind(&mut self, dn: &str, password: &str) -> Result<Outcome, LdapError> {
        let mut w = Writer::default();
        let m = w.mark();
        w.integer(3);
        w.octets(dn.as_bytes());
        w.bytes(Tag::context(0, false), password.as_bytes());
        w.wrap(m, Tag::application(op::BIND_REQUEST, true));
        let id = self.send(w, None).await?;
        self.result(id, op::BIND_RESPONSE, "binding").await
    }

    /// One page of a search: every entry and reference goes to `on_item` as it is read; a
    /// handler that returns `false` ends the search there (it is abandoned) and `Ok(None)`
    /// comes back. Otherwise the search's result, with the cookie for the next page.
    pub async fn search_page(
        &mut self,
        search: &Search<'_>,
        page: Option<(i32, &[u8])>,
        on_item: &mut (dyn FnMut(Item<'_>) -> bool + Send),
    ) -> Result<Option<Outcome>, LdapError> {
        let mut w = Writer::default();
        let m = w.mark();
        w.octets(search.base.as_bytes());
        w.enumerated(search.scope);
        w.enumerated(0); // never dereference aliases
        w.integer(0); // no size limit of our own
        w.integer(0); // no time limit of our own
        w.boolean(false); // values, not only types
        w.raw(search.filter);
        let a = w.mark();
        for attr in search.attrs {
            w.octets(attr.as_bytes());
        }
        w.wrap(a, Tag::universal(ber::SEQUENCE));
        w.wrap(m, Tag::application(op::SEARCH_REQUEST, true));
        let control = page.map(|(size, cookie)| {
            let mut v = Writer::default();
            let m = v.mark();
            v.integer(i64::from(size));
            v.octets(cookie);
            v.wrap(m, Tag::universal(ber::SEQUENCE));
            v.buf
        });
        let id = self.send(w, control.as_deref()).await?;
        let during = format!("reading {}", search.base);
        loop {
            let Message {
                op: tag,
                contents,
                controls,
            } = self.answer(id, &during).await?;
            match tag {
                t if t == Tag::application(op::SEARCH_ENTRY, true) => {
                    if !on_item(Item::Entry(contents)) {
                        self.abandon(id).await;
                        return Ok(None);
                    }
                }
                t if t == Tag::application(op::SEARCH_REFERENCE, true) => {
                    let urls = strings(contents).map_err(|e| self.malformed(&during, e))?;
                    if !on_item(Item::Reference(urls)) {
                        self.abandon(id).await;
                        return Ok(None);
                    }
                }
                t if t == Tag::application(op::INTERMEDIATE, true) => {}
                t if t == Tag::application(op::SEARCH_DONE, true) => {
                    return outcome(contents, controls)
                        .map(Some)
                        .map_err(|e| self.malformed(&during, e));
                }
                _ => {
                    return Err(self
                        .malformed(&during, Malformed("an answer that is not part of a search")));
                }
            }
        }
    }

    /// Tells the server the read is over; it closes the connection anyway.
    pub async fn unbind(mut self) {
        let mut w = Writer::default();
        w.bytes(Tag::application(op::UNBIND_REQUEST, false), &[]);
        let _ = self.send(w, None).await;
        match &mut self.io {
            Io::Plain(s) => {
                let _ = s.shutdown().await;
            }
            Io::Tls(s) => {
                let _ = s.shutdown().await;
            }
            Io::Gone => {}
        }
    }

    async fn abandon(&mut self, id: i32) {
        let mut w = Writer::default();
        w.integer_tagged(Tag::application(op::ABANDON_REQUEST, false), i64::from(id));
        let _ = self.send(w, None).await;
    }

    /// Wraps `op` (one protocol operation, already encoded) into an LDAPMessage with a new id,
    /// with the paged-results control when `paged` holds its value, and sends it.
    async fn send(&mut self, op: Writer, paged: Option<&[u8]>) -> Result<i32, LdapError> {
        let id = self.next_id;
        self.next_id = if id == i32::MAX { 1 } else { id + 1 };
        let mut w = Writer::default();
        w.integer(i64::from(id));
        w.raw(&op.buf);
        if let Some(value) = paged {
            let c = w.mark();
            let one = w.mark();
            w.octets(PAGED_RESULTS.as_bytes());
            w.octets(value);
            w.wrap(one, Tag::universal(ber::SEQUENCE));
            w.wrap(c, Tag::context(0, true));
        }
        w.wrap(0, Tag::universal(ber::SEQUENCE));
        let write = async {
            match &mut self.io {
                Io::Plain(s) => {
                    s.write_all(&w.buf).await?;
                    s.flush().await
                }
                Io::Tls(s) => {
                    s.write_all(&w.buf).await?;
                    s.flush().await
                }
                Io::Gone => Err(std::io::ErrorKind::NotConnected.into()),
            }
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => Ok(id),
            Ok(Err(e)) => Err(self.lost("sending a request", e.to_string())),
            Err(_) => Err(self.timed_out("sending a request")),
        }
    }

    /// Waits for the answer to request `id`, tagged `expected`, and reads its LDAPResult.
    async fn result(&mut self, id: i32, expected: u32, during: &str) -> Result<Outcome, LdapError> {
        let m = self.answer(id, during).await?;
        if m.op != Tag::application(expected, true) {
            return Err(self.malformed(during, Malformed("an answer of another kind")));
        }
        outcome(m.contents, m.controls).map_err(|e| self.malformed(during, e))
    }

    /// The next message answering request `id`; answers to others are skipped (see
    /// [`Wire::skip_other`]).
    async fn answer(&mut self, id: i32, during: &str) -> Result<Message<'_>, LdapError> {
        loop {
            let (msg_id, at, len) = self.next_message(during).await?;
            if msg_id == i64::from(id) {
                return split_message(&self.buf[at..at + len])
                    .map_err(|e| self.malformed(during, e));
            }
            self.skip_other(msg_id, at, len, during)?;
        }
    }

    /// A message for another request (one abandoned) is skipped; one with id 0 is the server
    /// saying it is closing the connection (a notice of disconnection).
    fn skip_other(
        &self,
        msg_id: i64,
        at: usize,
        len: usize,
        during: &str,
    ) -> Result<(), LdapError> {
        if msg_id != 0 {
            return Ok(());
        }
        let text = split_message(&self.buf[at..at + len])
            .ok()
            .and_then(|m| outcome(m.contents, m.controls).ok())
            .map(|o| {
                format!(
                    "the server is closing the connection: {} (result {})",
                    o.text, o.rc
                )
            })
            .unwrap_or_else(|| "the server is closing the connection".to_owned());
        Err(self.lost(during, text))
    }

    /// The next whole message: its id and where it lies in the buffer. The buffer is refilled
    /// from the socket as needed; the message's bytes count as read once this returns.
    async fn next_message(&mut self, during: &str) -> Result<(i64, usize, usize), LdapError> {
        loop {
            let unread = &self.buf[self.start..self.end];
            if let Some(len) =
                ber::frame(unread, MAX_MESSAGE).map_err(|e| self.malformed(during, e))?
            {
                let at = self.start;
                self.start += len;
                let id =
                    message_id(&self.buf[at..at + len]).map_err(|e| self.malformed(during, e))?;
                return Ok((id, at, len));
            }
            self.fill(during).await?;
        }
    }

    /// Reads more from the socket, making room first: unread bytes move to the front, and the
    /// buffer grows only for a message larger than it.
    async fn fill(&mut self, during: &str) -> Result<(), LdapError> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.buf.len() - self.end < READ_CHUNK / 4 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.end < READ_CHUNK / 4 {
            self.buf.resize(self.end + READ_CHUNK, 0);
        }
        let timeout = self.timeout;
        let Wire { io, buf, end, .. } = self;
        let room = &mut buf[*end..];
        let read = async {
            match io {
                Io::Plain(s) => s.read(room).await,
                Io::Tls(s) => s.read(room).await,
                Io::Gone => Err(std::io::ErrorKind::NotConnected.into()),
            }
        };
        match tokio::time::timeout(timeout, read).await {
            Ok(Ok(0)) => Err(self.lost(during, "the server closed the connection".to_owned())),
            Ok(Ok(n)) => {
                *end += n;
                Ok(())
            }
            Ok(Err(e)) => Err(self.lost(during, e.to_string())),
            Err(_) => Err(self.timed_out(during)),
        }
    }

    fn lost(&self, during: &str, detail: String) -> LdapError {
        LdapError::ConnectionLost {
            server: self.server.clone(),
            during: during.to_owned(),
            detail,
        }
    }

    fn timed_out(&self, during: &str) -> LdapError {
        LdapError::Timeout {
            server: self.server.clone(),
            during: during.to_owned(),
            secs: self.timeout.as_secs(),
        }
    }

    fn malformed(&self, during: &str, e: Malformed) -> LdapError {
        LdapError::Protocol {
            server: self.server.clone(),
            during: during.to_owned(),
            rc: 2,
            text: format!("the server sent {e}"),
        }
    }
}

/// An LDAPMessage's id.
fn message_id(msg: &[u8]) -> Result<i64, Malformed> {
    let body = Reader::new(msg).expect(
        Tag::universal(ber::SEQUENCE),
        "a message that is not a SEQUENCE",
    )?;
    let id = Reader::new(body).expect(Tag::universal(ber::INTEGER), "a message without an id")?;
    ber::integer(id)
}

/// An LDAPMessage's parts, borrowed from the read buffer.
struct Message<'a> {
    /// The protocol operation's tag and contents.
    op: Tag,
    contents: &'a [u8],
    /// The `[0] Controls` contents, if any were sent.
    controls: Option<&'a [u8]>,
}

/// An LDAPMessage's operation and its controls.
fn split_message(msg: &[u8]) -> Result<Message<'_>, Malformed> {
    let body = Reader::new(msg).expect(
        Tag::universal(ber::SEQUENCE),
        "a message that is not a SEQUENCE",
    )?;
    let mut r = Reader::new(body);
    r.expect(Tag::universal(ber::INTEGER), "a message without an id")?;
    let (op, contents) = r.next()?;
    let controls = r.optional(Tag::context(0, true))?;
    Ok(Message {
        op,
        contents,
        controls,
    })
}

/// An LDAPResult (RFC 4511 §4.1.9) and the paged-results cookie among `controls`.
fn outcome(contents: &[u8], controls: Option<&[u8]>) -> Result<Outcome, Malformed> {
    let mut r = Reader::new(contents);
    let rc = ber::integer(r.expect(Tag::universal(ber::ENUMERATED), "a result without a code")?)?;
    let matched = r.expect(
        Tag::universal(ber::OCTET_STRING),
        "a result without a matched DN",
    )?;
    let text = r.expect(
        Tag::universal(ber::OCTET_STRING),
        "a result without a diagnostic",
    )?;
    let refs = match r.optional(Tag::context(3, true))? {
        Some(list) => strings(list)?,
        None => Vec::new(),
    };
    let mut cookie = None;
    if let Some(list) = controls {
        let mut list = Reader::new(list);
        while !list.is_empty() {
            let mut c = Reader::new(list.expect(
                Tag::universal(ber::SEQUENCE),
                "a control that is not a SEQUENCE",
            )?);
            let oid = c.expect(
                Tag::universal(ber::OCTET_STRING),
                "a control without a type",
            )?;
            c.optional(Tag::universal(ber::BOOLEAN))?;
            let value = c.optional(Tag::universal(ber::OCTET_STRING))?;
            if oid == PAGED_RESULTS.as_bytes() {
                let value = value.ok_or(Malformed("a paged-results control without a value"))?;
                let mut v = Reader::new(Reader::new(value).expect(
                    Tag::universal(ber::SEQUENCE),
                    "a paged-results value that is not a SEQUENCE",
                )?);
                v.expect(
                    Tag::universal(ber::INTEGER),
                    "a paged-results value without a size",
                )?;
                let bytes = v.expect(
                    Tag::universal(ber::OCTET_STRING),
                    "a paged-results value without a cookie",
                )?;
                cookie = Some(bytes.to_vec());
            }
        }
    }
    Ok(Outcome {
        rc: u32::try_from(rc).unwrap_or(u32::MAX),
        matched: String::from_utf8_lossy(matched).into_owned(),
        text: String::from_utf8_lossy(text)
            .trim()
            .trim_end_matches('\0')
            .trim()
            .to_owned(),
        refs,
        cookie,
    })
}

/// A SEQUENCE OF LDAPString's contents, as text.
fn strings(contents: &[u8]) -> Result<Vec<String>, Malformed> {
    let mut r = Reader::new(contents);
    let mut out = Vec::new();
    while !r.is_empty() {
        let s = r.expect(
            Tag::universal(ber::OCTET_STRING),
            "a URL that is not a string",
        )?;
        out.push(String::from_utf8_lossy(s).into_owned());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_default_ports_and_ipv6() {
        let e = Endpoint::parse("ldaps://dc1.corp.example").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.ldaps),
            ("dc1.corp.example", 636, true)
        );
        let e = Endpoint::parse("LDAP://127.0.0.2:3389/dc=x??sub").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.ldaps),
            ("127.0.0.2", 3389, false)
        );
        let e = Endpoint::parse("ldap://[::1]:1389").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 1389));
        let e = Endpoint::parse("ldaps://[::1]").unwrap();
        assert_eq!(e.port, 636);
        assert!(Endpoint::parse("http://x").is_err());
        assert!(Endpoint::parse("ldap://x:99999").is_err());
        assert!(Endpoint::parse("ldap://").is_err());
    }

    /// An LDAPResult-shaped answer (`op`) to request `id`, with a paged-results cookie when
    /// `cookie` is given, as slapd writes one.
    fn result_message(id: i64, op: u32, rc: i64, text: &str, cookie: Option<&[u8]>) -> Vec<u8> {
        let mut w = Writer::default();
        w.integer(id);
        let d = w.mark();
        w.enumerated(rc);
        w.octets(b"");
        w.octets(text.as_bytes());
        w.wrap(d, Tag::application(op, true));
        if let Some(cookie) = cookie {
            let c = w.mark();
            let one = w.mark();
            w.octets(PAGED_RESULTS.as_bytes());
            let mut v = Writer::default();
            let m = v.mark();
            v.integer(0);
            v.octets(cookie);
            v.wrap(m, Tag::universal(ber::SEQUENCE));
            w.octets(&v.buf);
            w.wrap(one, Tag::universal(ber::SEQUENCE));
            w.wrap(c, Tag::context(0, true));
        }
        w.wrap(0, Tag::universal(ber::SEQUENCE));
        w.buf
    }

    fn done(rc: i64, text: &str, cookie: &[u8]) -> Vec<u8> {
        result_message(7, op::SEARCH_DONE, rc, text, Some(cookie))
    }

    /// A SearchResultEntry for request `id` with one `cn` value.
    fn entry_message(id: i64, dn: &str) -> Vec<u8> {
        let mut w = Writer::default();
        w.integer(id);
        let e = w.mark();
        w.octets(dn.as_bytes());
        let list = w.mark();
        let pair = w.mark();
        w.octets(b"cn");
        let set = w.mark();
        w.octets(dn.as_bytes());
        w.wrap(set, Tag::universal(ber::SET));
        w.wrap(pair, Tag::universal(ber::SEQUENCE));
        w.wrap(list, Tag::universal(ber::SEQUENCE));
        w.wrap(e, Tag::application(op::SEARCH_ENTRY, true));
        w.wrap(0, Tag::universal(ber::SEQUENCE));
        w.buf
    }

    fn reference_message(id: i64, url: &str) -> Vec<u8> {
        let mut w = Writer::default();
        w.integer(id);
        let r = w.mark();
        w.octets(url.as_bytes());
        w.wrap(r, Tag::application(op::SEARCH_REFERENCE, true));
        w.wrap(0, Tag::universal(ber::SEQUENCE));
        w.buf
    }

    /// A server that plays a script over loopback: after each request it reads, it writes the
    /// next answer one byte at a time (so messages arrive split across reads), then hangs up.
    async fn scripted(answers: Vec<Vec<u8>>) -> Wire {
        use tokio::io::AsyncReadExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let _ = s.set_nodelay(true);
            let mut request = vec![0u8; 4096];
            for answer in answers {
                if s.read(&mut request).await.unwrap_or(0) == 0 {
                    return;
                }
                for b in answer {
                    if s.write_all(&[b]).await.is_err() {
                        return;
                    }
                }
            }
        });
        let endpoint = Endpoint::parse(&format!("ldap://127.0.0.1:{port}")).unwrap();
        let mut wire = Wire::open(Opening {
            server: "ldap://test",
            endpoint: &endpoint,
            starttls: false,
            tls: None,
            connect_timeout: Duration::from_secs(5),
            op_timeout: Duration::from_secs(5),
        })
        .await
        .unwrap();
        let bound = wire.bind("cn=reader", "pw").await.unwrap();
        assert_eq!(bound.rc, 0);
        wire
    }

    fn bind_ok() -> Vec<u8> {
        result_message(1, op::BIND_RESPONSE, 0, "", None)
    }

    /// One page of a subtree search of `dc=x`: what the handler saw, and how the page ended.
    async fn one_page(wire: &mut Wire) -> (Vec<String>, Result<Option<Outcome>, LdapError>) {
        let filter = compile_filter("(objectClass=*)").unwrap();
        let attrs = ["cn".to_owned()];
        let search = Search {
            base: "dc=x",
            scope: 2,
            filter: &filter,
            attrs: &attrs,
        };
        let mut seen = Vec::new();
        let res = wire
            .search_page(&search, Some((100, b"")), &mut |item| {
                seen.push(match item {
                    Item::Entry(bytes) => crate::model::Entry::from_wire(bytes).unwrap().dn,
                    Item::Reference(urls) => format!("ref {}", urls.join(" ")),
                });
                true
            })
            .await;
        (seen, res)
    }

    #[tokio::test]
    async fn a_page_split_across_reads_is_read_whole_and_in_order() {
        let page = [
            entry_message(2, "cn=a,dc=x"),
            reference_message(2, "ldap://other/dc=y"),
            entry_message(2, "cn=b,dc=x"),
            result_message(2, op::SEARCH_DONE, 0, "", Some(b"next")),
        ]
        .concat();
        let mut wire = scripted(vec![bind_ok(), page]).await;
        let (seen, res) = one_page(&mut wire).await;
        assert_eq!(seen, ["cn=a,dc=x", "ref ldap://other/dc=y", "cn=b,dc=x"]);
        let outcome = res.unwrap().unwrap();
        assert_eq!(outcome.rc, 0);
        assert_eq!(outcome.cookie.as_deref(), Some(&b"next"[..]));
    }

    #[tokio::test]
    async fn answers_to_an_abandoned_request_are_skipped() {
        let page = [
            entry_message(1, "cn=stale,dc=x"),
            entry_message(2, "cn=a,dc=x"),
            result_message(2, op::SEARCH_DONE, 0, "", Some(b"")),
        ]
        .concat();
        let mut wire = scripted(vec![bind_ok(), page]).await;
        let (seen, res) = one_page(&mut wire).await;
        assert_eq!(seen, ["cn=a,dc=x"]);
        assert_eq!(res.unwrap().unwrap().cookie.as_deref(), Some(&b""[..]));
    }

    #[tokio::test]
    async fn a_notice_of_disconnection_mid_page_is_a_lost_connection() {
        let page = [
            entry_message(2, "cn=a,dc=x"),
            result_message(0, op::EXTENDED_RESPONSE, 52, "server shutting down", None),
        ]
        .concat();
        let mut wire = scripted(vec![bind_ok(), page]).await;
        let (seen, res) = one_page(&mut wire).await;
        assert_eq!(seen, ["cn=a,dc=x"]);
        let err = res.unwrap_err();
        assert!(matches!(err, LdapError::ConnectionLost { .. }), "{err:?}");
        assert!(err.to_string().contains("server shutting down"), "{err}");
    }

    #[tokio::test]
    async fn a_hang_up_mid_page_is_a_lost_connection() {
        let page = [entry_message(2, "cn=a,dc=x"), vec![0x30, 0x40, 0x02]].concat();
        let mut wire = scripted(vec![bind_ok(), page]).await;
        let (seen, res) = one_page(&mut wire).await;
        assert_eq!(seen, ["cn=a,dc=x"]);
        let err = res.unwrap_err();
        assert!(err.to_string().contains("closed the connection"), "{err}");
    }

    #[tokio::test]
    async fn garbage_is_a_protocol_error_that_says_what_was_wrong() {
        let page = [
            entry_message(2, "cn=a,dc=x"),
            vec![0x30, 0x80, 0x02, 0x01, 0x02],
        ]
        .concat();
        let mut wire = scripted(vec![bind_ok(), page]).await;
        let (_, res) = one_page(&mut wire).await;
        let err = res.unwrap_err();
        assert!(matches!(err, LdapError::Protocol { .. }), "{err:?}");
        assert!(err.to_string().contains("indefinite length"), "{err}");
    }

    #[test]
    fn a_search_result_gives_its_code_diagnostic_and_cookie() {
        let msg = done(0, "ok\0", b"\x01\x02");
        assert_eq!(message_id(&msg), Ok(7));
        let m = split_message(&msg).unwrap();
        assert_eq!(m.op, Tag::application(op::SEARCH_DONE, true));
        let o = outcome(m.contents, m.controls).unwrap();
        assert_eq!((o.rc, o.text.as_str()), (0, "ok"));
        assert_eq!(o.cookie.as_deref(), Some(&b"\x01\x02"[..]));
    }

    #[test]
    fn a_truncated_result_is_malformed() {
        let msg = done(4, "size limit", b"");
        let m = split_message(&msg).unwrap();
        assert!(outcome(&m.contents[..3], None).is_err());
    }

    #[test]
    fn filters_compile_and_bad_ones_are_refused() {
        let f = compile_filter("(&(objectClass=user)(cn=J\\2a*))").unwrap();
        assert_eq!(f[0], 0xa0, "an AND filter is [0] constructed");
        assert!(compile_filter("(&(objectClass=user)").is_none());
    }
}
