//! Bulk messages ("Use bulk operation messages",
//! https://learn.microsoft.com/power-apps/developer/data-platform/bulk-operations):
//! `POST {set}/Microsoft.Dynamics.CRM.{CreateMultiple|UpdateMultiple|UpsertMultiple}` with
//! `{"Targets":[…]}`. Every target needs `@odata.type`; on standard tables one failing target
//! rolls back the whole request; a table may not support the messages at all.

use std::collections::HashSet;

use http::StatusCode;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::api::{ApiResponse, Ctx, parse_body};
use crate::error::ApiError;
use crate::keys::{RecordKey, parse_key, parse_segment};
use crate::schema::Table;
use crate::state::{Condition, KEY_COLUMNS, Store};

#[derive(Clone, Copy, PartialEq)]
enum Message {
    Create,
    Update,
    Upsert,
}

/// Executes a bulk action; the store is unchanged unless every target succeeds.
pub fn execute(
    ctx: &mut Ctx<'_>,
    store: &mut Store,
    t: Table,
    action: &str,
    body: &[u8],
) -> Result<ApiResponse, ApiError> {
    let (name, msg) = match action {
        "Microsoft.Dynamics.CRM.CreateMultiple" => ("CreateMultiple", Message::Create),
        "Microsoft.Dynamics.CRM.UpdateMultiple" => ("UpdateMultiple", Message::Update),
        "Microsoft.Dynamics.CRM.UpsertMultiple" => ("UpsertMultiple", Message::Upsert),
        _ => return Err(ApiError::segment_not_found(action)),
    };
    let supported = match t {
        Table::Account => ctx.tables.account.bulk_supported,
        Table::Contact => ctx.tables.contact.bulk_supported,
    };
    if !supported {
        return Err(ApiError::message_not_supported(name, t.logical_name()));
    }
    let body = parse_body(body)?;
    let targets = match body.get("Targets") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => {
            return Err(ApiError::bad_request(
                "The parameter 'Targets' is required and must be a non-empty array.",
            ));
        }
    };
    let snapshot = store.clone();
    match run(ctx, store, t, msg, targets) {
        Ok(resp) => Ok(resp),
        Err(e) => {
            *store = snapshot;
            Err(e)
        }
    }
}

fn run(
    ctx: &mut Ctx<'_>,
    store: &mut Store,
    t: Table,
    msg: Message,
    targets: &[Value],
) -> Result<ApiResponse, ApiError> {
    let entity_type = format!("Microsoft.Dynamics.CRM.{}", t.logical_name());
    let mut ids = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for target in targets {
        ctx.ops += 1;
        if (ctx.deadlock)() {
            return Err(ApiError::deadlock());
        }
        let Value::Object(item) = target else {
            return Err(ApiError::bad_request(
                "Each item of Targets must be an object.",
            ));
        };
        match item.get("@odata.type").and_then(Value::as_str) {
            None => {
                return Err(ApiError::bad_request(
                    "The '@odata.type' annotation is required on every item of Targets.",
                ));
            }
            Some(ty) if ty != entity_type => {
                return Err(ApiError::bad_request(format!(
                    "The @odata.type '{ty}' does not match the entity type '{entity_type}'."
                )));
            }
            Some(_) => {}
        }
        let key = target_key(t, item)?;
        if let Some(k) = &key {
            // Duplicate keys inside one UpsertMultiple are an error ("Use bulk operation
            // messages"); the emulator refuses them for every message.
            if !seen.insert(format!("{k:?}").to_lowercase()) {
                return Err(ApiError::duplicate(t.logical_name()));
            }
        }
        let mut fields: Map<String, Value> = item.clone();
        fields.remove("@odata.id");
        match msg {
            Message::Create => {
                if let Some(RecordKey::Id(id)) = &key {
                    fields.insert(t.primary_key().into(), Value::from(id.to_string()));
                }
                ids.push(store.create(t, &fields, ctx.rules)?);
            }
            Message::Update => {
                let k = key.ok_or_else(|| {
                    ApiError::bad_request("UpdateMultiple needs the primary key of every target.")
                })?;
                let id = store
                    .resolve(t, &k, ctx.rules)?
                    .ok_or_else(|| Store::missing(t, &k))?;
                fields.remove(t.primary_key());
                store.update(t, id, &fields, ctx.rules)?;
            }
            Message::Upsert => {
                let k = match key {
                    Some(k) => k,
                    None => RecordKey::Id(Uuid::new_v4()),
                };
                if let RecordKey::Alternate(_) = &k
                    && store.resolve(t, &k, ctx.rules)?.is_none()
                    && KEY_COLUMNS.iter().any(|c| fields.contains_key(*c))
                {
                    // Observed: key columns both in @odata.id and the body fail the create.
                    return Err(ApiError::key_in_body(t.logical_name()));
                }
                store.upsert(t, &k, &fields, &Condition::None, ctx.rules)?;
            }
        }
    }
    Ok(match msg {
        Message::Create => ApiResponse::json(
            StatusCode::OK,
            &json!({
                "@odata.context": format!("{}$metadata#Microsoft.Dynamics.CRM.CreateMultipleResponse", ctx.api_url),
                "Ids": ids.iter().map(Uuid::to_string).collect::<Vec<_>>(),
            }),
        ),
        _ => ApiResponse::empty(StatusCode::NO_CONTENT),
    })
}

/// The key of a target: `@odata.id` (`accounts(<key>)`), else the primary key in the body.
fn target_key(t: Table, item: &Map<String, Value>) -> Result<Option<RecordKey>, ApiError> {
    if let Some(id) = item.get("@odata.id") {
        let s = id
            .as_str()
            .ok_or_else(|| ApiError::bad_request("@odata.id must be a string."))?;
        let path = s
            .rsplit_once("/api/data/v9.2/")
            .map_or(s, |(_, p)| p)
            .trim_start_matches('/');
        let path = crate::keys::decode(path)?;
        let (set, key) = parse_segment(&path)?;
        let key = key.filter(|_| set == t.set_name()).ok_or_else(|| {
            ApiError::bad_request(format!(
                "The @odata.id '{s}' does not address a {} row.",
                t.logical_name()
            ))
        })?;
        return parse_key(key).map(Some);
    }
    match item.get(t.primary_key()) {
        Some(Value::String(s)) => Uuid::parse_str(s)
            .map(|id| Some(RecordKey::Id(id)))
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "Cannot convert the literal '{s}' to the expected type 'Edm.Guid'."
                ))
            }),
        _ => Ok(None),
    }
}
