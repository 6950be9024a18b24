//! What every crm-sync Lambda binary shares, so each `main.rs` stays a few lines of wiring:
//! configuration and settings from the environment, JSON logs, the SQS batch response, and the
//! invocation deadline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use pipeline::config::Config;

pub mod secrets;

/// Structured JSON logs, one object per line (CloudWatch Logs Insights reads them as fields).
/// The level comes from `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(false)
        .without_time()
        .init();
}

/// A required environment variable, with an error that names it.
pub fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).map_err(|_| anyhow!("environment variable {name} is not set"))
}

pub fn env_opt(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The crm-sync configuration: TOML in `CRM_SYNC_CONFIG`, or the file `CRM_SYNC_CONFIG_FILE`.
/// `aws-secret:` references under each source's `secrets` section (`webhook` or `connection`:
/// the ones this function uses) are read from Secrets Manager first; call it during an
/// invocation, since the secrets extension does not answer during init.
pub async fn config_from_env(secrets: Option<&str>) -> anyhow::Result<Config> {
    let (text, path) = match env_opt("CRM_SYNC_CONFIG") {
        Some(text) => (text, "CRM_SYNC_CONFIG".to_string()),
        None => {
            let path = env("CRM_SYNC_CONFIG_FILE")
                .context("set CRM_SYNC_CONFIG (TOML) or CRM_SYNC_CONFIG_FILE (a path)")?;
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            (text, path)
        }
    };
    // Parsed first so a syntax error keeps its line number; secrets go in afterwards.
    let config = Config::parse(&text, &path).map_err(|e| anyhow!("{e}"))?;
    let Some(section) = secrets.filter(|_| text.contains(secrets::PREFIX)) else {
        return Ok(config);
    };
    let mut doc: toml::Table = toml::from_str(&text).with_context(|| path.clone())?;
    secrets::resolve_in(&mut doc, section, &secrets::SecretsExtension::from_env()?).await?;
    Config::from_table(doc, &path).map_err(|e| anyhow!("{e}"))
}

/// A secret from the environment: the value itself, or an `aws-secret:` reference to it.
pub async fn secret_env(name: &str) -> anyhow::Result<String> {
    let v = env(name)?;
    if v.starts_with(secrets::PREFIX) {
        return secrets::SecretsExtension::from_env()?
            .get(&v)
            .await
            .with_context(|| format!("environment variable {name}"));
    }
    Ok(v)
}

/// Writes what this invocation counted as CloudWatch Embedded Metric Format, one JSON document
/// per line on stdout, where Lambda's log capture hands them to CloudWatch, which extracts the
/// metrics ("Specification: Embedded metric format"). Namespace from `METRICS_NAMESPACE`
/// (default `CrmSync`). Lambda runs one invocation at a time per environment, so what is
/// drained is this invocation's.
pub fn flush_metrics(metrics: &pipeline::Metrics) {
    use std::io::Write;
    let snapshot = metrics.drain();
    let namespace = env_opt("METRICS_NAMESPACE").unwrap_or_else(|| "CrmSync".into());
    let function = env_opt("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| "local".into());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for doc in pipeline::metrics::emf(&snapshot, &namespace, &function, now) {
        let _ = writeln!(out, "{doc}");
    }
}

/// The `ReportBatchItemFailures` response: exactly the messages that must come back.
pub fn batch_response(failed: impl IntoIterator<Item = String>) -> SqsBatchResponse {
    let mut r = SqsBatchResponse::default();
    for id in failed {
        let mut f = BatchItemFailure::default();
        f.item_identifier = id;
        r.batch_item_failures.push(f);
    }
    r
}

/// `MAX_RECEIVE_COUNT`: the work queues' redrive threshold (the template's MaxReceiveCount), so
/// a step can dead-letter a message failing on its last receive with the reason.
pub fn max_receives_env() -> anyhow::Result<Option<u32>> {
    env_opt("MAX_RECEIVE_COUNT")
        .map(|v| {
            v.parse()
                .map_err(|_| anyhow!("MAX_RECEIVE_COUNT must be a whole number, not `{v}`"))
        })
        .transpose()
}

/// How many times SQS has delivered a message, this time included (`ApproximateReceiveCount`).
pub fn receive_count(m: &aws_lambda_events::event::sqs::SqsMessage) -> u32 {
    m.attributes
        .get("ApproximateReceiveCount")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// Runs `f` on every message of an SQS event (its body and receive count) concurrently and reports the ones that failed, as
/// the awslabs partial-batch-failure example does: a message whose `f` returns `Err` comes back
/// (and reaches the DLQ after the queue's maxReceiveCount).
pub async fn for_each_message<F, Fut>(
    event: aws_lambda_events::event::sqs::SqsEvent,
    f: F,
) -> SqsBatchResponse
where
    F: Fn(String, u32) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let work = event.records.into_iter().map(|m| {
        let receives = receive_count(&m);
        let id = m.message_id.unwrap_or_default();
        let fut = m.body.map(|b| f(b, receives));
        async move {
            match fut {
                Some(fut) => match fut.await {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::warn!(message_id = %id, error = %e, "message failed; it will be retried");
                        Some(id)
                    }
                },
                None => Some(id),
            }
        }
    });
    let failed: Vec<String> = futures::future::join_all(work)
        .await
        .into_iter()
        .flatten()
        .collect();
    batch_response(failed.into_iter().filter(|id| !id.is_empty()))
}

/// When work must stop: the invocation's deadline (milliseconds since the epoch, from the
/// Lambda context) less `margin`, as a tokio instant. `None` when the context has no deadline.
pub fn stop_at(deadline_ms: u64, margin: Duration) -> Option<tokio::time::Instant> {
    if deadline_ms == 0 {
        return None;
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
    Some(tokio::time::Instant::now() + left.saturating_sub(margin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_response_lists_failures() {
        let r = batch_response(["a".to_string(), "b".to_string()]);
        let ids: Vec<_> = r
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(batch_response(Vec::new()).batch_item_failures.is_empty());
    }

    #[tokio::test]
    async fn per_message_failures_are_reported() {
        use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
        let mut e = SqsEvent::default();
        for (id, body) in [("1", Some("ok")), ("2", Some("bad")), ("3", None)] {
            let mut m = SqsMessage::default();
            m.message_id = Some(id.into());
            m.body = body.map(String::from);
            e.records.push(m);
        }
        let r = for_each_message(e, |b, _| async move {
            if b == "ok" {
                Ok(())
            } else {
                Err("no".to_string())
            }
        })
        .await;
        let ids: Vec<_> = r
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(ids, ["2", "3"]);
    }

    #[tokio::test]
    async fn deadline_with_margin() {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let at = stop_at(now_ms + 10_000, Duration::from_secs(3)).unwrap();
        let left = at - tokio::time::Instant::now();
        assert!(left <= Duration::from_secs(7) && left > Duration::from_secs(6));
        assert!(stop_at(0, Duration::ZERO).is_none());
    }
}
