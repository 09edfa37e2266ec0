//! Watching tasks (`WatchTasks`): a snapshot of the matching tasks, then
//! every change to them from the change bus as it is committed, each with
//! the cursor to resume from. A client that reconnects with its last cursor
//! gets every change after it, once, while the change log still holds it
//! (`bus::RETENTION`); an older cursor is `OutOfRange`: take a new snapshot.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::bus::{BusError, Published, Subscription};
use super::error::{CoreError, CoreResult, Violations};
use super::model::{Id, Task, TaskFilter, TaskState};
use super::tasks::TaskService;

/// At most this many task ids in one watch.
pub const MAX_WATCH_IDS: usize = 500;
/// A watch that sees nothing matching for this long is sent a heartbeat
/// with the cursor (so it can resume from there, and knows it is alive).
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Snapshot tasks read at a time (all of them in one read transaction).
const SNAPSHOT_PAGE: u64 = 500;
/// Events waiting for a slow client; past this its subscription lags and
/// catches up from the store, holding nobody else up.
const QUEUE: usize = 64;

/// A watch as a client asks for it.
#[derive(Clone, Debug, Default)]
pub struct WatchQuery {
    pub project: String,
    pub tag: String,
    /// Changes into any of these states (and tasks in them, in the
    /// snapshot); empty: all.
    pub states: Vec<TaskState>,
    pub task_ids: Vec<String>,
    /// No snapshot: changes from now on only.
    pub changes_only: bool,
    /// Resume after this cursor (no snapshot); empty: start now.
    pub cursor: String,
}

/// What a watch sends.
#[derive(Clone, Debug)]
pub enum WatchEvent {
    /// A matching task as it is now, newest first.
    Snapshot(Box<Task>),
    /// The snapshot is complete; changes after `cursor` follow.
    SnapshotEnd { cursor: u64 },
    /// One committed change; resume after `change.seq`.
    Change(Arc<Published>),
    /// Nothing matched for `HEARTBEAT`; resume from `cursor`.
    Heartbeat { cursor: u64 },
}

/// Which tasks and changes a watch wants.
#[derive(Clone, Debug, Default)]
struct Matcher {
    project: Option<String>,
    tag: Option<String>,
    states: Vec<TaskState>,
    ids: Vec<Id>,
}

impl Matcher {
    fn task(&self, task: &Task) -> bool {
        (self.ids.is_empty() || self.ids.contains(&task.id))
            && (self.states.is_empty() || self.states.contains(&task.state))
            && self.project.as_ref().is_none_or(|p| *p == task.project)
            && self.tag.as_ref().is_none_or(|t| task.tags.contains(t))
    }

    fn change(&self, published: &Published) -> bool {
        let change = &published.change;
        if !self.ids.is_empty() && !self.ids.contains(&change.task_id) {
            return false;
        }
        if !self.states.is_empty() && !self.states.contains(&change.to) {
            return false;
        }
        if self.project.is_none() && self.tag.is_none() {
            return true;
        }
        published.task.as_ref().is_some_and(|task| {
            self.project.as_ref().is_none_or(|p| *p == task.project)
                && self.tag.as_ref().is_none_or(|t| task.tags.contains(t))
        })
    }
}

impl TaskService {
    /// Starts a watch; its events arrive on the receiver until the client
    /// drops it. An error on the receiver ends the watch.
    pub async fn watch(
        &self,
        query: WatchQuery,
    ) -> CoreResult<mpsc::Receiver<CoreResult<WatchEvent>>> {
        let matcher = matcher(&query)?;
        let resume =
            match query.cursor.trim() {
                "" => None,
                text => Some(text.parse::<u64>().map_err(|_| {
                    CoreError::invalid("cursor", "is not a cursor this server sent")
                })?),
            };
        let bus = self.bus();
        // The snapshot and its cursor come from one read of the store, so
        // a change in the snapshot is never sent again after it (the bus's
        // head may trail the store: a cursor taken from it would).
        let (snapshot, start) = if resume.is_none() && !query.changes_only {
            let filter = TaskFilter {
                states: matcher.states.clone(),
                project: matcher.project.clone(),
                tag: matcher.tag.clone(),
                before: None,
                limit: SNAPSHOT_PAGE,
            };
            let (tasks, cursor) = self.store().snapshot_tasks(&matcher.ids, &filter).await?;
            (Some(tasks), cursor)
        } else {
            let start = match resume {
                Some(cursor) => cursor,
                None => bus.current().await.map_err(bus_error)?,
            };
            (None, start)
        };
        let changes = bus.subscribe(start).await.map_err(bus_error)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(async move {
            if let Some(tasks) = snapshot
                && !send_snapshot(&matcher, tasks, start, &tx).await
            {
                return;
            }
            follow(changes, &matcher, &tx).await;
        });
        Ok(rx)
    }
}

/// Sends the snapshot's matching tasks, newest first, then the end marker
/// with its cursor; false when the client left.
async fn send_snapshot(
    matcher: &Matcher,
    mut tasks: Vec<Task>,
    cursor: u64,
    tx: &mpsc::Sender<CoreResult<WatchEvent>>,
) -> bool {
    tasks.sort_by_key(|t| std::cmp::Reverse(t.id));
    for task in tasks.into_iter().filter(|t| matcher.task(t)) {
        if tx
            .send(Ok(WatchEvent::Snapshot(Box::new(task))))
            .await
            .is_err()
        {
            return false;
        }
    }
    tx.send(Ok(WatchEvent::SnapshotEnd { cursor }))
        .await
        .is_ok()
}

/// Sends each matching change, and a heartbeat after a quiet while, until
/// the client leaves or the bus fails.
async fn follow(
    mut changes: Subscription,
    matcher: &Matcher,
    tx: &mpsc::Sender<CoreResult<WatchEvent>>,
) {
    // One timer for the watch, not one per change.
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    let mut sent_since_beat = false;
    loop {
        let event = tokio::select! {
            _ = tx.closed() => return,
            _ = beat.tick() => {
                if std::mem::take(&mut sent_since_beat) {
                    continue;
                }
                Ok(WatchEvent::Heartbeat { cursor: changes.cursor() })
            }
            next = changes.next() => match next {
                Ok(published) if matcher.change(&published) => {
                    sent_since_beat = true;
                    Ok(WatchEvent::Change(published))
                }
                Ok(_) => continue,
                Err(e) => Err(bus_error(e)),
            },
        };
        let failed = event.is_err();
        if tx.send(event).await.is_err() || failed {
            return;
        }
    }
}

fn matcher(query: &WatchQuery) -> CoreResult<Matcher> {
    if query.task_ids.len() > MAX_WATCH_IDS {
        return Err(CoreError::invalid(
            "task_ids",
            format!("at most {MAX_WATCH_IDS} task ids"),
        ));
    }
    let mut ids = Vec::with_capacity(query.task_ids.len());
    let mut found = Violations::default();
    for (i, text) in query.task_ids.iter().enumerate() {
        match text.trim().parse() {
            Ok(id) => ids.push(id),
            Err(e) => found.add(format!("task_ids[{i}]"), e),
        }
    }
    found.into_result()?;
    let mut states = query.states.clone();
    states.sort_by_key(|s| s.as_str());
    states.dedup();
    let non_empty = |text: &str| Some(text.trim().to_string()).filter(|t| !t.is_empty());
    Ok(Matcher {
        project: non_empty(&query.project),
        tag: non_empty(&query.tag),
        states,
        ids,
    })
}

fn bus_error(err: BusError) -> CoreError {
    match err {
        BusError::OutOfRange { .. } => CoreError::OutOfRange(err.to_string()),
        BusError::Store(e) => e.into(),
        BusError::Closed => CoreError::Unavailable("the server is shutting down".into()),
    }
}
