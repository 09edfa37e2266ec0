//! What the task service, the executor and the status report share about
//! this server's running attempts: who runs, on which agent, how to stop
//! it, and which agents are set aside until when.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::model::{AgentType, Id, UnixMillis, now_millis};

/// What the task service, the executor and the status report share: a
/// wake-up for new work, the running attempts (agent and cancel switch),
/// and the agents set aside after a rate limit or a spent quota.
#[derive(Default)]
pub struct Activity {
    pub wake: Notify,
    running: Mutex<HashMap<Id, (AgentType, CancellationToken)>>,
    limited_until: Mutex<HashMap<AgentType, UnixMillis>>,
}

impl Activity {
    /// Registers a running task's agent and cancel switch; false if it
    /// already runs.
    pub fn start(&self, task: Id, agent: AgentType, token: CancellationToken) -> bool {
        let mut running = self.running.lock().expect("activity lock");
        if running.contains_key(&task) {
            return false;
        }
        running.insert(task, (agent, token));
        true
    }

    pub fn finish(&self, task: Id) {
        self.running.lock().expect("activity lock").remove(&task);
    }

    /// Stops a running task's agent, if it runs here.
    pub fn stop(&self, task: Id) -> bool {
        match self.running.lock().expect("activity lock").get(&task) {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// The tasks running here now.
    pub fn running_ids(&self) -> Vec<Id> {
        self.running
            .lock()
            .expect("activity lock")
            .keys()
            .copied()
            .collect()
    }

    pub fn running_count(&self) -> usize {
        self.running.lock().expect("activity lock").len()
    }

    /// Attempts of one agent running now.
    pub fn running_of(&self, agent: AgentType) -> usize {
        self.running
            .lock()
            .expect("activity lock")
            .values()
            .filter(|(a, _)| *a == agent)
            .count()
    }

    /// Moves a running task to agent `to` if `to` runs fewer than `limit`
    /// attempts; false, changing nothing, otherwise (or if it is not running).
    pub fn switch_agent(&self, task: Id, to: AgentType, limit: usize) -> bool {
        let mut running = self.running.lock().expect("activity lock");
        let busy = running.values().filter(|(a, _)| *a == to).count();
        match running.get_mut(&task) {
            Some(entry) if entry.0 == to => true,
            Some(entry) if busy < limit => {
                entry.0 = to;
                true
            }
            _ => false,
        }
    }

    /// Sets an agent aside until `until` (or later, if it already is).
    pub fn mark_limited(&self, agent: AgentType, until: UnixMillis) {
        let mut limited = self.limited_until.lock().expect("activity lock");
        let entry = limited.entry(agent).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Until when an agent is set aside, if it is now.
    pub fn limited_until(&self, agent: AgentType) -> Option<UnixMillis> {
        self.limited_until
            .lock()
            .expect("activity lock")
            .get(&agent)
            .copied()
            .filter(|until| *until > now_millis())
    }
}
