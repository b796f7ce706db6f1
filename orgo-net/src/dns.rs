//! DNS messages, as much as the resolver needs (RFC 1035): the question of
//! a guest's query, an NXDOMAIN answer built from it, and the A/AAAA
//! records of an upstream's answer. Pure and bounded.
//!
//! Hand-written rather than `hickory-proto`: the daemon reads one question
//! and writes one header, and the upstream's answers it reads are only
//! A/AAAA records; these few bounded functions are fuzzed (`fuzz/`), and the
//! static daemon stays small.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::name::normalize_name;

/// The largest DNS message (a TCP message's length is a `u16`).
pub const MAX_MESSAGE: usize = 65535;

/// Record type A.
pub const TYPE_A: u16 = 1;
/// Record type AAAA.
pub const TYPE_AAAA: u16 = 28;

/// RCODE NXDOMAIN.
pub const NXDOMAIN: u8 = 3;
/// RCODE SERVFAIL.
pub const SERVFAIL: u8 = 2;
/// RCODE REFUSED.
pub const REFUSED: u8 = 5;

const HEADER: usize = 12;
/// The most compression pointers followed in one name.
const MAX_POINTERS: usize = 16;

/// Why a DNS message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// Shorter than its own fields say.
    #[error("a truncated DNS message")]
    Truncated,
    /// Not a query (QR set, or an opcode other than QUERY).
    #[error("not a DNS query")]
    NotAQuery,
    /// Not exactly one question.
    #[error("a DNS query with `{0}` questions (one is served)")]
    QuestionCount(u16),
    /// A name that is not a DNS name, or a bad compression pointer.
    #[error("a bad name in a DNS message")]
    BadName,
    /// An answer whose id or question is not the query's.
    #[error("a DNS answer to another query")]
    Mismatch,
}

/// The question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// The name asked, lower case, without the final dot (`None` for the root
    /// or a name that is not a DNS name, which no rule matches).
    pub name: Option<String>,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
}

fn u16_at(msg: &[u8], at: usize) -> Result<u16, DnsError> {
    msg.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(DnsError::Truncated)
}

/// Reads the name at `at`, following compression pointers (at most
/// [`MAX_POINTERS`], each pointing backwards). Returns the name in text form
/// (without the final dot, case kept) and the offset just past it where it
/// started.
fn read_name(msg: &[u8], mut at: usize) -> Result<(String, usize), DnsError> {
    let mut text = String::new();
    let mut end = None;
    let mut pointers = 0;
    loop {
        let len = *msg.get(at).ok_or(DnsError::Truncated)?;
        match len {
            0 => {
                return Ok((text, end.unwrap_or(at + 1)));
            }
            1..=63 => {
                let label = msg
                    .get(at + 1..at + 1 + usize::from(len))
                    .ok_or(DnsError::Truncated)?;
                if !text.is_empty() {
                    text.push('.');
                }
                if text.len() + label.len() > crate::name::MAX_NAME {
                    return Err(DnsError::BadName);
                }
                for &b in label {
                    // Bytes a DNS name may not hold keep the name from
                    // matching any rule: it is then no DNS name.
                    text.push(if b.is_ascii_graphic() {
                        char::from(b)
                    } else {
                        ' '
                    });
                }
                at += 1 + usize::from(len);
            }
            0xc0..=0xff => {
                let target = usize::from(u16_at(msg, at)? & 0x3fff);
                pointers += 1;
                if pointers > MAX_POINTERS || target >= at {
                    return Err(DnsError::BadName);
                }
                end.get_or_insert(at + 2);
                at = target;
            }
            _ => return Err(DnsError::BadName),
        }
    }
}

/// The question of a guest's query: one question, QR clear, opcode QUERY.
///
/// ```
/// use orgo_net::dns;
///
/// let query = dns::query(0x1234, "Allowed.Test", dns::TYPE_A);
/// let question = dns::parse_query(&query)?;
/// assert_eq!(question.name.as_deref(), Some("allowed.test"));
/// assert_eq!(question.qtype, dns::TYPE_A);
///
/// let answer = dns::nxdomain(&query)?;
/// assert_eq!(dns::rcode(&answer)?, dns::NXDOMAIN);
/// assert_eq!(&answer[..2], &[0x12, 0x34]);
/// # Ok::<(), orgo_net::DnsError>(())
/// ```
pub fn parse_query(msg: &[u8]) -> Result<Question, DnsError> {
    let (question, _) = question(msg)?;
    Ok(question)
}

/// The query's question and the offset just past it.
fn question(msg: &[u8]) -> Result<(Question, usize), DnsError> {
    if msg.len() < HEADER {
        return Err(DnsError::Truncated);
    }
    let flags = u16_at(msg, 2)?;
    if flags & 0x8000 != 0 || (flags >> 11) & 0xf != 0 {
        return Err(DnsError::NotAQuery);
    }
    let count = u16_at(msg, 4)?;
    if count != 1 {
        return Err(DnsError::QuestionCount(count));
    }
    let (name, at) = read_name(msg, HEADER)?;
    let qtype = u16_at(msg, at)?;
    let qclass = u16_at(msg, at + 2)?;
    let name = if name.is_empty() {
        None
    } else {
        normalize_name(&name)
    };
    Ok((
        Question {
            name,
            qtype,
            qclass,
        },
        at + 4,
    ))
}

/// An answer to `query` with `rcode` and no records: its id, opcode, RD
/// and question, QR and RA set.
pub fn answer_with(query: &[u8], rcode: u8) -> Result<Vec<u8>, DnsError> {
    let (_, end) = question(query)?;
    let mut out = query[..end].to_vec();
    let rd = out[2] & 0x01;
    out[2] = 0x80 | rd; // QR, opcode QUERY, RD as asked
    out[3] = 0x80 | (rcode & 0x0f); // RA, rcode
    out[6..12].fill(0); // no answer, authority or additional records
    Ok(out)
}

/// NXDOMAIN for `query`: the name does not exist.
pub fn nxdomain(query: &[u8]) -> Result<Vec<u8>, DnsError> {
    answer_with(query, NXDOMAIN)
}

/// A query for `name` of type `qtype`, class IN, recursion desired.
pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + name.len() + 6);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        let label = &label.as_bytes()[..label.len().min(63)];
        out.push(u8::try_from(label.len()).expect("at most 63"));
        out.extend_from_slice(label);
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out
}

/// The id of a message.
pub fn id(msg: &[u8]) -> Result<u16, DnsError> {
    u16_at(msg, 0)
}

/// The RCODE of a message.
pub fn rcode(msg: &[u8]) -> Result<u8, DnsError> {
    Ok(msg.get(3).ok_or(DnsError::Truncated)? & 0x0f)
}

/// Whether the TC (truncated) flag is set: the answer must be asked again over TCP.
pub fn truncated(msg: &[u8]) -> Result<bool, DnsError> {
    Ok(msg.get(2).ok_or(DnsError::Truncated)? & 0x02 != 0)
}

/// The addresses of an upstream's answer to the query `id` for `name`: the
/// A and AAAA records of its answer section (after CNAMEs, an upstream
/// gives the final records too), with the RCODE.
pub fn answer_addresses(msg: &[u8], id: u16, name: &str) -> Result<(u8, Vec<IpAddr>), DnsError> {
    if msg.len() < HEADER {
        return Err(DnsError::Truncated);
    }
    let flags = u16_at(msg, 2)?;
    if u16_at(msg, 0)? != id || flags & 0x8000 == 0 || u16_at(msg, 4)? != 1 {
        return Err(DnsError::Mismatch);
    }
    let (asked, mut at) = read_name(msg, HEADER)?;
    if !asked
        .trim_end_matches('.')
        .eq_ignore_ascii_case(name.trim_end_matches('.'))
    {
        return Err(DnsError::Mismatch);
    }
    at += 4;
    let answers = u16_at(msg, 6)?;
    let mut out = Vec::new();
    for _ in 0..answers {
        let (_, after) = read_name(msg, at)?;
        let rtype = u16_at(msg, after)?;
        let rclass = u16_at(msg, after + 2)?;
        let len = usize::from(u16_at(msg, after + 8)?);
        let data = msg
            .get(after + 10..after + 10 + len)
            .ok_or(DnsError::Truncated)?;
        at = after + 10 + len;
        if rclass != 1 {
            continue;
        }
        match (rtype, data.len()) {
            (TYPE_A, 4) => out.push(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            ))),
            (TYPE_AAAA, 16) => {
                let bytes: [u8; 16] = data.try_into().expect("16 bytes");
                out.push(IpAddr::V6(Ipv6Addr::from(bytes)));
            }
            _ => {}
        }
    }
    Ok((rcode(msg)?, out))
}
