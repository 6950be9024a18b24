//! Read-only metadata crm-sync probes at deploy time: `EntityDefinitions(LogicalName='…')` with
//! its `Keys` (and their `EntityKeyIndexStatus`), attribute casts to
//! `PicklistAttributeMetadata` (option set values) and `StringAttributeMetadata` (MaxLength),
//! `sdkmessagefilters` (which bulk messages a table supports, as "Use bulk operation messages"
//! says to check), `WhoAmI` and the application user's privileges
//! (`systemusers(<id>)/Microsoft.Dynamics.CRM.RetrieveUserPrivileges()`).

use mapping::columns::ColumnType;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::TableSettings;
use crate::error::ApiError;
use crate::keys::{Literal, parse_pairs, parse_segment};
use crate::odata::{QueryOptions, parse_filter};
use crate::schema::Table;
use crate::state::{KEY_COLUMNS, Rules};

fn stable_id(s: &str) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, s.as_bytes())
}

/// `GET WhoAmI` → `WhoAmIResponse`.
pub fn who_am_i(api_url: &str, tenant: &str, client_id: &str) -> Value {
    json!({
        "@odata.context": format!("{api_url}$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse"),
        "BusinessUnitId": stable_id(&format!("bu:{tenant}")).to_string(),
        "UserId": user_id(tenant, client_id).to_string(),
        "OrganizationId": stable_id(&format!("org:{tenant}")).to_string(),
    })
}

/// The calling user's id, as `WhoAmI` reports it.
pub fn user_id(tenant: &str, client_id: &str) -> Uuid {
    stable_id(&format!("user:{tenant}:{client_id}"))
}

/// `GET systemusers(<id>)/Microsoft.Dynamics.CRM.RetrieveUserPrivileges()` →
/// `RetrieveUserPrivilegesResponse` ("RetrieveUserPrivileges Function": bound to systemuser, no
/// parameters; its `RolePrivileges` is a collection of the `RolePrivilege` complex type with
/// `BusinessUnitId`, `Depth` (a `PrivilegeDepth`: Basic, Local, Deep, Global), `PrivilegeId`,
/// `PrivilegeName`, `RecordFilterId`, `RecordFilterUniqueName`). Only the application user
/// exists here; another id is ObjectDoesNotExist (404 0x80040217), as for any missing row.
pub fn user_privileges(
    api_url: &str,
    tenant: &str,
    client_id: &str,
    key: &str,
    function: &str,
    rules: &Rules,
) -> Result<Value, ApiError> {
    if function != "Microsoft.Dynamics.CRM.RetrieveUserPrivileges()" {
        return Err(ApiError::segment_not_found(function));
    }
    let id = Uuid::parse_str(key.trim()).map_err(|_| {
        ApiError::bad_request(format!("The key in the request URI is not valid: '{key}'."))
    })?;
    if id != user_id(tenant, client_id) {
        return Err(ApiError::new(
            http::StatusCode::NOT_FOUND,
            "0x80040217",
            format!("systemuser With Id = {id} Does Not Exist"),
        ));
    }
    let bu = stable_id(&format!("bu:{tenant}")).to_string();
    let privileges: Vec<Value> = rules
        .privileges
        .iter()
        .map(|name| {
            json!({
                "BusinessUnitId": bu,
                "Depth": "Global",
                "PrivilegeId": stable_id(&format!("privilege:{name}")).to_string(),
                "PrivilegeName": name,
                "RecordFilterId": Uuid::nil().to_string(),
                "RecordFilterUniqueName": Value::Null,
            })
        })
        .collect();
    Ok(json!({
        "@odata.context": format!("{api_url}$metadata#Microsoft.Dynamics.CRM.RetrieveUserPrivilegesResponse"),
        "RolePrivileges": privileges,
    }))
}

const MESSAGES: [&str; 7] = [
    "Create",
    "Update",
    "Delete",
    "Retrieve",
    "Upsert",
    "CreateMultiple",
    "UpdateMultiple",
];

/// `GET sdkmessagefilters?$filter=sdkmessageid/name eq 'CreateMultiple' and
/// primaryobjecttypecode eq 'account'`: a row exists only for supported messages. UpsertMultiple
/// has no filter row of its own (it is available where Create- and UpdateMultiple are).
pub fn message_filters(
    api_url: &str,
    tables: &TableSettings,
    q: &QueryOptions,
) -> Result<Value, ApiError> {
    let filter = q.filter.as_deref().map(parse_filter).transpose()?;
    let mut rows = Vec::new();
    for t in Table::ALL {
        let bulk = match t {
            Table::Account => tables.account.bulk_supported,
            Table::Contact => tables.contact.bulk_supported,
        };
        for m in MESSAGES {
            if m.ends_with("Multiple") && !bulk {
                continue;
            }
            let row = json!({
                "sdkmessagefilterid": stable_id(&format!("filter:{m}:{}", t.logical_name())).to_string(),
                "sdkmessageid/name": m,
                "primaryobjecttypecode": t.logical_name(),
            });
            let Value::Object(cols) = row else { continue };
            if filter.as_ref().is_none_or(|f| f.matches(&cols)) {
                let mut out = serde_json::Map::new();
                out.insert(
                    "sdkmessagefilterid".into(),
                    cols["sdkmessagefilterid"].clone(),
                );
                if q.select
                    .as_ref()
                    .is_none_or(|s| s.iter().any(|c| c == "primaryobjecttypecode"))
                {
                    out.insert(
                        "primaryobjecttypecode".into(),
                        cols["primaryobjecttypecode"].clone(),
                    );
                }
                rows.push(Value::Object(out));
            }
        }
    }
    Ok(json!({
        "@odata.context": format!("{api_url}$metadata#sdkmessagefilters(sdkmessagefilterid)"),
        "value": rows,
    }))
}

fn not_found(what: &str) -> ApiError {
    ApiError::new(
        http::StatusCode::NOT_FOUND,
        "0x80040217",
        format!("Could not find {what}."),
    )
}

fn logical_name(text: &str) -> Result<String, ApiError> {
    let pairs = parse_pairs(text)?;
    match pairs.as_slice() {
        [(k, Literal::Str(v))] if k == "LogicalName" => Ok(v.clone()),
        _ => Err(ApiError::bad_request(format!(
            "Unsupported metadata key '{text}'."
        ))),
    }
}

fn label(text: &str) -> Value {
    let l = json!({"Label": text, "LanguageCode": 1033});
    json!({"LocalizedLabels": [l.clone()], "UserLocalizedLabel": l})
}

/// `EntityDefinitions(LogicalName='x')[/Attributes(LogicalName='y')[/Microsoft.Dynamics.CRM.Cast]]`.
pub fn entity_definitions(
    api_url: &str,
    key: &str,
    rest: &[String],
    rules: &Rules,
) -> Result<Value, ApiError> {
    let name = logical_name(key)?;
    let t = Table::from_logical(&name)
        .ok_or_else(|| not_found(&format!("entity with name '{name}'")))?;
    let Some(attr_seg) = rest.first() else {
        let job = rules.key_by_table.get(name.as_str()).map(|(_, j)| *j);
        let keys: Vec<Value> = rules
            .key_status(t)
            .map(|status| {
                json!({
                    "SchemaName": "msdyn_source_crm_key",
                    "LogicalName": "msdyn_source_crm_key",
                    "KeyAttributes": KEY_COLUMNS,
                    "EntityKeyIndexStatus": status.as_str(),
                    "MetadataId": stable_id(&format!("key:{name}")).to_string(),
                    "AsyncJob": job.map(|j| json!({"Id": j.to_string(), "LogicalName": "asyncoperation"})),
                })
            })
            .into_iter()
            .collect();
        return Ok(json!({
            "@odata.context": format!("{api_url}$metadata#EntityDefinitions(LogicalName,Keys)/$entity"),
            "LogicalName": name,
            "EntitySetName": t.set_name(),
            "PrimaryIdAttribute": t.primary_key(),
            "MetadataId": stable_id(&format!("entity:{name}")).to_string(),
            "Keys": keys,
        }));
    };
    let (seg, attr_key) = parse_segment(attr_seg)?;
    let attr_key = attr_key
        .filter(|_| seg == "Attributes")
        .ok_or_else(|| ApiError::segment_not_found(seg))?;
    let attr = logical_name(attr_key)?;
    let col = rules
        .column(t, &attr)
        .ok_or_else(|| not_found(&format!("attribute with name '{attr}' on entity '{name}'")))?;
    let cast = rest.get(1).map(String::as_str);
    let base = json!({
        "LogicalName": attr,
        "MetadataId": stable_id(&format!("attr:{name}:{attr}")).to_string(),
    });
    let Value::Object(mut out) = base else {
        return Ok(Value::Null);
    };
    match (cast, col.ty) {
        (Some("Microsoft.Dynamics.CRM.PicklistAttributeMetadata"), ColumnType::Choice) => {
            let values: Vec<i32> = match attr.as_str() {
                "msdyn_source_crm" => rules.choice_values.clone(),
                "statecode" => vec![0, 1],
                "statuscode" => vec![1, 2],
                _ => Vec::new(),
            };
            let options: Vec<Value> = values
                .iter()
                .map(|v| {
                    // ServiceNow = 2 and Zendesk = 3 are what Microsoft's connector flows write.
                    let text = match (attr.as_str(), v) {
                        ("msdyn_source_crm", 2) => "ServiceNow".to_string(),
                        ("msdyn_source_crm", 3) => "Zendesk".to_string(),
                        _ => format!("Option {v}"),
                    };
                    json!({"Value": v, "Label": label(&text)})
                })
                .collect();
            out.insert("@odata.context".into(), Value::from(format!(
                "{api_url}$metadata#EntityDefinitions('{name}')/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata(LogicalName,OptionSet())/$entity"
            )));
            out.insert("OptionSet".into(), json!({"Options": options}));
        }
        (
            Some(
                "Microsoft.Dynamics.CRM.StringAttributeMetadata"
                | "Microsoft.Dynamics.CRM.MemoAttributeMetadata",
            ),
            ColumnType::Text { max } | ColumnType::Memo { max },
        ) => {
            out.insert("MaxLength".into(), Value::from(max));
        }
        (None, ty) => {
            // AttributeTypeCode names as the metadata reference spells them.
            let name = match ty {
                ColumnType::Text { .. } => "String",
                ColumnType::Memo { .. } => "Memo",
                ColumnType::Integer { .. } => "Integer",
                ColumnType::Decimal => "Decimal",
                ColumnType::Money => "Money",
                ColumnType::Boolean => "Boolean",
                ColumnType::Date | ColumnType::Datetime => "DateTime",
                ColumnType::Choice => "Picklist",
            };
            out.insert("AttributeType".into(), Value::from(name));
        }
        (Some(c), _) => {
            return Err(ApiError::bad_request(format!(
                "The attribute '{attr}' is not of the type named by the cast '{c}'."
            )));
        }
    }
    Ok(Value::Object(out))
}
