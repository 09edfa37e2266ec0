//! The real server binary as a child process, started from a config file
//! and killed like a real deployment (SIGKILL), for the crash and cluster
//! tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use claudomator::proto::claudomator_service_client::ClaudomatorServiceClient;
use tonic::transport::Channel;

use super::anthropic_mock::AnthropicMock;
use super::claude_env::{ClaudeEnv, claude_bin_path};

const BIN: &str = env!("CARGO_BIN_EXE_claudomator");

/// The server binary, started and killed like a real deployment.
pub struct ServerProcess {
    pub child: Child,
    pub addr: String,
}

impl ServerProcess {
    pub fn start(config: &Path, cwd: &Path) -> ServerProcess {
        let mut child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(config)
            .current_dir(cwd)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn serve");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the server says where it listens");
        ServerProcess { child, addr }
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    pub async fn client(&self) -> ClaudomatorServiceClient<Channel> {
        ClaudomatorServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a server config for a `claude` agent that talks to `mock`, with
/// its data in `dir/data`, one project `demo` at `project`, and the
/// `[executor]` and `[agents.claude]` settings given added to (or
/// replacing) the defaults here. Returns the file's path.
pub fn write_claude_config(
    dir: &Path,
    mock: &AnthropicMock,
    project: &Path,
    database_url: &str,
    executor_settings: &[(&str, toml::Value)],
    claude_settings: &[(&str, toml::Value)],
) -> PathBuf {
    let mut env = ClaudeEnv::new(mock.base_url(), dir.join("claude-home"));
    env.max_retries = 1;
    std::fs::create_dir_all(env.config_dir()).unwrap();
    std::fs::create_dir_all(env.tmp_dir()).unwrap();
    let mut table = toml::Table::new();
    table.insert("listen".into(), "127.0.0.1:0".into());
    table.insert("http_listen".into(), "127.0.0.1:0".into());
    table.insert(
        "data_dir".into(),
        dir.join("data").display().to_string().into(),
    );
    table.insert("database_url".into(), database_url.into());
    let mut executor = toml::Table::new();
    executor.insert("max_concurrent".into(), 3.into());
    executor.insert("poll_interval".into(), "200ms".into());
    executor.insert("retry_base".into(), "1s".into());
    for (key, value) in executor_settings {
        executor.insert(key.to_string(), value.clone());
    }
    table.insert("executor".into(), executor.into());
    let mut defaults = toml::Table::new();
    defaults.insert("max_attempts".into(), 10.into());
    table.insert("defaults".into(), defaults.into());
    let mut claude = toml::Table::new();
    claude.insert(
        "command".into(),
        claude_bin_path().display().to_string().into(),
    );
    claude.insert("model".into(), "claude-sonnet-4-5".into());
    for (key, value) in claude_settings {
        claude.insert(key.to_string(), value.clone());
    }
    let vars: toml::Table = env
        .vars()
        .into_iter()
        .map(|(k, v)| (k, toml::Value::from(v.to_string_lossy().into_owned())))
        .collect();
    claude.insert("env".into(), vars.into());
    let mut agents = toml::Table::new();
    agents.insert("claude".into(), claude.into());
    table.insert("agents".into(), agents.into());
    let mut project_entry = toml::Table::new();
    project_entry.insert("name".into(), "demo".into());
    project_entry.insert("path".into(), project.display().to_string().into());
    table.insert(
        "projects".into(),
        toml::Value::Array(vec![project_entry.into()]),
    );
    let path = dir.join("claudomator.toml");
    std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
    path
}
