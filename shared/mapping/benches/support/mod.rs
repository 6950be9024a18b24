//! The benchmark's page: Salesforce-shaped contacts of about 1 KB each, shared by the criterion
//! bench and the callgrind workload (`examples/map_profile.rs`) so both measure the same input.

use serde_json::{Value, json};

pub fn contact(i: usize) -> Value {
    json!({
        "attributes": {"type": "Contact", "url": format!("/services/data/v62.0/sobjects/Contact/003D00000{i:06}AAA")},
        "Id": format!("003D00000{i:06}AAA"),
        "AccountId": format!("001D00000{:06}AAA", i / 5),
        "Salutation": "Ms.",
        "FirstName": "Rose",
        "LastName": format!("Gonzalez-{i}"),
        "Email": format!("Rose.Gonzalez{i}@Example.COM"),
        "Phone": "(512) 757-6000",
        "MobilePhone": "+1 512 757 9340",
        "HomePhone": "512.555.0101",
        "Title": "SVP, Procurement and Strategic Sourcing",
        "Department": "Procurement",
        "MailingStreet": "312 Constitution Place",
        "MailingCity": "Austin",
        "MailingState": "TX",
        "MailingPostalCode": "78767",
        "MailingCountry": "USA",
        "Birthdate": "1975-04-12",
        "Description": "Key decision maker for all procurement. Prefers email; call after 10am CT. Met at the 2023 user conference; interested in the enterprise tier and the analytics add-on.",
        "AssistantName": "Jamie Park",
        "AssistantPhone": "(512) 757-6001",
        "SystemModstamp": "2024-01-16T17:43:01.000+0000",
        "LastModifiedDate": "2024-01-16T17:43:01.000+0000",
        "CreatedDate": "2020-03-02T09:00:00.000+0000",
        "OwnerId": "005D0000001AbcDIAS",
        "LeadSource": "Trade Show"
    })
}
