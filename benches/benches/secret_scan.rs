//! The secret scan every snapshot passes before it is stored, against the
//! SHA-256 the store computes over the same bytes anyway: on a memory image
//! that is mostly zero pages (what a guest that used little of its memory
//! leaves), and on one of random pages only (the worst case: every byte is
//! looked at). Five secrets of 32 bytes, each in its 17 forms.
//!
//! `cargo bench -p orgo-benches --bench secret_scan`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use orgo_runtime::SecretScan;
use sha2::{Digest as _, Sha256};

const SIZE: usize = 256 << 20;
const PAGE: usize = 4096;

/// `SIZE` bytes: one page in `one_in` random, the rest zero.
fn image(one_in: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut bytes = vec![0u8; SIZE];
    for (i, page) in bytes.chunks_mut(PAGE).enumerate() {
        if i % one_in == 0 {
            for b in page {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
        }
    }
    bytes
}

fn bench(c: &mut Criterion) {
    let values: Vec<(String, String)> = (0..5)
        .map(|i| {
            (
                format!("secret_{i}"),
                format!("sk-live-{i:02}-0123456789abcdefABCDEF"),
            )
        })
        .collect();
    let scan = SecretScan::new(values.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let mut group = c.benchmark_group("secret_scan");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(SIZE as u64));
    for (name, one_in) in [("mostly_zero", 8), ("all_random", 1)] {
        let bytes = image(one_in);
        group.bench_function(format!("scan/{name}"), |b| {
            b.iter(|| {
                let found = scan.scan(black_box(&bytes[..]), "memory").expect("reads");
                assert!(found.is_empty());
            })
        });
        group.bench_function(format!("sha256/{name}"), |b| {
            b.iter(|| black_box(Sha256::digest(black_box(&bytes[..]))))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
