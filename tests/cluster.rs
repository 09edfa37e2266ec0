//! Several servers on one PostgreSQL database: they split the queue, no
//! task runs twice at once, each keeps its own concurrency limit, and when
//! one dies (SIGKILL) the others recover its tasks once its leases run out;
//! an agent's cluster-wide cap holds over all of them; and any server serves
//! the log of an execution another one runs, live.
//! The servers are the real binary; the agent is the real `claude` CLI
//! against a scripted model server.

mod common;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use claudomator::proto as pb;
use common::processes_in;
use support::anthropic_mock::{AnthropicMock, Script};
use support::chat_mock::{ChatMock, Reply};
use support::claude_env::{claude_or_skip, configure_claude};
use support::server_process::{ServerProcess, write_claude_config};

const SERVERS: [&str; 3] = ["a", "b", "c"];
const PER_SERVER: i64 = 2;
/// Below 3 × PER_SERVER, so the cluster-wide cap is what binds; above
/// 2 × PER_SERVER, so while tasks wait one slot is always c's. (With 3, a
/// and b could hold every slot: a server that ends an attempt claims the
/// next task at once, before c's next poll, and CI once saw c run nothing
/// for a minute.)
const CLUSTER_LIMIT: i64 = 5;
const TASKS: usize = 36;

fn claude_task(i: usize) -> pb::SubmitTaskRequest {
    pb::SubmitTaskRequest {
        spec: Some(pb::TaskSpec {
            instructions: format!("narrate part {i}"),
            project: "demo".into(),
            agent: Some(pb::AgentSettings {
                r#type: pb::AgentType::Claude as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        idempotency_key: format!("cluster-{i}"),
        ..Default::default()
    }
}

fn millis(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref()
        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// The most attempts that overlapped in time among `intervals`.
fn max_overlap(intervals: &[(i64, i64)]) -> i64 {
    let mut edges: Vec<(i64, i64)> = intervals
        .iter()
        .flat_map(|(start, end)| [(*start, 1), (*end, -1)])
        .collect();
    // An attempt that ends at the instant another starts does not overlap it.
    edges.sort();
    let (mut now, mut most) = (0, 0);
    for (_, step) in edges {
        now += step;
        most = most.max(now);
    }
    most
}

/// Kills whatever the dead server left running in its sandboxes, as the
/// death of its machine would.
fn kill_processes_in(dir: &Path) -> usize {
    let pids: Vec<i32> = processes_in(dir)
        .iter()
        .filter_map(|p| p.split(':').next()?.parse().ok())
        .collect();
    for pid in &pids {
        // SAFETY: kill only sends a signal.
        unsafe {
            libc::kill(*pid, libc::SIGKILL);
        }
    }
    pids.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_servers_share_the_queue_and_recover_a_dead_ones_tasks() {
    if claude_or_skip("three_servers_share_the_queue_and_recover_a_dead_ones_tasks").is_none() {
        return;
    }
    let database_url = common::postgres_database().await;
    // Each run streams for about a second, so a kill lands mid-run.
    let mock = AnthropicMock::start(Script::Slow {
        delay_per_event: Duration::from_millis(50),
        chunks: 20,
    });
    let dir = tempfile::tempdir().unwrap();
    let mut servers = HashMap::new();
    let mut sandboxes = HashMap::new();
    for name in SERVERS {
        let home = dir.path().join(name);
        let project = home.join("demo");
        common::init_git_repo(&project);
        let config = write_claude_config(
            &home,
            &mock,
            &project,
            &database_url,
            &[
                ("server_id", name.into()),
                ("max_concurrent", PER_SERVER.into()),
                ("lease", "2s".into()),
                ("poll_interval", "100ms".into()),
            ],
            &[("cluster_max_concurrent", CLUSTER_LIMIT.into())],
        );
        sandboxes.insert(name, home.join("data").join("sandboxes"));
        servers.insert(name, ServerProcess::start(&config, &project));
    }

    // Tasks go in through all three servers.
    let mut ids = Vec::new();
    for i in 0..TASKS {
        let mut client = servers[SERVERS[i % 3]].client().await;
        let task = client
            .submit_task(claude_task(i))
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        ids.push(task.id);
    }

    // A late subscriber on b follows an execution running on a: it gets
    // the history from the store, then the rest as a writes it.
    let mut client = servers["a"].client().await;
    let running_on_a = loop {
        let running = client
            .list_tasks(pb::ListTasksRequest {
                states: vec![pb::TaskState::Running as i32],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .tasks;
        let mut found = None;
        for task in running {
            let runs = common::executions(&mut client, &task.id).await;
            found = runs
                .into_iter()
                .find(|e| e.server_id == "a" && e.state() == pb::ExecutionState::Running);
            if found.is_some() {
                break;
            }
        }
        if let Some(execution) = found {
            break execution.id;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let follower = {
        let mut on_b = servers["b"].client().await;
        let id = running_on_a.clone();
        tokio::spawn(async move { stream_all(&mut on_b, &id, true).await })
    };

    // Kill server c once it is running agents.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "server c never ran a task");
        if !processes_in(&sandboxes["c"]).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    servers.remove("c").unwrap().kill9();
    // Twice: an agent may have been between fork and exec at the first look.
    let mut orphans = kill_processes_in(&sandboxes["c"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    orphans += kill_processes_in(&sandboxes["c"]);

    // Everything completes on a and b, through either of them.
    let deadline = Instant::now() + Duration::from_secs(240);
    let tasks = loop {
        let tasks = common::all_tasks(&mut client).await;
        let done = tasks
            .iter()
            .filter(|t| t.state() == pb::TaskState::Completed)
            .count();
        if done == TASKS {
            break tasks;
        }
        if Instant::now() > deadline {
            let left: Vec<String> = tasks
                .iter()
                .filter(|t| t.state() != pb::TaskState::Completed)
                .map(|t| format!("{} {:?} {}", t.id, t.state(), t.state_reason))
                .collect();
            panic!("{done} of {TASKS} tasks completed; left: {left:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(tasks.len(), TASKS, "every acknowledged task is there");

    let mut per_server: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    let mut all_spans = Vec::new();
    let mut interrupted_on_c = 0;
    let mut other = servers["b"].client().await;
    for id in &ids {
        let runs = common::executions(&mut other, id).await;
        let succeeded: Vec<_> = runs
            .iter()
            .filter(|e| e.state() == pb::ExecutionState::Succeeded)
            .collect();
        assert_eq!(
            succeeded.len(),
            1,
            "task {id} succeeded exactly once: {runs:#?}"
        );
        // No task ever ran on two servers at once.
        let spans: Vec<(i64, i64)> = runs
            .iter()
            .map(|e| (millis(&e.started_at), millis(&e.ended_at)))
            .collect();
        assert_eq!(
            max_overlap(&spans),
            1,
            "task {id} ran twice at once: {runs:#?}"
        );
        for run in &runs {
            assert!(
                SERVERS.contains(&run.server_id.as_str()),
                "the record names the server: {run:?}"
            );
            if run.state() == pb::ExecutionState::Interrupted {
                assert_eq!(run.server_id, "c", "only the killed server's runs were cut");
                assert!(run.error.contains("server c"), "{}", run.error);
                interrupted_on_c += 1;
            }
            all_spans.push((millis(&run.started_at), millis(&run.ended_at)));
            per_server
                .entry(run.server_id.clone())
                .or_default()
                .push((millis(&run.started_at), millis(&run.ended_at)));
        }
    }
    let counts: BTreeMap<&String, usize> = per_server.iter().map(|(s, v)| (s, v.len())).collect();
    println!(
        "cluster tally: tasks {TASKS}, executions per server {counts:?}, interrupted on c {interrupted_on_c}, \
         orphans of c killed {orphans}, most requests in flight at the model {}",
        mock.max_in_flight()
    );
    for name in SERVERS {
        let spans = per_server.get(name).cloned().unwrap_or_default();
        assert!(!spans.is_empty(), "server {name} took part: {counts:?}");
        assert!(
            max_overlap(&spans) <= PER_SERVER,
            "server {name} kept its limit of {PER_SERVER}"
        );
    }
    assert!(interrupted_on_c >= 1, "server c was killed mid-run");
    // The cluster-wide cap held at every moment: in the records (a run cut
    // by the kill holds its slot until its lease runs out and it is
    // recovered) and at the model server.
    assert!(
        max_overlap(&all_spans) <= CLUSTER_LIMIT,
        "at most {CLUSTER_LIMIT} claude runs at once over the cluster, saw {}",
        max_overlap(&all_spans)
    );
    assert!(mock.max_in_flight() <= CLUSTER_LIMIT as usize);

    // The log through b, followed live and read afterwards, is a's log.
    let on_a = stream_all(&mut client, &running_on_a, false).await;
    let followed = follower.await.unwrap();
    let mut on_b = servers["b"].client().await;
    let read_later = stream_all(&mut on_b, &running_on_a, false).await;
    assert!(on_a.len() > 3, "the execution logged its run: {on_a:?}");
    assert_eq!(followed, on_a, "b's live follower saw a's log");
    assert_eq!(read_later, on_a, "b serves a's finished log");
}

/// An execution's events as (offset, kind, text, payload).
async fn stream_all(
    client: &mut common::Client,
    execution_id: &str,
    follow: bool,
) -> Vec<(u64, i32, String, String)> {
    let mut stream = client
        .stream_logs(pb::StreamLogsRequest {
            execution_id: execution_id.into(),
            follow,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = Vec::new();
    while let Some(response) = stream.message().await.unwrap() {
        let event = response.event.unwrap();
        events.push((event.offset, event.kind, event.text, event.payload_json));
    }
    events
}

/// A few hundred `local` tasks over three in-process servers on one
/// database: each runs exactly once, every server keeps its limit at every
/// moment as the model server saw it, and all complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_hundred_tasks_run_exactly_once_over_three_servers() {
    const MANY: usize = 240;
    const SLOTS: usize = 3;
    let database_url = common::postgres_database().await;
    let mock = ChatMock::always(Reply::Slow {
        text: "done.\n\n## Summary\nDone.".into(),
        delay: Duration::from_millis(30),
    });
    let mut servers = Vec::new();
    for name in SERVERS {
        let database_url = database_url.clone();
        let endpoint = mock.endpoint();
        servers.push(
            common::start_server_with(move |c| {
                c.database_url = database_url;
                c.executor.enabled = true;
                c.executor.server_id = name.into();
                c.executor.max_concurrent = SLOTS;
                c.executor.poll_interval = "100ms".into();
                c.local_model.endpoint = endpoint;
                // The model server tells the servers apart by this.
                c.local_model.model = format!("model-of-{name}");
                c.local_model.max_concurrent = SLOTS;
                c.local_model.max_tokens = 32;
            })
            .await,
        );
    }
    let mut clients = Vec::new();
    for server in &servers {
        clients.push(server.client().await);
    }
    let mut ids = Vec::new();
    for i in 0..MANY {
        let spec = common::agent_spec(pb::AgentType::Local, &format!("say part {i}"));
        ids.push(common::submit(&mut clients[i % 3], spec).await.id);
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let tasks = common::all_tasks(&mut clients[0]).await;
        let done = tasks
            .iter()
            .filter(|t| t.state() == pb::TaskState::Completed)
            .count();
        if done == MANY {
            break;
        }
        let stuck: Vec<_> = tasks
            .iter()
            .filter(|t| matches!(t.state(), pb::TaskState::Failed | pb::TaskState::Cancelled))
            .map(|t| format!("{} {}", t.id, t.state_reason))
            .collect();
        assert!(stuck.is_empty(), "tasks ended badly: {stuck:?}");
        assert!(
            Instant::now() < deadline,
            "{done} of {MANY} completed in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut runs_per_server: BTreeMap<String, usize> = BTreeMap::new();
    for id in &ids {
        let runs = common::executions(&mut clients[1], id).await;
        assert_eq!(runs.len(), 1, "task {id} ran exactly once: {runs:#?}");
        assert_eq!(runs[0].state(), pb::ExecutionState::Succeeded);
        *runs_per_server
            .entry(runs[0].server_id.clone())
            .or_default() += 1;
    }
    let at_model = mock.max_in_flight_by_model();
    println!(
        "many tasks: runs per server {runs_per_server:?}, most answers at once per server {at_model:?}"
    );
    for name in SERVERS {
        assert!(
            runs_per_server.get(name).copied().unwrap_or(0) > 0,
            "{name} took part"
        );
        let most = at_model
            .get(&format!("model-of-{name}"))
            .copied()
            .unwrap_or(0);
        assert!(
            (1..=SLOTS).contains(&most),
            "server {name} kept its limit of {SLOTS} at the model: {at_model:?}"
        );
    }
}

/// A question answered through another server resumes the agent session on
/// the server that has it (its sandbox and agent home are there), though
/// the answering server is the first to hear of the answer; and work
/// accepted through another server has its sandbox removed where it lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_through_any_server_resumes_the_session_where_it_lives() {
    if claude_or_skip("an_answer_through_any_server_resumes_the_session_where_it_lives").is_none() {
        return;
    }
    let database_url = common::postgres_database().await;
    let mock = AnthropicMock::start(Script::write_file(
        ".claudomator/question.json",
        r#"{"question": "Which database?", "choices": ["sqlite", "redis"]}"#,
    ));
    let homes = tempfile::tempdir().unwrap();
    let a = claude_server(&mock, &homes.path().join("a"), &database_url, "a").await;
    let b = claude_server(&mock, &homes.path().join("b"), &database_url, "b").await;
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;
    for round in 0..2 {
        let task = common::submit(
            &mut on_a,
            pb::TaskSpec {
                review_required: true,
                ..common::agent_spec(pb::AgentType::Claude, "add a cache; ask which database")
            },
        )
        .await;
        common::wait_for(&mut on_a, &task.id, &[pb::TaskState::Blocked]).await;
        let asked = common::executions(&mut on_a, &task.id).await;
        let asked = asked.last().unwrap();
        assert!(!asked.session_id.is_empty(), "{asked:?}");
        // Answered, then accepted, through the server that did not run it.
        let (answering, ran_it) = if asked.server_id == "a" {
            (&mut on_b, &a)
        } else {
            (&mut on_a, &b)
        };
        answering
            .answer_question(pb::AnswerQuestionRequest {
                task_id: task.id.clone(),
                answer: "sqlite".into(),
            })
            .await
            .unwrap();
        let done = common::wait_for(
            answering,
            &task.id,
            // Blocked again: a fresh session asked the question again.
            &[
                pb::TaskState::Ready,
                pb::TaskState::Failed,
                pb::TaskState::Blocked,
            ],
        )
        .await;
        let runs = common::executions(answering, &task.id).await;
        assert_eq!(
            done.state,
            pb::TaskState::Ready as i32,
            "round {round}: {}; {runs:#?}",
            done.state_reason
        );
        assert_eq!(runs.len(), 2, "{runs:#?}");
        assert_eq!(
            (runs[1].server_id.as_str(), runs[1].session_id.as_str()),
            (asked.server_id.as_str(), asked.session_id.as_str()),
            "round {round}: the answer went on in the same session on the same server"
        );

        let sandbox = ran_it.data_dir().join("sandboxes").join(&task.id);
        assert!(sandbox.is_dir(), "kept for review: {}", sandbox.display());
        answering
            .accept_task(pb::AcceptTaskRequest {
                task_id: task.id.clone(),
            })
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while sandbox.exists() {
            assert!(
                Instant::now() < deadline,
                "round {round}: the accepted task's sandbox is still there: {}",
                sandbox.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// An in-process server on `database_url` whose `claude` talks to `mock`.
async fn claude_server(
    mock: &AnthropicMock,
    home: &Path,
    database_url: &str,
    name: &str,
) -> common::TestServer {
    claude_server_with(mock, home, database_url, name, |_| {}).await
}

/// [`claude_server`] with `adjust` applied to its config; its gemini and
/// codex CLIs are missing.
async fn claude_server_with(
    mock: &AnthropicMock,
    home: &Path,
    database_url: &str,
    name: &str,
    adjust: impl FnOnce(&mut claudomator::config::Config),
) -> common::TestServer {
    common::start_server_with(|c| {
        configure_claude(c, &mock.base_url(), home, 1);
        c.agents.gemini.command = "/nonexistent/gemini".into();
        c.agents.codex.command = "/nonexistent/codex".into();
        c.database_url = database_url.to_string();
        c.executor.enabled = true;
        c.executor.server_id = name.to_string();
        c.executor.poll_interval = "100ms".into();
        c.executor.lease = "2s".into();
        c.executor.usage_limit_cooldown = "1h".into();
        adjust(c);
    })
    .await
}

/// A server without an agent leaves that agent's tasks to a server that
/// has it, whichever server they were submitted to; a task no live server
/// can run still fails at once, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_for_an_agent_one_server_lacks_run_on_the_server_that_has_it() {
    if claude_or_skip("tasks_for_an_agent_one_server_lacks_run_on_the_server_that_has_it").is_none()
    {
        return;
    }
    let database_url = common::postgres_database().await;
    let mock = AnthropicMock::start(Script::write_file("hello.txt", "hi"));
    let homes = tempfile::tempdir().unwrap();
    let _a = claude_server(&mock, &homes.path().join("a"), &database_url, "a").await;
    let b = claude_server_with(&mock, &homes.path().join("b"), &database_url, "b", |c| {
        c.agents.claude.command = "/nonexistent/claude".into();
    })
    .await;
    let mut on_b = b.client().await;
    // Either server's status shows both and what each runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let cluster = on_b
            .get_system_status(pb::GetSystemStatusRequest {})
            .await
            .unwrap()
            .into_inner()
            .cluster
            .unwrap();
        if cluster.detail.contains("2 server(s)") {
            assert!(cluster.ok);
            assert!(
                cluster.detail.starts_with("this server is b;")
                    && cluster.detail.contains("a (claude)")
                    && cluster.detail.contains("b ()"),
                "{}",
                cluster.detail
            );
            break;
        }
        assert!(Instant::now() < deadline, "{}", cluster.detail);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ids = Vec::new();
    for i in 0..4 {
        let spec = common::agent_spec(pb::AgentType::Claude, &format!("write hello {i}"));
        ids.push(common::submit(&mut on_b, spec).await.id);
    }
    for id in &ids {
        common::wait_completed(&mut on_b, id).await;
        let runs = common::executions(&mut on_b, id).await;
        assert!(
            runs.iter().all(|r| r.server_id == "a"),
            "only the server with claude ran it: {runs:#?}"
        );
    }

    let nobody = common::submit(
        &mut on_b,
        common::agent_spec(pb::AgentType::Gemini, "no server has gemini"),
    )
    .await;
    let failed = common::wait_for(&mut on_b, &nobody.id, &[pb::TaskState::Failed]).await;
    assert!(
        failed.state_reason.contains("gemini"),
        "{}",
        failed.state_reason
    );
}

/// When one server finds an agent's quota spent, every server sets the
/// agent aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_set_aside_by_one_server_is_set_aside_by_all() {
    if claude_or_skip("an_agent_set_aside_by_one_server_is_set_aside_by_all").is_none() {
        return;
    }
    let database_url = common::postgres_database().await;
    let mock = AnthropicMock::start(Script::UsageLimitReached);
    let homes = tempfile::tempdir().unwrap();
    let a = claude_server(&mock, &homes.path().join("a"), &database_url, "a").await;
    let b = claude_server(&mock, &homes.path().join("b"), &database_url, "b").await;
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;
    let spec = common::agent_spec(pb::AgentType::Claude, "anything");
    let task = common::submit(&mut on_a, spec).await;
    // One attempt (on either server) finds the quota spent and requeues.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = common::executions(&mut on_a, &task.id).await;
        if runs.first().is_some_and(|r| r.ended_at.is_some()) {
            break;
        }
        assert!(Instant::now() < deadline, "the attempt did not end");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queued = common::wait_for(&mut on_a, &task.id, &[pb::TaskState::Queued]).await;
    assert!(
        queued.state_reason.contains("set aside until"),
        "{}",
        queued.state_reason
    );

    let hour_from_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 3000;
    for client in [&mut on_a, &mut on_b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = client
                .get_system_status(pb::GetSystemStatusRequest {})
                .await
                .unwrap()
                .into_inner();
            let claude = status
                .agents
                .iter()
                .find(|s| s.agent() == pb::AgentType::Claude)
                .unwrap();
            if claude
                .rate_limited_until
                .as_ref()
                .is_some_and(|t| t.seconds > hour_from_now)
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "claude is not set aside: {claude:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Neither server starts the agent again meanwhile.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(common::executions(&mut on_b, &task.id).await.len(), 1);
}
