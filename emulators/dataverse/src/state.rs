//! Rows of account and contact, and every write rule: column validation against the catalogue
//! (unknown property, MaxLength, type, option set), `@odata.bind` lookups, alternate-key
//! addressing and uniqueness, and upsert with conditional headers ("Use Upsert to Create or
//! Update a record", "Perform conditional operations using the Web API").
//! The store is plain data (Clone) so a change set or bulk request can snapshot and roll back.

use std::collections::BTreeMap;

use chrono::{NaiveDate, SecondsFormat, Utc};
use http::StatusCode;
use mapping::columns::{ColumnType, dataverse_len};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::config::KeyStatus;
use crate::error::ApiError;
use crate::keys::{Literal, RecordKey, parse_key, parse_segment};
use crate::schema::Table;

/// The alternate key's columns.
pub const KEY_COLUMNS: [&str; 2] = ["msdyn_source_crm", "msdyn_source_crm_id"];

/// One stored row.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Stored columns, lookups as `_x_value`.
    pub cols: Map<String, Value>,
}

/// Configuration the write rules depend on.
#[derive(Debug, Clone)]
pub struct Rules {
    pub alternate_key: Option<KeyStatus>,
    pub choice_values: Vec<i32>,
    pub privileges: Vec<String>,
    pub attributes: std::collections::BTreeMap<(String, String), crate::config::AttributeChange>,
    /// Keys created through the API, per table: status and the system job building the index.
    pub key_by_table: std::collections::BTreeMap<String, (KeyStatus, uuid::Uuid)>,
}

impl Rules {
    /// The alternate key's status on a table: configured for every table, or created on it.
    pub fn key_status(&self, t: Table) -> Option<KeyStatus> {
        self.key_by_table
            .get(t.logical_name())
            .map(|(s, _)| *s)
            .or(self.alternate_key)
    }
}

impl Rules {
    /// A column as this org has it: the documented one with the org's customisations, so
    /// writes and metadata agree on what exists and how long a value may be.
    pub fn column(&self, t: Table, name: &str) -> Option<mapping::columns::Column> {
        use crate::config::AttributeChange;
        let mut col = t.column(name)?;
        match self
            .attributes
            .get(&(t.logical_name().to_string(), name.to_string()))
        {
            Some(AttributeChange::Missing) => return None,
            Some(AttributeChange::MaxLength(n)) => {
                if let ColumnType::Text { max } | ColumnType::Memo { max } = &mut col.ty {
                    *max = *n;
                }
            }
            None => {}
        }
        Some(col)
    }

    /// Whether `name` can be selected, filtered or ordered on: a readable column of the table
    /// that this org has not removed (Dataverse answers an unknown property with 400, "Could not
    /// find a property named …", whether in a write or in a query).
    pub fn readable(&self, t: Table, name: &str) -> bool {
        use crate::config::AttributeChange;
        t.readable(name)
            && !matches!(
                self.attributes
                    .get(&(t.logical_name().to_string(), name.to_string())),
                Some(AttributeChange::Missing)
            )
    }
}

/// All rows of both tables.
#[derive(Debug, Clone, Default)]
pub struct Store {
    tables: BTreeMap<Table, BTreeMap<Uuid, Row>>,
    version: u64,
}

/// Conditional headers of a PATCH.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    None,
    /// `If-Match: *`: update only.
    MatchAny,
    /// `If-Match: W/"n"`: update only that version.
    MatchEtag(String),
    /// `If-None-Match: *`: create only.
    NoneMatchAny,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Created(Uuid),
    Updated(Uuid),
}

impl Outcome {
    pub fn id(self) -> Uuid {
        match self {
            Outcome::Created(id) | Outcome::Updated(id) => id,
        }
    }
}

/// A validated body: column values and lookups to set.
#[derive(Debug, Default)]
struct Changes {
    cols: Map<String, Value>,
    /// (`_x_value`, target) where None clears the lookup.
    lookups: Vec<(String, Option<Uuid>)>,
    body_id: Option<Uuid>,
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Store {
    pub fn table(&self, t: Table) -> impl Iterator<Item = (&Uuid, &Row)> {
        self.tables.get(&t).into_iter().flat_map(|m| m.iter())
    }

    pub fn get(&self, t: Table, id: &Uuid) -> Option<&Row> {
        self.tables.get(&t).and_then(|m| m.get(id))
    }

    fn find_by_key(&self, t: Table, source: i64, source_id: &str) -> Option<Uuid> {
        self.table(t).find_map(|(id, r)| {
            let s = r.cols.get(KEY_COLUMNS[0]).and_then(Value::as_i64);
            let i = r.cols.get(KEY_COLUMNS[1]).and_then(Value::as_str);
            (s == Some(source) && i.is_some_and(|i| i.eq_ignore_ascii_case(source_id)))
                .then_some(*id)
        })
    }

    /// Finds the row a key addresses. Alternate keys must be the defined key and Active
    /// ("Define alternate keys": the key can't be used until its index is Active).
    pub fn resolve(
        &self,
        t: Table,
        key: &RecordKey,
        rules: &Rules,
    ) -> Result<Option<Uuid>, ApiError> {
        match key {
            RecordKey::Id(id) => Ok(self.get(t, id).map(|_| *id)),
            RecordKey::Alternate(pairs) => {
                let (source, source_id) = alternate_values(t, pairs, rules)?;
                Ok(self.find_by_key(t, source, &source_id))
            }
        }
    }

    /// Error for a key that addresses nothing.
    pub fn missing(t: Table, key: &RecordKey) -> ApiError {
        match key {
            RecordKey::Id(id) => ApiError::does_not_exist(t.logical_name(), id),
            RecordKey::Alternate(_) => ApiError::no_record_for_key(t.logical_name()),
        }
    }

    /// PATCH `set(key)`: upsert, or update-only / create-only under a condition.
    pub fn upsert(
        &mut self,
        t: Table,
        key: &RecordKey,
        body: &Map<String, Value>,
        cond: &Condition,
        rules: &Rules,
    ) -> Result<Outcome, ApiError> {
        let existing = self.resolve(t, key, rules)?;
        let changes = self.prepare(t, body, rules)?;
        match (existing, cond) {
            (None, Condition::MatchAny | Condition::MatchEtag(_)) => {
                return Err(Self::missing(t, key));
            }
            (Some(_), Condition::NoneMatchAny) => {
                return Err(ApiError::duplicate(t.logical_name()));
            }
            (Some(id), Condition::MatchEtag(tag))
                if self.etag(t, &id).as_deref() != Some(tag.as_str()) =>
            {
                return Err(ApiError::etag_mismatch());
            }
            _ => {}
        }
        if let (RecordKey::Id(url_id), Some(body_id)) = (key, changes.body_id)
            && *url_id != body_id
        {
            return Err(ApiError::bad_request(format!(
                "The value of the primary key '{}' in the body ({body_id}) does not match the key in the URL ({url_id}).",
                t.primary_key()
            )));
        }
        match existing {
            Some(id) => {
                // On update, key values in the body are ignored: the URL identifies the row
                // ("Use Upsert": key attributes are removed from the update).
                let mut changes = changes;
                if matches!(key, RecordKey::Alternate(_)) {
                    for k in KEY_COLUMNS {
                        changes.cols.remove(k);
                    }
                }
                self.apply(t, id, changes, false, rules)?;
                Ok(Outcome::Updated(id))
            }
            None => {
                let mut changes = changes;
                let id = match key {
                    RecordKey::Id(id) => *id,
                    RecordKey::Alternate(pairs) => {
                        let (source, source_id) = alternate_values(t, pairs, rules)?;
                        // URL key values are the default; body values win on create even if
                        // different ("Use Upsert to Create or Update a record").
                        changes
                            .cols
                            .entry(KEY_COLUMNS[0])
                            .or_insert(Value::from(source));
                        changes
                            .cols
                            .entry(KEY_COLUMNS[1])
                            .or_insert(Value::from(source_id));
                        changes.body_id.unwrap_or_else(Uuid::new_v4)
                    }
                };
                if self.get(t, &id).is_some() {
                    return Err(ApiError::duplicate(t.logical_name()));
                }
                self.apply(t, id, changes, true, rules)?;
                Ok(Outcome::Created(id))
            }
        }
    }

    /// POST `set`: create; the body may carry the primary key.
    pub fn create(
        &mut self,
        t: Table,
        body: &Map<String, Value>,
        rules: &Rules,
    ) -> Result<Uuid, ApiError> {
        let changes = self.prepare(t, body, rules)?;
        let id = changes.body_id.unwrap_or_else(Uuid::new_v4);
        if self.get(t, &id).is_some() {
            return Err(ApiError::duplicate(t.logical_name()));
        }
        self.apply(t, id, changes, true, rules)?;
        Ok(id)
    }

    /// Update of an existing row by id (UpdateMultiple); missing → 404.
    pub fn update(
        &mut self,
        t: Table,
        id: Uuid,
        body: &Map<String, Value>,
        rules: &Rules,
    ) -> Result<(), ApiError> {
        if self.get(t, &id).is_none() {
            return Err(ApiError::does_not_exist(t.logical_name(), &id));
        }
        let changes = self.prepare(t, body, rules)?;
        self.apply(t, id, changes, false, rules)
    }

    /// DELETE `set(key)`. Related contacts are left untouched: the cascade behaviour of
    /// contact_customer_accounts could not be confirmed from Microsoft's pages, so the emulator
    /// neither cascades nor removes links.
    pub fn delete(&mut self, t: Table, key: &RecordKey, rules: &Rules) -> Result<(), ApiError> {
        let id = self
            .resolve(t, key, rules)?
            .ok_or_else(|| Self::missing(t, key))?;
        if let Some(m) = self.tables.get_mut(&t) {
            m.remove(&id);
        }
        Ok(())
    }

    pub fn etag(&self, t: Table, id: &Uuid) -> Option<String> {
        self.get(t, id)
            .and_then(|r| r.cols.get("versionnumber"))
            .map(|v| format!("W/\"{v}\""))
    }

    fn apply(
        &mut self,
        t: Table,
        id: Uuid,
        changes: Changes,
        create: bool,
        rules: &Rules,
    ) -> Result<(), ApiError> {
        self.version += 1;
        let version = self.version;
        let mut row = if create {
            let mut cols = Map::new();
            cols.insert(t.primary_key().into(), Value::from(id.to_string()));
            cols.insert("statecode".into(), Value::from(0));
            cols.insert("statuscode".into(), Value::from(1));
            cols.insert("createdon".into(), Value::from(now()));
            Row { cols }
        } else {
            self.get(t, &id).cloned().unwrap_or_default()
        };
        for (k, v) in changes.cols {
            row.cols.insert(k, v);
        }
        for (k, v) in changes.lookups {
            row.cols
                .insert(k, v.map_or(Value::Null, |id| Value::from(id.to_string())));
        }
        row.cols.insert("modifiedon".into(), Value::from(now()));
        row.cols
            .insert("versionnumber".into(), Value::from(version));
        // Alternate key uniqueness is enforced only by an Active key's unique index.
        if rules.key_status(t) == Some(KeyStatus::Active)
            && let (Some(s), Some(i)) = (
                row.cols.get(KEY_COLUMNS[0]).and_then(Value::as_i64),
                row.cols.get(KEY_COLUMNS[1]).and_then(Value::as_str),
            )
            && self.find_by_key(t, s, i).is_some_and(|other| other != id)
        {
            return Err(ApiError::key_violated(t.logical_name()));
        }
        self.tables.entry(t).or_default().insert(id, row);
        Ok(())
    }

    /// Validates a request body against the table's schema.
    fn prepare(
        &self,
        t: Table,
        body: &Map<String, Value>,
        rules: &Rules,
    ) -> Result<Changes, ApiError> {
        let entity = t.logical_name();
        let mut ch = Changes::default();
        for (name, value) in body {
            if let Some(nav) = name.strip_suffix("@odata.bind") {
                let navigation = t.navigation(nav).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "An undeclared property '{nav}' which only has property annotations in the payload but no property value was found in the payload. In OData, only declared navigation properties and declared named streams can be represented as properties without values."
                    ))
                })?;
                let target = match value {
                    Value::Null => None,
                    Value::String(s) => Some(self.resolve_bind(navigation.target, s, rules)?),
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "The value of '{name}' must be a string URI or null."
                        )));
                    }
                };
                ch.lookups
                    .push((format!("_{}_value", navigation.lookup), target));
                continue;
            }
            if name.starts_with('@') {
                if name == "@odata.type"
                    && value.as_str() != Some(&format!("Microsoft.Dynamics.CRM.{entity}"))
                {
                    return Err(ApiError::bad_request(format!(
                        "The @odata.type '{value}' does not match the entity type 'Microsoft.Dynamics.CRM.{entity}'."
                    )));
                }
                // Other instance annotations (@odata.etag, @odata.id, …) carry no data.
                continue;
            }
            if name.contains('@') {
                // Property annotations (x@OData.Community.Display.V1.FormattedValue) are ignored.
                continue;
            }
            if name == t.primary_key() {
                let id = value
                    .as_str()
                    .and_then(|s| Uuid::parse_str(s).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "Cannot convert the literal '{value}' to the expected type 'Edm.Guid'."
                        ))
                    })?;
                ch.body_id = Some(id);
                continue;
            }
            if t.read_only(name) {
                continue;
            }
            let col = rules
                .column(t, name)
                .ok_or_else(|| ApiError::unknown_property(name, entity))?;
            validate(t, name, col.ty, value, rules)?;
            ch.cols.insert(name.clone(), value.clone());
        }
        Ok(ch)
    }

    /// Resolves an `@odata.bind` URI (`/accounts(<guid>)`, `accounts(<guid>)`, an absolute URL,
    /// or `/accounts(msdyn_source_crm=2,msdyn_source_crm_id='X')`).
    fn resolve_bind(&self, target: Table, uri: &str, rules: &Rules) -> Result<Uuid, ApiError> {
        let path = uri.rsplit_once("/api/data/v9.2/").map_or(uri, |(_, p)| p);
        let path = path.trim_start_matches('/');
        let path = crate::keys::decode(path)?;
        let (set, key) = parse_segment(&path)?;
        let bad = || {
            ApiError::bad_request(format!(
                "The URI '{uri}' is not valid for a binding to '{}'.",
                target.set_name()
            ))
        };
        if set != target.set_name() {
            return Err(bad());
        }
        let key = parse_key(key.ok_or_else(bad)?)?;
        self.resolve(target, &key, rules)?
            .ok_or_else(|| Self::missing(target, &key))
    }

    /// Row as returned to clients: `@odata.etag`, then `$select`ed columns (all known columns
    /// when there is no `$select`; unset ones are null as Dataverse returns them).
    pub fn represent(&self, t: Table, id: &Uuid, select: Option<&[String]>) -> Map<String, Value> {
        let mut out = Map::new();
        let Some(row) = self.get(t, id) else {
            return out;
        };
        if let Some(tag) = self.etag(t, id) {
            out.insert("@odata.etag".into(), Value::from(tag));
        }
        let names: Vec<String> = match select {
            Some(cols) => cols.to_vec(),
            None => {
                let mut all: Vec<String> = t.columns().into_keys().collect();
                all.extend(t.lookups().iter().map(|l| format!("_{l}_value")));
                all.extend(["createdon", "modifiedon", "versionnumber"].map(String::from));
                all
            }
        };
        for n in names {
            out.insert(n.clone(), row.cols.get(&n).cloned().unwrap_or(Value::Null));
        }
        out.insert(t.primary_key().into(), Value::from(id.to_string()));
        out
    }

    /// Stored columns of every row of a table, in key order.
    pub fn rows(&self, t: Table) -> Vec<Map<String, Value>> {
        self.table(t).map(|(_, r)| r.cols.clone()).collect()
    }
}

/// Checks the key pairs name exactly the Active alternate key and returns its values.
fn alternate_values(
    t: Table,
    pairs: &[(String, Literal)],
    rules: &Rules,
) -> Result<(i64, String), ApiError> {
    let undefined = || ApiError::key_not_defined(t.logical_name());
    if rules.key_status(t) != Some(KeyStatus::Active) || pairs.len() != 2 {
        return Err(undefined());
    }
    let mut source = None;
    let mut source_id = None;
    for (k, v) in pairs {
        match (k.as_str(), v) {
            ("msdyn_source_crm", Literal::Int(i)) => source = Some(*i),
            ("msdyn_source_crm_id", Literal::Str(s)) => source_id = Some(s.clone()),
            _ => return Err(undefined()),
        }
    }
    // "Define alternate keys to reference rows" (Power Apps docs): key values containing
    // / < > * % & : \ ? + are not supported by GET, PATCH or upsert by alternate key; the service
    // refuses such a request rather than address some row. Its own list, not the client's
    // (`mapping::identity::KEY_FORBIDDEN`), so a client that let one through is caught here.
    const UNSUPPORTED: [char; 10] = ['/', '<', '>', '*', '%', '&', ':', '\\', '?', '+'];
    if let Some(c) = source_id
        .as_deref()
        .and_then(|id| id.chars().find(|c| UNSUPPORTED.contains(c)))
    {
        return Err(ApiError::bad_request(format!(
            "The alternate key value contains the character '{c}', which is not supported in a key."
        )));
    }
    match (source, source_id) {
        (Some(s), Some(i)) => Ok((s, i)),
        _ => Err(undefined()),
    }
}

/// Type, length and range checks for one value.
fn validate(
    t: Table,
    name: &str,
    ty: ColumnType,
    value: &Value,
    rules: &Rules,
) -> Result<(), ApiError> {
    let entity = t.logical_name();
    if value.is_null() {
        return Ok(());
    }
    let convert = |edm: &str| {
        ApiError::bad_request(format!(
            "Cannot convert the literal '{value}' to the expected type '{edm}'."
        ))
    };
    match ty {
        ColumnType::Text { max } | ColumnType::Memo { max } => {
            let s = value.as_str().ok_or_else(|| convert("Edm.String"))?;
            if dataverse_len(s) > max as usize {
                return Err(ApiError::validation(format!(
                    "A validation error occurred. The length of the '{name}' attribute of the '{entity}' entity exceeded the maximum allowed length of '{max}'."
                )));
            }
        }
        ColumnType::Integer { min, max } => {
            let i = value.as_i64().ok_or_else(|| convert("Edm.Int32"))?;
            if i < min || i > max {
                return Err(ApiError::validation(format!(
                    "A validation error occurred. The value {i} of '{name}' on record of type '{entity}' is outside the valid range. Accepted range: {min} to {max}."
                )));
            }
        }
        ColumnType::Decimal | ColumnType::Money => {
            value.as_f64().ok_or_else(|| convert("Edm.Decimal"))?;
        }
        ColumnType::Boolean => {
            value.as_bool().ok_or_else(|| convert("Edm.Boolean"))?;
        }
        ColumnType::Date => {
            let s = value.as_str().ok_or_else(|| convert("Edm.Date"))?;
            NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| convert("Edm.Date"))?;
        }
        ColumnType::Datetime => {
            let s = value
                .as_str()
                .ok_or_else(|| convert("Edm.DateTimeOffset"))?;
            chrono::DateTime::parse_from_rfc3339(s).map_err(|_| convert("Edm.DateTimeOffset"))?;
        }
        ColumnType::Choice => {
            let v = value
                .as_i64()
                .and_then(|v| i32::try_from(v).ok())
                .ok_or_else(|| convert("Edm.Int32"))?;
            let allowed: Option<Vec<i32>> = match name {
                "msdyn_source_crm" => Some(rules.choice_values.clone()),
                "statecode" => Some(vec![0, 1]),
                "statuscode" => Some(vec![1, 2]),
                _ => None,
            };
            if let Some(allowed) = allowed
                && !allowed.contains(&v)
            {
                let list: Vec<String> = allowed.iter().map(i32::to_string).collect();
                return Err(ApiError::out_of_range(format!(
                    "A validation error occurred. The value {v} of '{name}' on record of type '{entity}' is outside the valid range. Accepted Values: {}",
                    list.join(",")
                )));
            }
        }
    }
    Ok(())
}

/// An HTTP status for an outcome of PATCH with `Prefer: return=representation`.
pub fn representation_status(o: Outcome) -> StatusCode {
    match o {
        Outcome::Created(_) => StatusCode::CREATED,
        Outcome::Updated(_) => StatusCode::OK,
    }
}
