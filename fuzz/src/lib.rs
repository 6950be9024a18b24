//! What each fuzz target checks, kept apart from libFuzzer so the stable smoke test
//! (`shared/pipeline/tests/fuzz_smoke.rs`, which includes this file) runs exactly the same
//! checks in `scripts/test.sh`. Every function takes untrusted bytes, as the internet or a
//! Dataverse response hands them over, and panics only when a property fails: the parser
//! panicked, accepted a forgery, or produced output out of proportion to its input (the
//! "no unbounded memory" half; libFuzzer's `-rss_limit_mb` catches the rest).

use mapping::payload::{Item, Outcome, decode};
use mapping::{CrmKind, Entity, IdentityStrategy, Mapper, Notice, SourceConfig, SourceId};
use serde_json::Value;

/// A timestamp inside every window (the verifiers' `now`).
const NOW_MS: i64 = 1_700_000_000_000;
const SECRET: &str = "fuzz-secret";

/// Output allowed per input byte, plus a constant: mapping adds messages, record URLs and keys
/// to what it reads, but never more than a bounded amount per byte read.
fn bounded(what: &str, input: usize, output: usize) {
    let limit = 256 * input + 64 * 1024;
    assert!(
        output <= limit,
        "{what}: {output} bytes of output for {input} bytes of input"
    );
}

/// The webhook body and the header values (signature, timestamp, ...) a fuzz input stands for:
/// the body is everything before the last NUL, the headers the `|`-separated text after it. A
/// seed without a NUL is all body, so fixture payloads are good seeds as they are.
pub fn split_request(data: &[u8]) -> (&[u8], Vec<String>) {
    match data.iter().rposition(|b| *b == 0) {
        Some(i) => (
            &data[..i],
            String::from_utf8_lossy(&data[i + 1..])
                .split('|')
                .map(str::to_string)
                .collect(),
        ),
        None => (data, Vec::new()),
    }
}

/// A mapper of each kind as the built-in profiles configure it (the generic kind with a small
/// profile, since it has no built-in one).
pub fn mapper(kind: CrmKind) -> Mapper {
    let mut c = SourceConfig::new(SourceId::new("fuzz").unwrap(), kind, "https://x.example");
    c.crm_choice = Some(7);
    c.vars.insert("portal_id".into(), "1".into());
    if kind == CrmKind::Generic {
        c.mapping = toml::from_str(
            "[account]\nid = \"/id\"\nrecord_url = \"{base_url}/a/{id}\"\n[account.columns]\nname = \"/name\"\n[contact]\nid = \"/id\"\nparent = \"/account\"\n[contact.columns]\nlastname = \"/name\"\ntelephone1 = { path = \"/phone\", transforms = [\"phone\"] }\n",
        )
        .unwrap();
    }
    Mapper::new(&c).unwrap()
}

pub const KINDS: [CrmKind; 6] = [
    CrmKind::Salesforce,
    CrmKind::Servicenow,
    CrmKind::Hubspot,
    CrmKind::Zendesk,
    CrmKind::Pipedrive,
    CrmKind::Generic,
];

/// A JSON webhook request of `kind`: the kind's verifier over the headers and body, then the
/// body through the webhook step's parsing (`serde_json`, `payload::decode`, `event_keys`) and
/// each change through row building under both identity strategies. The parser runs whatever
/// the verifier said: a fuzzer cannot forge an HMAC, and the parser must be safe on its own.
pub fn webhook(kind: CrmKind, m: &Mapper, data: &[u8]) {
    let (body, headers) = split_request(data);
    let h = |i: usize| headers.get(i).map(String::as_str).unwrap_or("");
    let verified = match kind {
        CrmKind::Hubspot => {
            let v3 = webhook::verify::hubspot_v3(SECRET, h(2), h(3), body, h(1), h(0), NOW_MS);
            let v2 = webhook::verify::hubspot_v2(SECRET, h(2), h(3), body, h(0));
            let v1 = webhook::verify::hubspot_v1(SECRET, body, h(0));
            v3.is_ok() || v2.is_ok() || v1.is_ok()
        }
        CrmKind::Zendesk => webhook::verify::zendesk(SECRET, h(1), body, h(0)).is_ok(),
        CrmKind::Pipedrive => webhook::verify::basic(h(0), "pipedrive", SECRET).is_ok(),
        CrmKind::Salesforce | CrmKind::Servicenow | CrmKind::Generic => {
            webhook::verify::contract(SECRET, h(1), body, h(0), NOW_MS).is_ok()
        }
    };
    // Forging a signature over fuzzed bytes would be a broken verifier (Basic auth excepted:
    // its "signature" is the credential itself, which the seeds may carry).
    assert!(
        !verified || kind == CrmKind::Pipedrive,
        "{kind}: a forged signature verified"
    );
    parse_json_notification(m, body);
}

/// The body half of [`webhook`]: what `pipeline::webhook::handle_webhook` does with a verified
/// body before queueing, plus row building.
pub fn parse_json_notification(m: &Mapper, body: &[u8]) {
    let Ok(payload) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let keys = mapping::events::event_keys(m.kind, &payload);
    bounded("event keys", body.len(), keys.iter().map(String::len).sum());
    let Ok(items) = decode(m, &payload, None) else {
        return;
    };
    assert!(items.len() <= body.len(), "more items than input bytes");
    check_items(m, body.len(), &items);
}

fn check_items(m: &Mapper, input: usize, items: &[Item]) {
    let mut out = 0;
    for item in items {
        out += item.at.len();
        match &item.outcome {
            Outcome::Notice {
                notice: Notice::Change(c),
                ..
            } => {
                for identity in [
                    IdentityStrategy::DeterministicId,
                    IdentityStrategy::AlternateKey,
                ] {
                    if let Ok(Some(op)) = mapping::row::build(c, &m.row_context(identity)) {
                        out += op.path.len();
                        out += op.body.map_or(0, |b| Value::Object(b).to_string().len());
                    }
                }
            }
            Outcome::Notice {
                notice: Notice::Fetch(f),
                ..
            } => out += f.ids.iter().map(String::len).sum::<usize>(),
            Outcome::Skipped(why) => out += why.len(),
            Outcome::Failed(e) => out += e.to_string().len(),
        }
    }
    bounded("mapped items", input, out);
}

/// Salesforce Outbound Messages (SOAP): the parser, then what the webhook step does with each
/// notification (the org check is a string comparison and not fuzzed).
pub fn soap(mappers: &[Mapper], data: &[u8]) {
    let Ok(om) = webhook::soap::parse(data) else {
        return;
    };
    assert!(!om.notifications.is_empty() && om.notifications.len() <= 100);
    // Salesforce sends UTF-8: anything else is refused, never passed on as U+FFFD.
    assert!(
        std::str::from_utf8(data).is_ok(),
        "non-UTF-8 message accepted"
    );
    // Entity references only shrink text (`&lt;` is one character, `&#x10FFFF;` four bytes),
    // so what was read never exceeds what was sent.
    let read: usize = om
        .notifications
        .iter()
        .map(|n| {
            n.id.len()
                + n.object.len()
                + n.fields
                    .iter()
                    .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
                    .sum::<usize>()
        })
        .sum::<usize>()
        + om.organization_id.len()
        + om.action_id.len();
    assert!(
        read <= data.len(),
        "SOAP parser read {read} bytes out of {}",
        data.len()
    );
    let m = &mappers[0];
    for n in &om.notifications {
        if let Some(e) = m.entity_for_object(&n.object) {
            let _ = m.map_record(e, &Value::Object(n.fields.clone()), None);
        }
    }
}

/// Every verifier over arbitrary header values, plus a round trip: a request signed with the
/// right secret verifies, the same request with one byte changed does not.
pub fn verify(data: &[u8]) {
    use webhook::verify::*;
    let (body, headers) = split_request(data);
    let h = |i: usize| headers.get(i).map(String::as_str).unwrap_or("");
    let _ = hubspot_v1(h(4), body, h(0));
    let _ = hubspot_v2(h(4), h(2), h(3), body, h(0));
    let _ = hubspot_v3(h(4), h(2), h(3), body, h(1), h(0), NOW_MS);
    let _ = contract(h(4), h(1), body, h(0), NOW_MS);
    let _ = zendesk(h(4), h(1), body, h(0));
    let _ = basic(h(0), h(1), h(2));
    let decoded = hubspot_decode_uri(h(3));
    assert!(decoded.len() <= h(3).len());
    // Round trip over the contract (the only signature we also produce).
    let ts = (NOW_MS / 1000).to_string();
    let sig = contract_signature(SECRET, &ts, body);
    assert_eq!(contract(SECRET, &ts, body, &sig, NOW_MS), Ok(()));
    let mut tampered = body.to_vec();
    match tampered.first_mut() {
        Some(b) => *b ^= 1,
        None => tampered.push(b'x'),
    }
    assert!(contract(SECRET, &ts, &tampered, &sig, NOW_MS).is_err());
    assert!(contract(h(4), &ts, body, &sig, NOW_MS).is_err() || h(4) == SECRET);
}

/// The Dataverse `$batch` response parser: the first line is the Content-Type header, the rest
/// the body. Parts never hold more bytes than the body.
pub fn batch_response(data: &[u8]) {
    let (ctype, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            &data[i + 1..],
        ),
        None => (String::new(), data),
    };
    let _ = dataverse::batch::boundary_of(&ctype);
    if let Ok(parts) = dataverse::batch::parse_response(&ctype, body) {
        assert!(parts.len() <= body.len());
        let bytes: usize = parts
            .iter()
            .map(|p| {
                p.body.len()
                    + p.headers
                        .iter()
                        .map(|(k, v)| k.len() + v.len())
                        .sum::<usize>()
            })
            .sum();
        assert!(
            bytes <= body.len(),
            "{bytes} bytes of parts from {}",
            body.len()
        );
        for p in &parts {
            assert!((100..=599).contains(&p.status));
            let _ = dataverse::classify::error_of(&p.body);
        }
    }
}

/// One arbitrary JSON record through every kind's profile as an account and as a contact
/// (what the initial sync does with a listed page), then row building.
pub fn mapping_json(mappers: &[Mapper], data: &[u8]) {
    let Some((&sel, json)) = data.split_first() else {
        return;
    };
    let Ok(record) = serde_json::from_slice::<Value>(json) else {
        return;
    };
    let m = &mappers[sel as usize % mappers.len()];
    let entity = if sel & 0x80 == 0 {
        Entity::Account
    } else {
        Entity::Contact
    };
    let list = match &record {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    let items = mapping::payload::map_records(m, entity, &list);
    assert_eq!(items.len(), list.len());
    check_items(m, json.len(), &items);
}
