//! Event identities: what lets the webhook step drop a CRM's retry of a notification it already
//! queued, before doing any work. Only CRMs that name their events get keys; a payload with any
//! event that cannot be named gets none (it is processed; downstream upserts are idempotent).
//!
//! - HubSpot: `eventId` is documented as not guaranteed unique, so the key is the tuple
//!   (portalId, subscriptionType, objectId, occurredAt, propertyName, eventId) — see
//!   `../shared/reference/crm-apis.md` §3.3. `attemptNumber` is left out: it is what changes on a
//!   retry.
//! - Salesforce change events: (transactionKey, sequenceNumber) of the ChangeEventHeader, which
//!   identify one change in one transaction whatever the channel; EventBridge relays add an
//!   envelope whose `id` is not used, since a replay through another rule would get a new one.
//! - Zendesk event webhooks: the event's `id`. Pipedrive webhooks v2: `meta.id`; `meta.attempt`
//!   is left out for the same reason as HubSpot's attempt number.

use serde_json::Value;

use crate::model::CrmKind;
use crate::transform::scalar_string;

/// The identities of the events in a notification body, or none when any event is anonymous.
pub fn event_keys(kind: CrmKind, payload: &Value) -> Vec<String> {
    let keys: Option<Vec<String>> = match kind {
        CrmKind::Hubspot => payload
            .as_array()
            .filter(|a| !a.is_empty())
            .and_then(|events| events.iter().map(hubspot).collect()),
        CrmKind::Salesforce => match payload {
            Value::Array(list) if !list.is_empty() => list.iter().map(salesforce_cdc).collect(),
            v => salesforce_cdc(v).map(|k| vec![k]),
        },
        CrmKind::Zendesk => payload
            .get("type")
            .and_then(Value::as_str)
            .filter(|t| t.starts_with("zen:event-type:"))
            .and(nonempty(&payload["id"]))
            .map(|id| vec![format!("zendesk:{id}")]),
        CrmKind::Pipedrive => {
            nonempty(&payload["meta"]["id"]).map(|id| vec![format!("pipedrive:{id}")])
        }
        CrmKind::Servicenow | CrmKind::Generic => None,
    };
    keys.unwrap_or_default()
}

fn nonempty(v: &Value) -> Option<String> {
    scalar_string(v).filter(|s| !s.is_empty())
}

fn hubspot(ev: &Value) -> Option<String> {
    let part = |k: &str| scalar_string(&ev[k]).unwrap_or_default();
    let (event, object) = (nonempty(&ev["eventId"])?, nonempty(&ev["objectId"])?);
    Some(format!(
        "hubspot:{}:{}:{object}:{}:{}:{event}",
        part("portalId"),
        part("subscriptionType"),
        part("occurredAt"),
        part("propertyName"),
    ))
}

fn salesforce_cdc(v: &Value) -> Option<String> {
    let h = [v, &v["payload"], &v["detail"], &v["detail"]["payload"]]
        .into_iter()
        .map(|c| &c["ChangeEventHeader"])
        .find(|h| h.is_object())?;
    Some(format!(
        "salesforce-cdc:{}:{}",
        nonempty(&h["transactionKey"])?,
        nonempty(&h["sequenceNumber"])?
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    // The vendors' own bodies are checked in tests/fixtures.rs.

    #[test]
    fn hubspot_keys_ignore_the_attempt_number() {
        let body = json!([{"eventId": 1, "portalId": 62515, "occurredAt": 1564113600000_u64,
            "subscriptionType": "contact.creation", "attemptNumber": 0, "objectId": 123}]);
        let keys = event_keys(CrmKind::Hubspot, &body);
        let mut retry = body.clone();
        retry[0]["attemptNumber"] = json!(3);
        assert_eq!(event_keys(CrmKind::Hubspot, &retry), keys);
        // Same eventId, another object: another event (eventId is not unique on its own).
        let mut other = body.clone();
        other[0]["objectId"] = json!(124);
        assert_ne!(event_keys(CrmKind::Hubspot, &other), keys);
    }

    #[test]
    fn one_anonymous_event_means_no_keys() {
        let body = json!([
            {"eventId": 1, "objectId": 5, "subscriptionType": "contact.deletion"},
            {"objectId": 6, "subscriptionType": "contact.deletion"}
        ]);
        assert!(event_keys(CrmKind::Hubspot, &body).is_empty());
        assert!(event_keys(CrmKind::Hubspot, &json!([])).is_empty());
    }

    #[test]
    fn zendesk_and_pipedrive_event_ids() {
        let z = json!({"id": "01HX", "type": "zen:event-type:user.created", "detail": {"id": "7"}});
        assert_eq!(event_keys(CrmKind::Zendesk, &z), ["zendesk:01HX"]);
        assert!(event_keys(CrmKind::Zendesk, &json!({"user": {"id": 7}})).is_empty());
        let p = json!({"meta": {"id": "b1", "attempt": 2, "action": "change"}, "data": {}});
        assert_eq!(event_keys(CrmKind::Pipedrive, &p), ["pipedrive:b1"]);
        assert!(event_keys(CrmKind::Servicenow, &json!({"sys_id": "x"})).is_empty());
    }
}
