//! A project's untracked files copied into a new sandbox (`copy = [".env",
//! "config/*.toml"]`): uncommitted local config is often what makes a clone
//! usable. git matches the globs (`git ls-files --others`, `:(glob)`
//! pathspecs); only regular files are copied, never through a symbolic
//! link: a committed link in the sandbox (`config -> ~`) could otherwise
//! make the copy write outside it.

use std::path::{Component, Path};

use super::error::SandboxError;
use super::git::git;

/// Copies the project's untracked files matching `patterns` into the
/// sandbox; returns their paths, relative to the project.
pub(super) async fn copy_untracked(
    project: &Path,
    sandbox: &Path,
    patterns: &[String],
) -> Result<Vec<String>, SandboxError> {
    if patterns.is_empty() {
        return Ok(Vec::new());
    }
    let mut args = vec!["ls-files", "--others", "-z", "--"];
    let pathspecs: Vec<String> = patterns.iter().map(|p| format!(":(glob){p}")).collect();
    args.extend(pathspecs.iter().map(String::as_str));
    let listed = git(project, args).user_config().output().await?;
    if !listed.status.success() {
        return Err(super::git::failed("ls-files", project, &listed));
    }
    let mut copied = Vec::new();
    for name in listed.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let relative = Path::new(&name);
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            continue;
        }
        let from = project.join(relative);
        let regular = tokio::fs::symlink_metadata(&from)
            .await
            .is_ok_and(|m| m.file_type().is_file());
        if !regular {
            continue;
        }
        copy_into(&from, sandbox, relative).await?;
        copied.push(name);
    }
    Ok(copied)
}

/// Copies `from` to `sandbox/relative`, refusing a destination any part of
/// which is a symbolic link.
async fn copy_into(from: &Path, sandbox: &Path, relative: &Path) -> Result<(), SandboxError> {
    let to = sandbox.join(relative);
    let mut dir = sandbox.to_path_buf();
    let parents: Vec<_> = relative
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .collect();
    for part in parents {
        dir.push(part);
        match tokio::fs::symlink_metadata(&dir).await {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => return Err(linked(&to)),
            Err(_) => tokio::fs::create_dir(&dir)
                .await
                .map_err(|e| SandboxError::io("create", &dir, e))?,
        }
    }
    match tokio::fs::symlink_metadata(&to).await {
        Ok(m) if m.file_type().is_symlink() || m.is_dir() => return Err(linked(&to)),
        Ok(_) => tokio::fs::remove_file(&to)
            .await
            .map_err(|e| SandboxError::io("replace", &to, e))?,
        Err(_) => {}
    }
    let contents = tokio::fs::read(from)
        .await
        .map_err(|e| SandboxError::io("read", from, e))?;
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&to)
        .await
        .map_err(|e| SandboxError::io("copy into", &to, e))?;
    tokio::io::AsyncWriteExt::write_all(&mut file, &contents)
        .await
        .map_err(|e| SandboxError::io("copy into", &to, e))
}

fn linked(to: &Path) -> SandboxError {
    SandboxError::CopyBlocked {
        path: to.to_path_buf(),
    }
}
