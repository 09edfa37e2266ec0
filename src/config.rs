//! The server's typed config: defaults < TOML file < environment < flags,
//! validated once by [`Config::load`] and then passed around explicitly.
//! An unknown key in the file is an error that names it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::core::executor::ShutdownMode;
use crate::core::model::AgentType;
use crate::core::validate::{TaskRules, parse_duration};

mod github;
mod pulls;
mod template;
#[cfg(test)]
mod tests;

use github::check_api_url;
pub use github::{GithubAuth, GithubConfig, GithubCredentials};
pub use template::commented_default;

/// The file `serve` reads when neither `--config` nor `CLAUDOMATOR_CONFIG` is given.
pub const DEFAULT_CONFIG_FILE: &str = "claudomator.toml";

/// The user's config file, which `init` writes by default and `serve` reads
/// when the working directory has no `claudomator.toml`:
/// `$XDG_CONFIG_HOME/claudomator/claudomator.toml`, else under
/// `~/.config`. Outside any repository, so it is never committed.
pub fn user_config_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("claudomator").join(DEFAULT_CONFIG_FILE))
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// HTTP listen address (webhooks, health checks).
    pub http_listen: SocketAddr,
    /// The origins of browser pages allowed to call the API over gRPC-Web
    /// on `listen` (CORS), as a browser sends them: `http://localhost:5173`.
    /// Empty (the default): none, and no CORS headers are sent.
    #[serde(deserialize_with = "origin_list")]
    pub cors_origins: Vec<String>,
    /// Where the database, logs and sandboxes live.
    pub data_dir: PathBuf,
    /// `postgres://…` or `sqlite://…`; empty uses SQLite in `data_dir`.
    pub database_url: String,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub defaults: DefaultsConfig,
    /// The repositories tasks may target.
    pub projects: Vec<ProjectConfig>,
    pub executor: ExecutorSection,
    pub agents: AgentsConfig,
    /// USD per million tokens by model, for agents that report no cost
    /// (Gemini, Codex): `[prices."gemini-2.5-flash"] input_per_mtok = 0.3,
    /// output_per_mtok = 2.5`.
    pub prices: std::collections::HashMap<String, crate::runners::Price>,
    /// Signed webhook notifications of task state changes.
    pub notifications: NotificationsConfig,
    /// The GitHub webhook shim.
    pub github: GithubConfig,
    /// How tasks' work becomes pull requests, and their feedback loop.
    pub pull_requests: crate::core::pulls::PullSettings,
    /// The HTTP listener on `http_listen`: timeouts and the connection cap.
    pub http: HttpConfig,
    /// An OpenAI-compatible model endpoint: runs `local` tasks and makes
    /// the cheap internal calls (classify `auto`, summaries).
    pub local_model: LocalModelConfig,
}

/// `[local_model]`: an OpenAI-compatible endpoint (Ollama, vLLM, llama.cpp,
/// LM Studio…). No endpoint: no `local` agent, and every internal use falls
/// back to its rule.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalModelConfig {
    /// Base URL up to `/v1`, e.g. `http://127.0.0.1:11434/v1`; empty: none.
    pub endpoint: String,
    /// Sent as `model`; empty lets the server use its loaded model.
    pub model: String,
    /// One call's budget, retries included, e.g. "60s".
    pub timeout: String,
    pub temperature: f32,
    /// The environment variable holding the API key; empty: no key.
    pub api_key_env: String,
    /// Retries on 429, 502–504 and connection errors.
    pub max_retries: u32,
    /// The longest answer of a `local` task, in tokens.
    pub max_tokens: u32,
    /// Calls in flight at once, and so `local` tasks at once (llama.cpp's
    /// server answers one at a time and cuts a stream short for a newer one).
    pub max_concurrent: usize,
    /// How long choosing the agent of an `auto` task may take before the
    /// rule decides, e.g. "10s".
    pub classify_timeout: String,
}

impl Default for LocalModelConfig {
    fn default() -> Self {
        LocalModelConfig {
            endpoint: String::new(),
            model: String::new(),
            timeout: "60s".into(),
            temperature: 0.2,
            api_key_env: String::new(),
            max_retries: 3,
            max_tokens: 1024,
            max_concurrent: 1,
            classify_timeout: "10s".into(),
        }
    }
}

impl LocalModelConfig {
    /// The client settings. Call after `validate`.
    pub fn client_settings(&self) -> crate::llm::ClientSettings {
        let mut settings = crate::llm::ClientSettings::new(self.endpoint.trim());
        settings.model = self.model.clone();
        settings.api_key = (!self.api_key_env.is_empty())
            .then(|| std::env::var(&self.api_key_env).ok())
            .flatten()
            .filter(|k| !k.is_empty());
        settings.timeout = parse_duration(&self.timeout).unwrap_or(Duration::from_secs(60));
        settings.temperature = self.temperature;
        settings.max_retries = self.max_retries as usize;
        settings.max_concurrent = self.max_concurrent;
        settings
    }

    /// The classifier's time budget. Call after `validate`.
    pub fn classify_timeout(&self) -> Duration {
        parse_duration(&self.classify_timeout).unwrap_or(Duration::from_secs(10))
    }

    fn validate(&self) -> anyhow::Result<()> {
        let endpoint = self.endpoint.trim();
        let http = endpoint.starts_with("http://") || endpoint.starts_with("https://");
        if !(endpoint.is_empty() || http) {
            bail!("local_model.endpoint: `{endpoint}` must start with http:// or https://");
        }
        for (key, text) in [
            ("local_model.timeout", &self.timeout),
            ("local_model.classify_timeout", &self.classify_timeout),
        ] {
            let d = parse_duration(text).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
            if d.is_zero() {
                bail!("{key}: must be more than zero");
            }
        }
        if !(0.0..=2.0).contains(&self.temperature) {
            bail!("local_model.temperature: must be between 0 and 2");
        }
        if self.max_tokens == 0 {
            bail!("local_model.max_tokens: must be at least 1");
        }
        if self.max_concurrent == 0 {
            bail!("local_model.max_concurrent: must be at least 1");
        }
        if self.max_retries > 10 {
            bail!("local_model.max_retries: at most 10");
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutorSection {
    /// Run tasks on this server. Off: it only accepts and serves tasks.
    pub enabled: bool,
    /// Attempts running at once, all agents together.
    pub max_concurrent: usize,
    /// On SIGTERM: "requeue" stops running agents and queues their tasks
    /// again; "finish" lets them finish first.
    pub shutdown: ShutdownMode,
    /// After a crash: "requeue" puts tasks that were running back in the
    /// queue (resuming their agent sessions) within their attempt limits;
    /// "fail" fails them.
    pub on_restart: OnRestart,
    /// How long a task waits in BLOCKED for an answer before it is
    /// TIMED_OUT, e.g. "24h"; empty waits forever.
    pub blocked_timeout: String,
    /// Keep a failed attempt's sandbox for inspection.
    pub keep_failed_sandboxes: bool,
    /// Author of the commits made for agents.
    pub commit_author_name: String,
    pub commit_author_email: String,
    /// First backoff after a rate limit; doubles per attempt up to `retry_max`.
    pub retry_base: String,
    pub retry_max: String,
    /// How long an agent whose usage quota is spent is set aside (when it does
    /// not say when the quota resets); `auto` tasks go to other agents.
    pub usage_limit_cooldown: String,
    /// How often the queue is checked when nothing else wakes the scheduler.
    pub poll_interval: String,
    /// This server's name when several share one database; empty derives a
    /// stable one from the host name and the data dir.
    pub server_id: String,
    /// How long a claim on a running task holds unless renewed (renewed
    /// every third of it); another server recovers the task after that.
    pub lease: String,
    /// Copy execution logs into the database so any server can serve any
    /// execution's log: "auto" (on with PostgreSQL), "on" or "off".
    pub share_logs: ShareLogs,
}

/// `[executor] on_restart`: what becomes of the tasks a crash left running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRestart {
    /// Back in the queue within their attempt limits.
    Requeue,
    Fail,
}

/// `[executor] share_logs`: whether execution logs are copied into the
/// database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShareLogs {
    /// When the database is PostgreSQL (several servers may share it).
    Auto,
    On,
    Off,
}

impl Default for ExecutorSection {
    fn default() -> Self {
        ExecutorSection {
            enabled: true,
            max_concurrent: 4,
            shutdown: ShutdownMode::Requeue,
            on_restart: OnRestart::Requeue,
            blocked_timeout: String::new(),
            keep_failed_sandboxes: true,
            commit_author_name: "claudomator".into(),
            commit_author_email: "claudomator@localhost".into(),
            retry_base: "10s".into(),
            retry_max: "10m".into(),
            usage_limit_cooldown: "1h".into(),
            poll_interval: "1s".into(),
            server_id: String::new(),
            lease: "30s".into(),
            share_logs: ShareLogs::Auto,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    pub claude: AgentConfig,
    pub gemini: AgentConfig,
    pub codex: AgentConfig,
}

impl AgentsConfig {
    /// An agent's section: every agent run as a CLI has one (`[agents.<name>]`);
    /// `local` is set in `[local_model]`, `auto` is no agent.
    pub fn section(&self, agent: AgentType) -> Option<&AgentConfig> {
        match agent {
            AgentType::Claude => Some(&self.claude),
            AgentType::Gemini => Some(&self.gemini),
            AgentType::Codex => Some(&self.codex),
            AgentType::Local | AgentType::Auto => None,
        }
    }

    /// Each agent's section, in `AgentType` order.
    pub fn sections(&self) -> Vec<(AgentType, &AgentConfig)> {
        AgentType::ALL
            .iter()
            .filter_map(|&agent| Some((agent, self.section(agent)?)))
            .collect()
    }
}

/// How to run one agent CLI.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// The program: a name on PATH or a path; empty: the agent's usual name
    /// (`claude`, `gemini`, `codex`).
    pub command: PathBuf,
    /// Attempts of this agent at once; 0 means only the global cap applies.
    pub max_concurrent: usize,
    /// Attempts of this agent at once on all the servers sharing the
    /// database together; 0: no cluster-wide cap.
    pub cluster_max_concurrent: usize,
    /// The model when a task names none; empty lets the CLI choose.
    pub model: String,
    /// Extra environment for the agent process (keys, proxies…).
    pub env: std::collections::BTreeMap<String, String>,
    /// Gemini and Codex run with a home of their own (settings, sessions):
    /// empty means `<data_dir>/agents/<agent>`.
    pub home: PathBuf,
    /// The model API's base URL, for Gemini and Codex; empty: their default.
    pub base_url: String,
    /// The environment variable with the API key (Codex; default
    /// `OPENAI_API_KEY`).
    pub api_key_env: String,
    /// Retries the CLI itself makes on API errors before claudomator's own
    /// backoff takes over (Gemini and Codex; default 2).
    pub max_retries: Option<u32>,
    /// `sandbox`, `none` or `auto` (default): whether this agent runs in an
    /// OS sandbox; a project's own setting wins.
    pub isolation: Option<crate::core::runner::Isolation>,
    /// `none`: this agent reaches no network.
    pub network: Option<crate::core::runner::Network>,
    /// More of the server's environment variables the agent gets, beyond
    /// the allow-list (see the README's "What an agent can reach").
    pub pass_env: Vec<String>,
    /// More paths the agent sees read-only in the OS sandbox (a toolchain
    /// under the home directory, say).
    pub expose: Vec<PathBuf>,
}

impl AgentConfig {
    /// The command, the extra environment and the home of this agent.
    pub fn command_spec(
        &self,
        agent: crate::core::model::AgentType,
        data_dir: &Path,
    ) -> crate::runners::CommandSpec {
        crate::runners::CommandSpec {
            program: if self.command.as_os_str().is_empty() {
                PathBuf::from(agent.as_str())
            } else {
                self.command.clone()
            },
            env: self.env.clone(),
            home: if self.home.as_os_str().is_empty() {
                data_dir.join("agents").join(agent.as_str())
            } else {
                self.home.clone()
            },
            base_url: self.base_url.clone(),
            api_key_env: self.api_key_env.clone(),
            max_retries: self.max_retries.unwrap_or(2),
            confinement: crate::core::runner::Confinement {
                isolation: self.isolation,
                network: self.network,
                max_processes: None,
            },
            pass_env: self.pass_env.clone(),
            expose: self.expose.clone(),
            data_dir: data_dir.to_path_buf(),
        }
    }
}

/// `[notifications]`: a signed JSON POST to `url` when a task enters one of
/// `events`. Off while `url` is empty.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotificationsConfig {
    /// Where events are POSTed (http or https); empty: no notifications.
    pub url: String,
    /// The HMAC-SHA256 key of `X-Claudomator-Signature-256`.
    pub secret: String,
    /// An environment variable holding the key, used when `secret` is empty.
    pub secret_env: String,
    /// The task states that send an event: blocked, ready, completed,
    /// failed, timed_out, budget_exceeded, cancelled.
    pub events: Vec<String>,
    /// How long one POST may take.
    pub timeout: String,
    /// Retries after a failed POST (connection error, timeout, 408, 429,
    /// 5xx), with exponential backoff from `retry_base`.
    pub max_retries: usize,
    pub retry_base: String,
    /// Events waiting for delivery at most; beyond it new ones are dropped
    /// (and counted) rather than slowing anything down.
    pub queue: usize,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            url: String::new(),
            secret: String::new(),
            secret_env: String::new(),
            events: [
                "blocked",
                "ready",
                "completed",
                "failed",
                "timed_out",
                "budget_exceeded",
            ]
            .map(String::from)
            .to_vec(),
            timeout: "10s".into(),
            max_retries: 5,
            retry_base: "1s".into(),
            queue: 1024,
        }
    }
}

impl NotificationsConfig {
    /// The notifier's settings, or None when notifications are off.
    pub fn settings(&self) -> anyhow::Result<Option<crate::notify::NotifySettings>> {
        use crate::core::events::NOTIFIABLE;
        use crate::core::model::TaskState;
        let url = self.url.trim();
        if url.is_empty() {
            return Ok(None);
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            bail!("notifications.url: `{url}` must be an http:// or https:// URL");
        }
        let secret = if !self.secret.is_empty() {
            self.secret.clone()
        } else if self.secret_env.trim().is_empty() {
            bail!(
                "notifications.secret: required when notifications.url is set \
                 (or secret_env, naming an environment variable that holds it)"
            );
        } else {
            match std::env::var(self.secret_env.trim()) {
                Ok(value) if !value.is_empty() => value,
                _ => bail!(
                    "notifications.secret_env: the environment variable `{}` is not set",
                    self.secret_env.trim()
                ),
            }
        };
        let allowed = || {
            NOTIFIABLE
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut events = Vec::new();
        for name in &self.events {
            let state = name
                .parse::<TaskState>()
                .ok()
                .filter(|state| NOTIFIABLE.contains(state))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "notifications.events: unknown event `{name}`; expected some of {}",
                        allowed()
                    )
                })?;
            events.push(state);
        }
        let duration = |key: &str, text: &str| {
            parse_duration(text).map_err(|e| anyhow::anyhow!("notifications.{key}: {e}"))
        };
        let timeout = duration("timeout", &self.timeout)?;
        if timeout.is_zero() {
            bail!("notifications.timeout: must be more than zero");
        }
        if self.queue == 0 {
            bail!("notifications.queue: must be at least 1");
        }
        Ok(Some(crate::notify::NotifySettings {
            url: url.to_string(),
            secret,
            events,
            timeout,
            max_retries: self.max_retries,
            retry_base: duration("retry_base", &self.retry_base)?,
            queue: self.queue,
        }))
    }
}

/// An agent name as written in the file, read the way `SubmitTask` reads
/// one; a wrong name is an error naming it and the choices (the TOML error
/// around it shows the line).
fn agent_choice<'de, D: serde::Deserializer<'de>>(d: D) -> Result<AgentType, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

/// `cors_origins` as written in the file: each one read by
/// `grpc::cors::parse_origin` (and kept as a browser spells it); a wrong one
/// is an error saying why (the TOML error around it shows the line).
fn origin_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|text| crate::grpc::cors::parse_origin(text).map_err(serde::de::Error::custom))
        .collect()
}

/// `[http]`: what one client may hold of the listener on `http_listen`, so
/// that stalled or flooding senders cannot take the server down.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A request's headers must all arrive within this (a connection that
    /// sends none, or half, is closed then).
    pub header_timeout: String,
    /// A request's body must all arrive within this (408 after).
    pub body_timeout: String,
    /// Connections at once. Beyond, a new connection takes the place of the
    /// oldest one with no request in progress, or is closed at once.
    pub max_connections: usize,
    /// Bytes of request bodies held at once over every connection (bodies
    /// are read whole before a signature can be checked); a body that
    /// would pass it gets 503.
    pub max_buffered_bytes: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout: "10s".into(),
            body_timeout: "30s".into(),
            max_connections: 256,
            max_buffered_bytes: 32 * 1024 * 1024,
        }
    }
}

impl HttpConfig {
    /// The listener's limits. Call after `validate`.
    pub fn limits(&self) -> crate::http::ListenerLimits {
        crate::http::ListenerLimits {
            header_timeout: parse_duration(&self.header_timeout).unwrap_or(Duration::from_secs(10)),
            body_timeout: parse_duration(&self.body_timeout).unwrap_or(Duration::from_secs(30)),
            max_connections: self.max_connections,
            max_buffered_bytes: self.max_buffered_bytes,
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        for (key, text) in [
            ("http.header_timeout", &self.header_timeout),
            ("http.body_timeout", &self.body_timeout),
        ] {
            let d = parse_duration(text).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
            if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
                bail!("{key}: must be between 100ms and 1h");
            }
        }
        if !(1..=65536).contains(&self.max_connections) {
            bail!("http.max_connections: must be between 1 and 65536");
        }
        if !(1024..=1 << 32).contains(&self.max_buffered_bytes) {
            bail!("http.max_buffered_bytes: must be between 1 KiB and 4 GiB");
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer tokens; when any is set, every RPC but health needs one.
    pub tokens: Vec<String>,
    /// The environment variable holding more tokens (comma-separated), so
    /// the file holds no secret.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tokens_env: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_instructions_bytes: usize,
    /// The longest timeout a task may ask for, e.g. "24h".
    pub max_timeout: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DefaultsConfig {
    /// Timeout for tasks that name none, e.g. "30m".
    pub timeout: String,
    pub max_attempts: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub name: String,
    /// The project's git repository.
    pub path: PathBuf,
    /// The GitHub repository it mirrors, as `owner/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<String>,
    /// This project's own GitHub credentials, instead of `[github]`'s:
    /// `github_token_env`, or `github_app_id` with
    /// `github_private_key_file`; and its own `github_api_url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_api_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_token_env: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_app_id: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_private_key_file: Option<PathBuf>,
    /// When set, a finished task's branch is rebased onto the project's
    /// default branch and pushed here: one of the project's remote names, a
    /// URL or a path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_remote: Option<String>,
    /// `off` (the default), `on_complete` or `on_accept`: whether its tasks'
    /// work becomes a pull request on `github` (a task may say otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_requests: Option<crate::core::model::PullMode>,
    /// `sandbox`, `none` or `auto` (the default, or the agent's setting):
    /// whether its agents run in an OS sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<crate::core::runner::Isolation>,
    /// `none`: its agents reach no network (implies the OS sandbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::core::runner::Network>,
    /// Processes and threads one of its agents' runs (or its setup) may
    /// have at once (default 4096): a fork bomb stops there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_processes: Option<u32>,
    /// A shell command run in each new sandbox before the agent (install
    /// dependencies, build), shut in like the agent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub setup: String,
    /// How long `setup` may take (default 10m).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub setup_timeout: String,
    /// `setup`'s own environment: secrets allowed, the agent never sees it.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub setup_env: std::collections::BTreeMap<String, String>,
    /// The project's untracked files copied into each new sandbox, as globs
    /// relative to its root (`[".env", "config/*.local.toml"]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy: Vec<String>,
}

impl ProjectConfig {
    /// A project at `path` with every other setting at its default.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        ProjectConfig {
            name: name.into(),
            path: path.into(),
            github: None,
            github_api_url: None,
            github_token_env: None,
            github_app_id: None,
            github_private_key_file: None,
            publish_remote: None,
            pull_requests: None,
            isolation: None,
            network: None,
            max_processes: None,
            setup: String::new(),
            setup_timeout: String::new(),
            setup_env: Default::default(),
            copy: Vec::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7070".parse().expect("literal address"),
            http_listen: "127.0.0.1:7071".parse().expect("literal address"),
            cors_origins: Vec::new(),
            data_dir: default_data_dir(),
            database_url: String::new(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            defaults: DefaultsConfig::default(),
            projects: Vec::new(),
            executor: ExecutorSection::default(),
            agents: AgentsConfig::default(),
            prices: default_prices(),
            notifications: NotificationsConfig::default(),
            github: GithubConfig::default(),
            pull_requests: Default::default(),
            http: HttpConfig::default(),
            local_model: LocalModelConfig::default(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_instructions_bytes: 64 * 1024,
            max_timeout: "24h".into(),
        }
    }
}

impl Default for DefaultsConfig {
    fn default() -> Self {
        DefaultsConfig {
            timeout: "30m".into(),
            max_attempts: 3,
        }
    }
}

/// List prices of common models (USD per million tokens), so Gemini and
/// Codex runs get an estimated cost out of the box. Override in `[prices]`.
fn default_prices() -> std::collections::HashMap<String, crate::runners::Price> {
    let price = |input_per_mtok, output_per_mtok| crate::runners::Price {
        input_per_mtok,
        output_per_mtok,
    };
    [
        ("gemini-2.5-pro", price(1.25, 10.0)),
        ("gemini-2.5-flash", price(0.30, 2.50)),
        ("gemini-2.5-flash-lite", price(0.10, 0.40)),
        ("gpt-5", price(1.25, 10.0)),
        ("gpt-5-mini", price(0.25, 2.0)),
        ("gpt-5-codex", price(1.25, 10.0)),
    ]
    .into_iter()
    .map(|(model, p)| (model.to_string(), p))
    .collect()
}

fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("claudomator")
}

/// Values from the environment and the command line; set ones win over the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub http_listen: Option<SocketAddr>,
    pub cors_origins: Option<Vec<String>>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub tokens: Option<Vec<String>>,
    pub local_model_endpoint: Option<String>,
    pub github_webhook_secret: Option<String>,
}

impl Config {
    /// Builds the config from its layers and validates it. `cwd` is where the
    /// server starts: the default config file and project are looked up there.
    pub fn load(overrides: &Overrides, cwd: &Path) -> anyhow::Result<Config> {
        let implicit = cwd.join(DEFAULT_CONFIG_FILE);
        let file = match &overrides.config_file {
            Some(path) => Some(path.clone()),
            None if implicit.is_file() => Some(implicit),
            None => user_config_file().filter(|f| f.is_file()),
        };
        let mut config = match &file {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.apply(overrides);
        config.read_secret_env()?;
        if config.projects.is_empty()
            && let Some(project) = project_from_cwd(cwd)
        {
            config.projects.push(project);
        }
        config.validate()?;
        Ok(config)
    }

    /// The secrets named by `*_env` settings, read from the environment
    /// (an unset variable is an error naming it).
    fn read_secret_env(&mut self) -> anyhow::Result<()> {
        let read = |key: &str, name: &str| -> anyhow::Result<String> {
            std::env::var(name.trim()).map_err(|_| {
                anyhow::anyhow!(
                    "{key}: the environment variable `{}` is not set",
                    name.trim()
                )
            })
        };
        if !self.auth.tokens_env.trim().is_empty() {
            let tokens = read("auth.tokens_env", &self.auth.tokens_env)?;
            self.auth.tokens.extend(
                tokens
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string),
            );
        }
        if !self.github.webhook_secret_env.trim().is_empty()
            && self.github.webhook_secret.is_empty()
        {
            self.github.webhook_secret =
                read("github.webhook_secret_env", &self.github.webhook_secret_env)?;
        }
        Ok(())
    }

    pub fn from_file(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Config::from_toml(&text).with_context(|| format!("in config file {}", path.display()))
    }

    pub fn from_toml(text: &str) -> anyhow::Result<Config> {
        let mut config: Config = toml::from_str(text)?;
        // `[prices]` adds to the built-in prices (and overrides theirs); it
        // does not replace the table.
        for (model, price) in default_prices() {
            config.prices.entry(model).or_insert(price);
        }
        Ok(config)
    }

    fn apply(&mut self, o: &Overrides) {
        if let Some(v) = o.listen {
            self.listen = v;
        }
        if let Some(v) = o.http_listen {
            self.http_listen = v;
        }
        if let Some(v) = &o.cors_origins {
            self.cors_origins = v.clone();
        }
        if let Some(v) = &o.data_dir {
            self.data_dir = v.clone();
        }
        if let Some(v) = &o.database_url {
            self.database_url = v.clone();
        }
        if let Some(v) = &o.tokens {
            self.auth.tokens = v.clone();
        }
        if let Some(v) = &o.github_webhook_secret {
            self.github.webhook_secret = v.clone();
        }
        if let Some(v) = &o.local_model_endpoint {
            self.local_model.endpoint = v.clone();
        }
    }

    /// Checks everything a running server relies on; the error says what to fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        for token in &self.auth.tokens {
            if token.trim().is_empty() || token.contains(char::is_whitespace) {
                bail!("auth.tokens: tokens must be non-empty and contain no spaces");
            }
        }
        if self.auth.tokens.is_empty() {
            for (key, addr) in [("listen", self.listen), ("http_listen", self.http_listen)] {
                if !addr.ip().is_loopback() {
                    bail!(
                        "{key}: refusing to listen on {addr} without auth tokens: anyone who can reach \
                         it could run agents on this machine. Set [auth] tokens (or \
                         CLAUDOMATOR_TOKENS), or listen on 127.0.0.1"
                    );
                }
            }
        }
        for origin in &self.cors_origins {
            let read = crate::grpc::cors::parse_origin(origin)
                .map_err(|e| anyhow::anyhow!("cors_origins: {e}"))?;
            if &read != origin {
                bail!("cors_origins: write `{origin}` as a browser sends it: `{read}`");
            }
        }
        use crate::core::validate::{MAX_INSTRUCTIONS_LIMIT, MAX_TIMEOUT_LIMIT, MIN_TIMEOUT};
        if !(1..=MAX_INSTRUCTIONS_LIMIT).contains(&self.limits.max_instructions_bytes) {
            bail!(
                "limits.max_instructions_bytes: must be between 1 and {MAX_INSTRUCTIONS_LIMIT} (4 MiB)"
            );
        }
        let max_timeout = parse_duration(&self.limits.max_timeout)
            .map_err(|e| anyhow::anyhow!("limits.max_timeout: {e}"))?;
        if max_timeout < MIN_TIMEOUT || max_timeout > MAX_TIMEOUT_LIMIT {
            bail!("limits.max_timeout: must be between 1s and 7 days");
        }
        let timeout = parse_duration(&self.defaults.timeout)
            .map_err(|e| anyhow::anyhow!("defaults.timeout: {e}"))?;
        if timeout < MIN_TIMEOUT || timeout > max_timeout {
            bail!("defaults.timeout: must be at least 1s and at most limits.max_timeout");
        }
        if self.executor.max_concurrent == 0 {
            bail!("executor.max_concurrent: must be at least 1");
        }
        if !self.executor.blocked_timeout.trim().is_empty() {
            parse_duration(&self.executor.blocked_timeout)
                .map_err(|e| anyhow::anyhow!("executor.blocked_timeout: {e}"))?;
        }
        for (key, text) in [
            ("executor.retry_base", &self.executor.retry_base),
            ("executor.retry_max", &self.executor.retry_max),
            (
                "executor.usage_limit_cooldown",
                &self.executor.usage_limit_cooldown,
            ),
            ("executor.poll_interval", &self.executor.poll_interval),
            ("executor.lease", &self.executor.lease),
        ] {
            parse_duration(text).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
        }
        self.local_model.validate()?;
        if !(1..=20).contains(&self.defaults.max_attempts) {
            bail!("defaults.max_attempts: must be between 1 and 20");
        }
        self.notifications.settings()?;
        self.github.validate()?;
        pulls::validate(&self.pull_requests)?;
        if self.github.allow_unsigned && !self.http_listen.ip().is_loopback() {
            bail!(
                "github.allow_unsigned: refusing unsigned webhook deliveries on {} (http_listen): \
                 anyone who can reach it could create triage tasks. Set [github] webhook_secret \
                 (or CLAUDOMATOR_GITHUB_WEBHOOK_SECRET), or listen on 127.0.0.1",
                self.http_listen
            );
        }
        self.http.validate()?;
        if self.github.max_body_bytes > self.http.max_buffered_bytes {
            bail!(
                "github.max_body_bytes ({}) is more than http.max_buffered_bytes ({}): \
                 a delivery that large could never be read",
                self.github.max_body_bytes,
                self.http.max_buffered_bytes
            );
        }
        for (i, project) in self.projects.iter().enumerate() {
            let valid_name = !project.name.is_empty()
                && project
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if !valid_name {
                bail!(
                    "projects[{i}].name: `{}` must be letters, digits, `.`, `_` or `-`",
                    project.name
                );
            }
            if self.projects[..i].iter().any(|p| p.name == project.name) {
                bail!("projects[{i}].name: `{}` is configured twice", project.name);
            }
            if !project.path.is_dir() {
                bail!(
                    "projects[{i}].path: {} is not a directory",
                    project.path.display()
                );
            }
            // Two names for one repository: a plain submit could not tell
            // which is meant, and their sandboxes would share branches.
            let same = |p: &ProjectConfig| {
                p.path == project.path
                    || matches!(
                        (p.path.canonicalize(), project.path.canonicalize()),
                        (Ok(a), Ok(b)) if a == b
                    )
            };
            if let Some(other) = self.projects[..i].iter().find(|p| same(p)) {
                bail!(
                    "projects[{i}].path: {} is already project `{}`; one repository is one \
                     project (remove one of the two entries)",
                    project.path.display(),
                    other.name
                );
            }
            self.github_credentials(project)
                .map_err(|e| anyhow::anyhow!("projects[{i}].{e}"))?;
            if let Some(repo) = &project.github
                && crate::core::codehost::RepoName::parse(repo).is_none()
            {
                bail!("projects[{i}].github: `{repo}` must be `owner/name`");
            }
            if project
                .max_processes
                .is_some_and(|n| !(16..=1_000_000).contains(&n))
            {
                bail!("projects[{i}].max_processes: must be between 16 and 1000000");
            }
            if !project.setup_timeout.is_empty() {
                let d = parse_duration(&project.setup_timeout)
                    .map_err(|e| anyhow::anyhow!("projects[{i}].setup_timeout: {e}"))?;
                if d < Duration::from_secs(1) || d > Duration::from_secs(24 * 3600) {
                    bail!("projects[{i}].setup_timeout: must be between 1s and 24h");
                }
            }
            if let Some(bad) = project.copy.iter().find(|p| {
                p.trim().is_empty() || p.starts_with('/') || p.split('/').any(|c| c == "..")
            }) {
                bail!(
                    "projects[{i}].copy: `{bad}` must be a glob relative to the project, \
                     without `..`"
                );
            }
        }
        Ok(())
    }

    /// The GitHub credentials of a project: its own keys, else
    /// `[github]`'s; None when neither sets any. The error names the key
    /// (without the `projects[i].` before it).
    pub fn github_credentials(
        &self,
        project: &ProjectConfig,
    ) -> anyhow::Result<Option<GithubCredentials>> {
        let own = GithubAuth::read(
            "github_",
            project.github_token_env.as_deref().unwrap_or_default(),
            project.github_app_id,
            project.github_private_key_file.as_deref(),
        )?;
        let auth = match own {
            Some(auth) => auth,
            None => match GithubAuth::read(
                "github.",
                &self.github.token_env,
                self.github.app_id,
                self.github.private_key_file.as_deref(),
            ) {
                Ok(Some(auth)) => auth,
                _ => return Ok(None),
            },
        };
        let api_url = match &project.github_api_url {
            Some(url) => {
                check_api_url("github_api_url", url)?;
                url.trim().to_string()
            }
            None => self.github.api_url.trim().to_string(),
        };
        Ok(Some(GithubCredentials { api_url, auth }))
    }

    /// The database URL the server opens.
    pub fn database(&self) -> DatabaseChoice {
        if self.database_url.trim().is_empty() {
            DatabaseChoice::EmbeddedSqlite(self.data_dir.clone())
        } else {
            DatabaseChoice::Url(self.database_url.trim().to_string())
        }
    }

    /// The rules submitted tasks are checked against. Call after `validate`.
    pub fn task_rules(&self) -> TaskRules {
        let max_timeout = parse_duration(&self.limits.max_timeout).unwrap_or(Duration::MAX);
        TaskRules {
            projects: self.projects.iter().map(|p| p.name.clone()).collect(),
            project_pulls: self
                .projects
                .iter()
                .map(|p| (p.name.clone(), p.pull_requests.unwrap_or_default()))
                .collect(),
            max_instructions_bytes: self.limits.max_instructions_bytes,
            default_timeout: parse_duration(&self.defaults.timeout)
                .unwrap_or(Duration::from_secs(1800)),
            max_timeout,
            default_max_attempts: self.defaults.max_attempts,
            max_attempts_limit: 20,
        }
    }
}

impl Config {
    /// The executor's settings. Call after `validate`.
    /// Whether execution logs are copied into the database (`[executor]
    /// share_logs`; "auto" means when it is PostgreSQL).
    pub fn shares_logs(&self) -> bool {
        match self.executor.share_logs {
            ShareLogs::On => true,
            ShareLogs::Off => false,
            ShareLogs::Auto => {
                matches!(self.database(), DatabaseChoice::Url(url) if url.starts_with("postgres"))
            }
        }
    }

    /// This server's name in a cluster: `[executor] server_id`, or the host
    /// name plus a hash of the data dir, the same on every restart.
    pub fn server_id(&self) -> String {
        use sha2::Digest;
        let configured = self.executor.server_id.trim();
        if !configured.is_empty() {
            return configured.to_string();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let dir = self
            .data_dir
            .canonicalize()
            .unwrap_or_else(|_| self.data_dir.clone());
        let digest = sha2::Sha256::digest(dir.to_string_lossy().as_bytes());
        format!("{host}-{}", hex::encode(&digest[..4]))
    }

    pub fn executor_config(&self) -> crate::core::executor::ExecutorConfig {
        use crate::core::executor::ExecutorConfig;
        let duration = |text: &str, fallback: u64| {
            parse_duration(text).unwrap_or(Duration::from_secs(fallback))
        };
        let mut agent_limits = std::collections::HashMap::new();
        let mut agent_models = std::collections::HashMap::new();
        let mut cluster_limits = std::collections::HashMap::new();
        for (agent, section) in self.agents.sections() {
            if section.max_concurrent > 0 {
                agent_limits.insert(agent, section.max_concurrent);
            }
            if section.cluster_max_concurrent > 0 {
                cluster_limits.insert(agent, section.cluster_max_concurrent);
            }
            if !section.model.is_empty() {
                agent_models.insert(agent, section.model.clone());
            }
        }
        // The local model serves as many `local` tasks as calls at once.
        agent_limits.insert(
            crate::core::model::AgentType::Local,
            self.local_model.max_concurrent,
        );
        if !self.local_model.model.is_empty() {
            agent_models.insert(
                crate::core::model::AgentType::Local,
                self.local_model.model.clone(),
            );
        }
        ExecutorConfig {
            max_concurrent: self.executor.max_concurrent,
            agent_limits,
            cluster_limits,
            agent_models,
            projects: self
                .projects
                .iter()
                .map(|p| {
                    let target = crate::core::executor::ProjectTarget {
                        path: p.path.clone(),
                        publish_remote: p.publish_remote.clone(),
                        confinement: crate::core::runner::Confinement {
                            isolation: p.isolation,
                            network: p.network,
                            max_processes: p.max_processes,
                        },
                        copy: p.copy.clone(),
                        setup: (!p.setup.trim().is_empty()).then(|| crate::core::runner::Setup {
                            command: p.setup.clone(),
                            env: p.setup_env.clone(),
                            timeout: parse_duration(&p.setup_timeout)
                                .unwrap_or(Duration::from_secs(600)),
                            data_dir: self.data_dir.clone(),
                        }),
                    };
                    (p.name.clone(), target)
                })
                .collect(),
            sandbox: crate::sandbox::SandboxConfig {
                root: self.data_dir.join("sandboxes"),
                author_name: self.executor.commit_author_name.clone(),
                author_email: self.executor.commit_author_email.clone(),
                keep_on_failure: self.executor.keep_failed_sandboxes,
            },
            retry_base: duration(&self.executor.retry_base, 10),
            retry_max: duration(&self.executor.retry_max, 600),
            usage_limit_cooldown: duration(&self.executor.usage_limit_cooldown, 3600),
            blocked_timeout: (!self.executor.blocked_timeout.trim().is_empty())
                .then(|| duration(&self.executor.blocked_timeout, 86400)),
            poll_interval: duration(&self.executor.poll_interval, 1),
            classify_timeout: self.local_model.classify_timeout(),
            auto_models: self.auto_models(),
            server_id: self.server_id(),
            lease: duration(&self.executor.lease, 30).max(Duration::from_secs(1)),
            requeue_on_restart: self.executor.on_restart == OnRestart::Requeue,
            shutdown: self.executor.shutdown,
        }
    }
}

impl Config {
    /// The models the classifier may give each agent: its configured
    /// default first, then the priced models of its family.
    pub fn auto_models(
        &self,
    ) -> std::collections::HashMap<crate::core::model::AgentType, Vec<String>> {
        let family = |model: &str| {
            AgentType::ALL.iter().copied().find(|agent| match agent {
                AgentType::Claude => model.starts_with("claude"),
                AgentType::Gemini => model.starts_with("gemini"),
                AgentType::Codex => model.starts_with("gpt") || model.starts_with("codex"),
                AgentType::Local | AgentType::Auto => false,
            })
        };
        let mut priced: Vec<&String> = self.prices.keys().collect();
        priced.sort();
        let mut models = std::collections::HashMap::new();
        let defaults = self
            .agents
            .sections()
            .into_iter()
            .map(|(agent, section)| (agent, section.model.clone()))
            .chain([(AgentType::Local, self.local_model.model.clone())]);
        for (agent, default) in defaults {
            let mut list: Vec<String> = Vec::new();
            if !default.is_empty() {
                list.push(default);
            }
            for model in &priced {
                if family(model) == Some(agent) && !list.contains(model) {
                    list.push((*model).clone());
                }
            }
            models.insert(agent, list);
        }
        models
    }
}

pub enum DatabaseChoice {
    EmbeddedSqlite(PathBuf),
    Url(String),
}

/// With no projects configured, the git repository the server starts in is
/// the one allowed project, named after its folder.
fn project_from_cwd(cwd: &Path) -> Option<ProjectConfig> {
    let root = cwd.ancestors().find(|dir| dir.join(".git").exists())?;
    let name: String = root
        .file_name()?
        .to_string_lossy()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    Some(ProjectConfig::new(name, root))
}
