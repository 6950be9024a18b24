//! Organizations and persons as Pipedrive's API v2 shows them, plus seeded generation.
//!
//! Shapes follow the v2 models of Pipedrive's OpenAPI document (as generated into
//! pipedrive/client-nodejs: `OrganizationItem`, `GetPersonsResponseAllOfDataInner`) and the
//! "Pipedrive API v2 migration guide" (https://pipedrive.readme.io/docs/pipedrive-api-v2-migration-guide):
//! integer ids, RFC 3339 `add_time`/`update_time`, `is_deleted` instead of v1's `active_flag`,
//! `org_id` as a plain integer (null when none), `emails`/`phones` as arrays of
//! `{value, primary, label}`, the organization `address` as an object whose `value` is the
//! full address, custom fields under `custom_fields`.
//!
//! Deletes are soft: "Marks a person as deleted. After 30 days, the person will be permanently
//! deleted" ("Delete a person"); the emulator keeps deleted records (`is_deleted: true`) and
//! leaves them out of every listing. What happens to persons whose organization is deleted is
//! not documented in what we read; the emulator leaves their `org_id` unchanged.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use thiserror::Error;

use super::config::PipedriveConfig;
use crate::salesforce::generate::{
    ADJ, FIRST, LAST, NOUN, PLACES, Rng, STREETS, SUFFIX, TITLES, phone, slug,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Organization,
    Person,
}

impl Kind {
    /// "organizations" / "persons" (the singular is accepted too).
    pub fn parse(name: &str) -> Option<Kind> {
        match name {
            "organizations" | "organization" => Some(Kind::Organization),
            "persons" | "person" => Some(Kind::Person),
            _ => None,
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Organization => "organizations",
            Kind::Person => "persons",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rec {
    pub fields: Map<String, Value>,
    /// `update_time` and `add_time` as epoch seconds.
    pub updated: i64,
    pub added: i64,
    pub deleted: bool,
}

impl Rec {
    pub fn int(&self, field: &str) -> Option<u64> {
        self.fields.get(field).and_then(Value::as_u64)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    #[error("no field '{0}' on {1}")]
    UnknownField(String, &'static str),
    #[error("'{0}' is set by Pipedrive, not by the caller")]
    ReadOnly(String),
    #[error("no {0} with id {1}")]
    NotFound(&'static str, u64),
    #[error("org_id {0} names no organization")]
    NoSuchOrganization(u64),
    #[error("no record type '{0}' (organizations or persons)")]
    UnknownKind(String),
}

const MANAGED: &[&str] = &["id", "add_time", "update_time", "is_deleted"];

/// RFC 3339 UTC at second resolution, as v2 shows times (`2024-01-01T00:00:00Z`).
pub fn format_time(epoch: i64) -> String {
    DateTime::<Utc>::from_timestamp(epoch, 0)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

pub fn now() -> i64 {
    Utc::now().timestamp()
}

pub struct Store {
    orgs: BTreeMap<u64, Rec>,
    persons: BTreeMap<u64, Rec>,
    next_org: u64,
    next_person: u64,
    contact_sync: bool,
}

impl Store {
    pub fn new(contact_sync: bool) -> Store {
        Store {
            orgs: BTreeMap::new(),
            persons: BTreeMap::new(),
            next_org: 0,
            next_person: 0,
            contact_sync,
        }
    }

    fn map(&self, kind: Kind) -> &BTreeMap<u64, Rec> {
        match kind {
            Kind::Organization => &self.orgs,
            Kind::Person => &self.persons,
        }
    }

    fn map_mut(&mut self, kind: Kind) -> &mut BTreeMap<u64, Rec> {
        match kind {
            Kind::Organization => &mut self.orgs,
            Kind::Person => &mut self.persons,
        }
    }

    fn template(&self, kind: Kind, id: u64, added: i64) -> Map<String, Value> {
        let at = format_time(added);
        let mut m = match kind {
            Kind::Organization => json!({
                "id": id, "name": "", "owner_id": 1, "add_time": at, "update_time": at,
                "is_deleted": false, "visible_to": 3, "address": null, "label_ids": [],
                "custom_fields": {}
            }),
            Kind::Person => json!({
                "id": id, "name": "", "first_name": "", "last_name": "", "owner_id": 1,
                "org_id": null, "add_time": at, "update_time": at, "emails": [], "phones": [],
                "is_deleted": false, "visible_to": 3, "label_ids": [], "picture_id": null,
                "custom_fields": {}
            }),
        };
        if kind == Kind::Person && self.contact_sync {
            for (k, v) in [
                ("notes", Value::Null),
                ("im", json!([])),
                ("birthday", Value::Null),
                ("job_title", Value::Null),
                ("postal_address", Value::Null),
            ] {
                m[k] = v;
            }
        }
        match m {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    fn merge(
        &self,
        kind: Kind,
        fields: &mut Map<String, Value>,
        given: Map<String, Value>,
    ) -> Result<(), StoreError> {
        let names_given = given.contains_key("name");
        let parts_given = given.contains_key("first_name") || given.contains_key("last_name");
        for (k, v) in given {
            if MANAGED.contains(&k.as_str()) {
                return Err(StoreError::ReadOnly(k));
            }
            if !fields.contains_key(&k) {
                return Err(StoreError::UnknownField(k, kind.plural()));
            }
            if let Some(org) = v.as_u64().filter(|_| k == "org_id")
                && self.orgs.get(&org).is_none_or(|r| r.deleted)
            {
                return Err(StoreError::NoSuchOrganization(org));
            }
            fields.insert(k, v);
        }
        if kind == Kind::Person && parts_given && !names_given {
            let name = ["first_name", "last_name"]
                .iter()
                .filter_map(|k| fields.get(*k).and_then(Value::as_str))
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            fields.insert("name".into(), Value::String(name));
        }
        Ok(())
    }

    pub fn insert_at(
        &mut self,
        kind: Kind,
        given: Map<String, Value>,
        added: i64,
        updated: i64,
    ) -> Result<u64, StoreError> {
        let id = match kind {
            Kind::Organization => self.next_org + 1,
            Kind::Person => self.next_person + 1,
        };
        let mut fields = self.template(kind, id, added);
        self.merge(kind, &mut fields, given)?;
        fields.insert("update_time".into(), Value::String(format_time(updated)));
        match kind {
            Kind::Organization => self.next_org = id,
            Kind::Person => self.next_person = id,
        }
        self.map_mut(kind).insert(
            id,
            Rec {
                fields,
                updated,
                added,
                deleted: false,
            },
        );
        Ok(id)
    }

    pub fn create(&mut self, kind: Kind, given: Map<String, Value>) -> Result<u64, StoreError> {
        let t = now();
        self.insert_at(kind, given, t, t)
    }

    pub fn update(
        &mut self,
        kind: Kind,
        id: u64,
        given: Map<String, Value>,
    ) -> Result<(), StoreError> {
        let mut fields = match self.map(kind).get(&id) {
            Some(r) if !r.deleted => r.fields.clone(),
            _ => return Err(StoreError::NotFound(kind.plural(), id)),
        };
        self.merge(kind, &mut fields, given)?;
        let t = now();
        fields.insert("update_time".into(), Value::String(format_time(t)));
        if let Some(r) = self.map_mut(kind).get_mut(&id) {
            r.fields = fields;
            r.updated = t;
        }
        Ok(())
    }

    /// Marks a live record deleted; false when there was none.
    pub fn delete(&mut self, kind: Kind, id: u64) -> bool {
        let t = now();
        match self.map_mut(kind).get_mut(&id) {
            Some(r) if !r.deleted => {
                r.deleted = true;
                r.updated = t;
                r.fields.insert("is_deleted".into(), Value::Bool(true));
                r.fields
                    .insert("update_time".into(), Value::String(format_time(t)));
                true
            }
            _ => false,
        }
    }

    pub fn get(&self, kind: Kind, id: u64) -> Option<&Rec> {
        self.map(kind).get(&id)
    }

    /// Records not deleted, in id order.
    pub fn live(&self, kind: Kind) -> impl Iterator<Item = (u64, &Rec)> {
        self.map(kind)
            .iter()
            .filter(|(_, r)| !r.deleted)
            .map(|(id, r)| (*id, r))
    }
}

struct Stamps {
    start: i64,
    span: u64,
    share_every: u64,
    last: i64,
}

impl Stamps {
    fn next(&mut self, rng: &mut Rng) -> (i64, i64) {
        let share = self.share_every > 0 && rng.below(self.share_every) == 0;
        if !share {
            self.last = self.start + rng.below(self.span) as i64;
        }
        let added = self.last - rng.below(86_400 * 30) as i64;
        (added.max(self.start - 86_400 * 30), self.last)
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Fills the store from the config's seed: organizations with their persons, then persons
/// without an organization.
pub fn populate(store: &mut Store, cfg: &PipedriveConfig) {
    let mut rng = Rng::new(cfg.seed);
    let mut stamps = Stamps {
        start: cfg.history_start.timestamp(),
        span: (cfg.history_days.max(1) * 86_400) as u64,
        share_every: cfg.shared_stamp_every as u64,
        last: cfg.history_start.timestamp(),
    };
    for i in 0..cfg.organizations {
        let (adj, noun, suffix) = (rng.pick(ADJ), rng.pick(NOUN), rng.pick(SUFFIX));
        let overlong = i < cfg.overlong_values;
        let mut name = format!("{adj} {noun} {suffix}");
        if overlong {
            name = format!(
                "{name} — {noun} International Holdings, Regional Subsidiaries, Joint Ventures and Affiliated Service Companies of the Greater Metropolitan Area, Division {i}"
            );
        }
        let (city, state, zip, country) = PLACES[rng.below(PLACES.len() as u64) as usize];
        let number = (rng.below(9000) + 1).to_string();
        let route = rng.pick(STREETS);
        let address = json!({
            "value": format!("{number} {route}, {zip} {city}, {country}"),
            "country": country,
            "admin_area_level_1": if state.is_empty() { Value::Null } else { json!(state) },
            "admin_area_level_2": null,
            "locality": city,
            "sublocality": null,
            "route": route,
            "street_number": number,
            "postal_code": zip,
        });
        let domain = format!("{}{}.example.com", slug(adj), slug(noun));
        let org = obj(json!({ "name": name, "address": address }));
        let (a, u) = stamps.next(&mut rng);
        let Ok(org_id) = store.insert_at(Kind::Organization, org, a, u) else {
            continue;
        };
        for j in 0..cfg.persons_per_organization {
            let p = person_fields(
                &mut rng,
                Some((org_id, &domain)),
                overlong && j == 0,
                cfg.contact_sync,
            );
            let (a, u) = stamps.next(&mut rng);
            let _ = store.insert_at(Kind::Person, p, a, u);
        }
    }
    for _ in 0..cfg.persons_without_organization {
        let p = person_fields(&mut rng, None, false, cfg.contact_sync);
        let (a, u) = stamps.next(&mut rng);
        let _ = store.insert_at(Kind::Person, p, a, u);
    }
}

fn person_fields(
    rng: &mut Rng,
    org: Option<(u64, &str)>,
    overlong: bool,
    contact_sync: bool,
) -> Map<String, Value> {
    let first = rng.pick(FIRST);
    let mut last = rng.pick(LAST).to_string();
    if overlong {
        last = format!("{last}-Montgomery-Fitzwilliam-Habsburg-Lorraine-Wittelsbach");
    }
    let (_, _, _, country) = PLACES[rng.below(PLACES.len() as u64) as usize];
    let domain = org.map_or("mail.example.org", |(_, d)| d);
    let mut emails = vec![json!({
        "value": format!("{}.{}@{domain}", slug(first), slug(&last)),
        "primary": true,
        "label": "work",
    })];
    if rng.below(5) == 0 {
        emails.push(json!({
            "value": format!("{}{}@mail.example.org", slug(first), rng.below(1000)),
            "primary": false,
            "label": "home",
        }));
    }
    let mut phones = Vec::new();
    if rng.below(4) != 0 {
        phones.push(json!({ "value": phone(rng, country), "primary": true, "label": "work" }));
    }
    if rng.below(3) == 0 {
        phones.push(json!({ "value": phone(rng, country), "primary": false, "label": "mobile" }));
    }
    let job = rng.pick(TITLES);
    let mut m = obj(json!({
        "name": format!("{first} {last}"),
        "first_name": first,
        "last_name": last,
        "emails": emails,
        "phones": phones,
    }));
    if contact_sync {
        m.insert("job_title".into(), json!(job));
    }
    if let Some((id, _)) = org {
        m.insert("org_id".into(), json!(id));
    }
    m
}
