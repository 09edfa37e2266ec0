//! The commented config file `claudomator init` writes: every section with
//! its defaults and what each key does.

use std::path::Path;

use super::*;

/// The commented config `claudomator init` writes.
pub fn commented_default(cwd: &Path) -> String {
    let d = Config::default();
    let project = project_from_cwd(cwd);
    let projects = match &project {
        Some(p) => format!(
            "[[projects]]\nname = \"{}\"\npath = \"{}\"\n# github = \"owner/{}\"\n\
             # Rebase finished branches onto the default branch and push them here:\n\
             # publish_remote = \"origin\"\n",
            p.name,
            p.path.display(),
            p.name
        ),
        None => "# [[projects]]\n# name = \"my-app\"\n# path = \"/path/to/my-app\"\n# github = \"owner/my-app\"\n".into(),
    };
    format!(
        r#"# claudomator server config. Every key is optional; shown are the defaults.
# Precedence: defaults < this file < CLAUDOMATOR_* environment < command-line flags.

# gRPC address (CLAUDOMATOR_LISTEN, --listen).
listen = "{listen}"
# HTTP address for webhooks and health checks (CLAUDOMATOR_HTTP_LISTEN, --http-listen).
http_listen = "{http}"
# Browser pages allowed to call the API over gRPC-Web on `listen` (CORS), by
# origin: ["http://localhost:5173", "https://board.example.com"]
# (CLAUDOMATOR_CORS_ORIGINS, --cors-origins, comma-separated). Empty: none,
# and no CORS headers are sent.
cors_origins = []
# Database, logs and sandboxes (CLAUDOMATOR_DATA_DIR, --data-dir).
data_dir = "{data_dir}"
# Empty: embedded SQLite in data_dir. Or "postgres://user@host:5432/db"
# (CLAUDOMATOR_DATABASE_URL, --database-url).
database_url = ""

[auth]
# Bearer tokens. When any is set, every RPC but health needs
# `authorization: Bearer <token>`. Required to listen on anything but
# loopback. Keep them out of this file: set CLAUDOMATOR_TOKENS
# (comma-separated) in the server's environment, or name another variable:
# tokens_env = "MY_CLAUDOMATOR_TOKENS"
tokens = []

[limits]
max_instructions_bytes = {max_bytes}
max_timeout = "{max_timeout}"

[defaults]
timeout = "{timeout}"
max_attempts = {attempts}

[executor]
# Off: this server accepts and serves tasks but runs none.
enabled = true
# Attempts running at once, all agents together.
max_concurrent = {max_concurrent}
# On SIGTERM: "requeue" stops running agents and queues their tasks again;
# "finish" lets them finish first.
shutdown = "requeue"
# After a crash: "requeue" queues the tasks that were running again (resuming
# their agent sessions) within their attempt limits; "fail" fails them.
on_restart = "requeue"
# How long a task waits for an answer to its agent's question before it is
# TIMED_OUT (e.g. "24h"); empty waits forever.
blocked_timeout = ""
# Keep a failed attempt's sandbox (<data_dir>/sandboxes/<task-id>) to inspect.
keep_failed_sandboxes = true
commit_author_name = "claudomator"
commit_author_email = "claudomator@localhost"
# Backoff after a rate limit: retry_base, doubling per attempt, up to retry_max.
retry_base = "10s"
retry_max = "10m"
# An agent whose usage quota is spent is set aside this long (unless it says
# when the quota resets); `auto` tasks go to other agents meanwhile.
usage_limit_cooldown = "1h"
poll_interval = "1s"
# This server's name when several servers share one PostgreSQL database
# (empty: host name plus a hash of the data dir, stable across restarts).
server_id = ""
# A running task's claim lasts this long unless renewed (every third of it);
# when a server dies, another one recovers its tasks after this.
lease = "30s"
# Copy execution logs into the database so any server can serve any
# execution's log: "auto" (on with PostgreSQL), "on" or "off".
share_logs = "auto"

[agents.claude]
# The Claude Code CLI: a name on PATH or a path.
command = "claude"
# Attempts of this agent at once; 0: only executor.max_concurrent applies.
max_concurrent = 0
# Attempts of this agent at once on all servers sharing the database; 0: none.
# (Every [agents.*] section takes it.)
cluster_max_concurrent = 0
# Model when a task names none; empty lets the CLI choose.
model = ""
# Extra environment for the agent, e.g. ANTHROPIC_BASE_URL.
env = {{}}
# Agents get an environment built from an allow-list (see the README): more
# of the server's variables by name, and more paths they may read in the OS
# sandbox (a toolchain under your home, say).
pass_env = []
expose = []
# "auto": in an OS sandbox (bubblewrap) where this machine has one;
# "sandbox": never without one (tasks fail instead); "none": never.
# A [[projects]] entry may set isolation and network too, and wins.
isolation = "auto"
# "none": no network at all, loopback included (needs the OS sandbox).
network = "on"

[agents.gemini]
# The Gemini CLI; it runs with a home of its own (<data_dir>/agents/gemini,
# settings written there) and GEMINI_API_KEY from the environment.
command = "gemini"
max_concurrent = 0
model = ""
# base_url = "http://127.0.0.1:8080"   # GOOGLE_GEMINI_BASE_URL
env = {{}}

[agents.codex]
# The Codex CLI; CODEX_HOME is <data_dir>/agents/codex, with a config.toml
# written there. The API key comes from api_key_env (default OPENAI_API_KEY).
command = "codex"
max_concurrent = 0
model = ""
# base_url = "http://127.0.0.1:8000/v1"   # any OpenAI Responses API
# api_key_env = "OPENAI_API_KEY"
env = {{}}

[local_model]
# An OpenAI-compatible endpoint (Ollama, vLLM, llama.cpp, LM Studio), e.g.
# "http://127.0.0.1:11434/v1" (CLAUDOMATOR_LOCAL_MODEL_ENDPOINT). It runs tasks
# with agent "local", picks the agent of "auto" tasks, and writes summaries
# agents forgot. Empty: none of that; rules decide instead.
endpoint = ""
# Sent as "model"; empty lets the server use the model it has loaded.
model = ""
# One call's budget, retries included.
timeout = "60s"
temperature = 0.2
# The environment variable holding the API key; empty sends none.
api_key_env = ""
# Retries on 429 (honouring Retry-After), 502-504 and connection errors.
max_retries = 3
# The longest answer of a "local" task, in tokens.
max_tokens = 1024
# Calls in flight at once, so also "local" tasks at once. llama.cpp's server
# answers one at a time (and cuts a stream short for a newer request); vLLM
# and Ollama can take more.
max_concurrent = 1
# How long choosing the agent of an "auto" task may take before the rule decides.
classify_timeout = "10s"

[notifications]
# POST a JSON event to this URL when a task enters one of `events`; empty: off.
# Signed: X-Claudomator-Signature-256: sha256=<hex HMAC-SHA256 of the body>.
url = ""
# The signing key, or secret_env naming an environment variable that holds it.
secret = ""
secret_env = ""
# Any of blocked, ready, completed, failed, timed_out, budget_exceeded, cancelled.
events = ["blocked", "ready", "completed", "failed", "timed_out", "budget_exceeded"]
timeout = "10s"
# Retries (connection errors, timeouts, 408, 429, 5xx), backing off from retry_base.
max_retries = 5
retry_base = "1s"
# Events waiting for delivery at most; more are dropped (and counted), never waited for.
queue = 1024

[github]
# The webhook shim: POST /webhooks/github on http_listen (GET /healthz too).
# Failed workflow runs, check suites and check runs become triage tasks
# tagged "ci". The secret set on the GitHub webhook
# (CLAUDOMATOR_GITHUB_WEBHOOK_SECRET, or the variable webhook_secret_env
# names: keep it out of this file); without one every delivery is refused
# (403) unless allow_unsigned = true (local use only).
# webhook_secret_env = "MY_WEBHOOK_SECRET"
webhook_secret = ""
allow_unsigned = false
max_body_bytes = 2097152
# At most max_triage triage tasks per (repository, branch, workflow) per window.
max_triage = 3
triage_window = "24h"
# The agent triage tasks ask for.
agent = "auto"
# The local model writes a triage plan within plan_timeout (GitHub waits 10 s),
# else a fixed checklist is used.
plan_timeout = "5s"
plan_max_tokens = 400
# Checks of these apps are not triaged: GitHub Actions failures come as workflow_run.
ignore_check_apps = ["github-actions"]
# GitHub's REST API, for pull requests and `doctor`'s checks of the projects
# with github = "owner/name"; GitHub Enterprise Server: "https://HOST/api/v3".
api_url = "https://api.github.com"
# Their credentials (a project may set its own: github_token_env, or
# github_app_id with github_private_key_file, and github_api_url). Either
# the environment variable holding a token (it needs push access and the
# right to open pull requests)…
# token_env = "GITHUB_TOKEN"
# …or a GitHub App (permissions contents: write and pull_requests: write,
# installed on each repository); its installation tokens are renewed as
# they expire.
# app_id = 123456
# private_key_file = "/etc/claudomator/github-app.pem"
# The longest a call waits out a rate limit; longer fails it at once.
rate_limit_max_wait = "60s"

{pull_requests}
[http]
# The listener on http_listen. A request's headers must arrive within
# header_timeout and its body within body_timeout; at most max_connections
# at once (a new one replaces the oldest idle one, or is closed at once).
# Bodies are read whole before their signature is checked: at most
# max_buffered_bytes of them over all connections (beyond: 503).
header_timeout = "10s"
body_timeout = "30s"
max_connections = 256
max_buffered_bytes = 33554432

# Prices (USD per million tokens) for agents that report no cost; common
# models are built in.
# [prices."gemini-2.5-flash"]
# input_per_mtok = 0.30
# output_per_mtok = 2.50

# The repositories tasks may run in. With none configured, the git repository
# the server starts in is the one project.
{projects}"#,
        listen = d.listen,
        http = d.http_listen,
        data_dir = d.data_dir.display(),
        max_bytes = d.limits.max_instructions_bytes,
        max_timeout = d.limits.max_timeout,
        timeout = d.defaults.timeout,
        attempts = d.defaults.max_attempts,
        max_concurrent = d.executor.max_concurrent,
        pull_requests = pulls::commented(&d.pull_requests),
        projects = projects,
    )
}
