//! A deployed stack's queues and run ledger, as `crm-sync serve --stack-outputs` takes them:
//! the stack's Outputs as `aws cloudformation describe-stacks --query 'Stacks[0].Outputs'`
//! prints them (a JSON array of `{"OutputKey", "OutputValue"}`), so an operator passes one file
//! instead of six URLs.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The template's Outputs serve needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackOutputs {
    pub sync: String,
    pub upsert: String,
    /// The standard queue parked contacts wait on (FIFO queues take no per-message delay).
    pub retry: String,
    pub sync_dlq: String,
    pub upsert_dlq: String,
    pub webhook_dlq: String,
    /// The run ledger's table, if the stack has one.
    pub jobs_table: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Output {
    output_key: String,
    output_value: String,
}

impl StackOutputs {
    /// Parses the Outputs JSON; an error names every output that is missing.
    pub fn parse(text: &str) -> Result<StackOutputs, String> {
        let outputs: Vec<Output> = serde_json::from_str(text).map_err(|e| {
            format!("not the JSON array `aws cloudformation describe-stacks --query 'Stacks[0].Outputs'` prints: {e}")
        })?;
        let by_key: BTreeMap<String, String> = outputs
            .into_iter()
            .map(|o| (o.output_key, o.output_value))
            .collect();
        let keys = [
            "SyncQueueUrl",
            "UpsertQueueUrl",
            "RetryQueueUrl",
            "SyncDlqUrl",
            "UpsertDlqUrl",
            "WebhookDlqUrl",
        ];
        let missing: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| by_key.get(*k).is_none_or(|v| v.is_empty()))
            .collect();
        if !missing.is_empty() {
            return Err(format!("missing outputs: {}", missing.join(", ")));
        }
        let get = |k: &str| by_key[k].clone();
        Ok(StackOutputs {
            sync: get("SyncQueueUrl"),
            upsert: get("UpsertQueueUrl"),
            retry: get("RetryQueueUrl"),
            sync_dlq: get("SyncDlqUrl"),
            upsert_dlq: get("UpsertDlqUrl"),
            webhook_dlq: get("WebhookDlqUrl"),
            jobs_table: by_key.get("JobsTableName").cloned(),
        })
    }

    pub fn load(path: &Path) -> anyhow::Result<StackOutputs> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        match StackOutputs::parse(&text) {
            Ok(o) => Ok(o),
            Err(e) => bail!("{}: {e}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"[
        {"OutputKey": "SyncQueueUrl", "OutputValue": "https://sqs/1/s-sync.fifo"},
        {"OutputKey": "UpsertQueueUrl", "OutputValue": "https://sqs/1/s-upsert.fifo"},
        {"OutputKey": "RetryQueueUrl", "OutputValue": "https://sqs/1/s-retry"},
        {"OutputKey": "SyncDlqUrl", "OutputValue": "https://sqs/1/s-sync-dlq.fifo"},
        {"OutputKey": "UpsertDlqUrl", "OutputValue": "https://sqs/1/s-upsert-dlq.fifo"},
        {"OutputKey": "WebhookDlqUrl", "OutputValue": "https://sqs/1/s-webhook-dlq"},
        {"OutputKey": "JobsTableName", "OutputValue": "s-jobs", "Description": "ledger"},
        {"OutputKey": "WebhookBaseUrl", "OutputValue": "https://api/webhooks/"}
    ]"#;

    #[test]
    fn the_outputs_serve_needs_are_read_by_key() {
        let o = StackOutputs::parse(FULL).unwrap();
        assert_eq!(o.upsert, "https://sqs/1/s-upsert.fifo");
        assert_eq!(o.retry, "https://sqs/1/s-retry");
        assert_eq!(o.jobs_table.as_deref(), Some("s-jobs"));
    }

    #[test]
    fn missing_outputs_are_named() {
        let text = r#"[{"OutputKey": "SyncQueueUrl", "OutputValue": "u"},
                       {"OutputKey": "RetryQueueUrl", "OutputValue": ""}]"#;
        let e = StackOutputs::parse(text).unwrap_err();
        assert_eq!(
            e,
            "missing outputs: UpsertQueueUrl, RetryQueueUrl, SyncDlqUrl, UpsertDlqUrl, WebhookDlqUrl"
        );
        assert!(
            StackOutputs::parse("{}")
                .unwrap_err()
                .contains("describe-stacks")
        );
    }
}
