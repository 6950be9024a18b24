//! A short, stable stand-in for `scripts/fuzz.sh` in the test command, which runs on stable and
//! cannot run cargo-fuzz: every fuzz target's checks (`fuzz/src/lib.rs`, included as is, so the
//! two never drift apart) over the fuzz seeds and vendor fixtures, unchanged and mutated a few
//! thousand times, plus arbitrary bytes. It catches a parser that panics or balloons on the
//! kind of input the real fuzzers try first; the real fuzzers go much deeper.
//!
//! It lives in the pipeline crate because that crate already depends on every parser (webhook,
//! mapping, dataverse) and on proptest, so no crate gains a dependency for it.

#[path = "../../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mapping::{CrmKind, Mapper};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixtures() -> PathBuf {
    std::env::var("CRM_SYNC_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("../shared/fixtures"))
}

fn files_in(dir: &Path) -> Vec<Vec<u8>> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = rd.filter_map(|e| Some(e.ok()?.path())).collect();
    paths.sort();
    paths
        .into_iter()
        .filter(|p| p.is_file())
        .filter_map(|p| std::fs::read(p).ok())
        .collect()
}

/// The seeds `scripts/fuzz.sh` gives a target, read the same way.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let mut s = files_in(&repo().join("fuzz/seeds").join(target));
    assert!(!s.is_empty(), "no seeds for {target} in fuzz/seeds");
    if target.starts_with("webhook_") {
        s.extend(files_in(&fixtures()));
        s.extend(files_in(&repo().join("examples/payloads")));
    }
    s
}

/// Fragments that tend to matter to these parsers: JSON and XML structure, entity references,
/// multipart delimiters, the header separator of fuzz inputs, odd Unicode.
const TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b":",
    b",",
    b"null",
    b"-9223372036854775808",
    b"1e999",
    b"\"\\ud800\"",
    b"<",
    b"</",
    b">",
    b"&#x10FFFF;",
    b"&#0;",
    b"&amp;",
    b"&e;",
    b"<!DOCTYPE x [<!ENTITY e \"e\">]>",
    b"<![CDATA[",
    b"xsi:nil=\"true\"",
    b"\r\n",
    b"\r\n\r\n",
    b"--",
    b"boundary=",
    b"HTTP/1.1 ",
    b"\0",
    b"|",
    b"\xff\xfe",
    b"\xe2\x80\xae",
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Insert(usize, Vec<u8>),
    Token(usize, usize),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(i, t)| Mutation::Token(i, t)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), 1usize..256).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(seed: &[u8], ms: &[Mutation]) -> Vec<u8> {
    let mut d = seed.to_vec();
    for m in ms {
        let at = |i: usize, d: &Vec<u8>| if d.is_empty() { 0 } else { i % (d.len() + 1) };
        match m {
            Mutation::Flip(i, b) => {
                if !d.is_empty() {
                    let i = i % d.len();
                    d[i] ^= b | 1;
                }
            }
            Mutation::Insert(i, b) => {
                let i = at(*i, &d);
                d.splice(i..i, b.iter().copied());
            }
            Mutation::Token(i, t) => {
                let i = at(*i, &d);
                d.splice(i..i, TOKENS[*t].iter().copied());
            }
            Mutation::Delete(i, n) => {
                let i = at(*i, &d);
                let end = (i + n).min(d.len());
                d.drain(i..end);
            }
            Mutation::Duplicate(i, n) => {
                let i = at(*i, &d);
                let end = (i + n).min(d.len());
                let part = d[i..end].to_vec();
                d.splice(i..i, part);
            }
            Mutation::Truncate(i) => {
                let i = at(*i, &d);
                d.truncate(i);
            }
        }
    }
    d
}

/// Each seed as it is, then `cases` mutants of the seeds and arbitrary inputs, through `check`.
fn smoke(target: &str, cases: u32, check: impl Fn(&[u8])) {
    let seeds = seeds(target);
    for s in &seeds {
        check(s);
    }
    let input = prop_oneof![
        4 => (0..seeds.len(), prop::collection::vec(mutation(), 1..6)),
        1 => Just((usize::MAX, Vec::new())),
    ];
    let arbitrary = prop::collection::vec(any::<u8>(), 0..512);
    // A fixed RNG seed: the same inputs on every run of the test command, so a failure here is
    // reproducible (and the fuzzers, not this smoke run, explore).
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let seeds_ref = &seeds;
    runner
        .run(&(input, arbitrary), |((i, ms), raw)| {
            let data = if i == usize::MAX {
                raw
            } else {
                apply(&seeds_ref[i], &ms)
            };
            check(&data);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{target}: {e}"));
}

fn mappers() -> &'static [Mapper] {
    static M: OnceLock<Vec<Mapper>> = OnceLock::new();
    M.get_or_init(|| harness::KINDS.iter().map(|k| harness::mapper(*k)).collect())
}

fn webhook_target(kind: CrmKind) {
    let name = format!("webhook_{}", kind.as_str());
    let m = &mappers()[harness::KINDS.iter().position(|k| *k == kind).unwrap()];
    smoke(&name, 3000, |d| harness::webhook(kind, m, d));
}

#[test]
fn webhook_salesforce() {
    webhook_target(CrmKind::Salesforce);
}

#[test]
fn webhook_servicenow() {
    webhook_target(CrmKind::Servicenow);
}

#[test]
fn webhook_hubspot() {
    webhook_target(CrmKind::Hubspot);
}

#[test]
fn webhook_zendesk() {
    webhook_target(CrmKind::Zendesk);
}

#[test]
fn webhook_pipedrive() {
    webhook_target(CrmKind::Pipedrive);
}

#[test]
fn webhook_generic() {
    webhook_target(CrmKind::Generic);
}

#[test]
fn soap() {
    smoke("soap", 3000, |d| harness::soap(&mappers()[..1], d));
}

#[test]
fn verify() {
    smoke("verify", 3000, harness::verify);
}

#[test]
fn batch_response() {
    smoke("batch_response", 3000, harness::batch_response);
}

#[test]
fn mapping_json() {
    smoke("mapping_json", 3000, |d| {
        harness::mapping_json(mappers(), d)
    });
}
