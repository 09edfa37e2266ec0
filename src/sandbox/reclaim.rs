//! Taking a sandbox's repository back from the agent before the server's
//! own git runs in it. The agent owns the clone while it runs; what it can
//! leave there to make the server's `git add` or `git commit` run its code,
//! or write outside the sandbox, is undone or refused here:
//! - `.git/config` (`core.fsmonitor`, filters, diff and merge drivers,
//!   includes, `core.worktree`…) is replaced by the copy saved when the
//!   sandbox was made, kept beside the sandboxes where an agent in its OS
//!   sandbox cannot reach it;
//! - `.git`, and what git writes through (objects, refs, the index, HEAD),
//!   must be what a clone has, not links elsewhere, and no `commondir` may
//!   point git at another repository.
//!
//! Hooks never run: every server git call sets `core.hooksPath=/dev/null`.

use std::path::{Path, PathBuf};

use super::error::SandboxError;

/// Where the saved configs live, under the sandbox root (a dot name: never
/// a task id).
const SAVED: &str = ".git-configs";

/// The saved config of the sandbox at `sandbox`.
fn saved_config(sandbox: &Path) -> Option<PathBuf> {
    let root = sandbox.parent()?;
    Some(root.join(SAVED).join(sandbox.file_name()?))
}

/// Saves the sandbox's own config, as the server wrote it.
pub(super) async fn save(sandbox: &Path) -> Result<(), SandboxError> {
    let Some(saved) = saved_config(sandbox) else {
        return Ok(());
    };
    let config = sandbox.join(".git/config");
    let text = tokio::fs::read(&config)
        .await
        .map_err(|e| SandboxError::io("read", &config, e))?;
    if let Some(dir) = saved.parent() {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| SandboxError::io("create", dir, e))?;
    }
    tokio::fs::write(&saved, text)
        .await
        .map_err(|e| SandboxError::io("save the git config to", &saved, e))
}

/// Forgets the saved config of a sandbox that is gone.
pub(super) async fn forget(sandbox: &Path) {
    if let Some(saved) = saved_config(sandbox) {
        let _ = tokio::fs::remove_file(saved).await;
    }
}

/// Checks the repository's shape and restores its config (see the module
/// doc). A sandbox made before configs were saved has its config saved now.
pub(super) async fn reclaim(sandbox: &Path) -> Result<(), SandboxError> {
    let tampered = |reason: String| SandboxError::Tampered {
        path: sandbox.to_path_buf(),
        reason,
    };
    let git_dir = sandbox.join(".git");
    let is_dir = tokio::fs::symlink_metadata(&git_dir)
        .await
        .is_ok_and(|m| m.file_type().is_dir());
    if !is_dir {
        return Err(tampered(".git is not a directory".into()));
    }
    for name in [
        "objects",
        "refs",
        "HEAD",
        "index",
        "info",
        "logs",
        "packed-refs",
    ] {
        if tokio::fs::symlink_metadata(git_dir.join(name))
            .await
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            return Err(tampered(format!(".git/{name} is a symbolic link")));
        }
    }
    for name in ["commondir", "gitdir"] {
        if tokio::fs::symlink_metadata(git_dir.join(name))
            .await
            .is_ok()
        {
            return Err(tampered(format!(".git/{name} points git elsewhere")));
        }
    }
    let Some(saved) = saved_config(sandbox) else {
        return Ok(());
    };
    let text = match tokio::fs::read(&saved).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return save(sandbox).await,
        Err(e) => return Err(SandboxError::io("read", &saved, e)),
    };
    // Removed first (a link is removed, not followed), then made anew: a
    // config the agent turned into a link to elsewhere is never written
    // through.
    let config = git_dir.join("config");
    match tokio::fs::remove_file(&config).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(SandboxError::io("remove", &config, e)),
    }
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&config)
        .await
        .map_err(|e| SandboxError::io("restore", &config, e))?;
    tokio::io::AsyncWriteExt::write_all(&mut file, &text)
        .await
        .map_err(|e| SandboxError::io("restore", &config, e))
}
