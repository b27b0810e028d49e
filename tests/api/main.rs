//! The one integration test binary: real redis-server processes, the app on port 0.

mod automation;
mod bucketing;
mod dashboard;
mod flags_api;
mod helpers;
mod leadership;
mod notifications;
mod replicas;
mod store_contract;
