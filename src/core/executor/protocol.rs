//! The agent protocol: what every agent is told on top of its own system
//! prompt (`SYSTEM_PROMPT`), what each attempt says to it (`continuation`:
//! the instructions afresh, or the next message of its session), and how it
//! asks a person a question (it writes `QUESTION_FILE` in its sandbox;
//! `take_question` reads and removes it).

use std::path::Path;

use super::Executor;
use crate::core::CoreError;
use crate::core::model::{AgentType, Execution, ExecutionState, Question, Task, now_millis};

/// What the agent is told on top of its own system prompt.
pub const SYSTEM_PROMPT: &str = "You are running unattended under claudomator, in a git \
sandbox of the project (your working directory), on a branch of your own. Work only inside \
that directory. Your changes are committed for you when you finish. End your final message \
with a `## Summary` section saying what you changed and how you checked it. If you cannot go \
on without a decision from a person, write the file `.claudomator/question.json` in your \
working directory as {\"question\": \"...\", \"choices\": [\"...\"], \"context\": \"...\"} \
(choices and context optional) and end your turn: the answer will come as the next message \
of this session.";

/// Where an agent leaves a question for a person, relative to its sandbox.
pub const QUESTION_FILE: &str = ".claudomator/question.json";

impl Executor {
    /// What the next attempt says to the agent: the task's instructions in a
    /// new session; or, in the same session, a person's answer or review
    /// feedback, or a continuation after an interruption (with the tokens
    /// that session had used, for agents that count per session).
    pub(super) async fn continuation(
        &self,
        task: &Task,
        agent: AgentType,
        previous: Option<Execution>,
    ) -> Result<(String, Option<String>, Option<(u64, u64)>), CoreError> {
        // A session lives in the sandbox and agent home of the server that
        // ran it: another server starts the task afresh.
        let resumable = |p: &Execution| {
            p.agent == agent
                && !p.session_id.is_empty()
                && (p.server_id.is_empty() || p.server_id == self.config.server_id)
        };
        let previous = previous.filter(resumable);
        let prompt = if !task.pending_input.is_empty() {
            // An answer or review feedback: the next message of the session.
            match &previous {
                Some(_) => task.pending_input.clone(),
                None => format!("{}\n\n{}", task.instructions, task.pending_input),
            }
        } else if previous
            .as_ref()
            .is_some_and(|p| p.state == ExecutionState::Interrupted)
        {
            format!(
                "The previous run of this task was interrupted when the server restarted. \
                 Continue where you left off. The task was:\n\n{}",
                task.instructions
            )
        } else {
            return Ok((task.instructions.clone(), None, None));
        };
        let Some(previous) = previous else {
            return Ok((prompt, None, None));
        };
        let session_runs = self
            .tasks
            .store()
            .executions_of_session(task.id, &previous.session_id)
            .await?;
        let used = session_runs.iter().fold((0, 0), |(i, o), e| {
            (i + e.input_tokens, o + e.output_tokens)
        });
        Ok((prompt, Some(previous.session_id), Some(used)))
    }
}

/// Reads and removes the agent's question file, if it wrote one. A file
/// that does not parse still blocks the task, with its text as the question.
pub(super) async fn take_question(sandbox: &Path) -> Option<Question> {
    let path = sandbox.join(QUESTION_FILE);
    let text = tokio::fs::read_to_string(&path).await.ok()?;
    let _ = tokio::fs::remove_file(&path).await;
    if let Some(dir) = path.parent() {
        let _ = tokio::fs::remove_dir(dir).await;
    }
    let mut question = serde_json::from_str::<Question>(&text).unwrap_or_else(|_| Question {
        text: text.trim().to_string(),
        ..Question::default()
    });
    question.asked_at = now_millis();
    (!question.text.trim().is_empty()).then_some(question)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ask(contents: &str) -> (Option<Question>, bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(QUESTION_FILE);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        let question = take_question(dir.path()).await;
        (question, dir.path().join(".claudomator").exists())
    }

    #[tokio::test]
    async fn a_question_file_is_read_and_removed() {
        let (question, left) =
            ask(r#"{"question": "Which database?", "choices": ["sqlite", "pg"]}"#).await;
        let question = question.unwrap();
        assert_eq!(question.text, "Which database?");
        assert_eq!(question.choices, ["sqlite", "pg"]);
        assert!(question.asked_at > 0);
        assert!(!left, "the question file and its directory are removed");
    }

    #[tokio::test]
    async fn a_file_that_does_not_parse_is_the_question_itself() {
        let (question, _) = ask("  which one, a or b?\n").await;
        assert_eq!(question.unwrap().text, "which one, a or b?");
        let (question, _) = ask("   ").await;
        assert_eq!(question, None, "an empty file asks nothing");
    }

    #[tokio::test]
    async fn no_file_no_question() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(take_question(dir.path()).await, None);
    }
}
