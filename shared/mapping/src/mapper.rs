//! A source's mapping, validated and compiled: turns one CRM record into a [`Change`].
//!
//! Compiling checks the whole profile once (every column exists or is typed, required columns
//! are mapped, paths are JSON pointers, URL templates only use known placeholders), so mapping a
//! record can only fail because of that record, and its error names the column and the path.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::columns::{self, Column, ColumnType};
use crate::error::{ConfigError, MapError};
use crate::identity::salesforce_id18;
use crate::model::{Change, CrmKind, DeletePolicy, Entity, Operation, Parent, SourceId};
use crate::path::{CPath, PathTable, View};
use crate::profile::{ColumnSpec, EntityProfile, IdFormat, Invalid, Profile, Unmapped};
use crate::source::SourceConfig;
use crate::transform::{self, CoerceError, Overflow, coerce, parse_timestamp, scalar_string};

/// A compiled source mapping.
#[derive(Debug, Clone)]
pub struct Mapper {
    pub source: SourceId,
    pub kind: CrmKind,
    /// The `msdyn_source_crm` value.
    pub crm_choice: i32,
    pub guid_passthrough: bool,
    pub delete_policy: DeletePolicy,
    phone_country: Option<String>,
    id_format: IdFormat,
    account: CompiledEntity,
    contact: CompiledEntity,
}

#[derive(Debug, Clone)]
struct CompiledEntity {
    object: String,
    table: PathTable,
    id: Vec<CPath>,
    modified: Vec<CPath>,
    parent: Vec<CPath>,
    deleted: Option<(CPath, Value)>,
    record_url: Option<Vec<UrlPart>>,
    records: Option<String>,
    columns: Vec<CompiledColumn>,
}

/// A record URL template with everything but the id substituted at compile time.
#[derive(Debug, Clone)]
enum UrlPart {
    Text(String),
    Id,
}

#[derive(Debug, Clone)]
struct CompiledColumn {
    name: String,
    spec: ColumnSpec,
    paths: Vec<CPath>,
    join: Vec<CPath>,
    column: Column,
    /// Where the value comes from, for messages: `/Name`, `join(/A, /B)`, `constant`.
    from: String,
}

/// Something mapping noticed but did not refuse: a truncated value, a skipped invalid value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub column: String,
    pub message: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "column `{}`: {}", self.column, self.message)
    }
}

/// One record, mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    pub change: Change,
    pub warnings: Vec<Warning>,
}

impl Mapper {
    /// Validates a source's configuration against its kind's built-in profile.
    pub fn new(cfg: &SourceConfig) -> Result<Mapper, ConfigError> {
        let crm_choice = cfg.crm_choice.or(cfg.kind.documented_choice()).ok_or_else(|| {
            ConfigError::new(
                "crm_choice",
                format!(
                    "required for {} sources: the integer value of your environment's `msdyn_source_crm` choice for this CRM (read it with `crm-sync check`)",
                    cfg.kind
                ),
            )
        })?;
        let base_url = cfg.base_url.trim_end_matches('/').to_string();
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(ConfigError::new(
                "base_url",
                "must be an absolute http(s) URL such as https://acme.my.salesforce.com",
            ));
        }
        if let Some(cc) = &cfg.phone_country
            && (cc.is_empty() || cc.len() > 3 || !cc.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(ConfigError::new(
                "phone_country",
                "must be a country calling code of 1 to 3 digits, e.g. \"1\" or \"44\"",
            ));
        }
        let profile = Profile::builtin(cfg.kind).with_overrides(&cfg.mapping);
        let compile = |e: Entity| {
            compile_entity(e, profile.entity(e), &cfg.vars, &base_url)
                .map_err(|err| err.within(&format!("mapping.{e}")))
        };
        Ok(Mapper {
            source: cfg.id.clone(),
            kind: cfg.kind,
            crm_choice,
            guid_passthrough: cfg
                .guid_passthrough
                .unwrap_or(cfg.kind == CrmKind::Servicenow),
            delete_policy: cfg.delete_policy,
            phone_country: cfg.phone_country.clone(),
            id_format: profile.id_format,
            account: compile(Entity::Account)?,
            contact: compile(Entity::Contact)?,
        })
    }

    fn entity(&self, e: Entity) -> &CompiledEntity {
        match e {
            Entity::Account => &self.account,
            Entity::Contact => &self.contact,
        }
    }

    /// The CRM's name for an entity's object or table (`Account`, `customer_account`, ...).
    pub fn object_name(&self, e: Entity) -> &str {
        &self.entity(e).object
    }

    /// The entity whose object name is `object` (case-insensitive), if any.
    pub fn entity_for_object(&self, object: &str) -> Option<Entity> {
        Entity::ALL
            .into_iter()
            .find(|e| self.entity(*e).object.eq_ignore_ascii_case(object))
    }

    /// The Dataverse columns an entity's mapping fills, with the type and MaxLength it assumes
    /// (what `crm-sync check` compares with the org).
    pub fn columns(&self, e: Entity) -> Vec<(&str, Column)> {
        self.entity(e)
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.column))
            .collect()
    }

    /// The Dataverse columns an entity's mapping writes, in name order (what a reader of the
    /// rows selects to compare them with the CRM).
    pub fn column_names(&self, e: Entity) -> impl Iterator<Item = &str> {
        self.entity(e).columns.iter().map(|c| c.name.as_str())
    }

    /// JSON pointer to a page's records array, when the profile sets one.
    pub fn records_pointer(&self, e: Entity) -> Option<&str> {
        self.entity(e).records.as_deref()
    }

    /// The CRM fields an entity's mapping reads (first path segment of every pointer), so CRM
    /// clients can ask for exactly those.
    pub fn source_fields(&self, e: Entity) -> Vec<String> {
        let mut fields: Vec<String> = self
            .source_paths(e)
            .iter()
            .filter_map(|p| p.split('/').nth(1).map(crate::path::unescape))
            .collect();
        fields.sort();
        fields.dedup();
        fields
    }

    /// Every JSON pointer an entity's mapping reads, for CRMs whose records nest their fields
    /// (HubSpot's `/properties/...`), where the first segment says nothing.
    pub fn source_paths(&self, e: Entity) -> Vec<String> {
        let ent = self.entity(e);
        let mut paths: Vec<String> = ent
            .id
            .iter()
            .chain(&ent.modified)
            .chain(&ent.parent)
            .chain(ent.deleted.iter().map(|d| &d.0))
            .chain(
                ent.columns
                    .iter()
                    .flat_map(|c| c.paths.iter().chain(&c.join)),
            )
            .map(|p| p.text.clone())
            .collect();
        paths.sort();
        paths.dedup();
        paths
    }

    /// Canonicalises a record id (Salesforce 15 → 18 characters).
    pub fn normalise_id(&self, raw: &str) -> Result<String, String> {
        if raw.is_empty() {
            return Err("id is empty".into());
        }
        if raw.chars().any(char::is_control) {
            return Err("id contains control characters".into());
        }
        let id = match self.id_format {
            IdFormat::Plain => raw.to_string(),
            IdFormat::Salesforce => salesforce_id18(raw)?,
        };
        let max = columns::column(Entity::Account, "msdyn_source_crm_id")
            .and_then(|c| c.ty.max_length())
            .unwrap_or(100) as usize;
        if columns::dataverse_len(&id) > max {
            return Err(format!(
                "id is longer than msdyn_source_crm_id's {max} characters"
            ));
        }
        Ok(id)
    }

    /// Whether the record has a value at one of the profile's id paths.
    pub fn has_id(&self, entity: Entity, record: &Value) -> bool {
        self.entity(entity)
            .id
            .iter()
            .any(|p| lookup(record, &p.text).is_some_and(|v| !v.is_null()))
    }

    /// The record's id, from `id_override` (e.g. one of a change event's several record ids) or
    /// from the profile's id paths.
    pub fn record_id(
        &self,
        entity: Entity,
        record: &Value,
        id_override: Option<&str>,
    ) -> Result<String, MapError> {
        let view = self.entity(entity).table.view(record);
        self.record_id_in(entity, &view, id_override)
    }

    fn record_id_in(
        &self,
        entity: Entity,
        view: &View<'_>,
        id_override: Option<&str>,
    ) -> Result<String, MapError> {
        let ent = self.entity(entity);
        let raw = match id_override {
            Some(id) => id.to_string(),
            None => view
                .first(&ent.id)
                .and_then(|(v, _)| scalar_string(v))
                .filter(|s| !s.is_empty())
                .ok_or_else(|| MapError::MissingId {
                    entity,
                    paths: ent
                        .id
                        .iter()
                        .map(|p| p.text.as_str())
                        .collect::<Vec<_>>()
                        .join(" or "),
                })?,
        };
        self.normalise_id(&raw)
            .map_err(|reason| MapError::InvalidId {
                entity,
                id: printable_id(&raw),
                reason,
            })
    }

    /// The record's last-modified time, if the record carries a parseable one.
    pub fn modified_at(
        &self,
        entity: Entity,
        record: &Value,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        let ent = self.entity(entity);
        modified_in(ent, &ent.table.view(record))
    }

    /// Maps one CRM record to a change.
    pub fn map_record(
        &self,
        entity: Entity,
        record: &Value,
        id_override: Option<&str>,
    ) -> Result<Mapped, MapError> {
        if !record.is_object() {
            return Err(MapError::NotAnObject { entity });
        }
        let ent = self.entity(entity);
        let view = ent.table.view(record);
        let id = self.record_id_in(entity, &view, id_override)?;
        let modified_at = modified_in(ent, &view);
        let record_url = ent.record_url.as_ref().map(|t| fill_url(t, &id));
        let deleted = ent.deleted.as_ref().is_some_and(|(path, equals)| {
            view.get(path)
                .is_some_and(|v| v == equals || scalar_string(v) == scalar_string(equals))
        });
        let mut change = Change {
            source: self.source.clone(),
            entity,
            source_id: id.clone(),
            op: Operation::Delete,
            modified_at,
            parent: Parent::Unchanged,
            record_url,
        };
        if deleted {
            return Ok(Mapped {
                change,
                warnings: vec![],
            });
        }
        let mut warnings = Vec::new();
        // Columns are compiled in name order, so the map is built in one sorted bulk load.
        let mut values = Vec::with_capacity(ent.columns.len());
        for col in &ent.columns {
            if let Some(v) = self.map_column(entity, &id, col, &view, &mut warnings)? {
                values.push((col.name.clone(), v));
            }
        }
        let fields: Map<String, Value> = values.into_iter().collect();
        for col in ent.columns.iter().filter(|c| c.column.required) {
            if fields.get(&col.name).is_none_or(Value::is_null) {
                return Err(MapError::MissingRequired {
                    entity,
                    id,
                    column: col.name.clone(),
                    from: col.from.clone(),
                });
            }
        }
        if !ent.parent.is_empty() {
            change.parent = match view.first(&ent.parent) {
                None => Parent::Unchanged,
                Some((v, path)) => match scalar_string(v).filter(|s| !s.is_empty()) {
                    None => Parent::None,
                    Some(raw) => Parent::Account(self.normalise_id(&raw).map_err(|reason| {
                        MapError::InvalidValue {
                            entity,
                            id: id.clone(),
                            column: "parentcustomerid".into(),
                            from: path.text.clone(),
                            reason,
                        }
                    })?),
                },
            };
        }
        change.op = Operation::Upsert { fields };
        Ok(Mapped { change, warnings })
    }

    fn map_column(
        &self,
        entity: Entity,
        id: &str,
        col: &CompiledColumn,
        view: &View<'_>,
        warnings: &mut Vec<Warning>,
    ) -> Result<Option<Value>, MapError> {
        let spec = &col.spec;
        let fail = |reason: String| MapError::InvalidValue {
            entity,
            id: id.to_string(),
            column: col.name.clone(),
            from: col.from.clone(),
            reason,
        };
        let skip =
            |reason: String, warnings: &mut Vec<Warning>| -> Result<Option<Value>, MapError> {
                match spec.invalid {
                    Invalid::Skip => {
                        warnings.push(Warning {
                            column: col.name.clone(),
                            message: format!("value from {} {reason}; column left out", col.from),
                        });
                        Ok(None)
                    }
                    Invalid::Reject => Err(fail(reason)),
                }
            };

        let mut value = source_value(col, view);
        if value.as_deref().is_none_or(Value::is_null)
            && let Some(d) = &spec.default
        {
            value = Some(Cow::Borrowed(d));
        }
        let Some(value) = value else {
            return Ok(None);
        };
        if value.is_object() || value.is_array() {
            return skip(
                "is an object or a list, not a single value".into(),
                warnings,
            );
        }
        let mut value = value;
        if !value.is_null()
            && let Some(map) = &spec.map
        {
            let key = scalar_string(&value).unwrap_or_default();
            match map.get(&key) {
                Some(mapped) => value = Cow::Borrowed(mapped),
                None => match spec.unmapped {
                    Unmapped::Keep => {}
                    Unmapped::Null => value = Cow::Owned(Value::Null),
                    Unmapped::Skip => {
                        warnings.push(Warning {
                            column: col.name.clone(),
                            message: format!(
                                "value from {} is not in the value map; column left out",
                                col.from
                            ),
                        });
                        return Ok(None);
                    }
                    Unmapped::Reject => return Err(fail("value is not in the value map".into())),
                },
            }
        }
        let mut value = value.into_owned();
        if !spec.transforms.is_empty() && !value.is_null() {
            let mut s = match value {
                Value::String(s) => s,
                other => scalar_string(&other).unwrap_or_default(),
            };
            for t in &spec.transforms {
                if let Err(reason) = transform::apply(*t, &mut s, self.phone_country.as_deref()) {
                    return skip(reason, warnings);
                }
            }
            value = if s.is_empty() {
                spec.default.clone().unwrap_or(Value::Null)
            } else {
                Value::String(s)
            };
        }
        match coerce(value, col.column.ty, spec.overflow) {
            Ok(c) => {
                if let Some((len, max)) = c.truncated {
                    warnings.push(Warning {
                        column: col.name.clone(),
                        message: format!(
                            "value from {} truncated from {len} to {max} characters",
                            col.from
                        ),
                    });
                }
                Ok(Some(c.value))
            }
            Err(e @ CoerceError::TooLong { .. }) => Err(fail(e.to_string())),
            Err(CoerceError::Invalid(reason)) => skip(reason, warnings),
        }
    }
}

fn fill_url(parts: &[UrlPart], id: &str) -> String {
    let mut out = String::with_capacity(96);
    for p in parts {
        match p {
            UrlPart::Text(t) => out.push_str(t),
            UrlPart::Id => push_url_segment(&mut out, id),
        }
    }
    out
}

fn compile_url(
    template: &str,
    base_url: &str,
    object: &str,
    vars: &BTreeMap<String, String>,
) -> Vec<UrlPart> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        text.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let end = after.find('}').unwrap_or(after.len());
        match &after[..end] {
            "id" => {
                parts.push(UrlPart::Text(std::mem::take(&mut text)));
                parts.push(UrlPart::Id);
            }
            "base_url" => text.push_str(base_url),
            "object" => text.push_str(object),
            var => text.push_str(vars.get(var).map_or("", String::as_str)),
        }
        rest = after.get(end + 1..).unwrap_or("");
    }
    text.push_str(rest);
    parts.push(UrlPart::Text(text));
    parts
}

/// The record's raw value for a column: a constant, a join of several paths, or the first
/// present path. `None` means the record does not mention the field; `Some(Null)` means it is
/// empty (and the column is cleared).
fn source_value<'a>(col: &'a CompiledColumn, view: &View<'a>) -> Option<Cow<'a, Value>> {
    let spec = &col.spec;
    let v = if let Some(c) = &spec.value {
        Some(Cow::Borrowed(c))
    } else if !col.join.is_empty() {
        let mut present = false;
        let parts: Vec<String> = col
            .join
            .iter()
            .filter_map(|p| view.get(p))
            .inspect(|_| present = true)
            .filter_map(scalar_string)
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        present.then(|| {
            Cow::Owned(if parts.is_empty() {
                Value::Null
            } else {
                Value::String(parts.join(spec.separator.as_deref().unwrap_or(" ")))
            })
        })
    } else {
        view.first(&col.paths).map(|(v, _)| Cow::Borrowed(v))
    };
    v.map(|v| match v.as_ref() {
        Value::String(s) if s.trim().is_empty() => Cow::Owned(Value::Null),
        _ => v,
    })
}

fn modified_in(ent: &CompiledEntity, view: &View<'_>) -> Option<chrono::DateTime<chrono::Utc>> {
    ent.modified
        .iter()
        .filter_map(|p| view.get(p))
        .find_map(parse_timestamp)
}

/// Resolves a JSON pointer (RFC 6901) without allocating for plain tokens. An object with a
/// `value` key stands for that value: ServiceNow reference fields (`{link, value}`) and Pipedrive
/// v1 objects read as what they point to.
pub fn lookup<'a>(record: &'a Value, pointer: &str) -> Option<&'a Value> {
    let mut v = record;
    if !pointer.is_empty() {
        for token in pointer.strip_prefix('/')?.split('/') {
            let tok: std::borrow::Cow<str> = if token.contains('~') {
                crate::path::unescape(token).into()
            } else {
                token.into()
            };
            v = match v {
                Value::Object(m) => m.get(tok.as_ref())?,
                Value::Array(a) => {
                    if tok.len() > 1 && tok.starts_with('0') {
                        return None;
                    }
                    a.get(tok.parse::<usize>().ok()?)?
                }
                _ => return None,
            };
        }
    }
    match v {
        Value::Object(m) if m.contains_key("value") => m.get("value"),
        v => Some(v),
    }
}

/// An id as it may appear in an error: ids are not personal data, but a malformed one could be
/// anything, so it is cut short and stripped of control characters.
fn printable_id(raw: &str) -> String {
    let clean: String = raw.chars().filter(|c| !c.is_control()).take(64).collect();
    if raw.chars().count() > 64 {
        format!("{clean}…")
    } else {
        clean
    }
}

fn push_url_segment(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        out.push_str(s);
    } else {
        const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'_')
            .remove(b'.');
        out.extend(percent_encoding::utf8_percent_encode(s, SEGMENT));
    }
}

fn compile_entity(
    entity: Entity,
    p: &EntityProfile,
    vars: &BTreeMap<String, String>,
    base_url: &str,
) -> Result<CompiledEntity, ConfigError> {
    let paths =
        |key: &str, v: &Option<crate::profile::Paths>| -> Result<Vec<String>, ConfigError> {
            let list: Vec<String> = v
                .iter()
                .flat_map(|p| p.as_slice().iter().cloned())
                .collect();
            for path in &list {
                check_pointer(path).map_err(|m| ConfigError::new(key, m))?;
            }
            Ok(list)
        };
    let id = paths("id", &p.id)?;
    if id.is_empty() {
        return Err(ConfigError::new(
            "id",
            "no id path: set where the record's id is, e.g. id = \"/id\"",
        ));
    }
    let modified = paths("modified", &p.modified)?;
    let parent = paths("parent", &p.parent)?;
    if entity == Entity::Account && !parent.is_empty() {
        return Err(ConfigError::new(
            "parent",
            "only contacts have a parent account",
        ));
    }
    if let Some(d) = &p.deleted {
        check_pointer(&d.path).map_err(|m| ConfigError::new("deleted.path", m))?;
    }
    if let Some(r) = &p.records {
        check_pointer(r).map_err(|m| ConfigError::new("records", m))?;
    }
    if let Some(t) = &p.record_url {
        check_template(t, vars).map_err(|m| ConfigError::new("record_url", m))?;
    }
    let mut columns = Vec::new();
    for (name, spec) in &p.columns {
        columns.push(
            compile_column(entity, name, spec).map_err(|e| e.within(&format!("columns.{name}")))?,
        );
    }
    for (name, col) in columns::catalogue(entity) {
        if col.required && !p.columns.contains_key(name) {
            return Err(ConfigError::new(
                format!("columns.{name}"),
                format!(
                    "{entity} requires `{name}`: map it (e.g. {name} = \"/Name\") or give it a `default`"
                ),
            ));
        }
    }
    let object = p
        .object
        .clone()
        .unwrap_or_else(|| entity.as_str().to_string());
    // Every pointer is valid now: number their first tokens and compile them.
    let table = PathTable::new(
        id.iter()
            .chain(&modified)
            .chain(&parent)
            .chain(p.deleted.iter().map(|d| &d.path))
            .chain(columns.iter().flat_map(|c| {
                c.spec
                    .path
                    .iter()
                    .flat_map(|p| p.as_slice())
                    .chain(&c.spec.join)
            }))
            .map(String::as_str),
    );
    let compile = |list: &[String]| list.iter().map(|p| table.compile(p)).collect::<Vec<_>>();
    for c in &mut columns {
        c.paths = c
            .spec
            .path
            .as_ref()
            .map(|p| compile(p.as_slice()))
            .unwrap_or_default();
        c.join = compile(&c.spec.join);
    }
    Ok(CompiledEntity {
        record_url: p
            .record_url
            .as_ref()
            .map(|t| compile_url(t, base_url, &object, vars)),
        object,
        id: compile(&id),
        modified: compile(&modified),
        parent: compile(&parent),
        deleted: p
            .deleted
            .as_ref()
            .map(|d| (table.compile(&d.path), d.equals.clone())),
        records: p.records.clone(),
        columns,
        table,
    })
}

fn compile_column(
    entity: Entity,
    name: &str,
    spec: &ColumnSpec,
) -> Result<CompiledColumn, ConfigError> {
    if columns::RESERVED.contains(&name) || name.contains('@') {
        return Err(ConfigError::new(
            "",
            "crm-sync writes this column itself; it cannot be mapped",
        ));
    }
    let builtin = columns::column(entity, name);
    let column = match (builtin, &spec.column_type) {
        (Some(c), None) => Column {
            required: c.required || spec.required,
            ..c
        },
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "type",
                format!(
                    "`{name}` is a standard {entity} column; its type comes from the catalogue"
                ),
            ));
        }
        (None, None) => {
            return Err(ConfigError::new(
                "",
                format!(
                    "`{name}` is not a known {entity} column; for a custom column give its `type` (and `max_length` for text)"
                ),
            ));
        }
        (None, Some(t)) => {
            if !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                || !name.contains('_')
            {
                return Err(ConfigError::new(
                    "",
                    "a custom column's logical name is lower case with its publisher prefix, e.g. new_tier",
                ));
            }
            Column {
                ty: custom_type(t, spec)?,
                required: spec.required,
            }
        }
    };
    let sources = [
        spec.path.is_some(),
        !spec.join.is_empty(),
        spec.value.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if sources > 1 {
        return Err(ConfigError::new(
            "",
            "use only one of `path`, `join` and `value`",
        ));
    }
    if sources == 0 && spec.default.is_none() {
        return Err(ConfigError::new(
            "",
            "needs a `path`, `join`, `value` or `default`",
        ));
    }
    for p in spec
        .path
        .iter()
        .flat_map(|p| p.as_slice())
        .chain(&spec.join)
    {
        check_pointer(p).map_err(|m| ConfigError::new("path", m))?;
    }
    if spec.overflow == Overflow::Reject && column.ty.max_length().is_none() {
        return Err(ConfigError::new(
            "overflow",
            "only text columns have a length to overflow",
        ));
    }
    let from = if spec.value.is_some() {
        "a constant".to_string()
    } else if !spec.join.is_empty() {
        format!("join({})", spec.join.join(", "))
    } else if let Some(p) = &spec.path {
        p.as_slice().join(" or ")
    } else {
        "its default".to_string()
    };
    Ok(CompiledColumn {
        name: name.to_string(),
        spec: spec.clone(),
        paths: Vec::new(),
        join: Vec::new(),
        column,
        from,
    })
}

fn custom_type(t: &str, spec: &ColumnSpec) -> Result<ColumnType, ConfigError> {
    let need_len = || {
        spec.max_length
            .filter(|m| *m > 0)
            .ok_or_else(|| ConfigError::new("max_length", "required for text and memo columns"))
    };
    Ok(match t {
        "text" => ColumnType::Text { max: need_len()? },
        "memo" => ColumnType::Memo { max: need_len()? },
        "integer" => ColumnType::Integer {
            min: spec.min.unwrap_or(i32::MIN as i64),
            max: spec.max.unwrap_or(i32::MAX as i64),
        },
        "decimal" => ColumnType::Decimal,
        "money" => ColumnType::Money,
        "boolean" => ColumnType::Boolean,
        "date" => ColumnType::Date,
        "datetime" => ColumnType::Datetime,
        "choice" => ColumnType::Choice,
        other => {
            return Err(ConfigError::new(
                "type",
                format!(
                    "unknown column type `{other}`; expected text, memo, integer, decimal, money, boolean, date, datetime or choice"
                ),
            ));
        }
    })
}

fn check_pointer(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!(
            "`{p}` is not a JSON pointer (RFC 6901): it must start with `/`, e.g. \"/Name\""
        ));
    }
    Ok(())
}

fn check_template(t: &str, vars: &BTreeMap<String, String>) -> Result<(), String> {
    let mut rest = t;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in `{t}`"))?;
        let name = &after[..end];
        if !matches!(name, "base_url" | "id" | "object") && !vars.contains_key(name) {
            return Err(format!(
                "uses `{{{name}}}`, which is not base_url, id, object or one of the source's `vars`; add vars.{name} to the source"
            ));
        }
        rest = &after[end + 1..];
    }
    Ok(())
}
