//! Runners: the agent CLIs behind the core's [`Runner`] seam
//! (`crate::core::runner`, re-exported here). A runner turns one
//! [`RunRequest`] into a process, streams what it prints into the execution
//! log, and reports a [`RunOutcome`]. This module holds what the CLIs share:
//! `run_cli` and `ask_cli`, the stream parsers' trait, probes, the price
//! table and `## Summary` extraction. Sandboxes, commits, timeouts,
//! cancellation and state changes are the executor's, the same for every
//! runner.

pub mod claude;
pub mod codex;
pub mod confine;
pub mod gemini;
pub mod local;
pub mod process;
pub mod setup;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use crate::core::logs::{LogKind, LogWriter};
use process::Stream;

pub use crate::core::runner::{
    AgentProbe, AskError, AskRequest, RunOutcome, RunRequest, Runner, Verdict,
};

/// How to start an agent CLI, from config.
#[derive(Clone, Debug, Default)]
pub struct CommandSpec {
    pub program: PathBuf,
    /// Extra environment for the agent process.
    pub env: BTreeMap<String, String>,
    /// A directory the runner owns for the agent's own config and sessions
    /// (used by agents that run with an isolated home).
    pub home: PathBuf,
    /// Model API base URL, for agents whose endpoint the runner configures.
    pub base_url: String,
    /// The environment variable holding the model API key.
    pub api_key_env: String,
    /// Retries the agent itself makes on API errors before giving up.
    pub max_retries: u32,
    /// The agent's isolation and network settings (a project's win).
    pub confinement: crate::core::runner::Confinement,
    /// Server environment variables passed beyond the allow-list.
    pub pass_env: Vec<String>,
    /// Paths shown read-only in the OS sandbox beyond the system's.
    pub expose: Vec<PathBuf>,
    /// The server's data dir: never visible in the OS sandbox but for the
    /// attempt's own sandbox and the agent's home.
    pub data_dir: PathBuf,
}

/// USD per million tokens, for agents that report no cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

/// Model name to price.
pub type PriceTable = HashMap<String, Price>;

/// The estimated cost of tokens on a model, if the table has its price.
pub fn estimate_cost(prices: &PriceTable, model: &str, input: u64, output: u64) -> Option<f64> {
    let price = prices.get(model)?;
    Some(input as f64 / 1e6 * price.input_per_mtok + output as f64 / 1e6 * price.output_per_mtok)
}

/// The `[prices]` line for a model, its prices to fill in:
/// `"gpt-5.5" = { input_per_mtok = IN, output_per_mtok = OUT }`.
pub fn price_line(model: &str) -> String {
    format!(
        "{} = {{ input_per_mtok = IN, output_per_mtok = OUT }}",
        toml::Value::String(model.to_string())
    )
}

/// Reads one agent's stdout, line by line, into log events and an outcome.
pub trait StreamParser: Send {
    /// One stdout line: its log kind, a one-line human reading, the payload.
    fn read_line(&mut self, line: &str) -> (LogKind, String, Value);

    /// The outcome once the process has exited (`stopped`: by the cancel token).
    fn finish(self, exit_code: Option<i32>, stopped: bool) -> RunOutcome;

    /// Whether a stderr line is the CLI's routine chatter, printed on every
    /// run whatever happens (logged as [`LogKind::Debug`], out of what a
    /// person reads); anything else on stderr stays a stderr event.
    fn is_chatter(&self, stderr_line: &str) -> bool {
        let _ = stderr_line;
        false
    }
}

/// Whether `line` starts with one of `known` (a CLI's chatter).
pub fn starts_with_any(line: &str, known: &[&str]) -> bool {
    let line = line.trim_start();
    known.iter().any(|prefix| line.starts_with(prefix))
}

/// Feeds recorded stdout lines through a parser, as if the run had been
/// stopped after the last one.
pub fn replay<P: StreamParser>(mut parser: P, stdout_lines: &[String]) -> RunOutcome {
    for line in stdout_lines {
        parser.read_line(line);
    }
    parser.finish(None, true)
}

/// Runs an agent CLI to its end, shut in as `launch` says (see
/// [`confine`]; the log's first event says how): stdout through `parser`,
/// stderr as stderr events, everything into the execution log; the one copy
/// of this logic every runner uses.
pub async fn run_cli<P: StreamParser>(
    command: Command,
    launch: confine::Launch<'_>,
    mut parser: P,
    log: &mut LogWriter,
    cancel: &CancellationToken,
) -> RunOutcome {
    let program = launch.spec.program.clone();
    let (command, _limit) = match confine::confine(command, &launch).await {
        Ok(confined) => {
            log.note(confined.note);
            (confined.command, confined.limit)
        }
        Err(why) => return RunOutcome::new(Verdict::Failed(why)),
    };
    let record = launch.spec.data_dir.join(process::RUNNING_DIR);
    let record = launch
        .spec
        .data_dir
        .is_absolute()
        .then_some(record.as_path());
    let exit = process::run(command, cancel, record, |source, line| {
        let logged = match source {
            Stream::Stdout => {
                let (kind, text, payload) = parser.read_line(&line);
                log.append(kind, text, payload, line)
            }
            Stream::Stderr => {
                let kind = if parser.is_chatter(&line) {
                    LogKind::Debug
                } else {
                    LogKind::Stderr
                };
                log.append(kind, line.clone(), Value::Null, line)
            }
        };
        if let Err(e) = logged {
            tracing::warn!(error = %e, "cannot write the execution log");
        }
    })
    .await;
    match exit {
        Ok(exit) => parser.finish(exit.code, exit.stopped),
        Err(e) => RunOutcome::new(Verdict::Failed(format!(
            "cannot start `{}`: {e}",
            program.display()
        ))),
    }
}

/// Runs an agent CLI for its answer rather than for a task, shut in as
/// `launch` says (like `run_cli`): stdout through `parser`, nothing logged,
/// the last stderr lines kept to explain a failure. The process runs on a
/// task of its own, so if the caller goes away (a client hangs up) the
/// cancel still ends the whole process group.
pub async fn ask_cli<P: StreamParser + 'static>(
    command: Command,
    launch: confine::Launch<'_>,
    parser: P,
    cancel: &CancellationToken,
) -> Result<String, AskError> {
    const STDERR_KEPT: usize = 5;
    let program = launch.spec.program.clone();
    let confined = confine::confine(command, &launch)
        .await
        .map_err(AskError::Setup)?;
    let (command, limit) = (confined.command, confined.limit);
    let token = cancel.child_token();
    let _stop_if_dropped = token.clone().drop_guard();
    let work = tokio::spawn(async move {
        let mut parser = parser;
        let mut stderr = std::collections::VecDeque::new();
        let exit = process::run(command, &token, None, |source, line| match source {
            Stream::Stdout => {
                parser.read_line(&line);
            }
            Stream::Stderr => {
                if stderr.len() == STDERR_KEPT {
                    stderr.pop_front();
                }
                stderr.push_back(line);
            }
        })
        .await;
        drop(limit);
        let stderr: Vec<String> = stderr.into_iter().collect();
        (exit.map(|e| parser.finish(e.code, e.stopped)), stderr)
    });
    let (outcome, stderr) = work.await.map_err(|source| AskError::Panicked {
        program: program.clone(),
        source,
    })?;
    let outcome = outcome.map_err(|source| AskError::Start { program, source })?;
    let why = match outcome.verdict {
        Verdict::Succeeded if !outcome.final_text.trim().is_empty() => {
            return Ok(outcome.final_text);
        }
        Verdict::Succeeded => "answered nothing".to_string(),
        Verdict::Stopped => "was stopped".to_string(),
        Verdict::Failed(m) | Verdict::BudgetExceeded(m) => m,
        Verdict::RateLimited { message, .. } => format!("rate limited: {message}"),
        Verdict::UsageLimited { message, .. } => format!("usage limit: {message}"),
    };
    let stderr = stderr.join(" | ");
    let stderr = if stderr.trim().is_empty() {
        String::new()
    } else {
        one_line(&stderr)
    };
    Err(AskError::NoAnswer { why, stderr })
}

/// The first line of a text, cut at 200 characters, for one-line readings.
pub fn one_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let mut short: String = line.chars().take(200).collect();
    if line.chars().count() > 200 || text.lines().nth(1).is_some() {
        short.push('…');
    }
    short
}

/// Writes a file an agent CLI reads at start (its settings, its config)
/// so that a CLI starting meanwhile never reads it half-written: nothing
/// when it already holds `contents`, else a temporary file renamed over it.
pub fn write_config_file(path: &Path, contents: &str) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == contents.as_bytes()) {
        return Ok(());
    }
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut staging = path.as_os_str().to_owned();
    staging.push(format!(".{}.{n}.tmp", std::process::id()));
    let staging = PathBuf::from(staging);
    std::fs::write(&staging, contents)
        .and_then(|()| std::fs::rename(&staging, path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&staging);
        })
}

/// A variable from the agent's configured environment, else the server's.
pub fn env_value(spec: &CommandSpec, name: &str) -> Option<String> {
    spec.env
        .get(name)
        .cloned()
        .or_else(|| std::env::var(name).ok())
        .filter(|v| !v.is_empty())
}

/// Probes a CLI: found on PATH, `--version` (10 s at most), and the
/// credentials as the runner judged them.
pub async fn probe_cli(
    spec: &CommandSpec,
    install_hint: &str,
    extra_env: &[(&str, &Path)],
    credentials: (bool, String),
) -> AgentProbe {
    let mut probe = AgentProbe {
        command: spec.program.display().to_string(),
        credentials_ok: credentials.0,
        credentials: credentials.1,
        ..AgentProbe::default()
    };
    if !spec.base_url.is_empty() {
        probe
            .credentials
            .push_str(&format!("; base URL {}", spec.base_url));
    }
    let Some(path) = locate(&spec.program) else {
        probe.detail = missing_cli(&spec.program, install_hint).unwrap_or_default();
        return probe;
    };
    probe.available = true;
    probe.detail = path.display().to_string();
    let mut command = Command::new(&path);
    command
        .arg("--version")
        .envs(&spec.env)
        .envs(extra_env.iter().copied())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(10), command.output()).await {
        Ok(Ok(out)) if out.status.success() => {
            probe.version = String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
        }
        Ok(Ok(out)) => {
            probe.available = false;
            probe.detail = format!(
                "{} --version failed: {}",
                path.display(),
                one_line(String::from_utf8_lossy(&out.stderr).trim())
            );
        }
        Ok(Err(e)) => {
            probe.available = false;
            probe.detail = format!("cannot run {}: {e}", path.display());
        }
        Err(_) => {
            probe.available = false;
            probe.detail = format!("{} --version did not answer in 10 s", path.display());
        }
    }
    probe
}

/// Why a CLI cannot run, if it is not installed.
pub fn missing_cli(program: &Path, install_hint: &str) -> Option<String> {
    match locate(program) {
        Some(_) => None,
        None => Some(format!(
            "the `{}` CLI is not installed ({install_hint})",
            program.display()
        )),
    }
}

/// Finds a program on the server's PATH (or checks an explicit path).
pub fn locate(program: &std::path::Path) -> Option<PathBuf> {
    locate_in(program, &std::env::var_os("PATH")?)
}

/// Finds a program on `path` (a PATH value), or checks an explicit path.
pub fn locate_in(program: &std::path::Path, path: &std::ffi::OsStr) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// The `## Summary` section of an agent's final text: the lines after the
/// heading, up to the next heading of the same or a higher level.
pub fn extract_summary(text: &str) -> Option<String> {
    let mut lines = text.lines();
    lines.by_ref().find(|l| {
        let l = l.trim();
        l.eq_ignore_ascii_case("## summary") || l.eq_ignore_ascii_case("# summary")
    })?;
    let body: Vec<&str> = lines
        .take_while(|l| !(l.starts_with("# ") || l.starts_with("## ")))
        .collect();
    let body = body.join("\n").trim().to_string();
    (!body.is_empty()).then_some(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_file_is_replaced_whole_and_only_when_it_changes() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("settings.json");
        write_config_file(&path, "{\"a\":1}").unwrap();
        let first = std::fs::metadata(&path).unwrap().ino();
        // The same contents: the file a running CLI may read is left alone.
        write_config_file(&path, "{\"a\":1}").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), first);
        // New contents arrive as a new file, renamed over the old one.
        write_config_file(&path, "{\"a\":2}").unwrap();
        assert_ne!(std::fs::metadata(&path).unwrap().ino(), first);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":2}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["settings.json"], "no staging file is left");
    }

    #[test]
    fn the_summary_section_is_extracted() {
        let text =
            "I did it.\n\n## Summary\nCreated hello.txt.\nAll tests pass.\n\n## Next\nnothing";
        assert_eq!(
            extract_summary(text).as_deref(),
            Some("Created hello.txt.\nAll tests pass.")
        );
        assert_eq!(extract_summary("no heading here"), None);
        assert_eq!(extract_summary("## Summary\n\n"), None);
        assert_eq!(
            extract_summary("## summary\n### Details\nx").as_deref(),
            Some("### Details\nx")
        );
    }
}
