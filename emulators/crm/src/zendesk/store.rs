//! Organizations and users as Zendesk Support keeps them, plus seeded generation.
//!
//! Shapes follow the "Organizations" and "Users" JSON formats of the Zendesk API reference
//! (https://developer.zendesk.com/api-reference/ticketing/organizations/organizations/,
//! https://developer.zendesk.com/api-reference/ticketing/users/users/): integer ids, ISO 8601
//! `created_at`/`updated_at` in UTC at 1-second resolution, `organization_id` on users (null
//! when the user belongs to none), `role` ("end-user", "agent", "admin"), custom user fields
//! under `user_fields`.
//!
//! Deletes: deleting a user is a soft delete ("Delete User": the user shows in "List Deleted
//! Users" until permanently deleted; `active` is "false if the user has been deleted"). Deleting
//! an organization removes it; what happens to its users' `organization_id` is not documented
//! in what we could read; the emulator clears it and stamps the user as changed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use thiserror::Error;

use super::config::ZendeskConfig;
use crate::salesforce::generate::{
    ADJ, FIRST, LAST, NOUN, PLACES, Rng, STREETS, SUFFIX, TITLES, phone, slug,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Organization,
    User,
}

impl Kind {
    /// "organizations" / "users" (the singular is accepted too).
    pub fn parse(name: &str) -> Option<Kind> {
        match name {
            "organizations" | "organization" => Some(Kind::Organization),
            "users" | "user" => Some(Kind::User),
            _ => None,
        }
    }

    /// The JSON key of a list of these records, and their URL segment.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Organization => "organizations",
            Kind::User => "users",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rec {
    /// The record as the API shows it.
    pub fields: Map<String, Value>,
    /// `updated_at` as epoch seconds (the export order).
    pub updated: i64,
    /// Soft-deleted (users only).
    pub deleted: bool,
}

impl Rec {
    pub fn role(&self) -> &str {
        self.fields
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn organization_id(&self) -> Option<u64> {
        self.fields.get("organization_id").and_then(Value::as_u64)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    #[error("no field '{0}' on {1}")]
    UnknownField(String, &'static str),
    #[error("'{0}' is set by Zendesk, not by the caller")]
    ReadOnly(String),
    #[error("no {0} with id {1}")]
    NotFound(&'static str, u64),
    #[error("organization_id {0} names no organization")]
    NoSuchOrganization(u64),
    #[error("no record type '{0}' (organizations or users)")]
    UnknownKind(String),
}

/// Fields the caller may not set: Zendesk assigns them.
const MANAGED: &[&str] = &["id", "url", "created_at", "updated_at", "active"];

/// `YYYY-MM-DDTHH:MM:SSZ`, the API's datetime form.
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
    base_url: String,
    orgs: BTreeMap<u64, Rec>,
    users: BTreeMap<u64, Rec>,
    next_org: u64,
    next_user: u64,
    rng: Rng,
}

impl Store {
    pub fn new(seed: u64, base_url: &str) -> Store {
        Store {
            base_url: base_url.to_string(),
            orgs: BTreeMap::new(),
            users: BTreeMap::new(),
            // Zendesk ids are large integers that grow with creation time.
            next_org: 360_000_000_000,
            next_user: 380_000_000_000,
            rng: Rng::new(seed ^ 0x5A5A_0000_D35C),
        }
    }

    fn map(&self, kind: Kind) -> &BTreeMap<u64, Rec> {
        match kind {
            Kind::Organization => &self.orgs,
            Kind::User => &self.users,
        }
    }

    fn map_mut(&mut self, kind: Kind) -> &mut BTreeMap<u64, Rec> {
        match kind {
            Kind::Organization => &mut self.orgs,
            Kind::User => &mut self.users,
        }
    }

    fn new_id(&mut self, kind: Kind) -> u64 {
        let gap = 1 + self.rng.below(9);
        let next = match kind {
            Kind::Organization => &mut self.next_org,
            Kind::User => &mut self.next_user,
        };
        *next += gap;
        *next
    }

    fn template(&self, kind: Kind, id: u64, created: i64) -> Map<String, Value> {
        let url = format!("{}/api/v2/{}/{id}.json", self.base_url, kind.plural());
        let at = format_time(created);
        let v = match kind {
            Kind::Organization => json!({
                "url": url, "id": id, "name": "", "shared_tickets": false,
                "shared_comments": false, "external_id": null, "created_at": at,
                "updated_at": at, "domain_names": [], "details": "", "notes": "",
                "group_id": null, "tags": [], "organization_fields": {}
            }),
            Kind::User => json!({
                "id": id, "url": url, "name": "", "email": null, "created_at": at,
                "updated_at": at, "time_zone": "Eastern Time (US & Canada)",
                "iana_time_zone": "America/New_York", "phone": null,
                "shared_phone_number": null, "photo": null, "locale_id": 1,
                "locale": "en-US", "organization_id": null, "role": "end-user",
                "verified": true, "external_id": null, "tags": [], "alias": "",
                "active": true, "shared": false, "shared_agent": false,
                "last_login_at": null, "two_factor_auth_enabled": null, "signature": null,
                "details": "", "notes": "", "role_type": null, "custom_role_id": null,
                "moderator": false, "ticket_restriction": "requested",
                "only_private_comments": false, "restricted_agent": true,
                "suspended": false, "default_group_id": null, "report_csv": false,
                "user_fields": { "job_title": null }
            }),
        };
        match v {
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
        for (k, v) in given {
            if MANAGED.contains(&k.as_str()) {
                return Err(StoreError::ReadOnly(k));
            }
            if !fields.contains_key(&k) {
                return Err(StoreError::UnknownField(k, kind.plural()));
            }
            if let Some(org) = v.as_u64().filter(|_| k == "organization_id")
                && !self.orgs.contains_key(&org)
            {
                return Err(StoreError::NoSuchOrganization(org));
            }
            fields.insert(k, v);
        }
        Ok(())
    }

    /// Creates a record stamped `created`/`updated`; returns its id.
    pub fn insert_at(
        &mut self,
        kind: Kind,
        given: Map<String, Value>,
        created: i64,
        updated: i64,
    ) -> Result<u64, StoreError> {
        let id = self.new_id(kind);
        let mut fields = self.template(kind, id, created);
        self.merge(kind, &mut fields, given)?;
        fields.insert("updated_at".into(), Value::String(format_time(updated)));
        self.map_mut(kind).insert(
            id,
            Rec {
                fields,
                updated,
                deleted: false,
            },
        );
        Ok(id)
    }

    /// Creates a record now.
    pub fn create(&mut self, kind: Kind, given: Map<String, Value>) -> Result<u64, StoreError> {
        let t = now();
        self.insert_at(kind, given, t, t)
    }

    /// Changes fields of a live record; `updated_at` becomes now.
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
        fields.insert("updated_at".into(), Value::String(format_time(t)));
        if let Some(r) = self.map_mut(kind).get_mut(&id) {
            r.fields = fields;
            r.updated = t;
        }
        Ok(())
    }

    /// Users: soft delete. Organizations: removed, their users detached. False when there was
    /// no live record.
    pub fn delete(&mut self, kind: Kind, id: u64) -> bool {
        let t = now();
        match kind {
            Kind::User => match self.users.get_mut(&id) {
                Some(r) if !r.deleted => {
                    r.deleted = true;
                    r.updated = t;
                    r.fields.insert("active".into(), Value::Bool(false));
                    r.fields
                        .insert("updated_at".into(), Value::String(format_time(t)));
                    true
                }
                _ => false,
            },
            Kind::Organization => {
                if self.orgs.remove(&id).is_none() {
                    return false;
                }
                for r in self.users.values_mut() {
                    if r.organization_id() == Some(id) {
                        r.fields.insert("organization_id".into(), Value::Null);
                        r.fields
                            .insert("updated_at".into(), Value::String(format_time(t)));
                        r.updated = t;
                    }
                }
                true
            }
        }
    }

    /// A record, live or soft-deleted.
    pub fn get(&self, kind: Kind, id: u64) -> Option<&Rec> {
        self.map(kind).get(&id)
    }

    /// Live records in id order.
    pub fn live(&self, kind: Kind) -> impl Iterator<Item = (u64, &Rec)> {
        self.map(kind)
            .iter()
            .filter(|(_, r)| !r.deleted)
            .map(|(id, r)| (*id, r))
    }

    /// Soft-deleted users in id order.
    pub fn deleted_users(&self) -> impl Iterator<Item = (u64, &Rec)> {
        self.users
            .iter()
            .filter(|(_, r)| r.deleted)
            .map(|(id, r)| (*id, r))
    }

    /// What the incremental exports walk: every record (deleted users included, with
    /// `active: false`) in (updated_at, id) order.
    pub fn by_update(&self, kind: Kind) -> Vec<(i64, u64, &Rec)> {
        let mut rows: Vec<(i64, u64, &Rec)> = self
            .map(kind)
            .iter()
            .map(|(id, r)| (r.updated, *id, r))
            .collect();
        rows.sort_by_key(|(t, id, _)| (*t, *id));
        rows
    }
}

/// Generated `updated_at` values: random over the history span, sometimes repeating the
/// previous one (1-second resolution makes ties common in real accounts).
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
        let created = self.last - rng.below(86_400 * 30) as i64;
        (created.max(self.start - 86_400 * 30), self.last)
    }
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Fills the store from the config's seed: organizations with their end users, end users
/// without an organization, then a few agents.
pub fn populate(store: &mut Store, cfg: &ZendeskConfig) {
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
        let (city, _, zip, country) = PLACES[rng.below(PLACES.len() as u64) as usize];
        let street = format!("{} {}", rng.below(9000) + 1, rng.pick(STREETS));
        let domain = format!("{}{}.example.com", slug(adj), slug(noun));
        let org = obj(json!({
            "name": name,
            "domain_names": [domain],
            "details": format!("{street}\n{zip} {city}\n{country}"),
            "notes": if overlong { "Key account. ".repeat(400) } else { format!("{adj} {noun}: key account in {city}.") },
            "external_id": format!("CRM-{:06}", 100_000 + i),
            "tags": ["customer", slug(noun)],
        }));
        let (c, u) = stamps.next(&mut rng);
        let Ok(org_id) = store.insert_at(Kind::Organization, org, c, u) else {
            continue;
        };
        for j in 0..cfg.users_per_organization {
            let user = user_fields(&mut rng, Some((org_id, &domain)), overlong && j == 0);
            let (c, u) = stamps.next(&mut rng);
            let _ = store.insert_at(Kind::User, user, c, u);
        }
    }
    for _ in 0..cfg.users_without_organization {
        let user = user_fields(&mut rng, None, false);
        let (c, u) = stamps.next(&mut rng);
        let _ = store.insert_at(Kind::User, user, c, u);
    }
    for k in 0..cfg.agents {
        let first = rng.pick(FIRST);
        let agent = obj(json!({
            "name": format!("{first} Support"),
            "email": format!("{}.agent{k}@support.example.com", slug(first)),
            "role": "agent",
            "ticket_restriction": null,
            "restricted_agent": false,
        }));
        let (c, u) = stamps.next(&mut rng);
        let _ = store.insert_at(Kind::User, agent, c, u);
    }
}

fn user_fields(rng: &mut Rng, org: Option<(u64, &str)>, overlong: bool) -> Map<String, Value> {
    let first = rng.pick(FIRST);
    let mut last = rng.pick(LAST).to_string();
    if overlong {
        last = format!("{last}-Montgomery-Fitzwilliam-Habsburg-Lorraine-Wittelsbach");
    }
    let (_, _, _, country) = PLACES[rng.below(PLACES.len() as u64) as usize];
    let domain = org.map_or("mail.example.org", |(_, d)| d);
    // Some end users have only a phone, some only an email (both are optional in Zendesk).
    let email = (rng.below(20) != 0).then(|| format!("{}.{}@{domain}", slug(first), slug(&last)));
    let phone_no = (rng.below(4) != 0).then(|| phone(rng, country));
    let job = rng.pick(TITLES);
    let prefers = ["email", "phone", "chat"][rng.below(3) as usize];
    let tags: Vec<&str> = if rng.below(10) == 0 {
        vec!["vip"]
    } else {
        Vec::new()
    };
    let mut m = obj(json!({
        "name": format!("{first} {last}"),
        "email": email,
        "phone": phone_no,
        "notes": format!("Prefers {prefers}."),
        "user_fields": { "job_title": job },
        "tags": tags,
    }));
    if let Some((id, _)) = org {
        m.insert("organization_id".into(), json!(id));
    }
    m
}
