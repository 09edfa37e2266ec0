//! `FakeRunner`: a scripted [`Runner`] for tests and benches, no process and
//! no agent CLI. Each call to `run` takes the next [`FakeStep`] of its
//! script (succeed, fail, rate or usage limit, budget, hang until cancelled,
//! ask a question) and every [`RunRequest`] it received is kept for
//! assertions.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{AgentProbe, RunOutcome, RunRequest, Runner, Verdict};
use crate::core::logs::{LogKind, LogWriter};
use crate::core::model::{AgentType, Question, UnixMillis};

/// What one call to [`FakeRunner::run`] does.
#[derive(Clone, Debug)]
pub enum FakeStep {
    /// Writes `files` (relative to the workdir) and succeeds with
    /// `final_text` as the agent's last message.
    Succeed {
        files: Vec<(PathBuf, String)>,
        final_text: String,
    },
    Fail(String),
    RateLimited(Option<Duration>),
    UsageLimited(Option<UnixMillis>),
    BudgetExceeded(String),
    /// Runs until the cancel token fires, then reports `Stopped`.
    Hang,
    /// Writes the question file (`.claudomator/question.json`) and ends its
    /// turn successfully.
    Ask(Question),
}

impl FakeStep {
    /// Succeeds without touching the workdir, with a `## Summary`.
    pub fn succeed() -> FakeStep {
        FakeStep::Succeed {
            files: Vec::new(),
            final_text: "Done.\n\n## Summary\nNothing to change.".into(),
        }
    }

    /// Succeeds after writing one file, with a `## Summary` naming it.
    pub fn write_file(path: &str, contents: &str) -> FakeStep {
        FakeStep::Succeed {
            files: vec![(PathBuf::from(path), contents.to_string())],
            final_text: format!("Done.\n\n## Summary\nWrote {path}."),
        }
    }

    /// Asks a person a question (no choices, no context).
    pub fn ask(text: &str) -> FakeStep {
        FakeStep::Ask(Question {
            text: text.to_string(),
            ..Question::default()
        })
    }
}

/// A runner that plays a script. When the script runs out it succeeds.
pub struct FakeRunner {
    agent: AgentType,
    script: Mutex<VecDeque<FakeStep>>,
    requests: Mutex<Vec<RunRequest>>,
    unavailable: Mutex<Option<String>>,
    /// How many calls have started.
    calls: watch::Sender<usize>,
}

impl FakeRunner {
    pub fn new(agent: AgentType) -> FakeRunner {
        FakeRunner {
            agent,
            script: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            unavailable: Mutex::new(None),
            calls: watch::channel(0).0,
        }
    }

    /// Adds steps to the end of the script.
    pub fn script(self, steps: impl IntoIterator<Item = FakeStep>) -> FakeRunner {
        self.push(steps);
        self
    }

    /// Adds steps to the end of the script of a shared runner.
    pub fn push(&self, steps: impl IntoIterator<Item = FakeStep>) {
        self.script.lock().expect("script lock").extend(steps);
    }

    /// Makes the runner report itself unavailable (None: available again).
    pub fn set_unavailable(&self, why: Option<&str>) {
        *self.unavailable.lock().expect("unavailable lock") = why.map(str::to_string);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RunRequest> {
        self.requests.lock().expect("requests lock").clone()
    }

    /// Waits until at least `n` calls have started.
    pub async fn wait_for_calls(&self, n: usize) {
        let mut calls = self.calls.subscribe();
        let _ = calls.wait_for(|&started| started >= n).await;
    }

    fn next_step(&self) -> FakeStep {
        self.script
            .lock()
            .expect("script lock")
            .pop_front()
            .unwrap_or_else(FakeStep::succeed)
    }
}

#[async_trait::async_trait]
impl Runner for FakeRunner {
    fn agent(&self) -> AgentType {
        self.agent
    }

    fn unavailable(&self) -> Option<String> {
        self.unavailable.lock().expect("unavailable lock").clone()
    }

    async fn probe(&self) -> AgentProbe {
        let why = self.unavailable();
        AgentProbe {
            command: format!("fake {}", self.agent),
            available: why.is_none(),
            detail: why.unwrap_or_else(|| "scripted".into()),
            credentials_ok: true,
            ..AgentProbe::default()
        }
    }

    fn recover(&self, model: &str, _stdout_lines: &[String]) -> RunOutcome {
        let mut outcome = RunOutcome::new(Verdict::Stopped);
        outcome.model = model.to_string();
        outcome
    }

    async fn run(
        &self,
        request: RunRequest,
        log: &mut LogWriter,
        cancel: CancellationToken,
    ) -> RunOutcome {
        let step = self.next_step();
        let call = {
            let mut requests = self.requests.lock().expect("requests lock");
            requests.push(request.clone());
            requests.len()
        };
        self.calls.send_replace(call);
        let say = |log: &mut LogWriter, text: String| {
            if let Err(e) = log.append(LogKind::Text, text, serde_json::Value::Null, "") {
                tracing::warn!(error = %e, "cannot write the execution log");
            }
        };
        say(log, format!("fake {} call {call}: {step:?}", self.agent));
        let verdict = match step {
            FakeStep::Succeed { files, final_text } => {
                for (path, contents) in files {
                    let path = request.workdir.join(path);
                    if let Some(dir) = path.parent() {
                        let _ = std::fs::create_dir_all(dir);
                    }
                    if let Err(e) = std::fs::write(&path, contents) {
                        return RunOutcome::new(Verdict::Failed(format!(
                            "cannot write {}: {e}",
                            path.display()
                        )));
                    }
                }
                let mut outcome = self.outcome(&request, call, Verdict::Succeeded);
                outcome.final_text = final_text;
                return outcome;
            }
            FakeStep::Fail(reason) => Verdict::Failed(reason),
            FakeStep::RateLimited(retry_after) => Verdict::RateLimited {
                message: "429 too many requests".into(),
                retry_after,
            },
            FakeStep::UsageLimited(resets_at) => Verdict::UsageLimited {
                message: "usage limit reached".into(),
                resets_at,
            },
            FakeStep::BudgetExceeded(reason) => Verdict::BudgetExceeded(reason),
            FakeStep::Hang => {
                cancel.cancelled().await;
                Verdict::Stopped
            }
            FakeStep::Ask(question) => {
                let path = request.workdir.join(crate::core::executor::QUESTION_FILE);
                let written = path
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| {
                        std::fs::write(&path, serde_json::to_string(&question).unwrap_or_default())
                    });
                match written {
                    Ok(()) => Verdict::Succeeded,
                    Err(e) => Verdict::Failed(format!("cannot write the question: {e}")),
                }
            }
        };
        self.outcome(&request, call, verdict)
    }
}

impl FakeRunner {
    /// An outcome in the request's session (a new one per call otherwise).
    fn outcome(&self, request: &RunRequest, call: usize, verdict: Verdict) -> RunOutcome {
        let exit_code = match verdict {
            Verdict::Stopped => None,
            Verdict::Succeeded => Some(0),
            _ => Some(1),
        };
        let mut outcome = RunOutcome::new(verdict);
        outcome.exit_code = exit_code;
        outcome.session_id = request
            .resume_session
            .clone()
            .unwrap_or_else(|| format!("fake-{}-{call}", self.agent));
        outcome.model = request.model.clone();
        outcome.input_tokens = 10;
        outcome.output_tokens = 5;
        outcome.turns = 1;
        outcome
    }
}
