//! The portal's companies and contacts, their mutations (each one yields the webhook events
//! HubSpot would send), and seeded generation.
//!
//! Record shape (CRM v3 "SimplePublicObject", OpenAPI spec
//! `PublicApiSpecs/CRM/Contacts/Rollouts/424/v3/contacts.json` in
//! https://github.com/HubSpot/HubSpot-public-api-spec-collection): `id` is a numeric string (the
//! `hs_object_id` property), every property value is a string or null, `createdAt` / `updatedAt`
//! / `archivedAt` are ISO 8601 with milliseconds. Ids are unique per object type and grow with
//! creation, so new records sort after old ones in id order.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, SubsecRound, Utc};
use serde_json::{Map, Value};
use thiserror::Error;

use super::config::HubSpotConfig;
use crate::salesforce::generate::{Rng, account_fields, contact_fields};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectType {
    Companies,
    Contacts,
}

/// Properties a company can hold (a subset of HubSpot's default company properties).
const COMPANY_PROPS: &[&str] = &[
    "name",
    "domain",
    "website",
    "phone",
    "address",
    "address2",
    "city",
    "state",
    "zip",
    "country",
    "industry",
    "numberofemployees",
    "description",
];

/// Properties a contact can hold (a subset of HubSpot's default contact properties).
const CONTACT_PROPS: &[&str] = &[
    "firstname",
    "lastname",
    "email",
    "phone",
    "mobilephone",
    "jobtitle",
    "company",
    "address",
    "city",
    "state",
    "zip",
    "country",
    "associatedcompanyid",
];

/// Read-only properties HubSpot computes: present on every object, never set by a caller.
const COMPUTED: &[&str] = &[
    "hs_object_id",
    "createdate",
    "hs_lastmodifieddate",
    "lastmodifieddate",
    "hs_merged_object_ids",
];

impl ObjectType {
    pub const ALL: [ObjectType; 2] = [ObjectType::Companies, ObjectType::Contacts];

    /// The `{objectType}` path segment: name, singular, or object type id (`0-2` companies,
    /// `0-1` contacts, https://developers.hubspot.com/docs/guides/crm/using-object-apis).
    pub fn parse(s: &str) -> Option<ObjectType> {
        match s {
            "companies" | "company" | "0-2" => Some(ObjectType::Companies),
            "contacts" | "contact" | "0-1" => Some(ObjectType::Contacts),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ObjectType::Companies => "companies",
            ObjectType::Contacts => "contacts",
        }
    }

    /// As in webhook subscription types (`contact.creation`, `company.deletion`).
    pub fn singular(self) -> &'static str {
        match self {
            ObjectType::Companies => "company",
            ObjectType::Contacts => "contact",
        }
    }

    /// As in batch error messages ("Could not get some CONTACT objects ...").
    pub fn upper(self) -> &'static str {
        match self {
            ObjectType::Companies => "COMPANY",
            ObjectType::Contacts => "CONTACT",
        }
    }

    fn index(self) -> usize {
        match self {
            ObjectType::Companies => 0,
            ObjectType::Contacts => 1,
        }
    }

    fn stored(self) -> &'static [&'static str] {
        match self {
            ObjectType::Companies => COMPANY_PROPS,
            ObjectType::Contacts => CONTACT_PROPS,
        }
    }

    /// Every property of this object type, stored then computed.
    pub fn properties(self) -> Vec<&'static str> {
        let mut out = self.stored().to_vec();
        out.extend(COMPUTED.iter().filter(|n| self.has_property(n)));
        out
    }

    /// Whether `name` is a property of this object type (stored or computed).
    pub fn has_property(self, name: &str) -> bool {
        self.stored().contains(&name)
            || (COMPUTED.contains(&name) && (name != "lastmodifieddate" || self == Self::Contacts))
    }

    /// The properties returned when a read names none: "Searchable CRM objects" table of the
    /// search guide (https://developers.hubspot.com/docs/api-reference/search/guide) — companies
    /// `name, domain, createdate, hs_lastmodifieddate, hs_object_id`; contacts `firstname,
    /// lastname, email, lastmodifieddate, hs_object_id, createdate`. The list and batch
    /// endpoints are documented only as returning "a handful of default properties"; the
    /// same set is assumed.
    pub fn default_properties(self) -> &'static [&'static str] {
        match self {
            ObjectType::Companies => &[
                "createdate",
                "domain",
                "hs_lastmodifieddate",
                "hs_object_id",
                "name",
            ],
            ObjectType::Contacts => &[
                "createdate",
                "email",
                "firstname",
                "hs_object_id",
                "lastmodifieddate",
                "lastname",
            ],
        }
    }

    /// Returned even when `properties` names others. Not stated on a HubSpot page; it is
    /// what responses to `properties=...` show in HubSpot's examples and SDK issue threads.
    pub fn always_properties(self) -> &'static [&'static str] {
        match self {
            ObjectType::Companies => &["createdate", "hs_lastmodifieddate", "hs_object_id"],
            ObjectType::Contacts => &["createdate", "hs_object_id", "lastmodifieddate"],
        }
    }

    /// The other object type, for associations.
    pub fn other(self) -> ObjectType {
        match self {
            ObjectType::Companies => ObjectType::Contacts,
            ObjectType::Contacts => ObjectType::Companies,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Obj {
    pub id: u64,
    /// Stored properties that have a value.
    pub props: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub archived_at: Option<DateTime<Utc>>,
}

/// `2019-10-30T03:30:17.883Z`.
pub fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

impl Obj {
    /// A property as HubSpot shows it: `None` for a property this type does not have,
    /// `Some(None)` for one without a value.
    pub fn prop(&self, t: ObjectType, name: &str) -> Option<Option<String>> {
        if !t.has_property(name) {
            return None;
        }
        Some(match name {
            "hs_object_id" => Some(self.id.to_string()),
            "createdate" => Some(iso(self.created_at)),
            "hs_lastmodifieddate" | "lastmodifieddate" => Some(iso(self.updated_at)),
            _ => self.props.get(name).cloned(),
        })
    }

    pub fn company(&self) -> Option<u64> {
        self.props
            .get("associatedcompanyid")
            .and_then(|v| v.parse().ok())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HubSpotError {
    #[error("Property \"{0}\" does not exist on {1}")]
    UnknownProperty(String, &'static str),
    #[error("Property \"{0}\" is read-only")]
    ReadOnly(String),
    #[error("value of \"{0}\" is not a string (HubSpot property values are strings)")]
    NotString(String),
    #[error("no {0} with id {1}")]
    NotFound(&'static str, String),
    #[error("an object cannot be merged into itself")]
    SameObject,
}

/// What happened, for the webhook events HubSpot sends about it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Creation,
    Property { name: String, value: String },
    Deletion,
    Merge { primary: u64, merged: Vec<u64> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub object: ObjectType,
    pub object_id: u64,
    pub at: DateTime<Utc>,
    pub change: Change,
}

pub struct Store {
    objs: [BTreeMap<u64, Obj>; 2],
    next_id: [u64; 2],
    rng: Rng,
}

/// Now, at HubSpot's millisecond resolution.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

impl Store {
    pub fn new(seed: u64) -> Store {
        let mut rng = Rng::new(seed);
        // Company ids are ten digits in today's portals, contact ids shorter.
        let companies = 1_000_000_000 + rng.below(8_000_000_000);
        let contacts = 1 + rng.below(1_000);
        Store {
            objs: [BTreeMap::new(), BTreeMap::new()],
            next_id: [companies, contacts],
            rng,
        }
    }

    fn new_id(&mut self, t: ObjectType) -> u64 {
        let step = 1 + self
            .rng
            .below(if t == ObjectType::Contacts { 50 } else { 3 });
        let id = self.next_id[t.index()];
        self.next_id[t.index()] = id + step;
        id
    }

    pub fn get(&self, t: ObjectType, id: &str) -> Option<&Obj> {
        self.objs[t.index()].get(&id.parse::<u64>().ok()?)
    }

    /// Active (not archived) objects in id order.
    pub fn active(&self, t: ObjectType) -> impl Iterator<Item = &Obj> {
        self.objs[t.index()]
            .values()
            .filter(|o| o.archived_at.is_none())
    }

    /// Archived objects in id order.
    pub fn archived(&self, t: ObjectType) -> impl Iterator<Item = &Obj> {
        self.objs[t.index()]
            .values()
            .filter(|o| o.archived_at.is_some())
    }

    /// Objects with an id greater than `after`, archived or active, in id order.
    pub fn after(&self, t: ObjectType, after: u64) -> impl Iterator<Item = &Obj> {
        self.objs[t.index()]
            .range(after.saturating_add(1)..)
            .map(|(_, o)| o)
    }

    fn check(
        &self,
        t: ObjectType,
        given: &Map<String, Value>,
    ) -> Result<Vec<(String, Option<String>)>, HubSpotError> {
        let mut out = Vec::new();
        for (k, v) in given {
            if COMPUTED.contains(&k.as_str()) {
                return Err(HubSpotError::ReadOnly(k.clone()));
            }
            if !t.stored().contains(&k.as_str()) {
                return Err(HubSpotError::UnknownProperty(k.clone(), t.name()));
            }
            let v = match v {
                Value::String(s) if s.is_empty() => None,
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                _ => return Err(HubSpotError::NotString(k.clone())),
            };
            if k == "associatedcompanyid"
                && let Some(c) = &v
                && self
                    .get(ObjectType::Companies, c)
                    .is_none_or(|o| o.archived_at.is_some())
            {
                return Err(HubSpotError::NotFound("company", c.clone()));
            }
            out.push((k.clone(), v));
        }
        Ok(out)
    }

    fn insert_at(
        &mut self,
        t: ObjectType,
        props: BTreeMap<String, String>,
        created: DateTime<Utc>,
        updated: DateTime<Utc>,
    ) -> u64 {
        let id = self.new_id(t);
        self.objs[t.index()].insert(
            id,
            Obj {
                id,
                props,
                created_at: created,
                updated_at: updated,
                archived_at: None,
            },
        );
        id
    }

    /// Creates an object now; returns its id and the `creation` event.
    pub fn create(
        &mut self,
        t: ObjectType,
        given: &Map<String, Value>,
    ) -> Result<(u64, Vec<Event>), HubSpotError> {
        let props = self
            .check(t, given)?
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
        let at = now();
        let id = self.insert_at(t, props, at, at);
        Ok((
            id,
            vec![Event {
                object: t,
                object_id: id,
                at,
                change: Change::Creation,
            }],
        ))
    }

    /// Changes properties of an active object; `updatedAt` becomes now. One `propertyChange`
    /// event per property whose value changed.
    pub fn update(
        &mut self,
        t: ObjectType,
        id: &str,
        given: &Map<String, Value>,
    ) -> Result<Vec<Event>, HubSpotError> {
        let changes = self.check(t, given)?;
        let at = now();
        let obj = self.objs[t.index()]
            .get_mut(&id.parse::<u64>().unwrap_or(0))
            .filter(|o| o.archived_at.is_none())
            .ok_or_else(|| HubSpotError::NotFound(t.singular(), id.to_string()))?;
        let mut events = Vec::new();
        for (k, v) in changes {
            let old = obj.props.get(&k).cloned();
            if old == v {
                continue;
            }
            match &v {
                Some(v) => obj.props.insert(k.clone(), v.clone()),
                None => obj.props.remove(&k),
            };
            events.push(Event {
                object: t,
                object_id: obj.id,
                at,
                change: Change::Property {
                    name: k,
                    value: v.unwrap_or_default(),
                },
            });
        }
        obj.updated_at = at;
        Ok(events)
    }

    /// Archives ("deletes") an active object: it leaves the default listing and appears under
    /// `archived=true` with `archivedAt`. `None` when there was no such active object.
    pub fn archive(&mut self, t: ObjectType, id: &str) -> Option<Vec<Event>> {
        let at = now();
        let obj = self.objs[t.index()]
            .get_mut(&id.parse::<u64>().ok()?)
            .filter(|o| o.archived_at.is_none())?;
        obj.archived_at = Some(at);
        obj.updated_at = at;
        Some(vec![Event {
            object: t,
            object_id: obj.id,
            at,
            change: Change::Deletion,
        }])
    }

    /// Merges `merged` into `primary` (`POST /crm/v3/objects/{type}/merge`, `primaryObjectId` /
    /// `objectIdToMerge`): the primary keeps its id and gains `hs_merged_object_ids`; the merged
    /// one leaves the listing. Contacts of a merged company move to the primary company.
    /// Whether HubSpot lists a merged-away record under `archived=true` could not be confirmed;
    /// here it does (with `archivedAt`), so a catch-up pass sees it gone.
    pub fn merge(
        &mut self,
        t: ObjectType,
        primary: &str,
        merged: &str,
    ) -> Result<Vec<Event>, HubSpotError> {
        let active = |s: &Store, id: &str| {
            s.get(t, id)
                .filter(|o| o.archived_at.is_none())
                .map(|o| o.id)
                .ok_or_else(|| HubSpotError::NotFound(t.singular(), id.to_string()))
        };
        let p = active(self, primary)?;
        let m = active(self, merged)?;
        if p == m {
            return Err(HubSpotError::SameObject);
        }
        let at = now();
        let mut events = Vec::new();
        if let Some(o) = self.objs[t.index()].get_mut(&m) {
            o.archived_at = Some(at);
            o.updated_at = at;
        }
        if let Some(o) = self.objs[t.index()].get_mut(&p) {
            let mut ids: Vec<String> = o
                .props
                .get("hs_merged_object_ids")
                .map(|s| s.split(';').map(str::to_string).collect())
                .unwrap_or_default();
            ids.push(m.to_string());
            o.props.insert("hs_merged_object_ids".into(), ids.join(";"));
            o.updated_at = at;
        }
        if t == ObjectType::Companies {
            for c in self.objs[ObjectType::Contacts.index()].values_mut() {
                if c.archived_at.is_none() && c.company() == Some(m) {
                    c.props.insert("associatedcompanyid".into(), p.to_string());
                    c.updated_at = at;
                    events.push(Event {
                        object: ObjectType::Contacts,
                        object_id: c.id,
                        at,
                        change: Change::Property {
                            name: "associatedcompanyid".into(),
                            value: p.to_string(),
                        },
                    });
                }
            }
        }
        events.insert(
            0,
            Event {
                object: t,
                object_id: p,
                at,
                change: Change::Merge {
                    primary: p,
                    merged: vec![m],
                },
            },
        );
        Ok(events)
    }
}

/// Salesforce-shaped generated fields (shared generator) as HubSpot company properties.
fn company_props(f: &Map<String, Value>, i: usize) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    let text = |k: &str| match f.get(k) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    for (from, to) in [
        ("Name", "name"),
        ("Website", "website"),
        ("Phone", "phone"),
        ("BillingStreet", "address"),
        ("BillingCity", "city"),
        ("BillingState", "state"),
        ("BillingPostalCode", "zip"),
        ("BillingCountry", "country"),
        ("Industry", "industry"),
        ("NumberOfEmployees", "numberofemployees"),
        ("Description", "description"),
    ] {
        if let Some(v) = text(from) {
            p.insert(to.to_string(), v);
        }
    }
    if let Some(w) = text("Website") {
        p.insert(
            "domain".into(),
            w.trim_start_matches("https://www.").to_string(),
        );
    }
    if let Some(ind) = p.get_mut("industry") {
        // HubSpot's industry property is an enumeration of upper-case values.
        *ind = ind.to_uppercase().replace(' ', "_");
    }
    if i % 7 == 3 {
        p.insert("address2".into(), format!("Suite {}", 100 + i % 900));
    }
    p
}

fn contact_props(f: &Map<String, Value>) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    for (from, to) in [
        ("FirstName", "firstname"),
        ("LastName", "lastname"),
        ("Email", "email"),
        ("Phone", "phone"),
        ("MobilePhone", "mobilephone"),
        ("Title", "jobtitle"),
        ("MailingStreet", "address"),
        ("MailingCity", "city"),
        ("MailingState", "state"),
        ("MailingPostalCode", "zip"),
        ("MailingCountry", "country"),
    ] {
        if let Some(Value::String(s)) = f.get(from)
            && !s.is_empty()
        {
            p.insert(to.to_string(), s.clone());
        }
    }
    p
}

/// Generated timestamps: creation times grow through the history span, each record modified
/// some time after its creation, sometimes at exactly the previous record's modification time.
struct Clock {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    step_ms: u64,
    n: u64,
    share_every: u64,
    last_updated: DateTime<Utc>,
}

impl Clock {
    fn next(&mut self, rng: &mut Rng) -> (DateTime<Utc>, DateTime<Utc>) {
        self.n += 1;
        let created = self.start
            + Duration::milliseconds((self.n * self.step_ms + rng.below(self.step_ms)) as i64);
        let share = self.share_every > 0
            && rng.below(self.share_every) == 0
            && self.last_updated >= created;
        let updated = if share {
            self.last_updated
        } else {
            let room = (self.end - created).num_milliseconds().max(1) as u64;
            created + Duration::milliseconds(rng.below(room / 4 + 1) as i64)
        };
        self.last_updated = updated;
        (created, updated)
    }
}

/// Fills the store from the config's seed: each company followed by its contacts, then the
/// contacts without a company.
pub fn populate(store: &mut Store, cfg: &HubSpotConfig) {
    let total = (cfg.companies * (1 + cfg.contacts_per_company) + cfg.orphan_contacts).max(1);
    let span = Duration::days(cfg.history_days.max(1));
    let mut clock = Clock {
        start: cfg.history_start,
        end: cfg.history_start + span,
        step_ms: (span.num_milliseconds() as u64 / 2 / total as u64).max(1),
        n: 0,
        share_every: cfg.shared_stamp_every as u64,
        last_updated: cfg.history_start,
    };
    let mut rng = Rng::new(cfg.seed ^ 0x0048_5542_5350_4f54);
    for i in 0..cfg.companies {
        let overlong = i < cfg.overlong_values;
        let f = account_fields(&mut rng, i, overlong);
        let props = company_props(&f, i);
        let name = props.get("name").cloned().unwrap_or_default();
        let domain = props.get("domain").cloned().unwrap_or_default();
        let (c, u) = clock.next(&mut rng);
        let company = store.insert_at(ObjectType::Companies, props, c, u);
        for j in 0..cfg.contacts_per_company {
            let id = company.to_string();
            let f = contact_fields(&mut rng, Some((&id, &domain)), overlong && j == 0);
            let mut props = contact_props(&f);
            props.insert("associatedcompanyid".into(), id);
            props.insert("company".into(), name.clone());
            let (c, u) = clock.next(&mut rng);
            store.insert_at(ObjectType::Contacts, props, c, u);
        }
    }
    for _ in 0..cfg.orphan_contacts {
        let f = contact_fields(&mut rng, None, false);
        let (c, u) = clock.next(&mut rng);
        store.insert_at(ObjectType::Contacts, contact_props(&f), c, u);
    }
}
