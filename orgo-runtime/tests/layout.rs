//! The runtime's modules import each other in one direction only: no two
//! of its top-level modules (a file, or a directory with its `mod.rs`) use
//! each other, directly or through others. Names re-exported by `lib.rs`
//! count as their module's. Comments and `#[cfg(test)] mod tests` do not
//! count. Needs no VM.

#![allow(
    clippy::unwrap_used,
    reason = "helpers of tests: an unwrap that fails is the test failing"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file, without comments and its test module.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The identifiers that follow each `crate::` in `code`.
fn crate_paths(code: &str) -> Vec<String> {
    code.match_indices("crate::")
        .map(|(i, m)| {
            code[i + m.len()..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// Names `lib.rs` re-exports, and the module each comes from.
fn reexports(lib: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for item in lib.split("pub use ").skip(1) {
        let item = &item[..item.find(';').unwrap()];
        let module = item.split("::").next().unwrap().trim().to_owned();
        if !modules.contains(&module) {
            continue;
        }
        let names = item.rsplit("::").next().unwrap();
        for name in names.trim_matches(|c| c == '{' || c == '}').split(',') {
            let name = name.split(" as ").last().unwrap().trim();
            if !name.is_empty() {
                out.insert(name.to_owned(), module.clone());
            }
        }
    }
    out
}

/// The module graph: each top-level module and the ones it uses.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = src();
    let mut all = Vec::new();
    files(&root, &mut all);
    let top = |path: &Path| {
        let rel = path.strip_prefix(&root).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        first.trim_end_matches(".rs").to_owned()
    };
    let modules: BTreeSet<String> = all
        .iter()
        .map(|p| top(p))
        .filter(|m| m != "lib" && m != "bin")
        .collect();
    let names = reexports(
        &std::fs::read_to_string(root.join("lib.rs")).unwrap(),
        &modules,
    );
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in &all {
        let from = top(path);
        if !modules.contains(&from) {
            continue;
        }
        let uses = graph.entry(from.clone()).or_default();
        for name in crate_paths(&code(path)) {
            let to = if modules.contains(&name) {
                Some(name)
            } else {
                names.get(&name).cloned()
            };
            if let Some(to) = to.filter(|to| *to != from) {
                uses.insert(to);
            }
        }
    }
    graph
}

/// Whether `to` is reachable from `from`.
fn reaches(graph: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::new();
    let mut stack = vec![from.to_owned()];
    while let Some(m) = stack.pop() {
        for next in graph.get(&m).into_iter().flatten() {
            if next == to {
                return true;
            }
            if seen.insert(next.clone()) {
                stack.push(next.clone());
            }
        }
    }
    false
}

#[test]
fn no_two_modules_use_each_other() {
    let graph = graph();
    assert!(graph.len() > 15, "the walk found the modules: {graph:?}");
    let cycles: Vec<(String, String)> = graph
        .iter()
        .flat_map(|(from, uses)| uses.iter().map(move |to| (from.clone(), to.clone())))
        .filter(|(from, to)| reaches(&graph, to, from))
        .collect();
    assert!(
        cycles.is_empty(),
        "modules in a cycle (a uses b, b leads back to a): {cycles:?}"
    );
}

#[test]
fn the_checker_sees_a_cycle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_owned(), BTreeSet::from(["b".to_owned()])),
        ("b".to_owned(), BTreeSet::from(["c".to_owned()])),
        ("c".to_owned(), BTreeSet::from(["a".to_owned()])),
    ]
    .into();
    assert!(reaches(&graph, "b", "a"));
    assert!(!reaches(&graph, "a", "d"));
    assert_eq!(
        crate_paths("use crate::error::{X}; crate::home::Home; crate::Runtime"),
        ["error", "home", "Runtime"]
    );
}

#[test]
fn the_front_door_is_above_what_it_delegates_to() {
    let graph = graph();
    for low in ["launch", "computer", "builder", "shared", "home", "pool"] {
        assert!(
            !reaches(&graph, low, "runtime"),
            "`{low}` must not use the front door `runtime`"
        );
    }
    assert!(reaches(&graph, "runtime", "launch"));
}
