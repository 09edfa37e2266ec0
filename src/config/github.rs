//! `[github]`: the webhook shim's settings and the GitHub credentials
//! (a token or a GitHub App, per project or for all), checked once.

use super::*;

/// `[github]`: the webhook shim on `http_listen` (`POST /webhooks/github`),
/// which turns failed CI runs into triage tasks.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GithubConfig {
    /// The webhook's secret (`CLAUDOMATOR_GITHUB_WEBHOOK_SECRET` wins).
    /// Without one every delivery is refused (403), unless `allow_unsigned`.
    pub webhook_secret: String,
    /// The environment variable holding the webhook's secret instead, so
    /// the file holds no secret.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub webhook_secret_env: String,
    /// Take unsigned deliveries when no secret is set: for local use only.
    pub allow_unsigned: bool,
    /// Larger bodies are refused (413).
    pub max_body_bytes: usize,
    /// Triage tasks per (repository, branch, workflow) within `triage_window`.
    pub max_triage: u32,
    pub triage_window: String,
    /// The agent triage tasks ask for: `auto` or one agent, read once here
    /// (any case, `-` for `_`, as `SubmitTask` reads it).
    #[serde(deserialize_with = "agent_choice")]
    pub agent: AgentType,
    /// How long the local model may take to write a triage plan (GitHub
    /// waits 10 s for an answer).
    pub plan_timeout: String,
    pub plan_max_tokens: u32,
    /// Check suites and runs of these apps (slug or name) are not triaged:
    /// GitHub Actions failures come as `workflow_run`, the same failure once.
    pub ignore_check_apps: Vec<String>,
    /// GitHub's REST API: `https://api.github.com`, or a GitHub Enterprise
    /// Server's `https://ghe.example/api/v3`.
    pub api_url: String,
    /// The credentials of every project with `github = "owner/name"` (a
    /// project may set its own): the environment variable holding a token…
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token_env: String,
    /// …or a GitHub App: its id and its private key file (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<PathBuf>,
    /// The longest a call waits out a rate limit (a reset, `retry-after`);
    /// longer fails the call at once.
    pub rate_limit_max_wait: String,
}

impl Default for GithubConfig {
    fn default() -> Self {
        GithubConfig {
            webhook_secret: String::new(),
            webhook_secret_env: String::new(),
            allow_unsigned: false,
            max_body_bytes: 2 * 1024 * 1024,
            max_triage: 3,
            triage_window: "24h".into(),
            agent: AgentType::Auto,
            plan_timeout: "5s".into(),
            plan_max_tokens: 400,
            ignore_check_apps: vec!["github-actions".into()],
            api_url: "https://api.github.com".into(),
            token_env: String::new(),
            app_id: None,
            private_key_file: None,
            rate_limit_max_wait: "60s".into(),
        }
    }
}

impl GithubConfig {
    /// How triage tasks are made. Call after `validate`.
    pub fn triage_settings(&self) -> crate::core::ci::TriageSettings {
        crate::core::ci::TriageSettings {
            max_per_window: self.max_triage,
            window: parse_duration(&self.triage_window).unwrap_or(Duration::from_secs(86400)),
            agent: self.agent,
            plan_timeout: parse_duration(&self.plan_timeout).unwrap_or(Duration::from_secs(5)),
            plan_max_tokens: self.plan_max_tokens,
        }
    }

    /// How long a GitHub call may wait out a rate limit. Call after
    /// `validate`.
    pub fn max_rate_limit_wait(&self) -> Duration {
        parse_duration(&self.rate_limit_max_wait).unwrap_or(Duration::from_secs(60))
    }

    /// The secret, if one is set.
    pub fn secret(&self) -> Option<&str> {
        Some(self.webhook_secret.as_str()).filter(|s| !s.is_empty())
    }

    pub(super) fn validate(&self) -> anyhow::Result<()> {
        if self.max_body_bytes < 1024 {
            bail!("github.max_body_bytes: must be at least 1024");
        }
        if self.max_triage == 0 {
            bail!("github.max_triage: must be at least 1");
        }
        for (key, text) in [
            ("github.triage_window", &self.triage_window),
            ("github.plan_timeout", &self.plan_timeout),
        ] {
            let d = parse_duration(text).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
            if d.is_zero() {
                bail!("{key}: must be more than zero");
            }
        }
        if self.plan_max_tokens == 0 {
            bail!("github.plan_max_tokens: must be at least 1");
        }
        parse_duration(&self.rate_limit_max_wait)
            .map_err(|e| anyhow::anyhow!("github.rate_limit_max_wait: {e}"))?;
        check_api_url("github.api_url", &self.api_url)?;
        GithubAuth::read(
            "github.",
            &self.token_env,
            self.app_id,
            self.private_key_file.as_deref(),
        )?;
        Ok(())
    }
}

/// How a project reaches GitHub's API: where, and as whom.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GithubCredentials {
    pub api_url: String,
    pub auth: GithubAuth,
}

/// A token from an environment variable, or a GitHub App.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GithubAuth {
    TokenEnv(String),
    App {
        app_id: u64,
        private_key_file: PathBuf,
    },
}

impl GithubAuth {
    /// The credentials these keys (named with `prefix`) set, None when
    /// they set none; an error names the keys to fix: a token and an App
    /// both, an App without its key, a variable not set, a key file that
    /// cannot be read.
    pub(super) fn read(
        prefix: &str,
        token_env: &str,
        app_id: Option<u64>,
        private_key_file: Option<&Path>,
    ) -> anyhow::Result<Option<GithubAuth>> {
        let token_env = token_env.trim();
        match (token_env.is_empty(), app_id, private_key_file) {
            (true, None, None) => Ok(None),
            (false, None, None) => {
                if std::env::var_os(token_env).is_none_or(|v| v.is_empty()) {
                    bail!("{prefix}token_env: the environment variable `{token_env}` is not set");
                }
                Ok(Some(GithubAuth::TokenEnv(token_env.to_string())))
            }
            (false, _, _) => bail!(
                "{prefix}token_env and {prefix}app_id/{prefix}private_key_file: set a token or a \
                 GitHub App, not both"
            ),
            (true, Some(_), None) => {
                bail!(
                    "{prefix}private_key_file: a GitHub App ({prefix}app_id) needs its private key file"
                )
            }
            (true, None, Some(_)) => {
                bail!(
                    "{prefix}app_id: a private key file ({prefix}private_key_file) needs the App's id"
                )
            }
            (true, Some(app_id), Some(file)) => {
                let pem = std::fs::read(file).map_err(|e| {
                    anyhow::anyhow!(
                        "{prefix}private_key_file: cannot read {}: {e}",
                        file.display()
                    )
                })?;
                crate::github::AppKey::from_pem(&pem).map_err(|e| {
                    anyhow::anyhow!("{prefix}private_key_file: {}: {e}", file.display())
                })?;
                Ok(Some(GithubAuth::App {
                    app_id,
                    private_key_file: file.to_path_buf(),
                }))
            }
        }
    }
}

pub(super) fn check_api_url(key: &str, url: &str) -> anyhow::Result<()> {
    let url = url.trim();
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        bail!(
            "{key}: `{url}` must be an http(s) URL, e.g. https://api.github.com or https://ghe.example/api/v3"
        );
    }
    Ok(())
}
