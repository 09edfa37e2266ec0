//! What claudomator writes on GitHub: a pull request's title and body (the
//! summary, the changed files with lines added and removed, cost and
//! tokens, the task and how to follow it) and its replies after a resumed
//! run. Pure text from the task and its executions.

use std::fmt::Write;

use crate::core::model::{Execution, Task};

/// GitHub's limit on a title is 256 characters.
const MAX_TITLE_CHARS: usize = 256;
/// Files listed before "and N more".
const MAX_FILES: usize = 50;

pub fn title(task: &Task) -> String {
    task.name.chars().take(MAX_TITLE_CHARS).collect()
}

pub fn body(task: &Task, executions: &[Execution]) -> String {
    let latest = executions.last();
    let mut text = String::new();
    let summary = latest
        .map(|e| e.summary.trim())
        .filter(|s| !s.is_empty())
        .or_else(|| Some(task.summary.trim()).filter(|s| !s.is_empty()))
        .unwrap_or("The agent wrote no summary.");
    let _ = writeln!(text, "{summary}\n");
    if let Some(latest) = latest {
        files(&mut text, latest);
    }
    let cost: f64 = executions.iter().map(|e| e.cost_usd).sum();
    let input: u64 = executions.iter().map(|e| e.input_tokens).sum();
    let output: u64 = executions.iter().map(|e| e.output_tokens).sum();
    let unknown = executions.iter().any(|e| e.cost_unknown);
    let _ = writeln!(text, "### Run\n");
    if let Some(latest) = latest {
        let model = if latest.model.is_empty() {
            String::new()
        } else {
            format!(" ({})", latest.model)
        };
        let _ = writeln!(
            text,
            "- agent: {}{model}, {} attempt(s)",
            latest.agent,
            executions.len()
        );
    }
    let _ = writeln!(
        text,
        "- cost: ${cost:.2}{}; tokens: {input} in, {output} out",
        if unknown {
            " (at least; not all known)"
        } else {
            ""
        }
    );
    let _ = writeln!(text, "- task: `{}`", task.id);
    let _ = writeln!(
        text,
        "\nFollow it with `claudomator get {id}` and `claudomator logs -f {id}`. \
         Request changes in a review, or comment mentioning claudomator, to send \
         it back to the agent.",
        id = task.id
    );
    text
}

fn files(text: &mut String, execution: &Execution) {
    if execution.file_changes.is_empty() {
        return;
    }
    let _ = writeln!(
        text,
        "### Changed files\n\n| file | + | - |\n|---|---:|---:|"
    );
    for f in execution.file_changes.iter().take(MAX_FILES) {
        let _ = writeln!(
            text,
            "| `{}` | {} | {} |",
            f.path.replace('|', "\\|"),
            f.added,
            f.removed
        );
    }
    if execution.file_changes.len() > MAX_FILES {
        let _ = writeln!(
            text,
            "\nand {} more",
            execution.file_changes.len() - MAX_FILES
        );
    }
    text.push('\n');
}

/// The title of a triage task's fix for pull request `number`.
pub fn fix_title(task: &Task, number: u64) -> String {
    format!("Fix the failing checks of #{number}: {}", task.name)
        .chars()
        .take(MAX_TITLE_CHARS)
        .collect()
}

/// The body of that fix: which pull request it is for, then as usual.
pub fn fix_body(task: &Task, executions: &[Execution], number: u64) -> String {
    format!(
        "The checks of #{number} failed; claudomator's triage task found this fix. Merge it \
         into #{number}'s branch.\n\n{}",
        body(task, executions)
    )
}

/// What a triage task says on the failing pull request: what it found,
/// and where its fix is (None: it changed nothing).
pub fn triage_comment(task: &Task, fix: Option<&str>) -> String {
    let summary = Some(task.summary.trim())
        .filter(|s| !s.is_empty())
        .unwrap_or("It wrote no summary.");
    let mut text = format!(
        "claudomator looked into the failing checks (task `{}`).\n\n{summary}\n\n",
        task.id
    );
    match fix {
        Some(url) => {
            let _ = write!(text, "The fix, onto this branch: {url}");
        }
        None => text.push_str("It changed nothing."),
    }
    text
}

/// The reply after a resumed run pushed `sha`.
pub fn pushed(task: &Task, latest: Option<&Execution>, sha: &str) -> String {
    let mut text = format!("Pushed {} to this pull request.\n\n", short(sha));
    if let Some(e) = latest {
        if !e.summary.trim().is_empty() {
            let _ = writeln!(text, "{}\n", e.summary.trim());
        }
        files(&mut text, e);
        let _ = writeln!(
            text,
            "This run: ${:.2}, {} tokens in, {} out. Task `{}`.",
            e.cost_usd, e.input_tokens, e.output_tokens, task.id
        );
    }
    text
}

/// The reply after a resumed run that changed nothing.
pub fn unchanged(task: &Task, latest: Option<&Execution>) -> String {
    let mut text = "The agent looked at the feedback and changed nothing.\n\n".to_string();
    if let Some(e) = latest.filter(|e| !e.summary.trim().is_empty()) {
        let _ = writeln!(text, "{}\n", e.summary.trim());
    }
    let _ = write!(text, "Task `{}`.", task.id);
    text
}

/// The reply when the new commits could not be pushed.
pub fn push_failed(task: &Task, why: &str) -> String {
    format!(
        "The agent finished, but its commits could not be pushed to this branch: {why}\n\n\
         If people pushed to it meanwhile, the agent's work is on `claudomator/{id}` in the \
         project repository. Task `{id}`.",
        id = task.id
    )
}

/// `text` with every mention of `mention` (any case) made inert (`@x` →
/// `@\u{200b}x`), so what claudomator writes never reads as feedback.
pub fn defuse(text: &str, mention: &str) -> String {
    let mention = mention.trim();
    let Some(bare) = mention.strip_prefix('@').filter(|b| !b.is_empty()) else {
        return text.to_string();
    };
    if !mention.is_ascii() {
        return text.replace(mention, &format!("@\u{200b}{bare}"));
    }
    // ASCII case folding keeps every byte where it is.
    let lower = text.to_ascii_lowercase();
    let wanted = mention.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len() + 8);
    let mut rest = 0;
    for (at, _) in lower.match_indices(&wanted) {
        out.push_str(&text[rest..at]);
        out.push_str("@\u{200b}");
        out.push_str(&text[at + 1..at + wanted.len()]);
        rest = at + wanted.len();
    }
    out.push_str(&text[rest..]);
    out
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

#[cfg(test)]
mod tests {
    #[test]
    fn own_words_never_mention_the_handle() {
        let text = super::defuse(
            "ask @Claudomator or @claudomator, not claudomator",
            "@claudomator",
        );
        assert_eq!(
            text,
            "ask @\u{200b}Claudomator or @\u{200b}claudomator, not claudomator"
        );
        assert!(!text.to_lowercase().contains("@claudomator"));
    }
}
