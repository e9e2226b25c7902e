//! One agent stream, over WebSocket or Server-Sent Events: `hello`, then what the client missed,
//! then live notifications, keep-alives, and the end — `auth_invalid` when the session is
//! revoked or expires, a plain close when the client leaves, falls behind or the replica stops.
//! The wire format of both is in `docs/desk.md`.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::metrics;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use hyper::body::Frame;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::desk::Desk;
use crate::hub::{Attached, CloseReason, Outgoing};
use crate::sessions::Session;

/// WebSocket close code of `auth_invalid` (4000-4999: private use, RFC 6455 §7.4.2).
pub const AUTH_INVALID_CODE: u16 = 4001;
/// Largest message a client may send (a status change is a few dozen bytes).
const MAX_CLIENT_MESSAGE: usize = 4096;

/// How a stream ends.
enum End {
    /// The session is no longer valid: tell the client not to reconnect with it.
    AuthInvalid(CloseReason),
    /// The replica is stopping: the client reconnects (to another replica).
    Shutdown,
    /// The client fell behind and was dropped by the hub; it reconnects and resumes.
    Slow,
    /// The client went away.
    Gone,
}

fn auth_invalid(reason: CloseReason) -> String {
    json!({"type": "auth_invalid", "reason": reason.as_str()}).to_string()
}

/// The first message of every stream.
fn hello(desk: &Desk, session: &Session, status: &str, resumed: bool) -> String {
    let directory = desk.directory.snapshot();
    let agent = directory.as_ref().and_then(|d| d.agent(&session.agent_id));
    json!({
        "type": "hello",
        "session_id": session.id,
        "agent": {
            "id": session.agent_id,
            "name": agent.map(|a| a.name.clone()),
            "email": agent.and_then(|a| a.email.clone()),
            "groups": agent.map(|a| a.groups.clone()).unwrap_or_default(),
        },
        "role": session.role,
        "status": status,
        "expires_at": session.expires_at,
        "resumed": resumed,
    })
    .to_string()
}

/// Waits until `session` expires.
async fn expiry(session: &Session) {
    let left =
        session.expires_at.signed_duration_since(chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
    tokio::time::sleep(left).await;
}

/// Serves a WebSocket stream on `upgraded` until it ends.
pub async fn websocket(
    desk: Arc<Desk>,
    session: Arc<Session>,
    attached: Attached,
    status: String,
    upgraded: Upgraded,
    cancel: CancellationToken,
) {
    // Small buffers: thousands of mostly idle streams per replica, each message a few hundred
    // bytes (the library's defaults, 128 KiB each way, cost 133 KiB per connection; BENCHMARKS.md).
    // A client that lets 1 MiB pile up unsent is dropped (it resumes on reconnect).
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE));
    let mut ws = WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Server,
        Some(config),
    )
    .await;
    let Attached { id, backlog, resumed, mut rx } = attached;
    let end = async {
        ws.send(Message::text(hello(&desk, &session, &status, resumed))).await?;
        for note in &backlog {
            ws.send(Message::text(note.render_for(&session))).await?;
        }
        let mut keepalive = tokio::time::interval(desk.keepalive);
        let _ = keepalive.tick().await;
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(Outgoing::Note(note)) => ws.send(Message::text(note.render_for(&session))).await?,
                    Some(Outgoing::Close(reason)) => return Ok(End::AuthInvalid(reason)),
                    None => return Ok(End::Slow),
                },
                message = ws.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(answer) = client_message(&desk, &session, text.as_str()).await {
                            ws.send(Message::text(answer)).await?;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => return Ok(End::Gone),
                    // Pings are answered by the library; binary frames mean nothing here.
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(error),
                },
                _ = keepalive.tick() => ws.send(Message::Ping(Bytes::new())).await?,
                () = expiry(&session) => return Ok(End::AuthInvalid(CloseReason::Expired)),
                () = cancel.cancelled() => return Ok(End::Shutdown),
            }
        }
    }
    .await;
    desk.hub.detach(id);
    let close = |code: CloseCode, reason: &'static str| {
        Message::Close(Some(CloseFrame { code, reason: reason.into() }))
    };
    let _ = match end {
        Ok(End::AuthInvalid(reason)) => {
            metrics::DESK_STREAMS_CLOSED.with_label_values(&[reason.as_str()]).inc();
            let _ = ws.send(Message::text(auth_invalid(reason))).await;
            ws.send(close(CloseCode::Library(AUTH_INVALID_CODE), "auth_invalid")).await
        }
        Ok(End::Shutdown) => {
            metrics::DESK_STREAMS_CLOSED.with_label_values(&["shutdown"]).inc();
            ws.send(close(CloseCode::Away, "shutting down")).await
        }
        Ok(End::Slow) => ws.send(close(CloseCode::Again, "fell behind; resume")).await,
        Ok(End::Gone) | Err(_) => Ok(()),
    };
    let _ = ws.close(None).await;
}

/// A message from the client; the answer to send back, if any.
async fn client_message(desk: &Desk, session: &Session, text: &str) -> Option<String> {
    let message: Value = serde_json::from_str(text).ok()?;
    match message.get("type").and_then(Value::as_str) {
        Some("ping") => Some(json!({"type": "pong"}).to_string()),
        Some("set_status") => {
            let answer = match message
                .get("status")
                .and_then(Value::as_str)
                .and_then(switchboard_model::AgentStatusValue::parse)
            {
                Some(status) => match desk.set_status(session, status).await {
                    Ok(()) => return None,
                    Err(error) => {
                        json!({"type": "error", "error": "unavailable", "message": error.to_string()})
                    }
                },
                None => {
                    json!({"type": "error", "error": "bad_request", "message": "status must be available, break or offline"})
                }
            };
            Some(answer.to_string())
        }
        _ => Some(
            json!({"type": "error", "error": "bad_request", "message": "unknown message type"}).to_string(),
        ),
    }
}

/// A response body fed by a channel: the Server-Sent Events stream.
#[derive(Debug)]
pub struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|bytes| Ok(Frame::data(bytes))))
    }
}

fn event(id: Option<&str>, kind: &str, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len().saturating_add(64));
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    out.push_str("event: ");
    out.push_str(kind);
    out.push_str("\ndata: ");
    // JSON text has no raw newline, so one `data:` line carries it.
    out.push_str(data);
    out.push_str("\n\n");
    Bytes::from(out)
}

/// Starts a Server-Sent Events stream; the body to answer with.
pub fn sse(
    desk: Arc<Desk>,
    session: Arc<Session>,
    attached: Attached,
    status: String,
    cancel: CancellationToken,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> ChannelBody {
    // A few frames of room: the writer waits on a slow client here, and the hub drops the stream
    // if its own queue fills meanwhile.
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let _slot = slot;
        let Attached { id, backlog, resumed, mut rx } = attached;
        let send = |bytes: Bytes| {
            let tx = tx.clone();
            async move { tx.send(bytes).await.map_err(|_| ()) }
        };
        let end: Result<End, ()> = async {
            // Reconnect after 1 s (EventSource's own back-off; the SDK adds its own).
            send(Bytes::from_static(b"retry: 1000\n\n")).await?;
            send(event(None, "hello", &hello(&desk, &session, &status, resumed))).await?;
            for note in &backlog {
                send(event(Some(&note.id), note.kind, &note.render_for(&session))).await?;
            }
            let mut keepalive = tokio::time::interval(desk.keepalive);
            let _ = keepalive.tick().await;
            loop {
                tokio::select! {
                    out = rx.recv() => match out {
                        Some(Outgoing::Note(note)) => {
                            send(event(Some(&note.id), note.kind, &note.render_for(&session))).await?;
                        }
                        Some(Outgoing::Close(reason)) => return Ok(End::AuthInvalid(reason)),
                        None => return Ok(End::Slow),
                    },
                    _ = keepalive.tick() => send(Bytes::from_static(b": keep-alive\n\n")).await?,
                    () = expiry(&session) => return Ok(End::AuthInvalid(CloseReason::Expired)),
                    () = cancel.cancelled() => return Ok(End::Shutdown),
                    () = tx.closed() => return Ok(End::Gone),
                }
            }
        }
        .await;
        desk.hub.detach(id);
        match end {
            Ok(End::AuthInvalid(reason)) => {
                metrics::DESK_STREAMS_CLOSED.with_label_values(&[reason.as_str()]).inc();
                let _ = send(event(None, "auth_invalid", &auth_invalid(reason))).await;
            }
            Ok(End::Shutdown) => {
                metrics::DESK_STREAMS_CLOSED.with_label_values(&["shutdown"]).inc();
            }
            Ok(End::Slow | End::Gone) | Err(()) => {}
        }
        // Dropping the sender ends the response.
    });
    ChannelBody(rx)
}
