//! `GET /v1/revocations`: the revocation feed, as JSON pages or as Server-Sent Events.
use crate::auth::{bearer_token, secrets_equal};
use crate::error::{ApiError, ApiResult};
use crate::extract::Query;
use crate::feed::PAGE;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use latchkey_core::RevocationEvent;
use serde::Deserialize;
use serde_json::json;
use std::convert::Infallible;
use std::time::Duration;

#[derive(Deserialize)]
pub struct FeedQuery {
    after: Option<String>,
}

/// `{"sid","exp"}`: every token of the session is revoked; with `"iat_before"` (a role
/// removal, docs/decisions/0011) only its tokens whose `iat` is less than that. A verifier that
/// ignores `iat_before` treats the entry as a revocation: it fails safe.
fn event_json(e: &RevocationEvent) -> serde_json::Value {
    match e.iat_before {
        None => json!({"sid": e.sid.to_string(), "exp": e.exp.unix_timestamp()}),
        Some(before) => json!({
            "sid": e.sid.to_string(),
            "exp": e.exp.unix_timestamp(),
            "iat_before": before.unix_timestamp(),
        }),
    }
}

/// `feed_token`, when configured, must come as `Authorization: Bearer`.
fn check_feed_token(state: &AppState, headers: &HeaderMap) -> ApiResult<()> {
    let Some(expected) = &state.config.feed_token else {
        return Ok(());
    };
    let presented = bearer_token(headers).unwrap_or("");
    if secrets_equal(expected.expose(), presented) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("the feed token is missing or wrong"))
    }
}

fn parse_cursor(text: Option<&str>) -> ApiResult<i64> {
    match text {
        None => Ok(0),
        Some(t) => t
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|c| *c >= 0)
            .ok_or_else(|| {
                ApiError::InvalidRequest("`after` must be a non-negative integer cursor".into())
            }),
    }
}

pub async fn revocations(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<FeedQuery>,
) -> ApiResult<Response> {
    check_feed_token(&state, &headers)?;
    let wants_stream = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    if wants_stream {
        let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok());
        let after = parse_cursor(resume.or(query.after.as_deref()))?;
        return Ok(Sse::new(event_stream(state, after))
            .keep_alive(
                KeepAlive::new()
                    .interval(Duration::from_secs(15))
                    .text("heartbeat"),
            )
            .into_response());
    }
    let after = parse_cursor(query.after.as_deref())?;
    let events = state
        .store
        .revocations_after(after, PAGE, state.clock.now())
        .await?;
    let cursor = events.last().map_or(after, |e| e.cursor);
    Ok(Json(
        json!({"cursor": cursor, "revoked": events.iter().map(event_json).collect::<Vec<_>>()}),
    )
    .into_response())
}

/// Replays the log after `after` from the store, then follows this instance's live events.
/// Subscribing before the replay and skipping cursors already sent closes the gap between them.
fn event_stream(state: AppState, after: i64) -> impl Stream<Item = Result<Event, Infallible>> {
    let live = state.follower.subscribe();
    stream::unfold(
        (
            state,
            after,
            Some(live),
            Vec::<RevocationEvent>::new(),
            true,
        ),
        |(state, mut sent, live, mut backlog, mut replaying)| async move {
            let mut live = live?;
            loop {
                if let Some(event) = backlog.pop() {
                    if event.cursor <= sent {
                        continue;
                    }
                    sent = event.cursor;
                    return Some((
                        Ok(sse_event(&event)),
                        (state, sent, Some(live), backlog, replaying),
                    ));
                }
                if replaying {
                    match state
                        .store
                        .revocations_after(sent, PAGE, state.clock.now())
                        .await
                    {
                        Ok(page) if !page.is_empty() => {
                            backlog = page.into_iter().rev().collect();
                            continue;
                        }
                        Ok(_) => replaying = false,
                        // The client reconnects with Last-Event-ID; end the stream.
                        Err(_) => return None,
                    }
                }
                match live.recv().await {
                    Ok(event) => backlog.push(event),
                    // Fell behind the live channel: replay the gap from the store.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => replaying = true,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    )
    .boxed()
}

fn sse_event(e: &RevocationEvent) -> Event {
    Event::default()
        .event("revoked")
        .id(e.cursor.to_string())
        .data(event_json(e).to_string())
}
