//! `$batch` request building and response parsing (multipart/mixed), pure.
//!
//! Per "Execute batch operations using the Web API": `POST [org]/api/data/v9.2/$batch` with
//! `Content-Type: multipart/mixed; boundary="batch_<id>"`; each part is `Content-Type:
//! application/http`, `Content-Transfer-Encoding: binary`, a blank line, then the inner request
//! (`PATCH /api/data/v9.2/accounts(...) HTTP/1.1`, headers, blank line, JSON body); the body
//! ends with `--batch_<id>--`. At most 1,000 requests. The response is multipart/mixed with one
//! `application/http` part per request, in order, each holding a status line, headers and body.
//! With `Prefer: odata.continue-on-error` every request runs and fails on its own.

use mapping::{DataverseOp, Method};
use thiserror::Error;

/// Most requests one `$batch` may hold.
pub const MAX_BATCH_OPERATIONS: usize = 1000;

/// A built `$batch` request body and its content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRequest {
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Builds a `$batch` body. `api_path` is the API root's path, e.g. `/api/data/v9.2/`.
pub fn build(ops: &[DataverseOp], api_path: &str, boundary: &str) -> BatchRequest {
    let mut body = Vec::with_capacity(ops.len() * 600);
    for op in ops {
        body.extend_from_slice(b"--");
        body.extend_from_slice(boundary.as_bytes());
        body.extend_from_slice(
            b"\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n",
        );
        let method = match op.method {
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        };
        body.extend_from_slice(format!("{method} {api_path}{} HTTP/1.1\r\n", op.path).as_bytes());
        if op.if_match_any {
            body.extend_from_slice(b"If-Match: *\r\n");
        }
        match &op.body {
            Some(json) => {
                body.extend_from_slice(b"Content-Type: application/json; type=entry\r\n\r\n");
                serde_json::to_writer(&mut body, json).expect("JSON maps always serialise");
                body.extend_from_slice(b"\r\n");
            }
            None => body.extend_from_slice(b"\r\n"),
        }
    }
    body.extend_from_slice(b"--");
    body.extend_from_slice(boundary.as_bytes());
    body.extend_from_slice(b"--\r\n");
    BatchRequest {
        content_type: format!("multipart/mixed; boundary=\"{boundary}\""),
        body,
    }
}

/// One inner response of a `$batch` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchParseError {
    #[error("batch response has no multipart boundary in its Content-Type")]
    NoBoundary,
    #[error("batch response part {0} is malformed: {1}")]
    BadPart(usize, &'static str),
}

/// The boundary parameter of a multipart Content-Type header.
pub fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty() && b.len() <= 200)
    })
}

/// Parses a `$batch` response body into its parts, in order. Change set responses (nested
/// multipart) are flattened into their inner responses.
pub fn parse_response(
    content_type: &str,
    body: &[u8],
) -> Result<Vec<PartResponse>, BatchParseError> {
    let boundary = boundary_of(content_type).ok_or(BatchParseError::NoBoundary)?;
    let mut out = Vec::new();
    parse_multipart(&boundary, body, &mut out, 0)?;
    Ok(out)
}

fn parse_multipart(
    boundary: &str,
    body: &[u8],
    out: &mut Vec<PartResponse>,
    depth: usize,
) -> Result<(), BatchParseError> {
    if depth > 1 {
        return Err(BatchParseError::BadPart(
            out.len(),
            "nested deeper than a change set",
        ));
    }
    let delimiter = format!("--{boundary}");
    let mut segments = split(body, delimiter.as_bytes());
    // Everything before the first delimiter is preamble.
    segments.next();
    for seg in segments {
        if seg.starts_with(b"--") {
            break; // closing delimiter
        }
        let seg = strip_leading_newline(seg);
        let (headers, content) = split_head(seg).ok_or(BatchParseError::BadPart(
            out.len(),
            "no blank line after the part headers",
        ))?;
        let ctype = header(headers, "content-type").unwrap_or_default();
        if ctype.to_ascii_lowercase().starts_with("multipart/mixed") {
            let inner = boundary_of(&ctype).ok_or(BatchParseError::BadPart(
                out.len(),
                "change set without a boundary",
            ))?;
            parse_multipart(&inner, content, out, depth + 1)?;
            continue;
        }
        out.push(
            parse_http(content)
                .ok_or(BatchParseError::BadPart(out.len(), "not an HTTP response"))?,
        );
    }
    Ok(())
}

fn parse_http(content: &[u8]) -> Option<PartResponse> {
    let (head, body) = split_head(strip_leading_newline(content))?;
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.split("\r\n").flat_map(|l| l.split('\n'));
    let status_line = lines.next()?;
    let mut words = status_line.split_whitespace();
    if !words.next()?.starts_with("HTTP/") {
        return None;
    }
    let status: u16 = words.next()?.parse().ok()?;
    if !(100..=599).contains(&status) {
        return None;
    }
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    // Trailing CRLF before the next delimiter belongs to the multipart framing.
    let body = trim_trailing_newline(body).to_vec();
    Some(PartResponse {
        status,
        headers,
        body,
    })
}

fn header(head: &[u8], name: &str) -> Option<String> {
    std::str::from_utf8(head)
        .ok()?
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
}

/// Splits at the first blank line (CRLF CRLF or LF LF).
fn split_head(b: &[u8]) -> Option<(&[u8], &[u8])> {
    if let Some(i) = find(b, b"\r\n\r\n") {
        return Some((&b[..i], &b[i + 4..]));
    }
    find(b, b"\n\n").map(|i| (&b[..i], &b[i + 2..]))
}

fn strip_leading_newline(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\r\n")
        .or_else(|| b.strip_prefix(b"\n"))
        .unwrap_or(b)
}

fn trim_trailing_newline(b: &[u8]) -> &[u8] {
    b.strip_suffix(b"\r\n")
        .or_else(|| b.strip_suffix(b"\n"))
        .unwrap_or(b)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split<'a>(mut hay: &'a [u8], delim: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        match find(hay, delim) {
            Some(i) => {
                let seg = &hay[..i];
                hay = &hay[i + delim.len()..];
                Some(seg)
            }
            None => {
                done = true;
                Some(hay)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_the_documented_shape() {
        let ops = vec![
            DataverseOp {
                method: Method::Patch,
                path: "accounts(00000000-0000-0000-0000-000000000001)".into(),
                if_match_any: false,
                body: Some(json!({"name": "A"}).as_object().unwrap().clone()),
            },
            DataverseOp {
                method: Method::Delete,
                path: "contacts(00000000-0000-0000-0000-000000000002)".into(),
                if_match_any: false,
                body: None,
            },
        ];
        let r = build(&ops, "/api/data/v9.2/", "batch_x");
        assert_eq!(r.content_type, "multipart/mixed; boundary=\"batch_x\"");
        let text = String::from_utf8(r.body).unwrap();
        assert_eq!(
            text,
            "--batch_x\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
             PATCH /api/data/v9.2/accounts(00000000-0000-0000-0000-000000000001) HTTP/1.1\r\n\
             Content-Type: application/json; type=entry\r\n\r\n{\"name\":\"A\"}\r\n\
             --batch_x\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
             DELETE /api/data/v9.2/contacts(00000000-0000-0000-0000-000000000002) HTTP/1.1\r\n\r\n\
             --batch_x--\r\n"
        );
    }

    #[test]
    fn parses_the_documented_response_with_an_error_part_and_a_change_set() {
        // Shape from "Execute batch operations using the Web API" (continue-on-error example).
        let body = "--batchresponse_1\r\n\
Content-Type: application/http\r\n\
Content-Transfer-Encoding: binary\r\n\
\r\n\
HTTP/1.1 204 No Content\r\n\
OData-Version: 4.0\r\n\
OData-EntityId: [Organization URI]/api/data/v9.2/accounts(1)\r\n\
\r\n\
\r\n\
--batchresponse_1\r\n\
Content-Type: application/http\r\n\
Content-Transfer-Encoding: binary\r\n\
\r\n\
HTTP/1.1 400 Bad Request\r\n\
Content-Type: application/json; odata.metadata=minimal\r\n\
OData-Version: 4.0\r\n\
\r\n\
{\"error\":{\"code\":\"0x80044331\",\"message\":\"too long\"}}\r\n\
--batchresponse_1\r\n\
Content-Type: multipart/mixed; boundary=changesetresponse_2\r\n\
\r\n\
--changesetresponse_2\r\n\
Content-Type: application/http\r\n\
Content-Transfer-Encoding: binary\r\n\
Content-ID: 1\r\n\
\r\n\
HTTP/1.1 204 No Content\r\n\
\r\n\
\r\n\
--changesetresponse_2--\r\n\
--batchresponse_1--\r\n";
        let parts =
            parse_response("multipart/mixed; boundary=batchresponse_1", body.as_bytes()).unwrap();
        assert_eq!(
            parts.iter().map(|p| p.status).collect::<Vec<_>>(),
            [204, 400, 204]
        );
        assert_eq!(
            crate::classify::error_of(&parts[1].body),
            Some(("0x80044331".into(), "too long".into()))
        );
        assert!(parts[0].headers.iter().any(|(k, _)| k == "OData-EntityId"));
    }

    #[test]
    fn malformed_responses_are_errors_not_panics() {
        assert_eq!(
            parse_response("multipart/mixed", b""),
            Err(BatchParseError::NoBoundary)
        );
        assert!(parse_response("multipart/mixed; boundary=b", b"--b\r\nno blank line").is_err());
        assert!(
            parse_response(
                "multipart/mixed; boundary=b",
                b"--b\r\n\r\nHTTP/1.1 abc\r\n\r\n--b--"
            )
            .is_err()
        );
        assert_eq!(
            parse_response("multipart/mixed; boundary=b", b"--b--").unwrap(),
            vec![]
        );
    }
}
