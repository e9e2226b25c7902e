//! Kept-alive connections: reused for the same checked addresses, never past the guard.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{HeaderMap, Method};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A keep-alive HTTP/1.1 server on loopback answering `200 ok` to every GET; counts connections.
async fn server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 1024];
                while let Ok(n) = stream.read(&mut chunk).await {
                    if n == 0 {
                        return;
                    }
                    buffer.extend_from_slice(&chunk[..n]);
                    while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                        buffer.drain(..end + 4);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, accepted)
}

fn get(url: &str) -> RenderedRequest {
    RenderedRequest {
        method: Method::GET,
        uri: url.parse().expect("uri"),
        shown_url: url.to_owned(),
        headers: HeaderMap::new(),
        body: Vec::new(),
    }
}

fn loopback_allowed() -> EgressPolicy {
    // `localhost` may resolve to ::1 as well.
    EgressPolicy { allow: vec!["127.0.0.0/8".parse().expect("cidr"), "::1/128".parse().expect("cidr")] }
}

const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn requests_to_the_same_checked_addresses_share_a_connection() {
    let (port, accepted) = server().await;
    let connections = Connections::default();
    let policy = loopback_allowed();
    for _ in 0..3 {
        let answer =
            send(&policy, &connections, &get(&format!("http://127.0.0.1:{port}/calls")), TIMEOUT, 64)
                .await
                .expect("answered");
        assert_eq!((answer.status, answer.body.as_ref()), (200, b"ok".as_slice()));
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one kept-alive connection");

    // Another origin (another name for the same address) gets a client, and a connection, of its own.
    send(&policy, &connections, &get(&format!("http://localhost:{port}/calls")), TIMEOUT, 64)
        .await
        .expect("answered");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_kept_connection_is_no_way_past_the_guard() {
    let (port, accepted) = server().await;
    let connections = Connections::default();
    let url = format!("http://127.0.0.1:{port}/calls");
    send(&loopback_allowed(), &connections, &get(&url), TIMEOUT, 64).await.expect("allowed");

    // The same target under a policy that no longer allows loopback: refused before any reuse.
    let refused = send(&EgressPolicy::default(), &connections, &get(&url), TIMEOUT, 64).await;
    assert!(matches!(refused, Err(SendError::Refused(_))), "{refused:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
}
