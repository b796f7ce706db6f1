//! The guest-facing parsers, table-driven: the TLS ClientHello's SNI, the
//! HTTP/1 `Host`, and DNS messages.

use std::net::IpAddr;

use orgo_net::dns::{self, DnsError};
use orgo_net::{MAX_SNIFF, Sniffed, Target, sniff};

/// A TLS 1.2/1.3 ClientHello record with these extensions (type, data).
fn client_hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]); // random
    body.push(32);
    body.extend_from_slice(&[9; 32]); // session id
    body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]); // cipher suites
    body.extend_from_slice(&[1, 0]); // compression: null
    let mut ext = Vec::new();
    for (kind, data) in extensions {
        ext.extend_from_slice(&kind.to_be_bytes());
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(data);
    }
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut handshake = vec![1];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    records(&handshake, usize::MAX)
}

/// Handshake bytes as TLS records of at most `max` bytes each.
fn records(handshake: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in handshake.chunks(max.min(16384)) {
        out.extend_from_slice(&[0x16, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// A server_name extension's data with these (type, name) entries.
fn server_names(names: &[(u8, &[u8])]) -> Vec<u8> {
    let mut list = Vec::new();
    for (kind, name) in names {
        list.push(*kind);
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name);
    }
    let mut data = (list.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&list);
    data
}

fn sni(name: &str) -> (u16, Vec<u8>) {
    (0, server_names(&[(0, name.as_bytes())]))
}

fn name(text: &str) -> Option<Target> {
    Some(Target::Name(text.into()))
}

fn addr(text: &str) -> Option<Target> {
    Some(Target::Addr(text.parse::<IpAddr>().expect("an address")))
}

#[test]
fn tls_client_hellos_give_their_server_name() {
    let alpn = (16u16, vec![0, 3, 2, b'h', b'2']);
    let cases: Vec<(&str, Vec<u8>, Sniffed)> = vec![
        (
            "sni",
            client_hello(&[sni("api.github.com")]),
            Sniffed::Tls(name("api.github.com")),
        ),
        (
            "sni after other extensions",
            client_hello(&[alpn.clone(), (43, vec![2, 3, 4]), sni("Allowed.Test.")]),
            Sniffed::Tls(name("allowed.test")),
        ),
        (
            "no sni",
            client_hello(std::slice::from_ref(&alpn)),
            Sniffed::Tls(None),
        ),
        (
            "no extensions at all",
            client_hello(&[]),
            Sniffed::Tls(None),
        ),
        (
            "an address as sni",
            client_hello(&[sni("10.99.0.3")]),
            Sniffed::Tls(addr("10.99.0.3")),
        ),
        (
            "an unknown name type is skipped",
            client_hello(&[(0, server_names(&[(7, b"x"), (0, b"a.test")]))]),
            Sniffed::Tls(name("a.test")),
        ),
        (
            "two sni extensions",
            client_hello(&[sni("a.test"), sni("b.test")]),
            Sniffed::Invalid("two TLS server_name extensions"),
        ),
        (
            "two host names",
            client_hello(&[(0, server_names(&[(0, b"a.test"), (0, b"b.test")]))]),
            Sniffed::Invalid("two host names in the TLS server_name extension"),
        ),
        (
            "not a name",
            client_hello(&[sni("a b.test")]),
            Sniffed::Invalid("a TLS server name that is not a DNS name"),
        ),
        (
            "not ascii",
            client_hello(&[(0, server_names(&[(0, b"\xff.test")]))]),
            Sniffed::Invalid("a TLS server name that is not ASCII"),
        ),
        (
            "an empty name",
            client_hello(&[sni("")]),
            Sniffed::Invalid("a TLS server name that is not a DNS name"),
        ),
        (
            "a server hello",
            {
                let mut hello = client_hello(&[sni("a.test")]);
                hello[5] = 2;
                hello
            },
            Sniffed::Invalid("a TLS handshake that does not start with a ClientHello"),
        ),
        (
            "an alert record",
            vec![0x15, 3, 3, 0, 2, 2, 40],
            Sniffed::Other,
        ),
        ("SSLv2-looking", vec![0x16, 2, 0, 0, 1, 1], Sniffed::Other),
        (
            "an empty record",
            vec![0x16, 3, 1, 0, 0],
            Sniffed::Invalid("a TLS record of a bad length"),
        ),
    ];
    for (what, bytes, expected) in cases {
        assert_eq!(sniff(&bytes), expected, "{what}");
    }
}

#[test]
fn a_client_hello_split_over_records_and_reads_is_whole_only_at_its_end() {
    let whole = client_hello(&[(21, vec![0; 700]), sni("split.test")]);
    // The same handshake in 100-byte records.
    let handshake: Vec<u8> = {
        let mut out = Vec::new();
        let mut at = 0;
        while at < whole.len() {
            let len = usize::from(u16::from_be_bytes([whole[at + 3], whole[at + 4]]));
            out.extend_from_slice(&whole[at + 5..at + 5 + len]);
            at += 5 + len;
        }
        out
    };
    for hello in [whole, records(&handshake, 100)] {
        for end in 0..hello.len() {
            assert_eq!(
                sniff(&hello[..end]),
                Sniffed::NeedMore,
                "a prefix of {end} bytes"
            );
        }
        assert_eq!(sniff(&hello), Sniffed::Tls(name("split.test")));
        // What follows the ClientHello does not change what it names.
        let mut more = hello.clone();
        more.extend_from_slice(&[0x17, 3, 3, 0, 1, 0]);
        assert_eq!(sniff(&more), Sniffed::Tls(name("split.test")));
    }
}

#[test]
fn a_client_hello_over_the_bound_is_refused() {
    let big = client_hello(&[(21, vec![0; MAX_SNIFF]), sni("big.test")]);
    assert!(big.len() > MAX_SNIFF);
    assert!(
        matches!(sniff(&big), Sniffed::Invalid(_)),
        "{:?}",
        sniff(&big)
    );
    assert!(
        matches!(sniff(&big[..MAX_SNIFF]), Sniffed::Invalid(_)),
        "the first 16 KiB alone are refused too"
    );
}

#[test]
fn http_requests_give_their_host() {
    let cases: &[(&str, Sniffed)] = &[
        (
            "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
            Sniffed::Http(name("allowed.test")),
        ),
        (
            "POST /x HTTP/1.1\r\nContent-Length: 3\r\nhost:  Allowed.Test.:8080 \r\n\r\nabc",
            Sniffed::Http(name("allowed.test")),
        ),
        (
            "GET / HTTP/1.1\r\nHOST: 10.99.0.3\r\n\r\n",
            Sniffed::Http(addr("10.99.0.3")),
        ),
        (
            "GET / HTTP/1.1\r\nHost: 10.99.0.3:80\r\n\r\n",
            Sniffed::Http(addr("10.99.0.3")),
        ),
        (
            "GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
            Sniffed::Http(addr("::1")),
        ),
        (
            "GET / HTTP/1.1\r\nHost: [::ffff:127.0.0.1]\r\n\r\n",
            Sniffed::Http(addr("::ffff:127.0.0.1")),
        ),
        ("GET / HTTP/1.0\r\n\r\n", Sniffed::Http(None)),
        (
            "GET http://allowed.test/x HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
            Sniffed::Http(name("allowed.test")),
        ),
        (
            "GET http://allowed.test:80/ HTTP/1.1\r\n\r\n",
            Sniffed::Http(name("allowed.test")),
        ),
        (
            "GET http://blocked.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
            Sniffed::Invalid("an HTTP request URI naming another host than `Host`"),
        ),
        (
            "GET / HTTP/1.1\r\nHost: allowed.test\r\nHost: blocked.test\r\n\r\n",
            Sniffed::Invalid("two HTTP `Host` headers"),
        ),
        (
            "GET / HTTP/1.1\r\nHost: allowed.test@blocked.test\r\n\r\n",
            Sniffed::Invalid("an HTTP `Host` that is not a host name or address"),
        ),
        (
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            Sniffed::Invalid("an HTTP `Host` that is not a host name or address"),
        ),
        (
            "GET / HTTP/1.1\r\nHost: a.test:99999x\r\n\r\n",
            Sniffed::Invalid("an HTTP `Host` that is not a host name or address"),
        ),
        (
            "GET / HTTP/1.1\r\nHost : blocked.test\r\n\r\n",
            Sniffed::Invalid("an HTTP header name with white space"),
        ),
        (
            "GET / HTTP/1.1\r\n Host: blocked.test\r\n\r\n",
            Sniffed::Invalid("an HTTP header name with white space"),
        ),
        (
            "GET / HTTP/1.1\r\nno colon\r\n\r\n",
            Sniffed::Invalid("an HTTP header line without `:`"),
        ),
        ("GET / HTTP/1.1\r\nHost: allowed", Sniffed::NeedMore),
        ("GE", Sniffed::NeedMore),
        ("G", Sniffed::NeedMore),
        ("", Sniffed::NeedMore),
        ("SSH-2.0-OpenSSH_9.2\r\n", Sniffed::Other),
        ("HELLO\r\n\r\n", Sniffed::Other),
        ("GET / SPDY/3\r\n\r\n", Sniffed::Other),
        ("get / HTTP/1.1\r\n\r\n", Sniffed::Other),
        ("\0\0\0", Sniffed::Other),
    ];
    for (request, expected) in cases {
        assert_eq!(sniff(request.as_bytes()), *expected, "{request:?}");
    }
    let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_SNIFF));
    assert_eq!(
        sniff(endless.as_bytes()),
        Sniffed::Invalid("an HTTP request head over 16 KiB")
    );
}

/// A response to `query` with these answer records (name offset pointer
/// to the question, type, data).
fn response(query: &[u8], answers: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = query.to_vec();
    out[2] |= 0x80;
    out[3] = 0x80;
    out[6..8].copy_from_slice(&(answers.len() as u16).to_be_bytes());
    for (kind, data) in answers {
        out.extend_from_slice(&[0xc0, 12]); // the question's name
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
    out
}

#[test]
fn dns_queries_are_read_and_answered() {
    let query = dns::query(0xbeef, "Blocked.Test.", dns::TYPE_AAAA);
    let question = dns::parse_query(&query).expect("a query");
    assert_eq!(question.name.as_deref(), Some("blocked.test"));
    assert_eq!((question.qtype, question.qclass), (dns::TYPE_AAAA, 1));

    // NXDOMAIN: the id, the question and RD kept; no records; EDNS dropped.
    let mut with_edns = query.clone();
    with_edns[11] = 1;
    with_edns.extend_from_slice(&[0, 0, 41, 16, 0, 0, 0, 0, 0, 0, 0]);
    let answer = dns::nxdomain(&with_edns).expect("an answer");
    assert_eq!(answer.len(), query.len());
    assert_eq!(&answer[..2], &[0xbe, 0xef]);
    assert_eq!(answer[2], 0x81, "QR and RD");
    assert_eq!(answer[3], 0x83, "RA and NXDOMAIN");
    assert_eq!(&answer[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&answer[12..], &query[12..]);
    assert_eq!(dns::rcode(&answer), Ok(dns::NXDOMAIN));

    let root = [0u8, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1];
    assert_eq!(dns::parse_query(&root).expect("a query").name, None);
    let mut odd = dns::query(1, "a.test", 1);
    odd[13] = b'\n';
    assert_eq!(dns::parse_query(&odd).expect("a query").name, None);

    let bad: &[(&str, Vec<u8>, DnsError)] = &[
        ("empty", vec![], DnsError::Truncated),
        ("a header only", query[..12].to_vec(), DnsError::Truncated),
        (
            "no qtype",
            query[..query.len() - 4].to_vec(),
            DnsError::Truncated,
        ),
        ("a response", response(&query, &[]), DnsError::NotAQuery),
        (
            "an update",
            {
                let mut q = query.clone();
                q[2] = 5 << 3;
                q
            },
            DnsError::NotAQuery,
        ),
        (
            "two questions",
            {
                let mut q = query.clone();
                q[5] = 2;
                q
            },
            DnsError::QuestionCount(2),
        ),
        (
            "a pointer to itself",
            vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1],
            DnsError::BadName,
        ),
        (
            "a pointer forwards",
            vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 14, 0, 0, 1, 0, 1],
            DnsError::BadName,
        ),
        (
            "a reserved label type",
            vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 0, 0, 1, 0, 1],
            DnsError::BadName,
        ),
    ];
    for (what, message, expected) in bad {
        assert_eq!(dns::parse_query(message), Err(*expected), "{what}");
    }
    let long = vec!["a".repeat(63); 5].join(".");
    assert_eq!(
        dns::parse_query(&dns::query(1, &long, 1)),
        Err(DnsError::BadName),
        "a name over 253 characters"
    );
}

#[test]
fn upstream_answers_give_their_addresses() {
    let query = dns::query(7, "allowed.test", dns::TYPE_A);
    let cname = [3, b'w', b'w', b'w', 0xc0, 12];
    let answer = response(
        &query,
        &[
            (5, &cname),
            (dns::TYPE_A, &[10, 99, 0, 2]),
            (dns::TYPE_A, &[10, 99, 0, 4]),
            (
                dns::TYPE_AAAA,
                &[0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            ),
            (dns::TYPE_A, &[1, 2, 3]),
        ],
    );
    let (rcode, addrs) = dns::answer_addresses(&answer, 7, "Allowed.Test.").expect("an answer");
    assert_eq!(rcode, 0);
    let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    assert_eq!(addrs, ["10.99.0.2", "10.99.0.4", "2001:db8::1"]);

    assert_eq!(
        dns::answer_addresses(&answer, 8, "allowed.test"),
        Err(DnsError::Mismatch)
    );
    assert_eq!(
        dns::answer_addresses(&answer, 7, "other.test"),
        Err(DnsError::Mismatch)
    );
    assert_eq!(
        dns::answer_addresses(&query, 7, "allowed.test"),
        Err(DnsError::Mismatch)
    );
    for end in 0..answer.len() {
        assert!(
            dns::answer_addresses(&answer[..end], 7, "allowed.test").is_err(),
            "a prefix of {end} bytes"
        );
    }
    let nx = dns::nxdomain(&query).expect("an answer");
    assert_eq!(
        dns::answer_addresses(&nx, 7, "allowed.test"),
        Ok((dns::NXDOMAIN, vec![]))
    );
    assert_eq!(dns::truncated(&nx), Ok(false));
}
