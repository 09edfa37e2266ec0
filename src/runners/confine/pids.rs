//! A cap on how many processes (threads included) one agent's run may
//! have at once, so a fork bomb stays inside its attempt instead of taking
//! the machine's process table (and the server's ability to start git)
//! with it. The PID namespace ends them all with the attempt; this keeps
//! their number bounded while it runs.
//!
//! - Where the server may make a `pids` cgroup (root, cgroup v1 or v2):
//!   one per run, `pids.max` = the cap, removed when the run ends.
//! - Otherwise, `RLIMIT_NPROC` for the agent: what the server's user runs
//!   now plus the cap (the kernel counts it per user, and inside
//!   the agent's user namespace per namespace). Root ignores it: as root
//!   without a writable cgroup there is no cap, and the log says so.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::process::Command;

/// The cgroup of one run; removed when dropped (after the run).
#[derive(Debug)]
pub struct PidsLimit {
    cgroup: PathBuf,
}

impl Drop for PidsLimit {
    fn drop(&mut self) {
        if std::fs::remove_dir(&self.cgroup).is_ok() {
            return;
        }
        // The run's processes may still be exiting (a PID namespace ends
        // them all, not at once): tried again for a few seconds, then left
        // for the next start's sweep.
        let cgroup = self.cgroup.clone();
        std::thread::spawn(move || {
            for _ in 0..50 {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if std::fs::remove_dir(&cgroup).is_ok() {
                    return;
                }
            }
        });
    }
}

/// Caps `command`'s processes; returns the cgroup to keep until it ends,
/// and a few words for the attempt's log.
pub fn apply(command: &mut Command, max: u64) -> (Option<PidsLimit>, String) {
    if let Some(cgroup) = make_cgroup(max) {
        let procs = CString::new(cgroup.join("cgroup.procs").as_os_str().as_bytes());
        if let Ok(procs) = procs {
            // SAFETY: between fork and exec only open, write and close run,
            // on memory prepared before the fork.
            unsafe {
                command.pre_exec(move || join_cgroup(&procs));
            }
            return (
                Some(PidsLimit { cgroup }),
                format!("at most {max} processes (a pids cgroup)"),
            );
        }
    }
    // SAFETY: geteuid cannot fail and touches no memory.
    if unsafe { libc::geteuid() } == 0 {
        return (
            None,
            "no process limit (root, and no writable pids cgroup)".into(),
        );
    }
    let limit = user_tasks() + max;
    // SAFETY: setrlimit on a value computed before the fork.
    unsafe {
        command.pre_exec(move || {
            let rlimit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            if libc::setrlimit(libc::RLIMIT_NPROC, &rlimit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    (
        None,
        format!("at most {max} processes more than the user runs (RLIMIT_NPROC)"),
    )
}

/// Moves the calling (just forked) process into the cgroup.
fn join_cgroup(procs: &CString) -> std::io::Result<()> {
    // SAFETY: a NUL-terminated path; the fd is closed on every path.
    unsafe {
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
        let error = std::io::Error::last_os_error();
        libc::close(fd);
        if written != 1 {
            return Err(error);
        }
    }
    Ok(())
}

/// Where this server's run cgroups go, if it may make them: v1's pids
/// hierarchy, or v2's root with the pids controller passed down.
fn parent() -> Option<PathBuf> {
    static PARENT: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    PARENT
        .get_or_init(|| {
            let v1 = Path::new("/sys/fs/cgroup/pids");
            let v2 = Path::new("/sys/fs/cgroup");
            if v1.join("cgroup.procs").exists() {
                let parent = v1.join("claudomator");
                std::fs::create_dir_all(&parent).ok()?;
                Some(parent)
            } else if std::fs::read_to_string(v2.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids"))
            {
                std::fs::write(v2.join("cgroup.subtree_control"), "+pids").ok()?;
                let parent = v2.join("claudomator");
                std::fs::create_dir_all(&parent).ok()?;
                std::fs::write(parent.join("cgroup.subtree_control"), "+pids").ok()?;
                Some(parent)
            } else {
                None
            }
        })
        .clone()
}

/// At start-up: kills what is left in the run cgroups of servers that are
/// gone and removes those cgroups; returns how many processes it killed.
/// As root, bubblewrap's change of credentials clears the parent-death
/// signal, so an agent started just before its server was killed (before
/// the server recorded its group) is found here, by its cgroup.
pub fn kill_left_over() -> usize {
    parent().map_or(0, |parent| sweep(&parent))
}

/// The run cgroups of servers that are gone (`run-<pid>-<n>`), emptied and
/// removed. A live server's cgroup may be empty for a moment, between its
/// making and its agent joining it: never touched.
fn sweep(parent: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("run-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        let server_gone = !Path::new("/proc").join(pid).exists();
        if !server_gone || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let procs = std::fs::read_to_string(entry.path().join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill only sends a signal.
            if pid > 1 && unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                killed += 1;
            }
        }
        for _ in 0..20 {
            if std::fs::remove_dir(entry.path()).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    if killed > 0 {
        tracing::warn!(
            killed,
            "killed agent processes a server that is gone left in their cgroups"
        );
    }
    killed
}

/// A new run cgroup capped at `max` processes.
fn make_cgroup(max: u64) -> Option<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let parent = parent()?;
    let name = format!(
        "run-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let cgroup = parent.join(name);
    std::fs::create_dir(&cgroup).ok()?;
    if std::fs::write(cgroup.join("pids.max"), max.to_string()).is_err() {
        let _ = std::fs::remove_dir(&cgroup);
        return None;
    }
    Some(cgroup)
}

/// Tasks (processes and threads) the server's user runs now: what
/// `RLIMIT_NPROC` counts.
fn user_tasks() -> u64 {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().as_bytes().iter().all(u8::is_ascii_digit))
        .filter(|e| e.metadata().is_ok_and(|m| m.uid() == uid))
        .map(|e| std::fs::read_dir(e.path().join("task")).map_or(1, |tasks| tasks.count() as u64))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_leaves_a_live_servers_empty_cgroups_alone() {
        let parent = tempfile::tempdir().unwrap();
        let live = parent.path().join(format!("run-{}-0", std::process::id()));
        let dead = parent.path().join("run-4000000000-3");
        std::fs::create_dir(&live).unwrap();
        std::fs::create_dir(&dead).unwrap();
        sweep(parent.path());
        assert!(
            live.exists(),
            "another live server's cgroup, about to be joined"
        );
        assert!(!dead.exists());
    }

    #[test]
    fn the_users_tasks_include_this_process_and_its_threads() {
        let threads: Vec<_> = (0..3)
            .map(|_| {
                std::thread::spawn(|| std::thread::sleep(std::time::Duration::from_millis(300)))
            })
            .collect();
        assert!(user_tasks() >= 4);
        for thread in threads {
            thread.join().unwrap();
        }
    }
}
