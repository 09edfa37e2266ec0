//! How to run the real `gemini` CLI (Gemini CLI 0.61.0) headless, offline,
//! against a loopback model server: the binary's location, the argv, the
//! environment and the `settings.json` it needs. One place, because the
//! production runner needs the same knowledge (see
//! /work/shared/fixtures/agent-cli/README.md, section 2).
//!
//! The environment is built from scratch (`env_clear`): only `PATH` is passed
//! through, so nothing from the developer's own setup (`GEMINI_API_KEY`,
//! `GOOGLE_*`, `~/.gemini`) leaks into a run.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

/// The version `scripts/install-agents` pins.
pub const GEMINI_CLI_VERSION: &str = "0.61.0";

/// Where `scripts/install-agents` puts the binary (a Node script,
/// `bundle/gemini.js`; `node` must be on `PATH`).
pub fn gemini_bin_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".agents/node_modules/.bin/gemini")
}

/// The installed CLI, or `None` after printing a loud SKIPPED line. With `CI`
/// set, a missing CLI is a failure rather than a skip.
pub fn gemini_or_skip(test: &str) -> Option<PathBuf> {
    let bin = gemini_bin_path();
    if bin.is_file() {
        return Some(bin);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test}: gemini CLI not installed at {} (CI is set); run scripts/install-agents",
            bin.display()
        );
    }
    // Straight to the stderr handle: libtest captures `eprintln!` of passing
    // tests, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n==========\nSKIPPED {test}: gemini CLI not installed, run scripts/install-agents\n(expected at {})\n==========",
        bin.display()
    );
    None
}

/// One headless run: the prompt and the flags that vary.
#[derive(Clone, Debug)]
pub struct GeminiArgs {
    pub prompt: String,
    /// `-m <model>`. `None` leaves the CLI on `auto`, which first asks a
    /// flash-lite model (a `:generateContent` side call) to route the turn.
    pub model: Option<String>,
    /// `--approval-mode <mode>`. `yolo` (the default here) auto-approves
    /// every tool, shell included; `auto_edit` only the edit tools
    /// (`write_file`, `replace`). In headless mode a tool that would need a
    /// confirmation is not offered to the model at all, so `auto_edit` still
    /// writes files but the model gets no `run_shell_command`.
    pub approval_mode: String,
    /// `--resume <session_id>`: continue that session (same id afterwards).
    /// `latest` or an index also work.
    pub resume: Option<String>,
    /// `-o <format>`: `stream-json` (JSONL events), `json` or `text`.
    pub output_format: String,
    pub extra: Vec<String>,
}

impl GeminiArgs {
    pub fn new(prompt: impl Into<String>) -> Self {
        GeminiArgs {
            prompt: prompt.into(),
            model: Some("gemini-2.5-flash".into()),
            approval_mode: "yolo".into(),
            resume: None,
            output_format: "stream-json".into(),
            extra: Vec::new(),
        }
    }

    /// The argv after the program name.
    pub fn to_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "-p".into(),
            self.prompt.clone(),
            "-o".into(),
            self.output_format.clone(),
            // `--yolo` is the same as `--approval-mode yolo`; both at once is
            // an error.
            "--approval-mode".into(),
            self.approval_mode.clone(),
        ];
        if let Some(model) = &self.model {
            args.extend(["-m".into(), model.clone()]);
        }
        if let Some(id) = &self.resume {
            args.extend(["--resume".into(), id.clone()]);
        }
        args.extend(self.extra.iter().cloned());
        args
    }
}

/// The environment of a run: where the model server is and where the CLI
/// may keep state.
#[derive(Clone, Debug)]
pub struct GeminiEnv {
    /// `GOOGLE_GEMINI_BASE_URL`, e.g. `http://127.0.0.1:PORT`.
    pub base_url: String,
    /// `GEMINI_API_KEY`, sent as `x-goog-api-key`.
    pub api_key: String,
    /// `HOME`: settings, sessions (`.gemini/tmp/<project>/chats/`, so a
    /// resume must reuse the same home) and the project registry live in
    /// `<home>/.gemini`; `TMPDIR` is `<home>/tmp` (the CLI drops
    /// `gemini-client-error-*.json` reports in the temp dir).
    pub home: PathBuf,
    /// `general.maxAttempts`: tries per model call, retries included (the
    /// CLI's default is 10, at most 10). The delay between tries is at least
    /// 5 s (doubling up to 30 s), or the 429's `RetryInfo.retryDelay` when
    /// that is longer.
    pub max_attempts: u32,
    /// `model.maxSessionTurns`: ends the run with exit 53 when reached.
    pub max_session_turns: Option<u32>,
}

impl GeminiEnv {
    pub fn new(base_url: impl Into<String>, home: impl Into<PathBuf>) -> Self {
        GeminiEnv {
            base_url: base_url.into(),
            api_key: "mock-gemini-key".into(),
            home: home.into(),
            max_attempts: 2,
            max_session_turns: None,
        }
    }

    pub fn config_dir(&self) -> PathBuf {
        self.home.join(".gemini")
    }

    pub fn settings_path(&self) -> PathBuf {
        self.config_dir().join("settings.json")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.home.join("tmp")
    }

    /// The user `settings.json`.
    pub fn settings(&self) -> Value {
        let mut settings = json!({
            // GOOGLE_GEMINI_BASE_URL alone makes the auth type "gateway",
            // which headless mode rejects ("Invalid auth method selected.",
            // exit 41); the base URL is still honoured with this.
            "security": {"auth": {"selectedType": "gemini-api-key"}},
            // Usage statistics go to play.googleapis.com (Clearcut).
            "privacy": {"usageStatisticsEnabled": false},
            "telemetry": {"enabled": false},
            "general": {
                "enableAutoUpdate": false,
                "enableAutoUpdateNotification": false,
                "maxAttempts": self.max_attempts,
            },
        });
        if let Some(turns) = self.max_session_turns {
            settings["model"] = json!({"maxSessionTurns": turns});
        }
        settings
    }

    /// Writes [`GeminiEnv::settings`] to `<home>/.gemini/settings.json` (the
    /// CLI may rewrite the file in place, e.g. to migrate keys).
    pub fn write_settings(&self) {
        std::fs::create_dir_all(self.config_dir()).expect("create ~/.gemini");
        std::fs::write(
            self.settings_path(),
            serde_json::to_string_pretty(&self.settings()).unwrap(),
        )
        .expect("write ~/.gemini/settings.json");
    }

    /// Every variable the CLI gets (besides the inherited `PATH`).
    pub fn vars(&self) -> Vec<(String, OsString)> {
        let s = |v: &str| OsString::from(v);
        vec![
            ("HOME".into(), self.home.clone().into()),
            ("TMPDIR".into(), self.tmp_dir().into()),
            ("GOOGLE_GEMINI_BASE_URL".into(), s(&self.base_url)),
            ("GEMINI_API_KEY".into(), s(&self.api_key)),
            // Trusts the cwd without a trustedFolders.json (an untrusted
            // folder runs in a restricted "safe mode").
            ("GEMINI_CLI_TRUST_WORKSPACE".into(), s("true")),
            // Without it the CLI re-spawns itself as a child node process
            // (for a bigger heap) and the parent ignores SIGINT/SIGTERM/
            // SIGHUP: killing the pid we hold would orphan the real agent.
            ("GEMINI_CLI_NO_RELAUNCH".into(), s("true")),
            ("NO_COLOR".into(), s("1")),
        ]
    }
}

/// The one place argv, env and settings come together: `program args…` in
/// `cwd`, with a clean environment, the settings written, stdin closed and
/// stdout/stderr piped. The home and temp directories are created.
pub fn gemini_command(program: &Path, cwd: &Path, args: &GeminiArgs, env: &GeminiEnv) -> Command {
    env.write_settings();
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
