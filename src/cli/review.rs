//! Review tooling around task branches:
//! - `claudomator diff ID`: a task's work against where it started, through
//!   `GetTaskDiff`: the unified diff (as `git diff` prints it), or with
//!   `--stat` one line per file. Into a pipe the diff is printed as git
//!   wrote it, so `claudomator diff ID | git apply` works.
//! - `claudomator merge ID`: `MergeTask`, the work into a project branch.
//! - `claudomator prune`: `PruneTasks`, what ended tasks left.

use clap::Args;

use super::Connection;
use super::client::{Failure, connect};
use super::output;
use crate::proto as pb;

#[derive(Args, Debug)]
pub struct DiffArgs {
    pub task_id: String,
    /// One line per file (status, lines added and removed, path) and the
    /// totals, instead of the diff.
    #[arg(long)]
    pub stat: bool,
    /// Lines of context around each change (default 3).
    #[arg(long, short = 'U', default_value_t = 3)]
    pub context: u32,
    #[command(flatten)]
    pub connection: Connection,
}

pub(super) async fn diff(args: DiffArgs) -> Result<(), Failure> {
    let diff = connect(&args.connection)
        .await?
        .get_task_diff(pb::GetTaskDiffRequest {
            task_id: args.task_id.clone(),
            context_lines: args.context.max(1),
        })
        .await?
        .into_inner();
    if args.connection.json {
        output::json(&to_json(&diff));
    } else if args.stat {
        print!("{}", stat(&diff));
    } else {
        // Raw into a pipe (`| git apply` works); escaped on a terminal,
        // where an agent's bytes could act on it.
        let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
        for file in &diff.files {
            if file.patch.is_empty() {
                println!("{}", placeholder(file));
            } else if terminal {
                print!("{}", output::escape_text(&file.patch));
            } else {
                print!("{}", file.patch);
            }
        }
    }
    if diff.truncated {
        eprintln!(
            "note: the diff is over the size limit (1 MiB a file, 4 MiB in all); \
             files marked so are cut: see the branch {} in the project for all of it",
            diff.branch
        );
    }
    Ok(())
}

fn status_word(status: i32) -> &'static str {
    match pb::FileDiffStatus::try_from(status) {
        Ok(pb::FileDiffStatus::Added) => "added",
        Ok(pb::FileDiffStatus::Deleted) => "deleted",
        Ok(pb::FileDiffStatus::Renamed) => "renamed",
        _ => "modified",
    }
}

/// What stands for a file with no text: binary, or past the limit.
fn placeholder(file: &pb::FileDiff) -> String {
    let path = output::escape_line(&file.path);
    if file.binary {
        format!("Binary file {path} {}", status_word(file.status))
    } else {
        format!(
            "{path}: +{} -{} (text left out: over the size limit)",
            file.added, file.removed
        )
    }
}

/// `--stat`: a line per file and the totals.
fn stat(diff: &pb::GetTaskDiffResponse) -> String {
    let mut out = String::new();
    let (mut added, mut removed) = (0, 0);
    for file in &diff.files {
        added += file.added;
        removed += file.removed;
        let counts = if file.binary {
            "binary".to_string()
        } else {
            format!("+{} -{}", file.added, file.removed)
        };
        let path = if file.old_path.is_empty() {
            output::escape_line(&file.path)
        } else {
            format!(
                "{} -> {}",
                output::escape_line(&file.old_path),
                output::escape_line(&file.path)
            )
        };
        out.push_str(&format!(
            "{:<8}  {counts:>13}  {path}\n",
            status_word(file.status)
        ));
    }
    out.push_str(&format!(
        "{} file(s) changed, +{added} -{removed} ({} against {})\n",
        diff.files.len(),
        diff.branch,
        &diff.base_commit[..diff.base_commit.len().min(12)]
    ));
    out
}

fn to_json(diff: &pb::GetTaskDiffResponse) -> serde_json::Value {
    serde_json::json!({
        "branch": diff.branch,
        "base_commit": diff.base_commit,
        "head_commit": diff.head_commit,
        "truncated": diff.truncated,
        "files": diff.files.iter().map(|f| serde_json::json!({
            "path": f.path,
            "old_path": f.old_path,
            "status": status_word(f.status),
            "added": f.added,
            "removed": f.removed,
            "binary": f.binary,
            "patch": f.patch,
            "patch_truncated": f.patch_truncated,
        })).collect::<Vec<_>>(),
    })
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    pub task_id: String,
    /// The project branch to merge into (default: the project's default
    /// branch).
    #[arg(long)]
    pub into: Option<String>,
    /// Rebase the task's commits onto the branch and fast-forward it,
    /// instead of merging.
    #[arg(long)]
    pub rebase: bool,
    #[command(flatten)]
    pub connection: Connection,
}

pub(super) async fn merge(args: MergeArgs) -> Result<(), Failure> {
    let merged = connect(&args.connection)
        .await?
        .merge_task(pb::MergeTaskRequest {
            task_id: args.task_id.clone(),
            into: args.into.clone().unwrap_or_default(),
            rebase: args.rebase,
        })
        .await?
        .into_inner();
    if args.connection.json {
        output::json(&serde_json::json!({
            "branch": merged.branch,
            "into": merged.into,
            "old_commit": merged.old_commit,
            "new_commit": merged.new_commit,
            "checked_out": merged.checked_out,
        }));
        return Ok(());
    }
    let short = |c: &str| c[..c.len().min(12)].to_string();
    println!(
        "{} {} into {}: {} -> {}{}",
        if args.rebase { "rebased" } else { "merged" },
        output::escape_line(&merged.branch),
        output::escape_line(&merged.into),
        short(&merged.old_commit),
        short(&merged.new_commit),
        if merged.checked_out {
            " (your checkout was on it and moved with it)"
        } else {
            ""
        }
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// List what would go; remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove completed tasks' branches that are not merged.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub connection: Connection,
}

pub(super) async fn prune(args: PruneArgs) -> Result<(), Failure> {
    let pruned = connect(&args.connection)
        .await?
        .prune_tasks(pb::PruneTasksRequest {
            dry_run: args.dry_run,
            force: args.force,
        })
        .await?
        .into_inner();
    let kind = |k: i32| match pb::PrunedKind::try_from(k) {
        Ok(pb::PrunedKind::Sandbox) => "sandbox",
        _ => "branch",
    };
    if args.connection.json {
        output::json(&serde_json::json!({
            "items": pruned.items.iter().map(|i| serde_json::json!({
                "task_id": i.task_id,
                "project": i.project,
                "kind": kind(i.kind),
                "name": i.name,
                "removed": i.removed,
                "kept_because": i.kept_because,
            })).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let (mut gone, mut kept) = (0, 0);
    for item in &pruned.items {
        let what = if item.project.is_empty() {
            format!("{} {}", kind(item.kind), output::escape_line(&item.name))
        } else {
            format!(
                "{} {} in {}",
                kind(item.kind),
                output::escape_line(&item.name),
                output::escape_line(&item.project)
            )
        };
        if !item.kept_because.is_empty() {
            kept += 1;
            println!(
                "kept          {what}: {}",
                output::escape_line(&item.kept_because)
            );
        } else if item.removed {
            gone += 1;
            println!("removed       {what}");
        } else {
            gone += 1;
            println!("would remove  {what}");
        }
    }
    println!(
        "{gone} {}, {kept} kept",
        if args.dry_run { "to remove" } else { "removed" }
    );
    Ok(())
}
