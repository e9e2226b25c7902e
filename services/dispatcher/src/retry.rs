//! When to try a delivery again, and what a response means. Svix's schedule by default (at once,
//! then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts over about 27.5 hours), with a
//! little jitter so that deliveries that failed together (a CRM outage) do not return together.
//!
//! Responses are read as Standard Webhooks and Svix read them: a 2xx within the timeout is
//! delivered; 3xx (redirects are not followed: the URL should be fixed instead), timeouts,
//! connection errors and other 4xx/5xx are failures to retry; 410 Gone means the receiver wants
//! nothing more, so the profile is disabled; 429 and 503 may say when to come back
//! (`Retry-After`, seconds or an HTTP date), which is honoured; a receiver can stop the retries
//! of one message with the header `webhook-delivery: abort-message` (Svix).

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Svix's schedule, in seconds before each attempt.
pub const SVIX_SCHEDULE: [u64; 8] = [0, 5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600];

/// How long a receiver has to answer (Svix: 15 s).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

/// A `Retry-After` beyond this is read as this: a receiver may not park a delivery for days.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Jitter, as a share of each delay (±10%).
const JITTER: f64 = 0.1;

/// A profile's own schedule: seconds to wait before each attempt (the first is usually 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    pub schedule_seconds: Vec<u64>,
    /// Seconds a receiver has to answer; 15 when absent.
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { schedule_seconds: SVIX_SCHEDULE.to_vec(), timeout_seconds: None }
    }
}

impl RetryPolicy {
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.schedule_seconds.is_empty() || self.schedule_seconds.len() > 30 {
            return Err("a retry schedule has 1 to 30 attempts");
        }
        if self.schedule_seconds.iter().any(|s| *s > 7 * 24 * 3600) {
            return Err("a retry delay is at most 7 days");
        }
        if self.timeout_seconds.is_some_and(|t| !(1..=120).contains(&t)) {
            return Err("a timeout is 1 to 120 seconds");
        }
        Ok(())
    }

    pub fn timeout(&self) -> Duration {
        self.timeout_seconds.map_or(DEFAULT_TIMEOUT, Duration::from_secs)
    }

    pub fn attempts(&self) -> usize {
        self.schedule_seconds.len()
    }

    /// The wait before attempt `attempt` (1-based), jittered by `random` (any u32, uniformly
    /// drawn by the caller); `None` once the schedule is spent.
    pub fn delay_before(&self, attempt: usize, random: u32) -> Option<Duration> {
        let seconds = *self.schedule_seconds.get(attempt.checked_sub(1)?)?;
        let factor = 1.0 + JITTER * (2.0 * f64::from(random) / f64::from(u32::MAX) - 1.0);
        Some(Duration::from_secs(seconds).mul_f64(factor))
    }
}

/// What one attempt came back with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt<'a> {
    Response {
        status: u16,
        /// The `Retry-After` header, as sent.
        retry_after: Option<&'a str>,
        /// The `webhook-delivery` header, as sent.
        delivery_control: Option<&'a str>,
        elapsed: Duration,
    },
    Timeout,
    /// The connection failed (refused, reset, TLS, DNS, or the SSRF guard said no).
    Error(&'a str),
}

/// What the attempt means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Try again, not before `not_before` when the receiver said so.
    Failed {
        reason: String,
        not_before: Option<Duration>,
    },
    /// The receiver asked not to retry this message.
    Aborted {
        reason: String,
    },
    /// 410 Gone: disable the profile.
    Gone,
}

pub fn classify(attempt: &Attempt<'_>, timeout: Duration, now: SystemTime) -> Outcome {
    let failed = |reason: String| Outcome::Failed { reason, not_before: None };
    match *attempt {
        Attempt::Timeout => failed(format!("no answer within {} s", timeout.as_secs())),
        Attempt::Error(error) => failed(error.to_owned()),
        Attempt::Response { elapsed, .. } if elapsed > timeout => failed(format!(
            "answered after {} ms, later than the {} s timeout",
            elapsed.as_millis(),
            timeout.as_secs()
        )),
        Attempt::Response { status, .. } if (200..300).contains(&status) => Outcome::Delivered,
        Attempt::Response { status: 410, .. } => Outcome::Gone,
        Attempt::Response { status, delivery_control: Some(control), .. }
            if control.trim().eq_ignore_ascii_case("abort-message") =>
        {
            Outcome::Aborted { reason: format!("HTTP {status} with webhook-delivery: abort-message") }
        }
        Attempt::Response { status: status @ (429 | 503), retry_after, .. } => Outcome::Failed {
            reason: format!("HTTP {status}"),
            not_before: retry_after.and_then(|value| parse_retry_after(value, now)),
        },
        Attempt::Response { status, .. } if (300..400).contains(&status) => {
            failed(format!("HTTP {status}: redirects are not followed; update the URL"))
        }
        Attempt::Response { status, .. } => failed(format!("HTTP {status}")),
    }
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110 §10.2.3), capped.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value).ok()?.duration_since(now).unwrap_or(Duration::ZERO),
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// The verdict on a delivery after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    RetryAt(DateTime<Utc>),
    /// No attempt left, or the receiver aborted: the delivery failed for good.
    GiveUp {
        reason: String,
    },
    DisableProfile,
}

/// What follows attempt number `attempt` (1-based) that ended in `outcome` at `now`.
pub fn next(
    policy: &RetryPolicy,
    attempt: usize,
    outcome: Outcome,
    now: DateTime<Utc>,
    random: u32,
) -> Verdict {
    match outcome {
        Outcome::Delivered => Verdict::Delivered,
        Outcome::Gone => Verdict::DisableProfile,
        Outcome::Aborted { reason } => Verdict::GiveUp { reason },
        Outcome::Failed { reason, not_before } => {
            match policy.delay_before(attempt.saturating_add(1), random) {
                None => {
                    Verdict::GiveUp { reason: format!("{reason}; all {} attempts failed", policy.attempts()) }
                }
                Some(delay) => {
                    let delay = not_before.map_or(delay, |asked| asked.max(delay));
                    let delay = chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
                    Verdict::RetryAt(now.checked_add_signed(delay).unwrap_or(DateTime::<Utc>::MAX_UTC))
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "retry_tests.rs"]
mod tests;
