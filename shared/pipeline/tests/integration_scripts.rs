//! The ServiceNow business rules in `integrations/servicenow` run unchanged under Node (with
//! stand-ins for the Glide APIs, `integrations/servicenow/test/harness.js`); the request each
//! one would send goes through `handle_request` with the same secret, and must be verified and
//! queued as the record's change. This checks the scripts' exact code, not a re-implementation
//! of their algorithm. (The Apex notifier cannot run outside Salesforce; its algorithm is the
//! contract's, which `webhook_requests.rs` covers.)

use std::process::Command;
use std::sync::Arc;

use dataverse::Secret;
use mapping::{CrmKind, IdentityStrategy, SourceConfig, SourceId};
use pipeline::sources::Sources;
use pipeline::webhook::{WebhookAuth, WebhookPorts, WebhookRequest, handle_request};
use pipeline::{MemoryQueue, MemoryQueueConfig, Queue};
use serde_json::{Value, json};

const SECRET: &str = "a shared secret with spaces & symbols é";
const NOW_MS: i64 = 1_700_000_000_000;

fn repo(path: &str) -> String {
    format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))
}

/// What the rule sends for `operation` on `record`.
fn run_rule(rule: &str, operation: &str, record: &Value) -> Value {
    let out = Command::new("node")
        .arg(repo("integrations/servicenow/test/harness.js"))
        .arg(repo(rule))
        .arg(operation)
        .arg(record.to_string())
        .arg(SECRET)
        .arg(NOW_MS.to_string())
        .output()
        .unwrap_or_else(|e| panic!("running node (needed to run the ServiceNow scripts): {e}"));
    assert!(
        out.status.success(),
        "{rule}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the harness prints the request as JSON")
}

#[tokio::test]
async fn servicenow_business_rules_are_verified_and_queued() {
    let mut cfg = SourceConfig::new(
        SourceId::new("sn").unwrap(),
        CrmKind::Servicenow,
        "https://acme.service-now.com",
    );
    cfg.crm_choice = Some(2);
    let mut sources = Sources::new(&[cfg], IdentityStrategy::DeterministicId).unwrap();
    sources.set_webhook(
        &SourceId::new("sn").unwrap(),
        WebhookAuth::Contract {
            secret: Secret::new(SECRET),
        },
    );
    let q = |n: &str| Arc::new(MemoryQueue::new(n, MemoryQueueConfig::default(), None));
    let (upsert, sync, dlq) = (q("upsert"), q("sync"), q("dlq"));
    let ports = WebhookPorts {
        metrics: &pipeline::Metrics::new(),
        sources: &sources,
        upsert: upsert.as_ref(),
        sync: sync.as_ref(),
        dlq: dlq.as_ref(),
        recent: None,
    };
    let account = json!({"sys_id": "0123456789abcdef0123456789abcdef", "name": "Acme Ltd.",
        "phone": "+1 415 555 0100", "city": "Austin", "sys_updated_on": "2024-05-01 10:00:00"});
    let contact = json!({"sys_id": "fedcba9876543210fedcba9876543210", "first_name": "Ann",
        "last_name": "Ng", "email": "ann@acme.example", "account": "0123456789abcdef0123456789abcdef",
        "sys_updated_on": "2024-05-01 10:00:01"});
    let cases = [
        (
            "integrations/servicenow/crm_sync_account_rule.js",
            "insert",
            &account,
        ),
        (
            "integrations/servicenow/crm_sync_account_rule.js",
            "update",
            &account,
        ),
        (
            "integrations/servicenow/crm_sync_contact_rule.js",
            "insert",
            &contact,
        ),
        (
            "integrations/servicenow/crm_sync_contact_rule.js",
            "delete",
            &contact,
        ),
    ];
    for (i, (rule, op, record)) in cases.iter().enumerate() {
        let sent = run_rule(rule, op, record);
        let headers: Vec<(String, String)> = sent["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap().to_string()))
            .collect();
        let body = sent["body"].as_str().unwrap();
        let req = WebhookRequest {
            method: sent["method"].as_str().unwrap(),
            query: None,
            headers: &headers,
            body: body.as_bytes(),
        };
        let r = handle_request("sn", &req, &format!("c{i}"), &ports, NOW_MS + 1_000).await;
        assert_eq!(r.status, 202, "{rule} {op}: {}", r.body);
        assert!(r.body.contains(r#""changes":1"#), "{rule} {op}: {}", r.body);
        // The same request signed with another secret is refused.
        let mut forged = headers.clone();
        for (k, v) in forged.iter_mut() {
            if k == "x-crmsync-signature" {
                v.replace_range(3..7, "AAAA");
            }
        }
        let req = WebhookRequest {
            headers: &forged,
            ..req
        };
        let r = handle_request("sn", &req, "forged", &ports, NOW_MS + 1_000).await;
        assert_eq!(
            r.status, 401,
            "{rule} {op}: a tampered signature was accepted"
        );
    }
    // Each accepted request queued its record's change, and the delete is a delete.
    let got = upsert.receive(10, std::time::Duration::ZERO).await.unwrap();
    assert_eq!(got.len(), cases.len());
    let last: Value = serde_json::from_str(&got[3].body).unwrap();
    assert_eq!(last["changes"][0]["op"], json!("delete"), "{last}");
    assert_eq!(
        last["changes"][0]["source_id"],
        json!("fedcba9876543210fedcba9876543210")
    );
    assert!(sync.is_empty() && dlq.is_empty());
}
