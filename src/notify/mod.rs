//! Webhook notifications: a signed JSON POST when a task changes into one of
//! the configured states. The core only emits events into a bounded channel
//! (`core::events`); this worker, outside the core, reads them, adds what the
//! store knows of the task, and delivers each one with retries and backoff
//! (backon), a few at a time. Nothing here can delay a state change: a slow
//! receiver only fills the channel, and then events are dropped and counted.
//!
//! Headers: `X-Claudomator-Event` (`task.completed`…),
//! `X-Claudomator-Delivery` (one id per event, the same on every retry) and
//! `X-Claudomator-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.

mod payload;

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::core::TaskService;
use crate::core::events::TaskEvent;
use crate::core::model::{TaskState, now_millis};

pub use payload::{ExecutionPart, Notification, PullPart, TaskPart};

pub const EVENT_HEADER: &str = "x-claudomator-event";
pub const DELIVERY_HEADER: &str = "x-claudomator-delivery";
pub const SIGNATURE_HEADER: &str = "x-claudomator-signature-256";

/// Deliveries in flight at once; more events wait in the channel.
const MAX_IN_FLIGHT: usize = 8;
/// The longest wait between two retries.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// The notifier's settings, from `[notifications]` (validated).
#[derive(Clone, Debug)]
pub struct NotifySettings {
    pub url: String,
    pub secret: String,
    /// Changes into these states are sent.
    pub events: Vec<TaskState>,
    /// One POST's time limit.
    pub timeout: Duration,
    pub max_retries: usize,
    /// The first backoff; it doubles per retry.
    pub retry_base: Duration,
    /// The channel's capacity.
    pub queue: usize,
}

/// Why one POST did not deliver.
#[derive(Debug, thiserror::Error)]
enum PostError {
    /// Worth another try: no connection, a timeout, 408, 429 or 5xx.
    #[error("{0}")]
    Transient(String),
    /// The receiver refused the event (another 4xx): retrying cannot help.
    #[error("{0}")]
    Refused(String),
}

struct Deliverer {
    client: reqwest::Client,
    settings: NotifySettings,
}

/// Starts the worker that delivers the events `events` receives, until
/// `shutdown`. Deliveries still in flight then are abandoned.
pub fn start(
    settings: NotifySettings,
    tasks: TaskService,
    events: mpsc::Receiver<TaskEvent>,
    shutdown: CancellationToken,
) -> anyhow::Result<JoinHandle<()>> {
    let client = reqwest::Client::builder()
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("claudomator/", env!("CARGO_PKG_VERSION")))
        .build()?;
    info!(url = %settings.url, events = ?settings.events, "notifications on");
    let deliverer = Arc::new(Deliverer { client, settings });
    Ok(tokio::spawn(run(deliverer, tasks, events, shutdown)))
}

async fn run(
    deliverer: Arc<Deliverer>,
    tasks: TaskService,
    mut events: mpsc::Receiver<TaskEvent>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut deliveries = JoinSet::new();
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = deliveries.join_next(), if !deliveries.is_empty() => continue,
            event = events.recv() => match event {
                Some(event) => event,
                None => break,
            },
        };
        let notification = describe(&tasks, &event).await;
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let deliverer = deliverer.clone();
        let sink = tasks.event_sink().cloned();
        deliveries.spawn(async move {
            let outcome = deliverer.deliver(notification).await;
            if let Some(sink) = sink {
                sink.record_outcome(outcome);
            }
            drop(slot);
        });
    }
    if !deliveries.is_empty() {
        info!(
            abandoned = deliveries.len(),
            "notifier stopping: deliveries in flight abandoned"
        );
    }
    deliveries.shutdown().await;
}

/// The notification of `event`, with the task and its latest execution as
/// the store has them now.
async fn describe(tasks: &TaskService, event: &TaskEvent) -> Notification {
    let store = tasks.store();
    let task = match store.get_task(event.task_id).await {
        Ok(task) => task,
        Err(e) => {
            warn!(task_id = %event.task_id, error = %e, "notification without task details");
            None
        }
    };
    let execution = store
        .latest_execution(event.task_id)
        .await
        .unwrap_or_else(|e| {
            warn!(task_id = %event.task_id, error = %e, "notification without execution details");
            None
        });
    let pull = store.get_pull(event.task_id).await.unwrap_or_else(|e| {
        warn!(task_id = %event.task_id, error = %e, "notification without its pull request");
        None
    });
    Notification::new(event, task.as_ref(), execution.as_ref()).with_pull(pull.as_ref())
}

impl Deliverer {
    /// Posts until the receiver takes it, retries run out, or it refuses;
    /// Err says why it was not delivered.
    async fn deliver(&self, notification: Notification) -> Result<(), String> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.settings.retry_base)
            .with_max_delay(MAX_BACKOFF.max(self.settings.retry_base))
            .with_max_times(self.settings.max_retries)
            .with_jitter();
        let result = (|| self.post(&notification))
            .retry(backoff)
            .when(|e| matches!(e, PostError::Transient(_)))
            .notify(|e, wait| {
                debug!(
                    delivery = %notification.delivery_id,
                    error = %e,
                    retry_in_ms = wait.as_millis() as u64,
                    "notification not delivered yet"
                );
            })
            .await;
        match result {
            Ok(()) => {
                debug!(
                    delivery = %notification.delivery_id,
                    event = %notification.event,
                    task_id = %notification.task.id,
                    "notification delivered"
                );
                Ok(())
            }
            Err(e) => {
                warn!(
                    delivery = %notification.delivery_id,
                    event = %notification.event,
                    task_id = %notification.task.id,
                    error = %e,
                    "notification not delivered"
                );
                Err(format!(
                    "{} of task {}: {e}",
                    notification.event, notification.task.id
                ))
            }
        }
    }

    /// One signed POST, stamped with the time it is sent.
    async fn post(&self, notification: &Notification) -> Result<(), PostError> {
        let mut notification = notification.clone();
        notification.sent_at = now_millis();
        let body = serde_json::to_vec(&notification)
            .map_err(|e| PostError::Refused(format!("cannot encode the event: {e}")))?;
        let signature = crate::signature::sign(self.settings.secret.as_bytes(), &body);
        let response = self
            .client
            .post(&self.settings.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, &notification.event)
            .header(DELIVERY_HEADER, &notification.delivery_id)
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await
            .map_err(|e| PostError::Transient(format!("cannot post: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let message = format!("the receiver answered {status}");
        if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
            Err(PostError::Transient(message))
        } else {
            Err(PostError::Refused(message))
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::core::model::TaskState;

    fn settings(toml: &str) -> anyhow::Result<Option<super::NotifySettings>> {
        Config::from_toml(toml)?.notifications.settings()
    }

    #[test]
    fn the_section_is_checked_and_off_by_default() {
        assert!(settings("").unwrap().is_none());
        let on = settings("[notifications]\nurl = \"https://example.com/hook\"\nsecret = \"s\"")
            .unwrap()
            .unwrap();
        assert_eq!(on.events.len(), 6);
        assert!(!on.events.contains(&TaskState::Cancelled));

        let cases = [
            (
                "[notifications]\nurl = \"http://x\"\nsecrett = \"s\"",
                "secrett",
            ),
            ("[notifications]\nurl = \"ftp://x\"\nsecret = \"s\"", "http"),
            (
                "[notifications]\nurl = \"http://x\"",
                "notifications.secret",
            ),
            (
                "[notifications]\nurl = \"http://x\"\nsecret_env = \"CLAUDOMATOR_TEST_UNSET_VARIABLE\"",
                "CLAUDOMATOR_TEST_UNSET_VARIABLE",
            ),
            (
                "[notifications]\nurl = \"http://x\"\nsecret = \"s\"\nevents = [\"running\"]",
                "running",
            ),
            (
                "[notifications]\nurl = \"http://x\"\nsecret = \"s\"\ntimeout = \"soon\"",
                "notifications.timeout",
            ),
        ];
        for (toml, named) in cases {
            let err = format!("{:#}", settings(toml).unwrap_err());
            assert!(err.contains(named), "{toml}: {err}");
        }
    }
}
