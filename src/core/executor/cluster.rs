//! Cluster membership, for servers sharing one database: this server's
//! lease heartbeat (renewal, and stopping agents of tasks it no longer
//! holds), its announcement of the agents it runs, what the others run,
//! the agents they set aside, the reclaim of tasks whose holder died, and
//! the sweep of sandboxes of tasks accepted through another server.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Executor;
use crate::core::CoreError;
use crate::core::model::{AgentType, Id, TaskState, now_millis};
use crate::store::Lease;

impl Executor {
    /// What the other servers that announced themselves within a lease can
    /// run.
    pub(super) async fn load_agents_elsewhere(&self) -> Result<(), CoreError> {
        let since = now_millis() - self.config.lease.as_millis() as i64;
        let mut agents: Vec<AgentType> = self
            .tasks
            .store()
            .servers_seen_since(since)
            .await?
            .into_iter()
            .filter(|(id, _)| *id != self.config.server_id)
            .flat_map(|(_, agents)| agents)
            .collect();
        agents.sort_by_key(|a| a.as_str());
        agents.dedup();
        *self.elsewhere.lock().expect("elsewhere lock") = agents;
        Ok(())
    }

    pub(super) fn runs_elsewhere(&self, agent: AgentType) -> bool {
        self.elsewhere
            .lock()
            .expect("elsewhere lock")
            .contains(&agent)
    }

    /// Agents other servers set aside (rate limit, spent quota) are set
    /// aside here too.
    pub(super) async fn load_agent_marks(&self) -> Result<(), CoreError> {
        for (agent, until) in self.tasks.store().agent_marks(now_millis()).await? {
            self.tasks.activity().mark_limited(agent, until);
        }
        Ok(())
    }

    /// A claim by this server, from now.
    pub(super) fn lease(&self) -> Lease {
        Lease {
            owner: self.config.server_id.clone(),
            until: now_millis() + self.config.lease.as_millis() as i64,
        }
    }

    /// Every third of the lease, extends this server's claims on the tasks
    /// it runs. A task it no longer holds (cancelled through another
    /// server, or taken over after this one was cut off for longer than a
    /// lease) has its agent stopped here.
    pub(super) async fn renew_leases(self: Arc<Self>, done: CancellationToken) {
        let activity = self.tasks.activity().clone();
        loop {
            // Which agents this server runs, for the others (see
            // `pick_agents`); its being seen is its being alive.
            let usable = self.usable_agents();
            if let Err(e) = self
                .tasks
                .store()
                .announce_server(&self.config.server_id, Some(&usable), now_millis())
                .await
            {
                warn!(error = %e, "cannot tell the other servers which agents run here");
            }
            tokio::select! {
                _ = done.cancelled() => return,
                _ = tokio::time::sleep(self.config.lease / 3) => {}
            }
            let running = activity.running_ids();
            let lease = self.lease();
            match self
                .tasks
                .store()
                .renew_leases(&lease.owner, lease.until, &running)
                .await
            {
                Ok(held) => {
                    for id in running.iter().filter(|id| !held.contains(id)) {
                        // An attempt that just recorded its end is missing
                        // too; stopping it then changes nothing.
                        if activity.stop(*id) {
                            info!(task_id = %id, "task no longer held by this server; stopping its agent");
                        }
                    }
                }
                Err(e) => warn!(error = %e, "cannot renew task leases"),
            }
        }
    }

    /// Tasks left RUNNING by a server whose lease ran out (it died or was
    /// cut off) are recovered here with the same rules as after a restart.
    pub(super) async fn reclaim_orphans(&self) -> Result<(), CoreError> {
        let report = crate::core::recovery::reclaim(
            &self.tasks,
            &self.runners,
            &self.config.server_id,
            self.config.requeue_on_restart,
            false,
        )
        .await?;
        if report.requeued_tasks + report.failed_tasks > 0 {
            info!(
                ?report,
                "recovered the tasks of a server that stopped renewing its leases"
            );
            self.tasks.activity().wake.notify_one();
        }
        Ok(())
    }

    /// Removes the kept sandboxes of tasks accepted through another server
    /// (accepting removes the sandbox only on the server that took the
    /// request; a sandbox lives on the server that ran the task).
    pub(super) async fn sweep_accepted_sandboxes(&self) -> Result<(), CoreError> {
        let mut ids = Vec::new();
        if let Ok(mut dir) = tokio::fs::read_dir(&self.config.sandbox.root).await {
            while let Ok(Some(entry)) = dir.next_entry().await {
                if let Some(id) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<Id>().ok())
                {
                    ids.push(id);
                }
            }
        }
        if ids.is_empty() {
            return Ok(());
        }
        for task in self.tasks.store().get_tasks(&ids).await? {
            if task.state != TaskState::Completed {
                continue;
            }
            match crate::sandbox::remove(&self.config.sandbox, &task.id.to_string()).await {
                Ok(()) => info!(task_id = %task.id, "removed the sandbox of an accepted task"),
                Err(e) => {
                    warn!(task_id = %task.id, error = %e, "cannot remove the sandbox of an accepted task")
                }
            }
        }
        Ok(())
    }
}
