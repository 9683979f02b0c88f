//! Just enough BER to frame LDAP messages and read a server's answers in place.
//!
//! A people read is tens of megabytes of SearchResultEntry messages, and almost all of it is
//! values a person keeps. Parsing each message into a tree of owned buffers (as a general ASN.1
//! library does) and then copying the values out again cost more CPU than slapd spent serving
//! them (BENCHMARKS.md). This reader hands out slices of the buffer the bytes arrived in, so
//! each value is copied once, into the [`Person`](rollcall_core::Person) that keeps it.
//!
//! It reads the subset LDAP allows (RFC 4511 §5.1): definite lengths only, so an indefinite
//! length is malformed input, as is any length that runs past its enclosing element. Requests
//! are written by [`Writer`]; search filters are compiled by ldap3's filter parser.

use std::fmt;

/// A malformed element: what was wrong, for the error a server's bad answer becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed(pub &'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Tag classes as BER writes them in the top two bits.
pub(crate) const UNIVERSAL: u8 = 0;
pub(crate) const APPLICATION: u8 = 1;
pub(crate) const CONTEXT: u8 = 2;

/// The universal types LDAP uses.
pub(crate) const BOOLEAN: u32 = 1;
pub(crate) const INTEGER: u32 = 2;
pub(crate) const OCTET_STRING: u32 = 4;
pub(crate) const ENUMERATED: u32 = 10;
pub(crate) const SEQUENCE: u32 = 16;
pub(crate) const SET: u32 = 17;

/// An element's identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tag {
    pub class: u8,
    pub constructed: bool,
    pub number: u32,
}

impl Tag {
    pub const fn universal(number: u32) -> Tag {
        Tag {
            class: UNIVERSAL,
            constructed: number == SEQUENCE || number == SET,
            number,
        }
    }

    pub const fn application(number: u32, constructed: bool) -> Tag {
        Tag {
            class: APPLICATION,
            constructed,
            number,
        }
    }

    pub const fn context(number: u32, constructed: bool) -> Tag {
        Tag {
            class: CONTEXT,
            constructed,
            number,
        }
    }
}

/// Reads one element's tag and length from the front of `buf`: the tag, where its contents
/// start and how long they are. `Ok(None)` when `buf` ends before the header does.
fn header(buf: &[u8]) -> Result<Option<(Tag, usize, usize)>, Malformed> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut at = 1;
    let mut number = u32::from(first & 0x1f);
    if number == 0x1f {
        number = 0;
        loop {
            let Some(&b) = buf.get(at) else {
                return Ok(None);
            };
            at += 1;
            if number > (u32::MAX >> 7) {
                return Err(Malformed("a tag number too large"));
            }
            number = (number << 7) | u32::from(b & 0x7f);
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let tag = Tag {
        class: first >> 6,
        constructed: first & 0x20 != 0,
        number,
    };
    let Some(&l) = buf.get(at) else {
        return Ok(None);
    };
    at += 1;
    let len = if l < 0x80 {
        usize::from(l)
    } else if l == 0x80 {
        return Err(Malformed("an indefinite length, which LDAP does not allow"));
    } else {
        let n = usize::from(l & 0x7f);
        if n > 4 {
            return Err(Malformed("a length of more than four bytes"));
        }
        let Some(bytes) = buf.get(at..at + n) else {
            return Ok(None);
        };
        at += n;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    Ok(Some((tag, at, len)))
}

/// The size of the first whole element in `buf`, header included; `Ok(None)` until all of it
/// has arrived. Elements larger than `max` are refused before they are buffered.
pub(crate) fn frame(buf: &[u8], max: usize) -> Result<Option<usize>, Malformed> {
    let Some((_, start, len)) = header(buf)? else {
        return Ok(None);
    };
    if len > max {
        return Err(Malformed("a message larger than the largest accepted"));
    }
    let end = start + len;
    Ok((buf.len() >= end).then_some(end))
}

/// Reads the elements of one constructed element (or of a whole buffer) in order.
#[derive(Clone, Copy)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(contents: &'a [u8]) -> Reader<'a> {
        Reader { rest: contents }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next element: its tag and its contents.
    pub fn next(&mut self) -> Result<(Tag, &'a [u8]), Malformed> {
        let (tag, start, len) = header(self.rest)?.ok_or(Malformed("a truncated element"))?;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.rest.len())
            .ok_or(Malformed("an element longer than what holds it"))?;
        let contents = &self.rest[start..end];
        self.rest = &self.rest[end..];
        Ok((tag, contents))
    }

    /// The next element, which must carry `tag`.
    pub fn expect(&mut self, tag: Tag, what: &'static str) -> Result<&'a [u8], Malformed> {
        match self.next()? {
            (t, contents) if t == tag => Ok(contents),
            _ => Err(Malformed(what)),
        }
    }

    /// The next element if it carries `tag`; nothing is consumed otherwise.
    pub fn optional(&mut self, tag: Tag) -> Result<Option<&'a [u8]>, Malformed> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let mut ahead = *self;
        let (t, contents) = ahead.next()?;
        if t == tag {
            *self = ahead;
            Ok(Some(contents))
        } else {
            Ok(None)
        }
    }
}

/// A two's-complement INTEGER or ENUMERATED of up to eight bytes.
pub(crate) fn integer(contents: &[u8]) -> Result<i64, Malformed> {
    if contents.is_empty() || contents.len() > 8 {
        return Err(Malformed("an integer of no or more than eight bytes"));
    }
    let negative = contents[0] & 0x80 != 0;
    let start: i64 = if negative { -1 } else { 0 };
    Ok(contents
        .iter()
        .fold(start, |acc, &b| (acc << 8) | i64::from(b)))
}

/// Writes requests: each element's contents go into a buffer, and [`Writer::wrap`] puts a tag
/// and length in front of everything written since a mark.
#[derive(Default)]
pub(crate) struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    /// Where the contents of an element about to be wrapped start.
    pub fn mark(&self) -> usize {
        self.buf.len()
    }

    /// Turns everything written since `mark` into the contents of one element tagged `tag`.
    pub fn wrap(&mut self, mark: usize, tag: Tag) {
        let len = self.buf.len() - mark;
        let mut head = Vec::with_capacity(8);
        let first = (tag.class << 6) | if tag.constructed { 0x20 } else { 0 };
        if tag.number < 0x1f {
            // Tag numbers below 31 fit in the first byte.
            head.push(first | u8::try_from(tag.number).unwrap_or(0));
        } else {
            head.push(first | 0x1f);
            let mut groups = Vec::new();
            let mut n = tag.number;
            loop {
                groups.push(u8::try_from(n & 0x7f).unwrap_or(0));
                n >>= 7;
                if n == 0 {
                    break;
                }
            }
            for (i, g) in groups.iter().enumerate().rev() {
                head.push(if i == 0 { *g } else { g | 0x80 });
            }
        }
        if len < 0x80 {
            head.push(u8::try_from(len).unwrap_or(0));
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|&&b| b == 0).count();
            head.push(0x80 | u8::try_from(bytes.len() - skip).unwrap_or(0));
            head.extend_from_slice(&bytes[skip..]);
        }
        self.buf.splice(mark..mark, head);
    }

    pub fn bytes(&mut self, tag: Tag, value: &[u8]) {
        let m = self.mark();
        self.buf.extend_from_slice(value);
        self.wrap(m, tag);
    }

    pub fn octets(&mut self, value: &[u8]) {
        self.bytes(Tag::universal(OCTET_STRING), value);
    }

    pub fn integer_tagged(&mut self, tag: Tag, value: i64) {
        let bytes = value.to_be_bytes();
        // The shortest two's-complement form: drop leading bytes that only repeat the sign.
        let mut skip = 0;
        while skip < 7 {
            let (b, next) = (bytes[skip], bytes[skip + 1]);
            if (b == 0 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
                skip += 1;
            } else {
                break;
            }
        }
        self.bytes(tag, &bytes[skip..]);
    }

    pub fn integer(&mut self, value: i64) {
        self.integer_tagged(Tag::universal(INTEGER), value);
    }

    pub fn enumerated(&mut self, value: i64) {
        self.integer_tagged(Tag::universal(ENUMERATED), value);
    }

    pub fn boolean(&mut self, value: bool) {
        self.bytes(Tag::universal(BOOLEAN), &[if value { 0xff } else { 0 }]);
    }

    /// Bytes already encoded elsewhere (a compiled filter), written as they are.
    pub fn raw(&mut self, encoded: &[u8]) {
        self.buf.extend_from_slice(encoded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(tag: Tag, contents: &[u8]) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(tag, contents);
        w.buf
    }

    #[test]
    fn lengths_round_trip_in_short_and_long_form() {
        for len in [0usize, 1, 127, 128, 255, 256, 65_535, 65_536, 1 << 20] {
            let contents = vec![7u8; len];
            let bytes = element(Tag::universal(OCTET_STRING), &contents);
            assert_eq!(frame(&bytes, usize::MAX), Ok(Some(bytes.len())), "{len}");
            let mut r = Reader::new(&bytes);
            let (tag, got) = r.next().unwrap();
            assert_eq!(tag, Tag::universal(OCTET_STRING));
            assert_eq!(got.len(), len);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn a_partial_element_needs_more_bytes_and_an_oversized_one_is_refused() {
        let bytes = element(Tag::universal(OCTET_STRING), &[1u8; 300]);
        for cut in 0..bytes.len() {
            assert_eq!(frame(&bytes[..cut], usize::MAX), Ok(None), "cut at {cut}");
        }
        assert!(frame(&bytes, 299).is_err());
    }

    #[test]
    fn malformed_lengths_are_errors_not_panics() {
        // Indefinite length.
        assert!(Reader::new(&[0x30, 0x80, 0, 0]).next().is_err());
        // A length past the end of what holds it.
        assert!(Reader::new(&[0x04, 0x05, 1, 2]).next().is_err());
        // A five-byte length.
        assert!(Reader::new(&[0x04, 0x85, 0, 0, 0, 0, 1, 0]).next().is_err());
        // Nothing at all.
        assert!(Reader::new(&[]).next().is_err());
    }

    #[test]
    fn integers_round_trip_in_their_shortest_form() {
        for v in [
            0i64,
            1,
            127,
            128,
            255,
            256,
            -1,
            -128,
            -129,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut w = Writer::default();
            w.integer(v);
            let (_, contents) = Reader::new(&w.buf).next().unwrap();
            assert_eq!(integer(contents), Ok(v), "{v}");
        }
        let mut w = Writer::default();
        w.integer(128);
        assert_eq!(w.buf, [0x02, 0x02, 0x00, 0x80]);
        assert!(integer(&[]).is_err());
    }

    #[test]
    fn high_tag_numbers_and_classes_round_trip() {
        for tag in [
            Tag::application(4, true),
            Tag::application(19, true),
            Tag::application(25, true),
            Tag::context(0, false),
            Tag::context(31, true),
            Tag::application(1000, false),
        ] {
            let bytes = element(tag, b"x");
            let (got, contents) = Reader::new(&bytes).next().unwrap();
            assert_eq!(got, tag);
            assert_eq!(contents, b"x");
        }
    }

    #[test]
    fn optional_leaves_the_reader_where_it_was_when_the_tag_differs() {
        let mut w = Writer::default();
        w.integer(5);
        w.octets(b"abc");
        let mut r = Reader::new(&w.buf);
        assert_eq!(r.optional(Tag::universal(OCTET_STRING)), Ok(None));
        assert_eq!(
            integer(r.expect(Tag::universal(INTEGER), "int").unwrap()),
            Ok(5)
        );
        assert_eq!(
            r.optional(Tag::universal(OCTET_STRING)),
            Ok(Some(&b"abc"[..]))
        );
        assert_eq!(r.optional(Tag::universal(OCTET_STRING)), Ok(None));
    }
}
