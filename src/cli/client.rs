//! The CLI's client commands: build a request, make one call, print.
//! `submit --wait` then follows the task (`logs.rs`) and exits with its
//! outcome.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use super::logs::{self, FollowOptions, Printer, Style, Target};
use super::output;
use super::{Command, Connection, exit};
use crate::core::model::{AgentType, Execution, Priority, TaskSpec, TaskState};
use crate::grpc::convert::{execution_from_pb, spec_to_pb, state_to_pb, task_from_pb};
use crate::proto as pb;
use crate::proto::claudomator_service_client::ClaudomatorServiceClient;

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// What the agent must do; `-` reads it from standard input.
    pub instructions: Option<String>,
    /// A TOML or YAML task file (the fields of a task spec, plus
    /// `idempotency_key`); flags override its fields.
    #[arg(long, short = 'f')]
    pub file: Option<PathBuf>,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, short = 'p')]
    pub project: Option<String>,
    /// auto, claude, gemini, codex or local.
    #[arg(long, short = 'a')]
    pub agent: Option<String>,
    #[arg(long, short = 'm')]
    pub model: Option<String>,
    /// A tool the agent may use (repeatable).
    #[arg(long = "tool")]
    pub tools: Vec<String>,
    /// Spending cap in USD.
    #[arg(long)]
    pub budget: Option<f64>,
    #[arg(long)]
    pub max_turns: Option<u32>,
    /// e.g. 30m or "1h 30m".
    #[arg(long)]
    pub timeout: Option<String>,
    /// low, normal or high.
    #[arg(long)]
    pub priority: Option<String>,
    /// A tag (repeatable).
    #[arg(long = "tag", short = 't')]
    pub tags: Vec<String>,
    /// A task that must complete first (repeatable).
    #[arg(long = "depends-on")]
    pub depends_on: Vec<String>,
    #[arg(long)]
    pub parent: Option<String>,
    /// Start the sandbox from this branch, tag or commit of the project
    /// instead of its HEAD.
    #[arg(long)]
    pub base_ref: Option<String>,
    /// Where the sandbox starts when there is no --base-ref: `dependencies`
    /// (the default: the branches of the tasks it depends on in its
    /// project, merged; else HEAD), `head`, or `working_tree` (HEAD plus the
    /// project's uncommitted changes).
    #[arg(long)]
    pub start_from: Option<String>,
    /// Whether the work becomes a pull request on the project's GitHub
    /// repository: `off`, `on_complete` or `on_accept` (default: the
    /// project's `pull_requests`).
    #[arg(long)]
    pub pull_requests: Option<String>,
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Wait in READY for a person to accept or reject the result.
    #[arg(long)]
    pub review: bool,
    /// Resubmitting with the same key returns the first task.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Refuse the task (exit 4, nothing stored) when no live server can run
    /// its agent now, instead of accepting it with a warning.
    #[arg(long)]
    pub require_agent: bool,
    /// Follow the task's log until it stops, print it, and exit with its
    /// outcome: 0 completed or ready, 10 failed, 11 timed out, 12 budget
    /// exceeded, 13 cancelled, 14 blocked (with --json the log goes to
    /// stderr and the final task to stdout).
    #[arg(long)]
    pub wait: bool,
    /// Print only the task's id (for `ID=$(claudomator submit … -q)`).
    #[arg(long, short = 'q', conflicts_with_all = ["wait", "json"])]
    pub quiet: bool,
    #[command(flatten)]
    pub connection: Connection,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only tasks in this state (repeatable).
    #[arg(long = "state", short = 's')]
    pub states: Vec<String>,
    #[arg(long, short = 'p')]
    pub project: Option<String>,
    #[arg(long, short = 't')]
    pub tag: Option<String>,
    /// Tasks per page.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Continue from a previous page.
    #[arg(long)]
    pub page_token: Option<String>,
    /// Follow every page.
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub connection: Connection,
}

/// A failed command: the message and the exit code.
pub(super) struct Failure(pub(super) String, pub(super) u8);

impl From<Status> for Failure {
    fn from(status: Status) -> Self {
        let code = match status.code() {
            Code::InvalidArgument | Code::OutOfRange => exit::USAGE,
            Code::NotFound => exit::NOT_FOUND,
            Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => exit::REFUSED,
            Code::Unauthenticated | Code::PermissionDenied => exit::UNAUTHENTICATED,
            Code::Unavailable | Code::DeadlineExceeded => exit::UNAVAILABLE,
            _ => exit::FAILURE,
        };
        let mut message = format!("{} ({:?})", status.message(), status.code());
        // Every bad field, one a line, when there are several.
        let violations = crate::error::field_violations(&status);
        if violations.len() > 1 {
            for (field, description) in violations {
                message.push_str(&format!("\n  {field}: {description}"));
            }
        }
        Failure(message, code)
    }
}

pub(super) fn usage(message: impl Into<String>) -> Failure {
    Failure(message.into(), exit::USAGE)
}

pub async fn run(command: Command) -> ExitCode {
    match dispatch(command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message, code)) => {
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

#[derive(Clone)]
pub(super) struct Token(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for Token {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub(super) type Client =
    ClaudomatorServiceClient<tonic::service::interceptor::InterceptedService<Channel, Token>>;

pub(super) async fn connect(connection: &Connection) -> Result<Client, Failure> {
    let address = if connection.server.contains("://") {
        connection.server.clone()
    } else {
        format!("http://{}", connection.server)
    };
    let endpoint = Endpoint::from_shared(address.clone())
        .map_err(|e| usage(format!("bad --server address `{address}`: {e}")))?;
    let channel = endpoint.connect().await.map_err(|e| {
        Failure(
            format!("cannot reach the server at {address}: {e}. Is `claudomator serve` running?"),
            exit::UNAVAILABLE,
        )
    })?;
    let token = match &connection.token {
        Some(t) if !t.is_empty() => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| usage("the token has characters that cannot be sent"))?,
        ),
        _ => None,
    };
    Ok(ClaudomatorServiceClient::with_interceptor(
        channel,
        Token(token),
    ))
}

async fn dispatch(command: Command) -> Result<(), Failure> {
    match command {
        Command::Submit(args) => submit(*args).await,
        Command::Get { id, connection } => {
            let mut client = connect(&connection).await?;
            let response = client
                .get_task(pb::GetTaskRequest { id })
                .await?
                .into_inner();
            let pull = response.task.as_ref().and_then(|t| t.pull_request.clone());
            let task = decode_task(response.task)?;
            let runs = all_executions(&mut client, &task.id.to_string()).await?;
            if connection.json {
                output::json(&output::task_json(&task, &runs, pull.as_ref()));
            } else {
                output::task_details(&task, &runs, pull.as_ref());
            }
            Ok(())
        }
        Command::Pr {
            task_id,
            connection,
        } => {
            let response = connect(&connection)
                .await?
                .open_pull_request(pb::OpenPullRequestRequest { task_id })
                .await?
                .into_inner();
            let pull = response.pull_request.unwrap_or_default();
            if connection.json {
                output::json(&serde_json::json!({
                    "pull_request": output::pull_json(&pull),
                    "opened": response.opened,
                }));
            } else {
                if response.opened {
                    println!("opened pull request #{}", pull.number);
                }
                output::pull_details(&pull);
            }
            Ok(())
        }
        Command::List(args) => list(args).await,
        Command::Cancel {
            id,
            reason,
            connection,
        } => {
            let response = connect(&connection)
                .await?
                .cancel_task(pb::CancelTaskRequest { id, reason })
                .await?
                .into_inner();
            print_task(response.task, &connection)
        }
        Command::Executions {
            task_id,
            connection,
        } => executions(task_id, &connection).await,
        Command::Answer {
            task_id,
            answer,
            connection,
        } => {
            let answer = text_or_stdin(answer)?;
            let response = connect(&connection)
                .await?
                .answer_question(pb::AnswerQuestionRequest { task_id, answer })
                .await?
                .into_inner();
            print_task(response.task, &connection)
        }
        Command::Accept {
            task_id,
            connection,
        } => {
            let response = connect(&connection)
                .await?
                .accept_task(pb::AcceptTaskRequest { task_id })
                .await?
                .into_inner();
            print_task(response.task, &connection)
        }
        Command::Reject {
            task_id,
            feedback,
            connection,
        } => {
            let feedback = text_or_stdin(feedback)?;
            let response = connect(&connection)
                .await?
                .reject_task(pb::RejectTaskRequest { task_id, feedback })
                .await?
                .into_inner();
            print_task(response.task, &connection)
        }
        Command::Questions { connection } => {
            let blocked = connect(&connection)
                .await?
                .list_tasks(pb::ListTasksRequest {
                    states: vec![state_to_pb(TaskState::Blocked) as i32],
                    page_size: 500,
                    ..Default::default()
                })
                .await?
                .into_inner()
                .tasks
                .into_iter()
                .map(|t| decode_task(Some(t)))
                .collect::<Result<Vec<_>, _>>()?;
            if connection.json {
                output::json(&serde_json::json!({ "tasks": blocked }));
            } else {
                output::questions(&blocked);
            }
            Ok(())
        }
        Command::Doctor { connection } => {
            let status = connect(&connection)
                .await?
                .get_system_status(pb::GetSystemStatusRequest {})
                .await?
                .into_inner();
            let usable = output::doctor(&status, &connection.server, connection.json);
            if usable {
                Ok(())
            } else {
                Err(Failure(
                    "no agent can run tasks on this server: install one, or set its credentials"
                        .into(),
                    exit::FAILURE,
                ))
            }
        }
        Command::Execution { id, connection } => {
            let response = connect(&connection)
                .await?
                .get_execution(pb::GetExecutionRequest { id })
                .await?
                .into_inner();
            let execution =
                execution_from_pb(response.execution.unwrap_or_default()).map_err(|e| {
                    Failure(
                        format!("the server sent a bad execution: {e}"),
                        exit::FAILURE,
                    )
                })?;
            if connection.json {
                output::json(&serde_json::json!({ "execution": execution }));
            } else {
                output::execution_details(&execution);
            }
            Ok(())
        }
        Command::Logs(args) => logs::logs(args).await,
        Command::Watch(args) => super::watch::watch(args).await,
        Command::Diff(args) => super::review::diff(args).await,
        Command::Merge(args) => super::review::merge(args).await,
        Command::Prune(args) => super::review::prune(args).await,
        Command::Run(args) => super::batch::run(args).await,
        Command::Elaborate(args) => super::elaborate::elaborate(args).await,
        Command::Init { .. } | Command::Serve(_) => Err(usage("init and serve run locally")),
    }
}

/// A task as the server sent it, or a failure saying it was malformed.
pub(super) fn decode_task(task: Option<pb::Task>) -> Result<crate::core::model::Task, Failure> {
    task_from_pb(task.unwrap_or_default())
        .map_err(|e| Failure(format!("the server sent a bad task: {e}"), exit::FAILURE))
}

/// The argument, or standard input when it is `-`.
fn text_or_stdin(text: String) -> Result<String, Failure> {
    if text != "-" {
        return Ok(text);
    }
    std::io::read_to_string(std::io::stdin())
        .map_err(|e| usage(format!("cannot read standard input: {e}")))
}

fn print_task(task: Option<pb::Task>, connection: &Connection) -> Result<(), Failure> {
    let task = decode_task(task)?;
    if connection.json {
        output::json(&serde_json::json!({ "task": task }));
    } else {
        output::task_details(&task, &[], None);
    }
    Ok(())
}

/// Reads a TOML or YAML task file into a spec and an idempotency key.
fn read_task_file(path: &Path) -> Result<(TaskSpec, String), Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    let is_yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    let mut value: serde_json::Value = if is_yaml {
        serde_norway::from_str(&text).map_err(|e| usage(format!("{}: {e}", path.display())))?
    } else {
        toml::from_str(&text).map_err(|e| usage(format!("{}: {e}", path.display())))?
    };
    let key = value
        .as_object_mut()
        .and_then(|o| o.remove("idempotency_key"))
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let spec: TaskSpec = serde_json::from_value(value).map_err(|e| {
        let mut text = e.to_string();
        if text.starts_with("unknown field") {
            // Read above, so serde does not list it among the known ones.
            text.push_str(", or `idempotency_key`");
        }
        usage(format!("{}: {text}", path.display()))
    })?;
    Ok((spec, key))
}

fn build_spec(args: &SubmitArgs) -> Result<(TaskSpec, String), Failure> {
    let (mut spec, mut key) = match &args.file {
        Some(path) => read_task_file(path)?,
        None => (TaskSpec::default(), String::new()),
    };
    match args.instructions.as_deref() {
        Some("-") => {
            spec.instructions = std::io::read_to_string(std::io::stdin())
                .map_err(|e| usage(format!("cannot read instructions from stdin: {e}")))?;
        }
        Some(text) => spec.instructions = text.to_string(),
        None if args.file.is_none() => {
            return Err(usage(
                "give the instructions as an argument, `-` for stdin, or --file",
            ));
        }
        None => {}
    }
    let set = |slot: &mut String, value: &Option<String>| {
        if let Some(v) = value {
            *slot = v.clone();
        }
    };
    set(&mut spec.name, &args.name);
    set(&mut spec.project, &args.project);
    set(&mut spec.agent.agent_type, &args.agent);
    set(&mut spec.agent.model, &args.model);
    set(&mut spec.timeout, &args.timeout);
    set(&mut spec.priority, &args.priority);
    set(&mut spec.parent_task_id, &args.parent);
    set(&mut spec.base_ref, &args.base_ref);
    set(&mut spec.start_from, &args.start_from);
    set(&mut spec.pull_requests, &args.pull_requests);
    set(&mut key, &args.idempotency_key);
    spec.agent.allowed_tools.extend(args.tools.iter().cloned());
    spec.tags.extend(args.tags.iter().cloned());
    spec.depends_on.extend(args.depends_on.iter().cloned());
    if let Some(v) = args.budget {
        spec.agent.max_budget_usd = v;
    }
    if let Some(v) = args.max_turns {
        spec.agent.max_turns = v;
    }
    if let Some(v) = args.max_attempts {
        spec.max_attempts = v;
    }
    spec.review_required |= args.review;

    // Names travel as proto enums, so they are checked here, before sending.
    if !spec.agent.agent_type.is_empty() {
        spec.agent
            .agent_type
            .parse::<AgentType>()
            .map_err(|e| usage(format!("--agent: {e}")))?;
    }
    if !spec.priority.is_empty() {
        spec.priority
            .parse::<Priority>()
            .map_err(|e| usage(format!("--priority: {e}")))?;
    }
    if !spec.pull_requests.is_empty() {
        spec.pull_requests
            .parse::<crate::core::model::PullMode>()
            .map_err(|e| usage(format!("--pull-requests: {e}")))?;
    }
    if !spec.start_from.is_empty() {
        spec.start_from
            .parse::<crate::core::model::StartFrom>()
            .map_err(|e| usage(format!("--start-from: {e}")))?;
    }
    Ok((spec, key))
}

async fn submit(args: SubmitArgs) -> Result<(), Failure> {
    let (spec, idempotency_key) = build_spec(&args)?;
    let client = connect(&args.connection).await?;
    let shown = if args.quiet {
        Shown::Id
    } else if args.wait {
        Shown::Wait
    } else {
        Shown::Task
    };
    submit_spec(
        client,
        &spec,
        idempotency_key,
        shown,
        args.require_agent,
        &args.connection,
    )
    .await
}

/// What `submit` prints of the task it submitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Shown {
    /// A line (or `--json`).
    Task,
    /// Its id alone.
    Id,
    /// Its log until it stops, then the task (`--wait`).
    Wait,
}

/// Says on stderr that no live server can run the task's agent now (the
/// server's reason), when it said so.
pub(super) fn warn_unavailable(task: &crate::core::model::Task, why: &str) {
    if why.is_empty() {
        return;
    }
    eprintln!(
        "warning: {why}. Task {} is accepted and fails when its turn comes unless a server \
         that runs its agent is back by then (`submit --require-agent` refuses instead; \
         `claudomator doctor` says more)",
        task.id
    );
}

/// Submits a spec and prints what became of it (`submit`, `elaborate
/// --submit`); with `wait`, follows the task and exits with its outcome.
pub(super) async fn submit_spec(
    mut client: Client,
    spec: &TaskSpec,
    idempotency_key: String,
    shown: Shown,
    require_agent: bool,
    connection: &Connection,
) -> Result<(), Failure> {
    let response = client
        .submit_task(pb::SubmitTaskRequest {
            spec: Some(spec_to_pb(spec)),
            idempotency_key,
            task_id: String::new(),
            require_agent,
        })
        .await?
        .into_inner();
    let task = decode_task(response.task)?;
    warn_unavailable(&task, &response.agent_unavailable);
    if shown == Shown::Wait {
        return submit_and_wait(client, task, response.created, connection).await;
    }
    if shown == Shown::Id {
        println!("{}", task.id);
    } else if connection.json {
        output::json(&serde_json::json!({ "task": task, "created": response.created }));
    } else if response.created {
        println!("submitted {} ({})", task.id, task.state);
    } else {
        println!(
            "already submitted as {} ({}); the idempotency key matched",
            task.id, task.state
        );
    }
    Ok(())
}

/// `submit --wait`: follows the task's log until the task stops, prints the
/// task, and turns its outcome into the exit code.
async fn submit_and_wait(
    mut client: Client,
    task: crate::core::model::Task,
    created: bool,
    connection: &Connection,
) -> Result<(), Failure> {
    let id = task.id.to_string();
    let note = if created {
        format!("submitted {id} ({})", task.state)
    } else {
        format!(
            "already submitted as {id} ({}); the idempotency key matched",
            task.state
        )
    };
    // With --json, stdout carries only the final task.
    let target = if connection.json {
        eprintln!("{note}");
        Target::Stderr
    } else {
        println!("{note}");
        Target::Stdout
    };
    let mut printer = Printer::new(Style::Human, target);
    let followed = logs::until_interrupted(logs::follow_task(
        &mut client,
        &id,
        FollowOptions::default(),
        &mut printer,
    ))
    .await;
    let Some(followed) = followed else {
        return Err(Failure(
            format!(
                "interrupted; task {id} keeps running on the server (`claudomator logs -f {id}` follows it)"
            ),
            exit::INTERRUPTED,
        ));
    };
    let followed = followed?;
    let pull = followed.pull_request.clone();
    let last = decode_task(Some(followed))?;
    // The outcome decides the exit code: a failed listing only leaves the
    // attempts out of the printout.
    let runs = all_executions(&mut client, &id).await.unwrap_or_default();
    if connection.json {
        output::json(&output::task_json(&last, &runs, pull.as_ref()));
    } else {
        println!();
        output::task_details(&last, &runs, pull.as_ref());
    }
    match logs::outcome_code(last.state) {
        0 => Ok(()),
        code => Err(Failure(
            format!(
                "task {id} ended {}{}",
                last.state,
                if last.state_reason.is_empty() {
                    String::new()
                } else {
                    format!(": {}", last.state_reason)
                }
            ),
            code,
        )),
    }
}

async fn list(args: ListArgs) -> Result<(), Failure> {
    let states = args
        .states
        .iter()
        .map(|s| {
            s.parse::<TaskState>()
                .map(|s| state_to_pb(s) as i32)
                .map_err(|e| usage(format!("--state: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut client = connect(&args.connection).await?;
    let mut tasks = Vec::new();
    let mut token = args.page_token.clone().unwrap_or_default();
    loop {
        let page = client
            .list_tasks(pb::ListTasksRequest {
                states: states.clone(),
                project: args.project.clone().unwrap_or_default(),
                tag: args.tag.clone().unwrap_or_default(),
                page_size: args.limit,
                page_token: token,
            })
            .await?
            .into_inner();
        for task in page.tasks {
            tasks.push(
                task_from_pb(task).map_err(|e| {
                    Failure(format!("the server sent a bad task: {e}"), exit::FAILURE)
                })?,
            );
        }
        token = page.next_page_token;
        if !args.all || token.is_empty() {
            break;
        }
    }
    if args.connection.json {
        output::json(&serde_json::json!({ "tasks": tasks, "next_page_token": token }));
    } else {
        output::task_table(&tasks);
        if !token.is_empty() {
            println!("more: --page-token {token}");
        }
    }
    Ok(())
}

async fn executions(task_id: String, connection: &Connection) -> Result<(), Failure> {
    let mut client = connect(connection).await?;
    let executions = all_executions(&mut client, &task_id).await?;
    if connection.json {
        output::json(&serde_json::json!({ "executions": executions }));
    } else {
        output::execution_table(&executions);
    }
    Ok(())
}

/// Every execution of a task, oldest first, through all pages.
async fn all_executions(client: &mut Client, task_id: &str) -> Result<Vec<Execution>, Failure> {
    let mut executions = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_executions(pb::ListExecutionsRequest {
                task_id: task_id.to_string(),
                page_size: 0,
                page_token: token,
            })
            .await?
            .into_inner();
        for e in page.executions {
            executions.push(execution_from_pb(e).map_err(|e| {
                Failure(
                    format!("the server sent a bad execution: {e}"),
                    exit::FAILURE,
                )
            })?);
        }
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    Ok(executions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_task_file_field_is_named_with_every_known_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("task.yaml");
        std::fs::write(
            &file,
            "instructions: x\nidempotency_key: k\npriorty: high\n",
        )
        .unwrap();
        let Failure(message, code) = read_task_file(&file).unwrap_err();
        assert_eq!(code, super::super::exit::USAGE);
        assert!(message.contains("unknown field `priorty`"), "{message}");
        assert!(
            message.contains("`priority`") && message.contains("`idempotency_key`"),
            "{message}"
        );
        std::fs::write(&file, "instructions: x\nidempotency_key: k\n").unwrap();
        assert_eq!(read_task_file(&file).ok().unwrap().1, "k");
    }
}
