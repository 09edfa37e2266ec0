//! Taking a sandbox's repository back from the agent before the server's
//! own git runs in it. The agent owns the clone while it runs; what it can
//! leave there to make the server's `git add` or `git commit` run its code,
//! or write outside the sandbox, is undone or refused here:
//! - `.git/config` (`core.fsmonitor`, filters, diff and merge drivers,
//!   includes, `core.worktree`…) and `.git/objects/info/alternates` (the
//!   project's object store the clone shares) are replaced by the copies
//!   saved when the sandbox was made, kept beside the sandboxes where an
//!   agent in its OS sandbox cannot reach them;
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

/// The clone's alternates file, inside `.git`.
const ALTERNATES: &str = "objects/info/alternates";

/// The saved config of the sandbox at `sandbox`.
fn saved_config(sandbox: &Path) -> Option<PathBuf> {
    let root = sandbox.parent()?;
    Some(root.join(SAVED).join(sandbox.file_name()?))
}

/// The saved alternates of the sandbox at `sandbox` (task ids have no dots:
/// never another sandbox's config).
pub(super) fn saved_alternates(sandbox: &Path) -> Option<PathBuf> {
    let mut name = sandbox.file_name()?.to_os_string();
    name.push(".alternates");
    Some(sandbox.parent()?.join(SAVED).join(name))
}

/// Saves the sandbox's own config and alternates, as the server wrote them.
pub(super) async fn save(sandbox: &Path) -> Result<(), SandboxError> {
    let (Some(saved), Some(saved_alternates)) = (saved_config(sandbox), saved_alternates(sandbox))
    else {
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
        .map_err(|e| SandboxError::io("save the git config to", &saved, e))?;
    let alternates = sandbox.join(".git").join(ALTERNATES);
    match tokio::fs::read(&alternates).await {
        Ok(text) => tokio::fs::write(&saved_alternates, text)
            .await
            .map_err(|e| SandboxError::io("save the alternates to", &saved_alternates, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(SandboxError::io("read", &alternates, e)),
    }
}

/// Forgets the saved files of a sandbox that is gone.
pub(super) async fn forget(sandbox: &Path) {
    for saved in [saved_config(sandbox), saved_alternates(sandbox)]
        .into_iter()
        .flatten()
    {
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
        "objects/info",
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
    let (Some(saved), Some(saved_alternates)) = (saved_config(sandbox), saved_alternates(sandbox))
    else {
        return Ok(());
    };
    let text = match read_if_exists(&saved).await? {
        Some(text) => text,
        None => return save(sandbox).await,
    };
    restore(&git_dir.join("config"), Some(&text)).await?;
    // No saved alternates (a full clone): none may be there.
    let alternates = read_if_exists(&saved_alternates).await?;
    let info = git_dir.join("objects/info");
    if tokio::fs::symlink_metadata(&info).await.is_ok() || alternates.is_some() {
        tokio::fs::create_dir_all(&info)
            .await
            .map_err(|e| SandboxError::io("create", &info, e))?;
        restore(&git_dir.join(ALTERNATES), alternates.as_deref()).await?;
    }
    Ok(())
}

async fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, SandboxError> {
    match tokio::fs::read(path).await {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SandboxError::io("read", path, e)),
    }
}

/// Puts `text` at `file` (None: no file there). Removed first (a link is
/// removed, not followed), then made anew: a file the agent turned into a
/// link to elsewhere is never written through.
async fn restore(file: &Path, text: Option<&[u8]>) -> Result<(), SandboxError> {
    match tokio::fs::remove_file(file).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(SandboxError::io("remove", file, e)),
    }
    let Some(text) = text else {
        return Ok(());
    };
    let mut made = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(file)
        .await
        .map_err(|e| SandboxError::io("restore", file, e))?;
    tokio::io::AsyncWriteExt::write_all(&mut made, text)
        .await
        .map_err(|e| SandboxError::io("restore", file, e))
}
