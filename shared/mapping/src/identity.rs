//! How a CRM record is identified in Dataverse, under the two strategies of DESIGN.md.
//!
//! - `deterministic-id`: the primary key is derived from (source, entity, source id), so a
//!   retried or replayed upsert hits the same row and no alternate key is needed. An id that
//!   already is a GUID passes through when the source allows it (ServiceNow `sys_id`).
//! - `alternate-key`: the row is addressed by (`msdyn_source_crm`, `msdyn_source_crm_id`), which
//!   needs an Active alternate key on those columns in the environment.
//!
//! Everything that ends up in a URL is escaped here, once, so no source id can change a
//! request's meaning.

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::KeyError;
use crate::model::{Entity, SourceId};

/// The namespace of crm-sync's UUIDv5 record ids (itself the UUIDv5 of a URL in the URL
/// namespace). Changing it would re-key every synced row: never do.
pub const NAMESPACE: Uuid = uuid::uuid!("bc62484e-b21e-55f0-865e-ff06c29c3dde");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentityStrategy {
    #[default]
    DeterministicId,
    AlternateKey,
}

/// The Dataverse primary key of a record under `deterministic-id`.
pub fn record_guid(source: &SourceId, entity: Entity, source_id: &str, passthrough: bool) -> Uuid {
    if passthrough && let Some(g) = as_guid(source_id) {
        return g;
    }
    // Source ids are restricted to [a-z0-9_-] and entity names are fixed, so `source:entity:` is
    // an unambiguous prefix and the id may contain anything.
    let mut name = String::with_capacity(source.as_str().len() + source_id.len() + 10);
    name.push_str(source.as_str());
    name.push(':');
    name.push_str(entity.as_str());
    name.push(':');
    name.push_str(source_id);
    Uuid::new_v5(&NAMESPACE, name.as_bytes())
}

/// A source id that is a GUID: 32 hex digits, with or without the usual hyphens or braces.
fn as_guid(s: &str) -> Option<Uuid> {
    let ok_len = matches!(s.len(), 32 | 36 | 38);
    if !ok_len {
        return None;
    }
    Uuid::try_parse(s).ok().filter(|u| !u.is_nil())
}

/// An OData string literal: single quotes, with `'` doubled.
pub fn odata_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push('\'');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// The inverse of [`odata_string`]; `None` when `s` is not exactly one literal.
pub fn parse_odata_string(s: &str) -> Option<String> {
    let inner = s.strip_prefix('\'')?.strip_suffix('\'')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\'' {
            // Inside a literal a quote only appears doubled.
            if chars.next() != Some('\'') {
                return None;
            }
        }
        out.push(c);
    }
    Some(out)
}

/// Characters that break GET, PATCH and upsert by alternate key, per Microsoft's "Define alternate
/// keys" page: `/ < > * % & : \ ? +`. Control characters are refused too.
pub const KEY_FORBIDDEN: [char; 10] = ['/', '<', '>', '*', '%', '&', ':', '\\', '?', '+'];

/// Longest alternate key value accepted: the key index holds at most 900 bytes over all its
/// columns and nvarchar takes 2 bytes a character, leaving room for the integer column.
pub const KEY_MAX_CHARS: usize = 440;

/// Checks that a source id can be an alternate key value.
pub fn check_key_value(s: &str) -> Result<(), KeyError> {
    if s.is_empty() {
        return Err(KeyError::Empty);
    }
    if let Some(c) = s
        .chars()
        .find(|c| KEY_FORBIDDEN.contains(c) || c.is_control())
    {
        return Err(KeyError::ForbiddenChar(c));
    }
    let n = s.chars().count();
    if n > KEY_MAX_CHARS {
        return Err(KeyError::TooLong(n, KEY_MAX_CHARS));
    }
    Ok(())
}

/// Bytes that must be percent-encoded inside a key segment of a URL path: controls, space and
/// everything with a meaning in URLs or in OData key syntax other than `'` `(` `)` `=` `,`,
/// which are needed literally.
const KEY_SEGMENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b']')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}')
    .add(b'&')
    .add(b'+')
    .add(b':')
    .add(b';')
    .add(b'@')
    .add(b'$')
    .add(b'*');

/// The key part of a record's URL, e.g. `accounts(0f8fad5b-d9cb-469f-a165-70867728950e)` or
/// `accounts(msdyn_source_crm=2,msdyn_source_crm_id='INC''01')`, percent-encoded.
pub fn entity_path(
    strategy: IdentityStrategy,
    source: &SourceId,
    crm_choice: i32,
    passthrough: bool,
    entity: Entity,
    source_id: &str,
) -> Result<String, KeyError> {
    let mut out = String::with_capacity(48);
    out.push_str(entity.entity_set());
    out.push('(');
    push_key_predicate(
        &mut out,
        strategy,
        source,
        crm_choice,
        passthrough,
        entity,
        source_id,
    )?;
    out.push(')');
    Ok(out)
}

fn push_key_predicate(
    out: &mut String,
    strategy: IdentityStrategy,
    source: &SourceId,
    crm_choice: i32,
    passthrough: bool,
    entity: Entity,
    source_id: &str,
) -> Result<(), KeyError> {
    match strategy {
        IdentityStrategy::DeterministicId => {
            if source_id.is_empty() {
                return Err(KeyError::Empty);
            }
            let mut buf = Uuid::encode_buffer();
            out.push_str(
                record_guid(source, entity, source_id, passthrough)
                    .hyphenated()
                    .encode_lower(&mut buf),
            );
        }
        IdentityStrategy::AlternateKey => {
            check_key_value(source_id)?;
            let literal = odata_string(source_id);
            out.push_str("msdyn_source_crm=");
            out.push_str(&crm_choice.to_string());
            out.push_str(",msdyn_source_crm_id=");
            out.extend(utf8_percent_encode(&literal, KEY_SEGMENT));
        }
    }
    Ok(())
}

/// Inverse of the alternate-key predicate, for tests and the emulator:
/// `msdyn_source_crm=2,msdyn_source_crm_id='X'` (already percent-decoded) → (2, X).
pub fn parse_alternate_key(pred: &str) -> Option<(i32, String)> {
    let rest = pred.strip_prefix("msdyn_source_crm=")?;
    let (choice, rest) = rest.split_once(",msdyn_source_crm_id=")?;
    Some((choice.parse().ok()?, parse_odata_string(rest)?))
}

/// Salesforce's 18-character case-safe id for a 15- or 18-character id. The three suffix
/// characters encode which of the 15 characters are upper case, five at a time.
pub fn salesforce_id18(id: &str) -> Result<String, String> {
    if !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err("a Salesforce id has only letters and digits".into());
    }
    match id.len() {
        18 => Ok(id.to_string()),
        15 => {
            const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
            let bytes = id.as_bytes();
            let mut out = id.to_string();
            for chunk in bytes.chunks(5) {
                let bits = chunk
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| b.is_ascii_uppercase())
                    .fold(0usize, |acc, (i, _)| acc | (1 << i));
                out.push(ALPHABET[bits] as char);
            }
            Ok(out)
        }
        n => Err(format!(
            "a Salesforce id has 15 or 18 characters, this one has {n}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use percent_encoding::percent_decode_str;

    fn src(s: &str) -> SourceId {
        SourceId::new(s).unwrap()
    }

    #[test]
    fn salesforce_ids_get_their_case_safe_suffix() {
        // Known pair from Salesforce's documentation of 15/18-character ids.
        assert_eq!(
            salesforce_id18("001D000000IRFma").unwrap(),
            "001D000000IRFmaIAH"
        );
        assert_eq!(
            salesforce_id18("001D000000IRFmaIAH").unwrap(),
            "001D000000IRFmaIAH"
        );
        assert!(salesforce_id18("001D00000").is_err());
        assert!(salesforce_id18("001D000000IRF-a").is_err());
    }

    #[test]
    fn servicenow_sys_ids_pass_through_as_guids() {
        let g = record_guid(
            &src("sn"),
            Entity::Account,
            "04ce72c9c0a8016600b5b7f75ac67b5b",
            true,
        );
        assert_eq!(g.to_string(), "04ce72c9-c0a8-0166-00b5-b7f75ac67b5b");
        let h = record_guid(
            &src("sn"),
            Entity::Account,
            "04ce72c9c0a8016600b5b7f75ac67b5b",
            false,
        );
        assert_ne!(g, h);
        assert_eq!(h.get_version_num(), 5);
    }

    #[test]
    fn alternate_key_paths_escape_quotes_and_url_characters() {
        let p = entity_path(
            IdentityStrategy::AlternateKey,
            &src("s"),
            2,
            false,
            Entity::Account,
            "O'Brien #1",
        )
        .unwrap();
        assert_eq!(
            p,
            "accounts(msdyn_source_crm=2,msdyn_source_crm_id='O''Brien%20%231')"
        );
        let decoded = percent_decode_str(&p).decode_utf8().unwrap();
        let inner = decoded
            .strip_prefix("accounts(")
            .unwrap()
            .strip_suffix(')')
            .unwrap();
        assert_eq!(
            parse_alternate_key(inner),
            Some((2, "O'Brien #1".to_string()))
        );
        for bad in ["a/b", "50%", "a+b", "x:y", "q?", ""] {
            assert!(
                entity_path(
                    IdentityStrategy::AlternateKey,
                    &src("s"),
                    2,
                    false,
                    Entity::Account,
                    bad
                )
                .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn odata_literals_round_trip() {
        for s in ["", "'", "''", "a'b", "ünï'cødé", "'lead", "trail'"] {
            assert_eq!(parse_odata_string(&odata_string(s)).as_deref(), Some(s));
        }
        assert_eq!(parse_odata_string("'a'b'"), None);
        assert_eq!(parse_odata_string("a"), None);
    }
}
