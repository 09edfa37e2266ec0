//! The one way this module runs `git`: an argument list (never a shell
//! string), no prompts, no hooks, no signing, none of the inherited
//! `GIT_*` variables that would point git at another repository or identity,
//! and (unless a call asks for them) neither the system's nor the user's
//! global git config: a sandbox is the agent's, and what a global config
//! names there (`core.fsmonitor`, filters, external diffs) must not run in
//! the server's own git.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use tokio::process::Command;

use super::error::SandboxError;

/// Config every invocation gets, so the user's global config cannot make our
/// own commits, rebases and pushes hang (signing, hooks) or differ.
const FIXED_CONFIG: &[&str] = &[
    "core.hooksPath=/dev/null",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "push.gpgSign=false",
    "rebase.autoSquash=false",
    "rebase.autoStash=false",
    "rebase.updateRefs=false",
    "color.ui=false",
];

/// Inherited variables that would redirect git (to another repository, index
/// or identity) if claudomator itself runs under git, e.g. from a hook.
pub(super) const CLEARED_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_COMMON_DIR",
    "GIT_NAMESPACE",
    "GIT_PREFIX",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "GIT_COMMITTER_DATE",
];

/// A `git` invocation run in `dir` (`git -C dir …`).
pub(super) struct Git {
    command: Command,
    subcommand: String,
    dir: PathBuf,
}

/// Starts `git -C dir <args…>`; `args[0]` is the subcommand named in errors.
pub(super) fn git<I, S>(dir: &Path, args: I) -> Git
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new("git");
    command.arg("-C").arg(dir);
    for setting in FIXED_CONFIG {
        command.arg("-c").arg(setting);
    }
    for name in CLEARED_ENV {
        command.env_remove(name);
    }
    command
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GCM_INTERACTIVE", "never")
        // Stable, English messages: some errors are recognised by their text.
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropping the future (a timeout, a cancelled task) kills git.
        .kill_on_drop(true);
    let mut subcommand = String::new();
    for (index, arg) in args.into_iter().enumerate() {
        if index == 0 {
            subcommand = arg.as_ref().to_string_lossy().into_owned();
        }
        command.arg(arg);
    }
    Git {
        command,
        subcommand,
        dir: dir.to_path_buf(),
    }
}

impl Git {
    /// Reads the system's and the user's global git config too: for git run
    /// in the user's own project, and for pushes and fetches that may need
    /// the user's credential helpers. Never for git reading a sandbox's
    /// files on the agent's behalf.
    pub(super) fn user_config(mut self) -> Self {
        for name in ["GIT_CONFIG_NOSYSTEM", "GIT_CONFIG_GLOBAL"] {
            match std::env::var_os(name) {
                Some(value) => self.command.env(name, value),
                None => self.command.env_remove(name),
            };
        }
        self
    }

    /// Sets one environment variable on this git process only (a token
    /// for a credential helper).
    pub(super) fn env(mut self, name: &str, value: &str) -> Self {
        self.command.env(name, value);
        self
    }

    /// Commits made by this invocation carry `name <email>` as committer,
    /// and as author too when `author` is set (a rebase keeps the authors).
    pub(super) fn identity(mut self, name: &str, email: &str, author: bool) -> Self {
        self.command
            .env("GIT_COMMITTER_NAME", name)
            .env("GIT_COMMITTER_EMAIL", email);
        if author {
            self.command
                .env("GIT_AUTHOR_NAME", name)
                .env("GIT_AUTHOR_EMAIL", email);
        }
        self
    }

    /// Runs git and returns its output whatever the exit status; only a git
    /// that cannot be started is an error.
    pub(super) async fn output(mut self) -> Result<Output, SandboxError> {
        self.command
            .output()
            .await
            .map_err(|source| SandboxError::GitUnavailable { source })
    }

    /// Runs git, requires success and returns stdout with trailing
    /// whitespace removed.
    pub(super) async fn run(self) -> Result<String, SandboxError> {
        let subcommand = self.subcommand.clone();
        let dir = self.dir.clone();
        let output = self.output().await?;
        if !output.status.success() {
            return Err(failed(&subcommand, &dir, &output));
        }
        let mut stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        stdout.truncate(stdout.trim_end().len());
        Ok(stdout)
    }

    /// Runs git (a `-z` listing of paths), requires success and returns
    /// the paths.
    pub(super) async fn names(self) -> Result<Vec<String>, SandboxError> {
        Ok(self
            .run()
            .await?
            .split('\0')
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// Runs git and reports whether it succeeded; for commands whose exit
    /// status is the answer (`diff --quiet`, `rev-parse --verify`).
    pub(super) async fn succeeds(self) -> Result<bool, SandboxError> {
        Ok(self.output().await?.status.success())
    }
}

/// The error for a git command that exited with a failure.
pub(super) fn failed(subcommand: &str, dir: &Path, output: &Output) -> SandboxError {
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    let stderr = if stderr.is_empty() {
        format!("exited with {}", output.status)
    } else {
        stderr
    };
    SandboxError::Git {
        subcommand: subcommand.to_string(),
        dir: dir.to_path_buf(),
        stderr,
    }
}

impl Git {
    /// Runs git for at most `max` bytes of stdout: the rest is not read
    /// (git is killed) and the flag says so. Requires success when all was
    /// read.
    pub(super) async fn run_capped(mut self, max: usize) -> Result<(Vec<u8>, bool), SandboxError> {
        use tokio::io::AsyncReadExt;
        let mut child = self
            .command
            .spawn()
            .map_err(|source| SandboxError::GitUnavailable { source })?;
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut out = Vec::new();
        (&mut stdout)
            .take(max as u64 + 1)
            .read_to_end(&mut out)
            .await
            .map_err(|e| SandboxError::io("read git's output in", &self.dir, e))?;
        if out.len() > max {
            out.truncate(max);
            let _ = child.kill().await;
            return Ok((out, true));
        }
        drop(stdout);
        let output = child
            .wait_with_output()
            .await
            .map_err(|source| SandboxError::GitUnavailable { source })?;
        if !output.status.success() {
            return Err(failed(&self.subcommand, &self.dir, &output));
        }
        Ok((out, false))
    }
}

/// The files a stopped merge or rebase in `dir` left in conflict.
pub(super) async fn conflicted(dir: &Path) -> Result<Vec<String>, SandboxError> {
    git(dir, ["diff", "--name-only", "-z", "--diff-filter=U"])
        .names()
        .await
}
