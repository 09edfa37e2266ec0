//! `claudomator logs`, and the following behind `submit --wait`: StreamLogs
//! events printed one line each, for one execution or across all the
//! executions a task goes through until it stops.

use std::collections::HashSet;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::Args;
use tonic::Code;

use super::client::{Client, Failure, connect};
use super::{Connection, exit, output};
use crate::core::model::TaskState;
use crate::grpc::convert::{millis, state_from_pb};
use crate::proto as pb;

/// How often a follower looks at the task between executions.
const POLL: Duration = Duration::from_millis(250);

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// A task id (its newest execution) or an execution id.
    pub id: String,
    /// Keep following: an execution until it ends, a task (through every
    /// execution it starts) until it stops.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// The first event to print (0 = the first one); for a followed task, of
    /// the execution it starts at.
    #[arg(long = "from", value_name = "OFFSET", default_value_t = 0)]
    pub from: u64,
    /// Print the line the agent itself wrote for each event (events the
    /// server wrote have none and are left out).
    #[arg(long, conflicts_with = "json")]
    pub raw: bool,
    /// Also print the agent CLI's routine stderr chatter ("YOLO mode is
    /// enabled", colour warnings…), left out by default.
    #[arg(long)]
    pub debug: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// How events are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// `HH:MM:SS tag text`, coloured on a terminal.
    Human,
    /// The agent's own line.
    Raw,
    /// One JSON object per line.
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Stdout,
    Stderr,
}

const RESET: &str = "\x1b[0m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const CYAN: &str = "\x1b[36m";
const DIM: &str = "\x1b[2m";

/// Prints log events. A reader that goes away (a closed pipe) closes the
/// printer: later events are dropped, and `logs` stops.
pub struct Printer {
    style: Style,
    target: Target,
    color: bool,
    closed: bool,
}

impl Printer {
    /// Colours only for people: human style, a terminal, and no `NO_COLOR`.
    pub fn new(style: Style, target: Target) -> Self {
        let terminal = match target {
            Target::Stdout => std::io::stdout().is_terminal(),
            Target::Stderr => std::io::stderr().is_terminal(),
        };
        let color = style == Style::Human && terminal && std::env::var_os("NO_COLOR").is_none();
        Printer {
            style,
            target,
            color,
            closed: false,
        }
    }

    pub fn closed(&self) -> bool {
        self.closed
    }

    pub fn event(&mut self, event: &pb::LogEvent) {
        let line = match self.style {
            Style::Human => human_line(event, self.color),
            Style::Raw if event.raw.is_empty() => return,
            Style::Raw => event.raw.trim_end_matches(['\r', '\n']).to_string(),
            Style::Json => json_line(event),
        };
        self.write(&line);
    }

    /// A line of the follower's own (a new attempt), for people only.
    pub fn note(&mut self, text: &str) {
        if self.style != Style::Human {
            return;
        }
        let line = if self.color {
            format!("{YELLOW}── {text} ──{RESET}")
        } else {
            format!("── {text} ──")
        };
        self.write(&line);
    }

    fn write(&mut self, line: &str) {
        if self.closed {
            return;
        }
        let written = match self.target {
            Target::Stdout => writeln!(std::io::stdout().lock(), "{line}"),
            Target::Stderr => writeln!(std::io::stderr().lock(), "{line}"),
        };
        if written.is_err() {
            self.closed = true;
        }
    }
}

fn kind_of(event: &pb::LogEvent) -> pb::LogEventKind {
    pb::LogEventKind::try_from(event.kind).unwrap_or(pb::LogEventKind::Unspecified)
}

fn kind_name(kind: pb::LogEventKind) -> &'static str {
    match kind {
        pb::LogEventKind::Text => "text",
        pb::LogEventKind::ToolCall => "tool_call",
        pb::LogEventKind::ToolResult => "tool_result",
        pb::LogEventKind::System => "system",
        pb::LogEventKind::Result => "result",
        pb::LogEventKind::Stderr => "stderr",
        pb::LogEventKind::Question => "question",
        pb::LogEventKind::Debug => "debug",
        pb::LogEventKind::Unspecified => "unknown",
    }
}

/// One line of text: each run of line breaks (and the blanks around it)
/// shown as one ⏎, other control characters (escape sequences included) as
/// spaces, so an agent cannot drive the terminal.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        if i > 0 {
            out.push_str(" ⏎ ");
        }
        out.extend(
            line.chars()
                .map(|c| if output::acts_on_terminal(c) { ' ' } else { c }),
        );
    }
    out
}

fn says_error(text: &str) -> bool {
    text.to_ascii_lowercase().contains("error")
}

fn event_millis(event: &pb::LogEvent) -> i64 {
    event.time.as_ref().map(millis).unwrap_or_default()
}

/// `HH:MM:SS tag    text`, the tag and text coloured by kind.
fn human_line(event: &pb::LogEvent, color: bool) -> String {
    let text = one_line(&event.text);
    let (tag, colour) = match kind_of(event) {
        pb::LogEventKind::Text => ("text", None),
        pb::LogEventKind::ToolCall => ("tool", Some(CYAN)),
        pb::LogEventKind::ToolResult if text.starts_with("tool error") => ("output", Some(RED)),
        pb::LogEventKind::ToolResult => ("output", Some(DIM)),
        pb::LogEventKind::System => ("system", Some(YELLOW)),
        pb::LogEventKind::Result if says_error(&text) => ("result", Some(RED)),
        pb::LogEventKind::Result => ("result", Some(GREEN)),
        pb::LogEventKind::Stderr => ("stderr", Some(RED)),
        pb::LogEventKind::Question => ("ask", Some(YELLOW)),
        pb::LogEventKind::Debug => ("debug", Some(DIM)),
        pb::LogEventKind::Unspecified => ("event", None),
    };
    let time = output::clock(event_millis(event));
    match colour {
        Some(colour) if color => format!("{time} {colour}{tag:<6} {text}{RESET}"),
        _ => format!("{time} {tag:<6} {text}"),
    }
}

/// The event as one JSON object; the payload as JSON, not as a string.
fn json_line(event: &pb::LogEvent) -> String {
    let payload = if event.payload_json.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&event.payload_json)
            .unwrap_or_else(|_| serde_json::Value::String(event.payload_json.clone()))
    };
    serde_json::json!({
        "execution_id": event.execution_id,
        "offset": event.offset,
        "time": output::rfc3339(event_millis(event)),
        "kind": kind_name(kind_of(event)),
        "text": event.text,
        "payload": payload,
        "raw": event.raw,
    })
    .to_string()
}

/// A state a waiting client stops at: final, or waiting for a person.
pub fn is_stopped(state: TaskState) -> bool {
    !state.may_run_again()
}

/// The exit code of a task that stopped in `state` (see `super::exit`).
pub fn outcome_code(state: TaskState) -> u8 {
    match state {
        TaskState::Failed => exit::TASK_FAILED,
        TaskState::TimedOut => exit::TASK_TIMED_OUT,
        TaskState::BudgetExceeded => exit::TASK_BUDGET_EXCEEDED,
        TaskState::Cancelled => exit::TASK_CANCELLED,
        TaskState::Blocked => exit::TASK_BLOCKED,
        _ => 0,
    }
}

/// How bad an outcome is, for the worst of many: failed, timed out, budget
/// exceeded, blocked, cancelled, then success.
pub fn severity(state: TaskState) -> u8 {
    match state {
        TaskState::Failed => 5,
        TaskState::TimedOut => 4,
        TaskState::BudgetExceeded => 3,
        TaskState::Blocked => 2,
        TaskState::Cancelled => 1,
        _ => 0,
    }
}

/// Runs `work` unless Ctrl-C comes first (`None`).
pub async fn until_interrupted<T>(work: impl Future<Output = T>) -> Option<T> {
    let interrupted = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // No signal handler: never interrupted.
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        out = work => Some(out),
        () = interrupted => None,
    }
}

/// Streams one log (as `request` selects it) to the printer; returns the
/// offset after the last event printed (`request.from_offset` if none).
async fn stream(
    client: &mut Client,
    request: pb::StreamLogsRequest,
    printer: &mut Printer,
) -> Result<u64, Failure> {
    let mut next = request.from_offset;
    let mut events = client.stream_logs(request).await?.into_inner();
    while let Some(response) = events.message().await? {
        let Some(mut event) = response.event else {
            continue;
        };
        // The agent's line is sent once, as the payload: fill `raw` back in.
        if event.raw_is_payload && event.raw.is_empty() {
            event.raw = event.payload_json.clone();
        }
        next = event.offset + 1;
        printer.event(&event);
        if printer.closed() {
            break;
        }
    }
    Ok(next)
}

pub async fn get_task(client: &mut Client, id: &str) -> Result<pb::Task, Failure> {
    Ok(client
        .get_task(pb::GetTaskRequest { id: id.to_string() })
        .await?
        .into_inner()
        .task
        .unwrap_or_default())
}

fn task_state(task: &pb::Task) -> Result<TaskState, Failure> {
    state_from_pb(task.state).map_err(|e| {
        Failure(
            format!("the server sent a bad task state: {e}"),
            exit::FAILURE,
        )
    })
}

/// Every execution of a task, oldest first.
async fn executions(client: &mut Client, task_id: &str) -> Result<Vec<pb::Execution>, Failure> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_executions(pb::ListExecutionsRequest {
                task_id: task_id.to_string(),
                page_size: 0,
                page_token,
            })
            .await?
            .into_inner();
        all.extend(page.executions);
        if page.next_page_token.is_empty() {
            return Ok(all);
        }
        page_token = page.next_page_token;
    }
}

/// Where following a task starts.
#[derive(Clone, Copy, Debug, Default)]
pub struct FollowOptions {
    /// The offset to start at in the first execution followed.
    pub from: u64,
    /// Start at the task's newest execution (`logs -f`), not its first.
    pub newest_only: bool,
    /// A task that stopped without ever running is "not found" (`logs -f`),
    /// rather than simply returned (`submit --wait`).
    pub require_execution: bool,
    /// Also the agent CLI's routine stderr chatter (`logs --debug`).
    pub include_debug: bool,
}

/// Prints a task's log live, through every execution it starts (a
/// rate-limited attempt is requeued and a new execution starts later), until
/// the task stops; returns the task as it stopped.
///
/// Each round reads the task's state first, then its executions, and streams
/// (following) each execution not yet seen to its end; a stream of one
/// execution ends when that execution ends. Once a round starts with the task
/// stopped, the executions it lists are all there will be, so after
/// streaming them the task is returned.
pub async fn follow_task(
    client: &mut Client,
    task_id: &str,
    options: FollowOptions,
    printer: &mut Printer,
) -> Result<pb::Task, Failure> {
    // Executions streamed to their end.
    let mut done: HashSet<String> = HashSet::new();
    // The execution being streamed and the offset to go on from.
    let mut cursor: Option<(String, u64)> = None;
    let mut from = Some(options.from);
    let mut first_round = true;
    let mut announced_one = false;
    loop {
        let task = get_task(client, task_id).await?;
        let stopped = is_stopped(task_state(&task)?);
        let runs = executions(client, task_id).await?;
        if first_round {
            first_round = false;
            if options.newest_only
                && let Some((_, older)) = runs.split_last()
            {
                done.extend(older.iter().map(|e| e.id.clone()));
            }
            if stopped && runs.is_empty() && options.require_execution {
                return Err(Failure(
                    format!(
                        "task {task_id} has no executions (it is {})",
                        task_state(&task)?
                    ),
                    exit::NOT_FOUND,
                ));
            }
        }
        let mut printed = false;
        let pending: Vec<&pb::Execution> = runs.iter().filter(|e| !done.contains(&e.id)).collect();
        for run in pending {
            let start = match &cursor {
                Some((id, next)) if *id == run.id => *next,
                _ => {
                    if announced_one {
                        printer.note(&format!("attempt {} (execution {})", run.attempt, run.id));
                    }
                    from.take().unwrap_or(0)
                }
            };
            announced_one = true;
            let request = pb::StreamLogsRequest {
                execution_id: run.id.clone(),
                task_id: String::new(),
                from_offset: start,
                follow: true,
                include_debug: options.include_debug,
            };
            let next = stream(client, request, printer).await?;
            printed |= next > start;
            if run.ended_at.is_some() || stopped {
                done.insert(run.id.clone());
                cursor = None;
            } else {
                // It may still be running (its stream ended early): go on
                // from here next round.
                cursor = Some((run.id.clone(), next));
            }
        }
        if stopped {
            // Fresh, in case the end of the log raced the last update.
            return get_task(client, task_id).await;
        }
        if !printed {
            tokio::time::sleep(POLL).await;
        }
    }
}

/// `claudomator logs`.
pub async fn logs(args: LogsArgs) -> Result<(), Failure> {
    let style = if args.raw {
        Style::Raw
    } else if args.connection.json {
        Style::Json
    } else {
        Style::Human
    };
    let mut printer = Printer::new(style, Target::Stdout);
    let work = async {
        let mut client = connect(&args.connection).await?;
        // An execution id, or else a task id.
        let execution = match client
            .get_execution(pb::GetExecutionRequest {
                id: args.id.clone(),
            })
            .await
        {
            Ok(response) => response.into_inner().execution,
            Err(status) if status.code() == Code::NotFound => None,
            Err(status) => return Err(status.into()),
        };
        match execution {
            Some(execution) => {
                let request = pb::StreamLogsRequest {
                    execution_id: execution.id,
                    task_id: String::new(),
                    from_offset: args.from,
                    follow: args.follow,
                    include_debug: args.debug,
                };
                stream(&mut client, request, &mut printer).await.map(drop)
            }
            None if args.follow => {
                let options = FollowOptions {
                    from: args.from,
                    newest_only: true,
                    require_execution: true,
                    include_debug: args.debug,
                };
                match get_task(&mut client, &args.id).await {
                    Err(Failure(_, code)) if code == exit::NOT_FOUND => {
                        return Err(not_found(&args.id));
                    }
                    other => other?,
                };
                follow_task(&mut client, &args.id, options, &mut printer)
                    .await
                    .map(drop)
            }
            None => {
                let request = pb::StreamLogsRequest {
                    execution_id: String::new(),
                    task_id: args.id.clone(),
                    from_offset: args.from,
                    follow: false,
                    include_debug: args.debug,
                };
                stream(&mut client, request, &mut printer).await.map(drop)
            }
        }
    };
    // Ctrl-C just stops following.
    until_interrupted(work).await.unwrap_or(Ok(()))
}

fn not_found(id: &str) -> Failure {
    Failure(
        format!("no task or execution {id} on the server"),
        exit::NOT_FOUND,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: pb::LogEventKind, text: &str) -> pb::LogEvent {
        pb::LogEvent {
            execution_id: "01ARZ3NDEKTSV4RRFFQ69G5FAV".into(),
            offset: 3,
            time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 5_000_000,
            }),
            kind: kind as i32,
            text: text.into(),
            payload_json: r#"{"type":"result"}"#.into(),
            raw: r#"{"type":"result"}"#.into(),
            raw_is_payload: false,
        }
    }

    #[test]
    fn a_human_line_is_one_line_with_time_tag_and_text() {
        let line = human_line(
            &event(
                pb::LogEventKind::ToolCall,
                "Write a.txt\r\n\n  more\x1b[2J\u{202E}txt.exe\u{2028}\r\n",
            ),
            false,
        );
        assert!(
            line.contains(" tool   Write a.txt ⏎ more [2J txt.exe"),
            "{line}"
        );
        assert!(!line.contains(['\u{202E}', '\u{2028}']), "{line}");
        assert_eq!(line.lines().count(), 1);
        assert_eq!(line.as_bytes()[2], b':');
        assert!(!line.contains('\x1b'));
    }

    #[test]
    fn colours_follow_the_kind() {
        let colour = |kind, text| human_line(&event(kind, text), true);
        assert!(colour(pb::LogEventKind::ToolCall, "Read x").contains(CYAN));
        assert!(colour(pb::LogEventKind::ToolResult, "tool result: ok").contains(DIM));
        assert!(colour(pb::LogEventKind::ToolResult, "tool error: no").contains(RED));
        assert!(colour(pb::LogEventKind::Stderr, "oops").contains(RED));
        assert!(colour(pb::LogEventKind::System, "session").contains(YELLOW));
        assert!(colour(pb::LogEventKind::Result, "success (2 turns)").contains(GREEN));
        assert!(colour(pb::LogEventKind::Result, "error: error_max_turns").contains(RED));
        assert!(!colour(pb::LogEventKind::Text, "hello").contains('\x1b'));
    }

    #[test]
    fn a_json_line_carries_the_payload_as_json() {
        let line = json_line(&event(pb::LogEventKind::Result, "success"));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["offset"], 3);
        assert_eq!(value["kind"], "result");
        assert_eq!(value["payload"]["type"], "result");
        assert_eq!(value["time"], "2023-11-14T22:13:20.005Z");
    }

    #[test]
    fn outcomes_map_to_distinct_codes() {
        let stopped: Vec<_> = TaskState::ALL
            .iter()
            .copied()
            .filter(|s| is_stopped(*s))
            .collect();
        assert_eq!(stopped.len(), 7);
        let mut codes: Vec<u8> = stopped.iter().map(|s| outcome_code(*s)).collect();
        codes.sort();
        assert_eq!(codes, vec![0, 0, 10, 11, 12, 13, 14]);
        assert!(severity(TaskState::Failed) > severity(TaskState::Cancelled));
        assert_eq!(severity(TaskState::Ready), 0);
    }
}
