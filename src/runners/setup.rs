//! A project's `setup` command, run in the attempt's sandbox before the
//! agent (installing dependencies, a first build): `sh -c <setup>`, shut in
//! like an agent (see [`super::confine`]), with the allow-listed
//! environment plus the project's `setup_env`, where secrets may go: the
//! agent is another process and never sees them. Its output goes into the
//! attempt's log as `setup:` lines, within its own timeout.

use std::path::{Path, PathBuf};

use serde_json::Value;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::CommandSpec;
use super::confine::{Launch, confine};
use super::process::{self, Stream};
use crate::core::logs::{LogKind, LogWriter};
use crate::core::runner::Confinement;
pub use crate::core::runner::Setup;

/// Runs the setup in `workdir`; Err says why the attempt cannot go on.
pub async fn run(
    setup: &Setup,
    confinement: Confinement,
    workdir: &Path,
    log: &mut LogWriter,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(&setup.command)
        .current_dir(workdir)
        .envs(&setup.env);
    let spec = CommandSpec {
        program: PathBuf::from("sh"),
        data_dir: setup.data_dir.clone(),
        ..CommandSpec::default()
    };
    let launch = Launch {
        agent: None,
        spec: &spec,
        confinement,
        state: Vec::new(),
    };
    let confined = confine(command, &launch).await?;
    log.note(format!(
        "setup: running `{}` ({})",
        setup.command, confined.note
    ));
    let token = cancel.child_token();
    let timer = {
        let token = token.clone();
        let timeout = setup.timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            token.cancel();
        })
    };
    let record = setup.data_dir.join(process::RUNNING_DIR);
    let _limit = confined.limit;
    let exit = process::run(confined.command, &token, Some(&record), |stream, line| {
        let kind = match stream {
            Stream::Stdout => LogKind::System,
            Stream::Stderr => LogKind::Stderr,
        };
        if let Err(e) = log.append(kind, format!("setup: {line}"), Value::Null, line) {
            tracing::warn!(error = %e, "cannot write the execution log");
        }
    })
    .await;
    timer.abort();
    let why = match exit {
        Ok(exit) if exit.stopped && !cancel.is_cancelled() => format!(
            "setup did not finish within {}",
            humantime::format_duration(setup.timeout)
        ),
        Ok(exit) if exit.stopped => "setup was stopped".to_string(),
        Ok(exit) if exit.code == Some(0) => {
            log.note("setup: done");
            return Ok(());
        }
        Ok(exit) => format!(
            "setup `{}` failed (exit {})",
            setup.command,
            exit.code.map_or("by a signal".into(), |c| c.to_string())
        ),
        Err(e) => format!("cannot run setup: {e}"),
    };
    log.note(why.clone());
    Err(why)
}
