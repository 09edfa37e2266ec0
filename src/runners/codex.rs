//! Codex, headless: `codex exec --json --sandbox workspace-write …` with a
//! `CODEX_HOME` of its own and a provider config the runner writes. Codex
//! reports tokens but no cost: the cost is estimated from the price table.

use std::sync::Arc;

use serde_json::Value;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::confine::Launch;
use super::{
    AgentProbe, CommandSpec, PriceTable, RunOutcome, RunRequest, Runner, StreamParser, Verdict,
    env_value, estimate_cost, missing_cli, one_line, probe_cli, replay, run_cli, starts_with_any,
    write_config_file,
};
use crate::core::logs::{LogKind, LogWriter};
use crate::core::model::AgentType;

const PROVIDER: &str = "claudomator";
const DEFAULT_KEY_ENV: &str = "OPENAI_API_KEY";
const INSTALL_HINT: &str = "npm install -g @openai/codex, or set [agents.codex] command";

/// What Codex prints on stderr at every run (0.169.0: it looks for more
/// input on a stdin that is not a terminal, even `/dev/null`): not about
/// the task.
const CHATTER: &[&str] = &["Reading additional input from stdin..."];

pub struct CodexRunner {
    command: CommandSpec,
    prices: Arc<PriceTable>,
}

impl CodexRunner {
    pub fn new(command: CommandSpec, prices: Arc<PriceTable>) -> Self {
        CodexRunner { command, prices }
    }

    /// `$CODEX_HOME/config.toml`: no update checks, analytics, telemetry or
    /// plugin fetching; with a base URL, a Responses-API provider with
    /// bounded retries.
    pub fn config_toml(&self) -> String {
        let mut config = toml::Table::new();
        config.insert("check_for_update_on_startup".into(), false.into());
        let table = |pairs: &[(&str, toml::Value)]| {
            toml::Value::Table(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            )
        };
        config.insert("analytics".into(), table(&[("enabled", false.into())]));
        config.insert("otel".into(), table(&[("exporter", "none".into())]));
        // Agent commands write to the sandbox and $TMPDIR, not the shared
        // /tmp (concurrent sandboxes raced remounting it).
        config.insert(
            "sandbox_workspace_write".into(),
            table(&[("exclude_slash_tmp", true.into())]),
        );
        config.insert(
            "features".into(),
            table(&[
                ("plugins", false.into()),
                ("remote_plugin", false.into()),
                ("apps", false.into()),
            ]),
        );
        if !self.command.base_url.is_empty() {
            let key_env = if self.command.api_key_env.is_empty() {
                DEFAULT_KEY_ENV
            } else {
                &self.command.api_key_env
            };
            let retries = i64::from(self.command.max_retries);
            config.insert("model_provider".into(), PROVIDER.into());
            config.insert(
                "model_providers".into(),
                table(&[(
                    PROVIDER,
                    table(&[
                        ("name", "claudomator-configured provider".into()),
                        ("base_url", self.command.base_url.clone().into()),
                        ("env_key", key_env.into()),
                        ("wire_api", "responses".into()),
                        ("request_max_retries", retries.into()),
                        ("stream_max_retries", retries.into()),
                    ]),
                )]),
            );
        }
        toml::to_string(&config).expect("a table of plain values serializes")
    }

    fn write_config(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.command.home.join("tmp"))?;
        write_config_file(&self.command.home.join("config.toml"), &self.config_toml())
    }

    fn args(&self, req: &RunRequest) -> Vec<String> {
        let mut prompt = req.prompt.clone();
        if !req.system_prompt.is_empty() {
            prompt = format!("{prompt}\n\n{}", req.system_prompt);
        }
        let mut args = vec![
            "exec".to_string(),
            "--json".into(),
            // Writes inside the working directory (the sandbox) only.
            "--sandbox".into(),
            "workspace-write".into(),
            "--skip-git-repo-check".into(),
        ];
        // User text is never an argument the CLI could read as an option:
        // the model in `--model=` form, the thread and the prompt after `--`.
        if !req.model.is_empty() {
            args.push(format!("--model={}", req.model));
        }
        match &req.resume_session {
            Some(thread) => args.extend(["resume".into(), "--".into(), thread.clone(), prompt]),
            None => args.extend(["--".into(), prompt]),
        }
        args
    }
}

#[async_trait::async_trait]
impl Runner for CodexRunner {
    fn agent(&self) -> AgentType {
        AgentType::Codex
    }

    fn unavailable(&self) -> Option<String> {
        missing_cli(&self.command.program, INSTALL_HINT)
    }

    fn recover(&self, model: &str, stdout_lines: &[String]) -> RunOutcome {
        let parser = CodexStream {
            prices: self.prices.clone(),
            model: model.to_string(),
            ..CodexStream::default()
        };
        replay(parser, stdout_lines)
    }

    async fn probe(&self) -> AgentProbe {
        let spec = &self.command;
        let key_env = if spec.api_key_env.is_empty() {
            DEFAULT_KEY_ENV
        } else {
            &spec.api_key_env
        };
        let auth_file = spec.home.join("auth.json");
        let credentials = if env_value(spec, key_env).is_some() {
            (true, format!("{key_env} is set"))
        } else if auth_file.is_file() {
            (true, format!("logged in ({})", auth_file.display()))
        } else {
            (
                false,
                format!(
                    "no {key_env}, and no login in {} (CODEX_HOME={} codex login)",
                    spec.home.display(),
                    spec.home.display()
                ),
            )
        };
        probe_cli(
            spec,
            INSTALL_HINT,
            &[("CODEX_HOME", spec.home.as_path())],
            credentials,
        )
        .await
    }

    async fn run(
        &self,
        req: RunRequest,
        log: &mut LogWriter,
        cancel: CancellationToken,
    ) -> RunOutcome {
        if let Err(e) = self.write_config() {
            return RunOutcome::new(Verdict::Failed(format!(
                "cannot write the Codex config in {}: {e}",
                self.command.home.display()
            )));
        }
        let mut command = Command::new(&self.command.program);
        command
            .args(self.args(&req))
            .current_dir(&req.workdir)
            .env("CODEX_HOME", &self.command.home)
            // Its own HOME too: codex runs commands in a login shell, which
            // would otherwise read the server user's profile on every task.
            .env("HOME", &self.command.home)
            .env("TMPDIR", self.command.home.join("tmp"))
            .env("NO_COLOR", "1")
            .envs(&self.command.env);
        let parser = CodexStream {
            prices: self.prices.clone(),
            model: req.model.clone(),
            prior_usage: req.prior_usage.unwrap_or_default(),
            ..CodexStream::default()
        };
        let launch = Launch {
            agent: Some(AgentType::Codex),
            spec: &self.command,
            confinement: req.confinement,
            state: Vec::new(),
        };
        run_cli(command, launch, parser, log, &cancel).await
    }
}

/// What has been read of one run's `--json` output.
#[derive(Default)]
pub struct CodexStream {
    prices: Arc<PriceTable>,
    model: String,
    /// Tokens the thread had used before this run (usage is cumulative
    /// across a resumed thread).
    prior_usage: (u64, u64),
    thread_id: String,
    last_message: String,
    usage: Option<(u64, u64)>,
    turns: u32,
    /// The model answered (an item) since the last usage report.
    answered_since_usage: bool,
    failure: Option<String>,
    last_error: String,
}

impl StreamParser for CodexStream {
    fn is_chatter(&self, stderr_line: &str) -> bool {
        starts_with_any(stderr_line, CHATTER)
    }

    fn read_line(&mut self, line: &str) -> (LogKind, String, Value) {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            return (LogKind::Text, line.to_string(), Value::Null);
        };
        let str_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let (kind, text) = match event["type"].as_str().unwrap_or_default() {
            "thread.started" => {
                self.thread_id = str_of(&event["thread_id"]);
                (
                    LogKind::System,
                    format!("thread {} started", self.thread_id),
                )
            }
            "turn.started" => (LogKind::System, "turn started".into()),
            "turn.completed" => {
                let usage = &event["usage"];
                let tokens = |k: &str| usage[k].as_u64().unwrap_or_default();
                let input = tokens("input_tokens");
                let output = tokens("output_tokens") + tokens("reasoning_output_tokens");
                self.usage = Some((input, output));
                self.answered_since_usage = false;
                self.turns += 1;
                (
                    LogKind::Result,
                    format!("turn completed ({input} tokens in, {output} out)"),
                )
            }
            "turn.failed" => {
                let message = str_of(&event["error"]["message"]);
                self.failure = Some(message.clone());
                (
                    LogKind::Result,
                    format!("turn failed: {}", one_line(&message)),
                )
            }
            "error" => {
                self.last_error = str_of(&event["message"]);
                (
                    LogKind::System,
                    format!("error: {}", one_line(&self.last_error)),
                )
            }
            kind @ ("item.started" | "item.updated" | "item.completed") => {
                // (An `error` item is Codex's own notice, not the model's.)
                self.answered_since_usage |= event["item"]["type"] != "error";
                self.read_item(kind, &event["item"])
            }
            other => (LogKind::System, other.to_string()),
        };
        (kind, text, event)
    }

    fn finish(self, exit_code: Option<i32>, stopped: bool) -> RunOutcome {
        let mut outcome = RunOutcome::new(Verdict::Succeeded);
        outcome.exit_code = exit_code;
        outcome.session_id = self.thread_id.clone();
        outcome.model = self.model.clone();
        outcome.final_text = self.last_message.clone();
        outcome.turns = self.turns;
        outcome.cost_estimated = true;
        if let Some((input, output)) = self.usage {
            outcome.input_tokens = input.saturating_sub(self.prior_usage.0);
            outcome.output_tokens = output.saturating_sub(self.prior_usage.1);
            match estimate_cost(
                &self.prices,
                &self.model,
                outcome.input_tokens,
                outcome.output_tokens,
            ) {
                Some(cost) => outcome.cost_usd = cost,
                None => {
                    outcome.cost_unknown = outcome.input_tokens + outcome.output_tokens > 0;
                }
            }
        }
        // Usage comes when a turn completes: a turn cut short after the
        // model answered used tokens nobody counted.
        outcome.cost_unknown |= self.answered_since_usage;
        if stopped {
            outcome.verdict = Verdict::Stopped;
            return outcome;
        }
        outcome.verdict = match (&self.failure, exit_code) {
            (Some(message), _) if message.to_ascii_lowercase().contains("quota") => {
                Verdict::UsageLimited {
                    message: one_line(message),
                    resets_at: None,
                }
            }
            (Some(message), _)
                if message.contains("429") || message.contains("Too Many Requests") =>
            {
                Verdict::RateLimited {
                    message: one_line(message),
                    retry_after: None,
                }
            }
            (Some(message), _) => Verdict::Failed(one_line(message)),
            (None, Some(0)) if self.usage.is_some() => Verdict::Succeeded,
            (None, code) => Verdict::Failed(format!(
                "codex exited with {} without completing its turn{}",
                code.map_or("a signal".to_string(), |c| format!("code {c}")),
                if self.last_error.is_empty() {
                    String::new()
                } else {
                    format!(": {}", one_line(&self.last_error))
                }
            )),
        };
        outcome
    }
}

impl CodexStream {
    fn read_item(&mut self, event: &str, item: &Value) -> (LogKind, String) {
        let str_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let done = event == "item.completed";
        match item["type"].as_str().unwrap_or_default() {
            "agent_message" => {
                let text = str_of(&item["text"]);
                if done {
                    self.last_message = text.clone();
                }
                (LogKind::Text, text)
            }
            "command_execution" if done => (
                LogKind::ToolResult,
                format!(
                    "command exited {}: {}",
                    item["exit_code"],
                    one_line(&str_of(&item["aggregated_output"]))
                )
                .trim_end_matches(": ")
                .to_string(),
            ),
            "command_execution" => (
                LogKind::ToolCall,
                format!("exec {}", one_line(&str_of(&item["command"]))),
            ),
            "file_change" => {
                let paths: Vec<String> = item["changes"]
                    .as_array()
                    .map(|changes| {
                        changes
                            .iter()
                            .map(|c| format!("{} {}", str_of(&c["kind"]), str_of(&c["path"])))
                            .collect()
                    })
                    .unwrap_or_default();
                let kind = if done {
                    LogKind::ToolResult
                } else {
                    LogKind::ToolCall
                };
                let status = str_of(&item["status"]);
                (kind, format!("file change {status}: {}", paths.join(", ")))
            }
            "error" => {
                // Non-fatal notices (e.g. unknown model metadata).
                (
                    LogKind::System,
                    format!("notice: {}", one_line(&str_of(&item["message"]))),
                )
            }
            other => (
                LogKind::System,
                format!("{other} {}", if done { "done" } else { "started" }),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runners::Price;

    fn hostile_request(resume: Option<&str>) -> RunRequest {
        RunRequest {
            confinement: Default::default(),
            task_id: crate::core::model::Id::new(),
            execution_id: crate::core::model::Id::new(),
            workdir: std::path::PathBuf::from("/tmp"),
            prompt: "- fix the typo\n- --help".into(),
            system_prompt: "-x".into(),
            model: "-m".into(),
            allowed_tools: Vec::new(),
            max_budget_usd: 0.0,
            max_turns: 0,
            resume_session: resume.map(String::from),
            prior_usage: None,
        }
    }

    #[test]
    fn user_text_is_never_an_option() {
        let runner = CodexRunner::new(CommandSpec::default(), Arc::new(PriceTable::new()));
        let args = runner.args(&hostile_request(None));
        let prompt = "- fix the typo\n- --help\n\n-x";
        assert_eq!(&args[args.len() - 2..], ["--", prompt]);
        assert!(args.contains(&"--model=-m".to_string()), "{args:?}");
        let args = runner.args(&hostile_request(Some("--last")));
        assert_eq!(&args[args.len() - 4..], ["resume", "--", "--last", prompt]);
    }

    fn read(stream: &str, exit: Option<i32>, prior: (u64, u64)) -> (RunOutcome, Vec<LogKind>) {
        let mut prices = PriceTable::new();
        prices.insert(
            "gpt-5".into(),
            Price {
                input_per_mtok: 1.25,
                output_per_mtok: 10.0,
            },
        );
        let mut parser = CodexStream {
            prices: Arc::new(prices),
            model: "gpt-5".into(),
            prior_usage: prior,
            ..CodexStream::default()
        };
        let kinds = stream.lines().map(|l| parser.read_line(l).0).collect();
        (parser.finish(exit, false), kinds)
    }

    /// The recorded streams of the real CLI, and what each must give.
    #[test]
    fn recorded_streams() {
        let (outcome, kinds) = read(
            include_str!("../../tests/fixtures/agent-cli/codex-exec.jsonl"),
            Some(0),
            (0, 0),
        );
        assert_eq!(outcome.verdict, Verdict::Succeeded);
        assert_eq!(outcome.session_id, "01a20dea-a878-7700-b1ea-dfcebc043f3a");
        assert_eq!((outcome.input_tokens, outcome.output_tokens), (2468, 112));
        let expected = 2468.0 / 1e6 * 1.25 + 112.0 / 1e6 * 10.0;
        assert!((outcome.cost_usd - expected).abs() < 1e-12);
        assert!(outcome.cost_estimated);
        assert!(outcome.final_text.contains("## Summary"));
        assert_eq!(
            kinds,
            vec![
                LogKind::System,
                LogKind::System,
                LogKind::Text,
                LogKind::ToolCall,
                LogKind::ToolResult,
                LogKind::Text,
                LogKind::Result
            ]
        );

        let (outcome, kinds) = read(
            include_str!("../../tests/fixtures/agent-cli/codex-exec-shell.jsonl"),
            Some(0),
            (0, 0),
        );
        assert_eq!(outcome.verdict, Verdict::Succeeded);
        assert!(kinds.contains(&LogKind::ToolCall) && kinds.contains(&LogKind::ToolResult));

        // Usage on a resumed thread is cumulative: the run's share is the delta.
        let (outcome, _) = read(
            include_str!("../../tests/fixtures/agent-cli/codex-resume.jsonl"),
            Some(0),
            (2468, 112),
        );
        assert_eq!((outcome.input_tokens, outcome.output_tokens), (1234, 56));
        assert_eq!(outcome.session_id, "01a20dea-a878-7700-b1ea-dfcebc043f3a");

        let (outcome, _) = read(
            include_str!("../../tests/fixtures/agent-cli/codex-429.jsonl"),
            Some(1),
            (0, 0),
        );
        assert!(
            matches!(outcome.verdict, Verdict::RateLimited { .. }),
            "{:?}",
            outcome.verdict
        );
    }

    /// A model missing from the price table, or a turn cut short after the
    /// model answered: the cost is unknown, not $0.
    #[test]
    fn an_unpriced_model_or_a_cut_turn_has_an_unknown_cost() {
        let stream = include_str!("../../tests/fixtures/agent-cli/codex-exec.jsonl");
        let mut parser = CodexStream {
            model: "gpt-5.5".into(),
            ..CodexStream::default()
        };
        for line in stream.lines() {
            parser.read_line(line);
        }
        let unpriced = parser.finish(Some(0), false);
        assert_eq!(unpriced.verdict, Verdict::Succeeded);
        assert!(unpriced.cost_unknown && unpriced.cost_usd == 0.0);
        assert_eq!((unpriced.input_tokens, unpriced.output_tokens), (2468, 112));

        let (priced, _) = read(stream, Some(0), (0, 0));
        assert!(!priced.cost_unknown);

        let cut: Vec<String> = stream
            .lines()
            .filter(|l| !l.contains("turn.completed"))
            .map(String::from)
            .collect();
        let runner = CodexRunner::new(CommandSpec::default(), Arc::new(PriceTable::new()));
        let stopped = runner.recover("gpt-5", &cut);
        assert_eq!(stopped.verdict, Verdict::Stopped);
        assert!(stopped.cost_unknown);
        // Stopped before the model answered: nothing was used.
        assert!(!runner.recover("gpt-5", &cut[..2]).cost_unknown);
    }

    #[test]
    fn failures_say_why() {
        let (outcome, _) = read(
            r#"{"type":"turn.failed","error":{"message":"model not found"}}"#,
            Some(1),
            (0, 0),
        );
        assert_eq!(outcome.verdict, Verdict::Failed("model not found".into()));
        let (outcome, _) = read(
            r#"{"type":"turn.failed","error":{"message":"Quota exceeded. Check your plan and billing details."}}"#,
            Some(1),
            (0, 0),
        );
        assert!(
            matches!(outcome.verdict, Verdict::UsageLimited { .. }),
            "{:?}",
            outcome.verdict
        );
        let (outcome, _) = read(
            r#"{"type":"thread.started","thread_id":"t"}"#,
            Some(2),
            (0, 0),
        );
        assert!(matches!(outcome.verdict, Verdict::Failed(m) if m.contains("code 2")));
    }

    #[test]
    fn the_config_names_the_provider_only_with_a_base_url() {
        let mut spec = CommandSpec::default();
        let plain = CodexRunner::new(spec.clone(), Arc::default()).config_toml();
        assert!(!plain.contains("model_provider"));
        assert!(plain.contains("check_for_update_on_startup = false"));
        spec.base_url = "http://127.0.0.1:9/v1".into();
        spec.max_retries = 1;
        let with_url = CodexRunner::new(spec, Arc::default()).config_toml();
        let parsed: toml::Table = toml::from_str(&with_url).unwrap();
        assert_eq!(parsed["model_provider"].as_str(), Some(PROVIDER));
        let provider = &parsed["model_providers"][PROVIDER];
        assert_eq!(provider["wire_api"].as_str(), Some("responses"));
        assert_eq!(provider["env_key"].as_str(), Some("OPENAI_API_KEY"));
        assert_eq!(provider["request_max_retries"].as_integer(), Some(1));
    }
}
