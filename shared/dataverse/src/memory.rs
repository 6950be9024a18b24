//! An in-memory Dataverse: rows keyed by the request path that addresses them, lookups checked
//! the way the Web API checks them (a bind to a missing row is a 404 with the documented code).
//! Pipeline tests assert on its final rows.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use async_trait::async_trait;
use mapping::{DataverseOp, Method};
use serde_json::{Map, Value};

use crate::writer::{Applied, DataverseWriter, WriteError};

#[derive(Default)]
pub struct MemoryDataverse {
    rows: Mutex<BTreeMap<String, Map<String, Value>>>,
    /// Errors returned, in order, by the next operations (fault injection).
    faults: Mutex<VecDeque<WriteError>>,
}

impl MemoryDataverse {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every row, by path (`accounts(...)`), with lookups stored as `_<nav>_value` = target path.
    pub fn rows(&self) -> BTreeMap<String, Map<String, Value>> {
        self.rows.lock().expect("lock").clone()
    }

    pub fn row(&self, path: &str) -> Option<Map<String, Value>> {
        self.rows.lock().expect("lock").get(path).cloned()
    }

    /// The next `errors.len()` operations fail with these errors, in order.
    pub fn inject(&self, errors: impl IntoIterator<Item = WriteError>) {
        self.faults.lock().expect("lock").extend(errors);
    }

    fn apply_one(&self, op: &DataverseOp) -> Result<Applied, WriteError> {
        if let Some(e) = self.faults.lock().expect("lock").pop_front() {
            return Err(e);
        }
        let mut rows = self.rows.lock().expect("lock");
        match op.method {
            Method::Delete => Ok(match rows.remove(&op.path) {
                Some(_) => Applied::Deleted,
                None => Applied::AlreadyAbsent,
            }),
            Method::Patch => {
                let exists = rows.contains_key(&op.path);
                if op.if_match_any && !exists {
                    return Ok(Applied::AlreadyAbsent);
                }
                let mut values = Map::new();
                for (k, v) in op.body.iter().flatten() {
                    match k.strip_suffix("@odata.bind") {
                        Some(nav) => {
                            let target = match v {
                                Value::String(s) => {
                                    let t = s.trim_start_matches('/').to_string();
                                    if !rows.contains_key(&t) {
                                        let code = if t.contains("msdyn_source_crm_id=") {
                                            "0x80060891"
                                        } else {
                                            "0x80040217"
                                        };
                                        return Err(WriteError::MissingParent {
                                            code: code.into(),
                                            message: format!("{t} does not exist"),
                                        });
                                    }
                                    Value::String(t)
                                }
                                _ => Value::Null,
                            };
                            values.insert(format!("_{nav}_value"), target);
                        }
                        None => {
                            values.insert(k.clone(), v.clone());
                        }
                    }
                }
                let row = rows.entry(op.path.clone()).or_default();
                row.extend(values);
                Ok(if exists {
                    Applied::Updated
                } else {
                    Applied::Created
                })
            }
        }
    }
}

#[async_trait]
impl DataverseWriter for MemoryDataverse {
    async fn apply(
        &self,
        ops: &[DataverseOp],
        _deadline: Option<tokio::time::Instant>,
    ) -> Vec<Result<Applied, WriteError>> {
        ops.iter().map(|op| self.apply_one(op)).collect()
    }
}
