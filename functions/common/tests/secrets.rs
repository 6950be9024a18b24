//! `aws-secret:` references resolved through a stand-in for the Parameters and Secrets Lambda
//! Extension that answers as the extension does: `GET /secretsmanager/get?secretId=` with the
//! session token header, `{"SecretString": ...}` in the body, 400 for an unknown secret.

use std::collections::HashMap;

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use lambda_common::secrets::{SecretsExtension, resolve_in};
use serde_json::json;

async fn extension() -> String {
    let app = Router::new().route(
        "/secretsmanager/get",
        get(
            |headers: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                if headers
                    .get("x-aws-parameters-secrets-token")
                    .and_then(|v| v.to_str().ok())
                    != Some("session-token")
                {
                    return (StatusCode::UNAUTHORIZED, String::new());
                }
                let secret = match q.get("secretId").map(String::as_str) {
                    Some("arn:aws:secretsmanager:eu-west-1:1:secret:hook") => "whsec-1".to_string(),
                    Some("arn:aws:secretsmanager:eu-west-1:1:secret:crm") => {
                        json!({"password": "pw-2", "user": "u"}).to_string()
                    }
                    _ => return (StatusCode::BAD_REQUEST, "ResourceNotFoundException".into()),
                };
                (StatusCode::OK, json!({"SecretString": secret}).to_string())
            },
        ),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

const DOC: &str = r#"
[[sources]]
id = "sn"
kind = "servicenow"
base_url = "https://acme.service-now.com"
[sources.connection]
auth = "servicenow-basic"
user = "integration"
password = "aws-secret:arn:aws:secretsmanager:eu-west-1:1:secret:crm#password"
[sources.webhook]
auth = "contract"
secret = "aws-secret:arn:aws:secretsmanager:eu-west-1:1:secret:hook"
"#;

#[tokio::test]
async fn each_function_reads_only_its_own_section() {
    let ext = SecretsExtension::new(&extension().await, "session-token");
    let mut doc: toml::Table = toml::from_str(DOC).unwrap();
    resolve_in(&mut doc, "webhook", &ext).await.unwrap();
    let src = &doc["sources"][0];
    assert_eq!(src["webhook"]["secret"].as_str(), Some("whsec-1"));
    // The CRM password is another function's: left as the reference.
    assert!(
        src["connection"]["password"]
            .as_str()
            .unwrap()
            .starts_with("aws-secret:")
    );
    resolve_in(&mut doc, "connection", &ext).await.unwrap();
    assert_eq!(
        doc["sources"][0]["connection"]["password"].as_str(),
        Some("pw-2")
    );
    let cfg = pipeline::config::Config::from_table(doc, "CRM_SYNC_CONFIG").unwrap();
    assert!(cfg.sources().is_ok());
}

#[tokio::test]
async fn an_unread_reference_is_refused_not_used_as_the_secret() {
    let cfg = pipeline::config::Config::parse(DOC, "c.toml").expect("validates without secrets");
    assert!(cfg.mappers().is_ok());
    let Err(e) = cfg.sources() else {
        panic!("an unread aws-secret: reference was accepted");
    };
    let e = e.to_string();
    assert!(e.contains("aws-secret:"), "{e}");
}

#[tokio::test]
async fn failures_name_the_secret_never_a_value() {
    let base = extension().await;
    let ext = SecretsExtension::new(&base, "session-token");
    let e = ext
        .get("aws-secret:arn:aws:secretsmanager:eu-west-1:1:secret:gone")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("secret:gone") && e.contains("400"), "{e}");
    let e = ext
        .get("aws-secret:arn:aws:secretsmanager:eu-west-1:1:secret:crm#token")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("`token`") && !e.contains("pw-2"), "{e}");
    let e = ext
        .get("aws-secret:arn:aws:secretsmanager:eu-west-1:1:secret:hook#")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("must name a secret"), "{e}");
    let wrong = SecretsExtension::new(&base, "another-token");
    let e = wrong
        .get("aws-secret:arn:aws:secretsmanager:eu-west-1:1:secret:hook")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("401") && !e.contains("whsec"), "{e}");
}
