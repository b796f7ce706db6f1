//! What a guest's first bytes on port 80/443 name: the TLS ClientHello's
//! server name (SNI) or the HTTP/1 `Host`. Pure and bounded: the input is
//! the guest's, and hostile.

use std::net::IpAddr;

use crate::name::normalize_name;

/// The most bytes the proxy reads before it decides (16 KiB).
pub const MAX_SNIFF: usize = 16 << 10;

/// What the first bytes of a connection name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sniffed {
    /// Too few bytes to tell: read more (up to [`MAX_SNIFF`]).
    NeedMore,
    /// A whole TLS ClientHello, with its server name if it has one.
    Tls(Option<Target>),
    /// A whole HTTP/1 request head, with its `Host` if it has one.
    Http(Option<Target>),
    /// Neither TLS nor HTTP/1: only the address can decide.
    Other,
    /// TLS or HTTP that names its host in a way no server would accept
    /// (two `Host`s, a bad name, a ClientHello over the bound): denied.
    Invalid(&'static str),
}

/// The host a connection names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A DNS name, lower case, without the final dot.
    Name(String),
    /// An address literal (`Host: 10.0.0.1:8080`, `Host: [::1]`).
    Addr(IpAddr),
}

/// Reads `buf`, the bytes received so far, and says what they name.
///
/// ```
/// use orgo_net::{Sniffed, Target, sniff};
///
/// let request = b"GET / HTTP/1.1\r\nHost: Example.com:8080\r\n\r\n";
/// assert_eq!(sniff(request), Sniffed::Http(Some(Target::Name("example.com".into()))));
/// assert_eq!(sniff(&request[..20]), Sniffed::NeedMore);
/// assert_eq!(sniff(b"SSH-2.0-OpenSSH_9.2\r\n"), Sniffed::Other);
/// ```
pub fn sniff(buf: &[u8]) -> Sniffed {
    match buf.first() {
        None => Sniffed::NeedMore,
        Some(0x16) => sniff_tls(buf),
        Some(b'A'..=b'Z') => sniff_http(buf),
        Some(_) => Sniffed::Other,
    }
}

/// A cursor over a byte slice whose reads fail at the end instead of panicking.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }

    /// A vector with a `len_bytes`-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

const HANDSHAKE: u8 = 0x16;
const CLIENT_HELLO: u8 = 1;
const SERVER_NAME: u16 = 0;
const HOST_NAME: u8 = 0;

/// TLS records of type handshake, whose payloads joined make the
/// ClientHello (it may span records).
fn sniff_tls(buf: &[u8]) -> Sniffed {
    let mut records = Reader { buf };
    let mut handshake = Vec::new();
    loop {
        let Some(header) = records.take(5) else {
            return Sniffed::NeedMore;
        };
        if header[0] != HANDSHAKE || header[1] != 3 {
            return if handshake.is_empty() {
                Sniffed::Other
            } else {
                Sniffed::Invalid("a TLS ClientHello broken by another record")
            };
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_SNIFF {
            return Sniffed::Invalid("a TLS record of a bad length");
        }
        let Some(payload) = records.take(len) else {
            return if buf.len() >= MAX_SNIFF {
                Sniffed::Invalid("a TLS ClientHello over 16 KiB")
            } else {
                Sniffed::NeedMore
            };
        };
        handshake.extend_from_slice(payload);
        let mut hello = Reader { buf: &handshake };
        if hello.u8() != Some(CLIENT_HELLO) {
            return Sniffed::Invalid("a TLS handshake that does not start with a ClientHello");
        }
        let Some(body_len) = hello.u24() else {
            continue;
        };
        if body_len > MAX_SNIFF {
            return Sniffed::Invalid("a TLS ClientHello over 16 KiB");
        }
        if let Some(body) = hello.take(body_len) {
            return match client_hello_sni(body) {
                Ok(target) => Sniffed::Tls(target),
                Err(why) => Sniffed::Invalid(why),
            };
        }
    }
}

/// The server name of a ClientHello's body (after its 4-byte header).
fn client_hello_sni(body: &[u8]) -> Result<Option<Target>, &'static str> {
    const TRUNCATED: &str = "a truncated TLS ClientHello";
    let mut r = Reader { buf: body };
    r.take(2 + 32).ok_or(TRUNCATED)?; // version, random
    r.vec8().ok_or(TRUNCATED)?; // session id
    r.vec16().ok_or(TRUNCATED)?; // cipher suites
    r.vec8().ok_or(TRUNCATED)?; // compression methods
    if r.buf.is_empty() {
        return Ok(None); // no extensions
    }
    let mut extensions = Reader {
        buf: r.vec16().ok_or(TRUNCATED)?,
    };
    let mut found = None;
    while !extensions.buf.is_empty() {
        let kind = extensions.u16().ok_or(TRUNCATED)?;
        let data = extensions.vec16().ok_or(TRUNCATED)?;
        if kind != SERVER_NAME {
            continue;
        }
        if found.is_some() {
            return Err("two TLS server_name extensions");
        }
        let mut list = Reader {
            buf: Reader { buf: data }.vec16().ok_or(TRUNCATED)?,
        };
        while !list.buf.is_empty() {
            let name_type = list.u8().ok_or(TRUNCATED)?;
            let name = list.vec16().ok_or(TRUNCATED)?;
            if name_type != HOST_NAME {
                continue;
            }
            if found.is_some() {
                return Err("two host names in the TLS server_name extension");
            }
            let text =
                std::str::from_utf8(name).map_err(|_| "a TLS server name that is not ASCII")?;
            found = Some(target(text).ok_or("a TLS server name that is not a DNS name")?);
        }
    }
    Ok(found)
}

/// A name or an address literal, as a `Host` value without its port or a
/// server name holds it.
fn target(host: &str) -> Option<Target> {
    if let Ok(addr) = host.parse::<IpAddr>() {
        return Some(Target::Addr(addr));
    }
    normalize_name(host).map(Target::Name)
}

/// An HTTP/1 request head: the request line, then headers up to an empty line.
fn sniff_http(buf: &[u8]) -> Sniffed {
    // Decided on the first bytes alone, so that more bytes never change it.
    if !looks_like_request_line(buf) {
        return Sniffed::Other;
    }
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() >= MAX_SNIFF {
            Sniffed::Invalid("an HTTP request head over 16 KiB")
        } else {
            Sniffed::NeedMore
        };
    };
    let Ok(head) = std::str::from_utf8(&buf[..end]) else {
        return Sniffed::Invalid("an HTTP request head that is not UTF-8");
    };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Sniffed::Other;
    };
    if !is_method(method) || !version.starts_with("HTTP/1.") {
        return Sniffed::Other;
    }
    let mut host = None;
    for line in lines {
        let Some((field, value)) = line.split_once(':') else {
            return Sniffed::Invalid("an HTTP header line without `:`");
        };
        if field.is_empty() || field.bytes().any(|b| b.is_ascii_whitespace()) {
            return Sniffed::Invalid("an HTTP header name with white space");
        }
        if !field.eq_ignore_ascii_case("host") {
            continue;
        }
        if host.is_some() {
            return Sniffed::Invalid("two HTTP `Host` headers");
        }
        let Some(parsed) = host_header(value.trim_matches([' ', '\t'])) else {
            return Sniffed::Invalid("an HTTP `Host` that is not a host name or address");
        };
        host = Some(parsed);
    }
    // An absolute URI names the host the request is for: it must agree.
    if let Some(rest) = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))
    {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let from_uri = host_header(authority);
        if from_uri.is_none() || (host.is_some() && from_uri != host) {
            return Sniffed::Invalid("an HTTP request URI naming another host than `Host`");
        }
        host = from_uri;
    }
    Sniffed::Http(host)
}

/// A `Host` value: `name`, `name:port`, `a.b.c.d[:port]` or `[v6][:port]`.
fn host_header(value: &str) -> Option<Target> {
    if value.contains('@') {
        return None;
    }
    let host = if let Some(rest) = value.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || port(after.strip_prefix(':')?)) {
            return None;
        }
        return inside
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|a| Target::Addr(a.into()));
    } else {
        match value.split_once(':') {
            Some((host, p)) if port(p) => host,
            Some(_) => return None,
            None => value,
        }
    };
    target(host)
}

fn port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

fn is_method(text: &str) -> bool {
    !text.is_empty() && text.len() <= 16 && text.bytes().all(|b| b.is_ascii_uppercase())
}

/// Whether an incomplete head still reads as the start of a request line.
fn looks_like_request_line(buf: &[u8]) -> bool {
    let method_len = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
    match buf.get(method_len) {
        None => method_len <= 16,
        Some(b' ') => method_len <= 16 && !buf[..method_len].is_empty(),
        Some(_) => false,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
