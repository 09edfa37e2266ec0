//! How the CLI prints: aligned tables and key/value blocks for people,
//! JSON (`--json`) for scripts.

use crate::core::model::{Execution, Task, UnixMillis, now_millis};

/// Text from the server (a client's, an agent's) made safe for a terminal:
/// control characters other than newlines and tabs (ESC, CR, BEL…), the
/// line separators and the bidirectional overrides are printed escaped
/// (`\u{1b}`), never sent raw.
pub fn escape_text(text: &str) -> String {
    escape(text, false)
}

/// [`escape_text`] for one line: newlines and tabs are escaped too.
pub fn escape_line(text: &str) -> String {
    escape(text, true)
}

/// Whether a terminal would act on `c` rather than show it: a control
/// character, a line or paragraph separator, a bidi override.
pub fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200E}' | '\u{200F}')
        || ('\u{202A}'..='\u{202E}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

fn escape(text: &str, one_line: bool) -> String {
    let unsafe_char = |c: char| acts_on_terminal(c) && (one_line || !matches!(c, '\n' | '\t'));
    if !text.contains(unsafe_char) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if unsafe_char(c) {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A task with every text field escaped for printing.
fn printable_task(t: &Task) -> Task {
    let mut t = t.clone();
    let lines = |v: &mut Vec<String>| v.iter_mut().for_each(|s| *s = escape_line(s));
    t.name = escape_line(&t.name);
    t.project = escape_line(&t.project);
    t.state_reason = escape_text(&t.state_reason);
    t.summary = escape_text(&t.summary);
    t.instructions = escape_text(&t.instructions);
    t.agent.model = escape_line(&t.agent.model);
    lines(&mut t.tags);
    if let Some(q) = t.question.as_mut() {
        q.text = escape_text(&q.text);
        q.context = escape_text(&q.context);
        lines(&mut q.choices);
    }
    t
}

/// An execution with every text field escaped for printing.
fn printable_execution(e: &Execution) -> Execution {
    let mut e = e.clone();
    let lines = |v: &mut Vec<String>| v.iter_mut().for_each(|s| *s = escape_line(s));
    e.error = escape_text(&e.error);
    e.model = escape_line(&e.model);
    e.session_id = escape_line(&e.session_id);
    e.summary = escape_text(&e.summary);
    e.log_path = escape_line(&e.log_path);
    e.server_id = escape_line(&e.server_id);
    e.agent_choice_reason = escape_text(&e.agent_choice_reason);
    lines(&mut e.changed_files);
    lines(&mut e.commits);
    lines(&mut e.permission_denials);
    e.file_changes
        .iter_mut()
        .for_each(|f| f.path = escape_line(&f.path));
    e
}

pub fn json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}

/// `HH:MM:SS` of a time in the local time zone (UTC when it cannot be
/// determined).
pub fn clock(at: UnixMillis) -> String {
    let secs = at.div_euclid(1000);
    {
        // Platforms with a 32-bit time_t are not among ours; a wrapped value
        // only misprints a clock.
        let t = secs as libc::time_t;
        // SAFETY: an all-zero `tm` is a valid value (integers and a null
        // `tm_zone`), and `localtime_r` only reads `t` and writes `tm`, both
        // locals that outlive the call; it is the thread-safe variant.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        if !unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
            return format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec);
        }
    }
    let day = secs.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}", day / 3600, day % 3600 / 60, day % 60)
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-01-02T03:04:05.678Z`.
pub fn rfc3339(at: UnixMillis) -> String {
    let since_epoch = std::time::Duration::from_millis(u64::try_from(at).unwrap_or_default());
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + since_epoch).to_string()
}

/// "3m ago", "2h ago": how long ago a time was, roughly.
fn age(at: UnixMillis) -> String {
    let secs = ((now_millis() - at).max(0) / 1000) as u64;
    let (n, unit) = match secs {
        0..60 => (secs, "s"),
        60..3600 => (secs / 60, "m"),
        3600..86400 => (secs / 3600, "h"),
        _ => (secs / 86400, "d"),
    };
    format!("{n}{unit} ago")
}

pub(super) fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

pub fn task_table(tasks: &[Task]) {
    if tasks.is_empty() {
        println!("no tasks");
        return;
    }
    let tasks: Vec<Task> = tasks.iter().map(printable_task).collect();
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.state.to_string(),
                t.priority.to_string(),
                t.agent.agent_type.to_string(),
                t.project.clone(),
                age(t.created_at),
                t.name.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "STATE", "PRIORITY", "AGENT", "PROJECT", "CREATED", "NAME",
        ],
        &rows,
    );
}

/// Blocked tasks and what each agent asked.
pub fn questions(tasks: &[Task]) {
    if tasks.is_empty() {
        println!("no task is waiting for an answer");
        return;
    }
    for t in tasks.iter().map(printable_task) {
        println!("{}  {}", t.id, t.name);
        if let Some(q) = &t.question {
            println!("  asks: {}", q.text);
            if !q.choices.is_empty() {
                println!("  choices: {}", q.choices.join(" | "));
            }
            if !q.context.is_empty() {
                println!("  context: {}", q.context);
            }
        }
        println!("  answer: claudomator answer {} \"...\"", t.id);
    }
}

/// A task as `get` and `submit --wait` show it; with its executions
/// (oldest first), also what its attempts cost and what the latest one left.
pub fn task_details(t: &Task, runs: &[Execution], pull: Option<&crate::proto::PullRequest>) {
    let t = &printable_task(t);
    let runs: &[Execution] = &runs.iter().map(printable_execution).collect::<Vec<_>>();
    let list = |items: &[String]| {
        if items.is_empty() {
            "-".to_string()
        } else {
            items.join(", ")
        }
    };
    println!("id:            {}", t.id);
    println!("name:          {}", t.name);
    println!("state:         {}", t.state);
    if !t.state_reason.is_empty() {
        println!("reason:        {}", t.state_reason);
    }
    println!("project:       {}", t.project);
    println!(
        "agent:         {}{}",
        t.agent.agent_type,
        if t.agent.model.is_empty() {
            String::new()
        } else {
            format!(" ({})", t.agent.model)
        }
    );
    println!("priority:      {}", t.priority);
    println!("timeout:       {}", humantime::format_duration(t.timeout));
    println!("attempts:      {} of {}", t.attempts, t.max_attempts);
    if t.agent.max_budget_usd > 0.0 {
        println!("budget:        ${:.2}", t.agent.max_budget_usd);
    }
    println!("tags:          {}", list(&t.tags));
    let deps: Vec<String> = t.depends_on.iter().map(|d| d.to_string()).collect();
    println!("depends on:    {}", list(&deps));
    println!(
        "review:        {}",
        if t.review_required { "required" } else { "no" }
    );
    println!("created:       {}", age(t.created_at));
    if !t.summary.is_empty() {
        println!("summary:       {}", t.summary);
    }
    if let Some(q) = &t.question {
        println!("question:      {}", q.text);
        if !q.choices.is_empty() {
            println!("choices:       {}", q.choices.join(" | "));
        }
    }
    task_outcome(t, runs);
    if let Some(pull) = pull {
        print!("pull request:  ");
        pull_line(pull);
    } else if t.pull_requests != crate::core::model::PullMode::Off {
        println!("pull request:  {} (none yet)", t.pull_requests);
    }
    println!("instructions:\n{}", t.instructions);
}

/// One line about a pull request: number, state, link, branches, resumes.
fn pull_line(p: &crate::proto::PullRequest) {
    println!(
        "#{} {} {} ({} -> {}, {} automatic resume{})",
        p.number,
        escape_line(&p.state),
        escape_line(&p.url),
        escape_line(&p.head_ref),
        escape_line(&p.base_ref),
        p.automatic_resumes,
        if p.automatic_resumes == 1 { "" } else { "s" }
    );
}

/// A pull request as `pr` shows it.
pub fn pull_details(p: &crate::proto::PullRequest) {
    println!("repository:    {}", escape_line(&p.repository));
    print!("pull request:  ");
    pull_line(p);
    if !p.head_sha.is_empty() {
        println!("head:          {}", escape_line(&p.head_sha));
    }
}

/// A pull request for `--json`.
pub fn pull_json(p: &crate::proto::PullRequest) -> serde_json::Value {
    serde_json::json!({
        "repository": p.repository,
        "number": p.number,
        "url": p.url,
        "state": p.state,
        "head_ref": p.head_ref,
        "head_sha": p.head_sha,
        "base_ref": p.base_ref,
        "automatic_resumes": p.automatic_resumes,
    })
}

/// A task for `--json`, with what `get` prints about it: `{task,
/// executions, cost_usd, cost_estimated, branch, pull_request}` (`branch`:
/// where its delivered work is, else null; `pull_request`: its pull
/// request, else null). Every command that shows one task prints this
/// shape (commands that change a task print `{task}` alone).
pub fn task_json(
    t: &Task,
    runs: &[Execution],
    pull: Option<&crate::proto::PullRequest>,
) -> serde_json::Value {
    let delivered = runs.last().is_some_and(|last| {
        !last.commits.is_empty() && last.state == crate::core::model::ExecutionState::Succeeded
    });
    serde_json::json!({
        "task": t,
        "executions": runs,
        "cost_usd": runs.iter().map(|e| e.cost_usd).sum::<f64>(),
        "cost_estimated": runs.iter().any(|e| e.cost_estimated),
        "branch": delivered.then(|| format!("claudomator/{}", t.id)),
        "pull_request": pull.map(pull_json),
    })
}

/// What the attempts cost in all and what the latest one did: its state,
/// agent, cost, tokens, the files it changed, its commits and, when its work
/// was delivered, the branch to look at in the project.
fn task_outcome(t: &Task, runs: &[Execution]) {
    let Some(last) = runs.last() else {
        return;
    };
    let total: f64 = runs.iter().map(|e| e.cost_usd).sum();
    let estimated = runs.iter().any(|e| e.cost_estimated);
    let unknown = runs.iter().filter(|e| e.cost_unknown).count();
    let total = match unknown {
        0 if estimated => format!("${total:.4} (estimated)"),
        0 => format!("${total:.4}"),
        n if n == runs.len() => "unknown".to_string(),
        n => format!("${total:.4} + unknown ({n} attempt(s) of unknown cost)"),
    };
    println!(
        "cost:          {total} over {} attempt{}",
        runs.len(),
        if runs.len() == 1 { "" } else { "s" }
    );
    println!(
        "latest:        attempt {} {} on {}{}: {}, {} in / {} out tokens, {} turns ({})",
        last.attempt,
        last.state,
        last.agent,
        if last.model.is_empty() {
            String::new()
        } else {
            format!(" ({})", last.model)
        },
        cost(last),
        last.input_tokens,
        last.output_tokens,
        last.turns,
        last.id
    );
    if !last.file_changes.is_empty() {
        let files: Vec<String> = last
            .file_changes
            .iter()
            .map(|f| format!("{} +{} -{}", f.path, f.added, f.removed))
            .collect();
        println!("changed:       {}", files.join(", "));
    } else if !last.changed_files.is_empty() {
        println!("changed:       {}", last.changed_files.join(", "));
    }
    if !last.commits.is_empty() {
        let short: Vec<&str> = last
            .commits
            .iter()
            .map(|c| c.get(..12).unwrap_or(c))
            .collect();
        println!("commits:       {}", short.join(", "));
        if last.state == crate::core::model::ExecutionState::Succeeded {
            println!(
                "branch:        claudomator/{} (in the project: git log claudomator/{})",
                t.id, t.id
            );
        }
    }
}

/// An execution's cost as a person reads it: `$0.0123`, `$0.0123
/// (estimated)`, or `unknown` (never a $0 that is not one).
fn cost(e: &Execution) -> String {
    match (e.cost_unknown, e.cost_estimated) {
        (true, _) => format!(
            "unknown (no price for model {}, or no usage reported before the run ended; \
             `claudomator doctor` names models to price)",
            if e.model.is_empty() { "?" } else { &e.model }
        ),
        (false, true) => format!("${:.4} (estimated)", e.cost_usd),
        (false, false) => format!("${:.4}", e.cost_usd),
    }
}

pub fn execution_table(executions: &[Execution]) {
    if executions.is_empty() {
        println!("no executions");
        return;
    }
    let rows: Vec<Vec<String>> = executions
        .iter()
        .map(printable_execution)
        .map(|e| {
            vec![
                e.id.to_string(),
                e.attempt.to_string(),
                e.state.to_string(),
                e.agent.to_string(),
                e.model.clone(),
                if e.cost_unknown {
                    "unknown".to_string()
                } else {
                    format!(
                        "${:.4}{}",
                        e.cost_usd,
                        if e.cost_estimated { "~" } else { "" }
                    )
                },
                format!("{}/{}", e.input_tokens, e.output_tokens),
                age(e.started_at),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "ATTEMPT",
            "STATE",
            "AGENT",
            "MODEL",
            "COST",
            "TOKENS IN/OUT",
            "STARTED",
        ],
        &rows,
    );
}

pub fn execution_details(e: &Execution) {
    let e = &printable_execution(e);
    println!("id:            {}", e.id);
    println!("task:          {}", e.task_id);
    println!("attempt:       {}", e.attempt);
    println!("state:         {}", e.state);
    println!("agent:         {} {}", e.agent, e.model);
    if e.agent_choice != crate::core::model::AgentChoice::Named {
        println!(
            "chosen by:     the {}: {}",
            e.agent_choice, e.agent_choice_reason
        );
    }
    if let Some(code) = e.exit_code {
        println!("exit code:     {code}");
    }
    if !e.error.is_empty() {
        println!("error:         {}", e.error);
    }
    println!("cost:          {}", cost(e));
    println!(
        "tokens:        {} in, {} out, {} turns",
        e.input_tokens, e.output_tokens, e.turns
    );
    if !e.session_id.is_empty() {
        println!("session:       {}", e.session_id);
    }
    if !e.changed_files.is_empty() {
        println!("changed files: {}", e.changed_files.join(", "));
    }
    if !e.commits.is_empty() {
        println!("commits:       {}", e.commits.join(", "));
    }
    if !e.permission_denials.is_empty() {
        println!("denied:        {}", e.permission_denials.join(", "));
    }
    if !e.log_path.is_empty() {
        println!("log:           {}", e.log_path);
    }
    if !e.summary.is_empty() {
        println!("summary:\n{}", e.summary);
    }
}

/// Prints the system status; returns whether any agent can run tasks.
pub fn doctor(status: &crate::proto::GetSystemStatusResponse, server: &str, as_json: bool) -> bool {
    use crate::proto as pb;
    let usable = status
        .agents
        .iter()
        .any(|a| a.available && a.credentials_ok);
    let agent_name = |value: i32| {
        crate::grpc::convert::agent_from_pb(value)
            .map(|a| a.to_string())
            .unwrap_or_else(|_| value.to_string())
    };
    let until = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .map(|t| {
                format!(
                    "set aside until {}",
                    rfc3339(crate::grpc::convert::millis(t))
                )
            })
            .unwrap_or_default()
    };
    if as_json {
        let agents: Vec<serde_json::Value> = status
            .agents
            .iter()
            .map(|a| {
                serde_json::json!({
                    "agent": agent_name(a.agent),
                    "available": a.available,
                    "command": a.command,
                    "detail": a.detail,
                    "version": a.version,
                    "credentials_ok": a.credentials_ok,
                    "credentials": a.credentials,
                    "running": a.running,
                    "queued": a.queued,
                    "max_concurrent": a.max_concurrent,
                    "rate_limited_until": a.rate_limited_until.as_ref().map(|t| rfc3339(crate::grpc::convert::millis(t))),
                })
            })
            .collect();
        let check = |c: &Option<pb::ComponentCheck>| {
            let c = c.clone().unwrap_or_default();
            serde_json::json!({"ok": c.ok, "detail": c.detail})
        };
        json(&serde_json::json!({
            "server_version": status.server_version,
            "executor_enabled": status.executor_enabled,
            "max_concurrent": status.max_concurrent,
            "running": status.running,
            "queued": status.queued,
            "queued_auto": status.queued_auto,
            "agents": agents,
            "git": check(&status.git),
            "data_dir": check(&status.data_dir),
            "database": check(&status.database),
            "local_model": check(&status.local_model),
            "notifications": check(&status.notifications),
            "cluster": check(&status.cluster),
            "isolation": check(&status.isolation),
            "prices": check(&status.prices),
            "github": status.github.iter().map(|g| serde_json::json!({
                "project": g.project, "repository": g.repository, "ok": g.ok, "detail": g.detail,
            })).collect::<Vec<_>>(),
            "usable": usable,
        }));
        return usable;
    }
    println!(
        "claudomator {} at {server}: executor {}, {} of {} running, {} queued ({} auto)",
        status.server_version,
        if status.executor_enabled { "on" } else { "off" },
        status.running,
        status.max_concurrent,
        status.queued,
        status.queued_auto
    );
    println!();
    let rows: Vec<Vec<String>> = status
        .agents
        .iter()
        .map(|a| {
            vec![
                agent_name(a.agent),
                if !a.available {
                    "missing".into()
                } else if !a.credentials_ok {
                    "no key".into()
                } else {
                    "ok".into()
                },
                if a.version.is_empty() {
                    "-".into()
                } else {
                    a.version.clone()
                },
                format!("{}/{}", a.running, a.max_concurrent),
                a.queued.to_string(),
                [
                    a.credentials.clone(),
                    until(&a.rate_limited_until),
                    a.detail.clone(),
                ]
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("; "),
            ]
        })
        .collect();
    table(
        &["AGENT", "STATUS", "VERSION", "RUNNING", "QUEUED", "DETAIL"],
        &rows,
    );
    println!();
    for (name, check) in [
        ("git", &status.git),
        ("data dir", &status.data_dir),
        ("database", &status.database),
        ("local model", &status.local_model),
        ("notify", &status.notifications),
        ("cluster", &status.cluster),
        ("isolation", &status.isolation),
        ("prices", &status.prices),
    ] {
        let check = check.clone().unwrap_or_default();
        println!(
            "{name:<12} {:<4} {}",
            if check.ok { "ok" } else { "--" },
            check.detail
        );
    }
    for g in &status.github {
        println!(
            "{:<12} {:<4} {} (project {}): {}",
            "github",
            if g.ok { "ok" } else { "--" },
            escape_line(&g.repository),
            escape_line(&g.project),
            escape_line(&g.detail)
        );
    }
    usable
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_printed_escaped() {
        assert_eq!(escape_line("plain ✓"), "plain ✓");
        assert_eq!(escape_line("a\x1b[2Jb\nc"), "a\\u{1b}[2Jb\\u{a}c");
        assert_eq!(escape_text("a\nb\tc\r\x07"), "a\nb\tc\\u{d}\\u{7}");
        assert_eq!(escape_text("x\u{202E}y"), "x\\u{202e}y");
    }

    #[test]
    fn a_task_is_printed_without_raw_escapes() {
        let mut task = Task {
            name: "n\x1b]0;title\x07".into(),
            summary: "done\x1b[2J".into(),
            ..sample_task()
        };
        task.tags = vec!["t\x1b".into()];
        let printable = printable_task(&task);
        for text in [&printable.name, &printable.summary, &printable.tags[0]] {
            assert!(!text.contains('\x1b'), "{text:?}");
        }
    }

    fn sample_task() -> Task {
        let req = crate::core::model::SubmitRequest {
            spec: crate::core::model::TaskSpec {
                instructions: "x".into(),
                project: "p".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let rules = crate::core::validate::TaskRules {
            projects: vec!["p".into()],
            ..Default::default()
        };
        crate::core::validate::validate(&req, &rules).unwrap()
    }
}
