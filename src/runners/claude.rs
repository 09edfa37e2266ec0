//! Claude Code, headless: `claude -p … --output-format stream-json --verbose`.
//! Every stream-json line becomes a structured log event; the final `result`
//! event gives the session, cost, tokens, turns and how the run ended.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::confine::Launch;
use super::{
    AgentProbe, AskError, AskRequest, CommandSpec, PriceTable, RunOutcome, RunRequest, Runner,
    StreamParser, Verdict, ask_cli, env_value, estimate_cost, missing_cli, one_line, probe_cli,
    replay, run_cli,
};
use crate::core::logs::{LogKind, LogWriter};
use crate::core::model::AgentType;

/// Works as root (unlike bypassPermissions) and lets the agent edit files in
/// its working directory.
const PERMISSION_MODE: &str = "acceptEdits";

const INSTALL_HINT: &str =
    "npm install -g @anthropic-ai/claude-code, or set [agents.claude] command";

pub struct ClaudeRunner {
    command: CommandSpec,
    /// For the cost of a run stopped before Claude Code reported one.
    prices: Arc<PriceTable>,
}

impl ClaudeRunner {
    pub fn new(command: CommandSpec, prices: Arc<PriceTable>) -> Self {
        ClaudeRunner { command, prices }
    }

    fn parser(&self) -> ClaudeStream {
        ClaudeStream {
            prices: self.prices.clone(),
            ..ClaudeStream::default()
        }
    }

    /// The agent process for a request: argv (`extra` options before the
    /// prompt), working directory, environment.
    fn command(&self, req: &RunRequest, extra: &[&str]) -> Command {
        let mut command = Command::new(&self.command.program);
        command
            .args(Self::args(req, extra))
            .current_dir(&req.workdir)
            .envs(&self.command.env);
        command
    }

    /// How the run is shut in: claude keeps its login and sessions in the
    /// user's `~/.claude` and `~/.claude.json` unless its config dir or
    /// home is set; those it gets read-write.
    fn launch(&self, req: &RunRequest) -> Launch<'_> {
        let mut state = Vec::new();
        if !self.command.env.contains_key("HOME")
            && !self.command.env.contains_key("CLAUDE_CONFIG_DIR")
            && let Some(home) = std::env::var_os("HOME")
        {
            let home = std::path::PathBuf::from(home);
            state.push(home.join(".claude"));
            state.push(home.join(".claude.json"));
        }
        Launch {
            agent: Some(AgentType::Claude),
            spec: &self.command,
            confinement: req.confinement,
            state,
        }
    }

    /// User text (the prompt, the model, the session id, the system prompt)
    /// is never an argument of its own the CLI could read as an option:
    /// values go in `--option=value` form, and the prompt comes last,
    /// after `--`.
    fn args(req: &RunRequest, extra: &[&str]) -> Vec<String> {
        let mut args = vec![
            "-p".to_string(),
            "--output-format=stream-json".into(),
            "--verbose".into(),
            format!("--permission-mode={PERMISSION_MODE}"),
        ];
        if !req.model.is_empty() {
            args.push(format!("--model={}", req.model));
        }
        if req.max_turns > 0 {
            args.push(format!("--max-turns={}", req.max_turns));
        }
        if req.max_budget_usd > 0.0 {
            args.push(format!("--max-budget-usd={}", req.max_budget_usd));
        }
        if !req.allowed_tools.is_empty() {
            args.push(format!("--allowedTools={}", req.allowed_tools.join(",")));
        }
        if !req.system_prompt.is_empty() {
            args.push(format!("--append-system-prompt={}", req.system_prompt));
        }
        if let Some(session) = &req.resume_session {
            args.push(format!("--resume={session}"));
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        args.push("--".into());
        args.push(req.prompt.clone());
        args
    }
}

#[async_trait::async_trait]
impl Runner for ClaudeRunner {
    fn agent(&self) -> AgentType {
        AgentType::Claude
    }

    fn unavailable(&self) -> Option<String> {
        missing_cli(&self.command.program, INSTALL_HINT)
    }

    fn recover(&self, _model: &str, stdout_lines: &[String]) -> RunOutcome {
        replay(self.parser(), stdout_lines)
    }

    async fn probe(&self) -> AgentProbe {
        let spec = &self.command;
        let credentials = if let Some(var) = [
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN",
            "CLAUDE_CODE_OAUTH_TOKEN",
        ]
        .into_iter()
        .find(|v| env_value(spec, v).is_some())
        {
            (true, format!("{var} is set"))
        } else {
            let config_dir = env_value(spec, "CLAUDE_CONFIG_DIR")
                .map(std::path::PathBuf::from)
                .or_else(|| {
                    env_value(spec, "HOME").map(|h| std::path::Path::new(&h).join(".claude"))
                });
            match config_dir
                .map(|d| d.join(".credentials.json"))
                .filter(|f| f.is_file())
            {
                Some(file) => (true, format!("logged in ({})", file.display())),
                None => (
                    false,
                    "no ANTHROPIC_API_KEY and no `claude login` credentials".into(),
                ),
            }
        };
        let mut probe = probe_cli(spec, INSTALL_HINT, &[], credentials).await;
        if let Some(url) = env_value(spec, "ANTHROPIC_BASE_URL") {
            probe.credentials.push_str(&format!("; base URL {url}"));
        }
        probe
    }

    async fn run(
        &self,
        req: RunRequest,
        log: &mut LogWriter,
        cancel: CancellationToken,
    ) -> RunOutcome {
        run_cli(
            self.command(&req, &[]),
            self.launch(&req),
            self.parser(),
            log,
            &cancel,
        )
        .await
    }

    async fn ask(
        &self,
        request: AskRequest,
        cancel: CancellationToken,
    ) -> Result<String, AskError> {
        if let Some(why) = self.unavailable() {
            return Err(AskError::Unavailable(why));
        }
        // `--tools=` (none) sends the model no tools at all; the session is
        // not kept, nobody resumes it.
        let command = self.command(
            &request.as_run_request(),
            &["--tools=", "--no-session-persistence"],
        );
        let launch = self.launch(&request.as_run_request());
        ask_cli(command, launch, self.parser(), &cancel).await
    }
}

/// What has been read of one run's stream-json output.
#[derive(Default)]
pub struct ClaudeStream {
    prices: Arc<PriceTable>,
    session_id: String,
    model: String,
    result: Option<Value>,
    last_text: String,
    last_retry_delay: Option<Duration>,
    /// Each model reply's usage (tokens in, out) by message id, as its
    /// `assistant` events said: what a run that ends without a `result`
    /// (cancelled, timed out, killed) is recorded with.
    replies: BTreeMap<String, (u64, u64)>,
}

impl StreamParser for ClaudeStream {
    fn read_line(&mut self, line: &str) -> (LogKind, String, Value) {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            return (LogKind::Text, line.to_string(), Value::Null);
        };
        let kind = event["type"].as_str().unwrap_or_default().to_string();
        let subtype = event["subtype"].as_str().unwrap_or_default().to_string();
        if let Some(session) = event["session_id"].as_str() {
            self.session_id = session.to_string();
        }
        let (log_kind, text) = match kind.as_str() {
            "system" if subtype == "init" => {
                // "claude-opus-4-8[1m]": the bracket names a context-window
                // variant, not part of the model's name.
                let model = event["model"].as_str().unwrap_or_default();
                self.model = model.split('[').next().unwrap_or(model).to_string();
                (
                    LogKind::System,
                    format!("session {} started (model {})", self.session_id, self.model),
                )
            }
            "system" if subtype == "api_retry" => {
                self.last_retry_delay = event["retry_delay_ms"]
                    .as_f64()
                    .map(|ms| Duration::from_millis(ms as u64));
                (
                    LogKind::System,
                    format!(
                        "model API error {} ({}), retry {} of {}",
                        event["error_status"],
                        event["error"].as_str().unwrap_or("unknown"),
                        event["attempt"],
                        event["max_retries"]
                    ),
                )
            }
            "assistant" => self.read_assistant(&event),
            "user" => {
                let block = &event["message"]["content"][0];
                let content = match &block["content"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let kind = if block["is_error"].as_bool() == Some(true) {
                    "tool error"
                } else {
                    "tool result"
                };
                (
                    LogKind::ToolResult,
                    format!("{kind}: {}", one_line(&content)),
                )
            }
            "result" => {
                let text = format!(
                    "{} ({} turns, ${:.4})",
                    if event["is_error"].as_bool() == Some(true) {
                        format!("error: {subtype}")
                    } else {
                        subtype.clone()
                    },
                    event["num_turns"],
                    event["total_cost_usd"].as_f64().unwrap_or_default()
                );
                self.result = Some(event.clone());
                (LogKind::Result, text)
            }
            other => (
                LogKind::System,
                format!("{other} {subtype}").trim().to_string(),
            ),
        };
        (log_kind, text, event)
    }

    fn finish(self, exit_code: Option<i32>, stopped: bool) -> RunOutcome {
        self.outcome(exit_code, stopped)
    }
}

impl ClaudeStream {
    fn read_assistant(&mut self, event: &Value) -> (LogKind, String) {
        let message = &event["message"];
        if let Some(id) = message["id"].as_str()
            && message["model"] != "<synthetic>"
        {
            let (input, output) = usage_of(&message["usage"]);
            let seen = self.replies.entry(id.to_string()).or_default();
            // Each content block repeats its reply's usage; keep the most.
            *seen = (seen.0.max(input), seen.1.max(output));
        }
        let block = &message["content"][0];
        match block["type"].as_str() {
            Some("tool_use") => {
                let input = &block["input"];
                let target = ["file_path", "command", "path", "pattern", "url"]
                    .iter()
                    .find_map(|k| input[*k].as_str())
                    .unwrap_or_default();
                (
                    LogKind::ToolCall,
                    format!(
                        "{} {}",
                        block["name"].as_str().unwrap_or("tool"),
                        one_line(target)
                    )
                    .trim()
                    .to_string(),
                )
            }
            Some("text") => {
                let text = block["text"].as_str().unwrap_or_default().to_string();
                self.last_text = text.clone();
                (LogKind::Text, text)
            }
            Some("thinking") => (LogKind::System, "thinking".into()),
            _ => (LogKind::System, "assistant message".into()),
        }
    }

    /// The outcome, once the process has exited.
    fn outcome(self, exit_code: Option<i32>, stopped: bool) -> RunOutcome {
        let mut outcome = RunOutcome::new(Verdict::Succeeded);
        outcome.exit_code = exit_code;
        outcome.session_id = self.session_id;
        outcome.model = self.model;
        outcome.final_text = self.last_text;
        if stopped {
            outcome.verdict = Verdict::Stopped;
        }
        let Some(result) = self.result else {
            if !stopped {
                outcome.verdict = Verdict::Failed(format!(
                    "claude exited with {} before reporting a result",
                    exit_code.map_or("a signal".to_string(), |c| format!("code {c}"))
                ));
            }
            // No result, so no cost: what the replies said they used,
            // priced from the table (their output counts are those at each
            // reply's start, so a floor).
            outcome.turns = self.replies.len() as u32;
            for (input, output) in self.replies.values() {
                outcome.input_tokens += input;
                outcome.output_tokens += output;
            }
            if outcome.input_tokens + outcome.output_tokens > 0 {
                outcome.cost_estimated = true;
                match estimate_cost(
                    &self.prices,
                    &outcome.model,
                    outcome.input_tokens,
                    outcome.output_tokens,
                ) {
                    Some(cost) => outcome.cost_usd = cost,
                    None => outcome.cost_unknown = true,
                }
            }
            return outcome;
        };
        (outcome.input_tokens, outcome.output_tokens) = usage_of(&result["usage"]);
        outcome.cost_usd = result["total_cost_usd"].as_f64().unwrap_or_default();
        outcome.turns = result["num_turns"].as_u64().unwrap_or_default() as u32;
        if let Some(text) = result["result"].as_str() {
            outcome.final_text = text.to_string();
        }
        if let Some(session) = result["session_id"].as_str() {
            outcome.session_id = session.to_string();
        }
        outcome.permission_denials = result["permission_denials"]
            .as_array()
            .map(|denials| denials.iter().map(describe_denial).collect())
            .unwrap_or_default();
        if stopped {
            return outcome;
        }
        let subtype = result["subtype"].as_str().unwrap_or_default();
        let is_error = result["is_error"].as_bool().unwrap_or(false);
        let api_status = result["api_error_status"].as_u64();
        outcome.verdict = match (subtype, is_error, api_status) {
            ("error_max_turns", _, _) => {
                // Claude Code counts the turn it refused to start: a run
                // stopped by `--max-turns=1` reports `num_turns: 2`. The
                // turns taken are one fewer.
                outcome.turns = outcome.turns.saturating_sub(1);
                Verdict::Failed(format!(
                    "reached the turn limit: {} model turn(s) taken, and the agent had more to do \
                     (a turn is one model reply; acting on a tool's result takes another)",
                    outcome.turns
                ))
            }
            ("error_max_budget_usd", _, _) => Verdict::BudgetExceeded(format!(
                "reached the budget (spent ${:.4})",
                outcome.cost_usd
            )),
            (_, true, _) if is_usage_limit(&outcome.final_text) => Verdict::UsageLimited {
                message: one_line(&outcome.final_text),
                resets_at: usage_limit_reset(&outcome.final_text),
            },
            (_, true, Some(429 | 529)) => Verdict::RateLimited {
                message: one_line(&outcome.final_text),
                retry_after: self.last_retry_delay,
            },
            (_, true, _) => Verdict::Failed(if outcome.final_text.is_empty() {
                format!("claude reported an error ({subtype})")
            } else {
                one_line(&outcome.final_text)
            }),
            ("success", false, _) => Verdict::Succeeded,
            (other, _, _) => Verdict::Failed(format!("claude ended with `{other}`")),
        };
        outcome
    }
}

/// Tokens (in with the cache's, out) of a `usage` object.
fn usage_of(usage: &Value) -> (u64, u64) {
    let tokens = |k: &str| usage[k].as_u64().unwrap_or_default();
    (
        tokens("input_tokens")
            + tokens("cache_creation_input_tokens")
            + tokens("cache_read_input_tokens"),
        tokens("output_tokens"),
    )
}

/// "Write /path/file" from a `permission_denials` entry.
fn describe_denial(denial: &Value) -> String {
    let input = &denial["tool_input"];
    let target = ["file_path", "command", "path", "url"]
        .iter()
        .find_map(|k| input[*k].as_str())
        .unwrap_or_default();
    format!(
        "{} {}",
        denial["tool_name"].as_str().unwrap_or("tool"),
        one_line(target)
    )
    .trim()
    .to_string()
}

/// Claude Code's words for a spent quota, as opposed to a short rate limit:
/// "Claude AI usage limit reached|1750000000", "5-hour limit reached",
/// "Your credit balance is too low".
fn is_usage_limit(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    ["usage limit", "limit reached", "credit balance is too low"]
        .iter()
        .any(|needle| text.contains(needle))
}

/// The reset time in "…usage limit reached|<unix seconds>", if given.
fn usage_limit_reset(text: &str) -> Option<i64> {
    let (_, tail) = text.rsplit_once('|')?;
    let digits: String = tail
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse::<i64>().ok().map(|secs| secs * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let args = ClaudeRunner::args(&hostile_request(Some("-r")), &["--tools="]);
        assert_eq!(
            &args[args.len() - 5..],
            [
                "--append-system-prompt=-x",
                "--resume=-r",
                "--tools=",
                "--",
                "- fix the typo\n- --help",
            ]
        );
        assert!(args.contains(&"--model=-m".to_string()), "{args:?}");
        assert_eq!(args.iter().filter(|a| *a == "--").count(), 1);
    }
    use crate::runners::extract_summary;

    fn read(lines: &[&str]) -> ClaudeStream {
        let mut stream = ClaudeStream::default();
        for line in lines {
            stream.read_line(line);
        }
        stream
    }

    /// The recorded streams of the real CLI, and what each must give.
    #[test]
    fn recorded_streams() {
        let outcome = |stream: &str, exit| {
            let mut parser = ClaudeStream::default();
            for line in stream.lines() {
                parser.read_line(line);
            }
            parser.finish(Some(exit), false)
        };
        let dir = |name: &str| match name {
            "ok" => include_str!("../../tests/fixtures/agent-cli/claude-stream.jsonl"),
            "turns" => include_str!("../../tests/fixtures/agent-cli/claude-max-turns.jsonl"),
            "budget" => include_str!("../../tests/fixtures/agent-cli/claude-max-budget.jsonl"),
            "429" => include_str!("../../tests/fixtures/agent-cli/claude-429-stream.jsonl"),
            "529" => include_str!("../../tests/fixtures/agent-cli/claude-529-stream.jsonl"),
            "denied" => {
                include_str!("../../tests/fixtures/agent-cli/claude-permission-denied.jsonl")
            }
            _ => include_str!("../../tests/fixtures/agent-cli/claude-resume-stream.jsonl"),
        };
        let ok = outcome(dir("ok"), 0);
        assert_eq!(ok.verdict, Verdict::Succeeded);
        assert!(ok.cost_usd > 0.0 && ok.turns >= 2 && !ok.session_id.is_empty());
        assert!(extract_summary(&ok.final_text).is_some());
        // `--max-turns=1`: the CLI reports `num_turns: 2`, counting the
        // turn it refused; one was taken.
        let turns = outcome(dir("turns"), 1);
        assert_eq!(turns.turns, 1);
        assert!(
            matches!(&turns.verdict, Verdict::Failed(m) if m.contains("turn limit: 1 model turn(s) taken")),
            "{:?}",
            turns.verdict
        );
        assert!(matches!(
            outcome(dir("budget"), 1).verdict,
            Verdict::BudgetExceeded(_)
        ));
        for limited in ["429", "529"] {
            let verdict = outcome(dir(limited), 1).verdict;
            assert!(
                matches!(
                    verdict,
                    Verdict::RateLimited {
                        retry_after: Some(_),
                        ..
                    }
                ),
                "{limited}: {verdict:?}"
            );
        }
        // A denied write still ends as a success; the denial is recorded.
        let denied = outcome(dir("denied"), 0);
        assert_eq!(denied.verdict, Verdict::Succeeded);
        assert_eq!(
            denied.permission_denials,
            vec!["Write /sandbox/work/claude2/hello.txt".to_string()]
        );
        let resumed = outcome(dir("resume"), 0);
        assert_eq!(resumed.verdict, Verdict::Succeeded);
        assert!(!resumed.session_id.is_empty());
    }

    const INIT: &str =
        r#"{"type":"system","subtype":"init","session_id":"s-1","model":"claude-sonnet-4-5"}"#;

    #[test]
    fn a_successful_run_records_session_cost_tokens_and_text() {
        let stream = read(&[
            INIT,
            r#"{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t1","name":"Write","input":{"file_path":"/w/hello.txt","content":"hi"}}]},"session_id":"s-1"}"#,
            r#"{"type":"user","message":{"content":[{"tool_use_id":"t1","type":"tool_result","content":"File created"}]},"session_id":"s-1"}"#,
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"Done.\n\n## Summary\nWrote hello.txt."}]},"session_id":"s-1"}"#,
            r#"{"type":"result","subtype":"success","is_error":false,"num_turns":2,"result":"Done.\n\n## Summary\nWrote hello.txt.","session_id":"s-1","total_cost_usd":0.0091,"usage":{"input_tokens":2468,"cache_creation_input_tokens":10,"cache_read_input_tokens":5,"output_tokens":112}}"#,
        ]);
        let outcome = stream.finish(Some(0), false);
        assert_eq!(outcome.verdict, Verdict::Succeeded);
        assert_eq!(outcome.session_id, "s-1");
        assert_eq!(outcome.model, "claude-sonnet-4-5");
        assert_eq!(outcome.cost_usd, 0.0091);
        assert_eq!(
            (outcome.input_tokens, outcome.output_tokens, outcome.turns),
            (2483, 112, 2)
        );
        assert!(outcome.final_text.contains("## Summary"));
    }

    #[test]
    fn limits_and_api_errors_map_to_outcomes() {
        let result = |body: &str| read(&[INIT, body]).finish(Some(1), false).verdict;
        assert!(matches!(
            result(r#"{"type":"result","subtype":"error_max_turns","is_error":true,"num_turns":2}"#),
            Verdict::Failed(m) if m.contains("turn limit")
        ));
        assert!(matches!(
            result(
                r#"{"type":"result","subtype":"error_max_budget_usd","is_error":true,"total_cost_usd":0.002}"#
            ),
            Verdict::BudgetExceeded(_)
        ));
        let limited = read(&[
            INIT,
            r#"{"type":"system","subtype":"api_retry","attempt":1,"max_retries":1,"retry_delay_ms":1500,"error_status":429,"error":"rate_limit"}"#,
            r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":429,"result":"API Error: Request rejected (429)"}"#,
        ])
        .finish(Some(1), false);
        assert_eq!(
            limited.verdict,
            Verdict::RateLimited {
                message: "API Error: Request rejected (429)".into(),
                retry_after: Some(Duration::from_millis(1500)),
            }
        );
        assert_eq!(
            result(
                r#"{"type":"result","subtype":"success","is_error":true,"result":"Claude AI usage limit reached|1750000000"}"#
            ),
            Verdict::UsageLimited {
                message: "Claude AI usage limit reached|1750000000".into(),
                resets_at: Some(1_750_000_000_000),
            }
        );
        assert!(matches!(
            result(r#"{"type":"result","subtype":"success","is_error":true,"api_error_status":500,"result":"API Error: 500"}"#),
            Verdict::Failed(m) if m.contains("500")
        ));
        assert!(
            matches!(read(&[INIT]).finish(Some(2), false).verdict, Verdict::Failed(m) if m.contains("code 2"))
        );
        assert_eq!(read(&[INIT]).finish(None, true).verdict, Verdict::Stopped);
    }

    /// A run stopped before its `result` (cancel, timeout, a crash
    /// rebuilt from the log) keeps what its replies said they used: tokens
    /// and turns, the cost estimated from the table, or unknown without a
    /// price, never a silent $0.
    #[test]
    fn a_run_without_a_result_keeps_the_usage_of_its_replies() {
        let stream = include_str!("../../tests/fixtures/agent-cli/claude-stream.jsonl");
        let lines: Vec<String> = stream
            .lines()
            .filter(|l| !l.contains(r#""type":"result""#))
            .map(String::from)
            .collect();
        let runner =
            |prices: PriceTable| ClaudeRunner::new(CommandSpec::default(), Arc::new(prices));
        let unpriced = runner(PriceTable::new()).recover("", &lines);
        assert_eq!(unpriced.verdict, Verdict::Stopped);
        assert_eq!(unpriced.turns, 2);
        assert!(unpriced.input_tokens > 0 && unpriced.output_tokens > 0);
        assert!(unpriced.cost_unknown && unpriced.cost_usd == 0.0);

        let mut prices = PriceTable::new();
        prices.insert(
            "claude-sonnet-4-5".into(),
            crate::runners::Price {
                input_per_mtok: 3.0,
                output_per_mtok: 15.0,
            },
        );
        let priced = runner(prices).recover("", &lines);
        assert!(!priced.cost_unknown && priced.cost_estimated && priced.cost_usd > 0.0);
        assert_eq!(
            (priced.input_tokens, priced.output_tokens),
            (unpriced.input_tokens, unpriced.output_tokens)
        );
        // Stopped before the model answered: nothing was used.
        let nothing = runner(PriceTable::new()).recover("", &lines[..1]);
        assert!(!nothing.cost_unknown && nothing.input_tokens == 0);
    }

    #[test]
    fn lines_become_readable_events() {
        let mut stream = ClaudeStream::default();
        let (kind, text, _) = stream.read_line(
            r#"{"type":"assistant","message":{"content":[{"type":"tool_use","name":"Bash","input":{"command":"cargo test"}}]}}"#,
        );
        assert_eq!(
            (kind, text.as_str()),
            (LogKind::ToolCall, "Bash cargo test")
        );
        let (kind, text, payload) = stream.read_line("not json");
        assert_eq!(
            (kind, text.as_str(), payload),
            (LogKind::Text, "not json", Value::Null)
        );
    }
}
