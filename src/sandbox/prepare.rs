//! Making a sandbox: checking the project repository, cloning it onto the
//! task branch, or accepting an existing sandbox of the same task.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::error::SandboxError;
use super::git::{self, git};
use super::{BASE_COMMIT_KEY, Sandbox, SandboxConfig, canonical, current_branch};

/// How many changed files a "dirty project" error names.
const FILES_IN_MESSAGE: usize = 5;

/// Checks that `path` is the top level of a git working tree with at least
/// one commit; returns it canonicalised and its HEAD commit (one `git`).
pub(super) async fn check_project(
    project: &str,
    path: &Path,
) -> Result<(PathBuf, String), SandboxError> {
    let missing = || SandboxError::ProjectMissing {
        project: project.to_string(),
        path: path.to_path_buf(),
    };
    let not_a_repository = || SandboxError::NotARepository {
        project: project.to_string(),
        path: path.to_path_buf(),
    };
    match tokio::fs::metadata(path).await {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(not_a_repository()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
        Err(e) => return Err(SandboxError::io("read", path, e)),
    }
    // Prints the top level, then the commit; in a repository with no commits
    // it prints the top level only and exits with 1.
    let output = git(
        path,
        [
            "rev-parse",
            "--show-toplevel",
            "--verify",
            "--quiet",
            "HEAD^{commit}",
        ],
    )
    .user_config()
    .output()
    .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut lines = stdout.lines();
    let Some(toplevel) = lines.next().filter(|line| !line.is_empty()) else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        // "not a git repository", or a bare one ("must be run in a work tree").
        if stderr.contains("not a git repository") || stderr.contains("work tree") {
            return Err(not_a_repository());
        }
        return Err(git::failed("rev-parse", path, &output));
    };
    let toplevel = PathBuf::from(toplevel);
    let project_dir = canonical(path).await?;
    if project_dir != canonical(&toplevel).await? {
        return Err(SandboxError::NotTopLevel {
            project: project.to_string(),
            path: path.to_path_buf(),
            toplevel,
        });
    }
    match lines.next() {
        Some(head) if output.status.success() => Ok((project_dir, head.trim().to_string())),
        _ if output.status.code() == Some(1) => Err(SandboxError::EmptyRepository {
            project: project.to_string(),
            path: project_dir,
        }),
        _ => Err(git::failed("rev-parse", path, &output)),
    }
}

/// The commit `reference` (a branch, tag or commit) names in the project.
pub(super) async fn resolve_ref(
    project: &str,
    repo: &Path,
    reference: &str,
) -> Result<String, SandboxError> {
    let output = git(
        repo,
        [
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &format!("{reference}^{{commit}}"),
        ],
    )
    .user_config()
    .output()
    .await?;
    let commit = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() || commit.is_empty() {
        return Err(SandboxError::UnknownRef {
            project: project.to_string(),
            path: repo.to_path_buf(),
            reference: reference.to_string(),
        });
    }
    Ok(commit)
}

/// The tracked files with uncommitted changes (staged or not): a sandbox
/// from HEAD does not have them.
pub(super) async fn uncommitted(repo: &Path) -> Result<Vec<String>, SandboxError> {
    git(repo, ["diff", "--name-only", "-z", "HEAD", "--"])
        .user_config()
        .names()
        .await
}

/// `files` for a message: the first few, and how many more.
pub(super) fn name_files(files: &[String]) -> String {
    let mut named = files[..files.len().min(FILES_IN_MESSAGE)].join(", ");
    if files.len() > FILES_IN_MESSAGE {
        named.push_str(&format!(" and {} more", files.len() - FILES_IN_MESSAGE));
    }
    named
}

/// The project's working tree as a commit on top of `head` (its tracked
/// files as they are now; untracked ones are not in it), made without
/// touching the working tree or the index; None when nothing is changed.
pub(super) async fn snapshot(
    cfg: &SandboxConfig,
    repo: &Path,
    head: &str,
    task_id: &str,
) -> Result<Option<String>, SandboxError> {
    let stash = git(repo, ["stash", "create"]).user_config().run().await?;
    if stash.is_empty() {
        return Ok(None);
    }
    let message = format!("claudomator: the working tree when task {task_id} started");
    let tree = format!("{stash}^{{tree}}");
    let commit = git(repo, ["commit-tree", &tree, "-p", head, "-m", &message])
        .user_config()
        .identity(&cfg.author_name, &cfg.author_email, true)
        .run()
        .await?;
    Ok(Some(commit))
}

/// The commits of the task branches `task_ids` in the project, those that
/// exist (a task that changed nothing has none), in order.
pub(super) async fn task_tips(
    repo: &Path,
    task_ids: &[String],
) -> Result<Vec<(String, String)>, SandboxError> {
    let mut found = Vec::new();
    for id in task_ids {
        let branch = format!("{}{id}", super::BRANCH_PREFIX);
        if let Some(commit) = branch_tip(repo, &branch).await? {
            found.push((id.clone(), commit));
        }
    }
    Ok(found)
}

/// A local branch's commit, if it exists.
pub(super) async fn branch_tip(repo: &Path, branch: &str) -> Result<Option<String>, SandboxError> {
    let reference = format!("refs/heads/{branch}");
    let out = git(repo, ["rev-parse", "--verify", "--quiet", &reference])
        .user_config()
        .output()
        .await?;
    let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok((out.status.success() && !commit.is_empty()).then_some(commit))
}

/// Merges `commits` (other tasks' work) into the new sandbox's branch;
/// returns the new HEAD. A conflict names its files and leaves nothing.
pub(super) async fn merge_in(
    cfg: &SandboxConfig,
    dir: &Path,
    commits: &[(String, String)],
) -> Result<String, SandboxError> {
    for (task_id, commit) in commits {
        let message = format!("claudomator: start from the work of task {task_id}");
        let merged = git(dir, ["merge", "--quiet", "--no-ff", "-m", &message, commit])
            .identity(&cfg.author_name, &cfg.author_email, true)
            .output()
            .await?;
        if !merged.status.success() {
            let files = git::conflicted(dir).await?;
            if files.is_empty() {
                return Err(git::failed("merge", dir, &merged));
            }
            return Err(SandboxError::StartConflict {
                task_id: task_id.clone(),
                files: name_files(&files),
            });
        }
    }
    let head = git(dir, ["rev-parse", "HEAD"]).run().await?;
    git(dir, ["config", BASE_COMMIT_KEY, &head]).run().await?;
    Ok(head)
}

/// Clones `project` into `dir` and sets up the task branch and local config.
pub(super) async fn build(
    cfg: &SandboxConfig,
    project: &Path,
    dir: &Path,
    branch: &str,
    base_commit: &str,
) -> Result<(), SandboxError> {
    // `--shared`: the clone reads the project's objects in place (its
    // alternates), so a sandbox costs its checkout, not the history; the
    // agent's OS sandbox shows them read-only (`shared.rs`), and the agent's
    // own objects go to the clone's store.
    // `-c` writes the new repository's config: our base, plus an identity so
    // the agent's own `git commit` works on a machine with no global git
    // identity, and never waits for a signature; and no background
    // `git maintenance` after each commit in a clone that lives minutes.
    let settings = [
        format!("{BASE_COMMIT_KEY}={base_commit}"),
        format!("user.name={}", cfg.author_name),
        format!("user.email={}", cfg.author_email),
        "commit.gpgSign=false".to_string(),
        "maintenance.auto=false".to_string(),
    ];
    let mut clone: Vec<&OsStr> = vec![
        "clone".as_ref(),
        "--shared".as_ref(),
        "--no-checkout".as_ref(),
        "--quiet".as_ref(),
    ];
    for setting in &settings {
        clone.push("-c".as_ref());
        clone.push(setting.as_ref());
    }
    clone.extend(["--".as_ref(), project.as_os_str(), dir.as_os_str()]);
    git(&cfg.root, clone).run().await?;
    git(dir, ["checkout", "--quiet", "-b", branch, base_commit])
        .run()
        .await?;
    Ok(())
}

/// Accepts an existing `<root>/<task-id>` only if it is this task's sandbox.
pub(super) async fn reuse(
    path: PathBuf,
    branch: String,
    task_id: &str,
    project_path: &Path,
) -> Result<Sandbox, SandboxError> {
    let conflict = |reason: String| SandboxError::SandboxConflict {
        path: path.clone(),
        task_id: task_id.to_string(),
        reason,
    };
    let toplevel = git(&path, ["rev-parse", "--show-toplevel"])
        .output()
        .await?;
    let toplevel = PathBuf::from(String::from_utf8_lossy(&toplevel.stdout).trim_end());
    if canonical(&path).await? != toplevel {
        return Err(conflict("it is not a git clone".to_string()));
    }
    match current_branch(&path).await? {
        Some(found) if found == branch => {}
        Some(found) => return Err(conflict(format!("it is on branch {found}"))),
        None => return Err(conflict("its HEAD is detached".to_string())),
    }
    let base = git(&path, ["config", "--get", BASE_COMMIT_KEY])
        .output()
        .await?;
    let base_commit = String::from_utf8_lossy(&base.stdout).trim().to_string();
    if !base.status.success() || base_commit.is_empty() {
        return Err(conflict(format!("it has no {BASE_COMMIT_KEY}")));
    }
    let origin = git(&path, ["remote", "get-url", "origin"]).run().await?;
    if let (Ok(project), Ok(origin)) = (
        tokio::fs::canonicalize(project_path).await,
        tokio::fs::canonicalize(&origin).await,
    ) && project != origin
    {
        return Err(conflict(format!("it is a clone of {}", origin.display())));
    }
    Ok(Sandbox {
        path,
        branch,
        base_commit,
        fresh: false,
        start: String::new(),
        left_out: Vec::new(),
    })
}
