//! Queue messages: versioned JSON envelopes for the three kinds of work, and their encoding
//! under SQS's size limit.
//!
//! Every body is `{"v": 1, "kind": ..., "correlation_id": ..., ...}`. A body that is not JSON, has
//! another version, or does not match its kind is a [`DecodeError`]: permanent, so the consumer
//! sends it to the DLQ with the reason instead of retrying it forever or dropping it.

use chrono::{DateTime, Utc};
use crm::Checkpoint;
use mapping::{Change, Entity, SourceId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use thiserror::Error;

/// The envelope version this build writes and reads.
pub const VERSION: u64 = 1;

/// SQS's maximum message size (body plus attributes), 256 KiB.
pub const SQS_MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Room left for message attributes (the DLQ reason, the correlation id): bodies are kept at or
/// under `SQS_MAX_MESSAGE_BYTES - ATTRIBUTE_RESERVE`.
pub const ATTRIBUTE_RESERVE: usize = 4 * 1024;

pub const MAX_BODY_BYTES: usize = SQS_MAX_MESSAGE_BYTES - ATTRIBUTE_RESERVE;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u64,
    /// Follows one unit of work (a webhook request, a sync job) through every queue.
    pub correlation_id: String,
    #[serde(flatten)]
    pub body: Message,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Message {
    /// For the upsert queue: mapped changes to apply.
    Changes(ChangeBatch),
    /// For the sync queue: read one page of an initial sync.
    SyncPage(SyncPageJob),
    /// For the sync queue: fetch records a notification named without their state.
    Fetch(FetchJob),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeBatch {
    /// How many times these changes were parked because a parent account was missing.
    #[serde(default)]
    pub attempt: u32,
    /// The changes are a sync page's snapshot of the CRM. Such a message is not ordered with the
    /// record's webhook changes (those are grouped per record), so when it comes back after a
    /// failure its content may be older than what was applied since: it is re-read instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_page: bool,
    pub changes: Vec<Change>,
}

/// Which pass of an initial sync a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// The walk over every record.
    Snapshot,
    /// Records modified since the job started, so the snapshot and concurrent webhooks converge.
    CatchUp { since: DateTime<Utc> },
}

/// Running counts of a sync job, carried from page to page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncCounts {
    pub pages: u64,
    pub read: u64,
    pub enqueued: u64,
    /// Records that could not be mapped (each logged with its reason).
    pub skipped: u64,
    /// Deletions the catch-up pass found and enqueued.
    #[serde(default)]
    pub deleted: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncPageJob {
    pub job_id: String,
    pub source: SourceId,
    /// Every entity the job walks, in order (accounts before contacts).
    pub entities: Vec<Entity>,
    /// The entity this page belongs to.
    pub entity: Entity,
    #[serde(flatten)]
    pub phase: Phase,
    pub started_at: DateTime<Utc>,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub checkpoint: Option<Checkpoint>,
    #[serde(default)]
    pub counts: SyncCounts,
    #[serde(default)]
    pub total: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FetchJob {
    pub source: SourceId,
    pub entity: Entity,
    pub ids: Vec<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("message body is not JSON: {0}")]
    NotJson(String),
    #[error("message has no envelope version `v`")]
    NoVersion,
    #[error("message version {0} is not supported (this build reads version {VERSION})")]
    UnknownVersion(u64),
    #[error("message does not match its kind: {0}")]
    Malformed(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error(
        "one change of {entity} {source_id} is {bytes} bytes encoded, over the {max}-byte message limit"
    )]
    ChangeTooLarge {
        entity: Entity,
        source_id: String,
        bytes: usize,
        max: usize,
    },
}

/// Reads a message body.
pub fn decode(body: &str) -> Result<Envelope, DecodeError> {
    /// The version and kind, skipping the rest unread.
    #[derive(Deserialize)]
    struct Head {
        #[serde(default)]
        v: serde_json::Value,
        #[serde(default)]
        kind: serde_json::Value,
    }
    let head: Head = serde_json::from_str(body).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    match head.v.as_u64() {
        None => return Err(DecodeError::NoVersion),
        Some(VERSION) => {}
        Some(other) => return Err(DecodeError::UnknownVersion(other)),
    }
    let malformed = |e: serde_json::Error| DecodeError::Malformed(e.to_string());
    if head.kind == "changes" {
        /// A `changes` message read straight into its fields: the generic path below buffers
        /// the whole body first (the envelope's flattened, tagged body), and changes messages
        /// are most of the traffic.
        #[derive(Deserialize)]
        struct Changes {
            correlation_id: String,
            #[serde(default)]
            attempt: u32,
            #[serde(default)]
            from_page: bool,
            changes: Vec<Change>,
        }
        let c: Changes = serde_json::from_str(body).map_err(malformed)?;
        return Ok(Envelope {
            v: VERSION,
            correlation_id: c.correlation_id,
            body: Message::Changes(ChangeBatch {
                attempt: c.attempt,
                from_page: c.from_page,
                changes: c.changes,
            }),
        });
    }
    serde_json::from_str(body).map_err(malformed)
}

/// Writes a message body.
pub fn encode(correlation_id: &str, body: Message) -> String {
    serde_json::to_string(&Envelope {
        v: VERSION,
        correlation_id: correlation_id.to_string(),
        body,
    })
    .expect("messages always serialise")
}

#[derive(Serialize)]
struct BatchOut<'a> {
    v: u64,
    correlation_id: &'a str,
    kind: &'static str,
    attempt: u32,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    from_page: bool,
    changes: &'a [&'a RawValue],
}

/// Encodes changes into as few `changes` messages as fit, each body at most `max_bytes`, keeping
/// their order. Each change is serialised once; sizes are exact, not estimated.
pub fn encode_changes(
    correlation_id: &str,
    attempt: u32,
    from_page: bool,
    changes: &[Change],
    max_bytes: usize,
) -> Result<Vec<String>, EncodeError> {
    let raws: Vec<Box<RawValue>> = changes
        .iter()
        .map(|c| serde_json::value::to_raw_value(c).expect("changes always serialise"))
        .collect();
    let overhead = serde_json::to_string(&BatchOut {
        v: VERSION,
        correlation_id,
        kind: "changes",
        attempt,
        from_page,
        changes: &[],
    })
    .expect("serialises")
    .len();
    let mut out = Vec::new();
    let mut current: Vec<&RawValue> = Vec::new();
    let mut size = overhead;
    let flush = |current: &mut Vec<&RawValue>, out: &mut Vec<String>| {
        if !current.is_empty() {
            out.push(
                serde_json::to_string(&BatchOut {
                    v: VERSION,
                    correlation_id,
                    kind: "changes",
                    attempt,
                    from_page,
                    changes: current,
                })
                .expect("serialises"),
            );
            current.clear();
        }
    };
    for (raw, change) in raws.iter().zip(changes) {
        let len = raw.get().len();
        if overhead + len > max_bytes {
            return Err(EncodeError::ChangeTooLarge {
                entity: change.entity,
                source_id: change.source_id.clone(),
                bytes: overhead + len,
                max: max_bytes,
            });
        }
        // A comma separates every change after the first.
        let added = len + usize::from(!current.is_empty());
        if size + added > max_bytes {
            flush(&mut current, &mut out);
            size = overhead;
        }
        size += len + usize::from(!current.is_empty());
        current.push(raw);
    }
    flush(&mut current, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mapping::{Operation, Parent};
    use serde_json::json;

    fn change(id: &str, name: &str) -> Change {
        Change {
            source: SourceId::new("s").unwrap(),
            entity: Entity::Account,
            source_id: id.into(),
            op: Operation::Upsert {
                fields: json!({"name": name}).as_object().unwrap().clone(),
            },
            modified_at: None,
            parent: Parent::Unchanged,
            record_url: None,
        }
    }

    #[test]
    fn round_trip_every_kind() {
        let msgs = [
            Message::Changes(ChangeBatch {
                from_page: true,
                attempt: 2,
                changes: vec![change("1", "a")],
            }),
            Message::SyncPage(SyncPageJob {
                job_id: "j".into(),
                source: SourceId::new("s").unwrap(),
                entities: vec![Entity::Contact],
                entity: Entity::Contact,
                phase: Phase::CatchUp {
                    since: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                },
                started_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                cursor: Some("c".into()),
                checkpoint: None,
                counts: SyncCounts::default(),
                total: Some(3),
            }),
            Message::Fetch(FetchJob {
                source: SourceId::new("s").unwrap(),
                entity: Entity::Account,
                ids: vec!["1".into()],
                reason: "r".into(),
            }),
        ];
        for m in msgs {
            let body = encode("corr", m.clone());
            let env = decode(&body).unwrap();
            assert_eq!(
                (env.v, env.correlation_id.as_str(), env.body),
                (1, "corr", m)
            );
        }
    }

    #[test]
    fn bad_messages_are_typed_errors() {
        assert!(matches!(decode("{"), Err(DecodeError::NotJson(_))));
        assert_eq!(decode(r#"{"kind":"changes"}"#), Err(DecodeError::NoVersion));
        assert_eq!(
            decode(r#"{"v":2,"kind":"changes","changes":[]}"#),
            Err(DecodeError::UnknownVersion(2))
        );
        assert!(matches!(
            decode(r#"{"v":1,"correlation_id":"c","kind":"changes"}"#),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            decode(r#"{"v":1,"correlation_id":"c","kind":"teleport"}"#),
            Err(DecodeError::Malformed(_))
        ));
    }

    /// The fast path for changes messages reads what the generic one reads, and refuses what it
    /// refuses.
    #[test]
    fn changes_messages_read_every_field_and_refuse_an_upsert_without_fields() {
        let mut deleted = change("2", "x");
        deleted.op = Operation::Delete;
        deleted.parent = Parent::None;
        deleted.record_url = Some("https://crm/2".into());
        deleted.modified_at = chrono::DateTime::from_timestamp(1_700_000_000, 0);
        let batch = ChangeBatch {
            attempt: 3,
            from_page: true,
            changes: vec![change("1", "abc"), deleted],
        };
        let body = encode("corr", Message::Changes(batch.clone()));
        assert_eq!(
            decode(&body).unwrap(),
            Envelope {
                v: VERSION,
                correlation_id: "corr".into(),
                body: Message::Changes(batch),
            }
        );
        let no_fields = r#"{"v":1,"correlation_id":"c","kind":"changes","changes":[
            {"source":"sf","entity":"account","source_id":"1","op":"upsert"}]}"#;
        match decode(no_fields) {
            Err(DecodeError::Malformed(e)) => assert!(e.contains("fields"), "{e}"),
            other => panic!("{other:?}"),
        }
        let unknown_op = r#"{"v":1,"correlation_id":"c","kind":"changes","changes":[
            {"source":"sf","entity":"account","source_id":"1","op":"merge"}]}"#;
        assert!(matches!(decode(unknown_op), Err(DecodeError::Malformed(_))));
        // A delete's stray fields are ignored, as before.
        let stray = r#"{"v":1,"correlation_id":"c","kind":"changes","changes":[
            {"source":"sf","entity":"account","source_id":"1","op":"delete","fields":{}}]}"#;
        assert!(decode(stray).is_ok());
    }

    #[test]
    fn split_exactly_at_the_boundary() {
        let changes: Vec<Change> = (0..10)
            .map(|i| change(&i.to_string(), "abcdefgh"))
            .collect();
        let one = encode_changes("c", 0, false, &changes, usize::MAX).unwrap();
        assert_eq!(one.len(), 1);
        let exact = one[0].len();
        // A limit of exactly the encoded size keeps one message; one byte less splits it.
        assert_eq!(encode_changes("c", 0, false, &changes, exact).unwrap(), one);
        let split = encode_changes("c", 0, false, &changes, exact - 1).unwrap();
        assert_eq!(split.len(), 2);
        let mut back = Vec::new();
        for body in &split {
            assert!(body.len() < exact);
            let Message::Changes(b) = decode(body).unwrap().body else {
                panic!()
            };
            back.extend(b.changes);
        }
        assert_eq!(back, changes);
    }

    #[test]
    fn real_limit_and_oversized_changes() {
        // ~1 KB records: a 2,000-record page becomes several messages, none over the limit.
        let big = "x".repeat(1000);
        let changes: Vec<Change> = (0..2000).map(|i| change(&i.to_string(), &big)).collect();
        let bodies = encode_changes("c", 0, false, &changes, MAX_BODY_BYTES).unwrap();
        assert!(bodies.len() >= 8);
        assert!(bodies.iter().all(|b| b.len() <= MAX_BODY_BYTES));
        let n: usize = bodies
            .iter()
            .map(|b| match decode(b).unwrap().body {
                Message::Changes(c) => c.changes.len(),
                _ => 0,
            })
            .sum();
        assert_eq!(n, 2000);
        let huge = change("h", &"y".repeat(MAX_BODY_BYTES));
        assert!(matches!(
            encode_changes("c", 0, false, &[huge], MAX_BODY_BYTES),
            Err(EncodeError::ChangeTooLarge { .. })
        ));
    }
}
