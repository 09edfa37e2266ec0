//! Reading log files: a cursor per subscriber, and decoded blocks shared by
//! the subscribers catching up through the same part of the same log.
//!
//! A log is cut into blocks of [`BLOCK`] bytes by where its lines *start*:
//! block `k` holds the lines starting in `[k·BLOCK, (k+1)·BLOCK)`. The file
//! only grows, so once the last of those lines is complete the block never
//! changes: it is decoded by the first subscriber that needs it and kept
//! (weakly) for the others while any of them still holds it. The tail of a
//! log being written is read line by line, by each subscriber alone.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use super::{LineIn, LogError, SharedEvent};
use crate::core::model::Id;

/// How much of a log file is read (and decoded) at a time.
pub(super) const BLOCK: u64 = 256 * 1024;

/// How far past a block's end the first read goes, for the line crossing it.
const EXTEND: u64 = 16 * 1024;

/// Decoded events, in offset order.
pub(super) type Events = Vec<Arc<SharedEvent>>;

/// Complete blocks some subscriber still holds, by execution and index.
#[derive(Default)]
pub(super) struct BlockCache {
    blocks: Mutex<HashMap<(Id, u64), Weak<Events>>>,
}

impl BlockCache {
    fn get(&self, key: (Id, u64)) -> Option<Arc<Events>> {
        self.blocks
            .lock()
            .expect("block cache lock")
            .get(&key)
            .and_then(Weak::upgrade)
    }

    fn insert(&self, key: (Id, u64), block: &Arc<Events>) {
        let mut blocks = self.blocks.lock().expect("block cache lock");
        if blocks.len() >= 64 {
            blocks.retain(|_, block| block.strong_count() > 0);
        }
        blocks.insert(key, Arc::downgrade(block));
    }
}

/// Some events of a log: `events[from..]`, held together so that a shared
/// block stays alive while a subscriber sends from it.
pub(super) struct Batch {
    events: Arc<Events>,
    from: usize,
}

impl Batch {
    pub(super) fn events(&self) -> &[Arc<SharedEvent>] {
        &self.events[self.from..]
    }
}

/// Reads a log past `position`, keeping the file open between reads
/// (positioned reads, so nothing else moves it).
pub(super) struct FileCursor {
    path: PathBuf,
    file: Option<Arc<std::fs::File>>,
    /// Where the next line starts: just past the last event read or delivered.
    pub(super) position: u64,
}

impl FileCursor {
    pub(super) fn new(path: PathBuf) -> Self {
        FileCursor {
            path,
            file: None,
            position: 0,
        }
    }

    /// The log's file, or `None` while there is none.
    fn file(&mut self) -> Result<Option<Arc<std::fs::File>>, LogError> {
        if let Some(file) = &self.file {
            return Ok(Some(file.clone()));
        }
        match std::fs::File::open(&self.path) {
            Ok(file) => Ok(Some(self.file.insert(Arc::new(file)).clone())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LogError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// The next events of execution `execution`'s log (at least one whole
    /// line, about a block at most); empty at the end. From a shared block
    /// when the position is in a complete one. Reading and decoding run off
    /// the async threads.
    pub(super) async fn read_shared(
        &mut self,
        cache: &BlockCache,
        execution: Id,
    ) -> Result<Batch, LogError> {
        let Some(file) = self.file()? else {
            return Ok(empty());
        };
        let key = (execution, self.position / BLOCK);
        let block = match cache.get(key) {
            Some(block) => Some(block),
            None => {
                let (file, path) = (file.clone(), self.path.clone());
                let block = blocking(move || read_block(&file, &path, key.1)).await?;
                if let Some(block) = &block {
                    cache.insert(key, block);
                }
                block
            }
        };
        let position = self.position;
        let batch = match block {
            Some(events) => Batch {
                from: events.partition_point(|event| event.end <= position),
                events,
            },
            None => empty(),
        };
        let batch = if batch.events().is_empty() {
            // The tail, still being written (or a block this cursor has read).
            let path = self.path.clone();
            let (events, _) = blocking(move || {
                read_lines(&file, &path, position, |line, end| {
                    Arc::new(line.into_shared(end))
                })
            })
            .await?;
            Batch {
                events: Arc::new(events),
                from: 0,
            }
        } else {
            batch
        };
        if let Some(last) = batch.events().last() {
            self.position = last.end;
        }
        Ok(batch)
    }

    /// The next complete lines (about a block at most, at least one line),
    /// each decoded by `decode(line, end of line in the file)`; empty at the
    /// end.
    pub(super) async fn read_new<T: Send + 'static>(
        &mut self,
        decode: fn(LineIn, u64) -> T,
    ) -> Result<Vec<T>, LogError> {
        let Some(file) = self.file()? else {
            return Ok(Vec::new());
        };
        let (path, start) = (self.path.clone(), self.position);
        let (items, consumed) = blocking(move || read_lines(&file, &path, start, decode)).await?;
        self.position += consumed;
        Ok(items)
    }
}

fn empty() -> Batch {
    Batch {
        events: Arc::new(Vec::new()),
        from: 0,
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    tokio::task::spawn_blocking(work).await?
}

/// Reads from `start` on (a block, or to a little past `end_after`), up to
/// the end of the file or the first newline at or after `end_after`
/// (`end_after` ≥ `start`). Returns the bytes read and whether that newline
/// was found.
fn read_until_newline(
    file: &std::fs::File,
    path: &Path,
    start: u64,
    end_after: u64,
) -> Result<(Vec<u8>, bool), LogError> {
    let read_error = |source| LogError::Read {
        path: path.to_path_buf(),
        source,
    };
    let len = file.metadata().map_err(read_error)?.len();
    let mut bytes = Vec::new();
    loop {
        let at = start + bytes.len() as u64;
        // A block, or to a little past `end_after`; then a block at a time.
        let size = if bytes.is_empty() {
            BLOCK.max(end_after - start + EXTEND)
        } else {
            BLOCK
        };
        let want = len.saturating_sub(at).min(size) as usize;
        if want == 0 {
            return Ok((bytes, false));
        }
        let filled = bytes.len();
        bytes.resize(filled + want, 0);
        let read = file.read_at(&mut bytes[filled..], at).map_err(read_error)?;
        bytes.truncate(filled + read);
        if read == 0 {
            return Ok((bytes, false));
        }
        // Only where this read landed needs looking at.
        let look_from = (end_after.saturating_sub(start) as usize).max(filled);
        if look_from < bytes.len() && bytes[look_from..].contains(&b'\n') {
            return Ok((bytes, true));
        }
    }
}

/// Block `index` of the log, if all its lines are complete.
fn read_block(
    file: &std::fs::File,
    path: &Path,
    index: u64,
) -> Result<Option<Arc<Events>>, LogError> {
    let (begin, end) = (index * BLOCK, (index + 1) * BLOCK);
    // From the byte before the block, to see whether a line starts at it.
    let from = begin.saturating_sub(1);
    let (bytes, complete) = read_until_newline(file, path, from, end - 1)?;
    if !complete {
        return Ok(None);
    }
    let first = if index == 0 {
        0
    } else {
        match bytes.iter().position(|b| *b == b'\n') {
            Some(newline) => newline + 1,
            None => return Ok(None),
        }
    };
    let last_newline = (end - 1 - from) as usize
        + bytes[(end - 1 - from) as usize..]
            .iter()
            .position(|b| *b == b'\n')
            .expect("read_until_newline found it");
    if first > last_newline {
        // One line longer than the block started before it.
        return Ok(Some(Arc::new(Vec::new())));
    }
    let events = decode_lines(
        &bytes[first..=last_newline],
        path,
        from + first as u64,
        |line, end| Arc::new(line.into_shared(end)),
    )?;
    Ok(Some(Arc::new(events)))
}

/// Reads and decodes the complete lines from `start`: about a block at
/// most, but always at least one whole line. Returns them and the bytes they
/// took.
pub(super) fn read_lines<T>(
    file: &std::fs::File,
    path: &Path,
    start: u64,
    decode: fn(LineIn, u64) -> T,
) -> Result<(Vec<T>, u64), LogError> {
    let (bytes, _) = read_until_newline(file, path, start, start)?;
    // Only whole lines: a line being written is read next time.
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    let items = decode_lines(&bytes[..complete], path, start, decode)?;
    Ok((items, complete as u64))
}

/// Decodes whole lines (`bytes` ends with a newline, or is empty) that start
/// at `start` in the file.
fn decode_lines<T>(
    bytes: &[u8],
    path: &Path,
    start: u64,
    decode: fn(LineIn, u64) -> T,
) -> Result<Vec<T>, LogError> {
    let mut items = Vec::new();
    let mut at = start;
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        at += line.len() as u64;
        let line = &line[..line.len() - 1];
        if line.is_empty() {
            continue;
        }
        let parsed: LineIn = serde_json::from_slice(line).map_err(|source| LogError::Corrupt {
            path: path.to_path_buf(),
            source,
        })?;
        items.push(decode(parsed, at));
    }
    Ok(items)
}

/// The number of complete lines of a log and its length in bytes.
pub(super) fn count_complete_lines(path: &Path) -> std::io::Result<(u64, u64)> {
    match std::fs::read(path) {
        Ok(bytes) => Ok((
            bytes.iter().filter(|b| **b == b'\n').count() as u64,
            bytes.len() as u64,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((0, 0)),
        Err(e) => Err(e),
    }
}
