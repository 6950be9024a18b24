//! Compiled JSON pointers, resolved against a record in one pass.
//!
//! A profile reads twenty to forty fields of every record. Looking each pointer up on its own
//! costs a tree search per field; instead, every pointer's first token is numbered at compile
//! time, and a record's top-level keys are resolved against them once, one hash each. Deeper
//! tokens (`/BillingAddress/Street`) continue from the matched value.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use serde_json::Value;

/// A JSON pointer (RFC 6901), compiled against a [`PathTable`].
#[derive(Debug, Clone)]
pub(crate) struct CPath {
    /// The pointer as written, for messages.
    pub text: String,
    top: usize,
    /// The pointer after its first token ("" when it has one token).
    rest: String,
}

/// The sorted, unescaped first tokens of every pointer an entity's mapping uses.
#[derive(Debug, Clone, Default)]
pub(crate) struct PathTable {
    tokens: Vec<String>,
    /// Token → its number, for resolving a record's keys with one hash each.
    index: HashMap<String, usize, BuildHasherDefault<Fnv>>,
}

/// FNV-1a: record keys are short and trusted to be few, so a simple fast hash beats SipHash.
#[derive(Default)]
pub(crate) struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

impl PathTable {
    /// Builds the table for a set of pointers (each must start with `/`).
    pub fn new<'a>(pointers: impl IntoIterator<Item = &'a str>) -> Self {
        let tokens: BTreeSet<String> = pointers
            .into_iter()
            .map(|p| unescape(first_token(p)))
            .collect();
        let tokens: Vec<String> = tokens.into_iter().collect();
        let index = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i))
            .collect();
        PathTable { tokens, index }
    }

    pub fn compile(&self, pointer: &str) -> CPath {
        let first = first_token(pointer);
        let top = self
            .tokens
            .binary_search(&unescape(first))
            .expect("every pointer was given to PathTable::new");
        CPath {
            text: pointer.to_string(),
            top,
            rest: pointer[1 + first.len()..].to_string(),
        }
    }

    /// Resolves every first token against `record`.
    pub fn view<'a>(&self, record: &'a Value) -> View<'a> {
        let mut top = vec![None; self.tokens.len()];
        if let Value::Object(map) = record {
            if map.len() <= 4 * self.tokens.len() {
                for (k, v) in map {
                    if let Some(&i) = self.index.get(k.as_str()) {
                        top[i] = Some(v);
                    }
                }
            } else {
                // A record far wider than the mapping: look up only what is needed.
                for (slot, token) in top.iter_mut().zip(&self.tokens) {
                    *slot = map.get(token);
                }
            }
        }
        View { top }
    }
}

/// One record with its first tokens resolved.
pub(crate) struct View<'a> {
    top: Vec<Option<&'a Value>>,
}

impl<'a> View<'a> {
    /// The value at a pointer, read through `{value: ...}` wrappers (see [`crate::mapper::lookup`]).
    pub fn get(&self, p: &CPath) -> Option<&'a Value> {
        let v = self.top[p.top]?;
        crate::mapper::lookup(v, &p.rest)
    }

    /// The first pointer that is present, with its value.
    pub fn first<'p>(&self, paths: &'p [CPath]) -> Option<(&'a Value, &'p CPath)> {
        paths.iter().find_map(|p| self.get(p).map(|v| (v, p)))
    }
}

fn first_token(pointer: &str) -> &str {
    let rest = &pointer[1..];
    rest.split('/').next().unwrap_or(rest)
}

/// A JSON pointer token with `~1` and `~0` unescaped (RFC 6901 §4: `~1` first, then `~0`).
pub(crate) fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn resolves_like_a_plain_lookup() {
        let ptrs = ["/b", "/a/x", "/c~1d", "/zz", "/a/list/1", "/m"];
        let table = PathTable::new(ptrs);
        let rec = json!({"a": {"x": 1, "list": [5, 6]}, "b": "B", "c/d": true, "m": {"link": "l", "value": "v"}});
        let view = table.view(&rec);
        for p in ptrs {
            assert_eq!(
                view.get(&table.compile(p)),
                crate::mapper::lookup(&rec, p),
                "{p}"
            );
        }
        assert_eq!(view.get(&table.compile("/m")), Some(&json!("v")));
        assert!(table.view(&json!([1])).get(&table.compile("/b")).is_none());
    }
}
