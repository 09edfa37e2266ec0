//! Following a task's or an execution's log (`StreamLogs`): an
//! execution's events from an offset, or a task's executions one after
//! another, waiting on the change bus between them.

use std::time::Duration;

use tokio::sync::mpsc;

use super::error::{CoreError, CoreResult};
use super::logs::{LogError, LogHub, LogResult, LogSender};
use super::model::{Id, TaskState};
use super::tasks::{TaskService, parse_id};

/// How often a follower of a claimed task looks for its execution record.
const EXECUTION_POLL: Duration = Duration::from_millis(100);
/// A follower waiting for a task to start looks again this often even if
/// the bus said nothing (a safety net, not the way it hears).
const FOLLOW_RECHECK: Duration = Duration::from_secs(30);

impl TaskService {
    /// An execution's log, or a task's. With an execution id: its events
    /// from `from_offset`, then (with `follow`) live until it ends. With a
    /// task id: its newest execution's events; with `follow`, every
    /// execution it runs from then on (waiting for the first, and for each
    /// retry), until the task stops. The stream starts at once either way.
    pub async fn stream_logs(
        &self,
        execution_id: &str,
        task_id: &str,
        from_offset: u64,
        follow: bool,
    ) -> CoreResult<mpsc::Receiver<LogResult>> {
        match (execution_id.trim().is_empty(), task_id.trim().is_empty()) {
            (false, false) => Err(CoreError::invalid(
                "execution_id",
                "give an execution_id or a task_id, not both",
            )),
            (true, true) => Err(CoreError::invalid(
                "execution_id",
                "give an execution_id or a task_id",
            )),
            (false, true) => {
                let id = parse_id("execution_id", execution_id)?;
                if self.store().get_execution(id).await?.is_none() {
                    return Err(CoreError::not_found("execution", id));
                }
                Ok(self.subscribe(id, from_offset, follow))
            }
            (true, false) => {
                let task_id = parse_id("task_id", task_id)?;
                let task = self
                    .store()
                    .get_task(task_id)
                    .await?
                    .ok_or_else(|| CoreError::not_found("task", task_id))?;
                let latest = self.store().latest_execution(task_id).await?;
                if !follow {
                    let Some(execution) = latest else {
                        return Err(CoreError::not_found(
                            "execution of task",
                            format!("{task_id} (it is {})", task.state),
                        ));
                    };
                    return Ok(self.subscribe(execution.id, from_offset, false));
                }
                let (tx, rx) = LogHub::channel();
                let service = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = service
                        .follow_task(task_id, latest.map(|e| e.id), from_offset, &tx)
                        .await
                    {
                        let _ = tx.send(Err(e)).await;
                    }
                });
                Ok(rx)
            }
        }
    }

    /// Feeds a task's executions, one after another, until the task stops
    /// or the subscriber goes away. Between executions it waits on the
    /// change bus for the task's next change, not on a poll of its own;
    /// only the moment between a claim and its execution record (both
    /// written by the executor, a few milliseconds apart) is polled.
    async fn follow_task(
        &self,
        task_id: Id,
        first: Option<Id>,
        from_offset: u64,
        tx: &LogSender,
    ) -> Result<(), LogError> {
        // Subscribed before the first look, so no change slips between a
        // look and the wait after it.
        let cursor = self.bus().current().await?;
        let mut changes = self.bus().subscribe(cursor).await?;
        let mut next = first;
        let mut offset = from_offset;
        let mut last_fed: Option<Id> = None;
        loop {
            if let Some(execution) = next.take() {
                if !self.feed(execution, offset, true, tx).await? {
                    return Ok(());
                }
                last_fed = Some(execution);
                offset = 0;
            }
            // Is there a newer execution, or can the task still start one?
            loop {
                let latest = self.store().latest_execution(task_id).await?;
                if let Some(execution) = latest.filter(|e| Some(e.id) != last_fed) {
                    next = Some(execution.id);
                    break;
                }
                let state = self.store().get_task(task_id).await?.map(|t| t.state);
                let may_run_again = state.is_some_and(TaskState::may_run_again);
                if !may_run_again || tx.is_closed() {
                    return Ok(());
                }
                if state == Some(TaskState::Running) {
                    // Claimed: its execution record is about to be written.
                    tokio::time::sleep(EXECUTION_POLL).await;
                    continue;
                }
                tokio::select! {
                    _ = tx.closed() => return Ok(()),
                    _ = tokio::time::sleep(FOLLOW_RECHECK) => {}
                    next = async {
                        loop {
                            match changes.next().await {
                                Ok(p) if p.change.task_id == task_id => return Ok(()),
                                Ok(_) => {}
                                Err(e) => return Err(e),
                            }
                        }
                    } => next?,
                }
            }
        }
    }
}
