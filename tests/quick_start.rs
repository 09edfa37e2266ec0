//! The README's quick start, followed literally: its shell blocks (found by
//! their `<!-- quick-start: NAME -->` markers) run in order with bash, on
//! a fresh home, the real binary on PATH and the real `claude` CLI against
//! the scripted Anthropic server; the one manual step, editing the config,
//! is done as the README says (claude's endpoint in `[agents.claude] env`).

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use support::anthropic_mock::{AnthropicMock, Script};
use support::claude_env::{ClaudeEnv, claude_bin_path, claude_or_skip};

const BIN: &str = env!("CARGO_BIN_EXE_claudomator");

/// The shell block after `<!-- quick-start: name -->` in the README.
fn block(name: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let marker = format!("<!-- quick-start: {name} -->");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("the README has no {marker}"))
        .1;
    let code = after.split_once("```sh\n").expect("a sh block").1;
    code.split_once("```")
        .expect("the block ends")
        .0
        .to_string()
}

/// A port free on loopback now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh machine: an empty home, the binary and the agent CLI on PATH,
/// the server's addresses chosen free, nothing of the test's environment.
struct Machine {
    dir: tempfile::TempDir,
    grpc: u16,
    http: u16,
}

impl Machine {
    fn new() -> Machine {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home")).unwrap();
        Machine {
            dir,
            grpc: free_port(),
            http: free_port(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn bash(&self, script: &str, cwd: &Path) -> Command {
        let bin_dir = Path::new(BIN).parent().unwrap();
        let agents = claude_bin_path().parent().unwrap().to_path_buf();
        let path = format!(
            "{}:{}:/usr/local/bin:/usr/bin:/bin",
            bin_dir.display(),
            agents.display()
        );
        let mut command = Command::new("bash");
        command
            .args(["-e", "-c", script])
            .current_dir(cwd)
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.path("home"))
            .env("CLAUDOMATOR_LISTEN", format!("127.0.0.1:{}", self.grpc))
            .env(
                "CLAUDOMATOR_HTTP_LISTEN",
                format!("127.0.0.1:{}", self.http),
            )
            .env(
                "CLAUDOMATOR_SERVER",
                format!("http://127.0.0.1:{}", self.grpc),
            )
            .env("NO_COLOR", "1");
        command
    }

    fn run(&self, script: &str, cwd: &Path) -> Output {
        let out = self.bash(script, cwd).output().unwrap();
        assert!(
            out.status.success(),
            "{script}\nexited {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// The server the `serve` block started; stopped like Ctrl-C would.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        std::thread::sleep(Duration::from_millis(300));
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
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
}

#[test]
fn the_readme_quick_start_works_as_written() {
    if claude_or_skip("the_readme_quick_start_works_as_written").is_none() {
        return;
    }
    let mock = AnthropicMock::start(Script::write_file("CONTRIBUTING.md", "Run `cargo test`.\n"));
    let machine = Machine::new();
    let project = machine.path("your-project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(project.join("README.md"), "# your project\n").unwrap();
    git(&project, &["init", "-q", "-b", "main"]);
    git(&project, &["add", "README.md"]);
    git(
        &project,
        &[
            "-c",
            "user.name=you",
            "-c",
            "user.email=you@example.com",
            "commit",
            "-qm",
            "first",
        ],
    );

    // Setup: `cd your-project` and `init`, from the directory above it.
    let setup = machine.run(&block("setup"), machine.dir.path());
    let config = machine.path("home/.config/claudomator/claudomator.toml");
    let said = String::from_utf8_lossy(&setup.stdout);
    assert!(
        said.contains(&format!("wrote {}", config.display())),
        "{said}"
    );
    assert_eq!(git(&project, &["status", "--porcelain"]), "");

    // The edit: claude's endpoint (here the scripted model) in its env.
    let claude = ClaudeEnv::new(mock.base_url(), machine.path("claude-home"));
    std::fs::create_dir_all(claude.config_dir()).unwrap();
    std::fs::create_dir_all(claude.tmp_dir()).unwrap();
    let env: Vec<String> = claude
        .vars()
        .into_iter()
        .map(|(k, v)| format!("{k} = {:?}", v.to_string_lossy()))
        .collect();
    let text = std::fs::read_to_string(&config).unwrap();
    let (before, after) = text.split_once("[agents.claude]").unwrap();
    let after = after.replacen("env = {}", &format!("env = {{ {} }}", env.join(", ")), 1);
    std::fs::write(&config, format!("{before}[agents.claude]{after}")).unwrap();

    // Serve, in its own terminal.
    let mut child = machine
        .bash(&block("serve"), &project)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let server = Server(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("serve did not start:\n{}", seen.join("\n")));
        let listening = line.contains("listening on");
        seen.push(line);
        if listening {
            break;
        }
    }

    // Use, in another terminal.
    let used = machine.run(&block("use"), &project);
    let out = String::from_utf8_lossy(&used.stdout);
    assert!(out.contains("claude"), "doctor names the agent: {out}");
    assert!(
        out.contains("result"),
        "logs -f followed the run to its result: {out}"
    );
    assert!(out.contains("+1 -0  CONTRIBUTING.md"), "diff --stat: {out}");
    assert!(out.contains("merged claudomator/"), "merge: {out}");
    assert_eq!(
        std::fs::read_to_string(project.join("CONTRIBUTING.md")).unwrap(),
        "Run `cargo test`.\n"
    );
    assert_eq!(git(&project, &["status", "--porcelain"]), "");
    drop(server);
}
