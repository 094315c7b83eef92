//! HTTP handlers, one module per part of the API (docs/api.md).
pub mod accounts;
pub mod admin;
pub mod authorize;
pub mod discovery;
pub mod feed;
pub mod health;
pub mod oauth;
pub mod oauth_authorize;
pub mod oauth_code;
pub mod oidc;
pub mod pages;
pub mod session;
pub mod session_token;
pub mod sessions;
