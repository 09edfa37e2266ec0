//! Runs an agent process in its own process group, hands every line it
//! prints to the caller, and makes sure nothing it started outlives it: on
//! cancel the whole group gets SIGTERM, then SIGKILL after a grace period;
//! after a normal exit, any stragglers left in the group are killed too.
//!
//! Each agent's process group is recorded in a file while it runs (see
//! [`kill_recorded`]), so a server that died is followed by one that kills
//! exactly its agents, and nothing else.
//!
//! Its output is hostile input: a line is kept up to [`MAX_LINE_BYTES`]
//! (the rest of a longer one is read and dropped, and the line says so),
//! bytes that are not UTF-8 are replaced, and the lines read but not yet
//! handed over hold at most [`BUFFERED_BYTES`] together.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use std::sync::Arc;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

/// Under the data dir: one file per running agent process group.
pub const RUNNING_DIR: &str = "running";

/// How long a cancelled agent gets between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(3);

/// The longest line of agent output kept; the rest of a longer line is
/// read and dropped, and the line ends with [`cut_marker`].
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

/// Lines read from an agent but not yet handed to the caller hold at most
/// this many bytes together; beyond, reading waits (and so does the agent).
pub const BUFFERED_BYTES: usize = 8 * MAX_LINE_BYTES;

/// How long an exited agent's pipes are still read: what it wrote before
/// it exited arrives meanwhile.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// How much is read from an agent's pipe at a time.
const READ_CHUNK: usize = 64 * 1024;

/// What ends a line cut at [`MAX_LINE_BYTES`], `dropped` bytes shorter.
pub fn cut_marker(dropped: u64) -> String {
    format!(
        "… [line cut: {dropped} bytes over the {} MiB limit]",
        MAX_LINE_BYTES / (1024 * 1024)
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exit {
    /// None when a signal ended it.
    pub code: Option<i32>,
    /// True when the cancel token stopped it.
    pub stopped: bool,
}

/// The agent gets SIGKILL when the server dies, even if it dies between
/// the fork and the record of the agent's group (its OS sandbox then ends
/// everything inside; without one, nothing was started yet). Linux ties it
/// to the thread that forks: a runtime worker, which lives as long as the
/// server.
fn die_with_the_server(command: &mut Command) {
    // SAFETY: getpid before the fork; prctl and getppid after it are
    // async-signal-safe and touch no memory.
    let server = unsafe { libc::getpid() };
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The server died before the line above: do not start.
            if libc::getppid() != server {
                return Err(std::io::Error::other("the server is gone"));
            }
            Ok(())
        });
    }
}

/// Spawns `command` (stdin closed, stdout and stderr read line by line) in a
/// new process group and calls `on_line` for each line until it exits or
/// `cancel` fires. With `record`, the group is recorded in that directory
/// while it runs.
pub async fn run(
    mut command: Command,
    cancel: &CancellationToken,
    record: Option<&Path>,
    mut on_line: impl FnMut(Stream, String),
) -> std::io::Result<Exit> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    die_with_the_server(&mut command);
    let mut child = command.spawn()?;
    let pgid = child.id().map(|id| id as i32);
    let _recorded = match (record, pgid) {
        (Some(dir), Some(pgid)) => Recorded::new(dir, pgid),
        _ => None,
    };

    let (tx, mut rx) = mpsc::channel::<Line>(1024);
    let budget = Arc::new(Semaphore::new(BUFFERED_BYTES));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(forward(
            BufReader::with_capacity(READ_CHUNK, out),
            Stream::Stdout,
            tx.clone(),
            budget.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(forward(
            BufReader::with_capacity(READ_CHUNK, err),
            Stream::Stderr,
            tx.clone(),
            budget,
        )));
    }
    drop(tx);

    let mut stopped = false;
    let mut status = None;
    // Once the agent has exited, what it wrote is read for this long more;
    // a child that detached and keeps the pipes open does not hold the
    // attempt (it is killed below, or with the OS sandbox's namespace).
    let mut drain_until: Option<tokio::time::Instant> = None;
    loop {
        let draining = async {
            match drain_until {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            line = rx.recv() => match line {
                // The line's bytes leave the budget once it is handled.
                Some((stream, line, _held)) => on_line(stream, line),
                // Both pipes closed: the process is done writing.
                None => break,
            },
            exited = child.wait(), if status.is_none() => {
                status = Some(exited?);
                drain_until = Some(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
            }
            _ = cancel.cancelled(), if !stopped && status.is_none() => {
                stopped = true;
                status = Some(stop_group(&mut child, pgid).await?);
                drain_until = Some(tokio::time::Instant::now() + DRAIN_AFTER_EXIT);
            }
            _ = draining => break,
        }
    }
    let status = match status {
        Some(s) => s,
        None => child.wait().await?,
    };
    // Anything the agent left running in its group goes with it.
    if let Some(pgid) = pgid {
        signal_group(pgid, libc::SIGKILL);
    }
    for reader in &readers {
        // A pipe a detached process still holds is read no more.
        reader.abort();
    }
    for reader in readers {
        let _ = reader.await;
    }
    Ok(Exit {
        code: status.code(),
        stopped,
    })
}

/// A line read, with its share of [`BUFFERED_BYTES`].
type Line = (Stream, String, OwnedSemaphorePermit);

async fn forward<R: AsyncBufRead + Unpin>(
    mut reader: R,
    stream: Stream,
    tx: mpsc::Sender<Line>,
    budget: Arc<Semaphore>,
) {
    // A read error (not a pipe's usual end) ends reading like the end does;
    // the process group is still ended by `run`.
    while let Ok(Some(line)) = read_line(&mut reader, MAX_LINE_BYTES).await {
        let bytes = u32::try_from(line.len().clamp(1, BUFFERED_BYTES)).unwrap_or(u32::MAX);
        let Ok(held) = budget.clone().acquire_many_owned(bytes).await else {
            break;
        };
        if tx.send((stream, line, held)).await.is_err() {
            break;
        }
    }
}

/// The next line (without its `\n` or `\r\n`), or None at the end. At most
/// `max` bytes of it are kept: the rest is read and dropped in chunks and
/// the line ends with [`cut_marker`]. Bytes that are not UTF-8 are replaced.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    let mut dropped: u64 = 0;
    let mut read_any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            if !read_any {
                return Ok(None);
            }
            break;
        }
        read_any = true;
        let newline = available.iter().position(|b| *b == b'\n');
        let part = &available[..newline.unwrap_or(available.len())];
        let keep = part.len().min(max - line.len());
        line.extend_from_slice(&part[..keep]);
        dropped += (part.len() - keep) as u64;
        let used = newline.map_or(available.len(), |i| i + 1);
        reader.consume(used);
        if newline.is_some() {
            break;
        }
    }
    if dropped == 0 && line.last() == Some(&b'\r') {
        line.pop();
    }
    let mut text = String::from_utf8_lossy(&line).into_owned();
    if dropped > 0 {
        text.push_str(&cut_marker(dropped));
    }
    Ok(Some(text))
}

async fn stop_group(
    child: &mut tokio::process::Child,
    pgid: Option<i32>,
) -> std::io::Result<std::process::ExitStatus> {
    if let Some(pgid) = pgid {
        signal_group(pgid, libc::SIGTERM);
    }
    match tokio::time::timeout(KILL_GRACE, child.wait()).await {
        Ok(status) => status,
        Err(_) => {
            if let Some(pgid) = pgid {
                signal_group(pgid, libc::SIGKILL);
            }
            child.wait().await
        }
    }
}

/// A running agent's group, recorded as `<dir>/<pgid>` holding the leader's
/// start time (so a pid used again by another process is never taken for
/// it); the file goes when the group has ended.
struct Recorded(PathBuf);

impl Recorded {
    fn new(dir: &Path, pgid: i32) -> Option<Recorded> {
        let started = start_time(pgid)?;
        let write = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(dir.join(pgid.to_string()), started.to_string()));
        if let Err(e) = write {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot record an agent process");
            return None;
        }
        Some(Recorded(dir.join(pgid.to_string())))
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// When a process started (clock ticks after boot), from `/proc`.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name's closing parenthesis: state is field 3, the
    // start time field 22.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Kills (SIGKILL, whole group) the agents a dead server recorded in `dir`
/// and forgets them; returns how many groups were still there. A pid now
/// used by another process (another start time) is left alone.
pub fn kill_recorded(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let pgid = entry.file_name().to_string_lossy().parse::<i32>().ok();
        let recorded = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
        if let (Some(pgid), Some(recorded)) = (pgid, recorded)
            && pgid > 1
            && start_time(pgid) == Some(recorded)
        {
            signal_group(pgid, libc::SIGKILL);
            tracing::warn!(
                pgid,
                "killed an agent process group left by the previous server"
            );
            killed += 1;
        }
        let _ = std::fs::remove_file(&path);
    }
    killed
}

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: killpg only sends a signal; a stale or empty group is ESRCH.
    unsafe {
        libc::killpg(pgid, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Running or sleeping; a zombie (killed, not yet reaped) counts as gone.
    fn alive(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X"),
            Err(_) => false,
        }
    }

    #[tokio::test]
    async fn lines_are_read_and_the_exit_code_kept() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo one; echo two >&2; echo three; exit 3"]);
        let mut lines = Vec::new();
        let exit = run(cmd, &CancellationToken::new(), None, |s, l| {
            lines.push((s, l))
        })
        .await
        .unwrap();
        assert_eq!(
            exit,
            Exit {
                code: Some(3),
                stopped: false
            }
        );
        assert!(lines.contains(&(Stream::Stdout, "one".into())));
        assert!(lines.contains(&(Stream::Stderr, "two".into())));
        assert!(lines.contains(&(Stream::Stdout, "three".into())));
    }

    #[tokio::test]
    async fn long_lines_are_cut_and_the_rest_skipped() {
        let input: &[u8] = b"short\r\nabcdefghij\n\xff ok\nlast";
        let mut reader = BufReader::with_capacity(4, input);
        let mut lines = Vec::new();
        while let Some(line) = read_line(&mut reader, 6).await.unwrap() {
            lines.push(line);
        }
        assert_eq!(
            lines,
            vec![
                "short".to_string(),
                format!("abcdef{}", cut_marker(4)),
                "\u{fffd} ok".to_string(),
                "last".to_string(),
            ]
        );
    }

    #[tokio::test]
    async fn a_huge_line_without_newline_is_cut_not_buffered() {
        let mut cmd = Command::new("sh");
        // 64 MiB without a newline, then a normal line.
        cmd.args([
            "-c",
            "head -c 67108864 /dev/zero | tr '\\0' x; echo; echo after",
        ]);
        let mut lines = Vec::new();
        let exit = run(cmd, &CancellationToken::new(), None, |_, l| lines.push(l))
            .await
            .unwrap();
        assert_eq!(exit.code, Some(0));
        assert_eq!(
            lines.len(),
            2,
            "{:?}",
            lines.iter().map(String::len).collect::<Vec<_>>()
        );
        let over = 64 * 1024 * 1024 - MAX_LINE_BYTES as u64;
        assert_eq!(
            lines[0],
            format!("{}{}", "x".repeat(MAX_LINE_BYTES), cut_marker(over))
        );
        assert_eq!(lines[1], "after");
    }

    #[tokio::test]
    async fn cancel_ends_the_whole_group_including_stubborn_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let mut cmd = Command::new("sh");
        // A grandchild that ignores SIGTERM and detaches its output.
        cmd.arg("-c").arg(format!(
            "sh -c 'trap \"\" TERM; echo $$ > {pid}; exec sleep 300' >/dev/null 2>&1 & \
             while [ ! -s {pid} ]; do sleep 0.05; done; echo started; sleep 300",
            pid = pidfile.display()
        ));
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        let started = Instant::now();
        let exit = run(cmd, &cancel, None, move |_, line| {
            if line == "started" {
                trigger.cancel();
            }
        })
        .await
        .unwrap();
        assert!(exit.stopped);
        assert!(started.elapsed() < Duration::from_secs(30));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // Killed by SIGKILL after the grace period, and reaped by init soon.
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!alive(pid), "grandchild {pid} outlived its task");
    }

    #[tokio::test]
    async fn a_dead_servers_recorded_agents_are_killed_and_nothing_else() {
        use std::os::unix::process::CommandExt;
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("running");
        let spawn = || {
            std::process::Command::new("sh")
                .args(["-c", "sleep 300 & sleep 300"])
                .current_dir(dir.path())
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let mut agent = spawn();
        // A person's shell in the same directory, not an agent.
        let mut shell = spawn();
        let recorded = Recorded::new(&record, agent.id() as i32).unwrap();
        // The server dies without forgetting it.
        std::mem::forget(recorded);
        // A record whose pid is now someone else's.
        std::fs::write(record.join(shell.id().to_string()), "1").unwrap();
        assert_eq!(kill_recorded(&record), 1);
        assert!(!agent.wait().unwrap().success());
        assert!(shell.try_wait().unwrap().is_none(), "the shell was killed");
        assert_eq!(std::fs::read_dir(&record).unwrap().count(), 0);
        shell.kill().unwrap();
        let _ = shell.wait();
    }

    #[tokio::test]
    async fn stragglers_die_when_the_agent_exits() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("bg.pid");
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!(
            "sleep 300 >/dev/null 2>&1 & echo $! > {}; exit 0",
            pidfile.display()
        ));
        let exit = run(cmd, &CancellationToken::new(), None, |_, _| {})
            .await
            .unwrap();
        assert_eq!(exit.code, Some(0));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!alive(pid), "background process {pid} outlived the agent");
    }
}
