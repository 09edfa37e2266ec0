//! How the CLI prints: aligned tables and key/value blocks for people,
//! JSON (`--json`) for scripts.

use crate::core::model::{Execution, Task, UnixMillis, now_millis};

pub fn json(value: &impl serde::Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
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

fn table(header: &[&str], rows: &[Vec<String>]) {
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

pub fn task_details(t: &Task) {
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
    println!("instructions:\n{}", t.instructions);
}

pub fn execution_table(executions: &[Execution]) {
    if executions.is_empty() {
        println!("no executions");
        return;
    }
    let rows: Vec<Vec<String>> = executions
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                e.attempt.to_string(),
                e.state.to_string(),
                e.agent.to_string(),
                e.model.clone(),
                format!(
                    "${:.4}{}",
                    e.cost_usd,
                    if e.cost_estimated { "~" } else { "" }
                ),
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
    println!("id:            {}", e.id);
    println!("task:          {}", e.task_id);
    println!("attempt:       {}", e.attempt);
    println!("state:         {}", e.state);
    println!("agent:         {} {}", e.agent, e.model);
    if let Some(code) = e.exit_code {
        println!("exit code:     {code}");
    }
    if !e.error.is_empty() {
        println!("error:         {}", e.error);
    }
    println!(
        "cost:          ${:.4}{}",
        e.cost_usd,
        if e.cost_estimated { " (estimated)" } else { "" }
    );
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
    if !e.log_path.is_empty() {
        println!("log:           {}", e.log_path);
    }
    if !e.summary.is_empty() {
        println!("summary:\n{}", e.summary);
    }
}
