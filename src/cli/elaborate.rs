//! `claudomator elaborate "..."`: asks the server to turn a one-line request
//! into a full task spec, prints it as a task file (`submit --file` reads it
//! back), and with `--submit` submits it as `submit` does.

use clap::Args;

use super::client::{Failure, Shown, connect, submit_spec, usage};
use super::{Connection, exit, output};
use crate::core::model::{AgentType, TaskSpec};
use crate::grpc::convert::{agent_to_pb, spec_from_pb};
use crate::proto as pb;

#[derive(Args, Debug)]
pub struct ElaborateArgs {
    /// What the task should do, in a line or a few; `-` reads standard input.
    pub text: String,
    /// The project (default: the server's only project).
    #[arg(long, short = 'p')]
    pub project: Option<String>,
    /// The agent the spec must use: claude, gemini, codex, local or auto
    /// (default: the elaboration chooses).
    #[arg(long, short = 'a')]
    pub agent: Option<String>,
    /// Submit the spec and print the task id, as `submit` does.
    #[arg(long)]
    pub submit: bool,
    /// With --submit: follow the task until it stops and exit with its
    /// outcome, as `submit --wait` does.
    #[arg(long, requires = "submit")]
    pub wait: bool,
    #[command(flatten)]
    pub connection: Connection,
}

pub async fn elaborate(args: ElaborateArgs) -> Result<(), Failure> {
    let text = if args.text == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| usage(format!("cannot read standard input: {e}")))?
    } else {
        args.text.clone()
    };
    let agent = match args.agent.as_deref() {
        None => pb::AgentType::Unspecified,
        Some(name) => agent_to_pb(
            name.parse::<AgentType>()
                .map_err(|e| usage(format!("--agent: {e}")))?,
        ),
    };
    let mut client = connect(&args.connection).await?;
    let response = client
        .elaborate(pb::ElaborateRequest {
            text,
            project: args.project.clone().unwrap_or_default(),
            agent: agent as i32,
        })
        .await?
        .into_inner();
    let spec = spec_from_pb(response.spec.clone().unwrap_or_default());
    let source = source_name(response.source);

    if args.connection.json && !args.submit {
        output::json(&serde_json::json!({
            "spec": spec,
            "source": source,
            "model": response.model,
            "notes": response.notes,
        }));
        return Ok(());
    }
    // With --submit --json, stdout carries only the submitted task.
    let to_stderr = args.connection.json;
    let say = |line: &str| {
        if to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    let by = if response.model.is_empty() {
        source.to_string()
    } else {
        format!("{source} ({})", response.model)
    };
    say(&format!("# elaborated by {by}"));
    for note in &response.notes {
        say(&format!("# note: {note}"));
    }
    say(&task_file(&spec)?);
    if !args.submit {
        return Ok(());
    }
    let shown = if args.wait { Shown::Wait } else { Shown::Task };
    submit_spec(client, &spec, String::new(), shown, false, &args.connection).await
}

/// The spec as a TOML task file, as `submit --file` reads it.
fn task_file(spec: &TaskSpec) -> Result<String, Failure> {
    toml::to_string(spec)
        .map(|text| text.trim_end().to_string())
        .map_err(|e| Failure(format!("cannot print the spec: {e}"), exit::FAILURE))
}

fn source_name(source: i32) -> &'static str {
    match pb::ElaborateSource::try_from(source) {
        Ok(pb::ElaborateSource::LocalModel) => "local_model",
        Ok(pb::ElaborateSource::Claude) => "claude",
        Ok(pb::ElaborateSource::Gemini) => "gemini",
        Ok(pb::ElaborateSource::Template) => "template",
        _ => "unknown",
    }
}
