//! Invariants of `orgo-net`'s guest-facing parsers, checked on arbitrary
//! bytes (a guest's first bytes on port 80/443, its DNS queries, an
//! upstream's answers):
//! 1. `sniff`, `dns::parse_query`, `dns::nxdomain` and
//!    `dns::answer_addresses` never panic, whatever the input;
//! 2. a decision is final: once a prefix of the first 16 KiB gives anything
//!    but `NeedMore`, every longer prefix gives the same;
//! 3. a name read from SNI or `Host` is a DNS name in lower case, which the
//!    open policy allows;
//! 4. the NXDOMAIN built from a query keeps its id and question, is no
//!    longer than it, has no records, and is not itself a query.

use orgo_net::{MAX_SNIFF, Policy, Sniffed, Target, dns, sniff};

/// Checks every invariant on `data`.
pub fn check_net(data: &[u8]) {
    check_sniff(&data[..data.len().min(MAX_SNIFF)]);
    check_dns(data);
}

fn check_sniff(data: &[u8]) {
    let whole = sniff(data);
    assert_eq!(sniff(data), whole, "sniff is not deterministic");
    // Every prefix of a short input; a sample of a long one's.
    let stride = (data.len() / 256).max(1);
    for end in (0..data.len()).step_by(stride) {
        let early = sniff(&data[..end]);
        if early != Sniffed::NeedMore {
            assert_eq!(
                early,
                whole,
                "the first {end} bytes gave {early:?}, all {} gave {whole:?}",
                data.len()
            );
            break;
        }
    }
    if let Sniffed::Tls(Some(Target::Name(name))) | Sniffed::Http(Some(Target::Name(name))) = &whole
    {
        assert_eq!(*name, name.to_ascii_lowercase(), "a name not in lower case");
        assert!(!name.ends_with('.'), "a name with its final dot: {name:?}");
        assert!(Policy::open().allows_name(name), "not a DNS name: {name:?}");
    }
}

fn check_dns(data: &[u8]) {
    if let Ok(id) = dns::id(data) {
        let _ = dns::answer_addresses(data, id, "allowed.test");
    }
    let _ = dns::rcode(data);
    let _ = dns::truncated(data);
    let Ok(question) = dns::parse_query(data) else {
        assert!(
            dns::nxdomain(data).is_err(),
            "NXDOMAIN for what is not a query"
        );
        return;
    };
    let answer = dns::nxdomain(data).expect("a query is answered");
    assert!(answer.len() <= data.len());
    assert_eq!(answer[..2], data[..2], "the id is kept");
    assert_eq!(dns::rcode(&answer), Ok(dns::NXDOMAIN));
    assert_eq!(
        &answer[4..12],
        &[0, 1, 0, 0, 0, 0, 0, 0],
        "one question, no records"
    );
    assert_eq!(
        &answer[12..],
        &data[12..answer.len()],
        "the question is kept"
    );
    assert!(
        dns::parse_query(&answer).is_err(),
        "an answer read as a query"
    );
    if let Some(name) = &question.name {
        assert!(Policy::open().allows_name(name), "not a DNS name: {name:?}");
        let (rcode, addrs) = dns::answer_addresses(&answer, dns::id(data).expect("an id"), name)
            .expect("our own answer reads back");
        assert_eq!((rcode, addrs.len()), (dns::NXDOMAIN, 0));
    }
}
