//! Agent output is hostile input: a stand-in agent that prints 1 GB with no
//! newline, run by the real server binary, costs the server a bounded
//! amount of memory and its task ends.

mod common;
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use claudomator::proto as pb;
use support::server_process::ServerProcess;

/// The server's peak resident memory (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kib * 1024
}

/// A config whose `claude` is `agent`, with one project `demo`.
fn write_config(dir: &Path, agent: &Path, project: &Path) -> std::path::PathBuf {
    let config = dir.join("claudomator.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = \"{data}\"\n\
             [executor]\npoll_interval = \"200ms\"\n\
             [agents.claude]\ncommand = \"{agent}\"\n\
             [[projects]]\nname = \"demo\"\npath = \"{project}\"\n",
            data = dir.join("data").display(),
            agent = agent.display(),
            project = project.display(),
        ),
    )
    .unwrap();
    config
}

#[tokio::test]
async fn a_gigabyte_line_without_newline_is_cut_and_the_server_stays_small() {
    const GIGABYTE: u64 = 1 << 30;
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("demo");
    common::init_git_repo(&project);
    let agent = dir.path().join("flood-agent");
    std::fs::write(
        &agent,
        format!(
            "#!/bin/sh\n# 1 GiB of 'x' and no newline, then a normal line.\n\
             head -c {GIGABYTE} /dev/zero | tr '\\0' x\necho\necho flood done\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = write_config(dir.path(), &agent, &project);
    let server = ServerProcess::start(&config, dir.path());
    let pid = server.child.id();
    let mut client = server.client().await;
    let before = peak_rss(pid);

    let started = Instant::now();
    let task = common::submit(
        &mut client,
        common::agent_spec(pb::AgentType::Claude, "print a lot"),
    )
    .await;
    let deadline = started + Duration::from_secs(600);
    let ended = loop {
        let task = common::get(&mut client, &task.id).await;
        if common::ENDED.iter().any(|s| *s as i32 == task.state) {
            break task;
        }
        assert!(
            Instant::now() < deadline,
            "the task did not end within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let took = started.elapsed();
    let peak = peak_rss(pid);
    eprintln!(
        "1 GiB line: task {} ended ({}) after {took:?}; server VmHWM {} MiB before, {} MiB after",
        ended.id,
        ended.state_reason,
        before >> 20,
        peak >> 20
    );
    assert!(
        peak < 200 * 1024 * 1024,
        "the server's peak RSS was {} MiB",
        peak >> 20
    );

    // The log holds the line cut at 1 MiB and saying so, and what came after.
    let mut stream = client
        .stream_logs(pb::StreamLogsRequest {
            task_id: task.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut texts = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        let event = event.event.unwrap();
        texts.push(if event.raw.is_empty() {
            event.text
        } else {
            event.raw
        });
    }
    let over = GIGABYTE - claudomator::runners::process::MAX_LINE_BYTES as u64;
    let marker = claudomator::runners::process::cut_marker(over);
    let cut = texts
        .iter()
        .find(|t| t.ends_with(&marker))
        .unwrap_or_else(|| panic!("no line ends with {marker:?}"));
    assert_eq!(
        cut.len(),
        claudomator::runners::process::MAX_LINE_BYTES + marker.len()
    );
    assert!(
        texts.iter().any(|t| t == "flood done"),
        "the line after the flood is missing"
    );
    server.kill9();
}
