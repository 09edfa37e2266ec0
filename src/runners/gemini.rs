//! Gemini CLI, headless: `gemini -p … -o stream-json --approval-mode yolo`,
//! with a home of its own (settings that keep it offline-safe and bounded).
//! Gemini reports tokens but no cost: the cost is estimated from the price
//! table and marked as estimated.

use std::sync::Arc;

use serde_json::{Value, json};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::confine::Launch;
use super::{
    AgentProbe, AskError, AskRequest, CommandSpec, PriceTable, RunOutcome, RunRequest, Runner,
    StreamParser, Verdict, ask_cli, env_value, estimate_cost, missing_cli, one_line, probe_cli,
    replay, run_cli, starts_with_any, write_config_file,
};
use crate::core::logs::{LogKind, LogWriter};
use crate::core::model::AgentType;

pub struct GeminiRunner {
    command: CommandSpec,
    prices: Arc<PriceTable>,
}

/// Exit codes the Gemini CLI documents (and one seen when retries run out).
const EXIT_AUTH: i32 = 41;
const EXIT_INPUT: i32 = 42;
const EXIT_CONFIG: i32 = 52;
const EXIT_TURN_LIMIT: i32 = 53;
/// The CLI exits with the HTTP status of its last API error, mod 256: 429
/// becomes 173.
const EXIT_API_RETRIES: i32 = 173;

const INSTALL_HINT: &str = "npm install -g @google/gemini-cli, or set [agents.gemini] command";

/// What Gemini CLI prints on stderr at every run (0.61.0, headless, as
/// the runner starts it): not about the task.
const CHATTER: &[&str] = &[
    "Warning: 256-color support not detected.",
    "YOLO mode is enabled. All tool calls will be automatically approved.",
    "Ripgrep is not available. Falling back to GrepTool.",
    // Its start-up profiler: "[STARTUP] Phase '…' was started but never ended."
    "[STARTUP] ",
];

impl GeminiRunner {
    pub fn new(command: CommandSpec, prices: Arc<PriceTable>) -> Self {
        GeminiRunner { command, prices }
    }

    /// The settings the CLI reads from `$HOME/.gemini/settings.json`: API-key
    /// auth (also with a custom base URL), no usage statistics, telemetry or
    /// auto-update, and bounded retries.
    pub fn settings(&self) -> Value {
        json!({
            "security": {"auth": {"selectedType": "gemini-api-key"}},
            "privacy": {"usageStatisticsEnabled": false},
            "telemetry": {"enabled": false},
            "general": {
                "enableAutoUpdate": false,
                "enableAutoUpdateNotification": false,
                "maxAttempts": self.command.max_retries + 1,
            },
        })
    }

    fn settings_error(&self, e: std::io::Error) -> String {
        format!(
            "cannot write Gemini settings in {}: {e}",
            self.command.home.display()
        )
    }

    fn write_settings(&self) -> std::io::Result<()> {
        let dir = self.command.home.join(".gemini");
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all(self.command.home.join("tmp"))?;
        let text = serde_json::to_string_pretty(&self.settings()).map_err(std::io::Error::other)?;
        write_config_file(&dir.join("settings.json"), &text)
    }

    /// The agent process for a request: argv, working directory, its own
    /// home and environment. `approval_mode` is the CLI's: `yolo` for tasks
    /// (edits and commands run without asking: the agent works in a sandbox
    /// clone, and nobody is there to answer), `plan` (read-only) for
    /// questions.
    fn command(&self, req: &RunRequest, approval_mode: &str) -> std::io::Result<Command> {
        self.write_settings()?;
        let mut command = Command::new(&self.command.program);
        command
            .args(self.args(req, approval_mode))
            .current_dir(&req.workdir)
            .env("HOME", &self.command.home)
            .env("TMPDIR", self.command.home.join("tmp"))
            .env("GEMINI_CLI_TRUST_WORKSPACE", "true")
            // One process, not a launcher and a relaunched child.
            .env("GEMINI_CLI_NO_RELAUNCH", "true")
            .env("NO_COLOR", "1");
        if !self.command.base_url.is_empty() {
            command.env("GOOGLE_GEMINI_BASE_URL", &self.command.base_url);
        }
        command.envs(&self.command.env);
        Ok(command)
    }

    fn args(&self, req: &RunRequest, approval_mode: &str) -> Vec<String> {
        let mut prompt = req.prompt.clone();
        if !req.system_prompt.is_empty() {
            // The CLI has no flag to append to its system prompt.
            prompt = format!("{prompt}\n\n{}", req.system_prompt);
        }
        // User text goes in `--option=value` form, so none of it (a prompt
        // that starts with `-`, say) can be read as an option.
        let mut args = vec![
            format!("--prompt={prompt}"),
            "--output-format=stream-json".into(),
            format!("--approval-mode={approval_mode}"),
        ];
        if !req.model.is_empty() {
            args.push(format!("--model={}", req.model));
        }
        if let Some(session) = &req.resume_session {
            args.push(format!("--resume={session}"));
        }
        args
    }
}

#[async_trait::async_trait]
impl Runner for GeminiRunner {
    fn agent(&self) -> AgentType {
        AgentType::Gemini
    }

    fn unavailable(&self) -> Option<String> {
        missing_cli(&self.command.program, INSTALL_HINT)
    }

    fn recover(&self, model: &str, stdout_lines: &[String]) -> RunOutcome {
        let parser = GeminiStream {
            prices: self.prices.clone(),
            model: model.to_string(),
            ..GeminiStream::default()
        };
        replay(parser, stdout_lines)
    }

    async fn probe(&self) -> AgentProbe {
        let spec = &self.command;
        let credentials = match ["GEMINI_API_KEY", "GOOGLE_API_KEY"]
            .into_iter()
            .find(|v| env_value(spec, v).is_some())
        {
            Some(var) => (true, format!("{var} is set")),
            None => (
                false,
                "no GEMINI_API_KEY in the environment or [agents.gemini] env".into(),
            ),
        };
        probe_cli(
            spec,
            INSTALL_HINT,
            &[("HOME", spec.home.as_path())],
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
        let command = match self.command(&req, "yolo") {
            Ok(command) => command,
            Err(e) => return RunOutcome::new(Verdict::Failed(self.settings_error(e))),
        };
        let parser = GeminiStream {
            prices: self.prices.clone(),
            ..GeminiStream::default()
        };
        let launch = Launch {
            agent: Some(AgentType::Gemini),
            spec: &self.command,
            confinement: req.confinement,
            state: Vec::new(),
        };
        run_cli(command, launch, parser, log, &cancel).await
    }

    async fn ask(
        &self,
        request: AskRequest,
        cancel: CancellationToken,
    ) -> Result<String, AskError> {
        if let Some(why) = self.unavailable() {
            return Err(AskError::Unavailable(why));
        }
        let command = self
            .command(&request.as_run_request(), "plan")
            .map_err(|e| AskError::Setup(self.settings_error(e)))?;
        let parser = GeminiStream {
            prices: self.prices.clone(),
            ..GeminiStream::default()
        };
        let launch = Launch {
            agent: Some(AgentType::Gemini),
            spec: &self.command,
            confinement: Default::default(),
            state: Vec::new(),
        };
        ask_cli(command, launch, parser, &cancel).await
    }
}

/// What has been read of one run's stream-json output.
#[derive(Default)]
pub struct GeminiStream {
    prices: Arc<PriceTable>,
    session_id: String,
    model: String,
    /// The current assistant message, joined from its deltas.
    text: String,
    /// The last complete assistant message.
    last_text: String,
    tool_calls: u32,
    /// The model answered (a message or a tool call).
    answered: bool,
    result: Option<Value>,
    last_error: String,
}

impl StreamParser for GeminiStream {
    fn is_chatter(&self, stderr_line: &str) -> bool {
        starts_with_any(stderr_line, CHATTER)
    }

    fn read_line(&mut self, line: &str) -> (LogKind, String, Value) {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            return (LogKind::Text, line.to_string(), Value::Null);
        };
        let str_of = |v: &Value| v.as_str().unwrap_or_default().to_string();
        let (kind, text) = match event["type"].as_str().unwrap_or_default() {
            "init" => {
                self.session_id = str_of(&event["session_id"]);
                self.model = str_of(&event["model"]);
                (
                    LogKind::System,
                    format!("session {} started (model {})", self.session_id, self.model),
                )
            }
            "message" if event["role"] == "assistant" => {
                self.answered = true;
                let chunk = str_of(&event["content"]);
                if event["delta"].as_bool() == Some(true) {
                    self.text.push_str(&chunk);
                } else {
                    self.text = chunk.clone();
                }
                (LogKind::Text, chunk)
            }
            "message" => {
                self.close_message();
                (
                    LogKind::System,
                    format!("user: {}", one_line(&str_of(&event["content"]))),
                )
            }
            "tool_use" => {
                self.close_message();
                self.answered = true;
                self.tool_calls += 1;
                let params = &event["parameters"];
                let target = ["file_path", "command", "path", "pattern", "url"]
                    .iter()
                    .find_map(|k| params[*k].as_str())
                    .unwrap_or_default();
                (
                    LogKind::ToolCall,
                    format!("{} {}", str_of(&event["tool_name"]), one_line(target))
                        .trim()
                        .to_string(),
                )
            }
            "tool_result" => {
                let status = str_of(&event["status"]);
                let detail = match (&event["error"]["message"], &event["output"]) {
                    (Value::String(m), _) => m.clone(),
                    (_, Value::String(o)) => o.clone(),
                    _ => String::new(),
                };
                (
                    LogKind::ToolResult,
                    format!("tool {status} {}", one_line(&detail))
                        .trim()
                        .to_string(),
                )
            }
            "error" => {
                self.last_error = str_of(&event["message"]);
                (
                    LogKind::System,
                    format!("error: {}", one_line(&self.last_error)),
                )
            }
            "result" => {
                self.close_message();
                let status = str_of(&event["status"]);
                let text = match event["error"]["message"].as_str() {
                    Some(message) => format!("{status}: {}", one_line(message)),
                    None => status,
                };
                self.result = Some(event.clone());
                (LogKind::Result, text)
            }
            other => (LogKind::System, other.to_string()),
        };
        (kind, text, event)
    }

    fn finish(mut self, exit_code: Option<i32>, stopped: bool) -> RunOutcome {
        self.close_message();
        let mut outcome = RunOutcome::new(Verdict::Succeeded);
        outcome.exit_code = exit_code;
        outcome.session_id = self.session_id.clone();
        outcome.model = self.model.clone();
        outcome.final_text = self.last_text.clone();
        outcome.turns = self.tool_calls + 1;
        outcome.cost_estimated = true;
        match &self.result {
            Some(result) => self.read_stats(&result["stats"], &mut outcome),
            // Usage comes only with the result: a run cut short after the
            // model answered used tokens nobody counted.
            None => outcome.cost_unknown = self.answered,
        }
        if stopped {
            outcome.verdict = Verdict::Stopped;
            return outcome;
        }
        let error = self
            .result
            .as_ref()
            .and_then(|r| r["error"]["message"].as_str())
            .map(str::to_string)
            .unwrap_or_else(|| self.last_error.clone());
        let status = self
            .result
            .as_ref()
            .and_then(|r| r["status"].as_str())
            .unwrap_or_default();
        outcome.verdict = match (status, exit_code) {
            ("success", Some(0)) => Verdict::Succeeded,
            _ if is_rate_limit(&error) || exit_code == Some(EXIT_API_RETRIES) => {
                Verdict::RateLimited {
                    message: one_line(&error),
                    retry_after: None,
                }
            }
            (_, Some(EXIT_AUTH)) => Verdict::Failed(format!(
                "gemini rejected its authentication (exit 41): set GEMINI_API_KEY {}",
                if error.is_empty() {
                    String::new()
                } else {
                    format!("({})", one_line(&error))
                }
            )),
            (_, Some(EXIT_INPUT)) => Verdict::Failed(format!(
                "gemini rejected its input (exit 42): {}",
                one_line(&error)
            )),
            (_, Some(EXIT_TURN_LIMIT)) => {
                Verdict::Failed(format!("reached the turn limit: {}", one_line(&error)))
            }
            (_, Some(EXIT_CONFIG)) => Verdict::Failed(format!(
                "gemini's configuration is invalid (exit 52): {}",
                one_line(&error)
            )),
            ("error", _) => Verdict::Failed(one_line(&error)),
            ("success", code) => Verdict::Failed(format!(
                "gemini reported success but exited with {}",
                code.map_or("a signal".to_string(), |c| format!("code {c}"))
            )),
            (_, code) => Verdict::Failed(format!(
                "gemini exited with {} before reporting a result{}",
                code.map_or("a signal".to_string(), |c| format!("code {c}")),
                if error.is_empty() {
                    String::new()
                } else {
                    format!(": {}", one_line(&error))
                }
            )),
        };
        outcome
    }
}

impl GeminiStream {
    fn close_message(&mut self) {
        if !self.text.is_empty() {
            self.last_text = std::mem::take(&mut self.text);
        }
    }

    /// Tokens from the result's stats, and the cost estimated per model
    /// (with `auto`, several models may have answered).
    fn read_stats(&self, stats: &Value, outcome: &mut RunOutcome) {
        let tokens = |v: &Value, k: &str| v[k].as_u64().unwrap_or_default();
        outcome.input_tokens = tokens(stats, "input_tokens");
        outcome.output_tokens = tokens(stats, "output_tokens");
        let mut cost = 0.0;
        // A model with tokens and no price: the cost is not known.
        let mut unknown = false;
        let mut price = |model: &str, input: u64, output: u64| match estimate_cost(
            &self.prices,
            model,
            input,
            output,
        ) {
            Some(c) => cost += c,
            None => unknown |= input + output > 0,
        };
        match stats["models"].as_object() {
            Some(models) if !models.is_empty() => {
                for (model, usage) in models {
                    price(
                        model,
                        tokens(usage, "input_tokens"),
                        tokens(usage, "output_tokens"),
                    );
                }
                if outcome.model.is_empty() || outcome.model == "auto" {
                    // The router answers too; the main model wrote the most.
                    outcome.model = models
                        .iter()
                        .max_by_key(|(_, usage)| tokens(usage, "output_tokens"))
                        .map(|(model, _)| model.clone())
                        .unwrap_or_default();
                }
            }
            _ => price(&outcome.model, outcome.input_tokens, outcome.output_tokens),
        }
        outcome.cost_usd = cost;
        outcome.cost_unknown = unknown;
    }
}

fn is_rate_limit(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "429",
        "resource has been exhausted",
        "resource_exhausted",
        "rate limit",
        "quota",
    ]
    .iter()
    .any(|needle| m.contains(needle))
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
        let runner = GeminiRunner::new(CommandSpec::default(), prices());
        let args = runner.args(&hostile_request(Some("-r")), "yolo");
        assert_eq!(
            args,
            [
                "--prompt=- fix the typo\n- --help\n\n-x",
                "--output-format=stream-json",
                "--approval-mode=yolo",
                "--model=-m",
                "--resume=-r",
            ]
        );
    }

    fn prices() -> Arc<PriceTable> {
        let mut table = PriceTable::new();
        table.insert(
            "gemini-2.5-flash".into(),
            Price {
                input_per_mtok: 0.30,
                output_per_mtok: 2.50,
            },
        );
        Arc::new(table)
    }

    fn read(stream: &str, exit: Option<i32>) -> (RunOutcome, Vec<LogKind>) {
        let mut parser = GeminiStream {
            prices: prices(),
            ..GeminiStream::default()
        };
        let kinds = stream.lines().map(|l| parser.read_line(l).0).collect();
        (parser.finish(exit, false), kinds)
    }

    /// The stderr lines of every run (recorded from 0.61.0) are chatter;
    /// anything else stays a stderr event.
    #[test]
    fn known_stderr_lines_are_chatter() {
        let parser = GeminiStream::default();
        for line in [
            "Warning: 256-color support not detected. Using a terminal with at least 256-color support is recommended for a better visual experience.",
            "YOLO mode is enabled. All tool calls will be automatically approved.",
            "Ripgrep is not available. Falling back to GrepTool.",
            "[STARTUP] Phase 'load_settings' was started but never ended. Skipping metrics.",
        ] {
            assert!(parser.is_chatter(line), "{line}");
        }
        for line in ["Error: invalid API key", "YOLO", "Warning: disk full"] {
            assert!(!parser.is_chatter(line), "{line}");
        }
    }

    /// A model missing from the price table, or a run cut short after the
    /// model answered (usage comes only with the result): the cost is
    /// unknown, not $0.
    #[test]
    fn an_unpriced_model_or_a_cut_run_has_an_unknown_cost() {
        let stream = include_str!("../../tests/fixtures/agent-cli/gemini-stream.jsonl");
        let mut parser = GeminiStream::default();
        for line in stream.lines() {
            parser.read_line(line);
        }
        let unpriced = parser.finish(Some(0), false);
        assert_eq!(unpriced.verdict, Verdict::Succeeded);
        assert!(unpriced.cost_unknown && unpriced.input_tokens == 2468);

        let (priced, _) = read(stream, Some(0));
        assert!(!priced.cost_unknown);

        let cut: Vec<String> = stream
            .lines()
            .filter(|l| !l.contains(r#""type":"result""#))
            .map(String::from)
            .collect();
        let runner = GeminiRunner::new(CommandSpec::default(), prices());
        let stopped = runner.recover(GEMINI_FLASH, &cut);
        assert_eq!(stopped.verdict, Verdict::Stopped);
        assert!(stopped.cost_unknown);
        // Stopped before the model answered: nothing was used.
        assert!(!runner.recover(GEMINI_FLASH, &cut[..2]).cost_unknown);
    }

    const GEMINI_FLASH: &str = "gemini-2.5-flash";

    /// The recorded streams of the real CLI, and what each must give.
    #[test]
    fn recorded_streams() {
        let stream = include_str!("../../tests/fixtures/agent-cli/gemini-stream.jsonl");
        let (outcome, kinds) = read(stream, Some(0));
        assert_eq!(outcome.verdict, Verdict::Succeeded);
        assert_eq!(outcome.session_id, "4c1bbfef-00bb-4888-b81e-5d0279185cda");
        assert_eq!((outcome.input_tokens, outcome.output_tokens), (2468, 112));
        assert!(outcome.cost_estimated);
        let expected = 2468.0 / 1e6 * 0.30 + 112.0 / 1e6 * 2.50;
        assert!(
            (outcome.cost_usd - expected).abs() < 1e-12,
            "{}",
            outcome.cost_usd
        );
        assert!(outcome.final_text.contains("## Summary"));
        assert!(outcome.final_text.starts_with("I created hello.txt"));
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

        let resume = include_str!("../../tests/fixtures/agent-cli/gemini-resume-stream.jsonl");
        let (outcome, _) = read(resume, Some(0));
        assert_eq!(outcome.verdict, Verdict::Succeeded);
        assert_eq!(outcome.session_id, "4c1bbfef-00bb-4888-b81e-5d0279185cda");

        let auto = include_str!("../../tests/fixtures/agent-cli/gemini-stream-auto-model.jsonl");
        let (outcome, _) = read(auto, Some(0));
        assert_eq!(outcome.verdict, Verdict::Succeeded);
        assert_ne!(outcome.model, "auto", "the model that answered is recorded");

        let limited = include_str!("../../tests/fixtures/agent-cli/gemini-429-stream.jsonl");
        let (outcome, _) = read(limited, Some(173));
        assert!(
            matches!(outcome.verdict, Verdict::RateLimited { .. }),
            "{:?}",
            outcome.verdict
        );
    }

    #[test]
    fn exit_codes_name_the_problem() {
        let init = r#"{"type":"init","session_id":"s","model":"gemini-2.5-flash"}"#;
        let (outcome, _) = read(init, Some(41));
        assert!(matches!(outcome.verdict, Verdict::Failed(m) if m.contains("GEMINI_API_KEY")));
        let (outcome, _) = read(init, Some(52));
        assert!(matches!(outcome.verdict, Verdict::Failed(m) if m.contains("configuration")));
        let error =
            r#"{"type":"result","status":"error","error":{"type":"x","message":"bad things"}}"#;
        let (outcome, _) = read(error, Some(1));
        assert_eq!(outcome.verdict, Verdict::Failed("bad things".into()));
    }
}
