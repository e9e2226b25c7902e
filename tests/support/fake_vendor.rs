//! A vendor's HTTP API faked on loopback, for the click-to-call and disposition tests: it records
//! every request and answers with the test's function, or `503` while `down` is set.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub authorization: String,
    pub body: String,
}

impl Seen {
    /// The body's form fields, in order.
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.body.as_bytes()).into_owned().collect()
    }
}

type Answer = dyn Fn(&Seen) -> (u16, String) + Send + Sync;

#[derive(Clone)]
pub struct FakeVendor {
    got: Arc<Mutex<Vec<Seen>>>,
    down: Arc<AtomicBool>,
    answer: Arc<Answer>,
}

impl std::fmt::Debug for FakeVendor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeVendor")
            .field("requests", &self.got.lock().map(|g| g.len()).ok())
            .finish_non_exhaustive()
    }
}

/// The `CallSid` [`twilio`] answers.
pub const TWILIO_SID: &str = "CA6b9c2d7f4a8c9b0d1e2536e7f8a9b0c1";

/// Twilio's Calls API: `201` with the new call's `sid`, as Twilio answers.
pub fn twilio(_: &Seen) -> (u16, String) {
    (201, serde_json::json!({"sid": TWILIO_SID, "status": "queued"}).to_string())
}

impl FakeVendor {
    /// Listens on a free loopback port; returns the fake and the port.
    pub async fn start(
        answer: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static,
    ) -> anyhow::Result<(Self, u16)> {
        let fake = Self { got: Arc::default(), down: Arc::default(), answer: Arc::new(answer) };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let serving = fake.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let fake = serving.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let fake = fake.clone();
                        async move { Ok::<_, Infallible>(fake.respond(req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok((fake, port))
    }

    async fn respond(&self, req: http::Request<hyper::body::Incoming>) -> http::Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let authorization =
            req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let seen = Seen { path, authorization, body: String::from_utf8_lossy(&body).into_owned() };
        let (status, body) = if self.down.load(Ordering::SeqCst) {
            (503, r#"{"message": "Service Unavailable", "status": 503}"#.to_owned())
        } else {
            (self.answer)(&seen)
        };
        self.got.lock().expect("lock").push(seen);
        let mut response = http::Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
        response
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.got.lock().expect("lock").clone()
    }

    /// Makes the fake answer `503` (down) or its function again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}
