//! `$batch` ("Execute batch operations using the Web API",
//! https://learn.microsoft.com/power-apps/developer/data-platform/webapi/execute-batch-operations-using-web-api):
//! multipart/mixed parsing and formatting, change sets (atomic, `Content-ID` and `$n`
//! references), the 1,000-request limit, stop-at-first-error by default and
//! `Prefer: odata.continue-on-error`. Requests run in order; responses come back in order.

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use uuid::Uuid;

use crate::api::{ApiRequest, ApiResponse, Ctx, execute};
use crate::error::ApiError;
use crate::state::Store;

/// Documented maximum number of requests in one batch.
pub const MAX_REQUESTS: usize = 1000;

#[derive(Debug)]
struct Part {
    content_id: Option<String>,
    request: ApiRequest,
}

#[derive(Debug)]
enum Item {
    Single(Part),
    ChangeSet(Vec<Part>),
}

/// Boundary parameter of a multipart Content-Type.
pub fn boundary(content_type: &str) -> Option<String> {
    let mut segs = content_type.split(';');
    let mime = segs.next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/mixed") {
        return None;
    }
    segs.find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    })
    .filter(|b| !b.is_empty())
}

/// Splits a multipart body into its parts (the text between delimiter lines).
fn split_parts<'a>(body: &'a str, boundary: &str) -> Result<Vec<&'a str>, ApiError> {
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    // Preamble before the first delimiter is ignored (RFC 2046).
    let start = rest.find(&delim).ok_or_else(|| {
        ApiError::bad_request("The batch body has no part with the declared boundary.")
    })?;
    rest = &rest[start + delim.len()..];
    loop {
        if rest.starts_with("--") {
            return Ok(parts);
        }
        let next = rest.find(&format!("\n{delim}")).ok_or_else(|| {
            ApiError::bad_request("The batch body is missing its closing boundary.")
        })?;
        let part = rest[..next].trim_end_matches('\r');
        parts.push(
            part.trim_start_matches(['\r', '\n'])
                .trim_start_matches(['\r', '\n']),
        );
        rest = &rest[next + 1 + delim.len()..];
    }
}

/// Splits `headers CRLF CRLF body`.
fn split_head(text: &str) -> (&str, &str) {
    for sep in ["\r\n\r\n", "\n\n"] {
        if let Some(i) = text.find(sep) {
            return (&text[..i], &text[i + sep.len()..]);
        }
    }
    (text, "")
}

fn headers_of(head: &str) -> Vec<(String, String)> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn find<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Parses an `application/http` part into a request relative to the API root.
fn parse_part(text: &str) -> Result<Part, ApiError> {
    let (outer_head, inner) = split_head(text);
    let outer = headers_of(outer_head);
    let ct = find(&outer, "Content-Type").unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("application/http") {
        return Err(ApiError::bad_request(format!(
            "Each batch part must have Content-Type application/http, found '{ct}'."
        )));
    }
    let (head, body) = split_head(inner.trim_start_matches(['\r', '\n']));
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or("").trim();
    let mut words = request_line.split_whitespace();
    let (Some(method), Some(url)) = (words.next(), words.next()) else {
        return Err(ApiError::bad_request(format!(
            "Invalid request line '{request_line}' in batch part."
        )));
    };
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| ApiError::bad_request(format!("Invalid method '{method}' in batch part.")))?;
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':')
            && let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.trim().as_bytes()),
                HeaderValue::from_str(v.trim()),
            )
        {
            headers.append(k, v);
        }
    }
    // Accept `/api/data/v9.2/x`, an absolute URL, or a path relative to the API root.
    let rel = match url.find("/api/data/v9.2/") {
        Some(i) => &url[i + "/api/data/v9.2/".len()..],
        None => url.trim_start_matches('/'),
    };
    let (path, query) = match rel.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (rel.to_string(), None),
    };
    Ok(Part {
        content_id: find(&outer, "Content-ID").map(str::to_string),
        request: ApiRequest {
            method,
            path,
            query,
            headers,
            body: body.trim_end().as_bytes().to_vec(),
        },
    })
}

fn parse(body: &str, boundary: &str) -> Result<Vec<Item>, ApiError> {
    let mut items = Vec::new();
    for part in split_parts(body, boundary)? {
        let (head, inner) = split_head(part);
        let headers = headers_of(head);
        let ct = find(&headers, "Content-Type").unwrap_or("");
        if let Some(cs_boundary) = boundary_of_changeset(ct) {
            let mut set = Vec::new();
            for p in split_parts(inner, &cs_boundary)? {
                let part = parse_part(p)?;
                if part.request.method == Method::GET {
                    return Err(ApiError::bad_request(
                        "A change set can't contain GET requests.",
                    ));
                }
                set.push(part);
            }
            items.push(Item::ChangeSet(set));
        } else {
            items.push(Item::Single(parse_part(part)?));
        }
    }
    Ok(items)
}

fn boundary_of_changeset(ct: &str) -> Option<String> {
    boundary(ct)
}

fn reason(s: StatusCode) -> &'static str {
    s.canonical_reason().unwrap_or("")
}

/// Renders one response as an `application/http` part.
fn render(out: &mut String, boundary: &str, resp: &ApiResponse, content_id: Option<&str>) {
    out.push_str(&format!(
        "--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n"
    ));
    if let Some(id) = content_id {
        out.push_str(&format!("Content-ID: {id}\r\n"));
    }
    out.push_str(&format!(
        "\r\nHTTP/1.1 {} {}\r\nOData-Version: 4.0\r\n",
        resp.status.as_u16(),
        reason(resp.status)
    ));
    for (k, v) in &resp.headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(&String::from_utf8_lossy(&resp.body));
    out.push_str("\r\n");
}

/// Substitutes `$n` Content-ID references at the start of a URL and in `@odata.bind` values.
fn substitute(
    req: &mut ApiRequest,
    refs: &[(String, String)],
    api_url: &str,
) -> Result<(), ApiError> {
    if let Some(rest) = req.path.strip_prefix('$') {
        let (id, tail) = rest.split_at(
            rest.find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest.len()),
        );
        let target = refs
            .iter()
            .find(|(cid, _)| cid == id)
            .map(|(_, url)| url)
            .ok_or_else(|| ApiError::bad_request(format!("Content-ID reference '${id}' does not refer to an earlier request in the change set.")))?;
        req.path = format!("{}{tail}", target.trim_start_matches(api_url));
    }
    if !refs.is_empty()
        && let Ok(serde_json::Value::Object(mut body)) =
            serde_json::from_slice::<serde_json::Value>(&req.body)
    {
        let mut changed = false;
        for (k, v) in body.iter_mut() {
            if k.ends_with("@odata.bind")
                && let Some(s) = v.as_str()
                && let Some(id) = s.strip_prefix('$')
                && let Some((_, url)) = refs.iter().find(|(cid, _)| cid == id)
            {
                *v = serde_json::Value::from(url.clone());
                changed = true;
            }
        }
        if changed {
            req.body = serde_json::to_vec(&body).unwrap_or_default();
        }
    }
    Ok(())
}

/// Executes a `$batch` request body. Returns the multipart response (status 200) or a
/// top-level error for a malformed or oversized batch.
pub fn run(ctx: &mut Ctx<'_>, store: &mut Store, headers: &HeaderMap, body: &[u8]) -> ApiResponse {
    match run_inner(ctx, store, headers, body) {
        Ok(r) => r,
        Err(e) => ApiResponse::error(&e),
    }
}

fn run_inner(
    ctx: &mut Ctx<'_>,
    store: &mut Store,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<ApiResponse, ApiError> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let b = boundary(ct).ok_or_else(|| {
        ApiError::bad_request(
            "A $batch request needs Content-Type multipart/mixed with a boundary.",
        )
    })?;
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("The batch body is not valid UTF-8."))?;
    let items = parse(text, &b)?;
    let count: usize = items
        .iter()
        .map(|i| match i {
            Item::Single(_) => 1,
            Item::ChangeSet(s) => s.len(),
        })
        .sum();
    if count > MAX_REQUESTS {
        return Err(ApiError::bad_request(format!(
            "The number of requests in the batch ({count}) exceeds the maximum of {MAX_REQUESTS}."
        )));
    }
    let continue_on_error = headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|p| p.trim() == "odata.continue-on-error"));
    let resp_boundary = format!("batchresponse_{}", Uuid::new_v4());
    let mut out = String::new();
    for item in items {
        let failed = match item {
            Item::Single(part) => {
                let resp = execute(ctx, store, &part.request);
                render(&mut out, &resp_boundary, &resp, None);
                !resp.status.is_success()
            }
            Item::ChangeSet(parts) => {
                let snapshot = store.clone();
                let mut refs: Vec<(String, String)> = Vec::new();
                let mut done: Vec<(ApiResponse, Option<String>)> = Vec::new();
                let mut error = None;
                for mut part in parts {
                    let resp = match substitute(&mut part.request, &refs, ctx.api_url) {
                        Ok(()) => execute(ctx, store, &part.request),
                        Err(e) => ApiResponse::error(&e),
                    };
                    if !resp.status.is_success() {
                        error = Some(resp);
                        break;
                    }
                    if let (Some(cid), Some(url)) =
                        (&part.content_id, resp.header("OData-EntityId"))
                    {
                        refs.push((cid.clone(), url.to_string()));
                    }
                    done.push((resp, part.content_id));
                }
                match error {
                    // A failed change set is rolled back and answered by its error alone.
                    Some(err) => {
                        *store = snapshot;
                        render(&mut out, &resp_boundary, &err, None);
                        true
                    }
                    None => {
                        let cs = format!("changesetresponse_{}", Uuid::new_v4());
                        out.push_str(&format!(
                            "--{resp_boundary}\r\nContent-Type: multipart/mixed; boundary={cs}\r\n\r\n"
                        ));
                        for (resp, cid) in &done {
                            render(&mut out, &cs, resp, cid.as_deref());
                        }
                        out.push_str(&format!("--{cs}--\r\n"));
                        false
                    }
                }
            }
        };
        if failed && !continue_on_error {
            break;
        }
    }
    out.push_str(&format!("--{resp_boundary}--\r\n"));
    let mut resp = ApiResponse {
        status: StatusCode::OK,
        headers: vec![(
            "Content-Type".into(),
            format!("multipart/mixed; boundary={resp_boundary}"),
        )],
        body: out.into_bytes(),
    };
    if continue_on_error {
        resp.headers.push((
            "Preference-Applied".into(),
            "odata.continue-on-error".into(),
        ));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_parsing() {
        assert_eq!(
            boundary("multipart/mixed; boundary=\"batch_1\"").as_deref(),
            Some("batch_1")
        );
        assert_eq!(boundary("multipart/mixed;boundary=b"), Some("b".into()));
        assert_eq!(boundary("application/json"), None);
    }

    #[test]
    fn parses_parts_and_changesets() {
        let body = "--b\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\nPATCH /api/data/v9.2/accounts(00000000-0000-0000-0000-000000000001) HTTP/1.1\r\nContent-Type: application/json\r\n\r\n{\"name\":\"a\"}\r\n--b\r\nContent-Type: multipart/mixed; boundary=cs\r\n\r\n--cs\r\nContent-Type: application/http\r\nContent-ID: 1\r\n\r\nPOST accounts HTTP/1.1\r\n\r\n{}\r\n--cs--\r\n--b--\r\n";
        let items = parse(body, "b").unwrap();
        assert_eq!(items.len(), 2);
        match &items[0] {
            Item::Single(p) => {
                assert_eq!(
                    p.request.path,
                    "accounts(00000000-0000-0000-0000-000000000001)"
                );
                assert_eq!(p.request.body, b"{\"name\":\"a\"}");
            }
            Item::ChangeSet(_) => panic!("expected a single request"),
        }
        assert!(
            matches!(&items[1], Item::ChangeSet(s) if s.len() == 1 && s[0].content_id.as_deref() == Some("1"))
        );
        assert!(parse("--b\r\nno end", "b").is_err());
    }
}
