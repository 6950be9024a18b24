//! Webhook input from the internet: proving who sent a request ([`verify`]) and reading
//! Salesforce's SOAP outbound messages ([`soap`]). Everything here is pure and bounded, so the
//! webhook step can run it on untrusted bytes and the fuzzers can hammer it.

pub mod soap;
pub mod verify;
