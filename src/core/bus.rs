//! The change bus: every committed task change, in one order, to whoever
//! listens in this process (`WatchTasks`, notifications, followers of a
//! task). Its source of truth is the store's change log: `TaskService`
//! (submit and `apply`, the only writers of task state) has the store write
//! a numbered row with each change in the same transaction, and one tailer
//! per bus reads the log in `seq` order and publishes each change with the
//! task as it is then. Changes written by other servers on the same
//! database arrive the same way, by polling the log.
//!
//! A subscriber starts from any cursor (a `seq`) the log still holds. It
//! reads what it missed from the store, then follows the broadcast; each
//! published change names the one published before it (`prev`), so a
//! subscriber that lagged or started behind sees the gap and fills it from
//! the store. Nothing is skipped and nothing delivered twice, and a slow
//! subscriber never holds up the tailer or any other subscriber.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tracing::warn;

use super::model::{Id, Task, TaskState, UnixMillis, now_millis};
use crate::store::{Store, StoreError};

/// How many published changes the broadcast keeps for slow subscribers
/// before they must read from the store (seconds of changes at a high
/// rate: a hundred watchers falling behind together and each reading the
/// store would only fall further behind).
const BROADCAST_CAPACITY: usize = 8192;
/// Changes read from the store at a time.
const READ_BATCH: u64 = 500;
/// How long the change log keeps a change: a cursor older than this can
/// no longer resume (`OUT_OF_RANGE`; take a new snapshot).
pub const RETENTION: Duration = Duration::from_secs(24 * 3600);
/// How often the log is pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// One task change as the log has it.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskChange {
    /// Its place in the log: larger is later, over every server.
    pub seq: u64,
    pub task_id: Id,
    /// None: the task was created (submitted) in state `to`.
    pub from: Option<TaskState>,
    pub to: TaskState,
    pub reason: String,
    pub at: UnixMillis,
    /// The store instance (server process) that wrote it.
    pub origin: String,
}

/// A change as it is published: with the task read after it (as new as
/// the change or newer; None if the task is gone), without its
/// instructions (they never change, and would make every change as large
/// as the task's text), and the `seq` published before it on this bus.
#[derive(Clone, Debug)]
pub struct Published {
    pub change: TaskChange,
    pub task: Option<Task>,
    prev: u64,
}

/// Why a subscription cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The cursor is older than what the log keeps, or from elsewhere.
    #[error("cursor {cursor} is out of range: the change log holds {held}; take a new snapshot")]
    OutOfRange { cursor: u64, held: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bus stopped (the server is shutting down).
    #[error("the change bus stopped")]
    Closed,
}

pub struct ChangeBus {
    store: Store,
    tx: broadcast::Sender<Arc<Published>>,
    /// The last `seq` published.
    head: AtomicU64,
    /// True once the tailer has found the log's end (where it publishes
    /// from); subscribers wait for it.
    ready: watch::Receiver<bool>,
}

impl ChangeBus {
    /// A bus over `store`, publishing from the log's end as it is when the
    /// tailer starts. The tailer wakes on every commit of this process's
    /// writer, and every `poll` for other servers' changes; it stops with
    /// the bus. Needs a tokio runtime.
    pub fn start(store: Store, poll: Duration) -> Arc<ChangeBus> {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        let (set_ready, ready) = watch::channel(false);
        let bus = Arc::new(ChangeBus {
            store: store.clone(),
            tx,
            head: AtomicU64::new(0),
            ready,
        });
        tokio::spawn(tail(Arc::downgrade(&bus), store, set_ready, poll));
        bus
    }

    /// Waits until the tailer knows where the log ends.
    async fn started(&self) -> Result<(), BusError> {
        let mut ready = self.ready.clone();
        ready
            .wait_for(|ready| *ready)
            .await
            .map(|_| ())
            .map_err(|_| BusError::Closed)
    }

    /// The last change published, once the bus has started: a snapshot
    /// read after this is at least this new.
    pub async fn current(&self) -> Result<u64, BusError> {
        self.started().await?;
        Ok(self.head())
    }

    /// The last change published here: a snapshot taken now is at least
    /// this new.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }

    /// The store instance this process writes as (`TaskChange::origin`).
    pub fn origin(&self) -> &str {
        self.store.origin()
    }

    /// Every change after `cursor`, in order, then each as it is published.
    pub async fn subscribe(self: &Arc<Self>, cursor: u64) -> Result<Subscription, BusError> {
        self.started().await?;
        // Listen first, then check the cursor: anything published from now
        // on is either in the broadcast or in the log.
        let rx = self.tx.subscribe();
        let span = self.store.change_span().await?;
        let in_range = match span {
            None => cursor <= self.head(),
            Some((min, max)) => cursor + 1 >= min && cursor <= max.max(self.head()),
        };
        if !in_range {
            return Err(BusError::OutOfRange {
                cursor,
                held: span.map_or("nothing".into(), |(min, max)| {
                    format!("changes {min} to {max}")
                }),
            });
        }
        Ok(Subscription {
            bus: self.clone(),
            rx,
            last: cursor,
            // Everything published after `rx` was made is in `rx`; what
            // was published before (up to the head read after it) is
            // read from the log.
            backfill_until: self.head(),
            backlog: Default::default(),
        })
    }

    /// Reads the log after `after` and publishes what it finds, in order.
    async fn publish_new(&self) -> Result<(), StoreError> {
        loop {
            let after = self.head();
            let batch = read(&self.store, after, READ_BATCH).await?;
            let Some(last) = batch.last().map(|p| p.change.seq) else {
                return Ok(());
            };
            let mut prev = after;
            for mut published in batch {
                published.prev = prev;
                prev = published.change.seq;
                // No receiver is fine: nobody listens right now.
                let _ = self.tx.send(Arc::new(published));
            }
            self.head.store(last, Ordering::Release);
        }
    }
}

/// Changes after `after` from the store, each with its task.
async fn read(store: &Store, after: u64, limit: u64) -> Result<Vec<Published>, StoreError> {
    let changes = store.changes_after(after, limit).await?;
    if changes.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<Id> = changes.iter().map(|c| c.task_id).collect();
    ids.sort();
    ids.dedup();
    let tasks = store.get_tasks(&ids).await?;
    Ok(changes
        .into_iter()
        .map(|change| Published {
            task: tasks.iter().find(|t| t.id == change.task_id).map(|t| Task {
                instructions: String::new(),
                ..t.clone()
            }),
            change,
            prev: 0,
        })
        .collect())
}

/// The tailer: finds the log's end, then publishes the log as it grows
/// and prunes it now and then.
async fn tail(bus: Weak<ChangeBus>, store: Store, ready: watch::Sender<bool>, poll: Duration) {
    let mut commits = store.commits();
    loop {
        let Some(live) = bus.upgrade() else { return };
        match store.change_span().await {
            Ok(span) => {
                live.head
                    .store(span.map_or(0, |(_, max)| max), Ordering::Release);
                ready.send_replace(true);
                break;
            }
            Err(StoreError::Closed) => return,
            Err(e) => warn!(error = %e, "cannot read the change log; trying again"),
        }
        drop(live);
        tokio::time::sleep(poll).await;
    }
    let mut next_prune = tokio::time::Instant::now();
    loop {
        let Some(live) = bus.upgrade() else { return };
        if let Err(e) = live.publish_new().await {
            if matches!(e, StoreError::Closed) {
                return;
            }
            warn!(error = %e, "cannot read the change log");
        }
        if tokio::time::Instant::now() >= next_prune {
            next_prune = tokio::time::Instant::now() + PRUNE_EVERY;
            let before = now_millis() - RETENTION.as_millis() as i64;
            if let Err(e) = live.store.prune_changes(before).await {
                warn!(error = %e, "cannot prune the change log");
            }
        }
        drop(live);
        tokio::select! {
            changed = commits.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// One subscriber's place on the bus.
pub struct Subscription {
    bus: Arc<ChangeBus>,
    rx: broadcast::Receiver<Arc<Published>>,
    /// The last change handed out (or skipped by the caller's filter).
    last: u64,
    /// Changes up to this one were published before this subscription
    /// listened: they come from the log.
    backfill_until: u64,
    backlog: std::collections::VecDeque<Arc<Published>>,
}

impl Subscription {
    /// The cursor after the last change handed out.
    pub fn cursor(&self) -> u64 {
        self.last
    }

    /// The next change, in log order; waits for one.
    pub async fn next(&mut self) -> Result<Arc<Published>, BusError> {
        loop {
            if let Some(next) = self.backlog.pop_front() {
                if next.change.seq <= self.last {
                    continue;
                }
                self.last = next.change.seq;
                return Ok(next);
            }
            if self.last < self.backfill_until {
                // A cursor from before this subscription listened: read
                // on from the log. (Merely being behind the head is not
                // a reason: the broadcast holds what came since.)
                self.fill().await?;
                continue;
            }
            match self.rx.recv().await {
                Ok(published) if published.change.seq <= self.last => {}
                Ok(published) if published.prev <= self.last => {
                    self.last = published.change.seq;
                    return Ok(published);
                }
                // After a gap this subscriber has not seen: dropped here,
                // it is read from the log with what came before it.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.fill().await?,
                Err(broadcast::error::RecvError::Closed) => return Err(BusError::Closed),
            }
        }
    }

    /// Reads the next changes after `last` from the log into the backlog.
    /// Nothing there while changes were published after `last` means the
    /// log no longer holds them.
    async fn fill(&mut self) -> Result<(), BusError> {
        let batch = read(&self.bus.store, self.last, READ_BATCH).await?;
        if batch.is_empty() {
            return Err(BusError::OutOfRange {
                cursor: self.last,
                held: "none of the changes after it any more".into(),
            });
        }
        self.backlog.extend(batch.into_iter().map(Arc::new));
        Ok(())
    }
}
