//! Deterministic org data from a seed: companies and people with realistic names (including
//! apostrophes and accents, which exercise SOQL escaping and UTF-8), phones, emails, addresses,
//! a few values longer than Dataverse columns allow, and SystemModstamps spread over time with
//! some ties.

use chrono::Duration;
use serde_json::{Map, Value, json};

use super::config::SalesforceConfig;
use super::schema::Object;
use super::store::Store;

/// SplitMix64: tiny, seedable, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items
            .get(self.below(items.len() as u64) as usize)
            .copied()
            .unwrap_or("")
    }
}

pub(crate) const FIRST: &[&str] = &[
    "Olivia", "Liam", "Emma", "Noah", "Ava", "José", "Zoë", "Mohammed", "Aiko", "Lars", "Chloé",
    "Mateo", "Priya", "Sven", "Ngozi", "Wei", "Siobhan", "Björn", "Amélie", "Tomás",
];
pub(crate) const LAST: &[&str] = &[
    "Smith",
    "Johnson",
    "O'Brien",
    "García",
    "Müller",
    "Nakamura",
    "Okafor",
    "Rossi",
    "Dubois",
    "Kowalski",
    "Andersson",
    "Nguyen",
    "D'Angelo",
    "Fernández",
    "Patel",
    "MacDonald",
    "Schröder",
    "Van der Berg",
    "Kim",
    "Haddad",
];
pub(crate) const ADJ: &[&str] = &[
    "Global",
    "Pacific",
    "Northern",
    "Summit",
    "Blue",
    "Granite",
    "Bright",
    "United",
    "Silver",
    "Evergreen",
    "Pioneer",
    "Atlas",
    "Crescent",
    "Harbor",
    "Keystone",
];
pub(crate) const NOUN: &[&str] = &[
    "Logistics",
    "Dynamics",
    "Foods",
    "Energy",
    "Systems",
    "Health",
    "Robotics",
    "Textiles",
    "Analytics",
    "Media",
    "Pharma",
    "Motors",
    "Capital",
    "Outfitters",
    "Labs",
];
pub(crate) const SUFFIX: &[&str] = &[
    "Inc.", "LLC", "Ltd.", "GmbH", "S.A.", "Corp.", "& Co.", "AG",
];
pub(crate) const STREETS: &[&str] = &[
    "Market St",
    "Main Street",
    "Rue de Rivoli",
    "Königstraße",
    "Oak Avenue",
    "High Street",
    "Via Roma",
    "Elm Drive",
    "Baker Street",
    "Sunset Blvd",
];
/// (city, state, postal code, country)
pub(crate) const PLACES: &[(&str, &str, &str, &str)] = &[
    ("San Francisco", "CA", "94105", "United States"),
    ("Austin", "TX", "73301", "United States"),
    ("New York", "NY", "10001", "United States"),
    ("London", "", "EC1A 1BB", "United Kingdom"),
    ("Paris", "", "75001", "France"),
    ("München", "BY", "80331", "Germany"),
    ("Toronto", "ON", "M5H 2N2", "Canada"),
    ("Sydney", "NSW", "2000", "Australia"),
    ("Tokyo", "", "100-0001", "Japan"),
    ("São Paulo", "SP", "01000-000", "Brazil"),
];
pub(crate) const INDUSTRIES: &[&str] = &[
    "Technology",
    "Manufacturing",
    "Retail",
    "Healthcare",
    "Finance",
    "Energy",
    "Media",
];
pub(crate) const TITLES: &[&str] = &[
    "CEO",
    "VP Sales",
    "Head of Support",
    "Procurement Manager",
    "CTO",
    "Office Manager",
    "Account Executive",
    "Director of Operations",
];
pub(crate) const DEPARTMENTS: &[&str] =
    &["Sales", "Support", "Finance", "IT", "Operations", "Legal"];

pub(crate) fn phone(rng: &mut Rng, country: &str) -> String {
    let a = rng.below(800) + 200;
    let b = rng.below(10_000);
    match country {
        "United States" | "Canada" => format!("({a}) 555-{b:04}"),
        "United Kingdom" => format!("+44 20 7946 {:04}", b),
        "France" => format!(
            "+33 1 {:02} {:02} {:02} {:02}",
            a % 100,
            b / 100,
            b % 100,
            a / 10
        ),
        "Germany" => format!("+49 89 {a}{b:04}"),
        _ => format!("+61 2 {a} {b:04}"),
    }
}

pub(crate) fn slug(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_lowercase()
}

pub(crate) fn account_fields(rng: &mut Rng, i: usize, overlong: bool) -> Map<String, Value> {
    let (adj, noun, suffix) = (rng.pick(ADJ), rng.pick(NOUN), rng.pick(SUFFIX));
    let mut name = format!("{adj} {noun} {suffix}");
    if overlong {
        // A real-world legal name with a long division suffix: more than Dataverse's 160.
        name = format!(
            "{name} — {} International Holdings, Regional Subsidiaries, Joint Ventures and Affiliated Service Companies of the Greater Metropolitan Area, Division {i}",
            noun
        );
    }
    let (city, state, zip, country) = PLACES[rng.below(PLACES.len() as u64) as usize];
    let street = format!("{} {}", rng.below(9000) + 1, rng.pick(STREETS));
    let domain = format!("{}{}.example.com", slug(adj), slug(noun));
    let mut m = Map::new();
    let mut set = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    set("Name", json!(name));
    set(
        "Type",
        json!(["Customer - Direct", "Customer - Channel", "Prospect"][i % 3]),
    );
    set("BillingStreet", json!(street));
    set("BillingCity", json!(city));
    set(
        "BillingState",
        if state.is_empty() {
            Value::Null
        } else {
            json!(state)
        },
    );
    set("BillingPostalCode", json!(zip));
    set("BillingCountry", json!(country));
    set("ShippingStreet", json!(street));
    set("ShippingCity", json!(city));
    set("ShippingCountry", json!(country));
    set("Phone", json!(phone(rng, country)));
    set("Website", json!(format!("https://www.{domain}")));
    set("AccountNumber", json!(format!("CD{:06}", 100_000 + i)));
    set("Industry", json!(rng.pick(INDUSTRIES)));
    set("NumberOfEmployees", json!(rng.below(50_000) + 1));
    set(
        "Description",
        json!(format!("{adj} {noun}: key account in {city}.")),
    );
    m
}

pub(crate) fn contact_fields(
    rng: &mut Rng,
    account: Option<(&str, &str)>,
    overlong: bool,
) -> Map<String, Value> {
    let first = rng.pick(FIRST);
    let mut last = rng.pick(LAST).to_string();
    if overlong {
        last = format!("{last}-Montgomery-Fitzwilliam-Habsburg-Lorraine-Wittelsbach");
    }
    let (city, state, zip, country) = PLACES[rng.below(PLACES.len() as u64) as usize];
    let domain = account.map_or_else(|| "mail.example.org".to_string(), |(_, d)| d.to_string());
    let mut m = Map::new();
    let mut set = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    if let Some((id, _)) = account {
        set("AccountId", json!(id));
    }
    set("FirstName", json!(first));
    set("LastName", json!(last));
    set(
        "Salutation",
        json!(["Mr.", "Ms.", "Dr.", "Mx."][rng.below(4) as usize]),
    );
    set(
        "Email",
        json!(format!("{}.{}@{domain}", slug(first), slug(&last))),
    );
    set("Phone", json!(phone(rng, country)));
    set("MobilePhone", json!(phone(rng, country)));
    set("Title", json!(rng.pick(TITLES)));
    set("Department", json!(rng.pick(DEPARTMENTS)));
    set(
        "MailingStreet",
        json!(format!("{} {}", rng.below(900) + 1, rng.pick(STREETS))),
    );
    set("MailingCity", json!(city));
    set(
        "MailingState",
        if state.is_empty() {
            Value::Null
        } else {
            json!(state)
        },
    );
    set("MailingPostalCode", json!(zip));
    set("MailingCountry", json!(country));
    set(
        "Birthdate",
        json!(format!(
            "19{:02}-{:02}-{:02}",
            50 + rng.below(50),
            1 + rng.below(12),
            1 + rng.below(28)
        )),
    );
    m
}

/// Fills a store with the configured org.
pub fn populate(store: &mut Store, cfg: &SalesforceConfig) {
    let mut rng = Rng::new(cfg.seed);
    let contacts = cfg.accounts * cfg.contacts_per_account + cfg.orphan_contacts;
    let total = (cfg.accounts + contacts).max(1) as i64;
    let span_ms = Duration::days(cfg.history_days.max(1)).num_milliseconds();
    let step = (span_ms / total).max(1);
    let mut t = cfg.history_start;
    let mut n = 0usize;
    let mut next_stamp = |rng: &mut Rng| {
        n += 1;
        let tie =
            cfg.shared_stamp_every > 0 && n > 1 && rng.below(cfg.shared_stamp_every as u64) == 0;
        if !tie {
            t += Duration::milliseconds(1 + rng.below((2 * step) as u64) as i64);
        }
        t
    };
    // Interleave accounts and their contacts in time, as an org grows.
    for i in 0..cfg.accounts {
        let overlong = i < cfg.overlong_values;
        let fields = account_fields(&mut rng, i, overlong);
        let domain = fields
            .get("Website")
            .and_then(Value::as_str)
            .map(|w| w.trim_start_matches("https://www.").to_string())
            .unwrap_or_default();
        let stamp = next_stamp(&mut rng);
        let Ok(id) = store.insert_at(Object::Account, fields, stamp) else {
            continue;
        };
        for j in 0..cfg.contacts_per_account {
            let overlong = i < cfg.overlong_values && j == 0;
            let c = contact_fields(&mut rng, Some((&id, &domain)), overlong);
            let stamp = next_stamp(&mut rng);
            let _ = store.insert_at(Object::Contact, c, stamp);
        }
    }
    for _ in 0..cfg.orphan_contacts {
        let c = contact_fields(&mut rng, None, false);
        let stamp = next_stamp(&mut rng);
        let _ = store.insert_at(Object::Contact, c, stamp);
    }
}
