//! Execution logs: an append-only JSONL file per execution, fanned out live.
//!
//! A [`LogWriter`] writes each event to disk first, then broadcasts it. A
//! subscriber replays the file from its offset, then follows the broadcast;
//! if it falls behind (the broadcast lags) it catches up from the file, so a
//! slow subscriber never slows the agent or the other subscribers. Each
//! subscriber is one task feeding a small channel: when the client goes away
//! the send fails and the task ends.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{broadcast, mpsc};

use super::model::{Id, UnixMillis, now_millis};

const LIVE_CAPACITY: usize = 1024;
const SUBSCRIBER_BUFFER: usize = 256;
/// How much of a log file a catching-up subscriber reads at a time.
const READ_CHUNK: u64 = 256 * 1024;

/// What an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogKind {
    /// Text the agent wrote.
    Text,
    /// The agent called a tool.
    ToolCall,
    /// A tool answered.
    ToolResult,
    /// Session start, retries, status: the agent's or ours.
    System,
    /// The run's final result.
    Result,
    /// A line the agent process wrote to stderr.
    Stderr,
    /// The agent asked a question; the task waits for an answer.
    Question,
}

/// One structured log event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogEvent {
    /// 0 for the first event of an execution, then 1, 2, …
    pub offset: u64,
    pub at: UnixMillis,
    pub kind: LogKind,
    /// A one-line human reading of the event.
    pub text: String,
    /// The structured event (JSON), when there is one.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub payload: serde_json::Value,
    /// The line exactly as the agent printed it, when it printed one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub raw: String,
}

/// An event with the execution it belongs to, as subscribers receive it.
#[derive(Clone, Debug, PartialEq)]
pub struct LogItem {
    pub execution_id: Id,
    pub event: LogEvent,
}

/// What a subscriber receives: items, or one read failure before the end.
pub type LogSender = mpsc::Sender<Result<LogItem, String>>;

/// Owns the log directory and the live channels of running executions.
pub struct LogHub {
    dir: PathBuf,
    live: Mutex<HashMap<Id, broadcast::Sender<LogEvent>>>,
}

impl LogHub {
    pub fn new(dir: PathBuf) -> std::io::Result<Arc<LogHub>> {
        std::fs::create_dir_all(&dir)?;
        Ok(Arc::new(LogHub {
            dir,
            live: Mutex::new(HashMap::new()),
        }))
    }

    pub fn path(&self, execution: Id) -> PathBuf {
        self.dir.join(format!("{execution}.jsonl"))
    }

    /// Opens (or reopens, appending) the log of an execution and makes it live.
    pub fn writer(self: &Arc<Self>, execution: Id) -> std::io::Result<LogWriter> {
        let path = self.path(execution);
        let next_offset = count_complete_lines(&path)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let (sender, _) = broadcast::channel(LIVE_CAPACITY);
        self.live
            .lock()
            .expect("log hub lock")
            .insert(execution, sender.clone());
        Ok(LogWriter {
            hub: self.clone(),
            execution,
            path,
            file,
            next_offset,
            sender,
        })
    }

    fn live_receiver(&self, execution: Id) -> Option<broadcast::Receiver<LogEvent>> {
        self.live
            .lock()
            .expect("log hub lock")
            .get(&execution)
            .map(|s| s.subscribe())
    }

    /// Whether the execution's log is still being written.
    pub fn is_live(&self, execution: Id) -> bool {
        self.live
            .lock()
            .expect("log hub lock")
            .contains_key(&execution)
    }

    /// A channel for a subscriber, sized so a slow client holds a little.
    pub fn channel() -> (LogSender, mpsc::Receiver<Result<LogItem, String>>) {
        mpsc::channel(SUBSCRIBER_BUFFER)
    }

    /// Events from `from_offset` on; with `follow`, then live ones until the
    /// execution ends. The channel closes at the end; an `Err` is a read
    /// failure reported once before closing.
    pub fn subscribe(
        self: &Arc<Self>,
        execution: Id,
        from_offset: u64,
        follow: bool,
    ) -> mpsc::Receiver<Result<LogItem, String>> {
        let (tx, rx) = Self::channel();
        let hub = self.clone();
        tokio::spawn(async move {
            if let Err(e) = hub.feed(execution, from_offset, follow, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        rx
    }

    /// Sends one execution's events into `tx` (see [`LogHub::subscribe`]).
    /// Returns false when the subscriber has gone away.
    pub async fn feed(
        &self,
        execution: Id,
        from_offset: u64,
        follow: bool,
        tx: &LogSender,
    ) -> Result<bool, String> {
        // Subscribe before reading the file, so nothing falls in between.
        let mut live = if follow {
            self.live_receiver(execution)
        } else {
            None
        };
        let mut reader = FileCursor::new(self.path(execution));
        let mut next = from_offset;
        let item = |event| {
            Ok(LogItem {
                execution_id: execution,
                event,
            })
        };
        loop {
            // Catch up from the file a bounded chunk at a time, so a slow
            // subscriber holds little memory however far behind it is.
            loop {
                let batch = reader.read_new().await?;
                if batch.is_empty() {
                    break;
                }
                for event in batch {
                    if event.offset >= next {
                        next = event.offset + 1;
                        if tx.send(item(event)).await.is_err() {
                            return Ok(false);
                        }
                    }
                }
            }
            let Some(receiver) = live.as_mut() else {
                return Ok(true);
            };
            loop {
                match receiver.recv().await {
                    Ok(event) if event.offset < next => continue,
                    Ok(event) if event.offset == next => {
                        next += 1;
                        if tx.send(item(event)).await.is_err() {
                            return Ok(false);
                        }
                    }
                    // A gap or a lag: the file has everything; catch up there.
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => {
                        live = None;
                        break;
                    }
                }
            }
        }
    }
}

impl LogHub {
    /// Every event of an execution's log as written so far.
    pub async fn read_all(&self, execution: Id) -> Result<Vec<LogEvent>, String> {
        let mut cursor = FileCursor::new(self.path(execution));
        let mut events = Vec::new();
        loop {
            let batch = cursor.read_new().await?;
            if batch.is_empty() {
                return Ok(events);
            }
            events.extend(batch);
        }
    }
}

/// Appends events to one execution's log. Dropping it ends the live stream.
pub struct LogWriter {
    hub: Arc<LogHub>,
    execution: Id,
    path: PathBuf,
    file: std::fs::File,
    next_offset: u64,
    sender: broadcast::Sender<LogEvent>,
}

impl LogWriter {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the event to disk (one `write` of one line), then broadcasts it.
    pub fn append(
        &mut self,
        kind: LogKind,
        text: impl Into<String>,
        payload: serde_json::Value,
        raw: impl Into<String>,
    ) -> std::io::Result<u64> {
        let event = LogEvent {
            offset: self.next_offset,
            at: now_millis(),
            kind,
            text: text.into(),
            payload,
            raw: raw.into(),
        };
        let mut line = serde_json::to_vec(&event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.next_offset += 1;
        let _ = self.sender.send(event);
        Ok(self.next_offset - 1)
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let mut live = self.hub.live.lock().expect("log hub lock");
        if live
            .get(&self.execution)
            .is_some_and(|s| s.same_channel(&self.sender))
        {
            live.remove(&self.execution);
        }
    }
}

/// Reads complete lines past the last read position.
struct FileCursor {
    path: PathBuf,
    position: u64,
}

impl FileCursor {
    fn new(path: PathBuf) -> Self {
        FileCursor { path, position: 0 }
    }

    async fn read_new(&mut self) -> Result<Vec<LogEvent>, String> {
        let mut file = match tokio::fs::File::open(&self.path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot read log {}: {e}", self.path.display())),
        };
        file.seek(std::io::SeekFrom::Start(self.position))
            .await
            .map_err(|e| e.to_string())?;
        // At most a chunk, but always at least one whole line.
        let mut bytes = Vec::new();
        loop {
            let read = (&mut file)
                .take(READ_CHUNK)
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| e.to_string())?;
            if read == 0 || bytes.contains(&b'\n') {
                break;
            }
        }
        // Only whole lines: a line being written is read next time.
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.position += complete as u64;
        bytes[..complete]
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| {
                serde_json::from_slice(line)
                    .map_err(|e| format!("corrupt log line in {}: {e}", self.path.display()))
            })
            .collect()
    }
}

fn count_complete_lines(path: &Path) -> std::io::Result<u64> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes.iter().filter(|b| **b == b'\n').count() as u64),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    async fn collect(mut rx: mpsc::Receiver<Result<LogItem, String>>) -> Vec<u64> {
        let mut offsets = Vec::new();
        while let Some(item) = rx.recv().await {
            offsets.push(item.unwrap().event.offset);
        }
        offsets
    }

    #[tokio::test]
    async fn replay_then_follow_until_the_writer_ends() {
        let dir = tempfile::tempdir().unwrap();
        let hub = LogHub::new(dir.path().to_path_buf()).unwrap();
        let execution = Id::new();
        let mut writer = hub.writer(execution).unwrap();
        for i in 0..5 {
            writer
                .append(LogKind::Text, format!("line {i}"), json!({"i": i}), "")
                .unwrap();
        }
        let early = hub.subscribe(execution, 0, true);
        let late = hub.subscribe(execution, 3, true);
        let snapshot = hub.subscribe(execution, 0, false);
        assert_eq!(collect(snapshot).await, vec![0, 1, 2, 3, 4]);
        let producer = tokio::spawn(async move {
            for i in 5..2000 {
                writer
                    .append(LogKind::Text, format!("line {i}"), json!(null), "")
                    .unwrap();
                if i % 100 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            drop(writer);
        });
        let (early, late) = tokio::join!(collect(early), collect(late));
        producer.await.unwrap();
        assert_eq!(early, (0..2000).collect::<Vec<_>>());
        assert_eq!(late, (3..2000).collect::<Vec<_>>());
        assert!(!hub.is_live(execution));

        // Reopening appends after what is there.
        let mut again = hub.writer(execution).unwrap();
        assert_eq!(
            again
                .append(LogKind::System, "resumed", json!(null), "")
                .unwrap(),
            2000
        );
    }

    #[tokio::test]
    async fn a_slow_subscriber_catches_up_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let hub = LogHub::new(dir.path().to_path_buf()).unwrap();
        let execution = Id::new();
        let mut writer = hub.writer(execution).unwrap();
        let mut slow = hub.subscribe(execution, 0, true);
        // Far more than the live channel holds, while nobody reads.
        for i in 0..(LIVE_CAPACITY as u64 * 4) {
            writer
                .append(LogKind::Text, format!("{i}"), json!(null), "")
                .unwrap();
        }
        drop(writer);
        let mut next = 0;
        while let Some(item) = slow.recv().await {
            assert_eq!(item.unwrap().event.offset, next);
            next += 1;
        }
        assert_eq!(next, LIVE_CAPACITY as u64 * 4);
    }
}
