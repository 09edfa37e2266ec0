//! WatchTasks over real gRPC: the snapshot, every transition of a real run
//! in commit order, resuming by cursor without loss or repeats, filters,
//! the retention edge, a watcher on one server seeing a task run on another
//! (PostgreSQL), ids that list in creation order under bursts, and watches
//! that end when the server stops.

#[path = "support/chat_mock.rs"]
mod chat_mock;
mod common;
#[path = "support/http_thread.rs"]
mod http_thread;

use std::time::Duration;

use chat_mock::{ChatMock, Reply};
use claudomator::config::Config;
use claudomator::proto as pb;
use common::{Client, agent_spec, spec, start_server, start_server_with, submit};
use pb::watch_tasks_response::Event;
use tokio_stream::StreamExt;
use tonic::Streaming;

type Watch = Streaming<pb::WatchTasksResponse>;

async fn watch(client: &mut Client, request: pb::WatchTasksRequest) -> Watch {
    client.watch_tasks(request).await.unwrap().into_inner()
}

/// The next event, failing the test after 30 s without one.
async fn next(watch: &mut Watch) -> pb::WatchTasksResponse {
    tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("an event within 30 s")
        .expect("the watch is open")
        .expect("not an error")
}

/// The next change (heartbeats skipped).
async fn next_change(watch: &mut Watch) -> (pb::TaskChange, String) {
    loop {
        let response = next(watch).await;
        match response.event {
            Some(Event::Change(change)) => return (change, response.cursor),
            Some(Event::Heartbeat(_)) => continue,
            other => panic!("expected a change, got {other:?}"),
        }
    }
}

/// The snapshot's tasks and the cursor its end carries.
async fn snapshot(watch: &mut Watch) -> (Vec<pb::Task>, String) {
    let mut tasks = Vec::new();
    loop {
        let response = next(watch).await;
        match response.event {
            Some(Event::Snapshot(task)) => tasks.push(task),
            Some(Event::SnapshotEnd(_)) => return (tasks, response.cursor),
            other => panic!("expected the snapshot, got {other:?}"),
        }
    }
}

fn changes_only() -> pb::WatchTasksRequest {
    pb::WatchTasksRequest {
        changes_only: true,
        ..Default::default()
    }
}

fn state(value: i32) -> pb::TaskState {
    pb::TaskState::try_from(value).unwrap()
}

fn ids(tasks: &[pb::Task]) -> Vec<&str> {
    tasks.iter().map(|t| t.id.as_str()).collect()
}

/// A server running `local` tasks against a scripted model that answers
/// at once.
async fn local_server(mock: &ChatMock, adjust: impl FnOnce(&mut Config)) -> common::TestServer {
    common::start_local_model_server(mock.endpoint(), |c| {
        for agent in [
            &mut c.agents.claude,
            &mut c.agents.codex,
            &mut c.agents.gemini,
        ] {
            agent.command = "/nonexistent/agent-cli".into();
        }
        adjust(c);
    })
    .await
}

#[tokio::test]
async fn a_watch_sees_every_transition_of_a_real_run_in_order() {
    let mock = ChatMock::always(Reply::text("Done.\n\n## Summary\nDid it."));
    let server = local_server(&mock, |_| {}).await;
    let mut client = server.client().await;
    let mut stream = watch(&mut client, pb::WatchTasksRequest::default()).await;
    let (tasks, end_cursor) = snapshot(&mut stream).await;
    assert!(tasks.is_empty());
    assert!(!end_cursor.is_empty());

    let task = submit(
        &mut client,
        pb::TaskSpec {
            review_required: true,
            ..agent_spec(pb::AgentType::Local, "Say done.")
        },
    )
    .await;
    let mut seen = Vec::new();
    let mut last_seq = 0;
    while seen.last() != Some(&(pb::TaskState::Running, pb::TaskState::Ready)) {
        let (change, cursor) = next_change(&mut stream).await;
        assert_eq!(cursor, change.sequence.to_string());
        assert!(change.sequence > last_seq, "in commit order");
        last_seq = change.sequence;
        let changed = change.task.expect("the task rides along");
        assert_eq!(changed.id, task.id);
        assert!(changed.spec.unwrap().instructions.is_empty());
        seen.push((state(change.from_state), state(change.to_state)));
    }
    assert_eq!(
        seen,
        [
            (pb::TaskState::Unspecified, pb::TaskState::Queued),
            (pb::TaskState::Queued, pb::TaskState::Running),
            (pb::TaskState::Running, pb::TaskState::Ready),
        ]
    );

    client
        .accept_task(pb::AcceptTaskRequest {
            task_id: task.id.clone(),
        })
        .await
        .unwrap();
    let (change, _) = next_change(&mut stream).await;
    assert_eq!(state(change.to_state), pb::TaskState::Completed);
    assert_eq!(change.reason, "accepted");
    assert_eq!(state(change.task.unwrap().state), pb::TaskState::Completed);
}

#[tokio::test]
async fn resuming_from_a_cursor_misses_nothing_and_repeats_nothing() {
    let server = start_server().await;
    let mut client = server.client().await;
    // The reference: one watch that stays connected throughout.
    let mut whole = watch(&mut client, changes_only()).await;
    let mut broken = watch(&mut client, changes_only()).await;

    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(submit(&mut client, spec(&format!("task {i}"))).await.id);
    }
    // The second watch reads two changes, then its connection goes away.
    let mut resumed = vec![next_change(&mut broken).await];
    resumed.push(next_change(&mut broken).await);
    let cursor = resumed[1].1.clone();
    drop(broken);

    // More changes while it is away: cancels and new tasks.
    for id in &ids[..3] {
        client
            .cancel_task(pb::CancelTaskRequest {
                id: id.clone(),
                reason: String::new(),
            })
            .await
            .unwrap();
    }
    for i in 6..9 {
        submit(&mut client, spec(&format!("task {i}"))).await;
    }
    let total = 6 + 3 + 3;
    let mut reference = Vec::new();
    for _ in 0..total {
        reference.push(next_change(&mut whole).await);
    }

    let mut again = watch(
        &mut client,
        pb::WatchTasksRequest {
            cursor,
            ..Default::default()
        },
    )
    .await;
    while resumed.len() < total {
        resumed.push(next_change(&mut again).await);
    }
    let sequences = |changes: &[(pb::TaskChange, String)]| {
        changes
            .iter()
            .map(|(c, _)| (c.sequence, c.task.as_ref().unwrap().id.clone(), c.to_state))
            .collect::<Vec<_>>()
    };
    assert_eq!(sequences(&resumed), sequences(&reference));
    // And nothing more: the next event is a heartbeat or nothing at all.
    let quiet = tokio::time::timeout(Duration::from_millis(500), again.next()).await;
    assert!(quiet.is_err(), "no repeated change: {quiet:?}");
}

#[tokio::test]
async fn a_cursor_the_log_no_longer_holds_is_out_of_range_and_a_bad_one_is_invalid() {
    let server = start_server().await;
    let mut client = server.client().await;
    for i in 0..3 {
        submit(&mut client, spec(&format!("task {i}"))).await;
    }
    let far = client
        .watch_tasks(pb::WatchTasksRequest {
            cursor: "999999".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(far.code(), tonic::Code::OutOfRange);
    assert!(far.message().contains("new snapshot"), "{}", far.message());

    let bad = client
        .watch_tasks(pb::WatchTasksRequest {
            cursor: "yesterday".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().starts_with("cursor:"), "{}", bad.message());

    // The log is pruned past the first changes (as retention does): their
    // cursor can no longer resume; the newest still can.
    let store = server.open_store().await;
    let (first, last) = store.change_span().await.unwrap().unwrap();
    assert_eq!((first, last), (1, 3));
    assert_eq!(store.prune_changes(i64::MAX).await.unwrap(), 2);
    let old = client
        .watch_tasks(pb::WatchTasksRequest {
            cursor: "1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(old.code(), tonic::Code::OutOfRange);
    let mut current = watch(
        &mut client,
        pb::WatchTasksRequest {
            cursor: "3".into(),
            ..Default::default()
        },
    )
    .await;
    let task = submit(&mut client, spec("after the prune")).await;
    let (change, cursor) = next_change(&mut current).await;
    assert_eq!(change.task.unwrap().id, task.id);
    assert_eq!(cursor, "4");
}

#[tokio::test]
async fn filters_pick_tasks_and_changes_by_project_tag_state_and_id() {
    let server = start_server().await;
    let mut client = server.client().await;
    let tagged = submit(
        &mut client,
        pb::TaskSpec {
            tags: vec!["board".into()],
            ..spec("tagged")
        },
    )
    .await;
    let other = submit(
        &mut client,
        pb::TaskSpec {
            project: "other".into(),
            ..spec("other project")
        },
    )
    .await;
    let plain = submit(&mut client, spec("plain")).await;

    let by = |request: pb::WatchTasksRequest| {
        let mut client = client.clone();
        async move {
            let mut stream = watch(&mut client, request).await;
            snapshot(&mut stream).await.0
        }
    };
    let all = by(pb::WatchTasksRequest::default()).await;
    assert_eq!(
        ids(&all),
        [plain.id.as_str(), &other.id, &tagged.id],
        "newest first"
    );
    let in_other = by(pb::WatchTasksRequest {
        project: "other".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&in_other), [other.id.as_str()]);
    let with_tag = by(pb::WatchTasksRequest {
        tag: "board".into(),
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&with_tag), [tagged.id.as_str()]);
    let by_id = by(pb::WatchTasksRequest {
        task_ids: vec![plain.id.clone(), tagged.id.clone()],
        ..Default::default()
    })
    .await;
    assert_eq!(ids(&by_id), [plain.id.as_str(), &tagged.id]);

    // Changes: only cancels (state filter) of the tagged task's project.
    let mut cancels = watch(
        &mut client,
        pb::WatchTasksRequest {
            project: "demo".into(),
            states: vec![pb::TaskState::Cancelled as i32],
            changes_only: true,
            ..Default::default()
        },
    )
    .await;
    for id in [&other.id, &plain.id] {
        client
            .cancel_task(pb::CancelTaskRequest {
                id: id.to_string(),
                reason: "filters".into(),
            })
            .await
            .unwrap();
    }
    submit(&mut client, spec("queued, not a cancel")).await;
    let (change, _) = next_change(&mut cancels).await;
    assert_eq!(change.task.unwrap().id, plain.id);
    assert_eq!(change.reason, "filters");

    let too_many = client
        .watch_tasks(pb::WatchTasksRequest {
            task_ids: vec![plain.id.clone(); 501],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(too_many.code(), tonic::Code::InvalidArgument);
    let not_an_id = client
        .watch_tasks(pb::WatchTasksRequest {
            task_ids: vec!["nope".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        not_an_id.message().starts_with("task_ids[0]:"),
        "{}",
        not_an_id.message()
    );
}

/// Two servers on one PostgreSQL database: a watcher on the one that runs
/// nothing sees the other one run the task, every step in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_on_one_server_sees_a_task_run_on_another() {
    let database = common::postgres_database().await;
    let mock = ChatMock::always(Reply::text("Done.\n\n## Summary\nDid it."));
    let runner = {
        let database = database.clone();
        local_server(&mock, move |c| {
            c.database_url = database;
            c.executor.server_id = "runner".into();
        })
        .await
    };
    let watcher = start_server_with(move |c| {
        c.database_url = database;
        c.executor.server_id = "watcher".into();
    })
    .await;
    let mut watching = watcher.client().await;
    let mut stream = watch(&mut watching, changes_only()).await;

    let mut submitting = runner.client().await;
    let task = submit(
        &mut submitting,
        agent_spec(pb::AgentType::Local, "Say done."),
    )
    .await;
    let mut seen = Vec::new();
    while seen.last() != Some(&pb::TaskState::Completed) {
        let (change, _) = next_change(&mut stream).await;
        assert_eq!(change.task.unwrap().id, task.id);
        seen.push(state(change.to_state));
    }
    assert_eq!(
        seen,
        [
            pb::TaskState::Queued,
            pb::TaskState::Running,
            pb::TaskState::Completed
        ]
    );
}

/// Ids follow creation order even within one millisecond: a burst of
/// submits lists newest first exactly in reverse, page after page, and the
/// watch sees them created in that order.
#[tokio::test]
async fn a_burst_of_submits_lists_in_creation_order() {
    let server = start_server().await;
    let mut client = server.client().await;
    let mut stream = watch(&mut client, changes_only()).await;
    let mut created = Vec::new();
    for i in 0..300 {
        created.push(submit(&mut client, spec(&format!("burst {i}"))).await.id);
    }
    let listed: Vec<String> = common::all_tasks(&mut client)
        .await
        .into_iter()
        .map(|t| t.id)
        .collect();
    let mut newest_first = created.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first);
    let mut watched = Vec::new();
    while watched.len() < created.len() {
        watched.push(next_change(&mut stream).await.0.task.unwrap().id);
    }
    assert_eq!(watched, created);
}

#[tokio::test]
async fn stopping_the_server_ends_open_watches_so_it_stops_at_once() {
    let mut server = start_server().await;
    let mut client = server.client().await;
    let mut watch = watch(&mut client, pb::WatchTasksRequest::default()).await;
    let (tasks, _) = snapshot(&mut watch).await;
    assert!(tasks.is_empty());

    // A watcher (a board left open) never holds up the shutdown.
    tokio::time::timeout(Duration::from_secs(10), server.stop())
        .await
        .expect("the server stops within 10 s with a watch open");
    let end = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("the watch ends");
    assert!(
        matches!(end, None | Some(Err(_))),
        "no event after the server stopped: {end:?}"
    );
}

#[tokio::test]
async fn a_watcher_never_sees_a_tasks_creation_twice_under_concurrent_submits() {
    // Watches open while tasks are being submitted from several clients:
    // each task is in a watch's snapshot or comes as its creation after
    // it, never both (the snapshot's cursor is read with the snapshot, not
    // from the bus, which may not have published what the snapshot has).
    const SUBMITTERS: usize = 4;
    const EACH: usize = 60;
    const WATCHERS: usize = 6;
    let server = start_server().await;
    let tag = "concurrent";
    let mut submitters = Vec::new();
    for s in 0..SUBMITTERS {
        let mut client = server.client().await;
        submitters.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..EACH {
                let mut spec = spec(&format!("task {s}-{i}"));
                spec.tags = vec![tag.into()];
                ids.push(submit(&mut client, spec).await.id);
            }
            ids
        }));
    }
    let mut watches = Vec::new();
    for _ in 0..WATCHERS {
        let mut client = server.client().await;
        watches.push(
            watch(
                &mut client,
                pb::WatchTasksRequest {
                    tag: tag.into(),
                    ..Default::default()
                },
            )
            .await,
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let mut all = Vec::new();
    for submitter in submitters {
        all.extend(submitter.await.unwrap());
    }
    assert_eq!(all.len(), SUBMITTERS * EACH);

    let mut in_snapshots = 0;
    for (w, mut watch) in watches.into_iter().enumerate() {
        let (tasks, _) = snapshot(&mut watch).await;
        in_snapshots += tasks.len();
        let mut seen: std::collections::HashMap<String, &str> =
            tasks.iter().map(|t| (t.id.clone(), "snapshot")).collect();
        assert_eq!(
            seen.len(),
            tasks.len(),
            "watch {w}: a task twice in its snapshot"
        );
        while seen.len() < all.len() {
            let (change, _) = next_change(&mut watch).await;
            let id = change.task.unwrap().id;
            assert_eq!(
                state(change.from_state),
                pb::TaskState::Unspecified,
                "watch {w}: only creations happen here"
            );
            if let Some(before) = seen.insert(id.clone(), "change") {
                panic!("watch {w}: task {id} created again after it came as a {before}");
            }
        }
    }
    // The watches did open while tasks were being submitted.
    assert!(
        in_snapshots > 0 && in_snapshots < WATCHERS * all.len(),
        "{in_snapshots} snapshot tasks over {WATCHERS} watches"
    );
}
