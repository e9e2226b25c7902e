//! Fakes of the vendors' APIs on loopback: a tiny HTTP server whose handler checks each request
//! as the vendor documents it and answers as the vendor does, and a tiny AMI server. Both record
//! what they received.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use switchboard_originate::{AgentEndpoint, OriginateRequest, Transport, TransportConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What a fake saw of one HTTP request.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: Option<String>,
    pub(crate) headers: http::HeaderMap,
    pub(crate) body: String,
}

impl Seen {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as form fields, in order.
    pub(crate) fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.body.as_bytes()).into_owned().collect()
    }

    pub(crate) fn field(&self, name: &str) -> Option<String> {
        self.form().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }
}

/// A fake's answer: status, content type, body, and how long to wait before answering.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
    pub(crate) delay: Duration,
}

pub(crate) fn json(status: u16, body: serde_json::Value) -> Answer {
    Answer { status, content_type: "application/json", body: body.to_string(), delay: Duration::ZERO }
}

pub(crate) fn text(status: u16, body: &str) -> Answer {
    Answer { status, content_type: "text/plain", body: body.to_owned(), delay: Duration::ZERO }
}

pub(crate) fn slow(mut answer: Answer, delay: Duration) -> Answer {
    answer.delay = delay;
    answer
}

type Handler = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

/// A vendor API on loopback.
pub(crate) struct FakeApi {
    pub(crate) addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeApi {
    pub(crate) async fn start(handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Handler = Arc::new(handler);
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, handler) = (log.clone(), handler.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<Incoming>| {
                        let (log, handler) = (log.clone(), handler.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let seen = Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.path().to_owned(),
                                query: parts.uri.query().map(str::to_owned),
                                headers: parts.headers,
                                body: String::from_utf8_lossy(&body).into_owned(),
                            };
                            log.lock().expect("log").push(seen.clone());
                            let answer = handler(&seen);
                            tokio::time::sleep(answer.delay).await;
                            let response = http::Response::builder()
                                .status(answer.status)
                                .header("content-type", answer.content_type)
                                .body(Full::new(Bytes::from(answer.body)))
                                .expect("response");
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    /// Requests received on `path`.
    pub(crate) fn count(&self, path: &str) -> usize {
        self.seen().iter().filter(|s| s.path == path).count()
    }
}

/// One AMI packet as the fake read it.
pub(crate) type AmiPacket = Vec<(String, String)>;

pub(crate) fn get<'a>(packet: &'a AmiPacket, key: &str) -> Option<&'a str> {
    packet.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
}

/// The fake's answer to one action: the packets to write (each a list of lines), or silence.
pub(crate) type AmiHandler = Arc<dyn Fn(&AmiPacket) -> Option<Vec<Vec<String>>> + Send + Sync>;

/// An Asterisk manager on loopback: greets like Asterisk, reads packets and records them,
/// answers `Login` (`user`/`secret`), refuses any other action before it as Asterisk does, answers
/// `Logoff` and closes, and answers every other action through `handler`.
pub(crate) struct FakeAmi {
    pub(crate) addr: SocketAddr,
    packets: Arc<Mutex<Vec<AmiPacket>>>,
    connections: Arc<Mutex<usize>>,
}

pub(crate) const AMI_USER: &str = "switchboard";
pub(crate) const AMI_SECRET: &str = "ami-secret";

pub(crate) fn reply(lines: &[(&str, &str)]) -> Vec<String> {
    lines.iter().map(|(k, v)| format!("{k}: {v}")).collect()
}

impl FakeAmi {
    pub(crate) async fn start(handler: AmiHandler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let packets: Arc<Mutex<Vec<AmiPacket>>> = Arc::default();
        let connections: Arc<Mutex<usize>> = Arc::default();
        let (log, count) = (packets.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                *count.lock().expect("count") += 1;
                let (log, handler) = (log.clone(), handler.clone());
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    if write.write_all(b"Asterisk Call Manager/9.0.0\r\n").await.is_err() {
                        return;
                    }
                    let mut logged_in = false;
                    loop {
                        let mut packet = AmiPacket::new();
                        loop {
                            let mut line = String::new();
                            match read.read_line(&mut line).await {
                                Ok(0) | Err(_) => return,
                                Ok(_) => {}
                            }
                            assert!(line.ends_with("\r\n"), "AMI lines end with CRLF: {line:?}");
                            let line = line.trim_end_matches("\r\n");
                            if line.is_empty() {
                                break;
                            }
                            let (key, value) = line.split_once(": ").expect("Key: Value");
                            packet.push((key.to_owned(), value.to_owned()));
                        }
                        log.lock().expect("log").push(packet.clone());
                        let id = get(&packet, "ActionID").unwrap_or_default().to_owned();
                        let answers = match get(&packet, "Action") {
                            Some("Logoff") => {
                                let bye = reply(&[
                                    ("Response", "Goodbye"),
                                    ("Message", "Thanks for all the fish."),
                                ]);
                                let _ =
                                    write.write_all(format!("{}\r\n\r\n", bye.join("\r\n")).as_bytes()).await;
                                return;
                            }
                            Some("Login") => {
                                logged_in = get(&packet, "Username") == Some(AMI_USER)
                                    && get(&packet, "Secret") == Some(AMI_SECRET);
                                let message = if logged_in {
                                    "Authentication accepted"
                                } else {
                                    "Authentication failed"
                                };
                                let response = if logged_in { "Success" } else { "Error" };
                                Some(vec![reply(&[
                                    ("Response", response),
                                    ("ActionID", &id),
                                    ("Message", message),
                                ])])
                            }
                            _ if !logged_in => Some(vec![reply(&[
                                ("Response", "Error"),
                                ("ActionID", &id),
                                ("Message", "Permission denied"),
                            ])]),
                            _ => handler(&packet),
                        };
                        let Some(answers) = answers else { continue };
                        for answer in answers {
                            let mut bytes = answer.join("\r\n");
                            bytes.push_str("\r\n\r\n");
                            if write.write_all(bytes.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, packets, connections }
    }

    pub(crate) fn packets(&self) -> Vec<AmiPacket> {
        self.packets.lock().expect("packets").clone()
    }

    /// The packets once there are at least `n` (the logoff is sent without waiting for it).
    pub(crate) async fn wait_packets(&self, n: usize) -> Vec<AmiPacket> {
        for _ in 0..100 {
            if self.packets().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.packets()
    }

    pub(crate) fn connections(&self) -> usize {
        *self.connections.lock().expect("connections")
    }
}

pub(crate) fn transport() -> Transport {
    Transport::new(TransportConfig { timeout: Duration::from_secs(5), max_answer_bytes: 64 * 1024 })
}

pub(crate) fn quick_transport() -> Transport {
    Transport::new(TransportConfig { timeout: Duration::from_millis(300), max_answer_bytes: 64 * 1024 })
}

/// Agent 101 (number +447700900123) calls +44 20 7946 0000.
pub(crate) fn request() -> OriginateRequest {
    OriginateRequest {
        agent: AgentEndpoint {
            extension: Some("101".into()),
            number: Some("+447700900123".into()),
            vendor_id: None,
        },
        destination: "+442079460000".into(),
        caller_id: None,
        request_id: "c2c-0001".into(),
    }
}
