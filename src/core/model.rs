//! The task model: one definition of a task, an execution and their enums.
//! Every other layer converts to and from these types.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use ulid::Ulid;

/// Milliseconds since the Unix epoch, as stored and as shown.
pub type UnixMillis = i64;

pub fn now_millis() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// A sortable unique id (a ULID): ids sort by creation time. Ids made by
/// one process are strictly increasing, also within one millisecond (a
/// monotonic generator), so "newest first" lists them in creation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Id(Ulid);

impl Id {
    pub fn new() -> Self {
        static GENERATOR: std::sync::Mutex<ulid::Generator> =
            std::sync::Mutex::new(ulid::Generator::new());
        let mut generator = GENERATOR.lock().unwrap_or_else(|e| e.into_inner());
        match generator.generate() {
            Ok(id) => Id(id),
            // 2^80 ids in one millisecond: move on to the next one.
            Err(_) => {
                let next = std::time::SystemTime::now() + std::time::Duration::from_millis(1);
                Id(generator
                    .generate_from_datetime(next)
                    .unwrap_or_else(|_| Ulid::from_datetime(next)))
            }
        }
    }
}

impl Default for Id {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Only the canonical form is an id: 26 characters of Crockford base 32 in
/// upper case, the first at most `7` (128 bits). Anything else (lower case,
/// `I`/`L`/`O`/`U`, a value past 128 bits that would wrap onto another id)
/// is refused, so one id has one spelling.
impl FromStr for Id {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const CROCKFORD: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        let text = s.trim();
        let canonical = text.len() == 26
            && text.bytes().all(|b| CROCKFORD.contains(&b))
            && text.as_bytes()[0] <= b'7';
        let refused = || {
            format!(
                "{} is not a valid id (expected a 26-character ULID such as \
                 01JDZ0Q3W2J9P6V5M4N8K7H6G5)",
                super::validate::quote(s)
            )
        };
        if !canonical {
            return Err(refused());
        }
        Ulid::from_string(text).map(Id).map_err(|_| refused())
    }
}

impl From<Id> for String {
    fn from(id: Id) -> String {
        id.to_string()
    }
}

impl TryFrom<String> for Id {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// Declares a fieldless enum with one lowercase name per variant, used in
/// config files, the CLI, JSON output and the store.
macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Every accepted name, for error messages.
            pub fn names() -> String {
                Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        // `Err = String` on purpose: this is the boundary where a name
        // arrives as text (serde's `custom`, clap, a proto string field),
        // and every caller wraps the message in its own typed error.
        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == wanted)
                    .ok_or_else(|| format!("unknown value `{s}`; expected one of {}", Self::names()))
            }
        }
    };
}

named_enum!(
    /// Which agent runs a task.
    AgentType {
        Auto => "auto",
        Claude => "claude",
        Gemini => "gemini",
        Codex => "codex",
        Local => "local",
    }
);

named_enum!(
    /// Where a task's sandbox starts when it names no `base_ref`:
    /// `dependencies` (the default), its dependencies' work in its project
    /// (their branches, merged), else the project's HEAD; `head`, the
    /// project's HEAD, uncommitted changes left behind; `working_tree`, HEAD
    /// with the project's uncommitted changes committed on top.
    StartFrom {
        Dependencies => "dependencies",
        Head => "head",
        WorkingTree => "working_tree",
    }
);

// The macro's enums take no per-variant attributes, so no `#[default]`.
#[allow(clippy::derivable_impls)]
impl Default for StartFrom {
    fn default() -> Self {
        StartFrom::Dependencies
    }
}

named_enum!(
    /// Whether a task's work becomes a pull request on the project's GitHub
    /// repository (`core::pulls`): `off`; `on_complete`, opened as soon as
    /// the agent finishes (the task waits in READY: the pull request is the
    /// review); `on_accept`, opened when a person accepts the work (the task
    /// then stays READY until the pull request is merged or closed).
    PullMode {
        Off => "off",
        OnComplete => "on_complete",
        OnAccept => "on_accept",
    }
);

// The macro's enums take no per-variant attributes, so no `#[default]`.
#[allow(clippy::derivable_impls)]
impl Default for PullMode {
    fn default() -> Self {
        PullMode::Off
    }
}

named_enum!(
    /// Scheduling priority: high before normal before low, then oldest first.
    Priority {
        Low => "low",
        Normal => "normal",
        High => "high",
    }
);

named_enum!(
    /// The life of a task; `core::state` decides which moves are legal.
    TaskState {
        Pending => "pending",
        Queued => "queued",
        Running => "running",
        Ready => "ready",
        Completed => "completed",
        Failed => "failed",
        TimedOut => "timed_out",
        Cancelled => "cancelled",
        BudgetExceeded => "budget_exceeded",
        Blocked => "blocked",
    }
);

/// The questions asked of a state, in one place (`core::state` tests each
/// against the legal moves).
impl TaskState {
    /// A final state never changes again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Cancelled | TaskState::BudgetExceeded
        )
    }

    /// The task may still start an attempt, or is running one, without
    /// anyone acting on it; every other state waits for a person or ended.
    pub fn may_run_again(self) -> bool {
        matches!(
            self,
            TaskState::Pending | TaskState::Queued | TaskState::Running
        )
    }

    /// Where an attempt leaves work that goes on (requeued, waiting for an
    /// answer, in review): its sandbox and agent session are kept.
    pub fn keeps_sandbox(self) -> bool {
        matches!(
            self,
            TaskState::Queued | TaskState::Blocked | TaskState::Ready
        )
    }

    /// The task ended without its work done: a dependent of it fails.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            TaskState::Failed
                | TaskState::TimedOut
                | TaskState::Cancelled
                | TaskState::BudgetExceeded
        )
    }
}

named_enum!(
    /// How one attempt ended, or that it is still running.
    ExecutionState {
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        TimedOut => "timed_out",
        Cancelled => "cancelled",
        BudgetExceeded => "budget_exceeded",
        Blocked => "blocked",
        RateLimited => "rate_limited",
        Interrupted => "interrupted",
    }
);

named_enum!(
    /// Who chose an execution's agent: the task named it, or (agent `auto`)
    /// the local model or the fallback rule did.
    AgentChoice {
        Named => "named",
        Model => "model",
        Rule => "rule",
    }
);

// `named_enum!` cannot mark a `#[default]` variant.
#[allow(clippy::derivable_impls)]
impl Default for AgentChoice {
    fn default() -> Self {
        AgentChoice::Named
    }
}

impl Priority {
    /// Larger runs first.
    pub fn rank(self) -> i32 {
        match self {
            Priority::Low => 0,
            Priority::Normal => 1,
            Priority::High => 2,
        }
    }

    pub fn from_rank(rank: i32) -> Option<Self> {
        Self::ALL.iter().copied().find(|p| p.rank() == rank)
    }
}

/// What the agent may do and spend, as a client writes it (names as text).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSpec {
    /// `auto`, `claude`, `gemini`, `codex` or `local`; empty means `auto`.
    #[serde(rename = "type")]
    pub agent_type: String,
    pub model: String,
    pub allowed_tools: Vec<String>,
    /// 0 means no cap.
    pub max_budget_usd: f64,
    /// 0 means the agent's default.
    pub max_turns: u32,
}

/// A task as a client submits it, before validation. `core::validate` turns
/// it into a [`Task`] or says which field is wrong.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TaskSpec {
    pub name: String,
    pub instructions: String,
    pub project: String,
    pub agent: AgentSpec,
    /// A duration such as `30m` or `1h 30m`; empty uses the server default.
    pub timeout: String,
    /// `low`, `normal` or `high`; empty means `normal`.
    pub priority: String,
    pub tags: Vec<String>,
    pub depends_on: Vec<String>,
    pub parent_task_id: String,
    /// 0 uses the server default.
    pub max_attempts: u32,
    pub review_required: bool,
    /// A branch, tag or commit of the project to start from; empty: HEAD.
    pub base_ref: String,
    /// `dependencies`, `head` or `working_tree` (see [`StartFrom`]); empty:
    /// `dependencies`.
    pub start_from: String,
    /// `off`, `on_complete` or `on_accept` (see [`PullMode`]); empty: the
    /// project's `pull_requests` setting.
    pub pull_requests: String,
}

/// A `SubmitTask` call: the spec plus the optional idempotency key and id.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SubmitRequest {
    pub spec: TaskSpec,
    pub idempotency_key: String,
    pub task_id: String,
}

/// Validated agent settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentSettings {
    #[serde(rename = "type")]
    pub agent_type: AgentType,
    pub model: String,
    pub allowed_tools: Vec<String>,
    pub max_budget_usd: f64,
    pub max_turns: u32,
}

/// A stored task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: Id,
    pub name: String,
    pub instructions: String,
    pub project: String,
    pub agent: AgentSettings,
    #[serde(with = "duration_secs")]
    pub timeout: Duration,
    pub priority: Priority,
    pub tags: Vec<String>,
    pub depends_on: Vec<Id>,
    pub parent_task_id: Option<Id>,
    pub max_attempts: u32,
    pub review_required: bool,
    /// Where the sandbox starts (a branch, tag or commit); empty: HEAD.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub base_ref: String,
    /// Where the sandbox starts when `base_ref` is empty.
    #[serde(default)]
    pub start_from: StartFrom,
    /// Whether its work becomes a pull request (the spec's, else the
    /// project's setting, at submit).
    #[serde(default)]
    pub pull_requests: PullMode,
    pub idempotency_key: Option<String>,
    pub state: TaskState,
    /// Why the task is in its state (a cancel reason, a failure), or empty.
    pub state_reason: String,
    /// The latest execution's summary, or empty.
    pub summary: String,
    /// Executions started so far.
    pub attempts: u32,
    /// A queued task is not started before this time (rate-limit backoff); 0: no wait.
    #[serde(default)]
    pub run_after: UnixMillis,
    /// What the agent asked, while the task is BLOCKED.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<Question>,
    /// What the next run tells the resumed agent session (an answer, review
    /// feedback); empty for a fresh start.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pending_input: String,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

impl Task {
    /// The spec that would submit this task again, as a client writes it.
    pub fn spec(&self) -> TaskSpec {
        TaskSpec {
            name: self.name.clone(),
            instructions: self.instructions.clone(),
            project: self.project.clone(),
            agent: AgentSpec {
                agent_type: self.agent.agent_type.as_str().to_string(),
                model: self.agent.model.clone(),
                allowed_tools: self.agent.allowed_tools.clone(),
                max_budget_usd: self.agent.max_budget_usd,
                max_turns: self.agent.max_turns,
            },
            timeout: humantime::format_duration(self.timeout).to_string(),
            priority: self.priority.as_str().to_string(),
            tags: self.tags.clone(),
            depends_on: self.depends_on.iter().map(Id::to_string).collect(),
            parent_task_id: self
                .parent_task_id
                .map(|id| id.to_string())
                .unwrap_or_default(),
            max_attempts: self.max_attempts,
            review_required: self.review_required,
            base_ref: self.base_ref.clone(),
            start_from: self.start_from.as_str().to_string(),
            pull_requests: self.pull_requests.as_str().to_string(),
        }
    }
}

/// A question an agent asked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    #[serde(alias = "question")]
    pub text: String,
    #[serde(default)]
    pub choices: Vec<String>,
    #[serde(default)]
    pub context: String,
    #[serde(default)]
    pub asked_at: UnixMillis,
}

/// One attempt at a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub id: Id,
    pub task_id: Id,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub state: ExecutionState,
    pub started_at: UnixMillis,
    pub ended_at: Option<UnixMillis>,
    pub exit_code: Option<i32>,
    pub error: String,
    pub agent: AgentType,
    pub model: String,
    pub session_id: String,
    pub cost_usd: f64,
    pub cost_estimated: bool,
    /// The cost is not known: no price for the model (agents that report
    /// no cost), or the agent stopped before it said what it used.
    /// `cost_usd` is then only what could be counted, not the cost.
    #[serde(default)]
    pub cost_unknown: bool,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub turns: u32,
    pub changed_files: Vec<String>,
    /// Lines added and removed per changed file.
    #[serde(default)]
    pub file_changes: Vec<FileChange>,
    pub commits: Vec<String>,
    pub summary: String,
    pub log_path: String,
    /// Tool calls the agent's permissions refused, e.g. "Write /path".
    #[serde(default)]
    pub permission_denials: Vec<String>,
    /// The server that ran the attempt (`[cluster] server_id`).
    #[serde(default)]
    pub server_id: String,
    /// Who chose the agent (`named` unless the task's agent was `auto`).
    #[serde(default)]
    pub agent_choice: AgentChoice,
    /// Why that agent: the model's reason, or why the rule decided.
    #[serde(default)]
    pub agent_choice_reason: String,
}

/// One file an execution changed, from `git diff --numstat`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileChange {
    pub path: String,
    pub added: u64,
    pub removed: u64,
}

impl Execution {
    /// A new running attempt with nothing recorded yet.
    pub fn start(task: &Task, attempt: u32, agent: AgentType, model: &str) -> Self {
        Execution {
            id: Id::new(),
            task_id: task.id,
            attempt,
            state: ExecutionState::Running,
            started_at: now_millis(),
            ended_at: None,
            exit_code: None,
            error: String::new(),
            agent,
            model: model.to_string(),
            session_id: String::new(),
            cost_usd: 0.0,
            cost_estimated: false,
            cost_unknown: false,
            input_tokens: 0,
            output_tokens: 0,
            turns: 0,
            changed_files: Vec::new(),
            file_changes: Vec::new(),
            commits: Vec::new(),
            summary: String::new(),
            log_path: String::new(),
            permission_denials: Vec::new(),
            server_id: String::new(),
            agent_choice: AgentChoice::Named,
            agent_choice_reason: String::new(),
        }
    }
}

/// Which tasks a listing wants, newest first.
#[derive(Clone, Debug, Default)]
pub struct TaskFilter {
    pub states: Vec<TaskState>,
    pub project: Option<String>,
    pub tag: Option<String>,
    /// Only tasks older than this one (the page token).
    pub before: Option<Id>,
    pub limit: u64,
}

/// One page of a listing.
#[derive(Clone, Debug, Default)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The token for the next page, when there is one.
    pub next: Option<Id>,
}

mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_creation() {
        let a = Id::new();
        std::thread::sleep(Duration::from_millis(2));
        let b = Id::new();
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
        assert_eq!(a.to_string().parse::<Id>().unwrap(), a);
    }

    #[test]
    fn ids_made_in_one_burst_are_strictly_increasing_across_threads() {
        // Thousands within the same milliseconds, from several threads:
        // every id is larger than the one its thread made before, and
        // none repeats.
        let handles: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..5000).map(|_| Id::new()).collect::<Vec<_>>()))
            .collect();
        let mut all = Vec::new();
        for handle in handles {
            let ids = handle.join().unwrap();
            assert!(ids.windows(2).all(|w| w[0] < w[1]));
            all.extend(ids);
        }
        let count = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), count);
    }

    #[test]
    fn enum_names_round_trip_and_reject_unknown() {
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>().unwrap(), *s);
        }
        assert_eq!(
            "TIMED-OUT".parse::<TaskState>().unwrap(),
            TaskState::TimedOut
        );
        let err = "robot".parse::<AgentType>().unwrap_err();
        assert!(err.contains("robot") && err.contains("claude"), "{err}");
    }
}
