//! Knative delivery policy: the `delivery` spec of Brokers and Triggers, and the pure
//! retry / dead-letter decision the dispatcher makes after each attempt.
//!
//! Sans-IO: nothing here sleeps, sends or reads a clock; the caller passes `now` in.
//!
//! Knative behaviour followed here:
//! - `retry` absent → no retries (one attempt). `backoffPolicy` absent → `exponential`;
//!   `backoffDelay` absent → `PT0.2S` (Knative's default broker delivery).
//! - The wait before the next attempt is computed from the number of retries already
//!   made, `n = attempts - 1`, as Knative's dispatcher does (it passes the 0-based retry
//!   index): exponential waits `delay × 2^n` (delay, 2·delay, 4·delay, …), linear waits
//!   `delay × n` (0, delay, 2·delay, …).
//! - Retried: no response (connection error, timeout), 5xx, 404, 408, 409, 429. Every
//!   other non-2xx status goes to the dead-letter sink at once.
//! - `Retry-After` (delta-seconds or IMF-fixdate) is honoured on 429 and 503 when it asks
//!   for longer than the backoff, capped at [`RETRY_AFTER_MAX`].
//! - Dead-lettered events carry `knativeerrordest`, `knativeerrorcode` and
//!   `knativeerrordata` (the response body, base64, at most 1024 characters).

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::EventError;

/// The longest `Retry-After` delay honoured; longer requests are cut to this.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(600);

/// The default `backoffDelay` (`PT0.2S`).
pub const DEFAULT_BACKOFF_DELAY: Duration = Duration::from_millis(200);

/// The most `knativeerrordata` may hold, in characters of base64.
pub const ERROR_DATA_MAX_LEN: usize = 1024;

/// Knative's `delivery` spec (`duckv1.DeliverySpec`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverySpec {
    /// How many times to retry after the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<u32>,
    /// How the wait between attempts grows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_policy: Option<BackoffPolicy>,
    /// The base wait, an ISO-8601 duration such as `PT0.2S`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_delay: Option<String>,
    /// The per-attempt request timeout, an ISO-8601 duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Where events go when delivery fails for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_sink: Option<Destination>,
    /// `json` delivers in structured mode; `binary` (the default) in binary mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// `linear` or `exponential`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffPolicy {
    /// `delay × n`.
    Linear,
    /// `delay × 2^n`.
    #[default]
    Exponential,
}

/// Knative's `duckv1.Destination` and `KReference`, shared with the resource model.
pub use serval_model::{Destination, KReference};

/// A validated delivery policy with Knative's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retry: u32,
    pub backoff_policy: BackoffPolicy,
    pub backoff_delay: Duration,
    /// Per-attempt timeout, when the spec sets one (the dispatcher's default otherwise).
    pub timeout: Option<Duration>,
    /// The cap on a `Retry-After` delay.
    pub retry_after_max: Duration,
}

impl Default for RetryPolicy {
    /// No delivery spec: a single attempt.
    fn default() -> Self {
        Self {
            retry: 0,
            backoff_policy: BackoffPolicy::Exponential,
            backoff_delay: DEFAULT_BACKOFF_DELAY,
            timeout: None,
            retry_after_max: RETRY_AFTER_MAX,
        }
    }
}

/// What happened to one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The subscriber answered with this status, and maybe a parsed `Retry-After`.
    Status(u16, Option<RetryAfter>),
    /// No response: connection refused or reset, or the attempt timed out.
    NoResponse,
}

/// A parsed `Retry-After` header: how long from now the server asks us to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RetryAfter(pub Duration);

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Delivered (2xx).
    Done,
    /// Try again at this instant.
    RetryAt(Instant),
    /// Give up: send to the dead-letter sink (or drop without one). `code` is the last
    /// status, `None` when the last attempt got no response.
    DeadLetter { code: Option<u16> },
}

impl RetryPolicy {
    /// Validates `spec` and fills in Knative's defaults.
    pub fn from_spec(spec: &DeliverySpec) -> Result<Self, EventError> {
        let mut policy = Self::default();
        if let Some(retry) = spec.retry {
            policy.retry = retry;
        }
        if let Some(bp) = spec.backoff_policy {
            policy.backoff_policy = bp;
        }
        if let Some(delay) = &spec.backoff_delay {
            policy.backoff_delay = parse_iso8601_duration(delay).map_err(|e| EventError::InvalidDelivery {
                field: "spec.delivery.backoffDelay".into(),
                reason: e.to_string(),
            })?;
        }
        if let Some(timeout) = &spec.timeout {
            let field = "spec.delivery.timeout";
            let timeout = parse_iso8601_duration(timeout)
                .map_err(|e| EventError::InvalidDelivery { field: field.into(), reason: e.to_string() })?;
            if timeout.is_zero() {
                return Err(EventError::InvalidDelivery {
                    field: field.into(),
                    reason: "the timeout must be greater than zero".into(),
                });
            }
            policy.timeout = Some(timeout);
        }
        if let Some(dls) = &spec.dead_letter_sink
            && dls.reference.is_none()
            && dls.uri.as_deref().is_none_or(str::is_empty)
        {
            return Err(EventError::InvalidDelivery {
                field: "spec.delivery.deadLetterSink".into(),
                reason: "a destination needs a 'ref' or a 'uri'".into(),
            });
        }
        Ok(policy)
    }

    /// The backoff before the next attempt after `attempts` attempts (1-based), i.e. after
    /// `attempts - 1` retries: linear `delay × (attempts-1)`, exponential
    /// `delay × 2^(attempts-1)`. Saturates instead of overflowing.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let n = attempts.saturating_sub(1);
        match self.backoff_policy {
            BackoffPolicy::Linear => self.backoff_delay.saturating_mul(n),
            BackoffPolicy::Exponential => match 2u32.checked_pow(n) {
                Some(factor) => self.backoff_delay.saturating_mul(factor),
                None if self.backoff_delay.is_zero() => Duration::ZERO,
                None => Duration::MAX,
            },
        }
    }

    /// Decides what follows attempt number `attempt` (1-based: attempts made so far)
    /// that ended with `outcome`, at `now`.
    pub fn decide(&self, attempt: u32, outcome: Outcome, now: Instant) -> Decision {
        let (code, retry_after) = match outcome {
            Outcome::Status(code, _) if (200..300).contains(&code) => return Decision::Done,
            Outcome::Status(code, retry_after) => (Some(code), retry_after),
            Outcome::NoResponse => (None, None),
        };
        if !code.is_none_or(is_retryable) || attempt > self.retry {
            return Decision::DeadLetter { code };
        }
        let mut wait = self.backoff(attempt);
        if let (Some(429 | 503), Some(RetryAfter(asked))) = (code, retry_after) {
            wait = wait.max(asked.min(self.retry_after_max));
        }
        let at = now.checked_add(wait).or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600))).unwrap_or(now);
        Decision::RetryAt(at)
    }
}

/// Whether a non-2xx status is worth retrying: 5xx, 404, 408, 409, 429.
pub fn is_retryable(code: u16) -> bool {
    code >= 500 || matches!(code, 404 | 408 | 409 | 429)
}

impl RetryAfter {
    /// Parses a `Retry-After` header value: delta-seconds (`120`) or an IMF-fixdate
    /// (`Sun, 06 Nov 1994 08:49:37 GMT`), the latter relative to `now` (a date in the past
    /// means zero). `None` for anything else.
    pub fn parse(value: &str, now: SystemTime) -> Option<Self> {
        let value = value.trim();
        if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
            // Very long numbers saturate rather than fail: they are capped later anyway.
            let secs = value.parse::<u64>().unwrap_or(u64::MAX);
            return Some(Self(Duration::from_secs(secs)));
        }
        let at = parse_imf_fixdate(value)?;
        Some(Self(at.duration_since(now).unwrap_or(Duration::ZERO)))
    }
}

/// Parses `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_imf_fixdate(value: &str) -> Option<SystemTime> {
    let (day_name, rest) = value.split_once(", ")?;
    if !["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].contains(&day_name) {
        return None;
    }
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let number = |s: &str, len: usize| -> Option<u64> {
        (s.len() == len && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let day = number(day, 2)?;
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| m == month)? as u64 + 1;
    let year = number(year, 4)?;
    let hms: Vec<&str> = time.split(':').collect();
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    let (h, m, s) = (number(h, 2)?, number(m, 2)?, number(s, 2)?);
    if year < 1970 || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + h * 3600 + m * 60 + s;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (year ≥ 1970).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses the ISO-8601 durations Knative accepts: `P[nW][nD][T[nH][nM][n[.f]S]]`, e.g.
/// `PT0.2S`, `PT1M`, `P1DT2H`. Years and months (ambiguous lengths), negative durations
/// and fractions other than on seconds are rejected.
pub fn parse_iso8601_duration(value: &str) -> Result<Duration, EventError> {
    let err = |reason: &str| EventError::InvalidDuration { value: value.to_owned(), reason: reason.to_owned() };
    let Some(rest) = value.strip_prefix('P') else {
        return Err(err("an ISO-8601 duration starts with 'P', for example PT1S or PT0.2S"));
    };
    let (date, time) = match rest.split_once('T') {
        Some((date, time)) => (date, Some(time)),
        None => (rest, None),
    };
    let mut nanos: u128 = 0;
    let mut components = 0;
    components += parse_components(date, &[('W', 7 * 86_400), ('D', 86_400)], &mut nanos).map_err(|r| err(&r))?;
    if let Some(time) = time {
        if time.is_empty() {
            return Err(err("'T' must be followed by hours (H), minutes (M) or seconds (S)"));
        }
        components += parse_components(time, &[('H', 3600), ('M', 60), ('S', 1)], &mut nanos).map_err(|r| err(&r))?;
    }
    if components == 0 {
        return Err(err("no duration components; expected for example PT1S"));
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| err("duration too long"))?;
    // The remainder is below 10^9 and fits a u32.
    let sub = u32::try_from(nanos % 1_000_000_000).map_err(|_| err("duration too long"))?;
    Ok(Duration::new(secs, sub))
}

/// Parses `nU` components in the order of `units` (unit letter, seconds), adding their
/// length in nanoseconds to `total`. Returns how many components were found.
fn parse_components(mut text: &str, units: &[(char, u64)], total: &mut u128) -> Result<usize, String> {
    let mut next_unit = 0;
    let mut count = 0;
    while !text.is_empty() {
        let digits = text.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("expected a number at '{text}'"));
        }
        let (whole, after) = text.split_at(digits);
        let (fraction, after) = match after.strip_prefix(['.', ',']) {
            Some(after) => {
                let len = after.bytes().take_while(u8::is_ascii_digit).count();
                if len == 0 {
                    return Err("expected digits after the decimal point".into());
                }
                let (f, after) = after.split_at(len);
                (Some(f), after)
            }
            None => (None, after),
        };
        let Some(unit) = after.chars().next() else {
            return Err(format!("the number '{whole}' has no unit"));
        };
        let Some(pos) = units.iter().position(|(u, _)| *u == unit) else {
            let expected: String = units.iter().map(|(u, _)| *u).collect();
            return Err(format!("unexpected unit '{unit}' (allowed here, in order: {expected})"));
        };
        if pos < next_unit {
            return Err(format!("unit '{unit}' is repeated or out of order"));
        }
        let (_, unit_secs) = units[pos];
        if fraction.is_some() && unit_secs != 1 {
            return Err("only seconds may have a fraction".into());
        }
        let whole: u128 = whole.parse().map_err(|_| "number too large".to_owned())?;
        *total = whole
            .checked_mul(u128::from(unit_secs) * 1_000_000_000)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| "duration too long".to_owned())?;
        if let Some(fraction) = fraction {
            // Nanosecond precision; further digits are dropped.
            let digits: String = fraction.chars().chain(std::iter::repeat('0')).take(9).collect();
            let frac: u128 = digits.parse().map_err(|_| "bad fraction".to_owned())?;
            *total += frac;
        }
        next_unit = pos + 1;
        count += 1;
        text = &after[unit.len_utf8()..];
    }
    Ok(count)
}

/// The extension attributes Knative adds to a dead-lettered event:
/// `knativeerrordest` (the URL delivery failed to), `knativeerrorcode` (the last status,
/// when there was a response) and `knativeerrordata` (the last response body in base64,
/// truncated to [`ERROR_DATA_MAX_LEN`] characters — the first 768 bytes of the body —
/// when the body is not empty).
pub fn dead_letter_extensions(destination_url: &str, code: Option<u16>, body: &[u8]) -> Vec<(String, String)> {
    let mut extensions = vec![("knativeerrordest".to_owned(), destination_url.to_owned())];
    if let Some(code) = code {
        extensions.push(("knativeerrorcode".to_owned(), code.to_string()));
    }
    if !body.is_empty() {
        // 1024 base64 characters encode exactly 768 bytes, without padding.
        let max_bytes = ERROR_DATA_MAX_LEN / 4 * 3;
        let body = &body[..body.len().min(max_bytes)];
        extensions.push(("knativeerrordata".to_owned(), base64::engine::general_purpose::STANDARD.encode(body)));
    }
    extensions
}

/// How many started events (finished ones included) a [`DeliveryWindow`] holds per slot of
/// its limit before it refuses new ones: bounds memory while an old event is still retrying.
const OPEN_PER_SLOT: usize = 100;

/// The events of one trigger's stream being delivered, and its watermark: the log position
/// up to which every event has been handled, which is the cursor to store. Events start in
/// log order and may finish in any order; at most `limit` are in flight at once.
///
/// Sans-IO: the dispatcher reports starts and finishes; nothing here waits.
#[derive(Debug)]
pub struct DeliveryWindow {
    watermark: i64,
    /// Started events in log order, with whether each has finished.
    open: VecDeque<(i64, bool)>,
    in_flight: usize,
    limit: usize,
}

impl DeliveryWindow {
    /// A window after `cursor` (everything up to it handled) letting `limit` (≥ 1) events fly.
    pub fn new(cursor: i64, limit: usize) -> DeliveryWindow {
        DeliveryWindow { watermark: cursor, open: VecDeque::new(), in_flight: 0, limit: limit.max(1) }
    }

    /// Whether another event may start.
    pub fn has_room(&self) -> bool {
        self.in_flight < self.limit && self.open.len() < self.limit.saturating_mul(OPEN_PER_SLOT)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Every event up to here has been handled.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }

    /// The event at `seq` (after every event started so far) starts.
    pub fn start(&mut self, seq: i64) {
        debug_assert!(self.open.back().map_or(self.watermark, |(s, _)| *s) < seq, "events start in log order");
        self.open.push_back((seq, false));
        self.in_flight += 1;
    }

    /// The event at `seq` was handled (delivered, dead-lettered or dropped); the watermark
    /// moves past every finished event at the head.
    pub fn finish(&mut self, seq: i64) {
        let Ok(i) = self.open.binary_search_by_key(&seq, |(s, _)| *s) else {
            return;
        };
        if !self.open[i].1 {
            self.open[i].1 = true;
            self.in_flight -= 1;
        }
        while let Some(&(head, true)) = self.open.front() {
            self.watermark = head;
            self.open.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_watermark_waits_for_the_oldest_event_in_flight() {
        let mut w = DeliveryWindow::new(10, 3);
        for seq in [11, 13, 14] {
            assert!(w.has_room());
            w.start(seq);
        }
        assert!(!w.has_room(), "three in flight fill a window of 3");
        w.finish(14);
        w.finish(13);
        assert_eq!(w.watermark(), 10, "11 is still in flight");
        assert!(w.has_room());
        w.start(20);
        w.finish(11);
        assert_eq!(w.watermark(), 14, "11, 13 and 14 are done; 20 is not");
        w.finish(11);
        assert_eq!(w.in_flight(), 1, "finishing twice counts once");
        w.finish(20);
        assert_eq!(w.watermark(), 20);
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn a_long_retry_at_the_head_bounds_how_far_the_window_runs_ahead() {
        let mut w = DeliveryWindow::new(0, 2);
        w.start(1);
        let mut seq = 1;
        while w.has_room() {
            seq += 1;
            w.start(seq);
            w.finish(seq);
        }
        assert_eq!(seq as usize, 2 * OPEN_PER_SLOT, "the window stops at 100 started events per slot");
        assert_eq!(w.watermark(), 0);
        w.finish(1);
        assert_eq!(w.watermark(), seq);
        assert!(w.has_room());
    }

    fn policy(spec: serde_json::Value) -> RetryPolicy {
        let spec: DeliverySpec = serde_json::from_value(spec).expect("valid spec JSON");
        RetryPolicy::from_spec(&spec).expect("valid spec")
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn status(code: u16) -> Outcome {
        Outcome::Status(code, None)
    }

    fn wait_of(decision: Decision, now: Instant) -> Duration {
        match decision {
            Decision::RetryAt(at) => at.duration_since(now),
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn spec_serde_uses_knative_field_names() {
        let value = json!({
            "retry": 3,
            "backoffPolicy": "linear",
            "backoffDelay": "PT0.5S",
            "timeout": "PT10S",
            "deadLetterSink": {
                "ref": {"kind": "Service", "name": "dls", "namespace": "ns", "apiVersion": "serving.knative.dev/v1"},
                "uri": "/path"
            }
        });
        let spec: DeliverySpec = serde_json::from_value(value.clone()).expect("parses");
        assert_eq!(spec.retry, Some(3));
        assert_eq!(spec.backoff_policy, Some(BackoffPolicy::Linear));
        let dls = spec.dead_letter_sink.as_ref().expect("a sink");
        assert_eq!(dls.reference.as_ref().expect("a ref").api_version, "serving.knative.dev/v1");
        assert_eq!(serde_json::to_value(&spec).expect("serializes"), value);
        let bad: Result<DeliverySpec, _> = serde_json::from_value(json!({"backoffPolicy": "cubic"}));
        assert!(bad.is_err());
        let negative: Result<DeliverySpec, _> = serde_json::from_value(json!({"retry": -1}));
        assert!(negative.is_err());
    }

    #[test]
    fn defaults() {
        let p = RetryPolicy::from_spec(&DeliverySpec::default()).expect("valid");
        assert_eq!(p, RetryPolicy::default());
        assert_eq!(p.retry, 0);
        assert_eq!(p.backoff_policy, BackoffPolicy::Exponential);
        assert_eq!(p.backoff_delay, ms(200));
        assert_eq!(p.timeout, None);
        let now = Instant::now();
        assert_eq!(p.decide(1, status(503), now), Decision::DeadLetter { code: Some(503) });
    }

    #[test]
    fn from_spec_parses_durations_and_names_bad_fields() {
        let p = policy(json!({"retry": 2, "backoffDelay": "PT1M", "timeout": "PT2.5S"}));
        assert_eq!(p.backoff_delay, Duration::from_secs(60));
        assert_eq!(p.timeout, Some(ms(2500)));
        let err = RetryPolicy::from_spec(&DeliverySpec { backoff_delay: Some("1s".into()), ..Default::default() })
            .expect_err("invalid");
        assert!(err.to_string().contains("spec.delivery.backoffDelay"), "{err}");
        let err = RetryPolicy::from_spec(&DeliverySpec { timeout: Some("PT0S".into()), ..Default::default() })
            .expect_err("invalid");
        assert!(err.to_string().contains("spec.delivery.timeout"), "{err}");
        let err = RetryPolicy::from_spec(&DeliverySpec {
            dead_letter_sink: Some(Destination::default()),
            ..Default::default()
        })
        .expect_err("invalid");
        assert!(err.to_string().contains("deadLetterSink"), "{err}");
    }

    #[test]
    fn exponential_sequence() {
        let p = policy(json!({"retry": 5, "backoffPolicy": "exponential", "backoffDelay": "PT0.1S"}));
        let waits: Vec<Duration> = (1..=5).map(|a| p.backoff(a)).collect();
        assert_eq!(waits, vec![ms(100), ms(200), ms(400), ms(800), ms(1600)]);
        let now = Instant::now();
        for attempt in 1..=5 {
            assert_eq!(wait_of(p.decide(attempt, status(500), now), now), p.backoff(attempt));
        }
    }

    #[test]
    fn linear_sequence() {
        let p = policy(json!({"retry": 4, "backoffPolicy": "linear", "backoffDelay": "PT1S"}));
        let waits: Vec<Duration> = (1..=4).map(|a| p.backoff(a)).collect();
        assert_eq!(waits, vec![ms(0), ms(1000), ms(2000), ms(3000)]);
    }

    #[test]
    fn backoff_saturates() {
        let p = policy(json!({"retry": 1000, "backoffDelay": "PT1S"}));
        assert_eq!(p.backoff(200), Duration::MAX);
        let now = Instant::now();
        assert!(matches!(p.decide(200, Outcome::NoResponse, now), Decision::RetryAt(at) if at > now));
        let zero = policy(json!({"retry": 1000, "backoffDelay": "PT0S"}));
        assert_eq!(zero.backoff(200), Duration::ZERO);
    }

    #[test]
    fn two_xx_is_done() {
        let p = policy(json!({"retry": 3}));
        let now = Instant::now();
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(p.decide(1, status(code), now), Decision::Done);
            assert_eq!(p.decide(4, status(code), now), Decision::Done);
        }
    }

    #[test]
    fn retryable_codes_are_retried() {
        let p = policy(json!({"retry": 3}));
        let now = Instant::now();
        for code in [500, 502, 503, 504, 599, 404, 408, 409, 429] {
            assert!(matches!(p.decide(1, status(code), now), Decision::RetryAt(_)), "{code}");
        }
        assert!(matches!(p.decide(1, Outcome::NoResponse, now), Decision::RetryAt(_)));
    }

    #[test]
    fn non_retryable_dead_letters_after_one_attempt() {
        let p = policy(json!({"retry": 3}));
        let now = Instant::now();
        for code in [100, 301, 304, 400, 401, 403, 405, 410, 413, 422] {
            assert_eq!(p.decide(1, status(code), now), Decision::DeadLetter { code: Some(code) }, "{code}");
        }
    }

    #[test]
    fn retries_exhausted_dead_letters_with_last_code() {
        let p = policy(json!({"retry": 2, "backoffDelay": "PT0.01S"}));
        let now = Instant::now();
        assert!(matches!(p.decide(1, status(503), now), Decision::RetryAt(_)));
        assert!(matches!(p.decide(2, Outcome::NoResponse, now), Decision::RetryAt(_)));
        assert_eq!(p.decide(3, status(502), now), Decision::DeadLetter { code: Some(502) });
        assert_eq!(p.decide(3, Outcome::NoResponse, now), Decision::DeadLetter { code: None });
    }

    #[test]
    fn retry_after_longer_than_backoff_is_honoured_for_429_and_503() {
        let p = policy(json!({"retry": 3, "backoffDelay": "PT1S"}));
        let now = Instant::now();
        let ra = Some(RetryAfter(Duration::from_secs(30)));
        assert_eq!(wait_of(p.decide(1, Outcome::Status(429, ra), now), now), Duration::from_secs(30));
        assert_eq!(wait_of(p.decide(1, Outcome::Status(503, ra), now), now), Duration::from_secs(30));
        // Not for other retryable codes.
        assert_eq!(wait_of(p.decide(1, Outcome::Status(500, ra), now), now), Duration::from_secs(1));
        assert_eq!(wait_of(p.decide(1, Outcome::Status(404, ra), now), now), Duration::from_secs(1));
    }

    #[test]
    fn retry_after_shorter_than_backoff_is_ignored() {
        let p = policy(json!({"retry": 3, "backoffDelay": "PT10S"}));
        let now = Instant::now();
        let ra = Some(RetryAfter(Duration::from_secs(2)));
        assert_eq!(wait_of(p.decide(2, Outcome::Status(429, ra), now), now), Duration::from_secs(20));
    }

    #[test]
    fn retry_after_is_capped() {
        let p = policy(json!({"retry": 3}));
        let now = Instant::now();
        let ra = Some(RetryAfter(Duration::from_secs(86_400)));
        assert_eq!(wait_of(p.decide(1, Outcome::Status(503, ra), now), now), RETRY_AFTER_MAX);
    }

    #[test]
    fn retry_after_does_not_extend_retries() {
        let p = policy(json!({"retry": 1}));
        let now = Instant::now();
        let ra = Some(RetryAfter(Duration::from_secs(5)));
        assert_eq!(p.decide(2, Outcome::Status(429, ra), now), Decision::DeadLetter { code: Some(429) });
    }

    #[test]
    fn retry_after_header_parsing() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(RetryAfter::parse("120", now), Some(RetryAfter(Duration::from_secs(120))));
        assert_eq!(RetryAfter::parse(" 0 ", now), Some(RetryAfter(Duration::ZERO)));
        assert_eq!(RetryAfter::parse("Sun, 06 Nov 1994 08:50:37 GMT", now), Some(RetryAfter(Duration::from_secs(60))));
        assert_eq!(RetryAfter::parse("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(RetryAfter(Duration::ZERO)));
        assert_eq!(RetryAfter::parse("Sat, 05 Nov 1994 08:49:37 GMT", now), Some(RetryAfter(Duration::ZERO)));
        assert_eq!(
            RetryAfter::parse("Thu, 01 Jan 1970 00:00:10 GMT", SystemTime::UNIX_EPOCH),
            Some(RetryAfter(Duration::from_secs(10)))
        );
        assert_eq!(
            RetryAfter::parse("Tue, 29 Feb 2000 00:00:00 GMT", SystemTime::UNIX_EPOCH),
            Some(RetryAfter(Duration::from_secs(951_782_400)))
        );
        for bad in ["", "-1", "1.5", "soon", "Sun, 06 Nov 1994 08:49:37 UTC", "Sunday, 06-Nov-94 08:49:37 GMT"] {
            assert_eq!(RetryAfter::parse(bad, now), None, "{bad}");
        }
    }

    #[test]
    fn iso8601_durations() {
        let ok = [
            ("PT0.2S", ms(200)),
            ("PT1S", ms(1000)),
            ("PT1M", Duration::from_secs(60)),
            ("PT1H", Duration::from_secs(3600)),
            ("P1D", Duration::from_secs(86_400)),
            ("P1W", Duration::from_secs(7 * 86_400)),
            ("P1DT2H3M4.5S", Duration::from_millis(((86_400 + 7200 + 180 + 4) * 1000) + 500)),
            ("PT0S", Duration::ZERO),
            ("PT1,5S", ms(1500)),
            ("PT0.000000001S", Duration::from_nanos(1)),
            ("PT0.1234567899S", Duration::from_nanos(123_456_789)),
            ("PT90M", Duration::from_secs(5400)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_iso8601_duration(text).expect(text), want, "{text}");
        }
    }

    #[test]
    fn iso8601_rejects_garbage() {
        let bad = [
            "",
            "P",
            "PT",
            "1S",
            "T1S",
            "pt1s",
            "-PT1S",
            "PT-1S",
            "PT1",
            "PTS",
            "PT1.S",
            "PT.5S",
            "P1Y",
            "P1M",
            "PT1.5M",
            "PT1S1M",
            "PT1M1M",
            "P1H",
            "PT1D",
            "PT1S ",
            " PT1S",
            "PT1X",
            "P1DT",
            "PT99999999999999999999999H",
        ];
        for text in bad {
            let err = parse_iso8601_duration(text).expect_err(text);
            assert!(matches!(err, EventError::InvalidDuration { .. }), "{text}");
            assert!(err.to_string().contains("ISO-8601"), "{err}");
        }
    }

    #[test]
    fn dead_letter_extensions_carry_dest_code_and_base64_data() {
        let ext = dead_letter_extensions("http://sub.default.svc/", Some(503), b"overloaded");
        assert_eq!(
            ext,
            vec![
                ("knativeerrordest".to_owned(), "http://sub.default.svc/".to_owned()),
                ("knativeerrorcode".to_owned(), "503".to_owned()),
                ("knativeerrordata".to_owned(), "b3ZlcmxvYWRlZA==".to_owned()),
            ]
        );
    }

    #[test]
    fn dead_letter_extensions_without_code_or_body() {
        let ext = dead_letter_extensions("http://x/", None, b"");
        assert_eq!(ext, vec![("knativeerrordest".to_owned(), "http://x/".to_owned())]);
    }

    #[test]
    fn dead_letter_data_is_truncated_to_1024_characters() {
        let body = vec![b'a'; 5000];
        let ext = dead_letter_extensions("http://x/", Some(500), &body);
        let (_, data) = ext.iter().find(|(k, _)| k == "knativeerrordata").expect("data");
        assert_eq!(data.len(), ERROR_DATA_MAX_LEN);
        let decoded = base64::engine::general_purpose::STANDARD.decode(data).expect("valid base64");
        assert_eq!(decoded, vec![b'a'; 768]);
        // Same as truncating the full encoding, as Knative does.
        let full = base64::engine::general_purpose::STANDARD.encode(&body);
        assert_eq!(data.as_str(), &full[..ERROR_DATA_MAX_LEN]);
    }
}
