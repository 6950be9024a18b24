//! Reading whole CRM payloads: list pages, single records and JSON notification bodies, in each
//! CRM's documented shape, into [`Notice`]s. Record fields are mapped by the source's profile
//! ([`crate::mapper`]); this module only knows the envelopes.
//!
//! A payload either cannot be read at all (a [`PayloadError`]) or yields one [`Item`] per record
//! or event, each of which succeeded, was skipped with a reason, or failed with a [`MapError`].
//! One bad record never hides the others.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{MapError, PayloadError};
use crate::mapper::{Mapper, Warning, lookup};
use crate::model::{Change, CrmKind, Entity, FetchHint, Notice, Operation, Parent};
use crate::transform::{parse_timestamp, scalar_string};

/// One record or event of a payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Where in the payload, e.g. `records[3]` or `[0]`.
    pub at: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Notice {
        notice: Notice,
        warnings: Vec<Warning>,
    },
    /// Deliberately not acted on (an event type crm-sync does not handle), with the reason.
    Skipped(String),
    Failed(MapError),
}

impl Item {
    fn notice(at: impl Into<String>, notice: Notice) -> Item {
        Item {
            at: at.into(),
            outcome: Outcome::Notice {
                notice,
                warnings: vec![],
            },
        }
    }

    fn skipped(at: impl Into<String>, why: impl Into<String>) -> Item {
        Item {
            at: at.into(),
            outcome: Outcome::Skipped(why.into()),
        }
    }

    fn mapped(at: impl Into<String>, r: Result<crate::mapper::Mapped, MapError>) -> Item {
        Item {
            at: at.into(),
            outcome: match r {
                Ok(m) => Outcome::Notice {
                    notice: Notice::Change(m.change),
                    warnings: m.warnings,
                },
                Err(e) => Outcome::Failed(e),
            },
        }
    }
}

/// Reads a payload of the mapper's CRM kind. `hint` names the entity when the payload does not
/// say (HubSpot and ServiceNow list pages, for instance).
pub fn decode(
    mapper: &Mapper,
    payload: &Value,
    hint: Option<Entity>,
) -> Result<Vec<Item>, PayloadError> {
    if is_contract(payload) {
        return contract(mapper, payload, "").map(|i| vec![i]);
    }
    match mapper.kind {
        CrmKind::Salesforce => salesforce(mapper, payload, hint),
        CrmKind::Servicenow => servicenow(mapper, payload, hint),
        CrmKind::Hubspot => hubspot(mapper, payload, hint),
        CrmKind::Zendesk => zendesk(mapper, payload, hint),
        CrmKind::Pipedrive => pipedrive(mapper, payload, hint),
        CrmKind::Generic => generic(mapper, payload, hint),
    }
}

/// Maps records listed from the CRM's API (a page's records, fetched records): the entity is
/// known, the envelope already removed.
pub fn map_records(mapper: &Mapper, entity: Entity, list: &[Value]) -> Vec<Item> {
    map_all(mapper, list, "records", |_| Ok(entity))
}

/// A Salesforce record that was queried without `Id` still names itself in `attributes.url`
/// (`/services/data/vXX.X/sobjects/Account/001...`), as the query examples in Salesforce's REST
/// guide show.
fn implied_id<'a>(mapper: &Mapper, e: Entity, r: &'a Value) -> Option<&'a str> {
    if mapper.kind != CrmKind::Salesforce || mapper.has_id(e, r) {
        return None;
    }
    r.pointer("/attributes/url")
        .and_then(Value::as_str)
        .and_then(|u| u.rsplit('/').next())
        .filter(|id| !id.is_empty())
}

fn unrecognised(kind: CrmKind, reason: impl Into<String>) -> PayloadError {
    PayloadError::Unrecognised {
        kind: kind.to_string(),
        reason: reason.into(),
    }
}

fn need_hint(kind: CrmKind, what: &str, hint: Option<Entity>) -> Result<Entity, PayloadError> {
    hint.ok_or_else(|| {
        PayloadError::Entity(format!(
            "{kind} {what} does not say whether it holds accounts or contacts: give the entity (--entity account|contact)"
        ))
    })
}

fn records<'a>(v: &'a Value, field: &str) -> Result<&'a Vec<Value>, PayloadError> {
    v.get(field)
        .and_then(Value::as_array)
        .ok_or_else(|| PayloadError::Field {
            field: field.to_string(),
            reason: "expected an array of records".into(),
        })
}

fn map_all(
    mapper: &Mapper,
    list: &[Value],
    prefix: &str,
    entity_of: impl Fn(&Value) -> Result<Entity, MapError>,
) -> Vec<Item> {
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            let at = format!("{prefix}[{i}]");
            match entity_of(r) {
                Ok(e) => Item::mapped(at, mapper.map_record(e, r, implied_id(mapper, e, r))),
                Err(err) => Item {
                    at,
                    outcome: Outcome::Failed(err),
                },
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Our published contract, used by the Apex callout and the ServiceNow business rules:
// {"entity": "account"|"contact", "operation": "create"|"update"|"delete"|"undelete",
//  "id": "...", "modified_at": "...", "record": {...}}
// A create or update without `record` is a hint: the record is fetched.

fn is_contract(v: &Value) -> bool {
    v.get("operation").is_some_and(Value::is_string)
        && v.get("entity").is_some_and(Value::is_string)
}

fn contract(mapper: &Mapper, v: &Value, at: &str) -> Result<Item, PayloadError> {
    let field = |f: &str, reason: &str| PayloadError::Field {
        field: f.into(),
        reason: reason.into(),
    };
    let entity_name = v["entity"].as_str().unwrap_or_default();
    let entity = entity_name
        .parse::<Entity>()
        .ok()
        .or_else(|| mapper.entity_for_object(entity_name))
        .ok_or_else(|| field("entity", "expected account or contact"))?;
    let op = v["operation"].as_str().unwrap_or_default();
    if !matches!(op, "create" | "update" | "delete" | "undelete") {
        return Err(field(
            "operation",
            "expected create, update, delete or undelete",
        ));
    }
    let record = v.get("record").filter(|r| !r.is_null());
    let raw_id = v
        .get("id")
        .and_then(scalar_string)
        .filter(|s| !s.is_empty())
        .or_else(|| record.and_then(|r| mapper.record_id(entity, r, None).ok()))
        .ok_or_else(|| field("id", "missing: the record's id is required"))?;
    let id = mapper
        .normalise_id(&raw_id)
        .map_err(|reason| field("id", &reason))?;
    let modified_at = match v.get("modified_at").filter(|m| !m.is_null()) {
        Some(m) => Some(parse_timestamp(m).ok_or_else(|| field("modified_at", "not a timestamp"))?),
        None => None,
    };
    Ok(match (op, record) {
        ("delete", _) => Item::notice(at, Notice::Change(delete(mapper, entity, id, modified_at))),
        (_, Some(r)) => {
            let mut item = Item::mapped(at, mapper.map_record(entity, r, Some(&id)));
            if let Outcome::Notice {
                notice: Notice::Change(c),
                ..
            } = &mut item.outcome
                && modified_at.is_some()
            {
                c.modified_at = modified_at;
            }
            item
        }
        (_, None) => Item::notice(
            at,
            Notice::Fetch(FetchHint {
                source: mapper.source.clone(),
                entity,
                ids: vec![id],
                reason: format!("{op} notification without a record"),
            }),
        ),
    })
}

fn delete(
    mapper: &Mapper,
    entity: Entity,
    id: String,
    modified_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Change {
    Change {
        source: mapper.source.clone(),
        entity,
        source_id: id,
        op: Operation::Delete,
        modified_at,
        parent: Parent::Unchanged,
        record_url: None,
    }
}

fn fetch(mapper: &Mapper, entity: Entity, ids: Vec<String>, reason: String) -> Notice {
    Notice::Fetch(FetchHint {
        source: mapper.source.clone(),
        entity,
        ids,
        reason,
    })
}

// ---------------------------------------------------------------------------------------------
// Salesforce: query pages ({totalSize, done, records[]} with attributes.type), Apex-serialised
// record arrays, single records, and Change Data Capture events (streaming envelope with
// payload.ChangeEventHeader, or relayed through EventBridge under `detail`).

fn salesforce(mapper: &Mapper, v: &Value, hint: Option<Entity>) -> Result<Vec<Item>, PayloadError> {
    let entity_of = |r: &Value| -> Result<Entity, MapError> {
        r.pointer("/attributes/type")
            .and_then(Value::as_str)
            .and_then(|t| mapper.entity_for_object(t))
            .or(hint)
            .ok_or(MapError::MissingId {
                entity: hint.unwrap_or(Entity::Account),
                paths: "/attributes/type (the record's sObject type; give --entity)".into(),
            })
    };
    if let Some(cdc) = cdc_event(v) {
        return cdc_items(mapper, cdc, "");
    }
    match v {
        Value::Object(o) if o.contains_key("records") => Ok(map_all(
            mapper,
            records(v, "records")?,
            "records",
            entity_of,
        )),
        Value::Object(_) => Ok(map_all(mapper, std::slice::from_ref(v), "", entity_of)),
        Value::Array(list) => {
            let mut items = Vec::new();
            for (i, el) in list.iter().enumerate() {
                let at = format!("[{i}]");
                match cdc_event(el) {
                    Some(cdc) => items.extend(cdc_items(mapper, cdc, &at)?),
                    None => items.extend(
                        map_all(mapper, std::slice::from_ref(el), "", entity_of)
                            .into_iter()
                            .map(|mut it| {
                                it.at = at.clone();
                                it
                            }),
                    ),
                }
            }
            Ok(items)
        }
        _ => Err(unrecognised(
            CrmKind::Salesforce,
            "expected a query page, a record, a list of records or a change event",
        )),
    }
}

/// The change event's payload (the object holding `ChangeEventHeader`), if `v` is one.
fn cdc_event(v: &Value) -> Option<&Value> {
    [v, &v["payload"], &v["detail"], &v["detail"]["payload"]]
        .into_iter()
        .find(|c| c.get("ChangeEventHeader").is_some_and(Value::is_object))
}

fn cdc_items(mapper: &Mapper, payload: &Value, at: &str) -> Result<Vec<Item>, PayloadError> {
    let h = &payload["ChangeEventHeader"];
    let hfield = |f: &str, reason: &str| PayloadError::Field {
        field: format!("ChangeEventHeader.{f}"),
        reason: reason.into(),
    };
    let entity_name = h["entityName"]
        .as_str()
        .ok_or_else(|| hfield("entityName", "missing"))?;
    let change_type = h["changeType"]
        .as_str()
        .ok_or_else(|| hfield("changeType", "missing"))?;
    let Some(entity) = mapper.entity_for_object(entity_name) else {
        return Ok(vec![Item::skipped(
            at,
            format!("change event for {entity_name}, which is not synced"),
        )]);
    };
    let ids: Vec<&str> = h["recordIds"]
        .as_array()
        .ok_or_else(|| hfield("recordIds", "expected an array"))?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    if ids.is_empty() {
        return Err(hfield("recordIds", "is empty"));
    }
    let commit = h.get("commitTimestamp").and_then(parse_timestamp);
    // A wildcard id (`001*`) stands for records the event cannot list (overflow).
    if ids.iter().any(|i| i.ends_with('*')) || change_type == "GAP_OVERFLOW" {
        return Ok(vec![Item::skipped(
            at,
            format!(
                "{change_type} for {entity_name} names no individual records; run an incremental sync to catch up"
            ),
        )]);
    }
    let mut items = Vec::new();
    let mut normalised = Vec::new();
    for (i, raw) in ids.iter().enumerate() {
        let item_at = format!("{at}recordIds[{i}]");
        match mapper.normalise_id(raw) {
            Ok(id) => normalised.push((item_at, id)),
            Err(reason) => items.push(Item {
                at: item_at,
                outcome: Outcome::Failed(MapError::InvalidId {
                    entity,
                    id: raw.chars().take(64).collect(),
                    reason,
                }),
            }),
        }
    }
    match change_type {
        "CREATE" | "UNDELETE" => {
            for (item_at, id) in normalised {
                let mut item = Item::mapped(item_at, mapper.map_record(entity, payload, Some(&id)));
                if let Outcome::Notice {
                    notice: Notice::Change(c),
                    ..
                } = &mut item.outcome
                {
                    c.modified_at = c.modified_at.or(commit);
                }
                items.push(item);
            }
        }
        "DELETE" => {
            for (item_at, id) in normalised {
                items.push(Item::notice(
                    item_at,
                    Notice::Change(delete(mapper, entity, id, commit)),
                ));
            }
        }
        // An UPDATE carries only the changed fields, and gap events none: fetch the records.
        "UPDATE" | "GAP_CREATE" | "GAP_UPDATE" | "GAP_DELETE" | "GAP_UNDELETE" => {
            if !normalised.is_empty() {
                let ids = normalised.into_iter().map(|(_, id)| id).collect();
                items.push(Item::notice(
                    at,
                    fetch(mapper, entity, ids, format!("salesforce {change_type}")),
                ));
            }
        }
        other => {
            return Err(hfield(
                "changeType",
                &format!("`{other}` is not a documented change type"),
            ));
        }
    }
    Ok(items)
}

// ---------------------------------------------------------------------------------------------
// ServiceNow Table API: {"result": [...]} pages, {"result": {...}} single records.

fn servicenow(mapper: &Mapper, v: &Value, hint: Option<Entity>) -> Result<Vec<Item>, PayloadError> {
    let entity_of = |r: &Value| -> Result<Entity, MapError> {
        r.get("sys_class_name")
            .and_then(Value::as_str)
            .and_then(|t| mapper.entity_for_object(t))
            .or(hint)
            .ok_or(MapError::MissingId {
                entity: Entity::Account,
                paths: "/sys_class_name (the record's table; give --entity)".into(),
            })
    };
    match v.get("result") {
        Some(Value::Array(list)) => Ok(map_all(mapper, list, "result", entity_of)),
        Some(r @ Value::Object(_)) => Ok(map_all(
            mapper,
            std::slice::from_ref(r),
            "result",
            entity_of,
        )),
        Some(_) => Err(PayloadError::Field {
            field: "result".into(),
            reason: "expected a record or an array of records".into(),
        }),
        None if v.get("sys_id").is_some() => {
            Ok(map_all(mapper, std::slice::from_ref(v), "", entity_of))
        }
        None => Err(unrecognised(
            CrmKind::Servicenow,
            "expected a Table API response with `result`, or a record with `sys_id`",
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// HubSpot: CRM v3 list pages ({results, paging}), single objects ({id, properties}), and webhook
// batches (a JSON array of events with `subscriptionType`).

fn hubspot(mapper: &Mapper, v: &Value, hint: Option<Entity>) -> Result<Vec<Item>, PayloadError> {
    match v {
        Value::Array(events) if events.iter().all(|e| e.get("subscriptionType").is_some()) => {
            hubspot_events(mapper, events)
        }
        Value::Object(o) if o.contains_key("results") => {
            let e = need_hint(CrmKind::Hubspot, "list page", hint)?;
            Ok(map_all(mapper, records(v, "results")?, "results", |_| {
                Ok(e)
            }))
        }
        Value::Object(o) if o.contains_key("properties") => {
            let e = need_hint(CrmKind::Hubspot, "object", hint)?;
            Ok(map_all(mapper, std::slice::from_ref(v), "", |_| Ok(e)))
        }
        _ => Err(unrecognised(
            CrmKind::Hubspot,
            "expected a list page with `results`, an object with `properties`, or an array of webhook events",
        )),
    }
}

fn hubspot_events(mapper: &Mapper, events: &[Value]) -> Result<Vec<Item>, PayloadError> {
    let mut items = Vec::new();
    // Id-only events are batched per entity into one fetch, in first-seen order.
    let mut fetches: BTreeMap<Entity, (String, Vec<String>)> = BTreeMap::new();
    for (i, ev) in events.iter().enumerate() {
        let at = format!("[{i}]");
        let field = |f: &str, reason: &str| PayloadError::Field {
            field: format!("[{i}].{f}"),
            reason: reason.into(),
        };
        let sub = ev["subscriptionType"]
            .as_str()
            .ok_or_else(|| field("subscriptionType", "expected a string"))?;
        let (object, action) = sub.split_once('.').unwrap_or((sub, ""));
        let entity = match object {
            "company" => Entity::Account,
            "contact" => Entity::Contact,
            _ => {
                items.push(Item::skipped(at, format!("{sub} events are not synced")));
                continue;
            }
        };
        let id_of = |v: &Value, f: &str| -> Result<String, PayloadError> {
            scalar_string(v)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| field(f, "expected an object id"))
        };
        let object_id = id_of(&ev["objectId"], "objectId")?;
        let occurred = ev.get("occurredAt").and_then(parse_timestamp);
        let mut want_fetch = |id: String| {
            let entry = fetches
                .entry(entity)
                .or_insert_with(|| (format!("hubspot {sub}"), Vec::new()));
            if !entry.1.contains(&id) {
                entry.1.push(id);
            }
        };
        match action {
            "creation" | "propertyChange" | "restore" | "associationChange" => {
                want_fetch(object_id)
            }
            "deletion" | "privacyDeletion" => {
                items.push(Item::notice(
                    at,
                    Notice::Change(delete(mapper, entity, object_id, occurred)),
                ));
            }
            "merge" => {
                // The winner keeps (or gets, as newObjectId) the merged data; the others are gone.
                let winner = ["newObjectId", "primaryObjectId"]
                    .iter()
                    .find_map(|k| ev.get(*k).and_then(scalar_string).filter(|s| !s.is_empty()))
                    .unwrap_or(object_id.clone());
                let mut losers: Vec<String> = ev["mergedObjectIds"]
                    .as_array()
                    .map(|a| a.iter().filter_map(scalar_string).collect())
                    .unwrap_or_default();
                for k in ["primaryObjectId", "objectId"] {
                    if let Some(id) = ev.get(k).and_then(scalar_string) {
                        losers.push(id);
                    }
                }
                losers.sort();
                losers.dedup();
                losers.retain(|l| l != &winner && !l.is_empty());
                for l in losers {
                    items.push(Item::notice(
                        at.clone(),
                        Notice::Change(delete(mapper, entity, l, occurred)),
                    ));
                }
                want_fetch(winner);
            }
            _ => items.push(Item::skipped(at, format!("{sub} events are not synced"))),
        }
    }
    for (entity, (reason, ids)) in fetches {
        items.push(Item::notice("", fetch(mapper, entity, ids, reason)));
    }
    Ok(items)
}

// ---------------------------------------------------------------------------------------------
// Zendesk Support: {"organizations": [...]}, {"users": [...]} (list and incremental export),
// {"organization": {...}}, {"user": {...}}, and event webhooks
// ({"type": "zen:event-type:user.created", "detail": {...}}).

fn zendesk(mapper: &Mapper, v: &Value, hint: Option<Entity>) -> Result<Vec<Item>, PayloadError> {
    if let Some(t) = v
        .get("type")
        .and_then(Value::as_str)
        .and_then(|t| t.strip_prefix("zen:event-type:"))
    {
        return zendesk_event(mapper, v, t);
    }
    for (key, entity, many) in [
        ("organizations", Entity::Account, true),
        ("users", Entity::Contact, true),
        ("organization", Entity::Account, false),
        ("user", Entity::Contact, false),
    ] {
        if v.get(key).is_some() {
            return Ok(if many {
                map_all(mapper, records(v, key)?, key, |_| Ok(entity))
            } else {
                map_all(mapper, std::slice::from_ref(&v[key]), key, |_| Ok(entity))
            });
        }
    }
    if v.get("id").is_some() {
        let e = need_hint(CrmKind::Zendesk, "record", hint)?;
        return Ok(map_all(mapper, std::slice::from_ref(v), "", |_| Ok(e)));
    }
    Err(unrecognised(
        CrmKind::Zendesk,
        "expected `organizations`, `users`, `organization`, `user` or an event with `type`",
    ))
}

fn zendesk_event(mapper: &Mapper, v: &Value, t: &str) -> Result<Vec<Item>, PayloadError> {
    let (object, action) = t.split_once('.').unwrap_or((t, ""));
    let entity = match object {
        "organization" => Entity::Account,
        "user" => Entity::Contact,
        _ => {
            return Ok(vec![Item::skipped(
                "",
                format!("zendesk {t} events are not synced"),
            )]);
        }
    };
    let detail = &v["detail"];
    let id = detail
        .get("id")
        .and_then(scalar_string)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| PayloadError::Field {
            field: "detail.id".into(),
            reason: "missing".into(),
        })?;
    let at = v.get("time").and_then(parse_timestamp);
    Ok(vec![match action {
        "deleted" => Item::notice("detail", Notice::Change(delete(mapper, entity, id, at))),
        "created" => Item::mapped("detail", mapper.map_record(entity, detail, None)),
        _ => Item::notice(
            "detail",
            fetch(mapper, entity, vec![id], format!("zendesk {t}")),
        ),
    }])
}

// ---------------------------------------------------------------------------------------------
// Pipedrive: list pages ({"success", "data": [...], "additional_data"}), single records
// ({"data": {...}}), and webhooks v2 ({"meta": {action, entity, entity_id, ...}, "data",
// "previous"}).

fn pipedrive(mapper: &Mapper, v: &Value, hint: Option<Entity>) -> Result<Vec<Item>, PayloadError> {
    if let Some(meta) = v.get("meta").filter(|m| m.get("action").is_some()) {
        let field = |f: &str, reason: &str| PayloadError::Field {
            field: format!("meta.{f}"),
            reason: reason.into(),
        };
        let object = meta["entity"]
            .as_str()
            .ok_or_else(|| field("entity", "missing"))?;
        let Some(entity) = mapper.entity_for_object(object) else {
            return Ok(vec![Item::skipped(
                "",
                format!("pipedrive {object} events are not synced"),
            )]);
        };
        let id = meta
            .get("entity_id")
            .and_then(scalar_string)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| field("entity_id", "missing"))?;
        let at = meta.get("timestamp").and_then(parse_timestamp);
        let action = meta["action"].as_str().unwrap_or_default();
        return Ok(vec![match action {
            "delete" | "deleted" => {
                Item::notice("", Notice::Change(delete(mapper, entity, id, at)))
            }
            "create" | "change" | "added" | "updated" => {
                match v.get("data").filter(|d| d.is_object()) {
                    Some(data) => {
                        let mut item =
                            Item::mapped("data", mapper.map_record(entity, data, Some(&id)));
                        if let Outcome::Notice {
                            notice: Notice::Change(c),
                            ..
                        } = &mut item.outcome
                        {
                            c.modified_at = c.modified_at.or(at);
                        }
                        item
                    }
                    None => Item::notice(
                        "",
                        fetch(
                            mapper,
                            entity,
                            vec![id],
                            format!("pipedrive {action} without data"),
                        ),
                    ),
                }
            }
            other => {
                return Err(field(
                    "action",
                    &format!("`{other}` is not create, change or delete"),
                ));
            }
        }]);
    }
    match v.get("data") {
        Some(Value::Array(list)) => {
            let e = need_hint(CrmKind::Pipedrive, "list page", hint)?;
            Ok(map_all(mapper, list, "data", |_| Ok(e)))
        }
        Some(r @ Value::Object(_)) => {
            let e = need_hint(CrmKind::Pipedrive, "record", hint)?;
            Ok(map_all(mapper, std::slice::from_ref(r), "data", |_| Ok(e)))
        }
        _ => Err(unrecognised(
            CrmKind::Pipedrive,
            "expected `data` (a page or a record) or a webhook with `meta`",
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Generic: the records are where the profile's `records` pointer says, or the payload is an
// array of records, or one record.

fn generic(mapper: &Mapper, v: &Value, hint: Option<Entity>) -> Result<Vec<Item>, PayloadError> {
    let e = need_hint(CrmKind::Generic, "payload", hint)?;
    if let Some(ptr) = mapper.records_pointer(e) {
        let list = lookup(v, ptr)
            .and_then(Value::as_array)
            .ok_or_else(|| PayloadError::Field {
                field: ptr.to_string(),
                reason: "expected an array of records here (the mapping's `records` pointer)"
                    .into(),
            })?;
        return Ok(map_all(mapper, list, ptr, |_| Ok(e)));
    }
    match v {
        Value::Array(list) => Ok(map_all(mapper, list, "", |_| Ok(e))),
        Value::Object(_) => Ok(map_all(mapper, std::slice::from_ref(v), "", |_| Ok(e))),
        _ => Err(unrecognised(
            CrmKind::Generic,
            "expected a record, an array of records, or set the mapping's `records` pointer",
        )),
    }
}
