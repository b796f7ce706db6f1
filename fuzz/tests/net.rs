//! Runs `orgo_fuzz::check_net` on stable Rust: over seeds of each kind of
//! input (TLS ClientHellos, HTTP requests, DNS queries and answers) and
//! systematic mutations of them (every truncation, byte flips, inserted and
//! deleted bytes, random bytes from a fixed seed).

use orgo_net::dns;

/// A ClientHello record naming `sni`, with an ALPN extension before it.
fn client_hello(sni: &[u8]) -> Vec<u8> {
    let mut body = vec![3, 3];
    body.extend_from_slice(&[1; 32]);
    body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
    let mut ext = vec![0, 16, 0, 5, 0, 3, 2, b'h', b'2'];
    let list_len = sni.len() + 3;
    ext.extend_from_slice(&[0, 0]);
    ext.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
    ext.extend_from_slice(&(list_len as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    ext.extend_from_slice(sni);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut out = vec![0x16, 3, 1];
    out.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    out.push(1);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&body);
    out
}

fn seeds() -> Vec<Vec<u8>> {
    let mut answer = dns::query(9, "allowed.test", dns::TYPE_A);
    answer[2] |= 0x80;
    answer[7] = 1;
    answer.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 10, 99, 0, 2]);
    vec![
        client_hello(b"api.github.com"),
        client_hello(b"Allowed.Test."),
        client_hello(b"10.0.0.1"),
        b"GET / HTTP/1.1\r\nHost: allowed.test:8080\r\nAccept: */*\r\n\r\n".to_vec(),
        b"GET http://a.test/ HTTP/1.1\r\nHost: [::ffff:127.0.0.1]\r\n\r\nbody".to_vec(),
        b"CONNECT a.test:443 HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n".to_vec(),
        b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(),
        dns::query(0x1234, "www.wild.test", dns::TYPE_AAAA),
        vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1],
        answer,
    ]
}

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn the_net_parsers_keep_their_invariants_on_seeds_and_mutations() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0;
    for seed in seeds() {
        orgo_fuzz::check_net(&seed);
        for end in 0..seed.len() {
            orgo_fuzz::check_net(&seed[..end]);
            let mut flipped = seed.clone();
            flipped[end] ^= 1 << (rng.next() % 8);
            orgo_fuzz::check_net(&flipped);
            let mut deleted = seed.clone();
            deleted.remove(end);
            orgo_fuzz::check_net(&deleted);
            let mut inserted = seed.clone();
            inserted.insert(end, rng.next() as u8);
            orgo_fuzz::check_net(&inserted);
            checked += 4;
        }
        for _ in 0..200 {
            let mut mutated = seed.clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() as usize) % mutated.len();
                mutated[at] = rng.next() as u8;
            }
            orgo_fuzz::check_net(&mutated);
            checked += 1;
        }
    }
    for _ in 0..2000 {
        let len = (rng.next() % 64) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        orgo_fuzz::check_net(&bytes);
        checked += 1;
    }
    assert!(checked > 5000, "{checked} inputs checked");
}
