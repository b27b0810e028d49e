//! The one integration test binary: real redis-server processes, the app on port 0.

mod abuse;
mod automation;
mod bad_input;
mod bucketing;
mod cli;
mod clients;
mod dashboard;
mod doctor;
mod evidence;
mod faults;
mod flags_api;
mod fuzz;
mod helpers;
mod leadership;
mod notifications;
mod ofrep;
mod openapi;
mod races;
mod replicas;
mod report;
mod sdk_rust;
mod secrets;
mod shutdown;
mod sources;
mod store_contract;
mod timeline;
