//! Chooses the agent (and model) of an `auto` task. The local model is
//! asked first (JSON mode, a short answer, a short time budget) with the
//! task and the live state of every agent; its answer is checked against
//! what can start now. No model, no answer in time, or an answer off
//! schema: the deterministic rule decides (the first agent, in preference
//! order, that can start). Either way the choice says who made it and why.

use std::time::Duration;

use serde_json::Value;

use super::llm::{ChatMessage, ChatModel, ChatRequest, extract_json_object};
use super::model::{AgentChoice, AgentType, Task, UnixMillis};

/// The longest answer the classifier asks for, in tokens.
pub const CLASSIFY_MAX_TOKENS: u32 = 96;
/// How much of the instructions the model is shown.
const INSTRUCTIONS_SHOWN: usize = 2000;

/// One agent as the scheduler sees it now.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentState {
    pub agent: AgentType,
    /// Why it cannot run on this server (its CLI is missing), if so.
    pub unavailable: Option<String>,
    /// Attempts running now (not counting the task being classified).
    pub running: usize,
    pub max_concurrent: usize,
    /// Set aside after a rate limit or a spent quota, until then.
    pub limited_until: Option<UnixMillis>,
    /// Models it may be given, its default first; empty: the agent chooses.
    pub models: Vec<String>,
}

impl AgentState {
    /// Whether an attempt of this agent may start now.
    pub fn can_start(&self) -> bool {
        self.unavailable.is_none()
            && self.limited_until.is_none()
            && self.running < self.max_concurrent
    }

    /// One line for the model.
    fn describe(&self) -> String {
        let state = if let Some(why) = &self.unavailable {
            format!("not installed ({why})")
        } else if let Some(until) = self.limited_until {
            let until = std::time::UNIX_EPOCH + Duration::from_millis(until.max(0) as u64);
            format!(
                "rate limited until {}",
                humantime::format_rfc3339_seconds(until)
            )
        } else if self.running >= self.max_concurrent {
            format!("busy ({} of {} running)", self.running, self.max_concurrent)
        } else {
            format!("free ({} of {} running)", self.running, self.max_concurrent)
        };
        let models = if self.models.is_empty() {
            "its default".to_string()
        } else {
            self.models.join(", ")
        };
        format!("- {}: {state}; models: {models}", self.agent)
    }
}

/// The agent chosen, with who chose it and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Choice {
    pub agent: AgentType,
    /// Empty: the agent's default model.
    pub model: String,
    /// [`AgentChoice::Model`] or [`AgentChoice::Rule`].
    pub by: AgentChoice,
    pub reason: String,
}

/// The rule: the first agent of `order` that can start now.
pub fn rule(order: &[AgentType], states: &[AgentState], why: &str) -> Option<Choice> {
    let agent = order
        .iter()
        .copied()
        .find(|a| states.iter().any(|s| s.agent == *a && s.can_start()))?;
    let order: Vec<&str> = order.iter().map(|a| a.as_str()).collect();
    Some(Choice {
        agent,
        model: String::new(),
        by: AgentChoice::Rule,
        reason: format!("{why}; first free agent in the order {}", order.join(", ")),
    })
}

/// Chooses the agent of `task`: asks `model` when there is one and more
/// than one agent can start, within `timeout`; else, or when the answer
/// does not hold, the rule. None: no agent can start now.
pub async fn classify(
    model: Option<&dyn ChatModel>,
    task: &Task,
    states: &[AgentState],
    order: &[AgentType],
    timeout: Duration,
) -> Option<Choice> {
    let free: Vec<AgentType> = states
        .iter()
        .filter(|s| s.can_start())
        .map(|s| s.agent)
        .collect();
    let Some(model) = model else {
        return rule(order, states, "no local model is configured");
    };
    match free.as_slice() {
        [] => return None,
        [only] => return rule(order, states, &format!("only {only} can start now")),
        _ => {}
    }
    let request = classify_request(task, states, &free, timeout);
    // The client keeps to the budget; this also bounds any other ChatModel.
    let answer = match tokio::time::timeout(timeout, model.chat(request)).await {
        Ok(Ok(answer)) => answer.content,
        Ok(Err(e)) => return rule(order, states, &format!("the local model failed ({e})")),
        Err(_) => {
            let waited = humantime::format_duration(timeout);
            return rule(
                order,
                states,
                &format!("the local model did not answer within {waited}"),
            );
        }
    };
    match check_answer(&answer, states) {
        Ok(choice) => Some(choice),
        Err(why) => rule(order, states, &format!("the local model's answer {why}")),
    }
}

/// The question put to the model.
pub fn classify_request(
    task: &Task,
    states: &[AgentState],
    free: &[AgentType],
    timeout: Duration,
) -> ChatRequest {
    let instructions: String = task.instructions.chars().take(INSTRUCTIONS_SHOWN).collect();
    let agents: Vec<String> = states.iter().map(AgentState::describe).collect();
    let free: Vec<&str> = free.iter().map(|a| a.as_str()).collect();
    let system = "You route software tasks to coding agents. Answer with one JSON object and \
                  nothing else: {\"agent\": \"<agent>\", \"model\": \"<model or empty>\", \
                  \"reason\": \"<one short sentence>\"}.";
    let user = format!(
        "Task: {name}\n{instructions}\n\nAgents:\n{agents}\n\nChoose one of: {free}. The model \
         must be one listed for that agent, or empty for its default.",
        name = task.name,
        agents = agents.join("\n"),
        free = free.join(", "),
    );
    let mut request = ChatRequest::new(
        vec![ChatMessage::system(system), ChatMessage::user(user)],
        CLASSIFY_MAX_TOKENS,
    );
    request.json = true;
    request.temperature = Some(0.0);
    request.timeout = Some(timeout);
    request
}

/// Why the model's answer is not a choice (each reads after "the local
/// model's answer").
#[derive(Debug, thiserror::Error)]
pub enum ChoiceError {
    /// The answer, shortened.
    #[error("is not a JSON object: {0}")]
    NotJson(String),
    /// The `agent` field, shortened.
    #[error("names no known agent (`{0}`)")]
    UnknownAgent(String),
    #[error("names {0}, which cannot start now")]
    CannotStart(AgentType),
}

/// The model's answer, if it names an agent that can start now; a model
/// not listed for that agent is dropped (its default is used).
pub fn check_answer(answer: &str, states: &[AgentState]) -> Result<Choice, ChoiceError> {
    let value =
        extract_json_object(answer).ok_or_else(|| ChoiceError::NotJson(shorten(answer, 120)))?;
    let text = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    let named = text("agent");
    let agent: AgentType = named
        .parse()
        .map_err(|_| ChoiceError::UnknownAgent(shorten(&named, 40)))?;
    let state = states
        .iter()
        .find(|s| s.agent == agent && s.can_start())
        .ok_or(ChoiceError::CannotStart(agent))?;
    let mut reason = shorten(&text("reason"), 200);
    if reason.is_empty() {
        reason = "(no reason given)".into();
    }
    let mut model = text("model");
    if !model.is_empty() && !state.models.contains(&model) {
        reason.push_str(&format!(
            " [model `{}` is not offered for {agent}: its default is used]",
            shorten(&model, 40)
        ));
        model.clear();
    }
    Ok(Choice {
        agent,
        model,
        by: AgentChoice::Model,
        reason,
    })
}

fn shorten(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(agent: AgentType) -> AgentState {
        AgentState {
            agent,
            unavailable: None,
            running: 0,
            max_concurrent: 2,
            limited_until: None,
            models: Vec::new(),
        }
    }

    fn states() -> Vec<AgentState> {
        vec![
            AgentState {
                unavailable: Some("the `claude` CLI is not installed".into()),
                ..state(AgentType::Claude)
            },
            AgentState {
                limited_until: Some(1_900_000_000_000),
                ..state(AgentType::Codex)
            },
            AgentState {
                models: vec!["gemini-2.5-flash".into(), "gemini-2.5-pro".into()],
                ..state(AgentType::Gemini)
            },
            state(AgentType::Local),
        ]
    }

    const ORDER: [AgentType; 4] = [
        AgentType::Claude,
        AgentType::Codex,
        AgentType::Gemini,
        AgentType::Local,
    ];

    #[test]
    fn answers_are_checked_against_what_can_start() {
        let states = states();
        let ok = check_answer(
            "```json\n{\"agent\": \"gemini\", \"model\": \"gemini-2.5-pro\", \"reason\": \"big\"}\n```",
            &states,
        )
        .unwrap();
        assert_eq!(
            (ok.agent, ok.model.as_str(), ok.by),
            (AgentType::Gemini, "gemini-2.5-pro", AgentChoice::Model)
        );
        let unknown_model =
            check_answer(r#"{"agent": "Local", "model": "gpt-9"}"#, &states).unwrap();
        assert_eq!(unknown_model.agent, AgentType::Local);
        assert_eq!(unknown_model.model, "");
        assert!(
            unknown_model.reason.contains("gpt-9"),
            "{}",
            unknown_model.reason
        );
        for (answer, why) in [
            ("claude is best", "not a JSON object"),
            (r#"{"agent": "robot"}"#, "no known agent"),
            (r#"{"agent": 3}"#, "no known agent"),
            (r#"{"agent": "claude"}"#, "cannot start"),
            (r#"{"agent": "codex"}"#, "cannot start"),
            (r#"{"agent": "auto"}"#, "cannot start"),
            ("", "not a JSON object"),
        ] {
            let err = check_answer(answer, &states).unwrap_err().to_string();
            assert!(err.contains(why), "{answer}: {err}");
        }
    }

    #[test]
    fn the_rule_takes_the_first_agent_that_can_start() {
        let mut states = states();
        let choice = rule(&ORDER, &states, "no model").unwrap();
        assert_eq!(
            (choice.agent, choice.by),
            (AgentType::Gemini, AgentChoice::Rule)
        );
        assert!(choice.reason.starts_with("no model;"), "{}", choice.reason);
        states[2].running = 2;
        assert_eq!(rule(&ORDER, &states, "x").unwrap().agent, AgentType::Local);
        states[3].running = 2;
        assert_eq!(rule(&ORDER, &states, "x"), None);
    }

    #[test]
    fn the_question_names_the_live_state_and_the_choices() {
        let task_spec = crate::core::model::SubmitRequest {
            spec: crate::core::model::TaskSpec {
                name: "fix the build".into(),
                instructions: "The build fails on CI.".into(),
                project: "demo".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let rules = crate::core::validate::TaskRules {
            projects: vec!["demo".into()],
            max_instructions_bytes: 1024,
            default_timeout: Duration::from_secs(60),
            max_timeout: Duration::from_secs(600),
            default_max_attempts: 1,
            max_attempts_limit: 3,
            ..Default::default()
        };
        let task = crate::core::validate::validate(&task_spec, &rules).unwrap();
        let request = classify_request(
            &task,
            &states(),
            &[AgentType::Gemini, AgentType::Local],
            Duration::from_secs(3),
        );
        assert!(request.json);
        assert_eq!(request.max_tokens, CLASSIFY_MAX_TOKENS);
        assert_eq!(request.timeout, Some(Duration::from_secs(3)));
        let question = &request.messages[1].content;
        for expected in [
            "fix the build",
            "The build fails on CI.",
            "claude: not installed",
            "codex: rate limited until 2030-",
            "gemini: free (0 of 2 running); models: gemini-2.5-flash, gemini-2.5-pro",
            "Choose one of: gemini, local.",
        ] {
            assert!(question.contains(expected), "{expected} not in {question}");
        }
    }
}
