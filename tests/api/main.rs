//! The one integration test binary: real redis-server processes, the app on port 0.

mod automation;
mod bucketing;
mod cli;
mod dashboard;
mod doctor;
mod flags_api;
mod fuzz;
mod helpers;
mod leadership;
mod notifications;
mod ofrep;
mod openapi;
mod replicas;
mod report;
mod sources;
mod store_contract;
