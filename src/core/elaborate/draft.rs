//! What Elaborate asks a model, and how an answer becomes a spec: the prompt,
//! the lenient reading of the answer (any JSON object in it, loose field
//! names and types), the repairs that need no judgement (an agent this server
//! cannot run, a model of another vendor), and the check by `validate`, the
//! same one `SubmitTask` makes. Also the template used when no model answers.

use std::collections::HashMap;

use serde_json::Value;

use crate::core::error::CoreError;
use crate::core::llm::extract_json_object;
use crate::core::model::{AgentSpec, AgentType, SubmitRequest, TaskSpec};
use crate::core::validate::{TaskRules, validate};

/// The longest name kept from an answer; longer ones are cut.
const NAME_CHARS: usize = 80;
/// Tags kept from an answer, at most.
const MAX_TAGS: usize = 8;
const TAG_CHARS: usize = 64;

/// Why a model's answer is not a usable spec (each reads after the path's
/// name: "claude: answered no instructions").
#[derive(Debug, thiserror::Error)]
pub(super) enum AnswerError {
    /// The answer, shortened to a line.
    #[error("answered no JSON object ({0})")]
    NoJson(String),
    #[error("answered no instructions")]
    NoInstructions,
    #[error("answered no acceptance line")]
    NoAcceptance,
    /// Why the agent's name was not one.
    #[error("answered an unknown agent: {0}")]
    UnknownAgent(String),
    #[error("answered a budget that is no number: `{0}`")]
    BudgetNotANumber(String),
    #[error("answered a timeout of {0} minutes")]
    TimeoutNotWholeMinutes(f64),
    #[error("answered a timeout that is no number: `{0}`")]
    TimeoutNotANumber(String),
    /// `SubmitTask` would refuse the spec.
    #[error("answered an invalid spec: {0}")]
    Invalid(CoreError),
}

/// A field that should hold a number and does not: its text.
struct NotANumber(String);

/// What a draft is checked and repaired against.
pub(super) struct Context<'a> {
    pub project: &'a str,
    /// Agents that can run tasks on this server now (never `auto`).
    pub available: &'a [AgentType],
    /// The agent the caller asked for, if any.
    pub agent: Option<AgentType>,
    /// The model each agent uses when a task names none.
    pub models: &'a HashMap<AgentType, String>,
    pub rules: &'a TaskRules,
}

/// The instructions for the model (system) and the request (user).
pub(super) fn prompt(text: &str, ctx: &Context) -> (String, String) {
    let agents = match ctx.agent {
        Some(agent) => format!("\"{agent}\" (the user chose it)"),
        None => {
            let mut names = vec!["\"auto\" (let the server pick)".to_string()];
            names.extend(ctx.available.iter().map(|a| format!("\"{a}\"")));
            names.join(", ")
        }
    };
    let max_minutes = (ctx.rules.max_timeout.as_secs() / 60).clamp(5, 24 * 60);
    let system = format!(
        "You write task specs for an AI coding agent that works in a clone of a git repository.\n\
         Turn the user's request into one JSON object and answer with that object only, no prose:\n\
         {{\n\
         \x20 \"name\": \"a short title, at most {NAME_CHARS} characters\",\n\
         \x20 \"instructions\": \"what the agent must do: concrete steps; name files, commands or tests when the request does\",\n\
         \x20 \"acceptance\": \"one sentence: how to check the work is done (a test that passes, a command's output, a visible result)\",\n\
         \x20 \"agent\": one of {agents},\n\
         \x20 \"model\": \"\" for the agent's default model,\n\
         \x20 \"allowed_tools\": [] for the agent's default tools,\n\
         \x20 \"max_budget_usd\": a number of US dollars the run may spend, 0 for no cap,\n\
         \x20 \"timeout_minutes\": a whole number from 5 to {max_minutes},\n\
         \x20 \"priority\": \"low\", \"normal\" or \"high\",\n\
         \x20 \"tags\": one to four short lowercase words\n\
         }}\n\
         Agents: claude is Claude Code, gemini is the Gemini CLI, codex is OpenAI Codex, \
         local is a small local model for simple text-only work."
    );
    let user = format!("Project: {}\nRequest: {text}", ctx.project);
    (system, user)
}

/// Both parts of the prompt as one message, for agents that take one.
pub(super) fn one_prompt(text: &str, ctx: &Context) -> String {
    let (system, user) = prompt(text, ctx);
    format!("{system}\n\n{user}")
}

/// A spec from a model's answer, with notes on what was repaired; or why
/// the answer is not a usable spec.
pub(super) fn spec_from_answer(
    answer: &str,
    ctx: &Context,
) -> Result<(TaskSpec, Vec<String>), AnswerError> {
    let object = extract_json_object(answer)
        .ok_or_else(|| AnswerError::NoJson(crate::runners::one_line(answer.trim())))?;
    let fields = spec_fields(&object);
    let mut notes = Vec::new();

    let instructions = text_field(fields, &["instructions", "description", "task", "steps"])
        .filter(|s| !s.trim().is_empty())
        .ok_or(AnswerError::NoInstructions)?;
    let acceptance = text_field(
        fields,
        &[
            "acceptance",
            "acceptance_criteria",
            "acceptance_line",
            "done_when",
        ],
    )
    .filter(|s| !s.trim().is_empty());
    let instructions = match acceptance {
        _ if has_acceptance_line(&instructions) => instructions.trim().to_string(),
        Some(acceptance) => format!(
            "{}\n\nAcceptance: {}",
            instructions.trim(),
            acceptance.trim()
        ),
        None => return Err(AnswerError::NoAcceptance),
    };

    let name = text_field(fields, &["name", "title"])
        .map(|n| n.lines().next().unwrap_or_default().trim().to_string())
        .map(|n| n.chars().take(NAME_CHARS).collect())
        .unwrap_or_default();

    let agent_value = fields.get("agent").or_else(|| fields.get("agent_type"));
    let (agent_name, mut model) = match agent_value {
        Some(Value::Object(agent)) => (
            text_field(agent, &["type", "name", "agent"]).unwrap_or_default(),
            text_field(agent, &["model"]).unwrap_or_default(),
        ),
        Some(value) => (scalar_text(value).unwrap_or_default(), String::new()),
        None => (String::new(), String::new()),
    };
    if model.is_empty() {
        model = text_field(fields, &["model"]).unwrap_or_default();
    }
    let agent = choose_agent(&agent_name, ctx, &mut notes)?;
    let model = choose_model(agent, model.trim(), ctx, &mut notes);

    let allowed_tools = list_field(fields, &["allowed_tools", "tools"]);
    let max_budget_usd = match number_field(fields, &["max_budget_usd", "budget_usd", "budget"]) {
        Some(Ok(usd)) => usd,
        Some(Err(NotANumber(text))) => return Err(AnswerError::BudgetNotANumber(text)),
        None => 0.0,
    };
    let timeout = match number_field(fields, &["timeout_minutes", "timeout_min"]) {
        Some(Ok(minutes)) if minutes.fract() == 0.0 && minutes > 0.0 => format!("{minutes}m"),
        Some(Ok(minutes)) => return Err(AnswerError::TimeoutNotWholeMinutes(minutes)),
        Some(Err(NotANumber(text))) => return Err(AnswerError::TimeoutNotANumber(text)),
        // A bare number in `timeout` is read as minutes, like timeout_minutes.
        None => match fields.get("timeout") {
            Some(Value::Number(n)) => format!("{n}m"),
            Some(value) => scalar_text(value).unwrap_or_default(),
            None => String::new(),
        },
    };
    let priority = text_field(fields, &["priority"])
        .map(|p| match p.trim().to_ascii_lowercase().as_str() {
            "medium" | "normal" | "" => "normal".to_string(),
            "urgent" | "critical" => "high".to_string(),
            other => other.to_string(),
        })
        .unwrap_or_default();
    let tags = list_field(fields, &["tags", "labels"])
        .iter()
        .map(|t| normalize_tag(t))
        .filter(|t| !t.is_empty())
        .take(MAX_TAGS)
        .collect();

    let spec = TaskSpec {
        name,
        instructions,
        project: ctx.project.to_string(),
        agent: AgentSpec {
            agent_type: agent.as_str().to_string(),
            model,
            allowed_tools,
            max_budget_usd,
            max_turns: 0,
        },
        timeout,
        priority,
        tags,
        ..TaskSpec::default()
    };
    Ok((checked(spec, ctx.rules)?, notes))
}

/// The spec used when no model gave one: the request itself, an acceptance
/// line, the chosen agent (or auto) and the server's defaults.
pub(super) fn template(text: &str, ctx: &Context) -> Result<TaskSpec, AnswerError> {
    let spec = TaskSpec {
        instructions: format!(
            "{text}\n\nAcceptance: the request above is done, and the project's existing tests and checks still pass."
        ),
        project: ctx.project.to_string(),
        agent: AgentSpec {
            agent_type: ctx.agent.unwrap_or(AgentType::Auto).as_str().to_string(),
            model: ctx
                .agent
                .and_then(|a| ctx.models.get(&a).cloned())
                .unwrap_or_default(),
            ..AgentSpec::default()
        },
        ..TaskSpec::default()
    };
    checked(spec, ctx.rules)
}

/// The spec as `SubmitTask` would store it (a derived name, the timeout
/// written out, duplicates dropped), or the field `SubmitTask` would refuse.
fn checked(spec: TaskSpec, rules: &TaskRules) -> Result<TaskSpec, AnswerError> {
    let request = SubmitRequest {
        spec,
        ..SubmitRequest::default()
    };
    let task = validate(&request, rules).map_err(AnswerError::Invalid)?;
    Ok(TaskSpec {
        // The server's default at submit time, not today's value.
        max_attempts: request.spec.max_attempts,
        ..task.spec()
    })
}

/// The agent: the caller's choice always wins; an agent this server cannot
/// run now becomes `auto`; an unknown name is an invalid answer.
fn choose_agent(
    name: &str,
    ctx: &Context,
    notes: &mut Vec<String>,
) -> Result<AgentType, AnswerError> {
    let answered = if name.trim().is_empty() {
        AgentType::Auto
    } else {
        name.parse::<AgentType>()
            .map_err(AnswerError::UnknownAgent)?
    };
    if let Some(wanted) = ctx.agent {
        return Ok(wanted);
    }
    if answered != AgentType::Auto && !ctx.available.contains(&answered) {
        notes.push(format!(
            "agent `{answered}` cannot run on this server now; the spec says auto"
        ));
        return Ok(AgentType::Auto);
    }
    Ok(answered)
}

/// The model: kept when it is the agent's configured model or one of that
/// agent's vendor; otherwise the agent's default (models are easy to invent).
fn choose_model(agent: AgentType, model: &str, ctx: &Context, notes: &mut Vec<String>) -> String {
    let configured = ctx.models.get(&agent).cloned().unwrap_or_default();
    if model.is_empty() || model == configured {
        return configured;
    }
    let lower = model.to_ascii_lowercase();
    let fits = match agent {
        AgentType::Claude => {
            lower.starts_with("claude-") || ["opus", "sonnet", "haiku"].contains(&lower.as_str())
        }
        AgentType::Gemini => lower.starts_with("gemini-"),
        AgentType::Codex => lower.starts_with("gpt-") || lower.starts_with("codex"),
        AgentType::Local | AgentType::Auto => false,
    };
    if fits && !model.contains(char::is_whitespace) {
        return model.to_string();
    }
    notes.push(format!(
        "model `{}` is not a {agent} model; the spec uses {}",
        crate::runners::one_line(model),
        if configured.is_empty() {
            "the agent's default".to_string()
        } else {
            format!("`{configured}`")
        }
    ));
    configured
}

/// The object holding the spec's fields: the answer itself, or the one
/// object it wraps (`{"task": {...}}`, `{"spec": {...}}`).
fn spec_fields(object: &Value) -> &serde_json::Map<String, Value> {
    static EMPTY: std::sync::LazyLock<serde_json::Map<String, Value>> =
        std::sync::LazyLock::new(serde_json::Map::new);
    let Some(map) = object.as_object() else {
        return &EMPTY;
    };
    if map.contains_key("instructions") {
        return map;
    }
    map.values()
        .filter_map(Value::as_object)
        .find(|inner| inner.contains_key("instructions"))
        .unwrap_or(map)
}

/// A line of the instructions that already says how the work is checked.
fn has_acceptance_line(instructions: &str) -> bool {
    instructions.lines().any(|line| {
        line.trim_start_matches(|c: char| !c.is_alphanumeric())
            .to_ascii_lowercase()
            .starts_with("acceptance")
    })
}

/// A string field under any of `keys`; a list of strings is joined into
/// lines, a number or a bool written out.
fn text_field(fields: &serde_json::Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter()
        .filter_map(|k| fields.get(*k))
        .find_map(|value| match value {
            Value::Array(items) => {
                let lines: Vec<String> = items.iter().filter_map(scalar_text).collect();
                (!lines.is_empty()).then(|| lines.join("\n"))
            }
            other => scalar_text(other),
        })
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A list of strings: a JSON list, or one comma-separated string.
fn list_field(fields: &serde_json::Map<String, Value>, keys: &[&str]) -> Vec<String> {
    let Some(value) = keys.iter().find_map(|k| fields.get(*k)) else {
        return Vec::new();
    };
    let items: Vec<String> = match value {
        Value::Array(items) => items.iter().filter_map(scalar_text).collect(),
        Value::String(s) => s.split(',').map(str::to_string).collect(),
        _ => Vec::new(),
    };
    items
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A number: a JSON number or a string such as "2", "$1.50" or "30 min";
/// `Err` with the text when it holds none.
fn number_field(
    fields: &serde_json::Map<String, Value>,
    keys: &[&str],
) -> Option<Result<f64, NotANumber>> {
    let value = keys.iter().find_map(|k| fields.get(*k))?;
    Some(match value {
        Value::Number(n) => n.as_f64().ok_or_else(|| NotANumber(n.to_string())),
        Value::String(s) => {
            let digits: String = s
                .trim()
                .trim_start_matches('$')
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            digits.parse().map_err(|_| NotANumber(s.clone()))
        }
        Value::Null => return None,
        other => Err(NotANumber(other.to_string())),
    })
}

/// A tag as `SubmitTask` accepts it: lowercase, no spaces or commas.
fn normalize_tag(tag: &str) -> String {
    tag.trim()
        .trim_start_matches('#')
        .to_lowercase()
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join("-")
        .chars()
        .take(TAG_CHARS)
        .collect()
}
