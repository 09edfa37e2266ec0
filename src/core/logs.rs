//! Execution logs: an append-only JSONL file per execution, fanned out live.
//!
//! A [`LogWriter`] writes each event to disk first, then broadcasts it. A
//! subscriber replays the file from its offset, then follows the broadcast;
//! if it falls behind (the broadcast lags) it catches up from the file, from
//! just after the last event it delivered, so a slow subscriber never slows
//! the agent or the other subscribers. Each subscriber is one task feeding a
//! small channel: when the client goes away the send fails and the task ends.
//!
//! What subscribers receive is a [`SharedEvent`]: decoded once (by the writer
//! for live events, by the reading subscriber for the file) with the payload
//! already as JSON text, behind an `Arc`, so a hundred subscribers cost a
//! hundred pointer copies, not a hundred parses and serialisations.
//!
//! When an agent's line is itself the event's payload (its stdout JSON, the
//! usual case), the line is stored and sent once: on disk as `raw` with
//! `raw_is_payload`, to subscribers as `payload_json` with `raw_is_payload`.

mod file;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc};

use super::bus::BusError;
use super::model::{Id, UnixMillis, now_millis};
use crate::store::StoreError;
use file::{BlockCache, FileCursor, count_complete_lines};

const LIVE_CAPACITY: usize = 1024;
const SUBSCRIBER_BUFFER: usize = 256;

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
    /// A stderr line the agent CLI prints on every run (a colour warning,
    /// "YOLO mode is enabled", "Reading additional input from stdin"):
    /// kept in the log file, left out of `StreamLogs` unless asked for.
    Debug,
}

/// One structured log event, whole: what [`LogHub::read_all`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct LogEvent {
    /// 0 for the first event of an execution, then 1, 2, …
    pub offset: u64,
    pub at: UnixMillis,
    pub kind: LogKind,
    /// A one-line human reading of the event.
    pub text: String,
    /// The structured event (JSON), when there is one.
    pub payload: Value,
    /// The line exactly as the agent printed it, when it printed one.
    pub raw: String,
}

/// One event as subscribers receive it, shared by all of them (see the
/// module's documentation).
#[derive(Clone, Debug, PartialEq)]
pub struct SharedEvent {
    pub offset: u64,
    pub at: UnixMillis,
    pub kind: LogKind,
    pub text: String,
    /// The payload as JSON; empty when there is none. With `raw_is_payload`
    /// it is the agent's line byte for byte.
    pub payload_json: String,
    /// The agent's line, when it printed one and it is not `payload_json`.
    pub raw: String,
    /// `payload_json` is also the agent's line (and `raw` is empty).
    pub raw_is_payload: bool,
    /// Where this event's line ends in the log file: a subscriber that
    /// delivered it resumes reading there.
    end: u64,
}

impl SharedEvent {
    /// The shared form of an event: the payload serialised, or, when it is
    /// the agent's line parsed, the line itself.
    pub fn new(event: LogEvent) -> SharedEvent {
        LineIn {
            raw_is_payload: raw_is_payload(&event.payload, &event.raw),
            offset: event.offset,
            at: event.at,
            kind: event.kind,
            text: event.text,
            payload: event.payload,
            raw: event.raw,
        }
        .into_shared(0)
    }

    /// The line exactly as the agent printed it, or "" if it printed none.
    pub fn raw_line(&self) -> &str {
        if self.raw_is_payload {
            &self.payload_json
        } else {
            &self.raw
        }
    }
}

/// Whether `payload` is `raw` parsed, so storing and sending `raw` is enough.
fn raw_is_payload(payload: &Value, raw: &str) -> bool {
    !payload.is_null()
        && !raw.is_empty()
        && serde_json::from_str::<Value>(raw).is_ok_and(|parsed| parsed == *payload)
}

/// One line of a log file as written. The payload is left out when it is
/// `raw` parsed (`raw_is_payload`), or null.
#[derive(Serialize)]
struct LineOut<'a> {
    offset: u64,
    at: UnixMillis,
    kind: LogKind,
    text: &'a str,
    #[serde(skip_serializing_if = "Value::is_null")]
    payload: &'a Value,
    #[serde(skip_serializing_if = "str::is_empty")]
    raw: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    raw_is_payload: bool,
}

/// One line of a log file as read (older files carry both the payload and
/// the line).
#[derive(Deserialize)]
struct LineIn {
    offset: u64,
    at: UnixMillis,
    kind: LogKind,
    #[serde(default)]
    text: String,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    raw: String,
    #[serde(default)]
    raw_is_payload: bool,
}

impl LineIn {
    fn into_event(self) -> LogEvent {
        let payload = if self.raw_is_payload {
            serde_json::from_str(&self.raw).unwrap_or(Value::Null)
        } else {
            self.payload
        };
        LogEvent {
            offset: self.offset,
            at: self.at,
            kind: self.kind,
            text: self.text,
            payload,
            raw: self.raw,
        }
    }

    fn into_shared(self, end: u64) -> SharedEvent {
        let (payload_json, raw) = if self.raw_is_payload {
            (self.raw, String::new())
        } else if self.payload.is_null() {
            (String::new(), self.raw)
        } else {
            (self.payload.to_string(), self.raw)
        };
        SharedEvent {
            offset: self.offset,
            at: self.at,
            kind: self.kind,
            text: self.text,
            payload_json,
            raw,
            raw_is_payload: self.raw_is_payload,
            end,
        }
    }
}

/// An event with the execution it belongs to, as subscribers receive it.
#[derive(Clone, Debug, PartialEq)]
pub struct LogItem {
    pub execution_id: Id,
    pub event: Arc<SharedEvent>,
}

/// Why a log could not be read to its end: what a subscriber receives once,
/// before the stream ends.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot read log {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The blocking read was lost (its thread panicked or was cancelled).
    #[error("cannot read log: {0}")]
    Reader(#[from] tokio::task::JoinError),
    #[error("corrupt log line in {}: {source}", .path.display())]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A line shared through the store that does not decode.
    #[error("unreadable log line: {0}")]
    Unreadable(serde_json::Error),
    /// Reading a shared log, or the execution, from the store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Waiting on the change bus for a task's next execution.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// What a subscriber receives: items, or one read failure before the end.
pub type LogResult = Result<LogItem, LogError>;
pub type LogSender = mpsc::Sender<LogResult>;

/// Owns the log directory and the live channels of running executions.
pub struct LogHub {
    dir: PathBuf,
    live: Mutex<HashMap<Id, broadcast::Sender<Arc<SharedEvent>>>>,
    /// Parts of logs decoded once for every subscriber catching up there.
    blocks: BlockCache,
    /// Where written lines are also sent to be shared through the store
    /// (several servers on one database), when that is on.
    share: std::sync::OnceLock<mpsc::UnboundedSender<Shared>>,
}

/// A written log line to share: (execution, offset, the line).
pub type SharedLine = (Id, u64, String);

/// What goes to the task that shares lines through the store.
#[derive(Debug)]
pub enum Shared {
    Line(SharedLine),
    /// Answered once every line sent before it is in the store.
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl LogHub {
    pub fn new(dir: PathBuf) -> std::io::Result<Arc<LogHub>> {
        std::fs::create_dir_all(&dir)?;
        Ok(Arc::new(LogHub {
            dir,
            live: Mutex::new(HashMap::new()),
            blocks: BlockCache::default(),
            share: std::sync::OnceLock::new(),
        }))
    }

    /// From now on, every line written is also sent to `lines` (once; a
    /// second call is ignored).
    pub fn share_lines(&self, lines: mpsc::UnboundedSender<Shared>) {
        let _ = self.share.set(lines);
    }

    /// Waits until every line written so far is in the store (at most
    /// `limit`), so that a reader on another server who sees an execution
    /// ended also finds all of its lines. Returns at once when lines are
    /// not shared; false when the lines did not get in within `limit`.
    pub async fn flush_shared(&self, limit: std::time::Duration) -> bool {
        let Some(share) = self.share.get() else {
            return true;
        };
        let (done, flushed) = tokio::sync::oneshot::channel();
        if share.send(Shared::Flush(done)).is_err() {
            return false;
        }
        matches!(tokio::time::timeout(limit, flushed).await, Ok(Ok(())))
    }

    /// Whether this server's log of the execution is on its disk.
    pub fn has_file(&self, execution: Id) -> bool {
        self.path(execution).exists()
    }

    /// A log line as written (shared through the store) as subscribers
    /// receive it.
    pub fn parse_line(line: &str) -> Result<SharedEvent, LogError> {
        serde_json::from_str::<LineIn>(line)
            .map(|line| line.into_shared(0))
            .map_err(LogError::Unreadable)
    }

    pub fn path(&self, execution: Id) -> PathBuf {
        self.dir.join(format!("{execution}.jsonl"))
    }

    /// Opens (or reopens, appending) the log of an execution and makes it live.
    pub fn writer(self: &Arc<Self>, execution: Id) -> std::io::Result<LogWriter> {
        let path = self.path(execution);
        let (next_offset, len) = count_complete_lines(&path)?;
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
            len,
            sender,
        })
    }

    fn live_receiver(&self, execution: Id) -> Option<broadcast::Receiver<Arc<SharedEvent>>> {
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
    pub fn channel() -> (LogSender, mpsc::Receiver<LogResult>) {
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
    ) -> mpsc::Receiver<LogResult> {
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
    ) -> Result<bool, LogError> {
        // Subscribe before reading the file, so nothing falls in between.
        let mut live = if follow {
            self.live_receiver(execution)
        } else {
            None
        };
        // Its position is always just past the last event delivered (or
        // skipped as before `from_offset`).
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
                let batch = reader.read_shared(&self.blocks, execution).await?;
                if batch.events().is_empty() {
                    break;
                }
                for event in batch.events() {
                    if event.offset >= next {
                        next = event.offset + 1;
                        if tx.send(item(event.clone())).await.is_err() {
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
                        reader.position = event.end;
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

    /// Every event of an execution's log as written so far.
    pub async fn read_all(&self, execution: Id) -> Result<Vec<LogEvent>, LogError> {
        let mut cursor = FileCursor::new(self.path(execution));
        let mut events = Vec::new();
        loop {
            let batch = cursor.read_new(|line, _| line.into_event()).await?;
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
    /// The file's length: where the next line starts.
    len: u64,
    sender: broadcast::Sender<Arc<SharedEvent>>,
}

impl LogWriter {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a line of the server's own (a `System` event). A log that
    /// cannot be written is reported in the server's log, not to the
    /// caller: an attempt goes on without it.
    pub fn note(&mut self, text: impl Into<String>) {
        if let Err(e) = self.append(LogKind::System, text, Value::Null, "") {
            tracing::warn!(error = %e, "cannot write the execution log");
        }
    }

    /// Writes the event to disk (one `write` of one line), then broadcasts it.
    pub fn append(
        &mut self,
        kind: LogKind,
        text: impl Into<String>,
        payload: Value,
        raw: impl Into<String>,
    ) -> std::io::Result<u64> {
        let (text, raw) = (text.into(), raw.into());
        let raw_is_payload = raw_is_payload(&payload, &raw);
        let line = LineOut {
            offset: self.next_offset,
            at: now_millis(),
            kind,
            text: &text,
            payload: if raw_is_payload {
                &Value::Null
            } else {
                &payload
            },
            raw: &raw,
            raw_is_payload,
        };
        let (offset, at) = (line.offset, line.at);
        let mut line = serde_json::to_vec(&line).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        if let Some(share) = self.hub.share.get() {
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            let _ = share.send(Shared::Line((self.execution, offset, text)));
        }
        self.len += line.len() as u64;
        self.next_offset += 1;
        let event = LineIn {
            offset,
            at,
            kind,
            text,
            payload,
            raw,
            raw_is_payload,
        };
        let _ = self.sender.send(Arc::new(event.into_shared(self.len)));
        Ok(offset)
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

#[cfg(test)]
mod tests;
