//! GitHub's rate limits read from an answer: whether to wait and retry, and
//! how long, or give up. Primary limit (`x-ratelimit-remaining: 0`): wait
//! until `x-ratelimit-reset` when that is within the configured longest
//! wait, else `HostError::RateLimited`. Secondary limits (403/429 whose
//! message says so) and any `retry-after`: wait what it asks, or the
//! caller's exponential backoff when it asks nothing. 5xx: retried with the
//! backoff. The caller (`client.rs`) runs the retries with backon.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;

use crate::core::codehost::HostError;

/// What to do with an answer that is not a success.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not a limit or a transient failure: the answer stands.
    Final,
    /// Retry after at least this long (None: the backoff decides).
    Retry(Option<Duration>),
    /// Limited for longer than we may wait.
    GiveUp(HostError),
}

/// Reads `status`, the headers and the message of a non-success answer.
pub fn judge(
    status: u16,
    headers: &HeaderMap,
    message: &str,
    now: SystemTime,
    max_wait: Duration,
) -> Verdict {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let retry_after = header("retry-after").and_then(|v| v.parse::<u64>().ok());
    let limited = status == 403 || status == 429;
    let secondary = limited && message.to_lowercase().contains("secondary rate limit");
    let exhausted = limited && header("x-ratelimit-remaining") == Some("0");
    if secondary || (limited && retry_after.is_some()) {
        return match retry_after.map(Duration::from_secs) {
            Some(wait) if wait > max_wait => Verdict::GiveUp(HostError::RateLimited(format!(
                "secondary rate limit: GitHub asks to wait {} s, more than the {} s allowed",
                wait.as_secs(),
                max_wait.as_secs()
            ))),
            wait => Verdict::Retry(wait),
        };
    }
    if exhausted {
        let reset = header("x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok());
        let now_secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        // One second past the reset, so the limit is surely renewed.
        let wait = Duration::from_secs(reset.unwrap_or(now_secs).saturating_sub(now_secs) + 1);
        if wait > max_wait {
            let at = UNIX_EPOCH + Duration::from_secs(reset.unwrap_or(now_secs));
            return Verdict::GiveUp(HostError::RateLimited(format!(
                "the API rate limit is used up until {} (in {} s, more than the {} s allowed)",
                humantime::format_rfc3339_seconds(at),
                wait.as_secs(),
                max_wait.as_secs()
            )));
        }
        return Verdict::Retry(Some(wait));
    }
    if matches!(status, 500 | 502 | 503 | 504) {
        return Verdict::Retry(retry_after.map(Duration::from_secs));
    }
    Verdict::Final
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const MAX: Duration = Duration::from_secs(60);

    #[test]
    fn limits_are_told_apart() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let secondary = "You have exceeded a secondary rate limit. Please wait";
        let cases: Vec<(u16, HeaderMap, &str, Verdict)> = vec![
            (
                403,
                headers(&[("retry-after", "3")]),
                secondary,
                Verdict::Retry(Some(Duration::from_secs(3))),
            ),
            (429, headers(&[]), secondary, Verdict::Retry(None)),
            (
                403,
                headers(&[
                    ("x-ratelimit-remaining", "0"),
                    ("x-ratelimit-reset", "1000010"),
                ]),
                "API rate limit exceeded",
                Verdict::Retry(Some(Duration::from_secs(11))),
            ),
            (
                403,
                headers(&[("x-ratelimit-remaining", "12")]),
                "Resource not accessible",
                Verdict::Final,
            ),
            (502, headers(&[]), "bad gateway", Verdict::Retry(None)),
            (404, headers(&[]), "Not Found", Verdict::Final),
            (422, headers(&[]), "Validation Failed", Verdict::Final),
        ];
        for (status, h, message, want) in cases {
            assert_eq!(
                judge(status, &h, message, now, MAX),
                want,
                "{status} {message}"
            );
        }
        let far = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1003600"),
        ]);
        let Verdict::GiveUp(HostError::RateLimited(why)) = judge(403, &far, "", now, MAX) else {
            panic!("a reset an hour away is not waited for");
        };
        assert!(why.contains("more than the 60 s allowed"), "{why}");
        let long = headers(&[("retry-after", "600")]);
        assert!(matches!(
            judge(403, &long, secondary, now, MAX),
            Verdict::GiveUp(HostError::RateLimited(_))
        ));
    }
}
