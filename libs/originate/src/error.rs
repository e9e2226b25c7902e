//! Why a call was not placed (or not hung up), in the four ways a caller has to tell apart.

/// Why a vendor did not place (or hang up) a call. Secrets never appear in the text.
///
/// How a caller maps it: [`Refused`](Self::Refused) and [`Invalid`](Self::Invalid) are the
/// client's or the source's problem (4xx, 422); [`Unavailable`](Self::Unavailable) is the
/// vendor's (502: retry later, nothing was placed as far as Switchboard can tell);
/// [`NotConfigured`](Self::NotConfigured) is the operator's (the source lacks a setting);
/// [`Unsupported`](Self::Unsupported) means the vendor has no such API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginateError {
    /// The vendor answered and said no: its own reason, passed on (and the HTTP status, for the
    /// HTTP APIs). Also a refused login (wrong API credentials), which only the operator can fix.
    #[error("the vendor refused{}: {reason}", status.map(|s| format!(" ({s})")).unwrap_or_default())]
    Refused { status: Option<u16>, reason: String },
    /// No usable answer: no connection, no answer in time, an answer too large to read, a `5xx`
    /// or `429`. The call may or may not have been placed only when the vendor went silent after
    /// the request was sent; the text says which.
    #[error("the vendor is unavailable: {0}")]
    Unavailable(String),
    /// The source lacks a setting (credentials, URL, context...) this vendor needs; named.
    #[error("the source is not configured for this: {0}")]
    NotConfigured(String),
    /// The request cannot be expressed for this vendor (no agent extension where one is needed,
    /// a destination that is not E.164, a value with control characters).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The vendor has no API for this (Zadarma and Telphin have no hang-up; other vendors no
    /// click-to-call).
    #[error("not supported: {0}")]
    Unsupported(String),
}

/// Why a transport exchange failed, before it is classified into an [`OriginateError`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    /// The connection was never established, so the request never left: safe to try again.
    #[error("cannot connect to {url}")]
    Connect {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The exchange failed after the connection was made; the vendor may have seen the request.
    #[error("the exchange with {url} failed")]
    Exchange {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("reading the answer of {url}")]
    Body {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("no answer from {url} within {timeout:?} (the request may have reached the vendor)")]
    Timeout { url: String, timeout: std::time::Duration },
    #[error("AMI at {addr}")]
    Ami {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

impl TransportError {
    pub(crate) fn is_connect(&self) -> bool {
        matches!(self, TransportError::Connect { .. })
    }
}

/// The error and its causes on one line, for an error's text.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl From<TransportError> for OriginateError {
    fn from(error: TransportError) -> Self {
        OriginateError::Unavailable(chain(&error))
    }
}
