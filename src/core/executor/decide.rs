//! What an attempt's outcome means for its execution and its task: a pure
//! function of the runner's outcome, the task and what the attempt saw
//! (shutdown, timeout, a resumed session, a question left). Side effects
//! come back as data in the [`Decision`] (an agent to set aside, a line for
//! the log) for the attempt to perform.

use std::time::{Duration, UNIX_EPOCH};

use crate::core::model::{AgentType, ExecutionState, Question, Task, TaskState, UnixMillis};
use crate::core::runner::{RunOutcome, Verdict};

/// What the attempt knew besides the outcome.
#[derive(Clone, Debug)]
pub(super) struct DecideContext {
    /// The agent that ran the attempt.
    pub agent: AgentType,
    pub now: UnixMillis,
    /// The server is stopping: a stopped agent is requeued.
    pub shutting_down: bool,
    /// The attempt's timer fired: a stopped agent timed out.
    pub timed_out: bool,
    /// The session the attempt resumed, if it resumed one.
    pub resumed: Option<String>,
    /// The question the agent left in its sandbox, if any.
    pub question: Option<Question>,
    /// First rate-limit backoff; doubles per attempt up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How long a spent quota sets the agent aside when it says no reset time.
    pub usage_limit_cooldown: Duration,
}

/// The next states of the execution and the task, and what to do about it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Decision {
    pub execution_state: ExecutionState,
    pub task_state: TaskState,
    pub reason: String,
    /// A requeued task is not started before this time.
    pub run_after: Option<UnixMillis>,
    /// The agent's question, when the task blocks on one.
    pub question: Option<Question>,
    /// An agent to set aside on every server, and for how long.
    pub set_aside: Option<(AgentType, Duration)>,
    /// A line for the execution log, said before the final one.
    pub note: Option<String>,
}

impl Decision {
    fn new(execution_state: ExecutionState, task_state: TaskState, reason: String) -> Decision {
        Decision {
            execution_state,
            task_state,
            reason,
            run_after: None,
            question: None,
            set_aside: None,
            note: None,
        }
    }

    /// The attempt failed before or after the agent (no sandbox, no
    /// delivery): the execution and the task fail with `reason`.
    pub fn failed(reason: String) -> Decision {
        Decision::new(ExecutionState::Failed, TaskState::Failed, reason)
    }
}

/// Decides the execution's and the task's next states from an outcome.
pub(super) fn decide(outcome: &RunOutcome, task: &Task, ctx: &DecideContext) -> Decision {
    let mut decision = from_verdict(&outcome.verdict, task, ctx);
    // A session that cannot be resumed (its transcript cut short by a
    // crash, or gone) is not the task's failure: the next attempt, seeing
    // a failed run before it, starts afresh.
    if let (Some(session), Verdict::Failed(reason)) = (&ctx.resumed, &outcome.verdict)
        && task.attempts < task.max_attempts
    {
        decision.task_state = TaskState::Queued;
        decision.reason =
            format!("resuming session {session} failed ({reason}); the next attempt starts afresh");
        decision.note = Some(decision.reason.clone());
    } else if ctx.resumed.is_some()
        && !task.pending_input.is_empty()
        && decision.task_state.is_failure()
    {
        // Said, not lost: the answer or feedback never reached the agent.
        decision.reason = format!(
            "{}; the answer or feedback it was resumed with did not reach the agent",
            decision.reason
        );
    }
    if let Some(question) = &ctx.question
        && decision.execution_state == ExecutionState::Succeeded
    {
        let mut blocked = Decision::new(
            ExecutionState::Blocked,
            TaskState::Blocked,
            "waiting for an answer".into(),
        );
        blocked.question = Some(question.clone());
        return blocked;
    }
    decision
}

fn from_verdict(verdict: &Verdict, task: &Task, ctx: &DecideContext) -> Decision {
    let agent = ctx.agent;
    match verdict {
        Verdict::Stopped if ctx.shutting_down => Decision::new(
            ExecutionState::Interrupted,
            TaskState::Queued,
            "the server shut down mid-run; requeued".into(),
        ),
        Verdict::Stopped if ctx.timed_out => Decision::new(
            ExecutionState::TimedOut,
            TaskState::TimedOut,
            format!(
                "timed out after {}",
                humantime::format_duration(task.timeout)
            ),
        ),
        Verdict::Stopped => Decision::new(
            ExecutionState::Cancelled,
            TaskState::Cancelled,
            "cancelled".into(),
        ),
        Verdict::Succeeded if task.review_required => Decision::new(
            ExecutionState::Succeeded,
            TaskState::Ready,
            "waiting for review".into(),
        ),
        Verdict::Succeeded => Decision::new(
            ExecutionState::Succeeded,
            TaskState::Completed,
            String::new(),
        ),
        Verdict::Failed(reason) => {
            Decision::new(ExecutionState::Failed, TaskState::Failed, reason.clone())
        }
        Verdict::BudgetExceeded(reason) => Decision::new(
            ExecutionState::BudgetExceeded,
            TaskState::BudgetExceeded,
            reason.clone(),
        ),
        Verdict::UsageLimited { message, resets_at } => {
            let now = ctx.now;
            let cooldown = resets_at
                .filter(|at| *at > now)
                .map(|at| Duration::from_millis((at - now) as u64))
                .unwrap_or(ctx.usage_limit_cooldown);
            let until = humantime::format_rfc3339_seconds(
                UNIX_EPOCH + Duration::from_millis(now.max(0) as u64) + cooldown,
            );
            let mut decision = if task.attempts < task.max_attempts {
                let mut requeued = Decision::new(
                    ExecutionState::RateLimited,
                    TaskState::Queued,
                    format!("usage limit reached ({message}); {agent} set aside until {until}"),
                );
                // An `auto` task may go to another agent at once; one that
                // named this agent waits for it.
                requeued.run_after = (task.agent.agent_type != AgentType::Auto)
                    .then(|| now + cooldown.as_millis() as i64);
                requeued
            } else {
                Decision::new(
                    ExecutionState::RateLimited,
                    TaskState::Failed,
                    format!(
                        "usage limit reached ({message}); gave up after {} attempts",
                        task.attempts
                    ),
                )
            };
            decision.set_aside = Some((agent, cooldown));
            decision
        }
        Verdict::RateLimited {
            message,
            retry_after,
        } => {
            let backoff = backoff(ctx.retry_base, ctx.retry_max, task.attempts)
                .max(retry_after.unwrap_or_default());
            let mut decision = if task.attempts < task.max_attempts {
                let mut requeued = Decision::new(
                    ExecutionState::RateLimited,
                    TaskState::Queued,
                    format!(
                        "rate limited ({message}); retrying in {}",
                        humantime::format_duration(Duration::from_millis(
                            backoff.as_millis() as u64
                        ))
                    ),
                );
                requeued.run_after = Some(ctx.now + backoff.as_millis() as i64);
                requeued
            } else {
                Decision::new(
                    ExecutionState::RateLimited,
                    TaskState::Failed,
                    format!(
                        "rate limited ({message}); gave up after {} attempts",
                        task.attempts
                    ),
                )
            };
            decision.set_aside = Some((agent, backoff));
            decision
        }
    }
}

/// Exponential backoff: base × 2^(attempt-1), capped at `max`.
fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::{AgentSpec, SubmitRequest, TaskSpec};
    use crate::core::validate::{TaskRules, validate};

    const NOW: UnixMillis = 1_800_000_000_000;

    fn task(agent: &str, attempts: u32, max_attempts: u32) -> Task {
        let rules = TaskRules {
            projects: vec!["p".into()],
            ..TaskRules::default()
        };
        let request = SubmitRequest {
            spec: TaskSpec {
                name: "t".into(),
                instructions: "do it".into(),
                project: "p".into(),
                agent: AgentSpec {
                    agent_type: agent.into(),
                    ..AgentSpec::default()
                },
                timeout: "10m".into(),
                max_attempts,
                ..TaskSpec::default()
            },
            ..SubmitRequest::default()
        };
        let mut task = validate(&request, &rules).unwrap();
        task.attempts = attempts;
        task
    }

    fn ctx() -> DecideContext {
        DecideContext {
            agent: AgentType::Claude,
            now: NOW,
            shutting_down: false,
            timed_out: false,
            resumed: None,
            question: None,
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(60),
            usage_limit_cooldown: Duration::from_secs(3600),
        }
    }

    fn outcome(verdict: Verdict) -> RunOutcome {
        RunOutcome::new(verdict)
    }

    fn states(d: &Decision) -> (ExecutionState, TaskState) {
        (d.execution_state, d.task_state)
    }

    #[test]
    fn a_stop_is_a_requeue_at_shutdown_else_a_timeout_else_a_cancel() {
        let t = task("claude", 1, 3);
        let stopped = outcome(Verdict::Stopped);
        // Shutdown wins over the timer: the work is not the task's fault.
        let both = DecideContext {
            shutting_down: true,
            timed_out: true,
            ..ctx()
        };
        let d = decide(&stopped, &t, &both);
        assert_eq!(states(&d), (ExecutionState::Interrupted, TaskState::Queued));
        assert_eq!(d.reason, "the server shut down mid-run; requeued");

        let timed_out = DecideContext {
            timed_out: true,
            ..ctx()
        };
        let d = decide(&stopped, &t, &timed_out);
        assert_eq!(states(&d), (ExecutionState::TimedOut, TaskState::TimedOut));
        assert_eq!(d.reason, "timed out after 10m");

        let d = decide(&stopped, &t, &ctx());
        assert_eq!(
            states(&d),
            (ExecutionState::Cancelled, TaskState::Cancelled)
        );
        assert_eq!(d.set_aside, None);
    }

    #[test]
    fn success_completes_or_waits_for_review() {
        let mut t = task("claude", 1, 3);
        let d = decide(&outcome(Verdict::Succeeded), &t, &ctx());
        assert_eq!(
            states(&d),
            (ExecutionState::Succeeded, TaskState::Completed)
        );
        assert_eq!(d.reason, "");
        t.review_required = true;
        let d = decide(&outcome(Verdict::Succeeded), &t, &ctx());
        assert_eq!(states(&d), (ExecutionState::Succeeded, TaskState::Ready));
        assert_eq!(d.reason, "waiting for review");
    }

    #[test]
    fn failure_and_budget_keep_the_runners_reason() {
        let t = task("claude", 1, 3);
        let d = decide(&outcome(Verdict::Failed("exit 2".into())), &t, &ctx());
        assert_eq!(states(&d), (ExecutionState::Failed, TaskState::Failed));
        assert_eq!(d.reason, "exit 2");
        let d = decide(
            &outcome(Verdict::BudgetExceeded("spent $1.00".into())),
            &t,
            &ctx(),
        );
        assert_eq!(
            states(&d),
            (ExecutionState::BudgetExceeded, TaskState::BudgetExceeded)
        );
        assert_eq!(d.reason, "spent $1.00");
        assert_eq!(d.run_after, None);
    }

    fn usage_limited(resets_at: Option<UnixMillis>) -> RunOutcome {
        outcome(Verdict::UsageLimited {
            message: "quota".into(),
            resets_at,
        })
    }

    #[test]
    fn a_spent_quota_with_a_reset_time_sets_the_agent_aside_until_then() {
        let t = task("claude", 1, 3);
        let d = decide(&usage_limited(Some(NOW + 120_000)), &t, &ctx());
        assert_eq!(states(&d), (ExecutionState::RateLimited, TaskState::Queued));
        assert_eq!(
            d.set_aside,
            Some((AgentType::Claude, Duration::from_secs(120)))
        );
        assert_eq!(d.run_after, Some(NOW + 120_000));
        assert!(
            d.reason
                .starts_with("usage limit reached (quota); claude set aside until 20"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn a_spent_quota_without_a_reset_time_uses_the_cooldown() {
        let t = task("claude", 1, 3);
        // A reset time already past counts as none.
        for resets_at in [None, Some(NOW - 1)] {
            let d = decide(&usage_limited(resets_at), &t, &ctx());
            assert_eq!(
                d.set_aside,
                Some((AgentType::Claude, Duration::from_secs(3600)))
            );
            assert_eq!(d.run_after, Some(NOW + 3_600_000));
        }
    }

    #[test]
    fn a_spent_quota_on_the_last_attempt_fails_but_still_sets_the_agent_aside() {
        let t = task("claude", 3, 3);
        let d = decide(&usage_limited(None), &t, &ctx());
        assert_eq!(states(&d), (ExecutionState::RateLimited, TaskState::Failed));
        assert_eq!(
            d.reason,
            "usage limit reached (quota); gave up after 3 attempts"
        );
        assert_eq!(d.run_after, None);
        assert!(d.set_aside.is_some());
    }

    #[test]
    fn an_auto_task_over_quota_may_go_to_another_agent_at_once() {
        let t = task("auto", 1, 3);
        let d = decide(&usage_limited(None), &t, &ctx());
        assert_eq!(d.task_state, TaskState::Queued);
        assert_eq!(d.run_after, None, "auto: no wait");
        assert_eq!(
            d.set_aside,
            Some((AgentType::Claude, Duration::from_secs(3600))),
            "the agent that ran is set aside"
        );
    }

    fn rate_limited(retry_after: Option<Duration>) -> RunOutcome {
        outcome(Verdict::RateLimited {
            message: "429".into(),
            retry_after,
        })
    }

    #[test]
    fn a_rate_limit_backs_off_exponentially_up_to_the_cap() {
        for (attempts, seconds) in [(1, 10), (2, 20), (3, 40), (4, 60), (9, 60)] {
            let t = task("claude", attempts, 10);
            let d = decide(&rate_limited(None), &t, &ctx());
            assert_eq!(states(&d), (ExecutionState::RateLimited, TaskState::Queued));
            assert_eq!(
                d.run_after,
                Some(NOW + seconds * 1000),
                "attempt {attempts}"
            );
            assert_eq!(
                d.set_aside,
                Some((AgentType::Claude, Duration::from_secs(seconds as u64)))
            );
        }
    }

    #[test]
    fn a_longer_retry_after_wins_over_the_backoff() {
        let t = task("gemini", 1, 3);
        let ctx = DecideContext {
            agent: AgentType::Gemini,
            ..ctx()
        };
        let d = decide(&rate_limited(Some(Duration::from_secs(90))), &t, &ctx);
        assert_eq!(d.run_after, Some(NOW + 90_000));
        assert_eq!(d.reason, "rate limited (429); retrying in 1m 30s");
        assert_eq!(
            d.set_aside,
            Some((AgentType::Gemini, Duration::from_secs(90)))
        );
        // A shorter one does not shorten the backoff.
        let d = decide(&rate_limited(Some(Duration::from_secs(1))), &t, &ctx);
        assert_eq!(d.run_after, Some(NOW + 10_000));
    }

    #[test]
    fn a_rate_limit_on_the_last_attempt_fails() {
        let t = task("claude", 3, 3);
        let d = decide(&rate_limited(None), &t, &ctx());
        assert_eq!(states(&d), (ExecutionState::RateLimited, TaskState::Failed));
        assert_eq!(d.reason, "rate limited (429); gave up after 3 attempts");
        assert_eq!(d.run_after, None);
    }

    #[test]
    fn a_question_after_a_successful_turn_blocks_the_task() {
        let mut t = task("claude", 1, 3);
        t.review_required = true;
        let question = Question {
            text: "which one?".into(),
            ..Question::default()
        };
        let asked = DecideContext {
            question: Some(question.clone()),
            ..ctx()
        };
        let d = decide(&outcome(Verdict::Succeeded), &t, &asked);
        assert_eq!(states(&d), (ExecutionState::Blocked, TaskState::Blocked));
        assert_eq!(d.question, Some(question));
        assert_eq!(d.reason, "waiting for an answer");
        // A question from a run that did not succeed is not asked.
        let d = decide(&outcome(Verdict::Failed("boom".into())), &t, &asked);
        assert_eq!(states(&d), (ExecutionState::Failed, TaskState::Failed));
        assert_eq!(d.question, None);
    }

    #[test]
    fn a_failed_resume_requeues_to_start_afresh_while_attempts_remain() {
        let resumed = DecideContext {
            resumed: Some("s-1".into()),
            ..ctx()
        };
        let failed = outcome(Verdict::Failed("no such session".into()));
        let d = decide(&failed, &task("claude", 1, 3), &resumed);
        assert_eq!(states(&d), (ExecutionState::Failed, TaskState::Queued));
        assert_eq!(
            d.reason,
            "resuming session s-1 failed (no such session); the next attempt starts afresh"
        );
        assert_eq!(d.note.as_deref(), Some(d.reason.as_str()));
        // No attempts left: the failure stands.
        let d = decide(&failed, &task("claude", 3, 3), &resumed);
        assert_eq!(states(&d), (ExecutionState::Failed, TaskState::Failed));
        assert_eq!(d.note, None);
        // Not resumed: a plain failure.
        let d = decide(&failed, &task("claude", 1, 3), &ctx());
        assert_eq!(d.task_state, TaskState::Failed);
    }
}
