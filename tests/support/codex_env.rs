//! How to run the real `codex` CLI (Codex CLI 0.169.0) headless (`codex
//! exec --json`), offline, against a loopback Responses API: the binary's
//! location, the argv, the environment and the `config.toml` that defines
//! the model provider. One place, because the production runner needs the
//! same knowledge (see /work/shared/fixtures/agent-cli/README.md, section 3).
//!
//! The environment is built from scratch (`env_clear`): only `PATH` is passed
//! through, so nothing from the developer's own setup (`OPENAI_*`,
//! `CODEX_*`, `~/.codex`) leaks into a run.
#![allow(dead_code)]

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The version `scripts/install-agents` pins.
pub const CODEX_CLI_VERSION: &str = "0.169.0";

/// The npm launcher `scripts/install-agents` puts on the `.bin` path:
/// `bin/codex.js`, a Node script. On Node < 22.15 (no `process.execve`) it
/// spawns the native binary as a child and only forwards SIGINT/SIGTERM/
/// SIGHUP: a SIGKILL to the launcher leaves the real agent running. Prefer
/// [`codex_bin_path`].
pub fn codex_launcher_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".agents/node_modules/.bin/codex")
}

/// The native (musl, static) binary the launcher runs, from the platform
/// package npm installed next to `@openai/codex`: one process, so killing
/// its pid cancels the run.
pub fn codex_bin_path() -> PathBuf {
    let (package, triple) = match std::env::consts::ARCH {
        "aarch64" => ("codex-linux-arm64", "aarch64-unknown-linux-musl"),
        _ => ("codex-linux-x64", "x86_64-unknown-linux-musl"),
    };
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".agents/node_modules/@openai")
        .join(package)
        .join("vendor")
        .join(triple)
        .join("bin/codex")
}

/// The installed CLI, or `None` after printing a loud SKIPPED line. With `CI`
/// set, a missing CLI is a failure rather than a skip.
pub fn codex_or_skip(test: &str) -> Option<PathBuf> {
    let bin = codex_bin_path();
    if bin.is_file() {
        return Some(bin);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "{test}: codex CLI not installed at {} (CI is set); run scripts/install-agents",
            bin.display()
        );
    }
    // Straight to the stderr handle: libtest captures `eprintln!` of passing
    // tests, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "\n==========\nSKIPPED {test}: codex CLI not installed, run scripts/install-agents\n(expected at {})\n==========",
        bin.display()
    );
    None
}

/// One headless run: the prompt and the flags that vary.
#[derive(Clone, Debug)]
pub struct CodexArgs {
    pub prompt: String,
    /// `-m <model>`. A slug Codex knows (`gpt-5.5`) brings its metadata: the
    /// freeform `apply_patch` tool is offered and no "Model metadata … not
    /// found" error item is emitted. An unknown name still runs, with a
    /// shell-only tool set.
    pub model: String,
    /// `--sandbox <mode>`: `workspace-write` lets commands and patches write
    /// inside the cwd (works as root); `read-only`; `danger-full-access`.
    /// `exec` never asks for approval, whatever the mode.
    pub sandbox: String,
    /// `--skip-git-repo-check`: without it Codex refuses a cwd that is not
    /// in a git repo ("Not inside a trusted directory…").
    pub skip_git_repo_check: bool,
    /// `resume <thread_id>`: continue that thread (same id afterwards).
    pub resume: Option<String>,
    /// `--ephemeral`: keep no session files (then there is nothing to
    /// resume).
    pub ephemeral: bool,
    /// `-o <file>`: also write the last agent message to this file.
    pub output_last_message: Option<PathBuf>,
    /// Goes before the prompt (and before `resume`), e.g. `-c key=value`.
    pub extra: Vec<String>,
}

impl CodexArgs {
    pub fn new(prompt: impl Into<String>) -> Self {
        CodexArgs {
            prompt: prompt.into(),
            model: "gpt-5.5".into(),
            sandbox: "workspace-write".into(),
            skip_git_repo_check: true,
            resume: None,
            ephemeral: false,
            output_last_message: None,
            extra: Vec::new(),
        }
    }

    /// The argv after the program name: `exec [options] [resume <id>] -- <prompt>`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "exec".into(),
            "--json".into(),
            "-m".into(),
            self.model.clone(),
            "--sandbox".into(),
            self.sandbox.clone(),
            "--color".into(),
            "never".into(),
        ];
        if self.skip_git_repo_check {
            args.push("--skip-git-repo-check".into());
        }
        if self.ephemeral {
            args.push("--ephemeral".into());
        }
        if let Some(file) = &self.output_last_message {
            args.extend(["-o".into(), file.to_string_lossy().into_owned()]);
        }
        args.extend(self.extra.iter().cloned());
        if let Some(id) = &self.resume {
            args.extend(["resume".into(), id.clone()]);
        }
        // `--` so that a prompt starting with `-` is not taken for a flag.
        args.extend(["--".into(), self.prompt.clone()]);
        args
    }
}

/// The environment of a run: where the model server is and where the CLI
/// may keep state.
#[derive(Clone, Debug)]
pub struct CodexEnv {
    /// The provider's `base_url`, e.g. `http://127.0.0.1:PORT/v1` (Codex
    /// appends `/responses`).
    pub base_url: String,
    /// Sent as `Authorization: Bearer …`; passed in [`CodexEnv::API_KEY_VAR`].
    pub api_key: String,
    /// `HOME`; `CODEX_HOME` is `<home>/.codex` (config.toml, sessions — so a
    /// resume must reuse the same home — and the state database) and
    /// `TMPDIR` is `<home>/tmp` (Codex keeps its bwrap placeholder registry,
    /// `codex-bwrap-synthetic-mount-targets-<uid>`, in the temp dir; and with
    /// `CODEX_HOME` outside the temp dir it no longer warns "Refusing to
    /// create helper binaries under temporary dir").
    pub home: PathBuf,
    /// The provider's `request_max_retries`: HTTP-level retries of a failed
    /// request (5xx, connect errors; not a 429). Codex's documented default
    /// is 4.
    pub request_max_retries: u32,
    /// The provider's `stream_max_retries`: turn-level retries of a failed
    /// or cut stream, 429s with `retry-after` included (each one shows as
    /// an `error` event "Reconnecting... n/N (…)", after waiting
    /// `retry-after`). Codex's documented default is 5.
    pub stream_max_retries: u32,
}

impl CodexEnv {
    /// The variable the provider's `env_key` names.
    pub const API_KEY_VAR: &'static str = "MOCK_OPENAI_API_KEY";

    pub fn new(base_url: impl Into<String>, home: impl Into<PathBuf>) -> Self {
        CodexEnv {
            base_url: base_url.into(),
            api_key: "sk-mock".into(),
            home: home.into(),
            request_max_retries: 0,
            stream_max_retries: 0,
        }
    }

    pub fn codex_home(&self) -> PathBuf {
        self.home.join(".codex")
    }

    pub fn config_path(&self) -> PathBuf {
        self.codex_home().join("config.toml")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.home.join("tmp")
    }

    /// `$CODEX_HOME/config.toml`: a `mock` provider speaking the Responses
    /// API (`wire_api = "chat"` is no longer accepted), and everything that
    /// would reach the network besides it turned off.
    pub fn config_toml(&self) -> String {
        let q = |s: &str| toml::Value::from(s).to_string();
        format!(
            r#"model_provider = "mock"
# No call to the release feed.
check_for_update_on_startup = false

[analytics]
enabled = false

[otel]
exporter = "none"

[model_providers.mock]
name = "Mock Responses API"
base_url = {base_url}
env_key = {env_key}
wire_api = "responses"
request_max_retries = {request_max_retries}
stream_max_retries = {stream_max_retries}

# `--sandbox workspace-write` makes the cwd, $TMPDIR and /tmp writable and
# keeps `.git`, `.codex`, `.agents` and `.aws` inside each writable root
# read-only; where one is missing, bwrap creates a placeholder in the root
# for the command and codex removes it afterwards, coordinating through a
# registry in $TMPDIR only. With a per-run TMPDIR, concurrent runs can race
# on /tmp/.codex (seen once: "bwrap: Can't remount readonly on
# /newroot/tmp/.codex … Invalid argument", the command failing), so /tmp is
# left out: commands write to the cwd and $TMPDIR.
[sandbox_workspace_write]
exclude_slash_tmp = true
exclude_tmpdir_env_var = false

# With these on, Codex fetches curated plugins and apps from github.com,
# api.github.com and chatgpt.com.
[features]
plugins = false
remote_plugin = false
apps = false
"#,
            base_url = q(&self.base_url),
            env_key = q(Self::API_KEY_VAR),
            request_max_retries = self.request_max_retries,
            stream_max_retries = self.stream_max_retries,
        )
    }

    /// Writes [`CodexEnv::config_toml`] to `$CODEX_HOME/config.toml`.
    pub fn write_config(&self) {
        std::fs::create_dir_all(self.codex_home()).expect("create CODEX_HOME");
        std::fs::write(self.config_path(), self.config_toml()).expect("write config.toml");
    }

    /// Every variable the CLI gets (besides the inherited `PATH`).
    pub fn vars(&self) -> Vec<(String, OsString)> {
        let s = |v: &str| OsString::from(v);
        vec![
            ("HOME".into(), self.home.clone().into()),
            ("CODEX_HOME".into(), self.codex_home().into()),
            ("TMPDIR".into(), self.tmp_dir().into()),
            (Self::API_KEY_VAR.into(), s(&self.api_key)),
            ("NO_COLOR".into(), s("1")),
        ]
    }
}

/// The one place argv, env and config come together: `program args…` in
/// `cwd`, with a clean environment, `config.toml` written, stdin closed (else
/// `exec` waits to append stdin to the prompt) and stdout/stderr piped. The
/// home, `CODEX_HOME` and temp directories are created.
pub fn codex_command(program: &Path, cwd: &Path, args: &CodexArgs, env: &CodexEnv) -> Command {
    env.write_config();
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
