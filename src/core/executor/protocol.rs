//! The agent protocol: what every agent is told on top of its own system
//! prompt (`SYSTEM_PROMPT`), what each attempt says to it (`continuation`:
//! the instructions afresh, or the next message of its session), and how it
//! asks a person a question (it writes `QUESTION_FILE` in its sandbox;
//! `take_question` reads and removes it).

use std::path::Path;

use super::Executor;
use crate::core::CoreError;
use crate::core::model::{AgentType, Execution, ExecutionState, Question, Task, now_millis};

/// What the agent is told on top of its own system prompt.
pub const SYSTEM_PROMPT: &str = "You are running unattended under claudomator, in a git \
sandbox of the project (your working directory), on a branch of your own. Work only inside \
that directory. Your changes are committed for you when you finish. End your final message \
with a `## Summary` section saying what you changed and how you checked it. If you cannot go \
on without a decision from a person, write the file `.claudomator/question.json` in your \
working directory as {\"question\": \"...\", \"choices\": [\"...\"], \"context\": \"...\"} \
(choices and context optional) and end your turn: the answer will come as the next message \
of this session.";

/// Where an agent leaves a question for a person, relative to its sandbox.
pub const QUESTION_FILE: &str = ".claudomator/question.json";

impl Executor {
    /// What the next attempt says to the agent: the task's instructions in a
    /// new session; or, in the same session, a person's answer or review
    /// feedback, or a continuation after an interruption (with the tokens
    /// that session had used, for agents that count per session).
    pub(super) async fn continuation(
        &self,
        task: &Task,
        agent: AgentType,
        previous: Option<Execution>,
    ) -> Result<(String, Option<String>, Option<(u64, u64)>), CoreError> {
        // A session lives in the sandbox and agent home of the server that
        // ran it: another server starts the task afresh.
        let resumable = |p: &Execution| {
            p.agent == agent
                && !p.session_id.is_empty()
                && (p.server_id.is_empty() || p.server_id == self.config.server_id)
        };
        let previous = previous.filter(resumable);
        let prompt = if !task.pending_input.is_empty() {
            // An answer or review feedback: the next message of the session.
            match &previous {
                Some(_) => task.pending_input.clone(),
                None => format!("{}\n\n{}", task.instructions, task.pending_input),
            }
        } else if previous
            .as_ref()
            .is_some_and(|p| p.state == ExecutionState::Interrupted)
        {
            format!(
                "The previous run of this task was interrupted when the server restarted. \
                 Continue where you left off. The task was:\n\n{}",
                task.instructions
            )
        } else {
            return Ok((task.instructions.clone(), None, None));
        };
        let Some(previous) = previous else {
            return Ok((prompt, None, None));
        };
        let session_runs = self
            .tasks
            .store()
            .executions_of_session(task.id, &previous.session_id)
            .await?;
        let used = session_runs.iter().fold((0, 0), |(i, o), e| {
            (i + e.input_tokens, o + e.output_tokens)
        });
        Ok((prompt, Some(previous.session_id), Some(used)))
    }
}

/// The most of a question file that is read; a larger one still blocks the
/// task, with a question saying so.
pub const MAX_QUESTION_BYTES: usize = 64 * 1024;

/// Reads and removes the agent's question file, if it wrote one. A file
/// that does not parse still blocks the task, with its text as the question.
/// The sandbox is the agent's: no symlink is followed on the way (a
/// `.claudomator` or `question.json` that is a link, to the server's config
/// say, is ignored), only a regular file is read, at most
/// `MAX_QUESTION_BYTES`, and only that file and its (then empty) directory
/// are removed.
pub(super) async fn take_question(sandbox: &Path) -> Option<Question> {
    let sandbox = sandbox.to_path_buf();
    let text = tokio::task::spawn_blocking(move || read_question_file(&sandbox))
        .await
        .ok()??;
    let mut question = serde_json::from_str::<Question>(&text).unwrap_or_else(|_| Question {
        text: text.trim().to_string(),
        ..Question::default()
    });
    question.asked_at = now_millis();
    (!question.text.trim().is_empty()).then_some(question)
}

/// `QUESTION_FILE` under `sandbox`, read and removed without following a
/// link (openat with O_NOFOLLOW on each component the agent controls).
fn read_question_file(sandbox: &Path) -> Option<String> {
    use std::ffi::CString;
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;

    let (dir_name, file_name) = QUESTION_FILE.split_once('/')?;
    let dir_name = CString::new(dir_name).ok()?;
    let file_name = CString::new(file_name).ok()?;
    let root = CString::new(sandbox.as_os_str().as_bytes()).ok()?;
    let open_dir = |at: libc::c_int, name: &CString| -> Option<OwnedFd> {
        // SAFETY: a valid NUL-terminated path; the fd is owned on success.
        let fd = unsafe {
            libc::openat(
                at,
                name.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        // SAFETY: a fresh descriptor nobody else owns.
        (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
    };
    use std::os::fd::AsRawFd;
    let root = open_dir(libc::AT_FDCWD, &root)?;
    let dir = open_dir(root.as_raw_fd(), &dir_name)?;
    // SAFETY: as above; O_NONBLOCK so a FIFO cannot hang the server.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            file_name.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let regular = file.metadata().is_ok_and(|m| m.file_type().is_file());
    let mut bytes = Vec::new();
    if regular {
        let _ = file
            .take(MAX_QUESTION_BYTES as u64 + 1)
            .read_to_end(&mut bytes);
    }
    // SAFETY: names relative to descriptors we hold; unlinkat never follows
    // a link, and AT_REMOVEDIR only removes an empty directory.
    unsafe {
        libc::unlinkat(dir.as_raw_fd(), file_name.as_ptr(), 0);
        libc::unlinkat(root.as_raw_fd(), dir_name.as_ptr(), libc::AT_REMOVEDIR);
    }
    if !regular {
        return None;
    }
    if bytes.len() > MAX_QUESTION_BYTES {
        return Some(format!(
            "(the agent wrote a question file over {} KiB; it was not read)",
            MAX_QUESTION_BYTES / 1024
        ));
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn ask(contents: &str) -> (Option<Question>, bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(QUESTION_FILE);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        let question = take_question(dir.path()).await;
        (question, dir.path().join(".claudomator").exists())
    }

    #[tokio::test]
    async fn a_question_file_is_read_and_removed() {
        let (question, left) =
            ask(r#"{"question": "Which database?", "choices": ["sqlite", "pg"]}"#).await;
        let question = question.unwrap();
        assert_eq!(question.text, "Which database?");
        assert_eq!(question.choices, ["sqlite", "pg"]);
        assert!(question.asked_at > 0);
        assert!(!left, "the question file and its directory are removed");
    }

    #[tokio::test]
    async fn a_file_that_does_not_parse_is_the_question_itself() {
        let (question, _) = ask("  which one, a or b?\n").await;
        assert_eq!(question.unwrap().text, "which one, a or b?");
        let (question, _) = ask("   ").await;
        assert_eq!(question, None, "an empty file asks nothing");
    }

    #[tokio::test]
    async fn links_are_not_followed_and_only_the_question_file_goes() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("claudomator.toml");
        std::fs::write(&secret, "tokens = [\"s3cret\"]").unwrap();

        // question.json a link to the server's config: not read, the
        // config stays.
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".claudomator")).unwrap();
        std::os::unix::fs::symlink(&secret, dir.path().join(QUESTION_FILE)).unwrap();
        assert_eq!(take_question(dir.path()).await, None);
        assert!(secret.exists());

        // .claudomator a link to the config's directory: nothing read,
        // nothing removed there.
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&secret, outside.path().join("question.json")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join(".claudomator")).unwrap();
        assert_eq!(take_question(dir.path()).await, None);
        assert!(outside.path().join("question.json").exists());
        assert!(secret.exists());
    }

    #[tokio::test]
    async fn a_huge_question_file_is_not_read_but_still_asks() {
        let (question, left) = ask(&"x".repeat(MAX_QUESTION_BYTES + 10)).await;
        let question = question.unwrap();
        assert!(question.text.contains("was not read"), "{}", question.text);
        assert!(!left);
    }

    #[tokio::test]
    async fn no_file_no_question() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(take_question(dir.path()).await, None);
    }
}
