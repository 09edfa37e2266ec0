//! The JSON body of a notification: the event, the task as it is now, its
//! latest execution and its pull request when there are some.

use serde::Serialize;

use crate::core::events::TaskEvent;
use crate::core::model::{Execution, Question, Task, UnixMillis};

/// What is POSTed. `sent_at` changes with every attempt (and so does the
/// signature); `delivery_id` does not, so a receiver can drop repeats, and
/// reject old replays by `sent_at`.
#[derive(Clone, Debug, Serialize)]
pub struct Notification {
    /// `task.<state>`, e.g. `task.completed`.
    pub event: String,
    pub delivery_id: String,
    /// When this attempt was sent, Unix milliseconds.
    pub sent_at: UnixMillis,
    /// When the task changed state, Unix milliseconds.
    pub occurred_at: UnixMillis,
    pub task: TaskPart,
    /// The task's latest execution, if it has run.
    pub execution: Option<ExecutionPart>,
    /// The task's pull request, if it opened one.
    pub pull_request: Option<PullPart>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PullPart {
    /// `owner/name`.
    pub repository: String,
    pub number: u64,
    pub url: String,
    /// `open`, `closed` or `merged`.
    pub state: String,
    pub head_ref: String,
    pub head_sha: String,
    pub automatic_resumes: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct TaskPart {
    pub id: String,
    pub name: String,
    pub project: String,
    pub state: String,
    pub previous_state: String,
    /// Why it is in its state (a failure, a cancel reason), or empty.
    pub reason: String,
    /// The agent the task asked for (`auto`, `claude`, …).
    pub agent: String,
    pub model: String,
    pub tags: Vec<String>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub review_required: bool,
    pub summary: String,
    /// The agent's question, when the task blocked on one.
    pub question: Option<Question>,
    pub created_at: UnixMillis,
}

#[derive(Clone, Debug, Serialize)]
pub struct ExecutionPart {
    pub id: String,
    pub attempt: u32,
    pub state: String,
    pub agent: String,
    pub model: String,
    pub started_at: UnixMillis,
    pub ended_at: Option<UnixMillis>,
    pub exit_code: Option<i32>,
    pub error: String,
    pub cost_usd: f64,
    pub cost_estimated: bool,
    /// The cost is not known (no price for the model, or no usage reported
    /// before the agent stopped): `cost_usd` is not the cost.
    pub cost_unknown: bool,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub turns: u32,
    pub summary: String,
    pub changed_files: Vec<String>,
    pub commits: Vec<String>,
}

impl Notification {
    /// The notification of `event`, with what the store knows of the task
    /// (`None`: it could not be read; the event alone is sent).
    pub fn new(event: &TaskEvent, task: Option<&Task>, execution: Option<&Execution>) -> Self {
        let question = event
            .question
            .clone()
            .or_else(|| task.and_then(|t| t.question.clone()))
            .filter(|_| event.to == crate::core::model::TaskState::Blocked);
        let part = TaskPart {
            id: event.task_id.to_string(),
            name: task.map(|t| t.name.clone()).unwrap_or_default(),
            project: task.map(|t| t.project.clone()).unwrap_or_default(),
            state: event.to.as_str().to_string(),
            previous_state: event.from.as_str().to_string(),
            reason: event.reason.clone(),
            agent: task
                .map(|t| t.agent.agent_type.as_str().to_string())
                .unwrap_or_default(),
            model: task.map(|t| t.agent.model.clone()).unwrap_or_default(),
            tags: task.map(|t| t.tags.clone()).unwrap_or_default(),
            attempts: task.map(|t| t.attempts).unwrap_or_default(),
            max_attempts: task.map(|t| t.max_attempts).unwrap_or_default(),
            review_required: task.is_some_and(|t| t.review_required),
            summary: task.map(|t| t.summary.clone()).unwrap_or_default(),
            question,
            created_at: task.map(|t| t.created_at).unwrap_or_default(),
        };
        Notification {
            event: format!("task.{}", event.to),
            delivery_id: crate::core::model::Id::new().to_string(),
            sent_at: 0,
            occurred_at: event.at,
            task: part,
            execution: execution.map(ExecutionPart::from),
            pull_request: None,
        }
    }

    /// With the task's pull request (an unfinished opening is left out).
    pub fn with_pull(mut self, pull: Option<&crate::core::pulls::PullRecord>) -> Self {
        self.pull_request = pull.filter(|p| !p.is_opening()).map(|p| PullPart {
            repository: p.repository.clone(),
            number: p.number,
            url: p.url.clone(),
            state: p.state.as_str().to_string(),
            head_ref: p.head_ref.clone(),
            head_sha: p.head_sha.clone(),
            automatic_resumes: p.resumes,
        });
        self
    }
}

impl From<&Execution> for ExecutionPart {
    fn from(e: &Execution) -> Self {
        ExecutionPart {
            id: e.id.to_string(),
            attempt: e.attempt,
            state: e.state.as_str().to_string(),
            agent: e.agent.as_str().to_string(),
            model: e.model.clone(),
            started_at: e.started_at,
            ended_at: e.ended_at,
            exit_code: e.exit_code,
            error: e.error.clone(),
            cost_usd: e.cost_usd,
            cost_estimated: e.cost_estimated,
            cost_unknown: e.cost_unknown,
            input_tokens: e.input_tokens,
            output_tokens: e.output_tokens,
            turns: e.turns,
            summary: e.summary.clone(),
            changed_files: e.changed_files.clone(),
            commits: e.commits.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::codehost::PullState;
    use crate::core::model::{Id, TaskState};
    use crate::core::pulls::PullRecord;

    #[test]
    fn a_notification_carries_the_pull_request_once_it_is_opened() {
        let event = TaskEvent {
            task_id: Id::new(),
            from: TaskState::Running,
            to: TaskState::Ready,
            reason: "waiting for review".into(),
            at: 1,
            question: None,
        };
        let mut pull = PullRecord {
            task_id: event.task_id,
            repository: "octo/app".into(),
            number: 0,
            url: String::new(),
            state: PullState::Open,
            head_ref: format!("claudomator/{}", event.task_id),
            head_sha: String::new(),
            base_ref: "main".into(),
            resumes: 0,
            opened_at: 1,
            updated_at: 1,
        };
        let opening = Notification::new(&event, None, None).with_pull(Some(&pull));
        assert!(
            opening.pull_request.is_none(),
            "not while it is being opened"
        );
        pull.number = 7;
        pull.url = "https://github.com/octo/app/pull/7".into();
        let json =
            serde_json::to_value(Notification::new(&event, None, None).with_pull(Some(&pull)))
                .unwrap();
        assert_eq!(json["pull_request"]["number"], 7);
        assert_eq!(
            json["pull_request"]["url"],
            "https://github.com/octo/app/pull/7"
        );
        assert_eq!(json["pull_request"]["state"], "open");
    }
}
