//! Agents are untrusted. A stand-in agent (a shell script configured as
//! `claude`, run by the real server's claude runner) tries what a hostile
//! one would: print the server's secrets from its environment, read the
//! user's `~/.ssh`, the server's config and database and another task's
//! sandbox, write into the data dir and outside, reach a loopback server,
//! and leave a `setsid` child holding its stdout. In the OS sandbox
//! (bubblewrap, installed by scripts/install-bwrap) each try fails, the
//! agent's own work and config home still work, and the attempt ends on
//! time with nothing left running.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use claudomator::config::Config;
use claudomator::core::runner::{Isolation, Network};
use claudomator::proto as pb;
use common::{TestServer, agent_spec, executions, start_server_with, submit, wait_for};
use support::anthropic_mock::{AnthropicMock, Script};
use support::claude_env::{claude_or_skip, configure_claude};

/// bubblewrap, installed by the project's script on first use.
fn install_bwrap() {
    static INSTALLED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    INSTALLED.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install-bwrap");
        let out = std::process::Command::new("bash")
            .arg(script)
            .output()
            .expect("run scripts/install-bwrap");
        assert!(
            out.status.success(),
            "scripts/install-bwrap: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// What the hostile agent reaches for: the user's home (a fake one, so
/// the test owns it), a config and another task's sandbox beside the data
/// dir, and a loopback server.
struct Bait {
    _dir: tempfile::TempDir,
    home: PathBuf,
    config: PathBuf,
    outside: PathBuf,
    listener: std::net::TcpListener,
}

impl Bait {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let home = shared_home().to_path_buf();
        let config = root.join("claudomator.toml");
        std::fs::write(&config, "[auth]\ntokens = [\"server-token\"]\n").unwrap();
        let outside = root.join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        Bait {
            _dir: dir,
            home,
            config,
            outside,
            listener: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        }
    }

    /// The agent: each try prints `LEAK …` when it works, `ok …` when not;
    /// its detached child runs `sleep <sleep>`.
    fn agent(&self, data_dir: &Path, project: &Path, sleep: u32) -> PathBuf {
        let port = self.listener.local_addr().unwrap().port();
        let script = self.outside.join("hostile-agent");
        let text = format!(
            r#"#!/bin/sh
say() {{ printf '%s\n' "$*"; }}
if env | grep -q 'CLAUDOMATOR\|hook-secret'; then say "LEAK env: $(env | grep 'CLAUDOMATOR\|hook-secret' | tr '\n' ' ')"; else say "ok env"; fi
if cat "{home}/.ssh/id_ed25519" 2>/dev/null; then say "LEAK ssh"; else say "ok ssh"; fi
if cat "{config}" 2>/dev/null; then say "LEAK config"; else say "ok config"; fi
if ls "{data}/claudomator.db" 2>/dev/null; then say "LEAK database"; else say "ok database"; fi
if cat "{data}/sandboxes/01ARZ3NDEKTSV4RRFFQ69G5FAV/secret.txt" 2>/dev/null; then say "LEAK other sandbox"; else say "ok other sandbox"; fi
if touch "{data}/pwned" 2>/dev/null; then say "LEAK wrote the data dir"; else say "ok data dir"; fi
if touch "{outside}/pwned" 2>/dev/null; then say "LEAK wrote outside"; else say "ok outside"; fi
if node -e "require('net').connect({port},'127.0.0.1').on('connect',()=>process.exit(0)).on('error',()=>process.exit(1))" 2>/dev/null; then say "NET reached"; else say "NET unreachable"; fi
if touch "{home}/.claude/agent-was-here"; then say "ok own config home"; else say "FAIL own config home"; fi
if echo work > agent-work.txt; then say "ok sandbox"; else say "FAIL sandbox"; fi
if git log -1 --format=%s >/dev/null 2>&1 && git add agent-work.txt && git -c user.name=a -c user.email=a@a commit -qm own >/dev/null 2>&1; then say "ok history and own commit"; else say "FAIL history: $(git log -1 2>&1 | head -1)"; fi
if touch "{project}/.git/objects/pwned" 2>/dev/null; then say "LEAK wrote the project's history"; else say "ok project read-only"; fi
if [ "$(ls -A "{project}" 2>/dev/null)" = ".git" ] && [ "$(ls -A "{project}/.git")" = "objects" ]; then say "ok project hidden but its history"; else say "LEAK project: $(ls -A "{project}" "{project}/.git" 2>&1 | tr '\n' ' ')"; fi
if [ -f .env ]; then say "ok copied"; fi
if [ -f setup-ran.txt ]; then say "ok setup ran"; fi
if env | grep -q setup-secret; then say "LEAK setup env"; fi
setsid sh -c 'exec sleep {sleep}' &
say "done"
"#,
            home = self.home.display(),
            config = self.config.display(),
            data = data_dir.display(),
            outside = self.outside.display(),
            project = project.display(),
        );
        std::fs::write(&script, text).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        script
    }
}

/// The user's home for every test here (HOME is the process's): a private
/// key, and claude's config dir. Set once, with the server's secrets.
fn shared_home() -> &'static Path {
    static HOME: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    HOME.get_or_init(|| {
        let home =
            std::env::temp_dir().join(format!("claudomator-isolation-home-{}", std::process::id()));
        std::fs::create_dir_all(home.join(".ssh")).unwrap();
        std::fs::write(home.join(".ssh/id_ed25519"), "PRIVATE KEY\n").unwrap();
        std::fs::create_dir_all(home.join(".claude")).unwrap();
        // The user's global git config runs a program in every worktree git
        // refreshes (as `core.fsmonitor = true` starts a daemon): never in a
        // sandbox, whose git the server runs with no global config.
        let hook = home.join("fsmonitor-hook");
        let ran = home.join("fsmonitor-ran");
        std::fs::write(
            &hook,
            format!("#!/bin/sh\npwd >> '{}'\nexit 1\n", ran.display()),
        )
        .unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::write(
            home.join(".gitconfig"),
            format!("[core]\n\tfsmonitor = {}\n", hook.display()),
        )
        .unwrap();
        // SAFETY: set once, before any server of this binary starts.
        unsafe {
            std::env::set_var("CLAUDOMATOR_GITHUB_WEBHOOK_SECRET", "hook-secret-1");
            std::env::set_var("HOME", &home);
        }
        home
    })
}

/// A server whose `claude` is the hostile agent (its child sleeping
/// `sleep` seconds), with secrets in its environment and another task's
/// sandbox in its data dir; one attempt per task.
async fn hostile_server(bait: &Bait, sleep: u32, adjust: impl FnOnce(&mut Config)) -> TestServer {
    install_bwrap();
    start_server_with(|c| {
        let other = c.data_dir.join("sandboxes/01ARZ3NDEKTSV4RRFFQ69G5FAV");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("secret.txt"), "another task's work\n").unwrap();
        c.agents.claude.command = bait.agent(&c.data_dir, &c.projects[0].path, sleep);
        c.defaults.max_attempts = 1;
        c.executor.enabled = true;
        c.executor.poll_interval = "100ms".into();
        adjust(c);
    })
    .await
}

/// Runs one task to its end; returns its log's text and how long it took.
async fn run_task(server: &TestServer) -> (pb::Task, String, Duration) {
    let mut client = server.client().await;
    let mut spec = agent_spec(pb::AgentType::Claude, "Try everything.");
    spec.timeout = "2m".into();
    let started = Instant::now();
    let task = submit(&mut client, spec).await;
    let done = wait_for(
        &mut client,
        &task.id,
        &[
            pb::TaskState::Completed,
            pb::TaskState::Ready,
            pb::TaskState::Failed,
            pb::TaskState::TimedOut,
        ],
    )
    .await;
    let took = started.elapsed();
    let runs = executions(&mut client, &task.id).await;
    let log = std::fs::read_to_string(&runs[0].log_path).unwrap_or_default();
    let text = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|e| e["text"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n");
    (done, text, took)
}

/// Processes left whose command line is the agent's detached child.
fn sleepers(sleep: u32) -> Vec<String> {
    let wanted = format!("sleep\u{0}{sleep}\u{0}");
    common::processes_where(|proc| {
        std::fs::read_to_string(proc.join("cmdline")).is_ok_and(|c| c == wanted)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_agent_reaches_nothing_of_the_servers_and_leaves_nothing_running() {
    let bait = Bait::new();
    let server = hostile_server(&bait, 4242, |c| {
        c.agents.claude.isolation = Some(Isolation::Sandbox)
    })
    .await;
    let (task, log, took) = run_task(&server).await;

    assert!(log.contains("in an OS sandbox (bubblewrap)"), "{log}");
    assert!(!log.contains("LEAK"), "{log}");
    assert!(!server.data_dir().join("pwned").exists());
    assert!(!bait.outside.join("pwned").exists());
    for line in [
        "ok env",
        "ok ssh",
        "ok config",
        "ok database",
        "ok other sandbox",
        "ok data dir",
        "ok outside",
        "ok own config home",
        "ok sandbox",
        "ok history and own commit",
        "ok project read-only",
        "ok project hidden but its history",
        "done",
    ] {
        assert!(log.contains(line), "missing `{line}`: {log}");
    }
    // The network stays on by default: agents need their model.
    assert!(log.contains("NET reached"), "{log}");
    assert!(bait.home.join(".claude/agent-was-here").exists());
    let ran = std::fs::read_to_string(bait.home.join("fsmonitor-ran")).unwrap_or_default();
    assert!(
        !ran.contains("sandboxes"),
        "the user's global git config ran in a sandbox: {ran}"
    );
    // The detached child died with the attempt, which ended at once
    // rather than waiting for it to close stdout.
    assert!(sleepers(4242).is_empty(), "left: {:?}", sleepers(4242));
    assert!(took < Duration::from_secs(60), "took {took:?}");
    let runs = executions(&mut server.client().await, &task.id).await;
    assert!(
        runs[0].changed_files.iter().any(|f| f == "agent-work.txt"),
        "{:?}",
        runs[0].changed_files
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_none_takes_the_network_away_loopback_included() {
    let bait = Bait::new();
    let server = hostile_server(&bait, 4243, |c| c.projects[0].network = Some(Network::None)).await;
    let (_, log, _) = run_task(&server).await;
    assert!(log.contains("network off"), "{log}");
    assert!(log.contains("NET unreachable"), "{log}");
    assert!(!log.contains("LEAK"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_os_sandbox_the_agent_still_gets_only_the_allowed_environment() {
    let bait = Bait::new();
    let server = hostile_server(&bait, 4244, |c| {
        c.projects[0].isolation = Some(Isolation::None)
    })
    .await;
    let (_, log, took) = run_task(&server).await;
    assert!(log.contains("not in an OS sandbox"), "{log}");
    assert!(log.contains("ok env"), "{log}");
    // What isolation = "none" means: the files are the server's.
    assert!(log.contains("LEAK ssh"), "{log}");
    // A child that detached (setsid) and holds stdout escapes the process
    // group here; it does not hold the attempt, which ends soon after the
    // agent does.
    assert!(took < Duration::from_secs(60), "took {took:?}");
    for process in sleepers(4244) {
        let pid = process.split(':').next().unwrap_or_default();
        let _ = std::process::Command::new("kill").arg(pid).status();
    }
}

/// The real `claude` CLI, its Bash tool driven by the scripted model, in
/// the OS sandbox: what the command printed goes back to the model, and
/// none of the server's secrets, the user's key, the config, the database
/// or another task's sandbox are in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_claude_bash_tool_sees_nothing_of_the_servers() {
    if claude_or_skip("the_real_claude_bash_tool_sees_nothing_of_the_servers").is_none() {
        return;
    }
    install_bwrap();
    let bait = Bait::new();
    let claude_home = tempfile::tempdir().unwrap();
    let command = |data: &Path| {
        format!(
            "env; cat {home}/.ssh/id_ed25519; cat {config}; ls -a {data} {data}/sandboxes; \
             setsid sleep 4245 > /dev/null 2>&1 & echo started",
            home = bait.home.display(),
            config = bait.config.display(),
            data = data.display(),
        )
    };
    // The model's command names the data dir, known once the config is.
    let mock = std::sync::Arc::new(std::sync::Mutex::new(None));
    let server = {
        let mock = mock.clone();
        start_server_with(move |c| {
            let other = c.data_dir.join("sandboxes/01ARZ3NDEKTSV4RRFFQ69G5FAV");
            std::fs::create_dir_all(&other).unwrap();
            let model = AnthropicMock::start(Script::Bash(command(&c.data_dir)));
            configure_claude(c, &model.base_url(), claude_home.path(), 1);
            c.agents.claude.isolation = Some(Isolation::Sandbox);
            c.defaults.max_attempts = 1;
            c.executor.enabled = true;
            c.executor.poll_interval = "100ms".into();
            *mock.lock().unwrap() = Some(model);
        })
        .await
    };
    let mock = mock.lock().unwrap().take().unwrap();
    let mut client = server.client().await;
    let mut spec = agent_spec(pb::AgentType::Claude, "Run the command.");
    spec.agent.as_mut().unwrap().allowed_tools = vec!["Bash".into()];
    let task = submit(&mut client, spec).await;
    let done = wait_for(
        &mut client,
        &task.id,
        &[
            pb::TaskState::Completed,
            pb::TaskState::Failed,
            pb::TaskState::TimedOut,
        ],
    )
    .await;
    let results = mock
        .message_requests()
        .iter()
        .flat_map(|r| r.tool_results())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        results.contains("ANTHROPIC_BASE_URL") && results.contains("started"),
        "the command did not run ({:?} {}): {results}",
        done.state(),
        done.state_reason
    );
    for secret in [
        "hook-secret",
        "CLAUDOMATOR",
        "PRIVATE KEY",
        "server-token",
        "claudomator.db",
        "01ARZ3NDEKTSV4RRFFQ69G5FAV",
    ] {
        assert!(
            !results.contains(secret),
            "`{secret}` reached the agent: {results}"
        );
    }
    assert_eq!(
        done.state(),
        pb::TaskState::Completed,
        "{}",
        done.state_reason
    );
    assert!(sleepers(4245).is_empty(), "left: {:?}", sleepers(4245));
}

/// A project's setup runs in the new sandbox before the agent, with its own
/// environment the agent never sees; its untracked files are copied in; a
/// failing setup fails the attempt saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_runs_first_with_secrets_the_agent_never_sees() {
    let bait = Bait::new();
    let server = hostile_server(&bait, 4246, |c| {
        let project = &mut c.projects[0];
        std::fs::write(project.path.join(".env"), "TOKEN=local\n").unwrap();
        project.copy = vec![".env".into(), "missing/*.toml".into()];
        project.setup =
            "test \"$SETUP_SECRET\" = setup-secret && echo ran > setup-ran.txt && echo installed"
                .into();
        project.setup_env = [("SETUP_SECRET".to_string(), "setup-secret".to_string())].into();
    })
    .await;
    let (_, log, _) = run_task(&server).await;
    for line in [
        "copied from the project: .env",
        "setup: running",
        "setup: installed",
        "setup: done",
        "ok copied",
        "ok setup ran",
        "done",
    ] {
        assert!(log.contains(line), "missing `{line}`: {log}");
    }
    assert!(!log.contains("LEAK"), "{log}");

    let failing = hostile_server(&bait, 4247, |c| {
        c.projects[0].setup = "echo broken >&2; exit 3".into();
    })
    .await;
    let (task, log, _) = run_task(&failing).await;
    assert_eq!(task.state(), pb::TaskState::Failed);
    assert!(
        task.state_reason
            .contains("setup `echo broken >&2; exit 3` failed (exit 3)"),
        "{}",
        task.state_reason
    );
    assert!(log.contains("setup: broken"), "{log}");
    assert!(!log.contains("ok sandbox"), "the agent ran: {log}");
}

/// A fork bomb stops at the project's `max_processes`: the machine and the
/// server keep answering, the task times out on time, and every process it
/// made is gone with the attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_is_capped_and_gone_with_its_attempt() {
    let bait = Bait::new();
    let script = bait.outside.join("fork-bomb-agent");
    std::fs::write(
        &script,
        // bash retries a fork that fails, so the bomb keeps pressing.
        "#!/bin/bash\necho bombing\nbomb() { bomb | bomb & }\nbomb\nexec sleep 600\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let server = hostile_server(&bait, 4245, |c| {
        c.agents.claude.command = script.clone();
        c.projects[0].max_processes = Some(64);
    })
    .await;
    let mut client = server.client().await;
    let mut spec = agent_spec(pb::AgentType::Claude, "Fork.");
    spec.timeout = "6s".into();
    let started = Instant::now();
    let task = submit(&mut client, spec).await;

    let script_text = script.to_string_lossy().into_owned();
    let bombs = || {
        common::processes_where(|proc| {
            std::fs::read_to_string(proc.join("cmdline"))
                .is_ok_and(|c| c.contains(script_text.as_str()))
        })
        .len()
    };
    let mut most = 0;
    let mut answered = 0;
    let done = loop {
        most = most.max(bombs());
        let now = common::get(&mut client, &task.id).await;
        answered += 1;
        if now.state == pb::TaskState::TimedOut as i32 || now.state == pb::TaskState::Failed as i32
        {
            break now;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the bombed task did not end: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let took = started.elapsed();
    assert_eq!(done.state, pb::TaskState::TimedOut as i32, "{done:?}");
    assert!(took < Duration::from_secs(40), "took {took:?}");
    assert!(most > 8, "the bomb never went off ({most} processes)");
    assert!(most <= 64, "{most} processes: the cap did not hold");
    assert!(answered > 5, "the server stopped answering");
    let runs = executions(&mut client, &task.id).await;
    let log = std::fs::read_to_string(&runs[0].log_path).unwrap_or_default();
    assert!(log.contains("at most 64 processes"), "{log}");
    println!("at most {most} bomb processes at once; ended in {took:?}");
    // Gone at once with the attempt (the PID namespace), not later.
    assert_eq!(bombs(), 0, "fork bomb processes outlived the attempt");
}
