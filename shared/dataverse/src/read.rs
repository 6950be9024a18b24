//! Reading a table page by page: `GET {set}?$select=…&$filter=…` with
//! `Prefer: odata.maxpagesize=N`, then each `@odata.nextLink` until there is none ("Page
//! results" in the Web API guide: the next link is opaque and carries the original query). One
//! page is in memory at a time; what the caller does with it is up to it (reconcile streams the
//! rows against its spill of the CRM side).

use serde_json::{Map, Value};

use crate::client::WebApiClient;
use crate::writer::WriteError;

/// A table's rows, a page at a time.
pub struct TablePages<'a> {
    client: &'a WebApiClient,
    next: Option<String>,
    prefer: String,
}

impl<'a> TablePages<'a> {
    /// `set` is the entity set (`accounts`); `filter` an OData `$filter` expression.
    pub fn new(
        client: &'a WebApiClient,
        set: &str,
        select: &[String],
        filter: Option<&str>,
        page_size: u32,
    ) -> TablePages<'a> {
        let mut path = format!("{set}?$select={}", encode(&select.join(",")));
        if let Some(f) = filter {
            path.push_str("&$filter=");
            path.push_str(&encode(f));
        }
        TablePages {
            client,
            next: Some(path),
            // Dataverse pages at most 5,000 rows whatever is asked.
            prefer: format!("odata.maxpagesize={}", page_size.clamp(1, 5000)),
        }
    }

    /// The next page's rows; `None` after the last page.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Map<String, Value>>>, WriteError> {
        let Some(path) = self.next.take() else {
            return Ok(None);
        };
        let mut body = self.client.get_json(&path, Some(&self.prefer)).await?;
        self.next = body
            .get("@odata.nextLink")
            .and_then(Value::as_str)
            .map(str::to_string);
        let rows = match body.get_mut("value").map(Value::take) {
            Some(Value::Array(rows)) => rows,
            _ => {
                return Err(WriteError::Permanent {
                    status: 200,
                    code: "no-value".into(),
                    message: format!("a page of {path} has no `value` array"),
                });
            }
        };
        Ok(Some(
            rows.into_iter()
                .filter_map(|r| match r {
                    Value::Object(m) => Some(m),
                    _ => None,
                })
                .collect(),
        ))
    }
}

/// Percent-encodes a query option's value: everything but unreserved characters and the
/// punctuation OData expressions use unescaped.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b','
            | b'('
            | b')'
            | b'\''
            | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            encode("msdyn_source_crm eq 7 and name eq 'a&b'"),
            "msdyn_source_crm%20eq%207%20and%20name%20eq%20'a%26b'"
        );
        assert_eq!(encode("a,b_c"), "a,b_c");
    }
}
