//! HTTP tests of the API, all in one binary (one link, shared harness).
//!
//! Most tests drive the router in-process with `oneshot`; `socket.rs` runs a real server on
//! 127.0.0.1:0 for concurrency over real connections.
mod harness;

mod accounts;
mod admin;
mod at_rest;
mod authorize;
mod bff;
mod browser;
mod browser_apps;
mod cookie_mode;
mod discovery;
mod epoch;
mod faults;
mod feed;
mod interop;
mod introspection;
mod keys;
mod nginx;
mod oauth_token;
mod observability;
mod oidc;
mod props;
mod proxy;
mod ratelimit;
mod rejections;
mod revoke;
mod roles;
mod rotation;
mod secrets;
mod sessions;
mod socket;
mod verifier;
