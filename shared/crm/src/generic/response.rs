//! Reading responses: values at JSON pointers, the `Link` header, rate-limit pauses, the offset
//! rule, status classification and short, secret-free error excerpts. All pure.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::config::ErrorMatch;
pub use crate::http::retry_after;
use crate::reader::CrmError;

/// Pause after a 429/503 that names no time.
pub const DEFAULT_RATE_PAUSE: Duration = Duration::from_secs(60);
/// Characters of a response body quoted in an error.
const EXCERPT: usize = 200;

/// A record's id: a non-empty string, or a number written in decimal.
pub fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A continuation token or link at `ptr`: a non-empty string or a number; null, absent or
/// empty is "none".
pub fn token_at(body: &Value, ptr: &str) -> Option<String> {
    body.pointer(ptr).and_then(id_string)
}

/// A boolean at `ptr` (also `"true"`/`"false"` strings).
pub fn bool_at(body: &Value, ptr: &str) -> Option<bool> {
    match body.pointer(ptr)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// A count at `ptr`: a non-negative integer or a string holding one.
pub fn count_at(body: &Value, ptr: &str) -> Option<u64> {
    match body.pointer(ptr)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `X-Total-Count`.
pub fn total_header(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("X-Total-Count")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Takes the records at `ptr` out of `body`: an array (nulls dropped when `skip_nulls`), or,
/// when `object_ok`, a single object. `None`: nothing usable there.
pub fn take_records(
    body: &mut Value,
    ptr: &str,
    object_ok: bool,
    skip_nulls: bool,
) -> Option<Vec<Value>> {
    let usable = match body.pointer(ptr)? {
        Value::Array(_) => true,
        Value::Object(_) => object_ok,
        _ => false,
    };
    if !usable {
        return None;
    }
    match body.pointer_mut(ptr).map(Value::take)? {
        Value::Array(a) if skip_nulls => Some(a.into_iter().filter(|v| !v.is_null()).collect()),
        Value::Array(a) => Some(a),
        o @ Value::Object(_) if object_ok => Some(vec![o]),
        _ => None,
    }
}

/// Whether the body says this is the last page: `done` true or `has_more` false ends, `done`
/// false or `has_more` true continues; `None` when neither pointer says.
pub fn ended(body: &Value, done: Option<&str>, has_more: Option<&str>) -> Option<bool> {
    let a = done.and_then(|p| bool_at(body, p));
    let b = has_more.and_then(|p| bool_at(body, p)).map(|m| !m);
    match (a, b) {
        (Some(true), _) | (_, Some(true)) => Some(true),
        (Some(false), _) | (_, Some(false)) => Some(false),
        _ => None,
    }
}

/// Offset paging's rule: the next offset is this one plus the records received (not plus the
/// page size, so a CRM that serves fewer than asked skips nothing). An empty page ends the
/// walk. With a total (a pointer, or `X-Total-Count`), the walk ends when the next offset
/// reaches it, so a short page before the end continues; without one, it ends only at an empty
/// page (one extra request), since a short page alone does not prove the end.
pub fn offset_next(offset: u64, received: usize, total: Option<u64>) -> Option<u64> {
    if received == 0 {
        return None;
    }
    let next = offset.saturating_add(received as u64);
    match total {
        Some(t) => (next < t).then_some(next),
        None => Some(next),
    }
}

/// The `rel="next"` target of the `Link` headers (RFC 8288): several headers or several links
/// per header, URIs that contain commas, quoted or bare `rel` values holding several relation
/// types, case-insensitive.
pub fn link_next(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all("Link")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(next_in)
}

fn next_in(v: &str) -> Option<String> {
    let mut rest = v;
    loop {
        let start = rest.find('<')?;
        let after = &rest[start + 1..];
        let end = after.find('>')?;
        let target = &after[..end];
        // Parameters run to the next comma outside quotes.
        let params_text = &after[end + 1..];
        let stop = unquoted(params_text, ',')
            .next()
            .unwrap_or(params_text.len());
        let params = &params_text[..stop];
        let mut starts = vec![0];
        starts.extend(unquoted(params, ';').map(|i| i + 1));
        let mut ends: Vec<usize> = unquoted(params, ';').collect();
        ends.push(params.len());
        let is_next = starts
            .iter()
            .zip(&ends)
            .map(|(a, b)| &params[*a..*b])
            .any(|p| {
                let Some((k, v)) = p.split_once('=') else {
                    return false;
                };
                k.trim().eq_ignore_ascii_case("rel")
                    && v.trim()
                        .trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("next"))
            });
        if is_next {
            return Some(target.trim().to_string());
        }
        rest = &params_text[stop..];
    }
}

/// Byte positions of `sep` outside double quotes.
fn unquoted(s: &str, sep: char) -> impl Iterator<Item = usize> + '_ {
    let mut in_quotes = false;
    s.char_indices().filter_map(move |(i, c)| {
        if c == '"' {
            in_quotes = !in_quotes;
        }
        (c == sep && !in_quotes).then_some(i)
    })
}

/// The start of a body for an error message: whitespace collapsed, at most 200 characters,
/// every secret replaced.
pub fn excerpt(text: &str, secrets: &[&str]) -> String {
    let collapsed: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let redacted = redact(&collapsed, secrets);
    let mut out: String = redacted.chars().take(EXCERPT).collect();
    if redacted.chars().count() > EXCERPT {
        out.push('…');
    }
    out
}

/// `text` with every non-empty secret replaced by `<redacted>`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        if out.contains(*s) {
            out = out.replace(*s, "<redacted>");
        }
    }
    out
}

/// An unsuccessful response as a [`CrmError`]. `continuation`: the request followed a cursor or
/// next link, so `cursor_expired` applies.
pub fn classify(
    label: &str,
    status: StatusCode,
    headers: &HeaderMap,
    text: &str,
    continuation: bool,
    cursor_expired: Option<&ErrorMatch>,
    secrets: &[&str],
) -> CrmError {
    if continuation
        && let Some(m) = cursor_expired
        && m.status == status.as_u16()
        && m.body_contains.as_deref().is_none_or(|s| text.contains(s))
    {
        return CrmError::CursorExpired;
    }
    let body = excerpt(text, secrets);
    match status.as_u16() {
        429 | 503 => {
            let pause = retry_after(headers, SystemTime::now(), DEFAULT_RATE_PAUSE);
            tracing::warn!(crm = label, %status, ?pause, "CRM rate limit reached");
            CrmError::RateLimited(pause)
        }
        401 | 403 => CrmError::Access(format!(
            "{label} refused the credentials ({status}): {body}"
        )),
        408 => CrmError::Unavailable(format!("{label} {status}")),
        s if s >= 500 => CrmError::Unavailable(format!("{label} {status}: {body}")),
        s if (300..400).contains(&s) => CrmError::Permanent(format!(
            "{label} answered {status} (a redirect, which is not followed: credentials stay on base_url's origin)"
        )),
        _ => CrmError::Permanent(format!("{label} {status}: {body}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::UNIX_EPOCH;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn pointers_read_ids_tokens_and_counts() {
        let body = json!({
            "data": [{"id": 7}, {"id": "a"}],
            "paging": {"next": {"after": "NTI1Cg"}, "empty": "", "more": "TRUE", "num": 3},
            "total": "12",
        });
        assert_eq!(id_string(&json!(7)), Some("7".into()));
        assert_eq!(id_string(&json!("")), None);
        assert_eq!(id_string(&json!(null)), None);
        assert_eq!(token_at(&body, "/paging/next/after"), Some("NTI1Cg".into()));
        assert_eq!(token_at(&body, "/paging/empty"), None);
        assert_eq!(token_at(&body, "/paging/none"), None);
        assert_eq!(token_at(&body, "/paging/num"), Some("3".into()));
        assert_eq!(bool_at(&body, "/paging/more"), Some(true));
        assert_eq!(bool_at(&body, "/paging/num"), None);
        assert_eq!(count_at(&body, "/total"), Some(12));
        assert_eq!(count_at(&body, "/paging/num"), Some(3));
        assert_eq!(count_at(&body, "/paging/more"), None);
    }

    #[test]
    fn records_are_taken_from_their_pointer() {
        let mut body = json!({"result": [{"a": 1}, null], "one": {"b": 2}, "n": 1});
        assert_eq!(
            take_records(&mut body.clone(), "/result", false, false)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            take_records(&mut body, "/result", false, true)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(take_records(&mut body, "/one", false, false), None);
        assert_eq!(
            take_records(&mut body, "/one", true, false).unwrap(),
            [json!({"b": 2})]
        );
        assert_eq!(take_records(&mut body, "/n", true, false), None);
        assert_eq!(take_records(&mut body, "/missing", true, false), None);
        let mut array = json!([{"a": 1}]);
        assert_eq!(take_records(&mut array, "", false, false).unwrap().len(), 1);
    }

    #[test]
    fn end_of_walk_from_done_and_has_more() {
        let b = json!({"done": true, "more": true, "nd": false});
        assert_eq!(ended(&b, Some("/done"), None), Some(true));
        assert_eq!(ended(&b, Some("/nd"), None), Some(false));
        assert_eq!(ended(&b, None, Some("/more")), Some(false));
        assert_eq!(ended(&b, None, Some("/nd")), Some(true));
        assert_eq!(ended(&b, Some("/nd"), Some("/nd")), Some(true));
        assert_eq!(ended(&b, Some("/x"), Some("/y")), None);
        assert_eq!(ended(&b, None, None), None);
    }

    #[test]
    fn offset_rule() {
        // Without a total: continue after any non-empty page, short or not.
        assert_eq!(offset_next(0, 100, None), Some(100));
        assert_eq!(offset_next(100, 7, None), Some(107));
        assert_eq!(offset_next(107, 0, None), None);
        // With one: stop when it is reached, even on a full page; continue after a short one.
        assert_eq!(offset_next(0, 100, Some(100)), None);
        assert_eq!(offset_next(0, 50, Some(120)), Some(50));
        assert_eq!(offset_next(50, 50, Some(120)), Some(100));
        assert_eq!(offset_next(100, 20, Some(120)), None);
        assert_eq!(offset_next(100, 0, Some(500)), None);
    }

    #[test]
    fn link_header_next() {
        let h = headers(&[(
            "Link",
            "<https://a/t?sysparm_offset=0&f=a,b>;rel=\"first\",<https://a/t?sysparm_offset=2&f=a,b>;rel=\"next\",<https://a/t?x=9>;rel=\"last\"",
        )]);
        assert_eq!(
            link_next(&h).as_deref(),
            Some("https://a/t?sysparm_offset=2&f=a,b")
        );
        let h = headers(&[
            ("Link", "</p1>; rel=prev"),
            ("link", "</p3>; title=\"a, b; rel=next\"; REL=\"last NEXT\""),
        ]);
        assert_eq!(link_next(&h).as_deref(), Some("/p3"));
        let h = headers(&[(
            "Link",
            "</p1>; rel=\"prev\", </p9>; rel=\"nextish\"; title=\"x; rel=next, y\"",
        )]);
        assert_eq!(link_next(&h), None);
        assert_eq!(link_next(&HeaderMap::new()), None);
        assert_eq!(link_next(&headers(&[("Link", "garbage")])), None);
    }

    #[test]
    fn rate_limit_pauses() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let d = DEFAULT_RATE_PAUSE;
        assert_eq!(
            retry_after(&headers(&[("Retry-After", "7")]), now, d),
            Duration::from_secs(7)
        );
        assert_eq!(
            retry_after(&headers(&[("Retry-After", "0")]), now, d),
            Duration::from_secs(1)
        );
        // 1_700_000_000 is Tue, 14 Nov 2023 22:13:20 GMT.
        assert_eq!(
            retry_after(
                &headers(&[("Retry-After", "Tue, 14 Nov 2023 22:13:50 GMT")]),
                now,
                d
            ),
            Duration::from_secs(30)
        );
        assert_eq!(
            retry_after(&headers(&[("X-RateLimit-Reset", "1700000012")]), now, d),
            Duration::from_secs(12)
        );
        assert_eq!(
            retry_after(&headers(&[("X-RateLimit-Reset", "1699999000")]), now, d),
            Duration::from_secs(1)
        );
        assert_eq!(
            retry_after(&headers(&[("X-RateLimit-Reset", "15")]), now, d),
            Duration::from_secs(15)
        );
        assert_eq!(
            retry_after(&headers(&[("X-RateLimit-Reset", "2.5")]), now, d),
            Duration::from_secs(3)
        );
        // Retry-After wins over X-RateLimit-Reset; garbage falls through to the default.
        assert_eq!(
            retry_after(
                &headers(&[("Retry-After", "4"), ("X-RateLimit-Reset", "1700000012")]),
                now,
                d
            ),
            Duration::from_secs(4)
        );
        assert_eq!(retry_after(&headers(&[("Retry-After", "soon")]), now, d), d);
        assert_eq!(retry_after(&HeaderMap::new(), now, d), d);
    }

    #[test]
    fn excerpts_are_short_and_secret_free() {
        let long = format!(
            "{{\"error\": \"bad\",\n  \"echo\": \"hunter2\", \"pad\": \"{}\"}}",
            "x".repeat(500)
        );
        let e = excerpt(&long, &["hunter2", ""]);
        assert!(
            e.starts_with("{\"error\": \"bad\", \"echo\": \"<redacted>\""),
            "{e}"
        );
        assert!(!e.contains("hunter2"));
        assert_eq!(e.chars().count(), 201);
        assert!(e.ends_with('…'));
        assert_eq!(excerpt("é ok", &[]), "é ok");
    }

    #[test]
    fn statuses_map_to_errors() {
        let c = |status: u16, text: &str, cont: bool, m: Option<&ErrorMatch>| {
            classify(
                "CRM x",
                StatusCode::from_u16(status).unwrap(),
                &headers(&[("Retry-After", "3")]),
                text,
                cont,
                m,
                &["s3cret"],
            )
        };
        assert_eq!(
            c(429, "", false, None),
            CrmError::RateLimited(Duration::from_secs(3))
        );
        assert_eq!(
            c(503, "", false, None),
            CrmError::RateLimited(Duration::from_secs(3))
        );
        assert!(
            matches!(c(401, "token s3cret bad", false, None), CrmError::Access(m) if !m.contains("s3cret") && m.contains("401"))
        );
        assert!(matches!(c(403, "", false, None), CrmError::Access(_)));
        assert!(matches!(c(500, "", false, None), CrmError::Unavailable(_)));
        assert!(matches!(c(408, "", false, None), CrmError::Unavailable(_)));
        assert!(
            matches!(c(302, "", false, None), CrmError::Permanent(m) if m.contains("redirect"))
        );
        let e = c(404, "{\"message\": \"no such table\"}", false, None);
        assert!(
            matches!(&e, CrmError::Permanent(m) if m.contains("404") && m.contains("no such table")),
            "{e:?}"
        );
        let m = ErrorMatch {
            status: 400,
            body_contains: Some("INVALID_QUERY_LOCATOR".into()),
        };
        assert_eq!(
            c(
                400,
                "[{\"errorCode\":\"INVALID_QUERY_LOCATOR\"}]",
                true,
                Some(&m)
            ),
            CrmError::CursorExpired
        );
        // Only for a continuation, only with the text.
        assert!(matches!(
            c(400, "INVALID_QUERY_LOCATOR", false, Some(&m)),
            CrmError::Permanent(_)
        ));
        assert!(matches!(
            c(400, "MALFORMED_QUERY", true, Some(&m)),
            CrmError::Permanent(_)
        ));
        let any = ErrorMatch {
            status: 410,
            body_contains: None,
        };
        assert_eq!(c(410, "", true, Some(&any)), CrmError::CursorExpired);
    }
}
