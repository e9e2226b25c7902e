//! The streams this replica holds and the recent notifications of every agent.
//!
//! [`Hub::publish`] keeps each notification in its agent's resume buffer (the last
//! `desk.resume_window`) and hands it to every stream it is for: the agent's own sessions, and
//! supervisors of the agent's groups. A stream that falls `desk.stream_queue` notifications
//! behind is dropped (it reconnects and resumes); nothing waits on a slow client. [`Hub::attach`]
//! registers a stream and computes what it missed under one lock, so that nothing published in
//! between is lost or sent twice.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::metrics;
use chrono::Utc;
use tokio::sync::mpsc;

use crate::notify::Notification;
use crate::sessions::Session;

/// Why the desk ends a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Revoked,
    Expired,
    Shutdown,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Revoked => "revoked",
            CloseReason::Expired => "expired",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// What a stream is handed.
#[derive(Debug)]
pub enum Outgoing {
    Note(Arc<Notification>),
    Close(CloseReason),
}

#[derive(Debug)]
struct Stream {
    session: Arc<Session>,
    /// A supervisor's own groups (empty for an agent).
    groups: Vec<String>,
    transport: &'static str,
    tx: mpsc::Sender<Outgoing>,
}

#[derive(Debug, Default)]
struct Inner {
    streams: HashMap<u64, Stream>,
    next_stream: u64,
    /// Per agent, `(sequence, notification)`, oldest first. The sequence orders notifications of
    /// several agents for a supervisor's resume; it is this replica's own.
    buffers: HashMap<String, VecDeque<(u64, Arc<Notification>)>>,
    next_seq: u64,
}

/// A registered stream: its id (for [`Hub::detach`]), what it missed, and its queue.
#[derive(Debug)]
pub struct Attached {
    pub id: u64,
    pub backlog: Vec<Arc<Notification>>,
    pub resumed: bool,
    pub rx: mpsc::Receiver<Outgoing>,
}

#[derive(Debug)]
pub struct Hub {
    inner: Mutex<Inner>,
    window: usize,
    queue: usize,
}

impl Hub {
    pub fn new(window: usize, queue: usize) -> Self {
        Self { inner: Mutex::default(), window: window.max(1), queue: queue.max(1) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind, still consistent enough to
        // serve: recover it rather than take the replica down.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers a stream of `session`. With `last_event_id`, the backlog is every notification
    /// for this session after that one, or all this replica holds when it does not know the id
    /// (evicted, or from before this replica started): the client ignores repeats.
    pub fn attach(
        &self,
        session: Arc<Session>,
        groups: Vec<String>,
        transport: &'static str,
        last_event_id: Option<&str>,
    ) -> Attached {
        let (tx, rx) = mpsc::channel(self.queue);
        let mut inner = self.lock();
        let mut backlog = Vec::new();
        if let Some(last) = last_event_id {
            let mut relevant: Vec<&(u64, Arc<Notification>)> = inner
                .buffers
                .values()
                .flat_map(|b| b.iter())
                .filter(|(_, n)| n.is_for(&session, &groups))
                .collect();
            relevant.sort_by_key(|(seq, _)| *seq);
            // What came after the last one the stream saw (all of it when that one is gone).
            let after = relevant.iter().position(|(_, n)| n.id == last).map_or(0, |p| p.saturating_add(1));
            backlog = relevant.iter().skip(after).map(|(_, n)| n.clone()).collect();
        }
        let id = inner.next_stream;
        inner.next_stream = inner.next_stream.wrapping_add(1);
        let _ = inner.streams.insert(id, Stream { session, groups, transport, tx });
        metrics::DESK_STREAMS.with_label_values(&[transport]).inc();
        if last_event_id.is_some() {
            metrics::DESK_RESUMES.with_label_values(&[transport]).inc();
        }
        Attached { id, backlog, resumed: last_event_id.is_some(), rx }
    }

    /// Forgets stream `id` (it ended).
    pub fn detach(&self, id: u64) {
        if let Some(stream) = self.lock().streams.remove(&id) {
            metrics::DESK_STREAMS.with_label_values(&[stream.transport]).dec();
        }
    }

    /// Keeps `note` for resumes and hands it to every stream it is for.
    pub fn publish(&self, note: Notification) {
        let note = Arc::new(note);
        let mut inner = self.lock();
        let seq = inner.next_seq;
        inner.next_seq = inner.next_seq.wrapping_add(1);
        let buffer = inner.buffers.entry(note.agent_id.clone()).or_default();
        if buffer.len() >= self.window {
            let _ = buffer.pop_front();
        }
        buffer.push_back((seq, note.clone()));
        let latency = note.received_at.map(|at| {
            Utc::now().signed_duration_since(at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6
        });
        let mut slow = Vec::new();
        for (id, stream) in &inner.streams {
            if !note.is_for(&stream.session, &stream.groups) {
                continue;
            }
            match stream.tx.try_send(Outgoing::Note(note.clone())) {
                Ok(()) => {
                    metrics::DESK_NOTIFICATIONS.with_label_values(&[note.kind]).inc();
                    if let Some(seconds) = latency {
                        metrics::DESK_NOTIFICATION_SECONDS
                            .with_label_values(&[stream.transport])
                            .observe(seconds);
                    }
                }
                // Full: the client does not keep up. Closed: it is going away anyway.
                Err(_) => slow.push(*id),
            }
        }
        for id in slow {
            if let Some(stream) = inner.streams.remove(&id) {
                // Dropping the sender ends the stream once it has written what it holds.
                metrics::DESK_STREAMS.with_label_values(&[stream.transport]).dec();
                metrics::DESK_STREAMS_CLOSED.with_label_values(&["slow"]).inc();
                tracing::info!(session = %stream.session.id, "Stream fell behind; closed (the client resumes).");
            }
        }
    }

    /// Ends every stream of session `session_id` with `reason`.
    pub fn close_session(&self, session_id: &str, reason: CloseReason) {
        let inner = self.lock();
        for stream in inner.streams.values().filter(|s| s.session.id == session_id) {
            // A full queue still ends: the stream also checks its session's expiry and the
            // client's next reconnect is refused.
            let _ = stream.tx.try_send(Outgoing::Close(reason));
        }
    }

    /// Streams held now.
    pub fn len(&self) -> usize {
        self.lock().streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use switchboard_model::{AgentStatus, AgentStatusValue};

    use super::*;
    use crate::sessions::Role;

    fn session(id: &str, agent: &str, role: Role) -> Arc<Session> {
        let at = Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0).single().expect("time");
        Arc::new(Session { id: id.into(), agent_id: agent.into(), role, created_at: at, expires_at: at })
    }

    fn status(id: &str, agent: &str) -> Notification {
        let status = AgentStatus {
            agent_id: agent.into(),
            status: AgentStatusValue::Break,
            session_id: None,
            changed_at: Utc::now(),
        };
        Notification::of_status(id.into(), &status, None)
    }

    fn ids(rx: &mut mpsc::Receiver<Outgoing>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(Outgoing::Note(n)) = rx.try_recv() {
            out.push(n.id.clone());
        }
        out
    }

    #[test]
    fn a_stream_gets_its_agents_notifications_and_resumes_after_the_last_it_saw() {
        let hub = Hub::new(3, 10);
        let mut ann = hub.attach(session("s1", "ann", Role::Agent), vec![], "sse", None);
        hub.publish(status("s0-1", "ann"));
        hub.publish(status("s0-2", "bob"));
        hub.publish(status("s0-3", "ann"));
        assert_eq!(ids(&mut ann.rx), vec!["s0-1", "s0-3"]);
        hub.detach(ann.id);
        hub.publish(status("s0-4", "ann"));
        let again = hub.attach(session("s1", "ann", Role::Agent), vec![], "websocket", Some("s0-1"));
        let backlog: Vec<&str> = again.backlog.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(backlog, vec!["s0-3", "s0-4"]);
        assert!(again.resumed);
        // An id the window no longer holds: everything held (the client skips repeats).
        hub.publish(status("s0-5", "ann"));
        hub.publish(status("s0-6", "ann"));
        let old = hub.attach(session("s1", "ann", Role::Agent), vec![], "sse", Some("s0-1"));
        let backlog: Vec<&str> = old.backlog.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(backlog, vec!["s0-4", "s0-5", "s0-6"], "window of 3");
    }

    #[test]
    fn a_slow_stream_is_dropped_and_others_go_on() {
        let hub = Hub::new(10, 2);
        let slow = hub.attach(session("s1", "ann", Role::Agent), vec![], "websocket", None);
        let mut fast = hub.attach(session("s2", "ann", Role::Agent), vec![], "websocket", None);
        for n in 0..3 {
            hub.publish(status(&format!("s0-{n}"), "ann"));
            let _ = ids(&mut fast.rx);
        }
        assert_eq!(hub.len(), 1, "the slow one is gone");
        drop(slow);
        hub.publish(status("s0-9", "ann"));
        assert_eq!(ids(&mut fast.rx), vec!["s0-9"]);
    }

    #[test]
    fn close_session_reaches_only_that_sessions_streams() {
        let hub = Hub::new(10, 10);
        let mut a = hub.attach(session("s1", "ann", Role::Agent), vec![], "sse", None);
        let mut b = hub.attach(session("s2", "ann", Role::Agent), vec![], "sse", None);
        hub.close_session("s1", CloseReason::Revoked);
        assert!(matches!(a.rx.try_recv(), Ok(Outgoing::Close(CloseReason::Revoked))));
        assert!(b.rx.try_recv().is_err());
    }
}
