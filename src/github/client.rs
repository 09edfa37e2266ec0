//! One REST call to GitHub over reqwest: the base URL (api.github.com or a
//! GitHub Enterprise Server's `/api/v3`), GitHub's headers (`Accept`,
//! `X-GitHub-Api-Version`, `User-Agent`), the bearer, and the retries:
//! rate limits waited out as `ratelimit.rs` says, 5xx and connection errors
//! retried with backon's jittered exponential backoff. Every wait is logged
//! at INFO with the method and path, never a header. Answers that are not a
//! success come back as [`Reply`] for the caller to read (a 401 may mean a
//! token to refresh, a 422 a branch already gone).

use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use reqwest::Method;
use serde_json::Value;

use super::ratelimit::{Verdict, judge};
use crate::core::codehost::{HostError, Secret};

/// The REST API version this client is written against.
pub const API_VERSION: &str = "2022-11-28";

/// How the client reaches GitHub and how patient it is.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// `https://api.github.com`, or `https://ghe.example/api/v3`.
    pub api_url: String,
    /// The longest wait for a rate limit (primary reset, `retry-after`);
    /// longer is `HostError::RateLimited` at once.
    pub max_rate_limit_wait: Duration,
    /// Retries after the first try (rate limits, 5xx, connection errors).
    pub max_retries: usize,
    /// The first backoff; it doubles per retry, up to a minute.
    pub retry_base: Duration,
    /// One try's time limit.
    pub timeout: Duration,
}

impl ApiSettings {
    pub fn new(api_url: impl Into<String>) -> Self {
        ApiSettings {
            api_url: api_url.into(),
            max_rate_limit_wait: Duration::from_secs(60),
            max_retries: 4,
            retry_base: Duration::from_millis(500),
            timeout: Duration::from_secs(30),
        }
    }
}

/// An answer: its status and JSON body (`Null` when empty or not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// GitHub's `message`, with the `errors` it lists.
    pub fn message(&self) -> String {
        let mut text = self.body["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for e in self.body["errors"].as_array().into_iter().flatten() {
            let detail = e["message"]
                .as_str()
                .map(str::to_string)
                .or_else(|| e.as_str().map(str::to_string))
                .unwrap_or_else(|| {
                    format!("{} {} {}", e["resource"], e["field"], e["code"]).replace('"', "")
                });
            text.push_str(&format!(" ({detail})"));
        }
        if text.is_empty() {
            text = format!("status {}", self.status);
        }
        text
    }

    /// The error for an answer that is not a success.
    pub fn error(&self, what: &str) -> HostError {
        let message = format!("{what}: {}", self.message());
        match self.status {
            401 => HostError::Unauthorized(message),
            403 => HostError::Forbidden(message),
            404 => HostError::NotFound(message),
            400 | 409 | 410 | 422 => HostError::Invalid(message),
            429 => HostError::RateLimited(message),
            _ => HostError::Unavailable(message),
        }
    }
}

/// The HTTP side of the client.
#[derive(Clone, Debug)]
pub struct Api {
    http: reqwest::Client,
    settings: ApiSettings,
}

/// One failed try, and whether another may help.
#[derive(Debug)]
struct Failure {
    error: HostError,
    retryable: bool,
    wait: Option<Duration>,
}

impl Api {
    pub fn new(mut settings: ApiSettings) -> Result<Api, HostError> {
        settings.api_url = settings.api_url.trim().trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .user_agent(concat!("claudomator/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .timeout(settings.timeout)
            .build()
            .map_err(|e| HostError::Unavailable(format!("cannot build the HTTP client: {e}")))?;
        Ok(Api { http, settings })
    }

    pub fn settings(&self) -> &ApiSettings {
        &self.settings
    }

    /// `method path` with this bearer and JSON body, retried through rate
    /// limits and transient failures; any final answer is a [`Reply`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        bearer: &Secret,
        body: Option<&Value>,
    ) -> Result<Reply, HostError> {
        let url = format!("{}{path}", self.settings.api_url);
        let once = || async {
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header("accept", "application/vnd.github+json")
                .header("x-github-api-version", API_VERSION)
                .bearer_auth(bearer.expose());
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request.send().await.map_err(|e| Failure {
                // reqwest's error names the URL, never a header.
                error: HostError::Unavailable(format!("{method} {path}: {e}")),
                retryable: e.is_connect() || e.is_timeout() || e.is_request(),
                wait: None,
            })?;
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            let text = response.text().await.unwrap_or_default();
            let reply = Reply {
                status,
                body: serde_json::from_str(&text).unwrap_or(Value::Null),
            };
            if reply.ok() {
                return Ok(reply);
            }
            let max_wait = self.settings.max_rate_limit_wait;
            match judge(
                status,
                &headers,
                &reply.message(),
                SystemTime::now(),
                max_wait,
            ) {
                Verdict::Final => Ok(reply),
                Verdict::Retry(wait) => Err(Failure {
                    // What stands once the retries are spent.
                    error: if status == 403 || status == 429 {
                        HostError::RateLimited(format!("{method} {path}: {}", reply.message()))
                    } else {
                        reply.error(&format!("{method} {path}"))
                    },
                    retryable: true,
                    wait,
                }),
                Verdict::GiveUp(error) => Err(Failure {
                    error,
                    retryable: false,
                    wait: None,
                }),
            }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_base)
            .with_max_delay(Duration::from_secs(60))
            .with_max_times(self.settings.max_retries)
            .with_jitter();
        let max_wait = self.settings.max_rate_limit_wait;
        once.retry(backoff)
            .when(|f: &Failure| f.retryable)
            .adjust(|f: &Failure, planned: Option<Duration>| {
                // What GitHub asks wins over the backoff; none left: stop.
                let wait = match f.wait {
                    Some(asked) => planned.map(|_| asked),
                    None => planned,
                }?;
                (wait <= max_wait).then_some(wait)
            })
            .notify(|f: &Failure, wait: Duration| {
                tracing::info!(
                    method = %method,
                    path,
                    wait_ms = wait.as_millis() as u64,
                    reason = %f.error,
                    "waiting before retrying GitHub"
                );
            })
            .await
            .map_err(|f| f.error)
    }
}

/// A path segment with everything but unreserved characters escaped; `/`
/// kept when `keep_slash` (a branch name inside a ref path).
pub fn escape(segment: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        let c = b as char;
        if c.is_ascii_alphanumeric() || "-._~".contains(c) || (keep_slash && c == '/') {
            out.push(c);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
