//! Task events for notifications. `forward` subscribes to the change bus
//! and turns each change this server wrote (so that each change is
//! notified once, by the server that made it) into a `TaskEvent`; the sink
//! keeps the states it was asked for and hands each event to a bounded
//! channel with `try_send`. A full channel drops the event (it is counted
//! and warned about): a slow or absent receiver never delays a state
//! change, the bus or the scheduler. Whoever holds the receiving end (the
//! webhook notifier, `crate::notify`) does the slow work.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::bus::ChangeBus;
use super::model::{Id, Question, TaskState, UnixMillis};

/// One state change of one task, as it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskEvent {
    pub task_id: Id,
    pub from: TaskState,
    pub to: TaskState,
    /// Why (a failure, a cancel reason), or empty.
    pub reason: String,
    /// When the change was written.
    pub at: UnixMillis,
    /// The agent's question, when the task blocked on one.
    pub question: Option<Question>,
}

/// The states a notification may be about: the ones a person cares about
/// (a task waits for them, or has ended).
pub const NOTIFIABLE: &[TaskState] = &[
    TaskState::Blocked,
    TaskState::Ready,
    TaskState::Completed,
    TaskState::Failed,
    TaskState::TimedOut,
    TaskState::BudgetExceeded,
    TaskState::Cancelled,
];

/// Where the core puts events. Cheap to clone.
#[derive(Clone)]
pub struct EventSink {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<TaskEvent>,
    /// Only changes into these states are sent.
    wanted: Vec<TaskState>,
    dropped: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
    last_failure: Mutex<String>,
}

/// How notifications have fared since the server started, for `doctor`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotifyStats {
    /// Taken by the receiver (2xx).
    pub delivered: u64,
    /// Given up on: refused, or still failing when the retries ran out.
    pub failed: u64,
    /// Never sent: the queue was full.
    pub dropped: u64,
    /// Why the last failed one failed.
    pub last_failure: String,
}

impl EventSink {
    /// A sink keeping changes into `wanted`, and the receiving end of its
    /// channel, which holds `capacity` events at most.
    pub fn channel(
        capacity: usize,
        wanted: Vec<TaskState>,
    ) -> (EventSink, mpsc::Receiver<TaskEvent>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let inner = Inner {
            tx,
            wanted,
            dropped: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_failure: Mutex::new(String::new()),
        };
        (
            EventSink {
                inner: Arc::new(inner),
            },
            rx,
        )
    }

    /// Whether a change into `state` is sent.
    pub fn wants(&self, state: TaskState) -> bool {
        self.inner.wanted.contains(&state)
    }

    /// Hands the event on without waiting; drops it when the channel is full.
    pub fn emit(&self, event: TaskEvent) {
        if !self.wants(event.to) {
            return;
        }
        match self.inner.tx.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) => {
                let dropped = self.inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                warn!(
                    task_id = %event.task_id,
                    state = %event.to,
                    dropped,
                    "notification queue full: event dropped"
                );
            }
            Err(mpsc::error::TrySendError::Closed(event)) => {
                debug!(task_id = %event.task_id, "no notifier is listening: event dropped");
            }
        }
    }

    /// Events dropped so far because the channel was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Counts what became of one notification: delivered, or why not.
    pub fn record_outcome(&self, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.inner.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(why) => {
                self.inner.failed.fetch_add(1, Ordering::Relaxed);
                *self.inner.last_failure.lock().expect("stats lock") = why;
            }
        }
    }

    pub fn stats(&self) -> NotifyStats {
        NotifyStats {
            delivered: self.inner.delivered.load(Ordering::Relaxed),
            failed: self.inner.failed.load(Ordering::Relaxed),
            dropped: self.dropped(),
            last_failure: self.inner.last_failure.lock().expect("stats lock").clone(),
        }
    }
}

/// Feeds `sink` with the changes this server writes after `cursor`, until
/// `stop`.
pub fn forward(bus: Arc<ChangeBus>, sink: EventSink, cursor: u64, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut changes = match bus.subscribe(cursor).await {
            Ok(changes) => changes,
            Err(e) => return warn!(error = %e, "notifications cannot follow the change bus"),
        };
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                next = changes.next() => next,
            };
            let published = match next {
                Ok(published) => published,
                Err(e) => {
                    return warn!(error = %e, "notifications stopped following the change bus");
                }
            };
            let change = &published.change;
            if change.origin != bus.origin() || !sink.wants(change.to) {
                continue;
            }
            sink.emit(TaskEvent {
                task_id: change.task_id,
                from: change.from.unwrap_or(change.to),
                to: change.to,
                reason: change.reason.clone(),
                at: change.at,
                question: published.task.as_ref().and_then(|t| t.question.clone()),
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(to: TaskState) -> TaskEvent {
        TaskEvent {
            task_id: Id::new(),
            from: TaskState::Running,
            to,
            reason: String::new(),
            at: 1,
            question: None,
        }
    }

    #[tokio::test]
    async fn only_wanted_states_are_sent_and_a_full_channel_drops() {
        let (sink, mut rx) = EventSink::channel(1, vec![TaskState::Completed, TaskState::Failed]);
        sink.emit(event(TaskState::Queued));
        sink.emit(event(TaskState::Completed));
        // The channel holds one event: this one is dropped, without waiting.
        sink.emit(event(TaskState::Failed));
        assert_eq!(sink.dropped(), 1);
        assert_eq!(rx.recv().await.unwrap().to, TaskState::Completed);
        assert!(rx.try_recv().is_err());
        sink.emit(event(TaskState::Failed));
        assert_eq!(rx.recv().await.unwrap().to, TaskState::Failed);
        // With nobody listening, emitting is still harmless.
        drop(rx);
        sink.emit(event(TaskState::Failed));
        assert_eq!(sink.dropped(), 1);
    }
}
