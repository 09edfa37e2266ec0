//! Checks a submitted spec field by field and builds the task it describes.
//! Pure: the checks that need the store (dependencies exist, idempotency)
//! live in `core::tasks`.

use std::collections::HashSet;
use std::time::Duration;

use super::error::{Checked, CoreError, CoreResult, Violations};
use super::model::{
    AgentSettings, AgentType, Id, Priority, PullMode, StartFrom, SubmitRequest, Task, TaskState,
    now_millis,
};

/// The limits and defaults a submitted task is checked against, from config.
#[derive(Clone, Debug)]
pub struct TaskRules {
    /// Names of the projects tasks may target.
    pub projects: Vec<String>,
    /// Each project's `pull_requests` setting, for tasks that name none
    /// (a project not listed: off).
    pub project_pulls: Vec<(String, PullMode)>,
    pub max_instructions_bytes: usize,
    pub default_timeout: Duration,
    pub max_timeout: Duration,
    pub default_max_attempts: u32,
    pub max_attempts_limit: u32,
}

impl Default for TaskRules {
    fn default() -> Self {
        TaskRules {
            projects: Vec::new(),
            project_pulls: Vec::new(),
            max_instructions_bytes: 64 * 1024,
            default_timeout: Duration::from_secs(30 * 60),
            max_timeout: Duration::from_secs(24 * 60 * 60),
            default_max_attempts: 3,
            max_attempts_limit: 20,
        }
    }
}

// The limits of what a client sends; README "Limits" lists each.
pub const MAX_NAME_CHARS: usize = 200;
const DERIVED_NAME_CHARS: usize = 80;
/// Models, tool names, idempotency keys, projects, base refs.
pub const MAX_SHORT_TEXT: usize = 200;
pub const MAX_TAGS: usize = 32;
pub const MAX_TAG_CHARS: usize = 64;
pub const MAX_DEPENDENCIES: usize = 100;
pub const MAX_ALLOWED_TOOLS: usize = 64;
pub const MAX_TURNS: u32 = 10_000;
/// The shortest timeout a task may ask for.
pub const MIN_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest `limits.max_timeout` the config may set.
pub const MAX_TIMEOUT_LIMIT: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The largest `limits.max_instructions_bytes` the config may set (a gRPC
/// message may be larger, see `grpc::MAX_MESSAGE_BYTES`, so an oversize
/// field is refused by its own limit).
pub const MAX_INSTRUCTIONS_LIMIT: usize = 4 * 1024 * 1024;
/// An answer to a question, or review feedback.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Why a task is cancelled.
pub const MAX_REASON_BYTES: usize = 4 * 1024;
/// Entries of `ListTasks.states`.
pub const MAX_STATE_FILTERS: usize = 16;
/// `page_size` of a list (0 means the server's default).
pub const MAX_PAGE_SIZE: u32 = super::tasks::MAX_PAGE_SIZE;
/// How much of an offending value an error message quotes.
pub const QUOTED_CHARS: usize = 32;
/// Tags only the server's own CI triage sets.
pub const RESERVED_TAG_PREFIXES: [&str; 4] = ["ci-run:", "ci-sha:", "ci-commit-at:", "ci-pr:"];

/// A value for an error message: at most [`QUOTED_CHARS`] characters of it,
/// control characters escaped, in backticks.
pub fn quote(text: &str) -> String {
    let mut quoted: String = text
        .chars()
        .take(QUOTED_CHARS)
        .flat_map(|c| {
            if is_invisible_control(c) || c == '`' {
                c.escape_unicode().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect();
    if text.chars().nth(QUOTED_CHARS).is_some() {
        quoted.push('…');
    }
    format!("`{quoted}`")
}

/// Characters no one-line field may hold: control characters (C0, DEL, C1:
/// NUL, ESC, CR, LF, TAB…), the line and paragraph separators, and the
/// bidirectional overrides and isolates that make text read differently
/// from what it is.
fn is_invisible_control(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200E}' | '\u{200F}')
        || ('\u{202A}'..='\u{202E}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// A one-line text field: at most `max_chars` characters, no control or
/// invisible formatting characters.
pub fn check_line(field: &str, text: &str, max_chars: usize) -> Checked {
    if text.chars().count() > max_chars {
        return Err(Violations::one(
            field,
            format!(
                "is {} characters; the limit is {max_chars}",
                text.chars().count()
            ),
        ));
    }
    if let Some(c) = text.chars().find(|c| is_invisible_control(*c)) {
        return Err(Violations::one(
            field,
            format!(
                "{} holds the control character U+{:04X}; write one line of plain text",
                quote(text),
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

/// A free-text field: at most `max_bytes`; lines and tabs are fine, other
/// control characters (NUL, ESC, BEL…) are not.
pub fn check_text(field: &str, text: &str, max_bytes: usize) -> Checked {
    if text.len() > max_bytes {
        return Err(Violations::one(
            field,
            format!("is {} bytes; the limit is {max_bytes} bytes", text.len()),
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(Violations::one(
            field,
            format!(
                "holds the control character U+{:04X} (only newlines and tabs may be in text)",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

/// A required free-text field (an answer, review feedback): not blank, and
/// [`check_text`].
pub fn check_required_text(field: &str, text: &str, max_bytes: usize) -> Checked {
    check_text(field, text, max_bytes)?;
    if text.trim().is_empty() {
        return Err(Violations::one(field, "must not be empty"));
    }
    Ok(())
}

/// A `page_size` a client asks for.
pub fn check_page_size(page_size: u32) -> Checked {
    if page_size > MAX_PAGE_SIZE {
        return Err(Violations::one(
            "page_size",
            format!("is {page_size}; the limit is {MAX_PAGE_SIZE} (0: the default)"),
        ));
    }
    Ok(())
}

/// What only a client's submit is refused on (the server's own submits,
/// CI triage's, may set them): tags with a reserved prefix. When there are
/// any, the rest of the request's violations ([`validate`]'s) come with
/// them, so the client hears of every bad field at once.
pub fn check_client_submit(req: &SubmitRequest, rules: &TaskRules) -> Checked {
    let mut found = Violations::default();
    for tag in &req.spec.tags {
        if let Some(prefix) = RESERVED_TAG_PREFIXES
            .iter()
            .find(|p| tag.trim().starts_with(**p))
        {
            found.add(
                "spec.tags",
                format!(
                    "{} uses the reserved prefix `{prefix}`: only the server's CI triage sets it",
                    quote(tag)
                ),
            );
        }
    }
    if !found.is_empty()
        && let Err(CoreError::InvalidArgument(more)) = validate(req, rules)
    {
        found.extend(more);
    }
    found.into_result()
}

/// An Elaborate request's text fields (their sizes are the elaborator's).
pub fn check_elaborate(req: &super::elaborate::ElaborateRequest) -> Checked {
    let mut found = Violations::default();
    found.take(check_text("text", &req.text, MAX_INSTRUCTIONS_LIMIT));
    found.take(check_line("project", &req.project, MAX_SHORT_TEXT));
    found.take(check_line("agent", &req.agent, MAX_SHORT_TEXT));
    found.into_result()
}

/// The filters of a task list a client asks for.
pub fn check_list_query(states: usize, project: &str, tag: &str, page_size: u32) -> Checked {
    let mut found = Violations::default();
    if states > MAX_STATE_FILTERS {
        found.add(
            "states",
            format!("{states} entries; the limit is {MAX_STATE_FILTERS}"),
        );
    }
    found.take(check_line("project", project, MAX_SHORT_TEXT));
    found.take(check_line("tag", tag, MAX_TAG_CHARS));
    found.take(check_page_size(page_size));
    found.into_result()
}

/// A project branch a client names (empty: the default branch): a plain
/// branch name, never an option or a revision expression.
pub fn check_branch_name(field: &str, name: &str) -> Checked {
    let name = name.trim();
    check_line(field, name, MAX_SHORT_TEXT)?;
    let bad = name.starts_with('-')
        || name.starts_with('/')
        || name.ends_with('/')
        || name.ends_with(".lock")
        || name.contains("..")
        || name.contains("@{")
        || name.contains("//")
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if bad {
        return Err(Violations::one(
            field,
            format!("`{name}` is not a branch name"),
        ));
    }
    Ok(())
}

/// Lines of context a diff may ask for.
pub fn check_context_lines(lines: u32) -> Checked {
    let max = crate::sandbox::MAX_CONTEXT_LINES;
    if lines > max {
        return Err(Violations::one(
            "context_lines",
            format!("{lines}; the limit is {max}"),
        ));
    }
    Ok(())
}

/// A duration that does not parse: the text as written, and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot parse `{text}` as a duration ({source}); write e.g. `30m` or `1h 30m`")]
pub struct DurationError {
    pub text: String,
    pub source: humantime::DurationError,
}

/// Parses a user-written duration such as `30m`, `1h 30m` or `90s`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(text.trim()).map_err(|source| DurationError {
        text: text.to_string(),
        source,
    })
}

/// Validates a submit request and builds the task, in state PENDING. A
/// request with bad fields gets every one of them back, not the first.
pub fn validate(req: &SubmitRequest, rules: &TaskRules) -> CoreResult<Task> {
    let spec = &req.spec;
    let mut found = Violations::default();

    let id = found
        .take(parse_optional_id("task_id", &req.task_id))
        .flatten()
        .unwrap_or_default();

    let instructions = spec.instructions.trim();
    if found
        .take(check_text(
            "spec.instructions",
            &spec.instructions,
            rules.max_instructions_bytes,
        ))
        .is_some()
        && instructions.is_empty()
    {
        found.add("spec.instructions", "must not be empty");
    }

    let name = spec.name.trim();
    let name = if name.is_empty() {
        derive_name(instructions)
    } else {
        found.take(check_line("spec.name", name, MAX_NAME_CHARS));
        name.to_string()
    };

    let project = found
        .take(resolve_project("spec.project", &spec.project, rules))
        .unwrap_or_default();

    let agent_type = if spec.agent.agent_type.trim().is_empty() {
        AgentType::Auto
    } else {
        found
            .take(
                spec.agent
                    .agent_type
                    .parse()
                    .map_err(|e: String| Violations::one("spec.agent.type", e)),
            )
            .unwrap_or(AgentType::Auto)
    };
    let model = spec.agent.model.trim();
    if found
        .take(check_line("spec.agent.model", model, MAX_SHORT_TEXT))
        .is_some()
        && (model.contains(char::is_whitespace) || model.starts_with('-'))
    {
        found.add(
            "spec.agent.model",
            format!(
                "{} is not a model name: no spaces, no leading `-`",
                quote(model)
            ),
        );
    }
    let allowed_tools = found
        .take(validate_allowed_tools(&spec.agent.allowed_tools))
        .unwrap_or_default();
    if spec.agent.max_turns > MAX_TURNS {
        found.add(
            "spec.agent.max_turns",
            format!("is {}; the limit is {MAX_TURNS}", spec.agent.max_turns),
        );
    }
    let budget = spec.agent.max_budget_usd;
    if !budget.is_finite() || budget < 0.0 {
        found.add(
            "spec.agent.max_budget_usd",
            format!("must be zero (no cap) or a positive amount, got {budget}"),
        );
    }

    let timeout = found
        .take(validate_timeout(&spec.timeout, rules))
        .unwrap_or(rules.default_timeout);

    let priority = if spec.priority.trim().is_empty() {
        Priority::Normal
    } else {
        found
            .take(
                spec.priority
                    .parse()
                    .map_err(|e: String| Violations::one("spec.priority", e)),
            )
            .unwrap_or(Priority::Normal)
    };

    let tags = found.take(validate_tags(&spec.tags)).unwrap_or_default();
    let depends_on = found
        .take(validate_dependencies(id, &spec.depends_on))
        .unwrap_or_default();
    let parent_task_id = found
        .take(parse_optional_id(
            "spec.parent_task_id",
            &spec.parent_task_id,
        ))
        .flatten();
    if parent_task_id == Some(id) {
        found.add("spec.parent_task_id", "a task cannot be its own parent");
    }

    let max_attempts = match spec.max_attempts {
        0 => rules.default_max_attempts,
        n => {
            if n > rules.max_attempts_limit {
                found.add(
                    "spec.max_attempts",
                    format!("is {n}; the limit is {}", rules.max_attempts_limit),
                );
            }
            n
        }
    };

    let base_ref = found
        .take(validate_base_ref(&spec.base_ref))
        .unwrap_or_default();
    let start_from = if spec.start_from.trim().is_empty() {
        StartFrom::default()
    } else {
        found
            .take(
                spec.start_from
                    .parse()
                    .map_err(|e: String| Violations::one("spec.start_from", e)),
            )
            .unwrap_or_default()
    };
    if !spec.base_ref.trim().is_empty() && !spec.start_from.trim().is_empty() {
        found.add("spec.start_from", "set base_ref or start_from, not both");
    }

    let pull_requests = if spec.pull_requests.trim().is_empty() {
        rules
            .project_pulls
            .iter()
            .find(|(name, _)| *name == project)
            .map(|(_, mode)| *mode)
            .unwrap_or_default()
    } else {
        spec.pull_requests
            .parse()
            .map_err(|e: String| CoreError::invalid("spec.pull_requests", e))?
    };

    let idempotency_key = req.idempotency_key.trim();
    found.take(check_line(
        "idempotency_key",
        idempotency_key,
        MAX_SHORT_TEXT,
    ));

    found.into_result()?;
    let now = now_millis();
    Ok(Task {
        id,
        name,
        instructions: spec.instructions.clone(),
        project,
        agent: AgentSettings {
            agent_type,
            model: model.to_string(),
            allowed_tools,
            max_budget_usd: budget,
            max_turns: spec.agent.max_turns,
        },
        timeout,
        priority,
        tags,
        depends_on,
        parent_task_id,
        max_attempts,
        // A pull request is the review: the task waits in READY for it.
        review_required: spec.review_required || pull_requests != PullMode::Off,
        base_ref,
        start_from,
        pull_requests,
        idempotency_key: (!idempotency_key.is_empty()).then(|| idempotency_key.to_string()),
        state: TaskState::Pending,
        state_reason: String::new(),
        summary: String::new(),
        attempts: 0,
        run_after: 0,
        question: None,
        pending_input: String::new(),
        created_at: now,
        updated_at: now,
    })
}

fn derive_name(instructions: &str) -> String {
    let first_line = instructions.lines().next().unwrap_or_default().trim();
    let mut name: String = first_line.chars().take(DERIVED_NAME_CHARS).collect();
    if first_line.chars().count() > DERIVED_NAME_CHARS {
        name.push('…');
    }
    name
}

/// The agent's tools: trimmed, deduplicated, each a short line.
fn validate_allowed_tools(tools: &[String]) -> Checked<Vec<String>> {
    const FIELD: &str = "spec.agent.allowed_tools";
    if tools.len() > MAX_ALLOWED_TOOLS {
        return Err(Violations::one(
            FIELD,
            format!("{} tools; the limit is {MAX_ALLOWED_TOOLS}", tools.len()),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for tool in tools {
        let tool = tool.trim();
        check_line(FIELD, tool, MAX_SHORT_TEXT)?;
        if tool.is_empty() {
            return Err(Violations::one(FIELD, "a tool name must not be empty"));
        }
        if !out.iter().any(|t| t == tool) {
            out.push(tool.to_string());
        }
    }
    Ok(out)
}

/// A task's timeout (empty: the default), within the configured bounds.
fn validate_timeout(text: &str, rules: &TaskRules) -> Checked<Duration> {
    const FIELD: &str = "spec.timeout";
    let timeout = if text.trim().is_empty() {
        rules.default_timeout
    } else {
        check_line(FIELD, text, 64)?;
        parse_duration(text).map_err(|e| Violations::one(FIELD, e.to_string()))?
    };
    if timeout < MIN_TIMEOUT || timeout > rules.max_timeout {
        return Err(Violations::one(
            FIELD,
            format!(
                "must be at least {} and at most {}",
                humantime::format_duration(MIN_TIMEOUT),
                humantime::format_duration(rules.max_timeout)
            ),
        ));
    }
    Ok(timeout)
}

/// The configured project a request names (`field` is how the request
/// names it); empty means the only project, when there is one.
pub fn resolve_project(field: &str, wanted: &str, rules: &TaskRules) -> Checked<String> {
    let wanted = wanted.trim();
    check_line(field, wanted, MAX_SHORT_TEXT)?;
    let known = || rules.projects.join(", ");
    if rules.projects.is_empty() {
        return Err(Violations::one(
            field,
            "no projects are configured on the server; add a [[projects]] entry to its config",
        ));
    }
    if wanted.is_empty() {
        return match rules.projects.as_slice() {
            [only] => Ok(only.clone()),
            _ => Err(Violations::one(
                field,
                format!("is required; configured projects: {}", known()),
            )),
        };
    }
    if rules.projects.iter().any(|p| p == wanted) {
        Ok(wanted.to_string())
    } else {
        Err(Violations::one(
            field,
            format!(
                "unknown project {}; configured projects: {}",
                quote(wanted),
                known()
            ),
        ))
    }
}

/// A git revision a sandbox can start from: a branch, tag or commit name,
/// never an option or a revision expression.
fn validate_base_ref(text: &str) -> Checked<String> {
    let text = text.trim();
    let bad = text.len() > MAX_SHORT_TEXT
        || text.starts_with('-')
        || text.contains("..")
        || text.contains("@{")
        || text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "~^:?*[\\".contains(c));
    if bad {
        return Err(Violations::one(
            "spec.base_ref",
            format!(
                "{} is not a branch, tag or commit name (at most {MAX_SHORT_TEXT} characters, \
                 no spaces, no leading `-`, none of `..` `@{{` `~^:?*[\\`)",
                quote(text)
            ),
        ));
    }
    Ok(text.to_string())
}

fn validate_tags(tags: &[String]) -> Checked<Vec<String>> {
    if tags.len() > MAX_TAGS {
        return Err(Violations::one(
            "spec.tags",
            format!("at most {MAX_TAGS} tags"),
        ));
    }
    let mut found = Violations::default();
    let mut out: Vec<String> = Vec::new();
    for tag in tags {
        let tag = tag.trim();
        if tag.is_empty()
            || tag.chars().count() > MAX_TAG_CHARS
            || tag.contains(|c: char| c.is_whitespace() || c == ',' || is_invisible_control(c))
        {
            found.add(
                "spec.tags",
                format!(
                    "{} is not a tag: tags are 1 to {MAX_TAG_CHARS} characters without spaces, \
                     commas or control characters",
                    quote(tag)
                ),
            );
        } else if !out.iter().any(|t| t == tag) {
            out.push(tag.to_string());
        }
    }
    found.into_result().map(|()| out)
}

/// Dependencies must name distinct tasks other than this one. They may only
/// name tasks that already exist (checked against the store), so the
/// dependency graph is acyclic by construction; the one cycle a client can
/// write is a task that depends on itself.
fn validate_dependencies(own_id: Id, deps: &[String]) -> Checked<Vec<Id>> {
    const FIELD: &str = "spec.depends_on";
    if deps.len() > MAX_DEPENDENCIES {
        return Err(Violations::one(
            FIELD,
            format!("at most {MAX_DEPENDENCIES} dependencies"),
        ));
    }
    let mut found = Violations::default();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for dep in deps {
        let id: Id = match dep.parse() {
            Ok(id) => id,
            Err(e) => {
                found.add(FIELD, e);
                continue;
            }
        };
        if id == own_id {
            found.add(
                FIELD,
                format!("dependency cycle: task {id} depends on itself"),
            );
        } else if !seen.insert(id) {
            found.add(FIELD, format!("task {id} is listed twice"));
        } else {
            out.push(id);
        }
    }
    found.into_result().map(|()| out)
}

fn parse_optional_id(field: &str, text: &str) -> Checked<Option<Id>> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e: String| Violations::one(field, e))
}

#[cfg(test)]
mod tests;
