//! The `claudomator` command: `init` and `serve` run locally; the other
//! commands are gRPC calls to a server (`client.rs`; `logs.rs` prints and
//! follows execution logs; `batch.rs` is `run`, a file of tasks).
//!
//! Exit codes scripts can trust: 0 success; 1 an unexpected error; 2 bad
//! usage or an invalid argument; 3 not found; 4 refused in the task's current
//! state (or already exists); 5 not authenticated; 6 server unreachable.
//!
//! Commands that wait for tasks (`submit --wait`, `run --wait`) exit with the
//! task's outcome instead (for `run`, the worst of its tasks, in the order
//! below): 0 COMPLETED or READY; 10 FAILED; 11 TIMED_OUT; 12 BUDGET_EXCEEDED;
//! 13 CANCELLED; 14 BLOCKED; 130 interrupted (Ctrl-C) before the tasks
//! stopped, which keep running on the server. Worst first: FAILED, TIMED_OUT,
//! BUDGET_EXCEEDED, BLOCKED, CANCELLED. Ctrl-C ends `logs` with 0.

mod batch;
mod client;
mod elaborate;
mod logs;
mod output;
mod review;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, Overrides};

#[derive(Parser, Debug)]
#[command(
    name = "claudomator",
    version,
    about = "Run AI coding agents on your projects, many at a time"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct Connection {
    /// Server address.
    #[arg(
        long,
        env = "CLAUDOMATOR_SERVER",
        default_value = "http://127.0.0.1:7070"
    )]
    pub server: String,
    /// Bearer token, when the server requires one.
    #[arg(long, env = "CLAUDOMATOR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON instead of tables: one object per command. One task:
    /// {task, executions, cost_usd, cost_estimated, branch} (`get`,
    /// `submit --wait`); a command that changes a task: {task} (`submit`
    /// adds `created`); one execution: {execution}; lists: {tasks,
    /// next_page_token}, {executions}; `logs` and `watch`: an object per
    /// line.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Write a commented default config file.
    Init {
        /// Where to write it (default: your config dir,
        /// ~/.config/claudomator/claudomator.toml, which `serve` reads when
        /// the working directory has no claudomator.toml). A file written
        /// inside a git repository is added to its .git/info/exclude.
        path: Option<PathBuf>,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Run the server.
    Serve(ServeArgs),
    /// Submit a task.
    Submit(Box<client::SubmitArgs>),
    /// Turn a one-line request into a full task spec and print it as a task
    /// file (`submit --file` reads it); --submit submits it.
    ///
    /// The server asks its local model, then the claude CLI, then the gemini
    /// CLI, each only when the one before failed or answered an invalid
    /// spec; when none gives one, it answers a template (the request plus an
    /// acceptance line). The output's first lines say which path wrote the
    /// spec and why the others did not. --json prints {spec, source, model,
    /// notes}; with --submit --json, stdout carries only the submitted task.
    Elaborate(elaborate::ElaborateArgs),
    /// Show a task's pull request, or open it for READY or COMPLETED work
    /// that has none (its branch pushed to the project's GitHub
    /// repository). --json prints {pull_request, opened}.
    Pr {
        task_id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Show one task.
    Get {
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// List tasks, newest first.
    List(client::ListArgs),
    /// Cancel a task.
    Cancel {
        id: String,
        /// Recorded as the task's state reason.
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// List a task's executions (attempts), oldest first.
    Executions {
        task_id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Show one execution.
    Execution {
        id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Answer a blocked task's question; its agent session resumes with it.
    Answer {
        task_id: String,
        /// The answer (`-` reads it from standard input).
        answer: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// List the tasks waiting for an answer, with their questions.
    Questions {
        #[command(flatten)]
        connection: Connection,
    },
    /// Show a task's work: its branch against the commit it started from,
    /// as a unified diff (`--stat`: a line per file). Into a pipe the diff
    /// is git's own text (`claudomator diff ID | git apply`). --json prints
    /// {branch, base_commit, head_commit, truncated, files: [{path,
    /// old_path, status, added, removed, binary, patch, patch_truncated}]}.
    Diff(review::DiffArgs),
    /// Take a done task's work (READY or COMPLETED) into a branch of its
    /// project: merged (--rebase: rebased and fast-forwarded). The project's
    /// checkout is touched only when it is on that branch, and then must be
    /// clean; a conflict changes nothing and names the files. --json prints
    /// {branch, into, old_commit, new_commit, checked_out}.
    Merge(review::MergeArgs),
    /// Remove what ended tasks left: kept sandboxes and task branches (a
    /// completed task's only once merged, unless --force). --dry-run lists
    /// without removing. --json prints {items: [{task_id, project, kind,
    /// name, removed, kept_because}]}.
    Prune(review::PruneArgs),
    /// Accept a task's work that waits for review (READY): it is COMPLETED
    /// (a task with `pull_requests = "on_accept"` opens its pull request
    /// instead, and stays READY until it is merged).
    Accept {
        task_id: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Send a task's work back with feedback; its agent session resumes with it.
    Reject {
        task_id: String,
        /// What to change (`-` reads it from standard input).
        feedback: String,
        #[command(flatten)]
        connection: Connection,
    },
    /// Check what will work before you submit: agents found, their versions
    /// and credentials, git, the data dir, the database. Exits 1 when no
    /// agent can run tasks.
    Doctor {
        #[command(flatten)]
        connection: Connection,
    },
    /// Print a task's or an execution's log, one line per event.
    ///
    /// A task id shows its newest execution; with --follow, every execution
    /// the task goes on to start (a rate-limited attempt is retried as a new
    /// one) until the task stops. An execution id shows that execution. Each
    /// line: local time, a kind tag (text, tool, output, system, result,
    /// stderr) and the event's text; coloured on a terminal unless NO_COLOR
    /// is set. --json prints one JSON object per event and line (fields
    /// execution_id, offset, time, kind, text, payload, raw). Ctrl-C stops
    /// following and exits 0.
    Logs(logs::LogsArgs),
    /// Print task changes as they happen, one line each (time, task id,
    /// old -> new state, name, reason), until Ctrl-C.
    ///
    /// Filters: --state (changes into it), --project, --tag, --task.
    /// --snapshot first prints the matching tasks as they are now. A broken
    /// connection is resumed from the last cursor, so no change is missed
    /// or printed twice. --json prints one JSON object per line, each with
    /// the `cursor` that --cursor resumes from.
    Watch(watch::WatchArgs),
    /// Submit a file of tasks, in dependency order, without duplicates.
    ///
    /// The file (YAML, TOML or JSON by its extension) lists tasks: a YAML or
    /// JSON list, or `tasks: [...]` / TOML `[[tasks]]`. Each holds the fields
    /// `submit --file` accepts, plus an optional `id`: a name local to the
    /// file that other tasks' `depends_on` may use (besides task ids already
    /// on the server). Unnamed tasks are called #1, #2, ... by position.
    /// Unknown names, duplicate names and cycles are refused (exit 2) before
    /// anything is submitted. Each task's idempotency key is
    /// `run:<hash of the file's bytes>:<name>` (unless it sets
    /// `idempotency_key`), so running the same file again creates nothing new.
    Run(batch::RunArgs),
}

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Config file (default: ./claudomator.toml when it exists).
    #[arg(long, env = "CLAUDOMATOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (database, logs, sandboxes).
    #[arg(long, env = "CLAUDOMATOR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address.
    #[arg(long, env = "CLAUDOMATOR_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// HTTP listen address.
    #[arg(long, env = "CLAUDOMATOR_HTTP_LISTEN")]
    pub http_listen: Option<std::net::SocketAddr>,
    /// Origins of browser pages allowed to call over gRPC-Web (CORS), comma-separated.
    #[arg(long, env = "CLAUDOMATOR_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Option<Vec<String>>,
    /// Database URL (postgres://… or sqlite://…); default: SQLite in the data directory.
    #[arg(long, env = "CLAUDOMATOR_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Bearer tokens, comma-separated.
    #[arg(
        long,
        env = "CLAUDOMATOR_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub tokens: Option<Vec<String>>,
    /// OpenAI-compatible model endpoint ([local_model] endpoint), e.g. http://127.0.0.1:11434/v1.
    #[arg(long, env = "CLAUDOMATOR_LOCAL_MODEL_ENDPOINT")]
    pub local_model_endpoint: Option<String>,
    /// The GitHub webhook secret ([github] webhook_secret). Hidden: set it in
    /// the environment, where a process list does not show it.
    #[arg(
        long = "github-webhook-secret",
        env = "CLAUDOMATOR_GITHUB_WEBHOOK_SECRET",
        hide = true,
        hide_env_values = true
    )]
    pub github_webhook_secret: Option<String>,
}

impl ServeArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config_file: self.config.clone(),
            listen: self.listen,
            http_listen: self.http_listen,
            cors_origins: self.cors_origins.clone(),
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            tokens: self.tokens.clone(),
            local_model_endpoint: self.local_model_endpoint.clone(),
            github_webhook_secret: self.github_webhook_secret.clone(),
        }
    }
}

/// One `--cors-origins` entry, as `cors_origins` in the file reads it.
fn parse_origin(text: &str) -> Result<String, String> {
    crate::grpc::cors::parse_origin(text)
}

/// Exit codes, as documented above.
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const REFUSED: u8 = 4;
    pub const UNAUTHENTICATED: u8 = 5;
    pub const UNAVAILABLE: u8 = 6;
    /// `--wait`: the task ended FAILED.
    pub const TASK_FAILED: u8 = 10;
    /// `--wait`: the task ended TIMED_OUT.
    pub const TASK_TIMED_OUT: u8 = 11;
    /// `--wait`: the task ended BUDGET_EXCEEDED.
    pub const TASK_BUDGET_EXCEEDED: u8 = 12;
    /// `--wait`: the task ended CANCELLED.
    pub const TASK_CANCELLED: u8 = 13;
    /// `--wait`: the task is BLOCKED, waiting for an answer.
    pub const TASK_BLOCKED: u8 = 14;
    /// `--wait`: Ctrl-C before the tasks stopped (they keep running).
    pub const INTERRUPTED: u8 = 130;
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        // A client whose reader goes away (`| head`) ends quietly, as any
        // Unix tool does, instead of panicking in `println!` (Rust ignores
        // SIGPIPE). Only pipes are affected: sockets are written with
        // MSG_NOSIGNAL. The server keeps ignoring it (an agent that exits
        // before reading its stdin must not kill it).
        // SAFETY: restoring a signal's default disposition, before any
        // thread starts.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Init { path, force } => init(path, force),
        Command::Serve(args) => serve(args).await,
        other => client::run(other).await,
    }
}

fn init(path: Option<PathBuf>, force: bool) -> ExitCode {
    let Some(path) = path.or_else(config::user_config_file) else {
        eprintln!("error: no HOME or XDG_CONFIG_HOME to put the config in; name a file");
        return ExitCode::from(exit::USAGE);
    };
    if path.exists() && !force {
        eprintln!(
            "error: {} already exists; pass --force to overwrite it",
            path.display()
        );
        return ExitCode::from(exit::USAGE);
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("error: cannot create {}: {e}", dir.display());
        return ExitCode::from(exit::FAILURE);
    }
    if let Err(e) = write_private(&path, &config::commented_default(&cwd)) {
        eprintln!("error: cannot write {}: {e}", path.display());
        return ExitCode::from(exit::FAILURE);
    }
    println!("wrote {}", path.display());
    match exclude_from_git(&path) {
        Ok(Some(exclude)) => println!(
            "added it to {} (it may hold secrets: it is never committed)",
            exclude.display()
        ),
        Ok(None) => {}
        Err(e) => eprintln!(
            "warning: {} is inside a git repository and could not be excluded from it ({e}): \
             do not commit it",
            path.display()
        ),
    }
    println!(
        "next: edit it, then `claudomator serve` and `claudomator doctor` (see the README's quick start)"
    );
    ExitCode::SUCCESS
}

/// Adds `file` to the `.git/info/exclude` of the work tree it is in, if any
/// (and not there yet); returns the exclude file it wrote.
fn exclude_from_git(file: &std::path::Path) -> std::io::Result<Option<PathBuf>> {
    let absolute = std::path::absolute(file)?;
    let Some(root) = absolute
        .ancestors()
        .skip(1)
        .find(|dir| dir.join(".git").is_dir())
    else {
        return Ok(None);
    };
    let Ok(relative) = absolute.strip_prefix(root) else {
        return Ok(None);
    };
    let entry = format!("/{}", relative.to_string_lossy());
    let exclude = root.join(".git/info/exclude");
    let current = std::fs::read_to_string(&exclude).unwrap_or_default();
    if current.lines().any(|line| line.trim() == entry) {
        return Ok(None);
    }
    std::fs::create_dir_all(root.join(".git/info"))?;
    let mut text = current;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!(
        "# claudomator's config (it may hold secrets)\n{entry}\n"
    ));
    std::fs::write(&exclude, text)?;
    Ok(Some(exclude))
}

/// Writes `text` to `path` readable by its owner only (0600): a config may
/// hold tokens and secrets. An existing file is truncated and made 0600 too.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,sea_orm_migration=warn,sqlx::postgres::notice=warn",
        )
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        // Whoever read stderr may go away (`serve 2>&1 | head`, a
        // supervisor restarting): the server keeps running and logging
        // nowhere. By default a failed write is reported with `eprintln!`,
        // which panics on the same closed stderr, in whichever task logged
        // (the SIGTERM handler's, say: the server then never stops).
        .log_internal_errors(false)
        .try_init();
}

async fn serve(args: ServeArgs) -> ExitCode {
    init_tracing();
    let cwd = std::env::current_dir().unwrap_or_default();
    let config = match Config::load(&args.overrides(), &cwd) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(exit::USAGE);
        }
    };
    match crate::app::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}
