//! The server's data dir (the database, logs, sandboxes with their agents'
//! work): made private, and held by one server at a time.
//!
//! A second server on the same data dir would take the first one's agents
//! for left-overs of a crash and kill them. [`DataDirLock`] is an `flock`
//! on `server.lock` inside it: the kernel drops it when its holder exits,
//! however it exits (`kill -9` leaves no stale lock), and the file names
//! the holder's pid for the error the second server prints.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Context, bail};

const LOCK_FILE: &str = "server.lock";

/// Creates the data dir for its owner only (0700) when missing; an
/// existing one is left as its owner set it.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data dir {}", dir.display()))
}

/// This server's hold on its data dir, until it is dropped.
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Takes the data dir, or says which process holds it.
    pub fn acquire(dir: &Path) -> anyhow::Result<DataDirLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: a descriptor this function owns; flock takes no pointers.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(error).with_context(|| format!("cannot lock {}", path.display()));
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim() {
                pid if !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()) => {
                    format!("pid {pid}")
                }
                _ => "a process that has not said its pid yet".to_string(),
            };
            bail!(
                "the data dir {} is in use by another claudomator server ({holder}): \
                 stop it, or give this server another data_dir",
                dir.display()
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_hold_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let error = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains(&format!("pid {}", std::process::id())),
            "{error}"
        );
        assert!(
            error.contains("in use by another claudomator server"),
            "{error}"
        );
        drop(first);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
