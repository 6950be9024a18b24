//! The records. Each record is an immutable `Arc<Rec>` replaced on every change, so a query
//! cursor can hold a consistent snapshot of its result rows for as long as it lives without
//! copying them. Deletes are soft (IsDeleted, recycle bin) and logged for getDeleted, as
//! Salesforce documents for `queryAll` and "Get a List of Deleted Records".

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::{Map, Value};
use thiserror::Error;

use super::schema::{Object, Ty, format_datetime, make_id};

#[derive(Debug, Clone, PartialEq)]
pub struct Rec {
    /// Every non-compound field under its canonical name; unset fields are `null`.
    pub fields: Map<String, Value>,
    pub modstamp: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl Rec {
    pub fn id(&self) -> &str {
        self.fields.get("Id").and_then(Value::as_str).unwrap_or("")
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    #[error("No such column '{0}' on entity '{1}'")]
    UnknownField(String, &'static str),
    #[error("no record with id {0}")]
    NotFound(String),
}

#[derive(Debug, Default)]
pub struct Store {
    tables: BTreeMap<Object, BTreeMap<String, Arc<Rec>>>,
    counters: BTreeMap<Object, u64>,
    pod: String,
    /// The last SystemModstamp handed out, so live changes always sort after older ones.
    last_stamp: Option<DateTime<Utc>>,
}

impl Store {
    pub fn new(pod: &str, first_counter: u64) -> Store {
        Store {
            pod: pod.to_string(),
            counters: [
                (Object::Account, first_counter),
                (Object::Contact, first_counter),
            ]
            .into(),
            ..Store::default()
        }
    }

    /// A new id for `object`, in ascending order.
    pub fn next_id(&mut self, object: Object) -> String {
        let n = self.counters.entry(object).or_insert(0);
        *n += 1;
        make_id(object, &self.pod, *n)
    }

    /// Now, at Salesforce's millisecond precision, strictly after every stamp given so far.
    pub fn now(&mut self) -> DateTime<Utc> {
        let wall = Utc::now()
            .duration_trunc(Duration::milliseconds(1))
            .unwrap_or_else(|_| Utc::now());
        let t = match self.last_stamp {
            Some(last) if wall <= last => last + Duration::milliseconds(1),
            _ => wall,
        };
        self.last_stamp = Some(t);
        t
    }

    /// Inserts a generated record with a given stamp (used while seeding).
    pub fn insert_at(
        &mut self,
        object: Object,
        given: Map<String, Value>,
        stamp: DateTime<Utc>,
    ) -> Result<String, StoreError> {
        let id = self.next_id(object);
        let mut fields = blank(object);
        merge(object, &mut fields, given)?;
        fields.insert("Id".into(), Value::String(id.clone()));
        fields.insert("IsDeleted".into(), Value::Bool(false));
        let created = fields
            .get("CreatedDate")
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or_else(|| Value::String(format_datetime(stamp)));
        fields.insert("CreatedDate".into(), created);
        stamp_fields(object, &mut fields, stamp);
        if self.last_stamp.is_none_or(|l| l < stamp) {
            self.last_stamp = Some(stamp);
        }
        self.tables.entry(object).or_default().insert(
            id.clone(),
            Arc::new(Rec {
                fields,
                modstamp: stamp,
                deleted_at: None,
            }),
        );
        Ok(id)
    }

    /// Creates a record, or replaces the fields of the record whose `Id` is given.
    pub fn put(&mut self, object: Object, given: Map<String, Value>) -> Result<String, StoreError> {
        let existing = given.get("Id").and_then(Value::as_str).map(str::to_string);
        match existing {
            Some(id) if self.get(object, &id).is_some() => {
                let mut rest = given;
                rest.remove("Id");
                self.update(&id, rest)?;
                Ok(id)
            }
            _ => {
                let mut rest = given;
                rest.remove("Id");
                let stamp = self.now();
                self.insert_at(object, rest, stamp)
            }
        }
    }

    /// Changes some fields of a live record and bumps its SystemModstamp.
    pub fn update(&mut self, id: &str, given: Map<String, Value>) -> Result<(), StoreError> {
        let object = object_of(id).ok_or_else(|| StoreError::NotFound(id.into()))?;
        let current = self
            .get(object, id)
            .filter(|r| !r.is_deleted())
            .ok_or_else(|| StoreError::NotFound(id.into()))?;
        let mut fields = current.fields.clone();
        merge(object, &mut fields, given)?;
        let stamp = self.now();
        stamp_fields(object, &mut fields, stamp);
        self.replace(object, fields, stamp, None);
        Ok(())
    }

    /// Soft-deletes a record (to the recycle bin): it leaves `query`, stays in `queryAll` with
    /// IsDeleted true, and enters the delete log. False when there is no live record.
    pub fn delete(&mut self, id: &str) -> bool {
        let Some(object) = object_of(id) else {
            return false;
        };
        let Some(current) = self.get(object, id).filter(|r| !r.is_deleted()) else {
            return false;
        };
        let mut fields = current.fields.clone();
        let stamp = self.now();
        fields.insert("IsDeleted".into(), Value::Bool(true));
        fields.insert(
            "SystemModstamp".into(),
            Value::String(format_datetime(stamp)),
        );
        self.replace(object, fields, stamp, Some(stamp));
        true
    }

    fn replace(
        &mut self,
        object: Object,
        fields: Map<String, Value>,
        modstamp: DateTime<Utc>,
        deleted_at: Option<DateTime<Utc>>,
    ) {
        let rec = Rec {
            fields,
            modstamp,
            deleted_at,
        };
        let id = rec.id().to_string();
        self.tables
            .entry(object)
            .or_default()
            .insert(id, Arc::new(rec));
    }

    pub fn get(&self, object: Object, id: &str) -> Option<Arc<Rec>> {
        self.tables.get(&object)?.get(id).cloned()
    }

    /// All records of an object (deleted ones too), in id order.
    pub fn rows(&self, object: Object) -> impl Iterator<Item = &Arc<Rec>> {
        self.tables
            .get(&object)
            .into_iter()
            .flat_map(|t| t.values())
    }

    pub fn live_count(&self, object: Object) -> usize {
        self.rows(object).filter(|r| !r.is_deleted()).count()
    }
}

/// The object an id belongs to, from its key prefix.
pub fn object_of(id: &str) -> Option<Object> {
    [Object::Account, Object::Contact]
        .into_iter()
        .find(|o| id.starts_with(o.key_prefix()))
}

fn blank(object: Object) -> Map<String, Value> {
    object
        .fields()
        .iter()
        .filter(|(_, ty)| !matches!(ty, Ty::Address(_)))
        .map(|(n, _)| (n.to_string(), Value::Null))
        .collect()
}

fn merge(
    object: Object,
    fields: &mut Map<String, Value>,
    given: Map<String, Value>,
) -> Result<(), StoreError> {
    for (k, v) in given {
        match object.field(&k) {
            Some((name, ty)) if !matches!(ty, Ty::Address(_)) => {
                fields.insert(name.to_string(), v);
            }
            _ => return Err(StoreError::UnknownField(k, object.name())),
        }
    }
    if object == Object::Contact {
        // Contact.Name is the read-only concatenation of the name parts.
        let part = |k: &str| {
            fields
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let name = [part("Salutation"), part("FirstName"), part("LastName")]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        fields.insert("Name".into(), Value::String(name));
    }
    Ok(())
}

fn stamp_fields(_object: Object, fields: &mut Map<String, Value>, stamp: DateTime<Utc>) {
    let s = Value::String(format_datetime(stamp));
    fields.insert("LastModifiedDate".into(), s.clone());
    fields.insert("SystemModstamp".into(), s);
}
