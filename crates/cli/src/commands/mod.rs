//! One module per command group.
pub mod config;
pub mod keys;
pub mod migrate;
pub mod serve;
pub mod session;
pub mod user;
