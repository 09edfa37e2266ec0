//! The `claudomator` binary as a person runs it: `serve` with no config in a
//! git repository, the client commands against it, their exit codes, config
//! errors, and a clean exit on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_claudomator");

struct Served {
    child: Child,
    addr: String,
    /// What the server writes to stderr after its "listening on" line.
    later: std::sync::mpsc::Receiver<String>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `claudomator serve` in `cwd`, with the user's data directory pointed into
/// `home`; waits for the "listening on" line and reads the port from it.
fn serve(cwd: &Path, home: &Path, args: &[&str]) -> Served {
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .args(args)
        .current_dir(cwd)
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env_remove("CLAUDOMATOR_CONFIG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let (later_tx, later) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut listening = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if listening {
                let _ = later_tx.send(line);
            } else if let Some(rest) = line.split("listening on ").nth(1) {
                listening = true;
                let addr = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                let _ = tx.send(Ok((addr, line)));
            } else if line.contains("error") {
                let _ = tx.send(Err(line));
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok((addr, line))) => {
            assert!(
                line.contains("database="),
                "the start line names the database: {line}"
            );
            Served { child, addr, later }
        }
        Ok(Err(line)) => panic!("serve failed: {line}"),
        Err(_) => panic!("serve did not say where it listens"),
    }
}

fn cli(served: &Served, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--server", &served.addr])
        .env_remove("CLAUDOMATOR_TOKEN")
        .output()
        .expect("run cli")
}

fn json(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("valid JSON on stdout")
}

fn git_repo(root: &Path, name: &str) -> std::path::PathBuf {
    let repo = root.join(name);
    std::fs::create_dir_all(repo.join(".git")).unwrap();
    repo
}

#[test]
fn serve_with_no_config_then_drive_it_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path(), "shop");
    let served = serve(&repo, tmp.path(), &[]);
    assert!(
        tmp.path().join("data/claudomator/claudomator.db").exists(),
        "the default data dir is under the user's data directory"
    );

    // The repository the server started in is the default project.
    let submitted = json(&cli(
        &served,
        &[
            "submit",
            "Add a health endpoint",
            "--tag",
            "api",
            "--priority",
            "high",
            "--base-ref",
            "release/1.2",
            "--json",
        ],
    ));
    assert_eq!(submitted["created"], true);
    assert_eq!(submitted["task"]["base_ref"], "release/1.2");
    assert_eq!(submitted["task"]["project"], "shop");
    assert_eq!(submitted["task"]["state"], "queued");
    assert_eq!(submitted["task"]["priority"], "high");
    let id = submitted["task"]["id"].as_str().unwrap().to_string();

    // A task file (YAML) with flags on top.
    let file = tmp.path().join("task.yaml");
    std::fs::write(
        &file,
        "name: Docs\ninstructions: Write the API docs\nagent:\n  type: claude\n  max_budget_usd: 1.5\ntags: [docs]\nidempotency_key: docs-1\n",
    )
    .unwrap();
    let from_file = json(&cli(
        &served,
        &[
            "submit",
            "--file",
            file.to_str().unwrap(),
            "--timeout",
            "45m",
            "--json",
        ],
    ));
    assert_eq!(from_file["task"]["name"], "Docs");
    assert_eq!(from_file["task"]["agent"]["type"], "claude");
    assert_eq!(from_file["task"]["timeout"], 45 * 60);
    let again = json(&cli(
        &served,
        &["submit", "--file", file.to_str().unwrap(), "--json"],
    ));
    assert_eq!(again["created"], false);
    assert_eq!(again["task"]["id"], from_file["task"]["id"]);

    let listed = json(&cli(&served, &["list", "--tag", "api", "--json"]));
    let tasks = listed["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["id"], id.as_str());

    let table = cli(&served, &["list"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("ID"), "{text}");
    assert!(
        text.contains("Add a health endpoint") && text.contains("Docs"),
        "{text}"
    );

    let cancelled = json(&cli(
        &served,
        &["cancel", &id, "--reason", "changed my mind", "--json"],
    ));
    // One envelope per kind: a changed task is {task}; `get` carries what
    // its table shows; lists are named.
    assert_eq!(cancelled["task"]["state"], "cancelled");
    assert_eq!(cancelled["task"]["state_reason"], "changed my mind");
    let got = json(&cli(&served, &["get", &id, "--json"]));
    assert_eq!(got["task"]["state"], "cancelled");
    assert_eq!(got["executions"], serde_json::json!([]));
    assert_eq!(got["cost_usd"], 0.0);
    assert_eq!(got["branch"], serde_json::Value::Null);
    let executions = json(&cli(&served, &["executions", &id, "--json"]));
    assert_eq!(executions, serde_json::json!({ "executions": [] }));
    let questions = json(&cli(&served, &["questions", "--json"]));
    assert_eq!(questions, serde_json::json!({ "tasks": [] }));

    // Exit codes scripts can trust.
    let code = |args: &[&str]| cli(&served, args).status.code().unwrap();
    assert_eq!(
        code(&["cancel", &id]),
        0,
        "cancelling a cancelled task again is not an error"
    );
    assert_eq!(code(&["get", "01ARZ3NDEKTSV4RRFFQ69G5FAV"]), 3);
    assert_eq!(code(&["submit", ""]), 2);
    assert_eq!(code(&["submit", "x", "--agent", "robot"]), 2);
    assert_eq!(code(&["submit", "x", "--timeout", "soon"]), 2);
    assert_eq!(code(&["submit", "x", "--base-ref", "main..evil"]), 2);
    let unreachable = Command::new(BIN)
        .args(["list", "--server", "127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach the server"));
}

#[test]
fn serve_prints_the_board_url_and_serves_the_board_there() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let served = serve(tmp.path(), &home, &[]);

    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match served.later.recv_timeout(left) {
            Ok(line) if line.contains("web board at") => break line,
            Ok(_) => continue,
            Err(_) => panic!("serve did not print the board's URL"),
        }
    };
    let url = format!("http://{}/", served.addr);
    assert!(line.contains(&url), "{line}");

    // What a browser gets there: the board's page.
    let mut stream = std::net::TcpStream::connect(&served.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        served.addr
    );
    std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("content-type: text/html"), "{answer}");
    assert!(answer.contains("<title>claudomator</title>"), "{answer}");
}

#[test]
fn serve_keeps_serving_and_stops_on_sigterm_when_its_stderr_goes_away() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .current_dir(tmp.path())
        .env("HOME", &home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env_remove("CLAUDOMATOR_CONFIG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "serve exited");
    }
    let addr = line.split("listening on ").nth(1).unwrap();
    let addr = addr.split_whitespace().next().unwrap().to_string();
    drop(stderr); // whoever read the log went away: later lines have nowhere to go
    let mut served = Served {
        child,
        addr,
        later: std::sync::mpsc::channel().1,
    };
    std::thread::sleep(Duration::from_millis(300)); // the lines after `listening on` are written

    let listed = cli(&served, &["list"]);
    assert!(listed.status.success(), "{listed:?}");
    // SAFETY: a signal to the child this test started.
    assert_eq!(
        unsafe { libc::kill(served.child.id() as i32, libc::SIGTERM) },
        0
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn serve_outside_a_git_repository_warns_and_tasks_are_refused_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let cwd = tmp.path().join("not-a-repository");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::create_dir_all(&cwd).unwrap();
    let served = serve(&cwd, &home, &[]);

    let deadline = Instant::now() + Duration::from_secs(10);
    let warning = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match served.later.recv_timeout(left) {
            Ok(line) if line.contains("no project") => break line,
            Ok(_) => continue,
            Err(_) => panic!("serve did not warn that it has no project"),
        }
    };
    assert!(
        warning.contains("WARN") && warning.contains("[[projects]]"),
        "the warning says what to do: {warning}"
    );

    let refused = cli(&served, &["submit", "Fix the build"]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("spec.project: no projects are configured"),
        "the refusal names the field and the fix: {said}"
    );
}

#[test]
fn tokens_from_the_environment_guard_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path(), "api");
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .current_dir(&repo)
        .env("CLAUDOMATOR_TOKENS", "tok-one-123456,tok-two-123456")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let line = stderr
        .lines()
        .map_while(Result::ok)
        .find(|l| l.contains("listening on"))
        .expect("starts");
    let addr = line
        .split("listening on ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let served = Served {
        child,
        addr,
        later: std::sync::mpsc::channel().1,
    };

    let denied = cli(&served, &["list"]);
    assert_eq!(denied.status.code(), Some(5));
    let allowed = Command::new(BIN)
        .args(["list", "--json", "--server", &served.addr])
        .env("CLAUDOMATOR_TOKEN", "tok-two-123456")
        .output()
        .unwrap();
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
}

#[test]
fn config_mistakes_stop_the_server_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path(), "app");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .arg("serve")
            .args(args)
            .current_dir(&repo)
            .env("HOME", tmp.path())
            .env("XDG_DATA_HOME", tmp.path().join("data"))
            .env_remove("CLAUDOMATOR_TOKENS")
            .output()
            .unwrap()
    };

    let config = tmp.path().join("bad.toml");
    std::fs::write(&config, "listen = \"127.0.0.1:0\"\nmax_paralel = 3\n").unwrap();
    let out = run(&["--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_paralel"),
        "the unknown key is named: {err}"
    );

    let out = run(&["--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("without auth tokens"), "{err}");

    // A second server on one host: the taken port is named, and the flag
    // that moves it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let out = run(&["--listen", "127.0.0.1:0", "--http-listen", &port]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {port}")) && err.contains("--http-listen"),
        "{err}"
    );

    // `init` writes a config that `serve` then accepts as it is.
    let written = tmp.path().join("claudomator.toml");
    // Its data dir is the (private) user data dir of this test.
    let init = Command::new(BIN)
        .args(["init", written.to_str().unwrap()])
        .current_dir(&repo)
        .env("HOME", tmp.path())
        .env("XDG_DATA_HOME", tmp.path().join("data"))
        .output()
        .unwrap();
    assert!(init.status.success());
    let text = std::fs::read_to_string(&written).unwrap();
    assert!(
        text.contains("[[projects]]") && text.contains("name = \"app\""),
        "{text}"
    );
    let again = Command::new(BIN)
        .args(["init", written.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2), "init does not overwrite");
    let served = serve(&repo, tmp.path(), &["--config", written.to_str().unwrap()]);
    drop(served);
}

#[test]
fn a_reader_that_goes_away_ends_the_cli_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path(), "shop");
    let served = serve(&repo, tmp.path(), &[]);
    for i in 0..60 {
        json(&cli(&served, &["submit", &format!("task {i}"), "--json"]));
    }
    // `claudomator list | head -1`, with the reader gone before the
    // first line is written: every time, not one run in four.
    for args in [&["list"][..], &["list", "--json"], &["questions"]] {
        let mut child = Command::new(BIN)
            .args(args)
            .args(["--server", &served.addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code() != Some(101) && !stderr.contains("panicked"),
            "{args:?}: {:?} {stderr}",
            out.status
        );
        assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused_naming_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path(), "shop");
    let first = serve(&repo, tmp.path(), &[]);
    let second = Command::new(BIN)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
        .current_dir(&repo)
        .env("HOME", tmp.path())
        .env("XDG_DATA_HOME", tmp.path().join("data"))
        .env_remove("CLAUDOMATOR_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("in use by another claudomator server")
            && stderr.contains(&format!("pid {}", first.child.id())),
        "{stderr}"
    );
    // The first one still serves.
    json(&cli(&first, &["list", "--json"]));
    // Killed with no chance to clean up, it leaves no stale lock.
    drop(first);
    let again = serve(&repo, tmp.path(), &[]);
    json(&cli(&again, &["list", "--json"]));
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path(), "svc");
    let mut served = serve(&repo, tmp.path(), &[]);
    let pid = served.child.id().to_string();
    let kill = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = served.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `watch --json` prints each change as one JSON line with its cursor, and
/// `--cursor` resumes right after it; the human form says old -> new.
#[test]
fn watch_prints_each_change_and_resumes_from_a_cursor() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path(), "shop");
    let served = serve(&repo, tmp.path(), &[]);
    let watch = |args: &[&str]| {
        Command::new(BIN)
            .arg("watch")
            .args(args)
            .args(["--server", &served.addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn watch")
    };
    let read_lines = |child: &mut Child, n: usize| {
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let lines: Vec<String> = (0..n)
            .map(|_| rx.recv_timeout(Duration::from_secs(30)).expect("a line"))
            .collect();
        let _ = child.kill();
        let _ = child.wait();
        lines
    };
    let mut json_watch = watch(&["--json"]);
    let mut human_watch = watch(&[]);
    // Both watches are open before the task exists.
    std::thread::sleep(Duration::from_millis(500));
    let submitted = json(&cli(
        &served,
        &["submit", "Add a health endpoint", "--json"],
    ));
    let id = submitted["task"]["id"].as_str().unwrap().to_string();
    // It changes again either way: cancelled, or failed already (no agent
    // CLI here).
    cli(&served, &["cancel", &id]);

    let lines = read_lines(&mut json_watch, 2);
    let first: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let second: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(first["task"]["id"], id.as_str());
    assert_eq!(first["from"], serde_json::Value::Null);
    assert_eq!(first["to"], "queued");
    assert_eq!(second["from"], "queued");
    let cursor = first["cursor"].as_str().unwrap().to_string();
    let number = |v: &serde_json::Value| v["cursor"].as_str().unwrap().parse::<u64>().unwrap();
    assert!(number(&second) > number(&first));

    let human = read_lines(&mut human_watch, 1);
    assert!(
        human[0].contains(&id) && human[0].contains("NEW -> QUEUED"),
        "{}",
        human[0]
    );

    let mut resumed = watch(&["--json", "--cursor", &cursor]);
    let again = read_lines(&mut resumed, 1);
    let again: serde_json::Value = serde_json::from_str(&again[0]).unwrap();
    // The same change (its task is read as it is now, so it may be newer).
    for field in ["cursor", "at", "from", "to", "reason"] {
        assert_eq!(
            again[field], second[field],
            "resumes right after the cursor"
        );
    }
    assert_eq!(again["task"]["id"], second["task"]["id"]);
}

/// `init` writes into the user's config dir, never into the repository
/// (a file named inside one is excluded from git), `serve` finds it there,
/// secrets can stay in the environment, and one repository is one project.
#[test]
fn init_keeps_the_config_out_of_the_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("app");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(&repo)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    git(&["init", "-q", "-b", "trunk"]);
    let claudomator = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .current_dir(&repo)
            .env("HOME", tmp.path())
            .env_remove("XDG_CONFIG_HOME")
            .env("XDG_DATA_HOME", tmp.path().join("data"))
            .env_remove("CLAUDOMATOR_TOKENS")
            .output()
            .unwrap()
    };

    let init = claudomator(&["init"]);
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let written = tmp.path().join(".config/claudomator/claudomator.toml");
    assert!(
        String::from_utf8_lossy(&init.stdout).contains(&format!("wrote {}", written.display())),
        "{}",
        String::from_utf8_lossy(&init.stdout)
    );
    assert!(!repo.join("claudomator.toml").exists());
    assert_eq!(git(&["status", "--porcelain"]), "");
    // `serve` in the repository reads it: rename the project to see it.
    let text = std::fs::read_to_string(&written).unwrap();
    assert!(
        text.contains("tokens_env"),
        "secrets can live in the environment: {text}"
    );
    std::fs::write(&written, text.replace("name = \"app\"", "name = \"shop\"")).unwrap();
    let served = serve(&repo, tmp.path(), &[]);
    let submitted = cli(&served, &["submit", "x", "--project", "shop", "--json"]);
    assert_eq!(json(&submitted)["task"]["project"], "shop");
    drop(served);

    // Named inside the repository: excluded from git.
    let local = claudomator(&["init", "claudomator.toml"]);
    assert!(local.status.success());
    assert!(String::from_utf8_lossy(&local.stdout).contains(".git/info/exclude"));
    assert_eq!(git(&["status", "--porcelain"]), "");

    // Two projects on one repository: refused, naming the first.
    let path = repo.display().to_string();
    std::fs::write(
        repo.join("claudomator.toml"),
        format!(
            "[[projects]]\nname = \"a\"\npath = \"{path}\"\n\n[[projects]]\nname = \"b\"\npath = \"{path}/.\"\n"
        ),
    )
    .unwrap();
    let twice = claudomator(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(twice.status.code(), Some(2));
    let err = String::from_utf8_lossy(&twice.stderr);
    assert!(
        err.contains("projects[1].path") && err.contains("is already project `a`"),
        "{err}"
    );

    // A token variable that is not set is named.
    std::fs::write(
        repo.join("claudomator.toml"),
        "[auth]\ntokens_env = \"APP_TOKENS\"\n",
    )
    .unwrap();
    let unset = claudomator(&["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(unset.status.code(), Some(2));
    let err = String::from_utf8_lossy(&unset.stderr);
    assert!(
        err.contains("auth.tokens_env: the environment variable `APP_TOKENS` is not set"),
        "{err}"
    );
}
