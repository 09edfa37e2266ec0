//! How to run the real `claude` CLI (Claude Code 2.1.197) headless, offline,
//! against a loopback model server: the binary's location, the argv and the
//! environment. One place, because the production runner needs the same
//! knowledge (see /work/shared/fixtures/agent-cli/README.md, section 1).
//!
//! The environment is built from scratch (`env_clear`): only `PATH` is passed
//! through, so nothing from the developer's own Claude Code setup
//! (`ANTHROPIC_*`, `CLAUDE_CODE_*`, `~/.claude`) leaks into a run.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The version `scripts/install-agents` pins.
pub const CLAUDE_CODE_VERSION: &str = "2.1.197";

/// Where `scripts/install-agents` puts the binary.
pub fn claude_bin_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".agents/node_modules/.bin/claude")
}

/// The installed CLI, or `None` after printing a loud SKIPPED line. With `CI`
/// set, a missing CLI is a failure rather than a skip.
pub fn claude_or_skip(test: &str) -> Option<PathBuf> {
    let bin = claude_bin_path();
    if bin.is_file() {
        return Some(bin);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test}: claude CLI not installed at {} (CI is set); run scripts/install-agents",
            bin.display()
        );
    }
    // Straight to the stderr handle: libtest captures `eprintln!` of passing
    // tests, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n==========\nSKIPPED {test}: claude CLI not installed, run scripts/install-agents\n(expected at {})\n==========",
        bin.display()
    );
    None
}

/// One headless run: the prompt and the flags that vary.
#[derive(Clone, Debug)]
pub struct ClaudeArgs {
    pub prompt: String,
    pub model: String,
    /// `acceptEdits` lets Write/Edit through and, unlike `bypassPermissions`,
    /// works as root.
    pub permission_mode: String,
    pub max_turns: Option<u32>,
    pub max_budget_usd: Option<f64>,
    /// `--resume <session_id>`: continue that session (same id afterwards).
    pub resume: Option<String>,
    /// `--session-id <uuid>`: choose the id of a new session.
    pub session_id: Option<String>,
    /// `--include-partial-messages`: raw SSE events as `stream_event`s.
    pub include_partial_messages: bool,
    pub append_system_prompt: Option<String>,
    /// `--tools a,b`: the only tools sent to the model.
    pub tools: Option<String>,
    pub extra: Vec<String>,
}

impl ClaudeArgs {
    pub fn new(prompt: impl Into<String>) -> Self {
        ClaudeArgs {
            prompt: prompt.into(),
            model: "claude-sonnet-4-5".into(),
            permission_mode: "acceptEdits".into(),
            max_turns: Some(5),
            max_budget_usd: None,
            resume: None,
            session_id: None,
            include_partial_messages: false,
            append_system_prompt: None,
            tools: None,
            extra: Vec::new(),
        }
    }

    /// The argv after the program name.
    pub fn to_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "-p".into(),
            self.prompt.clone(),
            // stream-json requires --verbose in print mode.
            "--output-format".into(),
            "stream-json".into(),
            "--verbose".into(),
            "--model".into(),
            self.model.clone(),
            "--permission-mode".into(),
            self.permission_mode.clone(),
        ];
        if let Some(n) = self.max_turns {
            // Hidden from --help, but honoured.
            args.extend(["--max-turns".into(), n.to_string()]);
        }
        if let Some(usd) = self.max_budget_usd {
            args.extend(["--max-budget-usd".into(), usd.to_string()]);
        }
        if let Some(id) = &self.resume {
            args.extend(["--resume".into(), id.clone()]);
        }
        if let Some(id) = &self.session_id {
            args.extend(["--session-id".into(), id.clone()]);
        }
        if self.include_partial_messages {
            args.push("--include-partial-messages".into());
        }
        if let Some(text) = &self.append_system_prompt {
            args.extend(["--append-system-prompt".into(), text.clone()]);
        }
        if let Some(tools) = &self.tools {
            args.extend(["--tools".into(), tools.clone()]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }
}

/// The environment of a run: where the model server is and where the CLI
/// may keep state.
#[derive(Clone, Debug)]
pub struct ClaudeEnv {
    /// `ANTHROPIC_BASE_URL`, e.g. `http://127.0.0.1:PORT`.
    pub base_url: String,
    pub api_key: String,
    /// `HOME`; `CLAUDE_CONFIG_DIR` is `<home>/.claude` (sessions live there,
    /// so a resume must reuse the same home) and `TMPDIR` is `<home>/tmp`
    /// (the CLI creates `claude-<uid>/` in the temp dir).
    pub home: PathBuf,
    /// `CLAUDE_CODE_MAX_RETRIES` (the CLI's default is 10, clamped to 15).
    pub max_retries: u32,
}

impl ClaudeEnv {
    pub fn new(base_url: impl Into<String>, home: impl Into<PathBuf>) -> Self {
        ClaudeEnv {
            base_url: base_url.into(),
            api_key: "sk-ant-mock".into(),
            home: home.into(),
            max_retries: 2,
        }
    }

    pub fn config_dir(&self) -> PathBuf {
        self.home.join(".claude")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.home.join("tmp")
    }

    /// Every variable the CLI gets (besides the inherited `PATH`).
    pub fn vars(&self) -> Vec<(String, OsString)> {
        let s = |v: &str| OsString::from(v);
        vec![
            ("HOME".into(), self.home.clone().into()),
            ("CLAUDE_CONFIG_DIR".into(), self.config_dir().into()),
            ("TMPDIR".into(), self.tmp_dir().into()),
            ("ANTHROPIC_BASE_URL".into(), s(&self.base_url)),
            ("ANTHROPIC_API_KEY".into(), s(&self.api_key)),
            // Without these the CLI also calls api.anthropic.com (bootstrap,
            // MCP registry, event logging) even with a base URL set.
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(), s("1")),
            ("DISABLE_TELEMETRY".into(), s("1")),
            ("DISABLE_ERROR_REPORTING".into(), s("1")),
            ("DISABLE_AUTOUPDATER".into(), s("1")),
            (
                "CLAUDE_CODE_MAX_RETRIES".into(),
                s(&self.max_retries.to_string()),
            ),
        ]
    }
}

/// Points a server's `claude` agent at the model server at `base_url`, with
/// its home (created) in `home` and `max_retries` retries of the CLI's own.
pub fn configure_claude(
    c: &mut claudomator::config::Config,
    base_url: &str,
    home: &Path,
    max_retries: u32,
) {
    let mut env = ClaudeEnv::new(base_url, home);
    env.max_retries = max_retries;
    std::fs::create_dir_all(env.config_dir()).unwrap();
    std::fs::create_dir_all(env.tmp_dir()).unwrap();
    c.agents.claude.command = claude_bin_path();
    c.agents.claude.model = "claude-sonnet-4-5".into();
    c.agents.claude.env = env
        .vars()
        .into_iter()
        .map(|(k, v)| (k, v.to_string_lossy().into_owned()))
        .collect();
}

/// The one place argv and env come together: `program args…` in `cwd`, with
/// a clean environment, stdin closed and stdout/stderr piped. The home, config
/// and temp directories are created.
pub fn claude_command(program: &Path, cwd: &Path, args: &ClaudeArgs, env: &ClaudeEnv) -> Command {
    std::fs::create_dir_all(env.config_dir()).expect("create CLAUDE_CONFIG_DIR");
    std::fs::create_dir_all(env.tmp_dir()).expect("create TMPDIR");
    let mut cmd = Command::new(program);
    cmd.args(args.to_args())
        .current_dir(cwd)
        .env_clear()
        .envs(env.vars())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd
}
