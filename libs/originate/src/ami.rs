//! Asterisk Manager Interface over TCP: just enough of the protocol to log in, send one action
//! and read its response.
//!
//! The protocol (docs.asterisk.org, "AMI v2 Specification"): the server greets with one line
//! (`Asterisk Call Manager/<version>`); every packet is `Key: Value` lines ended by an empty
//! line, all with CRLF; a response carries `Response: Success|Error`, the action's `ActionID` and
//! usually a `Message`; events (`Event:`) may come in between and are skipped. Every read has the
//! transport's deadline and all reads together its size cap.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::error::TransportError;

/// One AMI packet, its fields in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Packet(pub(crate) Vec<(String, String)>);

impl Packet {
    /// The first value of `key` (keys are case-insensitive).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    pub(crate) fn is_success(&self) -> bool {
        self.get("Response").is_some_and(|r| r.eq_ignore_ascii_case("Success"))
    }

    /// The packet as a JSON object, for [`crate::Originated::raw`].
    pub(crate) fn summary(&self) -> serde_json::Value {
        self.0.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect()
    }
}

/// A logged-in (or logging-in) AMI connection.
pub(crate) struct AmiSession {
    stream: BufReader<TcpStream>,
    addr: String,
    timeout: Duration,
    budget: usize,
}

impl AmiSession {
    /// Connects and reads the greeting.
    pub(crate) async fn connect(
        host: &str,
        port: u16,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<Self, TransportError> {
        let addr = format!("{host}:{port}");
        let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
            .await
            .map_err(|_| TransportError::Timeout { url: format!("AMI {addr}"), timeout })?
            .map_err(|source| TransportError::Ami { addr: addr.clone(), source })?;
        let mut session = Self { stream: BufReader::new(stream), addr, timeout, budget: max_bytes };
        let greeting = session.line().await?;
        if !greeting.contains("Call Manager") {
            return Err(session.protocol(format!("greeted with {greeting:?}, not an AMI banner")));
        }
        Ok(session)
    }

    /// Sends one action; values were checked for control characters by the caller.
    pub(crate) async fn send(&mut self, fields: &[(&str, &str)]) -> Result<(), TransportError> {
        let mut packet = String::new();
        for (key, value) in fields {
            packet.push_str(key);
            packet.push_str(": ");
            packet.push_str(value);
            packet.push_str("\r\n");
        }
        packet.push_str("\r\n");
        let write = self.stream.get_mut().write_all(packet.as_bytes());
        tokio::time::timeout(self.timeout, write)
            .await
            .map_err(|_| self.timed_out())?
            .map_err(|source| TransportError::Ami { addr: self.addr.clone(), source })
    }

    /// The response to the action `action_id`, skipping events and other actions' responses.
    pub(crate) async fn response(&mut self, action_id: &str) -> Result<Packet, TransportError> {
        loop {
            let packet = self.packet().await?;
            let is_response = packet.get("Response").is_some();
            let ours = packet.get("ActionID").is_none_or(|id| id == action_id);
            if is_response && ours {
                return Ok(packet);
            }
        }
    }

    /// Logs off, best effort: the answer is not waited for.
    pub(crate) async fn logoff(mut self) {
        let _ = self.send(&[("Action", "Logoff")]).await;
        let _ = tokio::time::timeout(self.timeout, self.stream.get_mut().shutdown()).await;
    }

    async fn packet(&mut self) -> Result<Packet, TransportError> {
        let mut fields = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                if fields.is_empty() {
                    continue;
                }
                return Ok(Packet(fields));
            }
            // A line without a colon (the output of an old `Command`) is kept as a value.
            let (key, value) = line.split_once(':').unwrap_or(("", line.as_str()));
            fields.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }

    /// One line without its CRLF, within the deadline and the size budget.
    async fn line(&mut self) -> Result<String, TransportError> {
        if self.budget == 0 {
            return Err(self.protocol("sent more than the answer size cap".to_owned()));
        }
        let mut line = Vec::new();
        let mut limited = (&mut self.stream).take(self.budget as u64);
        let read = tokio::time::timeout(self.timeout, limited.read_until(b'\n', &mut line)).await;
        let read = read
            .map_err(|_| self.timed_out())?
            .map_err(|source| TransportError::Ami { addr: self.addr.clone(), source })?;
        if read == 0 {
            return Err(self.protocol("closed the connection".to_owned()));
        }
        self.budget -= read;
        if !line.ends_with(b"\n") && self.budget == 0 {
            return Err(self.protocol("sent more than the answer size cap".to_owned()));
        }
        let text = String::from_utf8_lossy(&line);
        Ok(text.trim_end_matches(['\r', '\n']).to_owned())
    }

    fn timed_out(&self) -> TransportError {
        TransportError::Timeout { url: format!("AMI {}", self.addr), timeout: self.timeout }
    }

    fn protocol(&self, what: String) -> TransportError {
        TransportError::Ami {
            addr: self.addr.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, what),
        }
    }
}
