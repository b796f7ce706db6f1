//! Runs the fuzz invariants (`orgo_fuzz::check`) on stable Rust: over every file
//! of the seed corpus and over systematic mutations of each (truncation at
//! every line boundary, each line deleted, each line duplicated, byte flips).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use orgo_template::Template;

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/seed")
}

/// Every seed file, sorted by name.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(seed_dir())
        .expect("fuzz/corpus/seed exists")
        .map(|entry| {
            let path = entry.expect("readable directory entry").path();
            let name = path
                .file_name()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(&path).expect("readable seed");
            (name, bytes)
        })
        .collect();
    seeds.sort();
    assert!(seeds.len() >= 20, "the seed corpus is missing files");
    seeds
}

/// Seeds named `invalid-*` or `empty*` are meant to be rejected; all others must parse.
fn expected_valid(name: &str) -> bool {
    !name.starts_with("invalid-") && !name.starts_with("empty")
}

/// The text's lines, each with its line ending.
fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    bytes.split_inclusive(|&b| b == b'\n').collect()
}

/// Systematic mutations of one input.
fn mutations(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let lines = lines(bytes);

    // Truncated at every line boundary, and in the middle of every line.
    let mut offset = 0;
    for line in &lines {
        out.push((format!("truncate@{offset}"), bytes[..offset].to_vec()));
        let middle = offset + line.len() / 2;
        out.push((format!("truncate@{middle}"), bytes[..middle].to_vec()));
        offset += line.len();
    }

    // Each line deleted; each line duplicated.
    for i in 0..lines.len() {
        let deleted: Vec<u8> = lines
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .flat_map(|(_, l)| l.iter().copied())
            .collect();
        out.push((format!("delete-line-{}", i + 1), deleted));
        let duplicated: Vec<u8> = lines
            .iter()
            .enumerate()
            .flat_map(|(j, l)| {
                let times = if j == i { 2 } else { 1 };
                std::iter::repeat_n(l.iter().copied(), times).flatten()
            })
            .collect();
        out.push((format!("duplicate-line-{}", i + 1), duplicated));
    }

    // Byte flips: a few deterministic positions, with masks that turn ASCII into
    // other ASCII (case, digits, punctuation) and into invalid UTF-8.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15 ^ bytes.len() as u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    if !bytes.is_empty() {
        for _ in 0..24 {
            let position = (next() % bytes.len() as u64) as usize;
            for mask in [0x01u8, 0x20, 0x10, 0x80] {
                let mut flipped = bytes.to_vec();
                flipped[position] ^= mask;
                out.push((format!("flip@{position}^{mask:#04x}"), flipped));
            }
        }
    }

    // Structural characters spliced in at line starts.
    for (i, _) in lines.iter().enumerate().step_by(3) {
        for insert in [&b"  "[..], b"- ", b"&a ", b"*a\n", b"{", b"\"", b"${var.x}"] {
            let mut mutated = Vec::with_capacity(bytes.len() + insert.len());
            for (j, line) in lines.iter().enumerate() {
                if j == i {
                    mutated.extend_from_slice(insert);
                }
                mutated.extend_from_slice(line);
            }
            out.push((
                format!(
                    "insert-{:?}-line-{}",
                    String::from_utf8_lossy(insert),
                    i + 1
                ),
                mutated,
            ));
        }
    }
    out
}

/// Runs `check` on `input`, turning a panic into its message.
fn run(input: &[u8]) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| orgo_fuzz::check(input))).map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "non-string panic".to_owned())
    })
}

fn assert_no_failures(failures: Vec<String>, total: usize) {
    assert!(
        failures.is_empty(),
        "{} of {total} inputs broke an invariant:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn seeds_hold_the_invariants() {
    let seeds = seeds();
    let failures: Vec<String> = seeds
        .iter()
        .filter_map(|(name, bytes)| run(bytes).err().map(|message| format!("{name}: {message}")))
        .collect();
    assert_no_failures(failures, seeds.len());
}

#[test]
fn mutated_seeds_hold_the_invariants() {
    let mut total = 0;
    let mut failures = Vec::new();
    for (name, bytes) in seeds() {
        for (mutation, input) in mutations(&bytes) {
            total += 1;
            if let Err(message) = run(&input) {
                failures.push(format!(
                    "{name} [{mutation}]: {message}\ninput: {:?}",
                    String::from_utf8_lossy(&input)
                ));
            }
        }
    }
    println!("{total} mutated inputs checked");
    assert!(total > 1000, "only {total} mutations");
    assert_no_failures(failures, total);
}

#[test]
fn valid_seeds_parse_and_invalid_seeds_do_not() {
    for (name, bytes) in seeds() {
        let text = std::str::from_utf8(&bytes).expect("seeds are UTF-8");
        let format = orgo_template::Format::detect(Some(&name), text);
        let result = Template::parse(text, format);
        if expected_valid(&name) {
            if let Err(error) = result {
                panic!("{name} should be valid: {error}");
            }
        } else {
            assert!(result.is_err(), "{name} should be rejected");
        }
    }
}

#[test]
fn sugar_and_canonical_forms_share_a_digest() {
    let read = |name: &str| {
        let text = std::fs::read_to_string(seed_dir().join(name)).expect("readable seed");
        let format = orgo_template::Format::detect(Some(name), &text);
        Template::parse(&text, format)
            .unwrap_or_else(|error| panic!("{name}: {error}"))
            .digest()
    };
    let canonical = read("canonical.yaml");
    assert_eq!(read("sugar.yaml"), canonical);
    assert_eq!(read("canonical.json"), canonical);
}
