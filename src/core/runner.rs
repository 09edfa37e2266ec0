//! The runner seam: what the executor asks of an agent ([`Runner`]), what
//! it hands one for an attempt ([`RunRequest`]) and what it gets back
//! ([`RunOutcome`], [`Verdict`]). The agent CLIs that implement it live in
//! `crate::runners`; [`fake::FakeRunner`], a scripted one for tests, lives
//! beside this.

pub mod fake;

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::logs::LogWriter;
use super::model::{AgentType, Id};

pub use fake::{FakeRunner, FakeStep};

/// Whether an agent's process runs in an OS sandbox (`isolation`, per
/// project and per agent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// In the OS sandbox where this machine has one; where it has none the
    /// agent runs without it, and the start-up log, `doctor` and each
    /// attempt's log say so.
    #[default]
    Auto,
    /// Always in the OS sandbox: where there is none, the attempt fails
    /// saying why, never runs unprotected.
    Sandbox,
    /// Never: the agent sees every file the server sees (but still gets
    /// only the allowed environment).
    None,
}

/// Whether an agent in the OS sandbox reaches the network (`network`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// As the server does (agents need their model API).
    #[default]
    On,
    /// Nothing, loopback included: for tasks that need no model API.
    /// Implies the OS sandbox.
    None,
}

/// What the project asks of an attempt's confinement; unset fields fall
/// to the agent's settings, then to the defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Confinement {
    pub isolation: Option<Isolation>,
    pub network: Option<Network>,
    /// Processes and threads one run may have at once (the project's
    /// `max_processes`); unset: [`DEFAULT_MAX_PROCESSES`].
    pub max_processes: Option<u32>,
}

/// Processes and threads one agent's run may have at once, by default.
pub const DEFAULT_MAX_PROCESSES: u32 = 4096;

impl Confinement {
    /// The cap on one run's processes: the project's, else the default.
    pub fn max_processes(self) -> u64 {
        self.max_processes.unwrap_or(DEFAULT_MAX_PROCESSES).into()
    }

    /// The project's choices over the agent's: the project's isolation if
    /// it set one, else the agent's; no network if either says so.
    pub fn over(self, agent: Confinement) -> (Isolation, Network) {
        let network = match (self.network, agent.network) {
            (Some(Network::None), _) | (_, Some(Network::None)) => Network::None,
            _ => Network::On,
        };
        let isolation = self.isolation.or(agent.isolation).unwrap_or_default();
        (isolation, network)
    }
}

/// A project's setup step, run in a fresh sandbox before the agent
/// (`crate::runners::setup`).
#[derive(Clone, Debug, Default)]
pub struct Setup {
    /// A shell command line.
    pub command: String,
    /// Its own environment (secrets allowed: the agent never sees it).
    pub env: std::collections::BTreeMap<String, String>,
    pub timeout: Duration,
    /// The server's data dir (hidden from it, as from agents).
    pub data_dir: PathBuf,
}

/// Everything a runner needs for one attempt.
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub task_id: Id,
    pub execution_id: Id,
    /// The sandbox: the agent's working directory.
    pub workdir: PathBuf,
    /// The user's instructions.
    pub prompt: String,
    /// Appended to the agent's own system prompt.
    pub system_prompt: String,
    /// Empty: the runner's default model.
    pub model: String,
    pub allowed_tools: Vec<String>,
    /// 0: no cap.
    pub max_budget_usd: f64,
    /// 0: the agent's default.
    pub max_turns: u32,
    /// Resume this agent session instead of starting a new one.
    pub resume_session: Option<String>,
    /// Tokens (in, out) the resumed session had already used, for agents
    /// that report usage cumulatively per session.
    pub prior_usage: Option<(u64, u64)>,
    /// The project's isolation and network choices.
    pub confinement: Confinement,
}

/// How an attempt ended, as the runner saw it.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Succeeded,
    Failed(String),
    BudgetExceeded(String),
    /// The model API refused for load or quota; retry later.
    RateLimited {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The account's usage quota is spent (not a short rate limit): set the
    /// agent aside until it resets, or for the configured cool-down.
    UsageLimited {
        message: String,
        /// When the agent said the quota resets (Unix milliseconds).
        resets_at: Option<i64>,
    },
    /// The process was stopped by the cancel token (cancel or timeout; the
    /// executor knows which).
    Stopped,
}

/// What a runner reports about an attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOutcome {
    pub verdict: Verdict,
    pub exit_code: Option<i32>,
    pub session_id: String,
    /// The model that actually answered, when the agent said.
    pub model: String,
    pub cost_usd: f64,
    pub cost_estimated: bool,
    /// The cost is not known (see `Execution::cost_unknown`).
    pub cost_unknown: bool,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub turns: u32,
    /// The agent's final message.
    pub final_text: String,
    /// Tool calls the agent's permissions refused, e.g. "Write /path".
    pub permission_denials: Vec<String>,
}

impl RunOutcome {
    pub fn new(verdict: Verdict) -> Self {
        RunOutcome {
            verdict,
            exit_code: None,
            session_id: String::new(),
            model: String::new(),
            cost_usd: 0.0,
            cost_estimated: false,
            cost_unknown: false,
            input_tokens: 0,
            output_tokens: 0,
            turns: 0,
            final_text: String::new(),
            permission_denials: Vec::new(),
        }
    }
}

/// One question to an agent CLI, outside any task: the answer is text, the
/// agent gets no tools and one turn, and nothing is logged (internal work such
/// as `Elaborate`).
#[derive(Clone, Debug)]
pub struct AskRequest {
    pub prompt: String,
    /// Empty: the CLI's default model.
    pub model: String,
    /// An empty scratch directory: the CLI's working directory.
    pub workdir: PathBuf,
}

impl AskRequest {
    /// The same question as a one-turn attempt, for runners that build their
    /// argv from a [`RunRequest`] (so the flags live in one place).
    pub fn as_run_request(&self) -> RunRequest {
        RunRequest {
            task_id: Id::new(),
            execution_id: Id::new(),
            workdir: self.workdir.clone(),
            prompt: self.prompt.clone(),
            system_prompt: String::new(),
            model: self.model.clone(),
            allowed_tools: Vec::new(),
            max_budget_usd: 0.0,
            max_turns: 1,
            resume_session: None,
            prior_usage: None,
            confinement: Confinement::default(),
        }
    }
}

/// Why an agent gave no answer to a one-shot question ([`Runner::ask`]).
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// The agent cannot run now (its CLI is missing): why.
    #[error("{0}")]
    Unavailable(String),
    /// What the agent needs before it starts could not be written (its
    /// settings): why.
    #[error("{0}")]
    Setup(String),
    #[error("{0} does not answer one-shot questions")]
    Unsupported(AgentType),
    #[error("cannot start `{}`: {source}", .program.display())]
    Start {
        program: PathBuf,
        source: std::io::Error,
    },
    /// The task that ran the CLI panicked.
    #[error("the `{}` call panicked: {source}", .program.display())]
    Panicked {
        program: PathBuf,
        source: tokio::task::JoinError,
    },
    /// The CLI ran and gave no text: how it ended (`answered nothing`,
    /// `was stopped`, its failure), and its last stderr lines on one line
    /// (empty: none).
    #[error("{why}{}", stderr_note(.stderr))]
    NoAnswer { why: String, stderr: String },
}

fn stderr_note(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!(" (stderr: {stderr})")
    }
}

/// An agent the executor can run.
#[async_trait::async_trait]
pub trait Runner: Send + Sync {
    fn agent(&self) -> AgentType;

    /// Why this runner cannot run now (its CLI is missing), if it cannot.
    fn unavailable(&self) -> Option<String>;

    /// What `doctor` reports: the CLI found or not, its version, whether
    /// credentials (or a base URL) are set.
    async fn probe(&self) -> AgentProbe;

    /// Rebuilds what an attempt had reported (session, tokens, cost) from
    /// the agent's own output lines, as kept in the execution log: how an
    /// attempt cut short by a crash is recorded after the restart.
    fn recover(&self, model: &str, stdout_lines: &[String]) -> RunOutcome;

    /// Runs one attempt to its end. Must return promptly once `cancel`
    /// fires, with the agent's whole process group ended.
    async fn run(
        &self,
        request: RunRequest,
        log: &mut LogWriter,
        cancel: CancellationToken,
    ) -> RunOutcome;

    /// Asks the agent one question (no tools, one turn) and returns its
    /// final text, or why there is none. Must return promptly once `cancel`
    /// fires. Agents that cannot answer this way keep the default.
    async fn ask(
        &self,
        request: AskRequest,
        cancel: CancellationToken,
    ) -> Result<String, AskError> {
        let _ = (request, cancel);
        Err(AskError::Unsupported(self.agent()))
    }
}

/// Facts about one agent on this machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentProbe {
    /// The configured command.
    pub command: String,
    /// Where it was found, or why it cannot run.
    pub detail: String,
    pub available: bool,
    /// What `<command> --version` printed (first line).
    pub version: String,
    pub credentials_ok: bool,
    /// Where the credentials come from, or what is missing.
    pub credentials: String,
}
