//! How an agent's process is shut in. The agent runs model-written
//! commands on code anyone may have sent: nothing of the server's may
//! reach it.
//!
//! - **Always**, its environment is built from an allow-list, never
//!   inherited whole: [`BASE_ENV`] (and `LC_*`), the agent's credential
//!   variables ([`credential_env`]), the agent's `pass_env`, and what the
//!   runner and `[agents.*] env` set. Tokens, the webhook and notification
//!   secrets and every other `CLAUDOMATOR_*` variable stay out.
//! - **In an OS sandbox** (bubblewrap) unless `isolation = "none"`: a new
//!   root holding the system read-only (`/usr`, `/etc`…), a private `/tmp`,
//!   `/proc` and `/dev`; the attempt's sandbox read-write; the project's
//!   git objects its clone shares read-only; the agent's own config homes
//!   read-write; its program read-only. The user's home, the
//!   server's data dir (other tasks' sandboxes, the database, logs) and
//!   everything else are not there. Its own PID namespace: when the agent
//!   ends, everything it started ends, however it detached. `network =
//!   "none"` takes the network away, loopback included.
//! - `isolation = "auto"` (the default) runs without the OS sandbox where
//!   the machine has none, saying so in the attempt's log; `"sandbox"`
//!   fails the attempt instead.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::OnceCell;

use super::CommandSpec;
use crate::core::model::AgentType;
use crate::core::runner::{Confinement, Isolation, Network};

/// The server's variables every agent gets (besides `LC_*`): locale, the
/// terminal, who and where it is, proxies and certificates.
pub const BASE_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "LANG",
    "LANGUAGE",
    "TZ",
    "TERM",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
];

/// The variables an agent's CLI documents for its credentials, endpoint and
/// account: passed from the server's environment when set there.
pub fn credential_env(agent: AgentType) -> &'static [&'static str] {
    match agent {
        AgentType::Claude => &[
            "ANTHROPIC_API_KEY",
            "ANTHROPIC_AUTH_TOKEN",
            "ANTHROPIC_BASE_URL",
            "ANTHROPIC_MODEL",
            "ANTHROPIC_SMALL_FAST_MODEL",
            "ANTHROPIC_CUSTOM_HEADERS",
            "CLAUDE_CODE_OAUTH_TOKEN",
            "CLAUDE_CONFIG_DIR",
            "CLAUDE_CODE_USE_BEDROCK",
            "CLAUDE_CODE_USE_VERTEX",
            "ANTHROPIC_VERTEX_PROJECT_ID",
            "CLOUD_ML_REGION",
            "AWS_REGION",
            "AWS_PROFILE",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_BEARER_TOKEN_BEDROCK",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "DISABLE_TELEMETRY",
            "DISABLE_AUTOUPDATER",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC",
        ],
        AgentType::Gemini => &[
            "GEMINI_API_KEY",
            "GOOGLE_API_KEY",
            "GOOGLE_CLOUD_PROJECT",
            "GOOGLE_CLOUD_LOCATION",
            "GOOGLE_GENAI_USE_VERTEXAI",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "GOOGLE_GEMINI_BASE_URL",
            "GEMINI_MODEL",
        ],
        AgentType::Codex => &[
            "OPENAI_API_KEY",
            "OPENAI_BASE_URL",
            "OPENAI_ORG_ID",
            "OPENAI_PROJECT_ID",
            "AZURE_OPENAI_API_KEY",
        ],
        // No process (local), or not an agent yet (auto): nothing to pass.
        AgentType::Local | AgentType::Auto => &[],
    }
}

/// Variables naming an agent's own state (config, sessions, scratch): when
/// the runner or `[agents.*] env` sets one to a directory, the agent gets
/// that directory read-write in the OS sandbox.
const STATE_ENV: &[&str] = &[
    "HOME",
    "TMPDIR",
    "CLAUDE_CONFIG_DIR",
    "CODEX_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
    "XDG_STATE_HOME",
];

/// The system the agent sees read-only (those that exist here).
const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt",
];

/// An agent's process, ready to start, and what its log should say about
/// how it is shut in.
pub struct Confined {
    pub command: Command,
    pub note: String,
    /// The run's process cap: keep it until the process has ended.
    pub limit: Option<pids::PidsLimit>,
}

impl Confined {
    /// Caps the processes `command` may start (see [`pids`]) and says so
    /// in the note.
    fn new(mut command: Command, note: String, max_processes: u64) -> Confined {
        let (limit, cap) = pids::apply(&mut command, max_processes);
        Confined {
            command,
            note: format!("{note}; {cap}"),
            limit,
        }
    }
}

/// What the runner knows of one launch.
pub struct Launch<'a> {
    /// None: not an agent (a project's setup): no credentials.
    pub agent: Option<AgentType>,
    pub spec: &'a CommandSpec,
    /// The project's choices for this attempt.
    pub confinement: Confinement,
    /// Paths of the agent's own state the runner knows (claude's
    /// `~/.claude` when it uses the user's home), read-write.
    pub state: Vec<PathBuf>,
}

/// `command` as the runner built it (program, arguments, working
/// directory: the sandbox, and the variables it set), shut in as `launch`
/// says. Err: it must not run (isolation required and impossible here).
pub async fn confine(command: Command, launch: &Launch<'_>) -> Result<Confined, String> {
    let std = command.as_std();
    let program = PathBuf::from(std.get_program());
    let args: Vec<OsString> = std.get_args().map(OsStr::to_os_string).collect();
    let workdir = std.get_current_dir().map(Path::to_path_buf);
    let explicit: Vec<(OsString, Option<OsString>)> = std
        .get_envs()
        .map(|(k, v)| (k.to_os_string(), v.map(OsStr::to_os_string)))
        .collect();
    let env = agent_env(launch, &explicit);

    let (isolation, network) = launch.confinement.over(launch.spec.confinement);
    let required = isolation == Isolation::Sandbox || network == Network::None;
    let plain = |note: String| {
        let mut plain = Command::new(&program);
        plain.args(&args).env_clear().envs(&env);
        if let Some(dir) = &workdir {
            plain.current_dir(dir);
        }
        Confined::new(plain, note, launch.confinement.max_processes())
    };
    if isolation == Isolation::None && !required {
        return Ok(plain(
            "not in an OS sandbox (isolation = \"none\"); environment from the allow-list".into(),
        ));
    }
    let bwrap = match os_sandbox().await {
        Ok(bwrap) => bwrap,
        Err(why) if required => {
            let wanted = if network == Network::None {
                "network = \"none\""
            } else {
                "isolation = \"sandbox\""
            };
            return Err(format!(
                "{wanted} needs an OS sandbox, and this machine has none: {why}"
            ));
        }
        Err(why) => {
            return Ok(plain(format!(
                "NOT in an OS sandbox: {why}; the agent sees what the server sees \
                 (set isolation = \"sandbox\" to refuse to run like this)"
            )));
        }
    };
    let Some(workdir) = workdir else {
        return Err("an agent without a working directory cannot be sandboxed".into());
    };
    // Found on the agent's own PATH, as it will run.
    let program = env
        .get(OsStr::new("PATH"))
        .and_then(|path| super::locate_in(&program, path))
        .unwrap_or(program);
    let shared = crate::sandbox::shared_paths(&workdir).await;
    let mut sandbox = Command::new(bwrap);
    sandbox
        .args(bwrap_args(
            launch, &program, &workdir, &shared, &explicit, network,
        ))
        .arg("--")
        .arg(&program)
        .args(&args)
        .current_dir(&workdir)
        .env_clear()
        .envs(&env);
    let note = format!(
        "in an OS sandbox (bubblewrap): {} read-write, the system read-only, network {}",
        workdir.display(),
        if network == Network::None {
            "off"
        } else {
            "on"
        }
    );
    Ok(Confined::new(
        sandbox,
        note,
        launch.confinement.max_processes(),
    ))
}

/// The agent's whole environment: the allowed part of the server's, then
/// what the runner set (or removed).
fn agent_env(
    launch: &Launch<'_>,
    explicit: &[(OsString, Option<OsString>)],
) -> BTreeMap<OsString, OsString> {
    let allowed = |name: &str| {
        BASE_ENV.contains(&name)
            || name.starts_with("LC_")
            || launch
                .agent
                .is_some_and(|a| credential_env(a).contains(&name))
            || launch.spec.pass_env.iter().any(|p| p == name)
            || (!launch.spec.api_key_env.is_empty() && launch.spec.api_key_env == name)
    };
    let mut env: BTreeMap<OsString, OsString> = std::env::vars_os()
        .filter(|(k, _)| k.to_str().is_some_and(allowed))
        .collect();
    for (name, value) in explicit {
        match value {
            Some(value) => env.insert(name.clone(), value.clone()),
            None => env.remove(name),
        };
    }
    env
}

/// The bubblewrap options: what the agent sees, in mount order (a later
/// mount covers an earlier one).
fn bwrap_args(
    launch: &Launch<'_>,
    program: &Path,
    workdir: &Path,
    shared: &[PathBuf],
    explicit: &[(OsString, Option<OsString>)],
    network: Network,
) -> Vec<OsString> {
    let mut args = Mounts(
        [
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--new-session",
        ]
        .map(OsString::from)
        .to_vec(),
    );
    if network == Network::None {
        args.0.push("--unshare-net".into());
    }
    for dir in SYSTEM_DIRS.iter().map(Path::new) {
        match std::fs::read_link(dir) {
            // `/bin -> usr/bin` on a merged /usr: the same link inside.
            Ok(target) => args.op("--symlink", &[&target, dir]),
            Err(_) if dir.is_dir() => args.same("--ro-bind", dir),
            Err(_) => {}
        }
    }
    // resolv.conf may point into /run (systemd-resolved).
    let resolved = Path::new("/run/systemd/resolve");
    if resolved.is_dir() {
        args.same("--ro-bind", resolved);
    }
    args.op("--proc", &[Path::new("/proc")]);
    args.op("--dev", &[Path::new("/dev")]);
    args.op("--tmpfs", &[Path::new("/tmp")]);
    for path in program_dirs(program) {
        args.same("--ro-bind", &path);
    }
    for path in launch.spec.expose.iter().filter(|p| p.exists()) {
        args.same("--ro-bind", path);
    }
    let state = state_paths(launch, explicit);
    for path in &state {
        args.same("--bind", path);
    }
    // Whatever of the data dir the above showed (an exposed parent, a
    // state dir inside it) goes again, but for this attempt's own.
    let data_dir = &launch.spec.data_dir;
    let hide_data_dir = data_dir.is_absolute();
    if hide_data_dir {
        args.op("--tmpfs", &[data_dir]);
        for path in state.iter().filter(|p| p.starts_with(data_dir)) {
            args.same("--bind", path);
        }
    }
    // The project's history the sandbox's clone reads (its alternates).
    for path in shared {
        args.same("--ro-bind", path);
    }
    args.same("--bind", workdir);
    if hide_data_dir {
        // Its mount points made, the empty data dir is read-only: what the
        // agent writes there fails rather than vanishing with the attempt.
        args.op("--remount-ro", &[data_dir]);
    }
    args.op("--chdir", &[workdir]);
    args.0
}

/// bubblewrap's argument list, an option and its paths at a time.
struct Mounts(Vec<OsString>);

impl Mounts {
    fn op(&mut self, option: &str, paths: &[&Path]) {
        self.0.push(option.into());
        self.0
            .extend(paths.iter().map(|p| p.as_os_str().to_os_string()));
    }

    /// `option path path`: a path shown at the same place inside.
    fn same(&mut self, option: &str, path: &Path) {
        self.op(option, &[path, path]);
    }
}

/// The agent's own state, read-write: the runner's home for it, the
/// directories the runner or config named in [`STATE_ENV`], and what the
/// runner listed.
fn state_paths(launch: &Launch<'_>, explicit: &[(OsString, Option<OsString>)]) -> Vec<PathBuf> {
    let named = explicit.iter().filter_map(|(name, value)| {
        let name = name.to_str()?;
        let value = value.as_ref()?;
        STATE_ENV.contains(&name).then(|| PathBuf::from(value))
    });
    let mut paths: Vec<PathBuf> = std::iter::once(launch.spec.home.clone())
        .chain(named)
        .chain(launch.state.iter().cloned())
        .filter(|p| p.is_absolute() && p.exists())
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// Where the agent's program lives, read-only: its directory, the package
/// it links into (the outermost `node_modules`, so its dependencies come
/// too), and for a script run by `node`, node's installation.
fn program_dirs(program: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = program.parent() {
        dirs.push(dir.to_path_buf());
    }
    let Ok(real) = program.canonicalize() else {
        return dirs;
    };
    let package = real
        .ancestors()
        .filter(|a| a.file_name() == Some(OsStr::new("node_modules")))
        .last()
        .map(Path::to_path_buf)
        .or_else(|| real.parent().map(Path::to_path_buf));
    dirs.extend(package);
    // The `#!` line only: the program may be a 200 MB native binary.
    let mut head = Vec::new();
    if let Ok(file) = std::fs::File::open(&real) {
        let _ = std::io::Read::read_to_end(&mut std::io::Read::take(file, 128), &mut head);
    }
    if head.starts_with(b"#!")
        && String::from_utf8_lossy(&head).contains("node")
        && let Some(node) = super::locate(Path::new("node")).and_then(|n| n.canonicalize().ok())
    {
        // `<prefix>/bin/node`: the whole prefix (its lib/ beside bin/).
        let prefix = node.parent().and_then(|bin| {
            (bin.file_name() == Some(OsStr::new("bin")))
                .then(|| bin.parent())
                .flatten()
        });
        dirs.extend(prefix.or(node.parent()).map(Path::to_path_buf));
    }
    // The system is there already; a root-level package dir would show all.
    dirs.retain(|d| d.components().count() > 2 && !SYSTEM_DIRS.iter().any(|s| d.starts_with(s)));
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Whether bubblewrap can make a sandbox on this machine: its path, or why
/// not. Tried once (a sandbox that runs `true`), then remembered.
pub async fn os_sandbox() -> Result<PathBuf, String> {
    static PROBE: OnceCell<Result<PathBuf, String>> = OnceCell::const_new();
    PROBE.get_or_init(probe).await.clone()
}

async fn probe() -> Result<PathBuf, String> {
    let Some(bwrap) = super::locate(Path::new("bwrap")) else {
        return Err(
            "bubblewrap is not installed (no `bwrap` on PATH; Debian and Ubuntu: \
             apt-get install bubblewrap)"
                .into(),
        );
    };
    let mut trial = Command::new(&bwrap);
    trial
        .args([
            "--die-with-parent",
            "--unshare-pid",
            "--ro-bind",
            "/",
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "true",
        ])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match tokio::time::timeout(Duration::from_secs(10), trial.output()).await {
        Ok(Ok(out)) if out.status.success() => Ok(bwrap),
        Ok(Ok(out)) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            Err(format!(
                "{} cannot make a sandbox here ({}; user namespaces may be off: \
                 see /proc/sys/user/max_user_namespaces)",
                bwrap.display(),
                super::one_line(stderr.trim())
            ))
        }
        Ok(Err(e)) => Err(format!("cannot run {}: {e}", bwrap.display())),
        Err(_) => Err(format!("{} did not answer within 10 s", bwrap.display())),
    }
}

pub mod pids;
#[cfg(test)]
mod tests;
