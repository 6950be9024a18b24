//! Test support shared by the end-to-end tests over SQS (this package) and the functions'
//! runtime tests (`functions/*/tests/runtime_api.rs` include this module by path): moto as
//! the SQS endpoint, Lambda's SQS event source mapping and API Gateway events, and a Lambda
//! Runtime API double to run the function binaries against.
// Each test binary uses a different part of it.
#![allow(dead_code)]

pub mod lambda;
pub mod moto;
pub mod runtime_api;
