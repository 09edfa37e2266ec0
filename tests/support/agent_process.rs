//! Running an agent CLI as a child process in a throwaway sandbox and
//! collecting its JSONL stdout: shared by the Gemini and Codex CLI tests.
#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// A temp dir with a git repo (the CLI's cwd) and a home for the CLI.
pub struct Sandbox {
    _dir: TempDir,
    /// The CLI's cwd, canonical (the CLIs report, and the mocks see, the real
    /// path).
    pub repo: PathBuf,
    /// The CLI's `HOME`.
    pub home: PathBuf,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        let out = std::process::Command::new("git")
            .args(["init", "-q", "."])
            .current_dir(&repo)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git init: {out:?}");
        let repo = repo.canonicalize().unwrap();
        let home = home.canonicalize().unwrap();
        Sandbox {
            _dir: dir,
            repo,
            home,
        }
    }

    /// The content of `file` in the repo, if it exists.
    pub fn read(&self, file: &str) -> Option<String> {
        std::fs::read_to_string(self.repo.join(file)).ok()
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

/// What a finished run printed.
pub struct Run {
    pub name: String,
    pub status: ExitStatus,
    /// stdout's lines parsed as JSON, in order (lines that are not JSON are
    /// kept in `stdout` only).
    pub events: Vec<Value>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Events whose `type` is `kind`.
    pub fn events_of(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["type"] == kind).collect()
    }

    /// The first event of type `kind`, or a panic showing the run.
    pub fn first(&self, kind: &str) -> &Value {
        self.events_of(kind)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("no {kind} event\n{self}"))
    }

    /// The last event, or a panic showing the run.
    pub fn last(&self) -> &Value {
        self.events
            .last()
            .unwrap_or_else(|| panic!("no events\n{self}"))
    }

    /// The `type` of every event, in order.
    pub fn types(&self) -> Vec<String> {
        self.events
            .iter()
            .map(|e| e["type"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::os::unix::process::ExitStatusExt;
        write!(
            f,
            "{}: exit {:?} (signal {:?}) after {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.name,
            self.status.code(),
            self.status.signal(),
            self.elapsed,
            self.stdout,
            self.stderr
        )
    }
}

/// Waits for `child` (killing it after `timeout`, which fails the test), then
/// parses its stdout as JSON lines.
pub fn finish(name: &str, mut child: Child, started: Instant, timeout: Duration) -> Run {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            timed_out = true;
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    let events = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(Value::is_object)
        .collect();
    let run = Run {
        name: name.to_string(),
        status,
        events,
        stdout,
        stderr,
        elapsed: started.elapsed(),
    };
    if timed_out {
        panic!("{name} did not finish within {timeout:?}; killed\n{run}");
    }
    run
}
