//! Runs an agent process in its own process group, hands every line it
//! prints to the caller, and makes sure nothing it started outlives it: on
//! cancel the whole group gets SIGTERM, then SIGKILL after a grace period;
//! after a normal exit, any stragglers left in the group are killed too.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long a cancelled agent gets between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(3);

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

/// Spawns `command` (stdin closed, stdout and stderr read line by line) in a
/// new process group and calls `on_line` for each line until it exits or
/// `cancel` fires.
pub async fn run(
    mut command: Command,
    cancel: &CancellationToken,
    mut on_line: impl FnMut(Stream, String),
) -> std::io::Result<Exit> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let pgid = child.id().map(|id| id as i32);

    let (tx, mut rx) = mpsc::channel::<(Stream, String)>(1024);
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(forward(
            BufReader::new(out),
            Stream::Stdout,
            tx.clone(),
        )));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(forward(
            BufReader::new(err),
            Stream::Stderr,
            tx.clone(),
        )));
    }
    drop(tx);

    let mut stopped = false;
    let mut status = None;
    loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some((stream, line)) => on_line(stream, line),
                // Both pipes closed: the process is done writing.
                None => break,
            },
            _ = cancel.cancelled(), if !stopped => {
                stopped = true;
                status = Some(stop_group(&mut child, pgid).await?);
            }
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
    for reader in readers {
        let _ = reader.await;
    }
    Ok(Exit {
        code: status.code(),
        stopped,
    })
}

async fn forward<R: tokio::io::AsyncBufRead + Unpin>(
    reader: R,
    stream: Stream,
    tx: mpsc::Sender<(Stream, String)>,
) {
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if tx.send((stream, line)).await.is_err() {
            break;
        }
    }
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
        let exit = run(cmd, &CancellationToken::new(), |s, l| lines.push((s, l)))
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
        let exit = run(cmd, &cancel, move |_, line| {
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
    async fn stragglers_die_when_the_agent_exits() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("bg.pid");
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!(
            "sleep 300 >/dev/null 2>&1 & echo $! > {}; exit 0",
            pidfile.display()
        ));
        let exit = run(cmd, &CancellationToken::new(), |_, _| {})
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
