//! What a sandbox shares with its project: the project's object store.
//! A sandbox is a `git clone --shared`, so its history costs nothing but
//! the checkout; the project's objects are read through
//! `.git/objects/info/alternates`, and shown read-only in the agent's OS
//! sandbox, so the agent reads the history and cannot damage it.
//!
//! While the sandbox lives, the project keeps its base commit under
//! `refs/claudomator/base/<task-id>`, so a `git gc` in the project never
//! prunes what the sandbox reads (as `git worktree` keeps its HEADs).

use std::path::{Path, PathBuf};

use tracing::warn;

use super::git::git;
use super::reclaim::saved_alternates;

/// Where the project keeps each live sandbox's base commit.
const KEEP_PREFIX: &str = "refs/claudomator/base/";

/// How deep alternates of alternates are followed (git's own limit is 5).
const MAX_DEPTH: usize = 5;

/// Keeps `base` reachable in the project while task `task_id`'s sandbox
/// lives. A project the server cannot write loses nothing but that
/// protection: warned, not failed.
pub(super) async fn keep_base(project: &Path, task_id: &str, base: &str) {
    let reference = format!("{KEEP_PREFIX}{task_id}");
    let kept = git(project, ["update-ref", &reference, base])
        .user_config()
        .run()
        .await;
    if let Err(error) = kept {
        warn!(%error, task_id, "cannot keep the sandbox's base commit in the project");
    }
}

/// Lets the project forget the base commit of the sandbox at `sandbox`.
pub(super) async fn release_base(sandbox: &Path) {
    let (Some(task_id), Some(store)) = (
        sandbox.file_name().and_then(|n| n.to_str()),
        saved_stores(sandbox).await.into_iter().next(),
    ) else {
        return;
    };
    // The store is `<project>/.git/objects`: git runs in `.git`.
    let Some(git_dir) = store.parent() else {
        return;
    };
    let reference = format!("{KEEP_PREFIX}{task_id}");
    let released = git(git_dir, ["update-ref", "-d", &reference])
        .user_config()
        .run()
        .await;
    if let Err(error) = released {
        warn!(%error, task_id, "cannot drop the sandbox's base ref in the project");
    }
}

/// The object stores the sandbox at `workdir` reads besides its own, to be
/// shown read-only in the agent's OS sandbox: those saved when it was made
/// (never what the agent may have written since), and theirs in turn.
/// Empty for anything that is not a sandbox, or a sandbox that is a full
/// copy.
pub async fn shared_paths(workdir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = Vec::new();
    let mut next = saved_stores(workdir).await;
    for _ in 0..MAX_DEPTH {
        let mut deeper = Vec::new();
        for store in next {
            let Ok(store) = store.canonicalize() else {
                continue;
            };
            if found.contains(&store) || !store.is_dir() {
                continue;
            }
            deeper.extend(read_alternates(&store.join("info/alternates"), &store).await);
            found.push(store);
        }
        if deeper.is_empty() {
            break;
        }
        next = deeper;
    }
    found
}

/// The stores named in the sandbox's saved alternates.
async fn saved_stores(sandbox: &Path) -> Vec<PathBuf> {
    let Some(saved) = saved_alternates(sandbox) else {
        return Vec::new();
    };
    // Relative entries are relative to the sandbox's own store.
    read_alternates(&saved, &sandbox.join(".git/objects")).await
}

/// An alternates file's stores: one path a line, `#` comments, relative
/// ones from `base`.
async fn read_alternates(file: &Path, base: &Path) -> Vec<PathBuf> {
    let Ok(text) = tokio::fs::read_to_string(file).await else {
        return Vec::new();
    };
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| base.join(line))
        .collect()
}
