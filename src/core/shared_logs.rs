//! Execution logs shared through the store, for several servers on one
//! database: every line a server writes to its log file is also inserted
//! (in batches, by one task) into the store, and a server asked for the log
//! of an execution whose file it does not have reads it from there: history
//! first, then new lines as they arrive (polled by offset on the primary
//! key), until the execution has ended. An attempt's end waits for its
//! lines to be in (`LogHub::flush_shared`), so a reader that sees the end
//! has seen every line.
//!
//! The file stays the source of truth on the server that runs the attempt:
//! sharing is a copy, written after the file and never in the agent's way.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::logs::{LogError, LogHub, LogItem, LogSender, Shared, SharedLine};
use super::model::{ExecutionState, Id};
use crate::store::Store;

/// Lines inserted per store write, at most.
const BATCH: usize = 512;
/// Lines read from the store per query.
const PAGE: u64 = 1000;
/// How often a follower looks for new lines.
const POLL: Duration = Duration::from_millis(100);

/// Starts copying every line `hub` writes into the store. The task ends
/// after `shutdown`, once the lines written before it are in.
pub fn start(hub: &LogHub, store: Store, shutdown: CancellationToken) -> JoinHandle<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Shared>();
    hub.share_lines(tx);
    tokio::spawn(async move {
        let mut received = Vec::with_capacity(BATCH);
        loop {
            let got = tokio::select! {
                n = rx.recv_many(&mut received, BATCH) => n,
                _ = shutdown.cancelled() => {
                    // Whatever was written before the stop still goes in.
                    while let Ok(item) = rx.try_recv() {
                        received.push(item);
                    }
                    insert(&store, std::mem::take(&mut received)).await;
                    return;
                }
            };
            if got == 0 {
                return;
            }
            insert(&store, std::mem::take(&mut received)).await;
        }
    })
}

/// Inserts the lines received, then answers the flushes among them.
async fn insert(store: &Store, received: Vec<Shared>) {
    let mut lines: Vec<SharedLine> = Vec::with_capacity(received.len());
    let mut flushes = Vec::new();
    for item in received {
        match item {
            Shared::Line(line) => lines.push(line),
            Shared::Flush(done) => flushes.push(done),
        }
    }
    let count = lines.len();
    if count > 0
        && let Err(e) = store.insert_log_lines(lines).await
    {
        warn!(error = %e, lines = count, "cannot share log lines through the store");
    }
    for done in flushes {
        let _ = done.send(());
    }
}

/// Sends an execution's shared log from `from_offset` on into `tx`; with
/// `follow`, keeps sending new lines until the execution has ended and its
/// last lines are sent. Returns false when the subscriber went away.
pub async fn feed(
    store: &Store,
    execution: Id,
    from_offset: u64,
    follow: bool,
    tx: &LogSender,
) -> Result<bool, LogError> {
    let mut next = from_offset;
    loop {
        // Read whether it still runs before reading lines, so the lines
        // read after it ended are its last ones.
        let running = follow
            && store
                .get_execution(execution)
                .await?
                .is_some_and(|e| e.state == ExecutionState::Running);
        loop {
            let lines = store.log_lines(execution, next, PAGE).await?;
            let full = lines.len() as u64 == PAGE;
            let mut gap = false;
            for (offset, line) in lines {
                if offset != next {
                    // A line not in yet (the writer batches): wait for it.
                    gap = true;
                    break;
                }
                let event = LogHub::parse_line(&line)?;
                next += 1;
                let item = LogItem {
                    execution_id: execution,
                    event: std::sync::Arc::new(event),
                };
                if tx.send(Ok(item)).await.is_err() {
                    return Ok(false);
                }
            }
            if !full || gap {
                break;
            }
        }
        if !running {
            return Ok(true);
        }
        if tx.is_closed() {
            return Ok(false);
        }
        tokio::time::sleep(POLL).await;
    }
}
