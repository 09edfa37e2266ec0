//! `claudomator logs`, `submit --wait` and `run FILE` as a person runs them:
//! the real binary against a real `claudomator serve` (configured by a file)
//! whose executor runs the real `claude` CLI against the scripted Anthropic
//! server on loopback.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::anthropic_mock::{AnthropicMock, Script};
use support::claude_env::{ClaudeEnv, claude_bin_path, claude_or_skip};

const BIN: &str = env!("CARGO_BIN_EXE_claudomator");

/// How long one CLI command may take before the test gives up on it.
const COMMAND_LIMIT: Duration = Duration::from_secs(25);

struct Served {
    child: Child,
    addr: String,
    /// The server's stderr so far, for failure messages.
    log: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
}

impl Served {
    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        // SIGTERM first, so the server stops its agents; then make sure.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A git repository with one commit on branch `trunk`, independent of any
/// global git config.
fn git_repo(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("README.md"), "# shop\n").unwrap();
    for args in [
        &["init", "-q", "-b", "trunk"][..],
        &["add", "README.md"],
        &[
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "commit.gpgsign=false",
            "commit",
            "-q",
            "-m",
            "initial",
        ],
    ] {
        let status = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .status()
            .expect("git runs");
        assert!(status.success(), "git {args:?} failed");
    }
}

/// A TOML string.
fn quoted(text: impl AsRef<str>) -> String {
    serde_json::to_string(text.as_ref()).unwrap()
}

/// `claudomator serve --config FILE` in a fresh git repository (`shop`, the
/// one project). With a mock, the executor runs the `.agents` claude against
/// it; without one, the executor is off and tasks stay as submitted.
fn serve(mock: Option<&AnthropicMock>) -> Served {
    serve_with(mock, "")
}

/// [`serve`] with `extra` TOML appended to the config file.
fn serve_with(mock: Option<&AnthropicMock>, extra: &str) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("shop");
    git_repo(&repo);
    let home = dir.path().join("home");
    let mut config = format!(
        "data_dir = {}\n\n[executor]\nenabled = {}\npoll_interval = \"200ms\"\nretry_base = \"1s\"\n\n",
        quoted(dir.path().join("data").to_string_lossy()),
        mock.is_some()
    );
    if let Some(mock) = mock {
        let mut env = ClaudeEnv::new(mock.base_url(), home.join("claude"));
        env.max_retries = 1;
        std::fs::create_dir_all(env.config_dir()).unwrap();
        std::fs::create_dir_all(env.tmp_dir()).unwrap();
        config.push_str(&format!(
            "[agents.claude]\ncommand = {}\nmodel = \"claude-sonnet-4-5\"\n\n[agents.claude.env]\n",
            quoted(claude_bin_path().to_string_lossy())
        ));
        for (key, value) in env.vars() {
            config.push_str(&format!("{key} = {}\n", quoted(value.to_string_lossy())));
        }
    }
    config.push_str(extra);
    let config_path = dir.path().join("claudomator.toml");
    std::fs::write(&config_path, config).unwrap();

    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(&config_path)
        .current_dir(&repo)
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env_remove("CLAUDOMATOR_CONFIG")
        .env_remove("CLAUDOMATOR_TOKENS")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // Logged first, so the log holds every line up to the address.
                let addr = line.split("listening on ").nth(1).map(|rest| {
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string()
                });
                log.lock().unwrap().push(line);
                if let Some(addr) = addr {
                    let _ = tx.send(addr);
                }
            }
        });
    }
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(addr) => Served {
            child,
            addr,
            log,
            dir,
        },
        Err(_) => {
            let _ = child.kill();
            panic!(
                "serve did not say where it listens:\n{}",
                log.lock().unwrap().join("\n")
            );
        }
    }
}

/// Starts `claudomator ARGS --server ADDR`.
fn spawn_cli(served: &Served, args: &[&str]) -> Child {
    Command::new(BIN)
        .args(args)
        .args(["--server", &served.addr])
        .env_remove("CLAUDOMATOR_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the cli")
}

/// Waits for a CLI process, killing it (and failing) after `limit`.
fn finish(served: &Served, child: Child, what: &str, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.expect("wait for the cli"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!(
                "`claudomator {what}` did not finish within {limit:?}; server log:\n{}",
                served.log()
            );
        }
    }
}

/// Runs `claudomator ARGS --server ADDR` to the end.
fn cli(served: &Served, args: &[&str]) -> Output {
    let child = spawn_cli(served, args);
    finish(served, child, &args.join(" "), COMMAND_LIMIT)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The exit code, with both streams in the message when it is not `code`.
fn assert_code(output: &Output, code: i32, served: &Served) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}\nserver log:\n{}",
        stdout(output),
        stderr(output),
        served.log()
    );
}

fn json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", stdout(output)))
}

/// Lines of `text` that show an event of `tag` whose text contains `needle`:
/// `HH:MM:SS tag text`.
fn event_lines<'a>(text: &'a str, tag: &str, needle: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|line| {
            let mut parts = line.split_whitespace();
            let time = parts.next().unwrap_or_default();
            time.len() == 8
                && time.as_bytes()[2] == b':'
                && parts.next() == Some(tag)
                && line.contains(needle)
        })
        .collect()
}

fn task_ids(served: &Served) -> Vec<String> {
    let listed = cli(served, &["list", "--all", "--json"]);
    assert_code(&listed, 0, served);
    json(&listed)["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn submit_wait_follows_the_log_then_logs_replays_it() {
    if claude_or_skip("submit_wait_follows_the_log_then_logs_replays_it").is_none() {
        return;
    }
    let started = Instant::now();
    let mock = AnthropicMock::start(Script::write_file("hello.txt", "hi"));
    let served = serve(Some(&mock));

    let waited = cli(
        &served,
        &[
            "submit",
            "Create hello.txt containing hi",
            "--agent",
            "claude",
            "--wait",
        ],
    );
    assert_code(&waited, 0, &served);
    let text = stdout(&waited);
    let first = text.lines().next().unwrap_or_default();
    assert!(first.starts_with("submitted "), "{text}");
    let id = first.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(
        event_lines(&text, "tool", "Write").len(),
        1,
        "the tool call is shown: {text}"
    );
    assert_eq!(
        event_lines(&text, "result", "success").len(),
        1,
        "the result is shown: {text}"
    );
    assert!(
        text.contains("state:         completed"),
        "the final task: {text}"
    );
    assert!(!text.contains('\x1b'), "no colours into a pipe: {text}");

    // The final task says what the run cost, what it changed and where the
    // work is; `get` says the same.
    let got = cli(&served, &["get", &id]);
    assert_code(&got, 0, &served);
    for shown in [text.as_str(), stdout(&got).as_str()] {
        assert!(
            shown.contains("cost:          $") && shown.contains(" over 1 attempt\n"),
            "the cost: {shown}"
        );
        assert!(
            shown.contains("latest:        attempt 1 succeeded on claude"),
            "the latest attempt: {shown}"
        );
        assert!(
            shown.contains("changed:       hello.txt +1 -0"),
            "the changed file: {shown}"
        );
        assert!(
            shown.contains(&format!("branch:        claudomator/{id} ")),
            "the branch the work is on: {shown}"
        );
    }

    // `logs TASK` replays the finished task's log.
    let replay = cli(&served, &["logs", &id]);
    assert_code(&replay, 0, &served);
    let replayed = stdout(&replay);
    assert_eq!(
        event_lines(&replayed, "tool", "Write").len(),
        1,
        "{replayed}"
    );
    assert_eq!(
        event_lines(&replayed, "result", "success").len(),
        1,
        "{replayed}"
    );

    // `--json`: one object per line, offsets 0, 1, 2, … of one execution.
    let as_json = cli(&served, &["logs", &id, "--json"]);
    assert_code(&as_json, 0, &served);
    let events: Vec<Value> = stdout(&as_json)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    assert_eq!(events.len(), replayed.lines().count(), "one line per event");
    let offsets: Vec<u64> = events
        .iter()
        .map(|e| e["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (0..events.len() as u64).collect::<Vec<_>>());
    let execution = events[0]["execution_id"].as_str().unwrap().to_string();
    assert!(
        events
            .iter()
            .all(|e| e["execution_id"] == execution.as_str())
    );
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for wanted in ["system", "tool_call", "tool_result", "text", "result"] {
        assert!(kinds.contains(&wanted), "{wanted} missing from {kinds:?}");
    }
    let result = events.iter().find(|e| e["kind"] == "result").unwrap();
    assert_eq!(result["payload"]["type"], "result", "the payload is JSON");

    // An execution id works too, from an offset; --raw is the agent's lines.
    let tail = cli(&served, &["logs", &execution, "--from", "2", "--json"]);
    assert_code(&tail, 0, &served);
    let tail_offsets: Vec<u64> = stdout(&tail)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["offset"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(tail_offsets, (2..events.len() as u64).collect::<Vec<_>>());
    let raw = cli(&served, &["logs", &id, "--raw"]);
    assert_code(&raw, 0, &served);
    let raw_lines: Vec<String> = stdout(&raw).lines().map(str::to_string).collect();
    let with_raw: Vec<&str> = events
        .iter()
        .filter_map(|e| e["raw"].as_str().filter(|r| !r.is_empty()))
        .collect();
    assert!(!raw_lines.is_empty());
    assert_eq!(raw_lines, with_raw);

    // Ids that are neither: not found (3), not an id (2).
    assert_code(
        &cli(&served, &["logs", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]),
        3,
        &served,
    );
    assert_code(
        &cli(&served, &["logs", "-f", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]),
        3,
        &served,
    );
    assert_code(&cli(&served, &["logs", "nonsense"]), 2, &served);

    // With --json, stdout is only the final task; the log goes to stderr.
    let machine = cli(
        &served,
        &[
            "submit",
            "Create hello.txt containing hi",
            "--agent",
            "claude",
            "--wait",
            "--json",
        ],
    );
    assert_code(&machine, 0, &served);
    let shown = json(&machine);
    let task = &shown["task"];
    assert_eq!(task["state"], "completed");
    assert_ne!(task["id"], id.as_str());
    // What `get` shows: the attempts, the cost, where the work is.
    assert_eq!(shown["executions"].as_array().unwrap().len(), 1, "{shown}");
    assert!(shown["cost_usd"].as_f64().unwrap() > 0.0, "{shown}");
    assert_eq!(
        shown["branch"],
        format!("claudomator/{}", task["id"].as_str().unwrap())
    );
    let logged = stderr(&machine);
    assert_eq!(event_lines(&logged, "tool", "Write").len(), 1, "{logged}");
    eprintln!(
        "submit_wait_follows_the_log_then_logs_replays_it: {:?}",
        started.elapsed()
    );
}

#[test]
fn submit_wait_exits_with_the_failed_code() {
    if claude_or_skip("submit_wait_exits_with_the_failed_code").is_none() {
        return;
    }
    let started = Instant::now();
    let mock = AnthropicMock::start(Script::ManyTurns);
    let served = serve(Some(&mock));
    let waited = cli(
        &served,
        &[
            "submit",
            "keep going",
            "--agent",
            "claude",
            "--max-turns",
            "1",
            "--wait",
        ],
    );
    assert_code(&waited, 10, &served);
    let text = stdout(&waited);
    assert!(!event_lines(&text, "tool", "Write").is_empty(), "{text}");
    assert_eq!(event_lines(&text, "result", "error").len(), 1, "{text}");
    assert!(text.contains("state:         failed"), "{text}");
    let err = stderr(&waited);
    assert!(
        err.contains("ended failed") && err.contains("turn"),
        "{err}"
    );
    eprintln!(
        "submit_wait_exits_with_the_failed_code: {:?}",
        started.elapsed()
    );
}

#[test]
fn submit_wait_follows_a_retry_after_a_rate_limit() {
    if claude_or_skip("submit_wait_follows_a_retry_after_a_rate_limit").is_none() {
        return;
    }
    let started = Instant::now();
    // CLAUDE_CODE_MAX_RETRIES=1: the first attempt's two calls are refused,
    // so it is rate-limited and requeued; the second attempt succeeds.
    let mock = AnthropicMock::start(Script::rate_limited_then(
        3,
        1,
        Script::write_file("ok.txt", "ok"),
    ));
    let served = serve(Some(&mock));
    let waited = cli(
        &served,
        &[
            "submit",
            "write ok.txt",
            "--agent",
            "claude",
            "--wait",
            "--json",
        ],
    );
    assert_code(&waited, 0, &served);
    let task = json(&waited)["task"].clone();
    assert_eq!(task["state"], "completed");
    assert_eq!(task["attempts"], 2);
    let logged = stderr(&waited);
    assert!(logged.contains("── attempt 2 (execution "), "{logged}");
    let (first, second) = logged.split_once("── attempt 2").unwrap();
    assert!(first.contains("rate"), "the first attempt's log: {first}");
    assert_eq!(event_lines(second, "tool", "Write").len(), 1, "{second}");
    assert_eq!(
        event_lines(second, "result", "success").len(),
        1,
        "{second}"
    );
    eprintln!(
        "submit_wait_follows_a_retry_after_a_rate_limit: {:?}",
        started.elapsed()
    );
}

const BATCH: &str = "\
# c is written first, but runs last.
tasks:
  - id: c
    name: Combine
    instructions: Create hello.txt containing hi (after a and b)
    agent: { type: claude }
    depends_on: [a, b]
  - id: a
    instructions: Create hello.txt containing hi (a)
    agent: { type: claude }
  - id: b
    instructions: Create hello.txt containing hi (b)
    agent: { type: claude }
";

fn millis(value: &Value) -> i64 {
    value
        .as_i64()
        .unwrap_or_else(|| panic!("not a time: {value}"))
}

#[test]
fn run_submits_a_batch_in_dependency_order_once() {
    if claude_or_skip("run_submits_a_batch_in_dependency_order_once").is_none() {
        return;
    }
    let started = Instant::now();
    let mock = AnthropicMock::start(Script::write_file("hello.txt", "hi"));
    let served = serve(Some(&mock));
    let file = served.path("tasks.yaml");
    std::fs::write(&file, BATCH).unwrap();
    let file = file.to_str().unwrap();

    let ran = cli(&served, &["run", file, "--wait", "--json"]);
    assert_code(&ran, 0, &served);
    let report = json(&ran);
    let tasks = report["tasks"].as_array().unwrap();
    let names: Vec<&str> = tasks.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["c", "a", "b"], "file order");
    let id = |name: &str| {
        tasks.iter().find(|t| t["name"] == name).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    for task in tasks {
        assert_eq!(task["state"], "completed", "{task}");
        assert_eq!(task["created"], true);
        assert!(
            task["idempotency_key"]
                .as_str()
                .unwrap()
                .starts_with("run:"),
            "{task}"
        );
    }
    let c = tasks.iter().find(|t| t["name"] == "c").unwrap();
    assert_eq!(c["depends_on"], serde_json::json!([id("a"), id("b")]));

    // c's one execution started after a's and b's ended.
    let execution = |name: &str| {
        let out = cli(&served, &["executions", &id(name), "--json"]);
        assert_code(&out, 0, &served);
        let runs = json(&out)["executions"].clone();
        assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
        runs[0].clone()
    };
    let (a, b, c_run) = (execution("a"), execution("b"), execution("c"));
    let c_start = millis(&c_run["started_at"]);
    for dep in [&a, &b] {
        assert!(
            c_start >= millis(&dep["ended_at"]),
            "c started at {c_start}, before its dependency ended: {dep}"
        );
    }

    // The same file again: the same tasks, nothing new.
    let again = cli(&served, &["run", file, "--json"]);
    assert_code(&again, 0, &served);
    let again = json(&again);
    for task in again["tasks"].as_array().unwrap() {
        assert_eq!(task["created"], false, "{task}");
        assert_eq!(task["id"], id(task["name"].as_str().unwrap()).as_str());
        assert_eq!(task["state"], "completed");
    }
    assert_eq!(task_ids(&served).len(), 3);

    // The table, for people.
    let table = cli(&served, &["run", file]);
    assert_code(&table, 0, &served);
    let text = stdout(&table);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with('c') && l.contains(&id("c")) && l.contains("existing")),
        "{text}"
    );
    eprintln!(
        "run_submits_a_batch_in_dependency_order_once: {:?}",
        started.elapsed()
    );
}

#[test]
fn bad_batch_files_submit_nothing() {
    let started = Instant::now();
    let served = serve(None);
    let refused = |name: &str, body: &str, needles: &[&str]| {
        let file = served.path(name);
        std::fs::write(&file, body).unwrap();
        let out = cli(&served, &["run", file.to_str().unwrap()]);
        assert_code(&out, 2, &served);
        let err = stderr(&out);
        for needle in needles {
            assert!(err.contains(needle), "`{needle}` missing from: {err}");
        }
    };
    refused(
        "cycle.yaml",
        "- {id: a, instructions: one, depends_on: [b]}\n- {id: b, instructions: two, depends_on: [a]}\n- {id: c, instructions: three}\n",
        &["cycle", "`a` → `b` → `a`", "nothing submitted"],
    );
    refused(
        "unknown.yaml",
        "tasks:\n  - {id: a, instructions: one}\n  - {id: b, instructions: two, depends_on: [a, z]}\n",
        &["`b` depends on `z`", "nothing submitted"],
    );
    refused(
        "twice.toml",
        "[[tasks]]\nid = \"a\"\ninstructions = \"one\"\n\n[[tasks]]\nid = \"a\"\ninstructions = \"two\"\n",
        &["`a` is used by more than one task"],
    );
    refused(
        "absent.yaml",
        "- {id: a, instructions: one}\n- {id: b, instructions: two, depends_on: [a, 01ARZ3NDEKTSV4RRFFQ69G5FAV]}\n",
        &["01ARZ3NDEKTSV4RRFFQ69G5FAV", "not on the server"],
    );
    refused(
        "fields.yaml",
        "- {id: a, instructions: one}\n- {id: b, instructions: two, colour: red}\n",
        &["task `b`", "colour", "nothing submitted"],
    );
    refused(
        "timeout.yaml",
        "- {id: a, instructions: one}\n- {id: b, instructions: two, timeout: soon}\n",
        &["task `b`: spec.timeout"],
    );
    assert_eq!(
        task_ids(&served),
        Vec::<String>::new(),
        "nothing was submitted"
    );

    // A good TOML file: dependencies by name become ids; b waits for a.
    let file = served.path("good.toml");
    std::fs::write(
        &file,
        "[[tasks]]\nid = \"b\"\ninstructions = \"two\"\ndepends_on = [\"a\"]\n\n[[tasks]]\nid = \"a\"\ninstructions = \"one\"\ntags = [\"batch\"]\n",
    )
    .unwrap();
    let ran = cli(&served, &["run", file.to_str().unwrap(), "--json"]);
    assert_code(&ran, 0, &served);
    let tasks = json(&ran)["tasks"].as_array().unwrap().clone();
    assert_eq!(tasks[0]["name"], "b");
    assert_eq!(tasks[0]["state"], "pending");
    assert_eq!(tasks[1]["state"], "queued");
    assert_eq!(tasks[0]["depends_on"], serde_json::json!([tasks[1]["id"]]));
    let a_id = tasks[1]["id"].as_str().unwrap().to_string();
    assert!(
        a_id.as_str() < tasks[0]["id"].as_str().unwrap(),
        "a was submitted (and its id chosen) first"
    );

    // Ctrl-C: `logs -f` stops cleanly (0); `submit --wait` says the task
    // keeps running (130).
    let follower = spawn_cli(&served, &["logs", "-f", &a_id]);
    std::thread::sleep(Duration::from_millis(1500));
    let _ = Command::new("kill")
        .args(["-INT", &follower.id().to_string()])
        .status();
    let out = finish(&served, follower, "logs -f", Duration::from_secs(10));
    assert_code(&out, 0, &served);

    let mut waiter = spawn_cli(&served, &["submit", "three", "--wait"]);
    let mut first = String::new();
    BufReader::new(waiter.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("submitted "), "{first}");
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-INT", &waiter.id().to_string()])
        .status();
    let out = finish(&served, waiter, "submit --wait", Duration::from_secs(10));
    assert_code(&out, 130, &served);
    assert!(stderr(&out).contains("keeps running"), "{}", stderr(&out));
    eprintln!("bad_batch_files_submit_nothing: {:?}", started.elapsed());
}

/// `claudomator diff ID`: the task's work against where it started, as git
/// prints it (so it applies with `git apply`), `--stat` a line per file,
/// `--json` the files with their text; a task with no branch (it changed
/// nothing, or the branch was deleted) says so.
#[test]
fn diff_shows_a_tasks_work_and_applies_with_git() {
    if claude_or_skip("diff_shows_a_tasks_work_and_applies_with_git").is_none() {
        return;
    }
    let mock = AnthropicMock::start(Script::write_file("hello.txt", "hi"));
    let served = serve(Some(&mock));
    let waited = cli(
        &served,
        &[
            "submit",
            "Create hello.txt",
            "--agent",
            "claude",
            "--wait",
            "--json",
        ],
    );
    assert_code(&waited, 0, &served);
    let id = json(&waited)["task"]["id"].as_str().unwrap().to_string();

    let diff = cli(&served, &["diff", &id]);
    assert_code(&diff, 0, &served);
    let text = stdout(&diff);
    assert!(
        text.starts_with("diff --git a/hello.txt b/hello.txt\nnew file mode"),
        "{text}"
    );
    assert!(text.contains("\n+hi"), "{text}");
    // Into a pipe it is git's own text: it applies to the project.
    let patch = served.path("task.patch");
    std::fs::write(&patch, &diff.stdout).unwrap();
    let apply = Command::new("git")
        .arg("-C")
        .arg(served.path("shop"))
        .args(["apply", "--check"])
        .arg(&patch)
        .output()
        .unwrap();
    assert!(
        apply.status.success(),
        "git apply: {}",
        String::from_utf8_lossy(&apply.stderr)
    );

    let stat = cli(&served, &["diff", &id, "--stat"]);
    assert_code(&stat, 0, &served);
    let stat = stdout(&stat);
    assert!(
        stat.contains("added") && stat.contains("+1 -0  hello.txt"),
        "{stat}"
    );
    assert!(
        stat.contains(&format!(
            "1 file(s) changed, +1 -0 (claudomator/{id} against "
        )),
        "{stat}"
    );

    let as_json = json(&cli(&served, &["diff", &id, "--json"]));
    assert_eq!(as_json["branch"], format!("claudomator/{id}"));
    assert_eq!(as_json["files"][0]["path"], "hello.txt");
    assert_eq!(as_json["files"][0]["status"], "added");
    assert_eq!(as_json["files"][0]["added"], 1);
    assert_eq!(as_json["truncated"], false);

    // Not a task (3); a task with no branch: refused (4), saying why.
    assert_code(
        &cli(&served, &["diff", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]),
        3,
        &served,
    );
    let deleted = Command::new("git")
        .arg("-C")
        .arg(served.path("shop"))
        .args(["branch", "-q", "-D", &format!("claudomator/{id}")])
        .status()
        .unwrap();
    assert!(deleted.success());
    let gone = cli(&served, &["diff", &id]);
    assert_code(&gone, 4, &served);
    assert!(
        stderr(&gone).contains(&format!("there is no branch claudomator/{id}")),
        "{}",
        stderr(&gone)
    );
}

/// A chain reads naturally: a task that depends on another of its project
/// starts from that task's work (its diff is its own work only), and a
/// dirty project no longer fails a task: it starts from HEAD and its log
/// names what was left out, or from the working tree when asked.
#[test]
fn a_dependent_task_starts_from_its_dependencys_work() {
    if claude_or_skip("a_dependent_task_starts_from_its_dependencys_work").is_none() {
        return;
    }
    // Each run appends the directory's listing to one file.
    let mock = AnthropicMock::start(Script::Bash("ls >> listing.txt".into()));
    let served = serve(Some(&mock));
    std::fs::write(served.path("shop").join("README.md"), "# shop, edited\n").unwrap();
    let submit = |extra: &[&str]| {
        let mut args = vec![
            "submit",
            "List the files",
            "--agent",
            "claude",
            "--wait",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = cli(&served, &args);
        assert_code(&out, 0, &served);
        json(&out)["task"]["id"].as_str().unwrap().to_string()
    };
    let first = submit(&[]);
    let second = submit(&["--depends-on", &first]);

    let files = |id: &str| -> Vec<(String, String)> {
        let out = cli(&served, &["diff", id, "--json"]);
        assert_code(&out, 0, &served);
        json(&out)["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["path"].as_str().unwrap().into(),
                    f["status"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    let listing = |status: &str| vec![("listing.txt".to_string(), status.to_string())];
    assert_eq!(files(&first), listing("added"));
    // The second run found the first one's file (its diff is its own work).
    assert_eq!(files(&second), listing("modified"));

    let log = stdout(&cli(&served, &["logs", &second]));
    assert!(
        log.contains(&format!("the sandbox starts from the work of task {first}")),
        "{log}"
    );
    let log = stdout(&cli(&served, &["logs", &first]));
    assert!(
        log.contains("the project's uncommitted changes in README.md are not in it"),
        "{log}"
    );

    // From the working tree: the edit is in the sandbox.
    let third = submit(&["--start-from", "working_tree"]);
    let log = stdout(&cli(&served, &["logs", &third]));
    assert!(log.contains("the project's working tree"), "{log}");
    assert_code(
        &cli(&served, &["submit", "x", "--start-from", "sideways"]),
        2,
        &served,
    );
}

/// After review: `merge` takes a task's work into the project's checked-out
/// branch only when the checkout is clean, and `prune` removes what ended
/// tasks left while a task under review keeps its branch and sandbox.
#[test]
fn merge_and_prune_clean_up_after_review() {
    if claude_or_skip("merge_and_prune_clean_up_after_review").is_none() {
        return;
    }
    let mock = AnthropicMock::start(Script::write_file("hello.txt", "hi"));
    let served = serve(Some(&mock));
    let shop = served.path("shop");
    let submit = |extra: &[&str]| {
        let mut args = vec![
            "submit",
            "Create hello.txt",
            "--agent",
            "claude",
            "--wait",
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = cli(&served, &args);
        assert_code(&out, 0, &served);
        json(&out)["task"]["id"].as_str().unwrap().to_string()
    };
    let done = submit(&[]);
    let review = submit(&["--review"]);

    // A dirty checkout of the target branch is refused, naming the file.
    std::fs::write(shop.join("README.md"), "# shop, edited\n").unwrap();
    let refused = cli(&served, &["merge", &done]);
    assert_code(&refused, 4, &served);
    assert!(
        stderr(&refused).contains("uncommitted changes in README.md"),
        "{}",
        stderr(&refused)
    );
    assert!(!shop.join("hello.txt").exists());
    std::fs::write(shop.join("README.md"), "# shop\n").unwrap();

    let merged = cli(&served, &["merge", &done]);
    assert_code(&merged, 0, &served);
    assert!(
        stdout(&merged).starts_with(&format!("merged claudomator/{done} into trunk: ")),
        "{}",
        stdout(&merged)
    );
    assert_eq!(
        std::fs::read_to_string(shop.join("hello.txt")).unwrap(),
        "hi"
    );
    let dry = json(&cli(&served, &["prune", "--dry-run", "--json"]));
    let items = dry["items"].as_array().unwrap();
    let item = |task: &str, kind: &str| {
        items
            .iter()
            .find(|i| i["task_id"] == task && i["kind"] == kind)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(item(&done, "branch")["removed"], false);
    assert_eq!(item(&done, "branch")["kept_because"], "");
    assert_eq!(item(&review, "branch")["kept_because"], "the task is ready");
    assert_eq!(
        item(&review, "sandbox")["kept_because"],
        "the task is ready"
    );

    let pruned = cli(&served, &["prune"]);
    assert_code(&pruned, 0, &served);
    assert!(
        stdout(&pruned).contains(&format!("removed       branch claudomator/{done} in shop")),
        "{}",
        stdout(&pruned)
    );
    let branches = Command::new("git")
        .arg("-C")
        .arg(&shop)
        .args(["branch", "--list", "claudomator/*"])
        .output()
        .unwrap();
    let branches = String::from_utf8_lossy(&branches.stdout);
    assert!(!branches.contains(&done), "{branches}");
    assert!(branches.contains(&review), "{branches}");
}

/// An agent no server can run: `serve` warns at start (before it says where
/// it listens), `submit` accepts the task saying so, and `submit
/// --require-agent` refuses it (exit 4, nothing stored).
#[test]
fn an_unavailable_agent_is_warned_at_start_on_submit_and_refused_on_request() {
    if claude_or_skip("an_unavailable_agent_is_warned_at_start_on_submit_and_refused_on_request")
        .is_none()
    {
        return;
    }
    let mock = AnthropicMock::start(Script::write_file("x.txt", "x"));
    let served = serve_with(
        Some(&mock),
        "\n[agents.gemini]\ncommand = \"/nonexistent/gemini\"\n",
    );
    let log = served.log();
    let lines: Vec<&str> = log.lines().collect();
    let warned = lines
        .iter()
        .position(|l| l.contains("WARN") && l.contains("agents unavailable here: gemini"))
        .unwrap_or_else(|| panic!("no start-up warning:\n{log}"));
    let listening = lines
        .iter()
        .position(|l| l.contains("listening on"))
        .unwrap();
    assert!(warned < listening, "{log}");
    assert!(lines[warned].contains("not installed"), "{log}");

    let refused = cli(
        &served,
        &[
            "submit",
            "needs gemini",
            "--agent",
            "gemini",
            "--require-agent",
        ],
    );
    assert_code(&refused, 4, &served);
    assert!(
        stderr(&refused).contains("no live server can run agent gemini now"),
        "{}",
        stderr(&refused)
    );
    let listed = cli(&served, &["list"]);
    assert!(stdout(&listed).contains("no tasks"), "{}", stdout(&listed));

    let accepted = cli(&served, &["submit", "needs gemini", "--agent", "gemini"]);
    assert_code(&accepted, 0, &served);
    assert!(
        stdout(&accepted).starts_with("submitted "),
        "{}",
        stdout(&accepted)
    );
    let warning = stderr(&accepted);
    assert!(
        warning.starts_with("warning: no live server can run agent gemini now")
            && warning.contains("--require-agent"),
        "{warning}"
    );
    let for_claude = cli(&served, &["submit", "fine", "--agent", "claude"]);
    assert_code(&for_claude, 0, &served);
    assert_eq!(stderr(&for_claude), "");
}

#[test]
fn a_submit_with_several_bad_fields_prints_each() {
    let served = serve(None);
    let refused = cli(
        &served,
        &[
            "submit",
            "three things wrong",
            "--timeout",
            "soon",
            "--max-attempts",
            "1000",
            "--tag",
            "a b",
        ],
    );
    assert_code(&refused, 2, &served);
    let err = stderr(&refused);
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines[0].contains("spec.timeout: ")
            && lines[0].ends_with("; and 2 more (spec.tags, spec.max_attempts) (InvalidArgument)"),
        "{err}"
    );
    assert!(lines[1].starts_with("  spec.timeout: "), "{err}");
    assert!(
        lines[2].starts_with("  spec.tags: `a b` is not a tag"),
        "{err}"
    );
    assert!(
        lines[3].starts_with("  spec.max_attempts: is 1000"),
        "{err}"
    );
    assert!(task_ids(&served).is_empty());
}
