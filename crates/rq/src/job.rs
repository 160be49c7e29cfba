//! Jobs as python-rq stores them: the `rq:job:<id>` hash, its JSON payload
//! and timestamps, and the options a job is enqueued with.
//!
//! python-rq's `data` field is `zlib(serializer.dumps((func_name, instance,
//! args, kwargs)))`; with `JSONSerializer` that is the JSON array
//! `["func", null, [args…], {kwargs…}]`. We only speak the JSON serializer:
//! a pickled payload is refused with a clear error (it would run arbitrary
//! code and ties jobs to Python classes).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

/// A job's id (python-rq uses UUID4 hex strings; any id without `:` works).
pub type JobId = String;

/// python-rq's job statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    /// In a queue list.
    Queued,
    /// Claimed by a worker.
    Started,
    /// Ran successfully.
    Finished,
    /// Failed for good (in the failed registry).
    Failed,
    /// Waiting for its dependencies.
    Deferred,
    /// Waiting for its run-at time.
    Scheduled,
    /// Stopped by an operator.
    Stopped,
    /// Canceled by an operator.
    Canceled,
    /// Created but not yet enqueued.
    Created,
}

impl JobStatus {
    /// The spelling in the `status` field.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Started => "started",
            JobStatus::Finished => "finished",
            JobStatus::Failed => "failed",
            JobStatus::Deferred => "deferred",
            JobStatus::Scheduled => "scheduled",
            JobStatus::Stopped => "stopped",
            JobStatus::Canceled => "canceled",
            JobStatus::Created => "created",
        }
    }

    /// Parses the `status` field.
    pub fn parse(s: &str) -> Option<JobStatus> {
        Some(match s {
            "queued" => JobStatus::Queued,
            "started" => JobStatus::Started,
            "finished" => JobStatus::Finished,
            "failed" => JobStatus::Failed,
            "deferred" => JobStatus::Deferred,
            "scheduled" => JobStatus::Scheduled,
            "stopped" => JobStatus::Stopped,
            "canceled" => JobStatus::Canceled,
            "created" => JobStatus::Created,
            _ => return None,
        })
    }
}

/// Exponential backoff between retries: `base · 2^attempt`, capped at
/// `max`, each delay multiplied by a random factor in `1 ± jitter`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Backoff {
    /// Delay before the first retry, milliseconds.
    pub base_ms: u64,
    /// Upper bound of a delay, milliseconds.
    pub max_ms: u64,
    /// Relative jitter, 0.0–1.0.
    pub jitter: f64,
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based), with `unit` a
    /// uniform random number in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = self
            .base_ms
            .saturating_mul(1u64.checked_shl(attempt.min(40)).unwrap_or(u64::MAX));
        let capped = exp.min(self.max_ms) as f64;
        let jitter = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + jitter * (2.0 * unit - 1.0);
        Duration::from_millis((capped * factor).max(0.0) as u64)
    }
}

/// How often a failing job is tried again, and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    /// Retries after the first attempt.
    pub max: u32,
    /// Fixed intervals (python-rq's `Retry(interval=[…])`): retry `k` waits
    /// `intervals[len - retries_left]`, the last one repeating. Empty = retry at once.
    pub intervals: Vec<Duration>,
    /// Exponential backoff with jitter; when set it wins over `intervals`
    /// for our workers (python-rq workers use `intervals`, filled with the
    /// un-jittered delays).
    pub backoff: Option<Backoff>,
}

impl Retry {
    /// `max` immediate retries.
    pub fn immediate(max: u32) -> Self {
        Retry {
            max,
            intervals: Vec::new(),
            backoff: None,
        }
    }

    /// `max` retries at python-rq style fixed intervals.
    pub fn intervals(max: u32, intervals: Vec<Duration>) -> Self {
        Retry {
            max,
            intervals,
            backoff: None,
        }
    }

    /// `max` retries with exponential backoff from `base` up to `cap`, ±25 % jitter.
    pub fn exponential(max: u32, base: Duration, cap: Duration) -> Self {
        let backoff = Backoff {
            base_ms: base.as_millis() as u64,
            max_ms: cap.as_millis() as u64,
            jitter: 0.25,
        };
        let intervals = (0..max.min(32)).map(|k| backoff.delay(k, 0.5)).collect();
        Retry {
            max,
            intervals,
            backoff: Some(backoff),
        }
    }

    /// Sets the jitter of an exponential backoff (0.0–1.0).
    #[must_use]
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        if let Some(b) = &mut self.backoff {
            b.jitter = jitter.clamp(0.0, 1.0);
        }
        self
    }
}

/// Options for [`crate::Queue::enqueue`]. Unset values take python-rq's
/// defaults (timeout 180 s, result kept 500 s, failure kept a year).
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// A caller-chosen id; the enqueue fails with [`crate::RqError::DuplicateJob`]
    /// when a job with this id exists (idempotent enqueue).
    pub job_id: Option<String>,
    /// How long one attempt may run before it is stopped.
    pub timeout: Option<Duration>,
    /// How long a finished job (and its result) is kept; `Duration::ZERO` = deleted at once.
    pub result_ttl: Option<Duration>,
    /// How long a failed job is kept.
    pub failure_ttl: Option<Duration>,
    /// Retries on failure.
    pub retry: Option<Retry>,
    /// Push to the head of the queue.
    pub at_front: bool,
    /// Run only after these jobs have finished.
    pub depends_on: Vec<JobId>,
    /// Run no earlier than this (scheduled registry).
    pub run_at: Option<SystemTime>,
    /// Free text shown by `rq info` and dashboards (default: the call).
    pub description: Option<String>,
}

impl EnqueueOptions {
    /// Runs the job `delay` from now.
    #[must_use]
    pub fn run_in(mut self, delay: Duration) -> Self {
        self.run_at = Some(SystemTime::now() + delay);
        self
    }
}

/// A job's call: function name, positional and keyword arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct JobCall {
    /// The registered handler name (python: dotted function path).
    pub func_name: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
}

/// Encodes a call as python-rq's `data` field (zlib-compressed JSON).
pub fn encode_data(call: &JobCall) -> Vec<u8> {
    let tuple = Value::Array(vec![
        Value::String(call.func_name.clone()),
        Value::Null,
        Value::Array(call.args.clone()),
        Value::Object(call.kwargs.clone()),
    ]);
    zlib(tuple.to_string().as_bytes())
}

/// zlib-compresses bytes.
pub fn zlib(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(bytes);
    enc.finish().unwrap_or_default()
}

/// Decodes python-rq's `data` field (zlib-compressed or plain) into a call,
/// refusing payloads that inflate past the default bound
/// ([`crate::params::DEFAULT_MAX_JOB_DATA_BYTES`]).
pub fn decode_data(data: &[u8]) -> Result<JobCall, String> {
    decode_data_bounded(data, crate::params::DEFAULT_MAX_JOB_DATA_BYTES)
}

/// Inflates zlib-compressed `data`, reading at most `max_bytes + 1` bytes;
/// `None` when it is not zlib.
fn inflate_bounded(data: &[u8], max_bytes: u64) -> Option<Vec<u8>> {
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut raw)
        .ok()
        .map(|_| raw)
}

/// [`decode_data`] with a bound: a payload inflating (or stored plain)
/// past `max_bytes` is refused before it is read further — a small zlib
/// bomb must fail its job, not grow the worker.
pub fn decode_data_bounded(data: &[u8], max_bytes: u64) -> Result<JobCall, String> {
    let inflated = inflate_bounded(data, max_bytes);
    let bytes: &[u8] = inflated.as_deref().unwrap_or(data);
    if bytes.len() as u64 > max_bytes {
        return Err(format!(
            "payload inflates to more than {max_bytes} bytes (worker.max_job_data_bytes)"
        ));
    }
    if bytes.first() == Some(&0x80) {
        return Err(
            "payload is pickled; forge workers only run jobs enqueued with rq's JSONSerializer"
                .into(),
        );
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("payload is not JSON (rq JSONSerializer expected): {e}"))?;
    let Value::Array(items) = value else {
        return Err("payload is not a [func_name, instance, args, kwargs] array".into());
    };
    if items.len() != 4 {
        return Err(format!(
            "payload has {} elements, expected [func_name, instance, args, kwargs]",
            items.len()
        ));
    }
    let mut it = items.into_iter();
    let func_name = match it.next() {
        Some(Value::String(s)) if !s.is_empty() => s,
        other => return Err(format!("func_name missing or not a string: {other:?}")),
    };
    match it.next() {
        Some(Value::Null) | None => {}
        Some(other) => {
            return Err(format!(
                "instance methods are not supported (instance {other})"
            ));
        }
    }
    let args = match it.next() {
        Some(Value::Array(a)) => a,
        Some(Value::Null) | None => Vec::new(),
        Some(other) => return Err(format!("args is not a list: {other}")),
    };
    let kwargs = match it.next() {
        Some(Value::Object(m)) => m,
        Some(Value::Null) | None => Map::new(),
        Some(other) => return Err(format!("kwargs is not an object: {other}")),
    };
    Ok(JobCall {
        func_name,
        args,
        kwargs,
    })
}

/// python-rq's description of a call, `func(arg, key=value)`.
pub fn describe_call(call: &JobCall) -> String {
    let mut parts: Vec<String> = call.args.iter().map(|a| a.to_string()).collect();
    parts.extend(call.kwargs.iter().map(|(k, v)| format!("{k}={v}")));
    format!("{}({})", call.func_name, parts.join(", "))
}

/// Formats a time like python-rq (`%Y-%m-%dT%H:%M:%S.%fZ`, UTC).
pub fn utcformat(t: SystemTime) -> String {
    let dt = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second(),
        dt.microsecond()
    )
}

/// Parses python-rq's timestamp format (with or without microseconds).
pub fn utcparse(s: &str) -> Option<SystemTime> {
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (main, frac) = match s.split_once('.') {
        Some((m, f)) => (m, f),
        None => (s, "0"),
    };
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let dt = time::PrimitiveDateTime::parse(main, &fmt).ok()?;
    let mut micros: String = frac.chars().take(6).collect();
    while micros.len() < 6 {
        micros.push('0');
    }
    let micros: u64 = micros.parse().ok()?;
    let secs = dt.assume_utc().unix_timestamp();
    let base = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?);
    Some(base + Duration::from_micros(micros))
}

/// Seconds since the epoch as a float (registry scores).
pub fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A stored job as read back for inspection.
#[derive(Debug, Clone)]
pub struct JobRecord {
    /// The id.
    pub id: JobId,
    /// Every field of the hash, as text (the `data` field decoded into `call`).
    pub fields: HashMap<String, String>,
    /// The decoded call, or why it could not be decoded.
    pub call: Result<JobCall, String>,
}

impl JobRecord {
    /// Builds a record from `HGETALL` output.
    pub fn from_hash(id: &str, hash: HashMap<String, Vec<u8>>) -> JobRecord {
        let call = match hash.get("data") {
            Some(d) => decode_data(d),
            None => Err("no data field".into()),
        };
        let mut fields = HashMap::new();
        for (k, v) in hash {
            if k == "data" {
                continue;
            }
            let text = if k == "exc_info" {
                let limit = crate::params::DEFAULT_MAX_JOB_DATA_BYTES;
                match inflate_bounded(&v, limit) {
                    Some(mut out) if out.len() as u64 > limit => {
                        out.truncate(limit as usize);
                        format!("{}… (truncated)", String::from_utf8_lossy(&out))
                    }
                    Some(out) => String::from_utf8_lossy(&out).into_owned(),
                    None => String::from_utf8_lossy(&v).into_owned(),
                }
            } else {
                String::from_utf8_lossy(&v).into_owned()
            };
            fields.insert(k, text);
        }
        JobRecord {
            id: id.to_owned(),
            fields,
            call,
        }
    }

    /// The `status` field.
    pub fn status(&self) -> Option<JobStatus> {
        self.fields.get("status").and_then(|s| JobStatus::parse(s))
    }

    /// The `origin` (queue) field.
    pub fn origin(&self) -> Option<&str> {
        self.fields.get("origin").map(String::as_str)
    }

    /// The failure text (`exc_info`), if any.
    pub fn exc_info(&self) -> Option<&str> {
        self.fields.get("exc_info").map(String::as_str)
    }

    /// The JSON result of a finished job, if stored in the hash.
    pub fn result(&self) -> Option<Value> {
        self.fields
            .get("result")
            .and_then(|r| serde_json::from_str(r).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_round_trip() {
        let call = JobCall {
            func_name: "forge.echo".into(),
            args: vec![Value::from(1), Value::from("x")],
            kwargs: Map::new(),
        };
        let d = encode_data(&call);
        assert_eq!(decode_data(&d).unwrap(), call);
        assert!(
            decode_data(b"\x80\x05junk")
                .unwrap_err()
                .contains("pickled")
        );
        assert!(decode_data(b"[1,2]").unwrap_err().contains("2 elements"));
        assert!(decode_data(b"{").unwrap_err().contains("not JSON"));
        // A bomb: 1 MiB inflating past a 64 KiB bound.
        let big = format!("[\"f\", null, [\"{}\"], {{}}]", "a".repeat(1 << 20));
        let err = decode_data_bounded(&zlib(big.as_bytes()), 64 << 10).unwrap_err();
        assert!(err.contains("more than 65536 bytes"), "{err}");
        let err = decode_data_bounded(big.as_bytes(), 64 << 10).unwrap_err();
        assert!(err.contains("more than 65536 bytes"), "{err}");
        assert!(decode_data_bounded(&zlib(big.as_bytes()), 2 << 20).is_ok());
    }

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let s = utcformat(t);
        assert_eq!(s, "2023-11-14T22:13:20.123456Z");
        assert_eq!(utcparse(&s), Some(t));
        assert!(utcparse("2023-11-14T22:13:20Z").is_some());
    }

    #[test]
    fn backoff_grows_and_caps() {
        let b = Backoff {
            base_ms: 100,
            max_ms: 1000,
            jitter: 0.0,
        };
        assert_eq!(b.delay(0, 0.3), Duration::from_millis(100));
        assert_eq!(b.delay(3, 0.3), Duration::from_millis(800));
        assert_eq!(b.delay(10, 0.3), Duration::from_millis(1000));
        let j = Backoff { jitter: 0.5, ..b };
        assert_eq!(j.delay(0, 0.0), Duration::from_millis(50));
    }
}
