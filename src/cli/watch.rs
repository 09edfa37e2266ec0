//! `claudomator watch`: task changes as they happen, one line each, over
//! `WatchTasks`. A dropped connection is resumed from the last cursor, so
//! nothing is missed or printed twice.

use std::time::Duration;

use clap::Args;
use tokio_stream::StreamExt;

use super::client::{Client, Failure, connect, decode_task, usage};
use super::output;
use super::{Connection, exit};
use crate::core::model::{TaskState, UnixMillis};
use crate::grpc::convert::{state_from_pb, state_to_pb};
use crate::proto as pb;
use pb::watch_tasks_response::Event;

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Only changes into this state (repeatable).
    #[arg(long = "state", short = 's')]
    pub states: Vec<String>,
    #[arg(long, short = 'p')]
    pub project: Option<String>,
    #[arg(long, short = 't')]
    pub tag: Option<String>,
    /// Only this task (repeatable).
    #[arg(long = "task")]
    pub task_ids: Vec<String>,
    /// First print the matching tasks as they are now.
    #[arg(long)]
    pub snapshot: bool,
    /// Resume after this cursor (printed with --json).
    #[arg(long)]
    pub cursor: Option<String>,
    #[command(flatten)]
    pub connection: Connection,
}

/// How long to wait before reconnecting after the connection broke.
const RECONNECT: Duration = Duration::from_secs(1);

pub(super) async fn watch(args: WatchArgs) -> Result<(), Failure> {
    let states = args
        .states
        .iter()
        .map(|s| {
            s.parse::<TaskState>()
                .map(|s| state_to_pb(s) as i32)
                .map_err(|e| usage(format!("--state: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut cursor = args.cursor.clone().unwrap_or_default();
    let mut client = connect(&args.connection).await?;
    let mut first = true;
    loop {
        let request = pb::WatchTasksRequest {
            project: args.project.clone().unwrap_or_default(),
            tag: args.tag.clone().unwrap_or_default(),
            states: states.clone(),
            task_ids: args.task_ids.clone(),
            changes_only: !(first && args.snapshot),
            cursor: cursor.clone(),
        };
        first = false;
        let mut stream = match client.watch_tasks(request).await {
            Ok(response) => response.into_inner(),
            Err(status) if reconnectable(&status) => {
                tokio::time::sleep(RECONNECT).await;
                continue;
            }
            Err(status) => return Err(status.into()),
        };
        while let Some(item) = stream.next().await {
            let response = match item {
                Ok(response) => response,
                Err(status) if reconnectable(&status) => break,
                Err(status) => return Err(status.into()),
            };
            if !response.cursor.is_empty() {
                cursor = response.cursor.clone();
            }
            print_event(&response, args.connection.json)?;
        }
        eprintln!("watch: the connection ended; resuming after cursor {cursor}");
        tokio::time::sleep(RECONNECT).await;
        client = reconnect(&args.connection).await?;
    }
}

/// Connects again, waiting while the server is away.
async fn reconnect(connection: &Connection) -> Result<Client, Failure> {
    loop {
        match connect(connection).await {
            Ok(client) => return Ok(client),
            Err(Failure(_, exit::UNAVAILABLE)) => tokio::time::sleep(RECONNECT).await,
            Err(other) => return Err(other),
        }
    }
}

fn reconnectable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
    ) && !status.message().is_empty()
}

fn print_event(response: &pb::WatchTasksResponse, as_json: bool) -> Result<(), Failure> {
    let Some(event) = &response.event else {
        return Ok(());
    };
    match event {
        Event::Snapshot(task) => {
            let task = decode_task(Some(task.clone()))?;
            if as_json {
                line(&serde_json::json!({"snapshot": task}));
            } else {
                println!(
                    "{}  {}  {:<14} {}",
                    output::clock(task.updated_at),
                    task.id,
                    task.state.as_str().to_uppercase(),
                    output::escape_line(&task.name)
                );
            }
        }
        Event::SnapshotEnd(_) => {
            if as_json {
                line(&serde_json::json!({"snapshot_end": true, "cursor": response.cursor}));
            } else {
                println!("-- now watching for changes");
            }
        }
        Event::Heartbeat(_) => {
            if as_json {
                line(&serde_json::json!({"heartbeat": true, "cursor": response.cursor}));
            }
        }
        Event::Change(change) => {
            let task = decode_task(change.task.clone())?;
            let from = state_from_pb(change.from_state).ok();
            let to = state_from_pb(change.to_state).map_err(|e| Failure(e.to_string(), 1))?;
            let at: UnixMillis = change
                .changed_at
                .as_ref()
                .map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
            if as_json {
                line(&serde_json::json!({
                    "cursor": response.cursor,
                    "at": output::rfc3339(at),
                    "from": from.map(|s| s.as_str()),
                    "to": to.as_str(),
                    "reason": change.reason,
                    "task": task,
                }));
            } else {
                let from = from.map_or("NEW".to_string(), |s| s.as_str().to_uppercase());
                let reason = match change.reason.as_str() {
                    "" => String::new(),
                    text => format!("  ({})", output::escape_line(text)),
                };
                println!(
                    "{}  {}  {} -> {}  {}{reason}",
                    output::clock(at),
                    task.id,
                    from,
                    to.as_str().to_uppercase(),
                    output::escape_line(&task.name)
                );
            }
        }
    }
    Ok(())
}

/// One JSON object on one line.
fn line(value: &serde_json::Value) {
    println!("{value}");
}
