use std::time::UNIX_EPOCH;

use chrono::TimeZone;

use super::*;

const MID: u32 = u32::MAX / 2;

fn response(status: u16) -> Attempt<'static> {
    Attempt::Response {
        status,
        retry_after: None,
        delivery_control: None,
        elapsed: Duration::from_millis(120),
    }
}

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_714_557_600)
}

fn classify_now(attempt: &Attempt<'_>) -> Outcome {
    classify(attempt, DEFAULT_TIMEOUT, now())
}

#[test]
fn the_default_schedule_is_svixs() {
    let policy = RetryPolicy::default();
    assert_eq!(policy.attempts(), 8);
    let delays: Vec<f64> =
        (1..=8).map(|n| policy.delay_before(n, MID).expect("scheduled").as_secs_f64().round()).collect();
    assert_eq!(delays, [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]);
    assert_eq!(policy.delay_before(9, MID), None);
    assert_eq!(policy.delay_before(0, MID), None);
    assert_eq!(policy.timeout(), Duration::from_secs(15));
}

#[test]
fn jitter_stays_within_ten_percent() {
    let policy = RetryPolicy::default();
    let low = policy.delay_before(3, 0).expect("scheduled");
    let high = policy.delay_before(3, u32::MAX).expect("scheduled");
    assert_eq!(low, Duration::from_secs(270));
    assert_eq!(high, Duration::from_secs(330));
    assert_eq!(policy.delay_before(1, u32::MAX), Some(Duration::ZERO), "at once stays at once");
}

#[test]
fn responses_are_read_as_standard_webhooks_reads_them() {
    assert_eq!(classify_now(&response(200)), Outcome::Delivered);
    assert_eq!(classify_now(&response(204)), Outcome::Delivered);
    assert_eq!(classify_now(&response(410)), Outcome::Gone);
    for status in [301, 302, 307, 400, 401, 404, 500, 502, 504] {
        assert!(
            matches!(classify_now(&response(status)), Outcome::Failed { not_before: None, .. }),
            "{status}"
        );
    }
    assert!(matches!(classify_now(&Attempt::Timeout), Outcome::Failed { .. }));
    assert!(matches!(classify_now(&Attempt::Error("connection refused")), Outcome::Failed { .. }));
    let slow = Attempt::Response {
        status: 200,
        retry_after: None,
        delivery_control: None,
        elapsed: Duration::from_secs(16),
    };
    assert!(
        matches!(classify_now(&slow), Outcome::Failed { .. }),
        "a 2xx after the timeout is not a success"
    );
}

#[test]
fn retry_after_is_honoured_on_429_and_503() {
    let seconds = Attempt::Response {
        status: 429,
        retry_after: Some("120"),
        delivery_control: None,
        elapsed: Duration::ZERO,
    };
    assert_eq!(
        classify_now(&seconds),
        Outcome::Failed { reason: "HTTP 429".into(), not_before: Some(Duration::from_secs(120)) }
    );
    let date = Attempt::Response {
        status: 503,
        retry_after: Some("Wed, 01 May 2024 10:10:00 GMT"),
        delivery_control: None,
        elapsed: Duration::ZERO,
    };
    assert!(
        matches!(classify_now(&date), Outcome::Failed { not_before: Some(d), .. } if d == Duration::from_secs(600))
    );
    assert_eq!(
        parse_retry_after("Wed, 01 May 2024 09:00:00 GMT", now()),
        Some(Duration::ZERO),
        "a past date"
    );
    assert_eq!(parse_retry_after("999999", now()), Some(MAX_RETRY_AFTER));
    assert_eq!(parse_retry_after("soon", now()), None);
    let ignored = Attempt::Response {
        status: 500,
        retry_after: Some("120"),
        delivery_control: None,
        elapsed: Duration::ZERO,
    };
    assert!(matches!(classify_now(&ignored), Outcome::Failed { not_before: None, .. }));
}

#[test]
fn a_receiver_can_abort_a_message() {
    let abort = Attempt::Response {
        status: 400,
        retry_after: None,
        delivery_control: Some("abort-message"),
        elapsed: Duration::ZERO,
    };
    assert!(matches!(classify_now(&abort), Outcome::Aborted { .. }));
    let success = Attempt::Response {
        status: 200,
        retry_after: None,
        delivery_control: Some("abort-message"),
        elapsed: Duration::ZERO,
    };
    assert_eq!(classify_now(&success), Outcome::Delivered);
}

#[test]
fn the_verdict_follows_the_schedule() {
    let policy = RetryPolicy { schedule_seconds: vec![0, 60, 600], timeout_seconds: None };
    let t = Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).single().expect("a time");
    let failed = || Outcome::Failed { reason: "HTTP 500".into(), not_before: None };
    let second =
        chrono::Duration::from_std(policy.delay_before(2, MID).expect("scheduled")).expect("in range");
    assert_eq!(next(&policy, 1, failed(), t, MID), Verdict::RetryAt(t + second));
    assert!((second.num_milliseconds() - 60_000).abs() < 10);
    assert!(
        matches!(next(&policy, 3, failed(), t, MID), Verdict::GiveUp { ref reason } if reason.contains("all 3"))
    );
    let later = Outcome::Failed { reason: "HTTP 429".into(), not_before: Some(Duration::from_secs(3600)) };
    assert_eq!(
        next(&policy, 1, later, t, MID),
        Verdict::RetryAt(t + chrono::Duration::hours(1)),
        "the later wins"
    );
    assert_eq!(next(&policy, 1, Outcome::Delivered, t, MID), Verdict::Delivered);
    assert_eq!(next(&policy, 1, Outcome::Gone, t, MID), Verdict::DisableProfile);
    assert!(matches!(
        next(&policy, 1, Outcome::Aborted { reason: "x".into() }, t, MID),
        Verdict::GiveUp { .. }
    ));
}
