//! The BFF demo's upstream API: answers every request with a JSON description of what it
//! received (method, path, query, headers, body), so you can see what Latchkey's BFF proxy
//! forwards. The access token itself is never echoed: `Authorization` shows as
//! `Bearer <redacted>`, and the token's claims are decoded (not verified) into
//! `token_claims`. A real API verifies the token, e.g. with `latchkey-verify`
//! (examples/resource-server).
//!
//! `GET /ping` answers a fixed `{"pong":true}`: the trivial upstream of scripts/bench-bff.sh.
//!
//! `--listen ADDR` (or `LISTEN`), default `127.0.0.1:9000`.
use axum::body::Bytes;
use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router, routing::get};
use base64::Engine;
use serde_json::{Map, Value, json};

/// Request bodies above this are answered with their size only.
const MAX_ECHOED_BODY: usize = 64 * 1024;

fn redacted_headers(headers: &HeaderMap) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, value) in headers {
        let shown = if name == "authorization" {
            let scheme = value
                .to_str()
                .ok()
                .and_then(|v| v.split(' ').next())
                .unwrap_or("?");
            format!("{scheme} <redacted>")
        } else {
            value.to_str().unwrap_or("<not text>").to_string()
        };
        match out.get_mut(name.as_str()) {
            Some(Value::Array(values)) => values.push(json!(shown)),
            Some(existing) => *existing = json!([existing.take(), shown]),
            None => {
                out.insert(name.to_string(), json!(shown));
            }
        }
    }
    out
}

/// The claims of `Authorization: Bearer <JWT>`, decoded without verification (display only).
fn token_claims(headers: &HeaderMap) -> Value {
    let Some(token) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return Value::Null;
    };
    token
        .split('.')
        .nth(1)
        .and_then(|part| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .ok()
        })
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null)
}

async fn echo(request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(bytes) => bytes,
        Err(_) => Bytes::new(),
    };
    let shown_body = if body.len() <= MAX_ECHOED_BODY {
        json!(String::from_utf8_lossy(&body))
    } else {
        json!(format!("<{} bytes>", body.len()))
    };
    Json(json!({
        "upstream": "latchkey-example-echo-upstream",
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": redacted_headers(&parts.headers),
        "token_claims": token_claims(&parts.headers),
        "body": shown_body,
    }))
    .into_response()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let listen = args
        .windows(2)
        .find(|pair| pair[0] == "--listen")
        .map(|pair| pair[1].clone())
        .or_else(|| std::env::var("LISTEN").ok())
        .unwrap_or_else(|| "127.0.0.1:9000".into());
    let app = Router::new()
        .route("/ping", get(|| async { Json(json!({"pong": true})) }))
        .fallback(echo);
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!(
        "echo upstream listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}
