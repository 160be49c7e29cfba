//! A claimed job's hash fields, checked into typed, bounded values before
//! anything runs.
//!
//! Job hashes come from any producer — python-rq, older forge versions, a
//! buggy script — so every field the worker acts on is parsed here, once.
//! A value the worker cannot act on safely (a timeout of `nan` or `1e300`,
//! a TTL Redis would refuse, a retry delay past the end of time, a payload
//! inflating without bound) fails that job with an `exc_info` naming the
//! field and the value (`forge_rq.InvalidJob: field "timeout" = "nan": …`)
//! instead of panicking the worker or handing a Lua script a number Redis
//! refuses after it already wrote.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::job::{Backoff, JobCall, decode_data_bounded};

/// What a negative timeout (python-rq's `-1`, "no timeout") stands for, and
/// the longest timeout accepted: a year.
pub const NO_TIMEOUT: Duration = Duration::from_secs(31_536_000);
/// The longest result or failure TTL accepted, seconds (100 years; Redis
/// refuses expiry times far beyond).
pub const MAX_TTL_SECS: i64 = 100 * 31_536_000;
/// The longest delay before a retry: a year.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(31_536_000);
/// The default bound on a job's inflated payload: 64 MiB.
pub const DEFAULT_MAX_JOB_DATA_BYTES: u64 = 64 << 20;

/// How far a job's `data` may inflate (`worker.max_job_data_bytes`): 1 KiB
/// to 4 GiB, default 64 MiB. A payload inflating past it fails its job
/// instead of growing the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct JobDataLimit(u64);

impl JobDataLimit {
    /// The bound in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl Default for JobDataLimit {
    fn default() -> Self {
        JobDataLimit(DEFAULT_MAX_JOB_DATA_BYTES)
    }
}

impl TryFrom<u64> for JobDataLimit {
    type Error = String;
    fn try_from(n: u64) -> Result<Self, String> {
        if !(1024..=4 << 30).contains(&n) {
            return Err(format!(
                "max_job_data_bytes must be between 1024 and 4294967296, not {n}"
            ));
        }
        Ok(JobDataLimit(n))
    }
}

impl From<JobDataLimit> for u64 {
    fn from(l: JobDataLimit) -> u64 {
        l.0
    }
}

/// A job field the worker cannot act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field {field:?} = {value}: {reason}")]
pub struct InvalidField {
    /// The hash field.
    pub field: &'static str,
    /// Its value, quoted, escaped and cut to 64 bytes.
    pub value: String,
    /// Why it is refused.
    pub reason: String,
}

impl InvalidField {
    fn new(field: &'static str, raw: &[u8], reason: impl Into<String>) -> Self {
        let cut = &raw[..raw.len().min(64)];
        let escaped: String = cut
            .iter()
            .flat_map(|b| std::ascii::escape_default(*b))
            .map(char::from)
            .collect();
        let mut value = format!("\"{escaped}\"");
        if raw.len() > cut.len() {
            value.push_str(&format!(" ({} bytes)", raw.len()));
        }
        InvalidField {
            field,
            value,
            reason: reason.into(),
        }
    }
}

/// Where the delays between retries come from.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryDelays {
    /// forge's exponential backoff (`forge_backoff`).
    Backoff(Backoff),
    /// Fixed intervals (`forge_retry_intervals_ms`, or python-rq's
    /// `retry_intervals` in seconds): retry `k` waits
    /// `intervals[len − retries_left]`, the last one repeating.
    Intervals(Vec<Duration>),
}

/// A job's retry state.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryState {
    /// Retries still allowed (`retries_left`).
    pub retries_left: u32,
    /// Where the delays come from.
    pub delays: RetryDelays,
    /// Whether a retry goes to the head of the queue (`enqueue_at_front_on_retry`).
    pub at_front: bool,
}

impl RetryState {
    /// The delay before the next retry, with `unit` uniform in `[0, 1)`
    /// (the jitter), after `done` retries; `None` when no retry is left.
    pub fn next_delay(&self, done: u32, unit: f64) -> Option<Duration> {
        if self.retries_left == 0 {
            return None;
        }
        let d = match &self.delays {
            RetryDelays::Backoff(b) => b.delay(done, unit),
            RetryDelays::Intervals(list) if list.is_empty() => Duration::ZERO,
            RetryDelays::Intervals(list) => {
                let idx = list.len().saturating_sub(self.retries_left as usize);
                list[idx.min(list.len() - 1)]
            }
        };
        Some(d.min(MAX_RETRY_DELAY))
    }
}

/// Everything the worker needs from a job hash, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct JobParams {
    /// The call (`data`).
    pub call: JobCall,
    /// This attempt's timeout (`timeout`, else the worker's default).
    pub timeout: Duration,
    /// Seconds a finished job is kept; negative = forever, 0 = deleted at once.
    pub result_ttl: i64,
    /// Seconds a failed job is kept; negative = forever.
    pub failure_ttl: i64,
    /// Retries done before this attempt (`number_of_retries`).
    pub attempt: u32,
    /// Retry state; `None` when the job has no `retries_left`.
    pub retry: Option<RetryState>,
}

/// The worker's defaults and bounds for [`JobParams::parse`].
#[derive(Debug, Clone, Copy)]
pub struct FieldDefaults {
    /// Timeout of jobs without one.
    pub timeout: Duration,
    /// Result TTL of jobs without one, seconds.
    pub result_ttl: i64,
    /// Failure TTL of jobs without one, seconds.
    pub failure_ttl: i64,
    /// Bound on the inflated payload.
    pub max_data: JobDataLimit,
}

/// Why a job cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobRefusal {
    /// `data` missing or not a JSON-serializer payload.
    #[error("forge_rq.DeserializationError: cannot decode job payload: {0}")]
    Payload(String),
    /// Another field the worker cannot act on.
    #[error("forge_rq.InvalidJob: {0}")]
    Field(#[from] InvalidField),
    /// A field longer than the bound; the claim did not load it.
    #[error("forge_rq.InvalidJob: {0}")]
    Oversized(String),
}

/// A field's value; empty counts as unset (python-rq writes `""` for unset).
fn raw<'a>(fields: &'a HashMap<String, Vec<u8>>, name: &str) -> Option<&'a [u8]> {
    fields
        .get(name)
        .map(Vec::as_slice)
        .filter(|v| !v.is_empty())
}

/// A field as text; invalid UTF-8 is an error.
fn text<'a>(
    fields: &'a HashMap<String, Vec<u8>>,
    name: &'static str,
) -> Result<Option<&'a str>, InvalidField> {
    match raw(fields, name) {
        None => Ok(None),
        Some(v) => std::str::from_utf8(v)
            .map(|s| Some(s.trim()))
            .map_err(|_| InvalidField::new(name, v, "not UTF-8 text")),
    }
}

impl JobParams {
    /// The failure TTL alone, falling back to the default when the field is
    /// unusable — what a job that cannot run is kept for.
    pub fn failure_ttl_or_default(fields: &HashMap<String, Vec<u8>>, d: &FieldDefaults) -> i64 {
        parse_ttl(fields, "failure_ttl", d.failure_ttl).unwrap_or(d.failure_ttl)
    }

    /// Checks every field the worker acts on.
    pub fn parse(
        fields: &HashMap<String, Vec<u8>>,
        d: &FieldDefaults,
    ) -> Result<JobParams, JobRefusal> {
        if let Some(v) = raw(fields, "forge_oversized") {
            let text = String::from_utf8_lossy(v);
            let (field, bytes) = text.split_once(' ').unwrap_or((&text, "?"));
            return Err(JobRefusal::Oversized(format!(
                "field {field:?} is {bytes} bytes, more than worker.max_job_data_bytes ({})",
                d.max_data.bytes()
            )));
        }
        let data = fields
            .get("data")
            .ok_or_else(|| JobRefusal::Payload("job has no data field".into()))?;
        let call = decode_data_bounded(data, d.max_data.bytes()).map_err(JobRefusal::Payload)?;
        let timeout = match text(fields, "timeout")? {
            None => d.timeout,
            Some(t) => parse_timeout(t)
                .map_err(|reason| InvalidField::new("timeout", t.as_bytes(), reason))?
                .unwrap_or(d.timeout),
        };
        let result_ttl = parse_ttl(fields, "result_ttl", d.result_ttl)?;
        let failure_ttl = parse_ttl(fields, "failure_ttl", d.failure_ttl)?;
        let attempt = parse_count(fields, "number_of_retries")?.unwrap_or(0);
        let retry = match parse_count(fields, "retries_left")? {
            None => None,
            Some(retries_left) => Some(RetryState {
                retries_left,
                delays: parse_delays(fields)?,
                at_front: raw(fields, "enqueue_at_front_on_retry") == Some(b"1"),
            }),
        };
        Ok(JobParams {
            call,
            timeout,
            result_ttl,
            failure_ttl,
            attempt,
            retry,
        })
    }
}

/// Parses python-rq's timeout spelling: seconds (`180`, also decimals), or
/// `<integer><s|m|h|d>` (`"3m"`, case-insensitive). Negative = no timeout
/// ([`NO_TIMEOUT`]); `0` = the worker's default (`Ok(None)`). Not finite,
/// unparseable or longer than [`NO_TIMEOUT`] is an error.
pub fn parse_timeout(s: &str) -> Result<Option<Duration>, String> {
    let s = s.trim();
    let secs: f64 = match s.parse::<f64>() {
        Ok(n) if !n.is_finite() => return Err("not a finite number of seconds".into()),
        Ok(n) => n,
        Err(_) => {
            let mut chars = s.chars();
            let unit = chars.next_back().map(|c| c.to_ascii_lowercase());
            let mult: i64 = match unit {
                Some('s') => 1,
                Some('m') => 60,
                Some('h') => 3600,
                Some('d') => 86400,
                _ => {
                    return Err(
                        "expected seconds, <integer><s|m|h|d> (\"3m\") or -1 for no timeout".into(),
                    );
                }
            };
            let n: i64 = chars.as_str().parse().map_err(|_| {
                "expected seconds, <integer><s|m|h|d> (\"3m\") or -1 for no timeout".to_owned()
            })?;
            match n.checked_mul(mult) {
                Some(v) => v as f64,
                None => return Err(too_long()),
            }
        }
    };
    if secs < 0.0 {
        return Ok(Some(NO_TIMEOUT));
    }
    if secs == 0.0 {
        return Ok(None);
    }
    if secs > NO_TIMEOUT.as_secs_f64() {
        return Err(too_long());
    }
    Ok(Some(Duration::from_secs_f64(secs)))
}

fn too_long() -> String {
    format!(
        "longer than the longest timeout ({} s); use -1 for no timeout",
        NO_TIMEOUT.as_secs()
    )
}

/// A TTL field: an integer of seconds, negative = forever (normalized to -1).
fn parse_ttl(
    fields: &HashMap<String, Vec<u8>>,
    name: &'static str,
    default: i64,
) -> Result<i64, InvalidField> {
    let Some(t) = text(fields, name)? else {
        return Ok(default);
    };
    let n: i64 = t
        .parse()
        .map_err(|_| InvalidField::new(name, t.as_bytes(), "not an integer of seconds"))?;
    if n > MAX_TTL_SECS {
        return Err(InvalidField::new(
            name,
            t.as_bytes(),
            format!("more than {MAX_TTL_SECS} s; use -1 to keep forever"),
        ));
    }
    Ok(if n < 0 { -1 } else { n })
}

/// A counter field: a non-negative 32-bit integer.
fn parse_count(
    fields: &HashMap<String, Vec<u8>>,
    name: &'static str,
) -> Result<Option<u32>, InvalidField> {
    let Some(t) = text(fields, name)? else {
        return Ok(None);
    };
    t.parse().map(Some).map_err(|_| {
        InvalidField::new(
            name,
            t.as_bytes(),
            "not an integer between 0 and 4294967295",
        )
    })
}

/// The retry delays: `forge_backoff`, else `forge_retry_intervals_ms`, else
/// python-rq's `retry_intervals` (seconds, integers or decimals).
fn parse_delays(fields: &HashMap<String, Vec<u8>>) -> Result<RetryDelays, InvalidField> {
    let max_ms = MAX_RETRY_DELAY.as_millis() as u64;
    if let Some(t) = text(fields, "forge_backoff")? {
        let bad = |why: &str| InvalidField::new("forge_backoff", t.as_bytes(), why);
        let b: Backoff = serde_json::from_str(t)
            .map_err(|e| bad(&format!("not a backoff {{base_ms, max_ms, jitter}}: {e}")))?;
        if b.base_ms > max_ms || b.max_ms > max_ms {
            return Err(bad(&format!("delays are at most {max_ms} ms")));
        }
        if !(0.0..=1.0).contains(&b.jitter) {
            return Err(bad("jitter must be between 0 and 1"));
        }
        return Ok(RetryDelays::Backoff(b));
    }
    if let Some(t) = text(fields, "forge_retry_intervals_ms")? {
        let ms: Vec<u64> = serde_json::from_str(t).map_err(|e| {
            InvalidField::new(
                "forge_retry_intervals_ms",
                t.as_bytes(),
                format!("not a list of milliseconds: {e}"),
            )
        })?;
        if ms.iter().any(|m| *m > max_ms) {
            return Err(InvalidField::new(
                "forge_retry_intervals_ms",
                t.as_bytes(),
                format!("intervals are at most {max_ms} ms"),
            ));
        }
        return Ok(RetryDelays::Intervals(
            ms.into_iter().map(Duration::from_millis).collect(),
        ));
    }
    let Some(t) = text(fields, "retry_intervals")? else {
        return Ok(RetryDelays::Intervals(Vec::new()));
    };
    let bad = |why: String| InvalidField::new("retry_intervals", t.as_bytes(), why);
    let list: Vec<serde_json::Value> = match serde_json::from_str(t) {
        Ok(serde_json::Value::Array(a)) => a,
        Ok(serde_json::Value::Null) => Vec::new(),
        Ok(_) => return Err(bad("not a list of seconds".into())),
        Err(e) => return Err(bad(format!("not a list of seconds: {e}"))),
    };
    let mut out = Vec::with_capacity(list.len());
    for v in list {
        match v.as_f64() {
            Some(s) if (0.0..=MAX_RETRY_DELAY.as_secs_f64()).contains(&s) => {
                out.push(Duration::from_secs_f64(s));
            }
            _ => {
                return Err(bad(format!(
                    "intervals are seconds between 0 and {}, not {v}",
                    MAX_RETRY_DELAY.as_secs()
                )));
            }
        }
    }
    Ok(RetryDelays::Intervals(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    #[test]
    fn timeouts_parse_like_python_rq_and_refuse_the_rest() {
        assert_eq!(parse_timeout("30"), Ok(d(30)));
        assert_eq!(parse_timeout(" 30 "), Ok(d(30)));
        assert_eq!(parse_timeout("2m"), Ok(d(120)));
        assert_eq!(parse_timeout("1H"), Ok(d(3600)));
        assert_eq!(parse_timeout("1d"), Ok(d(86400)));
        assert_eq!(parse_timeout("1.5"), Ok(Some(Duration::from_millis(1500))));
        assert_eq!(parse_timeout("-1"), Ok(Some(NO_TIMEOUT)));
        assert_eq!(parse_timeout("-5m"), Ok(Some(NO_TIMEOUT)));
        assert_eq!(parse_timeout("0"), Ok(None));
        assert_eq!(parse_timeout("31536000"), Ok(Some(NO_TIMEOUT)));
        for bad in [
            "junk",
            "nan",
            "-nan",
            "inf",
            "-inf",
            "infinity",
            "1e300",
            "31536001",
            "99999999999999999999d",
            "9223372036854775807d",
            "\u{fffd}",
            "é",
            "m",
            "5x",
            "",
        ] {
            assert!(parse_timeout(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn fields(pairs: &[(&str, &[u8])]) -> HashMap<String, Vec<u8>> {
        let mut m: HashMap<String, Vec<u8>> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect();
        m.entry("data".into())
            .or_insert_with(|| br#"["f", null, [], {}]"#.to_vec());
        m
    }

    fn defaults() -> FieldDefaults {
        FieldDefaults {
            timeout: Duration::from_secs(180),
            result_ttl: 500,
            failure_ttl: 1000,
            max_data: JobDataLimit::default(),
        }
    }

    fn refusal(pairs: &[(&str, &[u8])]) -> String {
        JobParams::parse(&fields(pairs), &defaults())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn fields_are_checked_and_named_in_the_refusal() {
        let p = JobParams::parse(&fields(&[]), &defaults()).unwrap();
        assert_eq!(p.timeout, Duration::from_secs(180));
        assert_eq!((p.result_ttl, p.failure_ttl, p.attempt), (500, 1000, 0));
        assert!(p.retry.is_none());
        let p = JobParams::parse(
            &fields(&[
                ("timeout", b""),
                ("result_ttl", b"-7"),
                ("retries_left", b"2"),
                ("retry_intervals", b"[1, 2.5]"),
                ("number_of_retries", b"4294967295"),
            ]),
            &defaults(),
        )
        .unwrap();
        assert_eq!(p.result_ttl, -1);
        assert_eq!(p.attempt, u32::MAX);
        let r = p.retry.unwrap();
        // Two retries left of two intervals: the first interval.
        assert_eq!(r.next_delay(0, 0.5), d(1));
        for (pairs, want) in [
            (
                &[("timeout", &b"\xff"[..])][..],
                "forge_rq.InvalidJob: field \"timeout\" = \"\\xff\": not UTF-8 text",
            ),
            (&[("timeout", b"nan")], "field \"timeout\" = \"nan\""),
            (&[("result_ttl", b"1.5")], "field \"result_ttl\""),
            (&[("failure_ttl", b"99999999999999999")], "failure_ttl"),
            (&[("retries_left", b"-1")], "retries_left"),
            (&[("number_of_retries", b"x")], "number_of_retries"),
            (
                &[("retries_left", b"1"), ("retry_intervals", b"[-1]")],
                "retry_intervals",
            ),
            (
                &[("retries_left", b"1"), ("retry_intervals", b"{}")],
                "retry_intervals",
            ),
            (
                &[
                    ("retries_left", b"1"),
                    ("forge_retry_intervals_ms", b"[18446744073709551615]"),
                ],
                "forge_retry_intervals_ms",
            ),
            (
                &[
                    ("retries_left", b"1"),
                    ("forge_backoff", br#"{"base_ms":1,"max_ms":2,"jitter":-7}"#),
                ],
                "jitter",
            ),
            (&[("data", b"")], "DeserializationError"),
        ] {
            let got = refusal(pairs);
            assert!(got.contains(want), "{pairs:?}: {got:?} lacks {want:?}");
        }
        // Retry fields are only read when the job has retries.
        assert!(JobParams::parse(&fields(&[("retry_intervals", b"junk")]), &defaults()).is_ok());
    }

    #[test]
    fn long_values_are_cut_in_the_refusal() {
        let long = vec![b'9'; 500];
        let got = refusal(&[("timeout", &long)]);
        assert!(got.contains("(500 bytes)"), "{got}");
        assert!(got.len() < 300, "{got}");
    }

    #[test]
    fn the_data_limit_is_bounded() {
        assert!(JobDataLimit::try_from(1023).is_err());
        assert!(JobDataLimit::try_from(1024).is_ok());
        assert!(JobDataLimit::try_from((4 << 30) + 1).is_err());
        assert_eq!(JobDataLimit::default().bytes(), 64 << 20);
    }
}
