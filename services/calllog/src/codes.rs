//! The text the call log stores for the model's enums (lower-case, as `as_str` writes them), and
//! the way back. Text, not Postgres enums, so that a new vendor signal is not a migration.

use switchboard_core::model::{AgentMatch, ContactMatch, Direction, Disposition, EventKind, RecordingStatus};

pub fn kind(text: &str) -> EventKind {
    match text {
        "ringing" => EventKind::Ringing,
        "answered" => EventKind::Answered,
        "hangup" => EventKind::Hangup,
        "recording" => EventKind::Recording,
        "wrap_up" => EventKind::WrapUp,
        _ => EventKind::Unknown,
    }
}

pub fn direction(text: &str) -> Direction {
    match text {
        "inbound" => Direction::Inbound,
        "outbound" => Direction::Outbound,
        "internal" => Direction::Internal,
        _ => Direction::Unknown,
    }
}

pub fn disposition(text: &str) -> Disposition {
    match text {
        "answered" => Disposition::Answered,
        "no_answer" => Disposition::NoAnswer,
        "busy" => Disposition::Busy,
        "cancelled" => Disposition::Cancelled,
        "failed" => Disposition::Failed,
        "rejected" => Disposition::Rejected,
        "voicemail" => Disposition::Voicemail,
        _ => Disposition::Unknown,
    }
}

pub fn agent_match_str(value: AgentMatch) -> &'static str {
    match value {
        AgentMatch::Extension => "extension",
        AgentMatch::Number => "number",
        AgentMatch::Email => "email",
        AgentMatch::Unknown => "unknown",
    }
}

pub fn agent_match(text: &str) -> AgentMatch {
    match text {
        "extension" => AgentMatch::Extension,
        "number" => AgentMatch::Number,
        "email" => AgentMatch::Email,
        _ => AgentMatch::Unknown,
    }
}

pub fn contact_match_str(value: ContactMatch) -> &'static str {
    match value {
        ContactMatch::Unique => "unique",
        ContactMatch::Ambiguous => "ambiguous",
        ContactMatch::None => "none",
        ContactMatch::OwnNumber => "own_number",
        ContactMatch::Unknown => "unknown",
    }
}

pub fn contact_match(text: &str) -> ContactMatch {
    match text {
        "unique" => ContactMatch::Unique,
        "ambiguous" => ContactMatch::Ambiguous,
        "none" => ContactMatch::None,
        "own_number" => ContactMatch::OwnNumber,
        _ => ContactMatch::Unknown,
    }
}

/// The stored text of a recording status; `None` for `Unknown` (a symbol from a newer writer),
/// which the call log cannot act on and stores as no status.
pub fn recording_status_str(value: RecordingStatus) -> Option<&'static str> {
    (value != RecordingStatus::Unknown).then(|| value.as_str())
}

pub fn recording_status(text: &str) -> Option<RecordingStatus> {
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stored_text_reads_back_as_the_same_value() {
        for k in [
            EventKind::Ringing,
            EventKind::Answered,
            EventKind::Hangup,
            EventKind::Recording,
            EventKind::Unknown,
        ] {
            assert_eq!(kind(k.as_str()), k);
        }
        for d in [Direction::Inbound, Direction::Outbound, Direction::Internal, Direction::Unknown] {
            assert_eq!(direction(d.as_str()), d);
        }
        use Disposition::*;
        for d in [Answered, NoAnswer, Busy, Cancelled, Failed, Rejected, Voicemail, Unknown] {
            assert_eq!(disposition(d.as_str()), d);
        }
        for m in [AgentMatch::Extension, AgentMatch::Number, AgentMatch::Email, AgentMatch::Unknown] {
            assert_eq!(agent_match(agent_match_str(m)), m);
        }
        use ContactMatch as C;
        for m in [C::Unique, C::Ambiguous, C::None, C::OwnNumber, C::Unknown] {
            assert_eq!(contact_match(contact_match_str(m)), m);
        }
        use RecordingStatus as R;
        for r in [R::Pending, R::Ready, R::Failed] {
            assert_eq!(recording_status_str(r).and_then(recording_status), Some(r));
        }
        assert_eq!(recording_status_str(R::Unknown), None);
    }
}
