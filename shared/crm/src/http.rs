//! What every HTTP CRM client shares: its HTTP client, which URLs may receive our credentials,
//! and reading the walk position off a listed record.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use reqwest::header::HeaderMap;

use mapping::transform::parse_timestamp;
use reqwest::Url;
use serde_json::Value;

use crate::reader::{Checkpoint, CrmError};

/// The IP address a URL's host is written as, if it is one (`[...]` stripped from IPv6; the URL
/// parser has already turned decimal, octal and hex IPv4 forms into dotted quads).
fn ip_of(url: &Url) -> Option<IpAddr> {
    url.host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Where cloud instance metadata answers: the link-local ranges (AWS, Azure and GCP serve it on
/// 169.254.169.254, "Instance metadata service" in the EC2 user guide) and EC2's IPv6 endpoint
/// `fd00:ec2::254` (IPv4-mapped forms included). No CRM lives there; a request there from a
/// Lambda function would hand our credentials, or its role's, to whoever steered it.
fn is_metadata(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => {
            v6 == "fd00:ec2::254"
                .parse::<std::net::Ipv6Addr>()
                .expect("literal")
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

fn is_loopback(url: &Url) -> bool {
    url.host_str() == Some("localhost") || ip_of(url).is_some_and(|ip| ip.is_loopback())
}

/// https everywhere, plain http only on loopback (the emulators, local tests): a token or Basic
/// credentials must not cross a network in clear text. Never a cloud metadata address.
pub fn check_origin(url: &Url, crm: &str) -> Result<(), CrmError> {
    if ip_of(url).is_some_and(is_metadata) {
        return Err(CrmError::Permanent(format!(
            "refusing a {crm} URL on {}: a cloud metadata address",
            url.host_str().unwrap_or("?")
        )));
    }
    let loopback = is_loopback(url);
    match url.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        other => Err(CrmError::Permanent(format!(
            "refusing a {other}:// {crm} URL on {}: https is required",
            url.host_str().unwrap_or("?")
        ))),
    }
}

/// The HTTP client of a CRM client: `timeout` per request, 10 s to connect.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, CrmError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| CrmError::Permanent(format!("cannot build HTTP client: {e}")))
}

/// A URL a CRM hands back for us to call with credentials (Salesforce's token response
/// `instance_url`), which may legitimately be on another host than the one configured
/// (`login.salesforce.com` answers with `https://acme.my.salesforce.com`): it must pass
/// [`check_origin`], keep the configured URL's scheme and class of host, and be on the configured
/// host's domain (its last two labels) or one of `vendor_domains`. So a local emulator
/// (http://127.0.0.1) may only send us to loopback, and an https deployment never to plain http,
/// an IP literal, loopback or a metadata address. `field` names the value in the error.
pub fn check_returned_origin(
    configured: &Url,
    url: &Url,
    vendor_domains: &[&str],
    field: &str,
    crm: &str,
) -> Result<(), CrmError> {
    let refuse = |why: &str| {
        CrmError::Permanent(format!(
            "refusing {crm} {field} {}://{}: {why}",
            url.scheme(),
            url.host_str().unwrap_or("?")
        ))
    };
    check_origin(url, crm).map_err(|_| refuse("https is required, and no metadata address"))?;
    if url.scheme() != configured.scheme() {
        return Err(refuse(&format!(
            "the configured URL is {}://",
            configured.scheme()
        )));
    }
    if is_loopback(configured) {
        return if is_loopback(url) {
            Ok(())
        } else {
            Err(refuse("the configured URL is on loopback, this is not"))
        };
    }
    if ip_of(configured).is_some() {
        return if url.host_str() == configured.host_str() {
            Ok(())
        } else {
            Err(refuse(
                "the configured URL is an IP address, this is another host",
            ))
        };
    }
    if ip_of(url).is_some() || is_loopback(url) {
        return Err(refuse(
            "an IP address or loopback where a host name is configured",
        ));
    }
    let host = url.host_str().unwrap_or("").to_ascii_lowercase();
    let configured_host = configured.host_str().unwrap_or("").to_ascii_lowercase();
    let labels: Vec<&str> = configured_host.rsplitn(3, '.').collect();
    let own = match labels.as_slice() {
        [tld, name, ..] => format!("{name}.{tld}"),
        _ => configured_host.clone(),
    };
    let under = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
    if under(&own) || vendor_domains.iter().any(|d| under(d)) {
        Ok(())
    } else {
        Err(refuse(&format!(
            "not on {own}{}",
            vendor_domains
                .iter()
                .map(|d| format!(" or {d}"))
                .collect::<String>()
        )))
    }
}

pub fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// A next-page link (or a cursor that is one) joined to `base`, accepted only on `base`'s origin
/// and under the API's `path_prefix`: following it sends our credentials, so a link elsewhere is
/// a permanent error, never followed.
pub fn follow_link(base: &Url, link: &str, path_prefix: &str, crm: &str) -> Result<Url, CrmError> {
    let url = base
        .join(link)
        .map_err(|e| CrmError::Permanent(format!("invalid {crm} next-page URL: {e}")))?;
    if !same_origin(&url, base) {
        return Err(CrmError::Permanent(format!(
            "refusing to follow a next-page URL on another host ({}); {crm} is {}",
            url.host_str().unwrap_or("?"),
            base.host_str().unwrap_or("?")
        )));
    }
    if !url.path().starts_with(path_prefix) {
        return Err(CrmError::Permanent(format!(
            "refusing a {crm} next-page URL outside {path_prefix}"
        )));
    }
    Ok(url)
}

/// `X-RateLimit-Reset` values above this are epoch seconds, below it seconds to wait (APIs
/// use both; no delay is 30 years long).
const EPOCH_THRESHOLD: u64 = 1_000_000_000;

/// How long to wait: `Retry-After` (seconds or an HTTP date), else `X-RateLimit-Reset` (epoch
/// seconds, or seconds to wait when small), else `default`. Never zero.
pub fn retry_after(headers: &HeaderMap, now: SystemTime, default: Duration) -> Duration {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if let Some(v) = text("Retry-After") {
        if let Ok(s) = v.parse::<u64>() {
            return Duration::from_secs(s.max(1));
        }
        if let Ok(t) = DateTime::parse_from_rfc2822(v) {
            let at = t.with_timezone(&Utc).timestamp().max(0) as u64;
            return Duration::from_secs(at.saturating_sub(now_secs).max(1));
        }
    }
    if let Some(v) = text("X-RateLimit-Reset") {
        let secs = v
            .parse::<u64>()
            .ok()
            .or_else(|| v.parse::<f64>().ok().map(|f| f.max(0.0).ceil() as u64));
        if let Some(n) = secs {
            let wait = if n > EPOCH_THRESHOLD {
                n.saturating_sub(now_secs)
            } else {
                n
            };
            return Duration::from_secs(wait.max(1));
        }
    }
    default
}

/// The (last modified, id) position of a listed record; the timestamp in any of the CRMs'
/// formats (see `mapping::transform::parse_timestamp`).
pub fn checkpoint_of(
    record: &Value,
    id_field: &str,
    stamp_field: &str,
    crm: &str,
) -> Result<Checkpoint, CrmError> {
    let id = record
        .get(id_field)
        .and_then(Value::as_str)
        .ok_or_else(|| CrmError::Permanent(format!("{crm} record without {id_field}")))?;
    let modified_at = record
        .get(stamp_field)
        .and_then(parse_timestamp)
        .ok_or_else(|| {
            CrmError::Permanent(format!(
                "{crm} record {id} without a readable {stamp_field}"
            ))
        })?;
    Ok(Checkpoint {
        modified_at,
        id: id.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn metadata_addresses_are_refused_in_every_spelling() {
        for u in [
            "https://169.254.169.254/latest/meta-data/",
            "http://169.254.169.254/",
            "https://2852039166/",
            "https://0xa9fea9fe/",
            "https://0251.0376.0251.0376/",
            "https://[fd00:ec2::254]/",
            "https://[::ffff:169.254.169.254]/",
            "https://[fe80::1]/",
            "https://169.254.170.2/v2/credentials",
        ] {
            let e = check_origin(&url(u), "X").unwrap_err();
            assert!(e.to_string().contains("metadata"), "{u}: {e}");
        }
        assert!(check_origin(&url("http://127.0.0.1:8080/"), "X").is_ok());
        assert!(check_origin(&url("http://[::1]:8080/"), "X").is_ok());
        assert!(check_origin(&url("http://localhost:8080/"), "X").is_ok());
        assert!(check_origin(&url("http://10.0.0.1/"), "X").is_err());
        assert!(check_origin(&url("https://acme.my.salesforce.com/"), "X").is_ok());
    }

    #[test]
    fn next_links_stay_on_the_origin_under_the_prefix() {
        let base = url("https://acme.my.salesforce.com/services/data/v62.0/query");
        let ok = follow_link(
            &base,
            "/services/data/v62.0/query/01g-200",
            "/services/data/",
            "S",
        );
        assert_eq!(
            ok.unwrap().as_str(),
            "https://acme.my.salesforce.com/services/data/v62.0/query/01g-200"
        );
        for link in [
            "https://evil.example/services/data/v62.0/query/01g-200",
            "http://acme.my.salesforce.com/services/data/v62.0/query/01g-200",
            "https://acme.my.salesforce.com:444/services/data/",
            "http://169.254.169.254/latest/meta-data/",
            "https://169.254.169.254/services/data/",
            "https://[fd00:ec2::254]/services/data/",
            "//169.254.169.254/services/data/",
            "//evil.example/services/data/",
            "\\\\evil.example/services/data/",
            "https://acme.my.salesforce.com@evil.example/services/data/",
            "https://evil.example#@acme.my.salesforce.com/services/data/",
            "https://acme.my.salesforce.com.evil.example/services/data/",
            "/services/data/../../latest/meta-data",
            "/services/data/%2e%2e/%2e%2e/latest/meta-data",
            "file:///etc/passwd",
            "gopher://acme.my.salesforce.com/services/data/",
        ] {
            assert!(
                matches!(
                    follow_link(&base, link, "/services/data/", "S"),
                    Err(CrmError::Permanent(_))
                ),
                "{link} was followed"
            );
        }
    }

    #[test]
    fn returned_origins_keep_the_configured_scheme_host_class_and_domain() {
        let sf = ["salesforce.com"];
        let check = |configured: &str, got: &str| {
            check_returned_origin(
                &url(configured),
                &url(got),
                &sf,
                "instance_url",
                "Salesforce",
            )
        };
        let login = "https://login.salesforce.com/services/oauth2/token";
        for good in [
            "https://acme.my.salesforce.com",
            "https://acme--uat.sandbox.my.salesforce.com",
            "https://na1.salesforce.com",
        ] {
            assert!(check(login, good).is_ok(), "{good}");
        }
        // A custom login host (a CNAME on the company's domain) still sends us to Salesforce.
        assert!(
            check(
                "https://login.acme.example/services/oauth2/token",
                "https://acme.my.salesforce.com"
            )
            .is_ok()
        );
        assert!(
            check(
                "https://login.acme.example/services/oauth2/token",
                "https://sso.acme.example"
            )
            .is_ok()
        );
        for bad in [
            "http://acme.my.salesforce.com",
            "https://evil.example",
            "https://salesforce.com.evil.example",
            "https://evilsalesforce.com",
            "https://169.254.169.254",
            "http://169.254.169.254/latest/meta-data/",
            "https://[fd00:ec2::254]",
            "https://127.0.0.1",
            "https://localhost",
            "https://10.0.0.5",
        ] {
            let e = check(login, bad).unwrap_err().to_string();
            assert!(e.contains("instance_url"), "{bad}: {e}");
        }
        // The local emulator: loopback http configured, loopback http returned, nothing else.
        let local = "http://127.0.0.1:9000/services/oauth2/token";
        assert!(check(local, "http://127.0.0.1:9000").is_ok());
        assert!(check(local, "http://127.0.0.1:9001").is_ok());
        for bad in [
            "http://169.254.169.254",
            "http://[fd00:ec2::254]",
            "http://acme.my.salesforce.com",
            "https://acme.my.salesforce.com",
        ] {
            assert!(check(local, bad).is_err(), "{bad}");
        }
    }
}
