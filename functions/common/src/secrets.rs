//! Secrets from AWS Secrets Manager, referenced as `aws-secret:<ARN or name>` or
//! `aws-secret:<ARN>#<JSON key>` wherever the configuration takes a secret (and in
//! `DATAVERSE_CLIENT_SECRET`). They are read once, at cold start, through the AWS Parameters and
//! Secrets Lambda Extension: `GET http://localhost:2773/secretsmanager/get?secretId=...` with the
//! function's session token in `X-Aws-Parameters-Secrets-Token` ("Use AWS Secrets Manager secrets
//! in AWS Lambda functions", AWS Secrets Manager User Guide). The extension caches and needs no
//! SDK, so the binaries stay small; the template grants each function `GetSecretValue` on its own
//! secrets only.

use std::collections::BTreeMap;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;

pub const PREFIX: &str = "aws-secret:";

/// The extension's local endpoint.
pub struct SecretsExtension {
    base_url: String,
    token: String,
    http: reqwest::Client,
}

impl SecretsExtension {
    /// The extension as Lambda runs it: port `PARAMETERS_SECRETS_EXTENSION_HTTP_PORT` (default
    /// 2773), authenticated with `AWS_SESSION_TOKEN`.
    pub fn from_env() -> anyhow::Result<SecretsExtension> {
        let port = crate::env_opt("PARAMETERS_SECRETS_EXTENSION_HTTP_PORT")
            .unwrap_or_else(|| "2773".into());
        let token = crate::env("AWS_SESSION_TOKEN")
            .context("aws-secret: references need the Lambda session token")?;
        Ok(SecretsExtension::new(
            &format!("http://localhost:{port}"),
            &token,
        ))
    }

    pub fn new(base_url: &str, token: &str) -> SecretsExtension {
        SecretsExtension {
            base_url: base_url.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: reqwest::Client::new(),
        }
    }

    /// The secret a reference names. Errors name the reference's secret id, never a value.
    pub async fn get(&self, reference: &str) -> anyhow::Result<String> {
        let spec = reference
            .strip_prefix(PREFIX)
            .ok_or_else(|| anyhow!("not an {PREFIX} reference"))?;
        let (id, key) = match spec.rsplit_once('#') {
            Some((id, key)) => (id, Some(key)),
            None => (spec, None),
        };
        if id.is_empty() || key.is_some_and(str::is_empty) {
            bail!("`{PREFIX}{spec}` must name a secret, optionally followed by #<json key>");
        }
        let url = reqwest::Url::parse_with_params(
            &format!("{}/secretsmanager/get", self.base_url),
            &[("secretId", id)],
        )?;
        let resp = self
            .http
            .get(url)
            .header("X-Aws-Parameters-Secrets-Token", &self.token)
            .send()
            .await
            .with_context(|| format!("reading secret {id} from the secrets extension"))?;
        let status = resp.status();
        if !status.is_success() {
            bail!("the secrets extension answered {status} for secret {id}");
        }
        let body: Value = resp
            .json()
            .await
            .with_context(|| format!("secret {id}: unreadable extension response"))?;
        let text = body
            .get("SecretString")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                anyhow!("secret {id} has no SecretString (binary secrets are not supported)")
            })?;
        match key {
            None => Ok(text.to_string()),
            Some(k) => serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|v| v.get(k).and_then(Value::as_str).map(str::to_string))
                .ok_or_else(|| anyhow!("secret {id} is not a JSON object with a string `{k}`")),
        }
    }
}

/// Replaces the `aws-secret:` strings under `section` of every `[[sources]]` entry (`webhook` or
/// `connection`) with the secrets they name, each read once. References elsewhere are left as
/// they are: each function may read only its own secrets (the webhook function the webhook
/// secrets, initial-sync the CRM credentials), and is refused the others by IAM.
pub async fn resolve_in(
    doc: &mut toml::Table,
    section: &str,
    ext: &SecretsExtension,
) -> anyhow::Result<()> {
    let mut refs = BTreeMap::new();
    each_section(doc, section, &mut |s: &mut String| {
        if s.starts_with(PREFIX) {
            refs.insert(s.clone(), String::new());
        }
    });
    for (reference, value) in refs.iter_mut() {
        *value = ext.get(reference).await?;
    }
    each_section(doc, section, &mut |s: &mut String| {
        if let Some(v) = refs.get(s.as_str()) {
            *s = v.clone();
        }
    });
    Ok(())
}

fn each_section(doc: &mut toml::Table, section: &str, f: &mut impl FnMut(&mut String)) {
    let Some(toml::Value::Array(sources)) = doc.get_mut("sources") else {
        return;
    };
    for src in sources {
        if let Some(v) = src.get_mut(section) {
            visit_value(v, f);
        }
    }
}

fn visit(t: &mut toml::Table, f: &mut impl FnMut(&mut String)) {
    for (_, v) in t.iter_mut() {
        visit_value(v, f);
    }
}

fn visit_value(v: &mut toml::Value, f: &mut impl FnMut(&mut String)) {
    match v {
        toml::Value::String(s) => f(s),
        toml::Value::Array(a) => a.iter_mut().for_each(|v| visit_value(v, f)),
        toml::Value::Table(t) => visit(t, f),
        _ => {}
    }
}
