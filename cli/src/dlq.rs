//! Dead letters, the pure part of `crm-sync dlq`: what a dead-lettered message says about
//! itself (kind, correlation id, source, entity, records, why it failed), which messages a
//! replay selects, and the message a replay sends back to the queue it came from. Reading and
//! writing the queues (the state file, SQS) is `dlq_cmd`'s job.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use pipeline::message::{self, ChangeBatch, Message};
use pipeline::queue::{ERROR_ATTRIBUTE, OutMessage};
use pipeline::sync::digest;

/// One message of a DLQ, however it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Letter {
    pub id: String,
    /// The DLQ's name.
    pub dlq: String,
    /// The queue a replay sends it to (the DLQ's source queue), when known.
    pub origin: Option<String>,
    pub body: String,
    pub attributes: BTreeMap<String, String>,
    /// A FIFO message's group.
    pub group_id: Option<String>,
    /// Receives before it reached the DLQ (this inspection's own receive not counted).
    pub receive_count: u32,
    /// When it was sent (unix ms), if known.
    pub sent_at_ms: Option<i64>,
}

/// What a listing shows of a letter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    pub id: String,
    pub dlq: String,
    pub origin: Option<String>,
    pub reason: String,
    /// changes, sync_page, fetch, webhook_items (a webhook's unmappable items), or unreadable.
    pub kind: String,
    pub correlation_id: Option<String>,
    pub source: Option<String>,
    pub entity: Option<String>,
    /// The CRM ids of the records it is about, if it names them.
    pub records: Vec<String>,
    pub receive_count: u32,
    pub age_secs: Option<u64>,
}

/// Why a letter is in the DLQ: the reason the code kept with it, or, for a message the queue
/// redrove by itself, how many receives it failed.
pub fn reason(l: &Letter) -> String {
    match l.attributes.get(ERROR_ATTRIBUTE) {
        Some(r) => r.clone(),
        None => format!(
            "reason not recorded (redriven after {} receives)",
            l.receive_count
        ),
    }
}

/// The listing row of a letter, its age taken at `now_ms`.
pub fn row(l: &Letter, now_ms: i64) -> Row {
    let mut r = Row {
        id: l.id.clone(),
        dlq: l.dlq.clone(),
        origin: l.origin.clone(),
        reason: reason(l),
        kind: "unreadable".into(),
        correlation_id: None,
        source: None,
        entity: None,
        records: Vec::new(),
        receive_count: l.receive_count,
        age_secs: l
            .sent_at_ms
            .map(|t| (now_ms.saturating_sub(t).max(0) / 1000) as u64),
    };
    match message::decode(&l.body) {
        Ok(env) => {
            r.correlation_id = Some(env.correlation_id);
            match env.body {
                Message::Changes(b) => {
                    r.kind = "changes".into();
                    r.source = joined(b.changes.iter().map(|c| c.source.to_string()));
                    r.entity = joined(b.changes.iter().map(|c| c.entity.to_string()));
                    r.records = b.changes.iter().map(|c| c.source_id.clone()).collect();
                }
                Message::SyncPage(job) => {
                    r.kind = "sync_page".into();
                    r.source = Some(job.source.to_string());
                    r.entity = Some(job.entity.to_string());
                }
                Message::Fetch(job) => {
                    r.kind = "fetch".into();
                    r.source = Some(job.source.to_string());
                    r.entity = Some(job.entity.to_string());
                    r.records = job.ids;
                }
            }
        }
        Err(_) => {
            // The webhook's report of notification items it could not map (webhook.rs).
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&l.body)
                && v.get("failures").is_some()
            {
                r.kind = "webhook_items".into();
                r.source = v["source"].as_str().map(str::to_string);
                r.correlation_id = v["correlation_id"].as_str().map(str::to_string);
            }
        }
    }
    r
}

/// The distinct values, comma-separated; `None` if there are none.
fn joined(values: impl Iterator<Item = String>) -> Option<String> {
    let mut v: Vec<String> = values.collect();
    v.sort();
    v.dedup();
    (!v.is_empty()).then(|| v.join(","))
}

impl fmt::Display for Row {
    /// One line: id, origin, receives, age, kind, correlation, source/entity/records, reason.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}  from {}  receives {}  age {}  {}",
            self.id,
            self.origin.as_deref().unwrap_or("?"),
            self.receive_count,
            self.age_secs
                .map(|s| humanize(Duration::from_secs(s)))
                .unwrap_or_else(|| "?".into()),
            self.kind,
        )?;
        if let Some(c) = &self.correlation_id {
            write!(f, "  correlation {c}")?;
        }
        if let Some(s) = &self.source {
            write!(f, "  source {s}")?;
        }
        if let Some(e) = &self.entity {
            write!(f, "  entity {e}")?;
        }
        if !self.records.is_empty() {
            let shown: Vec<&str> = self.records.iter().take(5).map(String::as_str).collect();
            let more = self.records.len().saturating_sub(shown.len());
            write!(f, "  records {}", shown.join(","))?;
            if more > 0 {
                write!(f, " (+{more})")?;
            }
        }
        write!(f, "\n    reason: {}", self.reason)
    }
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// Which letters a replay takes. Criteria combine: a letter must meet every one given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub all: bool,
    pub ids: Vec<String>,
    pub error_contains: Option<String>,
    pub source: Option<String>,
}

impl Selection {
    /// Whether it says anything: a replay with no criterion at all is refused rather than taken
    /// to mean everything.
    pub fn is_empty(&self) -> bool {
        !self.all && self.ids.is_empty() && self.error_contains.is_none() && self.source.is_none()
    }

    pub fn matches(&self, r: &Row) -> bool {
        if self.is_empty() {
            return false;
        }
        (self.ids.is_empty() || self.ids.contains(&r.id))
            && self
                .error_contains
                .as_ref()
                .is_none_or(|t| r.reason.to_lowercase().contains(&t.to_lowercase()))
            && self.source.as_ref().is_none_or(|s| {
                r.source
                    .as_deref()
                    .is_some_and(|rs| rs.split(',').any(|x| x == s))
            })
    }
}

/// What a queue takes: the upsert (and retry) queues take changes, the sync queue page and
/// fetch jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Upsert,
    Sync,
}

impl Role {
    /// A queue's role by its name, as the template names them (`<stack>-sync.fifo`,
    /// `<stack>-upsert.fifo`, `<stack>-retry`) and the state file (`sync`, `upsert`).
    pub fn of_queue(name: &str) -> Role {
        let base = name.strip_suffix(".fifo").unwrap_or(name);
        if base == "sync" || base.ends_with("-sync") {
            Role::Sync
        } else {
            Role::Upsert
        }
    }
}

/// The message a replay sends for `l` to a queue of `role`: the same work as a fresh attempt
/// (parking count reset, no error attribute), in its original FIFO group (or the group the
/// pipeline gives such work), with a new deduplication id so the queue does not drop it as a
/// repeat of the original. A message that is not work for that queue is refused with why.
pub fn replay_message(l: &Letter, role: Role) -> Result<OutMessage, String> {
    let env = message::decode(&l.body).map_err(|e| {
        format!("not a pipeline message, so there is nothing to replay it to ({e}); see `crm-sync dlq show`")
    })?;
    let (body, natural_group) = match (env.body, role) {
        (Message::Changes(b), Role::Upsert) => {
            let group = match b.changes.as_slice() {
                [one] => Some(digest(&one.key().to_string())),
                _ => None,
            };
            let body = message::encode(
                &env.correlation_id,
                Message::Changes(ChangeBatch { attempt: 0, ..b }),
            );
            (body, group)
        }
        (Message::SyncPage(job), Role::Sync) => {
            let group = digest(&job.job_id);
            (l.body.clone(), Some(group))
        }
        (Message::Fetch(job), Role::Sync) => {
            let group = digest(&format!("{}:{}", job.source, job.entity));
            (l.body.clone(), Some(group))
        }
        (other, role) => {
            return Err(format!(
                "a {} message does not belong on the {} queue",
                match other {
                    Message::Changes(_) => "changes",
                    Message::SyncPage(_) => "sync page",
                    Message::Fetch(_) => "fetch",
                },
                match role {
                    Role::Upsert => "upsert",
                    Role::Sync => "sync",
                }
            ));
        }
    };
    let mut attributes = l.attributes.clone();
    attributes.remove(ERROR_ATTRIBUTE);
    Ok(OutMessage {
        body,
        // Dead letters the code wrote itself went to the FIFO DLQ in SQS's one `default` group.
        group_id: l
            .group_id
            .clone()
            .filter(|g| g != "default")
            .or(natural_group),
        dedup_id: Some(digest(&uuid::Uuid::new_v4().to_string())),
        delay: Duration::ZERO,
        attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use mapping::{Change, Entity, Operation, Parent, SourceId};

    fn change(id: &str) -> Change {
        Change {
            source: SourceId::new("sf").unwrap(),
            entity: Entity::Contact,
            source_id: id.into(),
            op: Operation::Delete,
            modified_at: Some(chrono::Utc.timestamp_opt(1_700_000_000, 0).unwrap()),
            parent: Parent::Unchanged,
            record_url: None,
        }
    }

    fn letter(body: String, error: Option<&str>) -> Letter {
        let mut attributes = BTreeMap::new();
        if let Some(e) = error {
            attributes.insert(ERROR_ATTRIBUTE.to_string(), e.to_string());
        }
        attributes.insert("other".into(), "kept".into());
        Letter {
            id: "upsert-dlq-7".into(),
            dlq: "upsert-dlq".into(),
            origin: Some("upsert".into()),
            body,
            attributes,
            group_id: None,
            receive_count: 10,
            sent_at_ms: Some(1_000),
        }
    }

    fn changes(ids: &[&str], attempt: u32) -> String {
        let cs: Vec<Change> = ids.iter().map(|i| change(i)).collect();
        message::encode(
            "corr-1",
            Message::Changes(ChangeBatch {
                attempt,
                from_page: false,
                changes: cs,
            }),
        )
    }

    #[test]
    fn a_row_says_what_the_envelope_says_and_why() {
        let r = row(
            &letter(changes(&["003A", "003B"], 2), Some("HTTP 400")),
            61_000,
        );
        assert_eq!(r.kind, "changes");
        assert_eq!(r.correlation_id.as_deref(), Some("corr-1"));
        assert_eq!(r.source.as_deref(), Some("sf"));
        assert_eq!(r.entity.as_deref(), Some("contact"));
        assert_eq!(r.records, ["003A", "003B"]);
        assert_eq!((r.reason.as_str(), r.age_secs), ("HTTP 400", Some(60)));
        let line = r.to_string();
        assert!(
            line.contains("age 1m") && line.contains("records 003A,003B"),
            "{line}"
        );

        let bare = row(&letter(changes(&["003A"], 0), None), 0);
        assert_eq!(
            bare.reason,
            "reason not recorded (redriven after 10 receives)"
        );

        let report = serde_json::json!({"source": "hs", "correlation_id": "c", "failures": []});
        let w = row(&letter(report.to_string(), Some("1 item")), 0);
        assert_eq!(
            (w.kind.as_str(), w.source.as_deref()),
            ("webhook_items", Some("hs"))
        );
        assert_eq!(row(&letter("garbage".into(), None), 0).kind, "unreadable");
    }

    #[test]
    fn selection_criteria_combine_and_an_empty_one_selects_nothing() {
        let r = row(
            &letter(
                changes(&["003A"], 0),
                Some("Dataverse 503 Service Unavailable"),
            ),
            0,
        );
        assert!(!Selection::default().matches(&r));
        let all = Selection {
            all: true,
            ..Selection::default()
        };
        assert!(all.matches(&r));
        let by = |ids: &[&str], err: Option<&str>, src: Option<&str>| Selection {
            all: false,
            ids: ids.iter().map(|s| s.to_string()).collect(),
            error_contains: err.map(str::to_string),
            source: src.map(str::to_string),
        };
        assert!(by(&["upsert-dlq-7"], None, None).matches(&r));
        assert!(!by(&["upsert-dlq-8"], None, None).matches(&r));
        assert!(by(&[], Some("service unavailable"), None).matches(&r));
        assert!(!by(&[], Some("400"), None).matches(&r));
        assert!(by(&[], Some("503"), Some("sf")).matches(&r));
        assert!(!by(&[], Some("503"), Some("hs")).matches(&r));
    }

    #[test]
    fn a_replay_is_a_fresh_attempt_in_the_original_group_with_a_new_dedup_id() {
        let mut l = letter(changes(&["003A"], 4), Some("gave up"));
        l.group_id = Some("g1".into());
        let a = replay_message(&l, Role::Upsert).unwrap();
        let b = replay_message(&l, Role::Upsert).unwrap();
        assert_eq!(a.group_id.as_deref(), Some("g1"));
        assert_ne!(a.dedup_id, b.dedup_id);
        assert!(!a.attributes.contains_key(ERROR_ATTRIBUTE));
        assert_eq!(a.attributes["other"], "kept");
        let Message::Changes(batch) = message::decode(&a.body).unwrap().body else {
            panic!("not changes")
        };
        assert_eq!((batch.attempt, batch.changes.len()), (0, 1));

        // The code's own dead letters sat in SQS's `default` group: the record's group instead.
        l.group_id = Some("default".into());
        let c = replay_message(&l, Role::Upsert).unwrap();
        assert_eq!(c.group_id, Some(digest(&change("003A").key().to_string())));

        // Work for another queue, or no work at all, is refused.
        assert!(
            replay_message(&l, Role::Sync)
                .unwrap_err()
                .contains("does not belong")
        );
        let report = letter("{\"failures\": []}".into(), Some("x"));
        assert!(replay_message(&report, Role::Upsert).is_err());
    }

    #[test]
    fn queue_roles_follow_the_template_names() {
        assert_eq!(Role::of_queue("crm-sync-sync.fifo"), Role::Sync);
        assert_eq!(Role::of_queue("sync"), Role::Sync);
        assert_eq!(Role::of_queue("crm-sync-upsert.fifo"), Role::Upsert);
        assert_eq!(Role::of_queue("crm-sync-retry"), Role::Upsert);
        assert_eq!(Role::of_queue("upsert"), Role::Upsert);
    }
}
