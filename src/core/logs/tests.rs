//! Unit tests of `core::logs`.

use std::os::unix::fs::FileExt;

use super::*;
use serde_json::json;

async fn collect(mut rx: mpsc::Receiver<LogResult>) -> Vec<u64> {
    let mut offsets = Vec::new();
    while let Some(item) = rx.recv().await {
        offsets.push(item.unwrap().event.offset);
    }
    offsets
}

#[tokio::test]
async fn replay_then_follow_until_the_writer_ends() {
    let dir = tempfile::tempdir().unwrap();
    let hub = LogHub::new(dir.path().to_path_buf()).unwrap();
    let execution = Id::new();
    let mut writer = hub.writer(execution).unwrap();
    for i in 0..5 {
        writer
            .append(LogKind::Text, format!("line {i}"), json!({"i": i}), "")
            .unwrap();
    }
    let early = hub.subscribe(execution, 0, true);
    let late = hub.subscribe(execution, 3, true);
    let snapshot = hub.subscribe(execution, 0, false);
    assert_eq!(collect(snapshot).await, vec![0, 1, 2, 3, 4]);
    let producer = tokio::spawn(async move {
        for i in 5..2000 {
            writer
                .append(LogKind::Text, format!("line {i}"), json!(null), "")
                .unwrap();
            if i % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
        drop(writer);
    });
    let (early, late) = tokio::join!(collect(early), collect(late));
    producer.await.unwrap();
    assert_eq!(early, (0..2000).collect::<Vec<_>>());
    assert_eq!(late, (3..2000).collect::<Vec<_>>());
    assert!(!hub.is_live(execution));

    // Reopening appends after what is there.
    let mut again = hub.writer(execution).unwrap();
    assert_eq!(
        again
            .append(LogKind::System, "resumed", json!(null), "")
            .unwrap(),
        2000
    );
}

#[tokio::test]
async fn a_slow_subscriber_catches_up_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let hub = LogHub::new(dir.path().to_path_buf()).unwrap();
    let execution = Id::new();
    let mut writer = hub.writer(execution).unwrap();
    let mut slow = hub.subscribe(execution, 0, true);
    // Far more than the live channel holds, while nobody reads.
    for i in 0..(LIVE_CAPACITY as u64 * 4) {
        writer
            .append(LogKind::Text, format!("{i}"), json!(null), "")
            .unwrap();
    }
    drop(writer);
    let mut next = 0;
    while let Some(item) = slow.recv().await {
        assert_eq!(item.unwrap().event.offset, next);
        next += 1;
    }
    assert_eq!(next, LIVE_CAPACITY as u64 * 4);
}

#[tokio::test]
async fn a_lagging_subscriber_resumes_after_the_last_event_it_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let hub = LogHub::new(dir.path().to_path_buf()).unwrap();
    let execution = Id::new();
    let mut writer = hub.writer(execution).unwrap();
    let mut follower = hub.subscribe(execution, 0, true);
    // Event 0 comes from the file, 1 to 9 live, one at a time.
    let path = hub.path(execution);
    let mut first_line = 0;
    for i in 0..10 {
        writer
            .append(LogKind::Text, format!("{i}"), json!(null), "")
            .unwrap();
        let item = follower.recv().await.unwrap().unwrap();
        assert_eq!(item.event.offset, i);
        if i == 0 {
            first_line = std::fs::metadata(&path).unwrap().len();
        }
    }
    // Spoil what was delivered live: reading it again would fail.
    let delivered = std::fs::metadata(&path).unwrap().len() - 1;
    let spoiled = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let junk = vec![b'x'; (delivered - first_line) as usize];
    spoiled.write_all_at(&junk, first_line).unwrap();
    // Far more than the live channel holds, while the follower waits.
    let more = LIVE_CAPACITY as u64 * 3;
    for i in 10..10 + more {
        writer
            .append(LogKind::Text, format!("{i}"), json!(null), "")
            .unwrap();
    }
    drop(writer);
    let rest = collect(follower).await;
    assert_eq!(rest, (10..10 + more).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_agents_json_line_is_stored_and_sent_once() {
    let dir = tempfile::tempdir().unwrap();
    let hub = LogHub::new(dir.path().to_path_buf()).unwrap();
    let execution = Id::new();
    let mut writer = hub.writer(execution).unwrap();
    // Keys out of order and spaces, as an agent may print them.
    let line = r#"{"type": "assistant", "message": {"b": 1, "a": [true, null]}}"#;
    let payload: Value = serde_json::from_str(line).unwrap();
    writer
        .append(LogKind::Text, "the line", payload.clone(), line)
        .unwrap();
    // A payload that is not the line keeps both.
    writer
        .append(LogKind::Question, "why?", json!({"text": "why?"}), "{}")
        .unwrap();
    // A stderr line that happens to be JSON has no payload.
    writer
        .append(LogKind::Stderr, "{}", Value::Null, "{}")
        .unwrap();
    drop(writer);

    let file = std::fs::read_to_string(hub.path(execution)).unwrap();
    assert_eq!(file.matches("assistant").count(), 1, "{file}");

    let events = hub.read_all(execution).await.unwrap();
    assert_eq!(events[0].payload, payload);
    assert_eq!(events[0].raw, line);
    assert_eq!(events[1].payload, json!({"text": "why?"}));
    assert_eq!(events[1].raw, "{}");
    assert_eq!(
        (&events[2].payload, events[2].raw.as_str()),
        (&Value::Null, "{}")
    );

    let mut shared = Vec::new();
    let mut rx = hub.subscribe(execution, 0, false);
    while let Some(item) = rx.recv().await {
        shared.push(item.unwrap().event);
    }
    assert!(shared[0].raw_is_payload);
    assert_eq!(shared[0].payload_json, line);
    assert_eq!((shared[0].raw.as_str(), shared[0].raw_line()), ("", line));
    assert!(!shared[1].raw_is_payload);
    assert_eq!(shared[1].payload_json, r#"{"text":"why?"}"#);
    assert_eq!(shared[1].raw_line(), "{}");
    assert!(!shared[2].raw_is_payload);
    assert_eq!(
        (shared[2].payload_json.as_str(), shared[2].raw_line()),
        ("", "{}")
    );
    // The writer's live form is the same as the file's.
    let read: Vec<SharedEvent> = events.into_iter().map(SharedEvent::new).collect();
    for (live, file) in read.iter().zip(&shared) {
        assert_eq!(
            (live.offset, &live.payload_json, &live.raw),
            (file.offset, &file.payload_json, &file.raw)
        );
    }
}

#[tokio::test]
async fn older_logs_with_payload_and_raw_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let hub = LogHub::new(dir.path().to_path_buf()).unwrap();
    let execution = Id::new();
    let old = r#"{"offset":0,"at":1,"kind":"text","text":"t","payload":{"type":"x"},"raw":"{\"type\": \"x\"}"}"#;
    std::fs::write(hub.path(execution), format!("{old}\n")).unwrap();
    let events = hub.read_all(execution).await.unwrap();
    assert_eq!(events[0].payload, json!({"type": "x"}));
    assert_eq!(events[0].raw, r#"{"type": "x"}"#);
    let mut rx = hub.subscribe(execution, 0, false);
    let event = rx.recv().await.unwrap().unwrap().event;
    assert_eq!(event.payload_json, r#"{"type":"x"}"#);
    assert_eq!(event.raw, r#"{"type": "x"}"#);
    // A reopened log goes on after it.
    let mut writer = hub.writer(execution).unwrap();
    assert_eq!(
        writer
            .append(LogKind::System, "more", Value::Null, "")
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn catching_up_across_blocks_and_lines_longer_than_a_block() {
    let dir = tempfile::tempdir().unwrap();
    let hub = LogHub::new(dir.path().to_path_buf()).unwrap();
    let execution = Id::new();
    let mut writer = hub.writer(execution).unwrap();
    // About four blocks, line sizes varying, one line of two blocks.
    let text = |i: u64| match i {
        700 => "y".repeat(2 * file::BLOCK as usize),
        _ => "x".repeat((i * 37 % 1500) as usize),
    };
    let total = 1400;
    for i in 0..total {
        writer
            .append(LogKind::Text, text(i), json!({"i": i}), "")
            .unwrap();
    }
    // Several readers at once share the blocks; all see every event.
    let readers: Vec<_> = [0, 0, 1, 699, 701, 1399]
        .into_iter()
        .map(|from| (from, hub.subscribe(execution, from, false)))
        .collect();
    for (from, mut rx) in readers {
        let mut next = from;
        while let Some(item) = rx.recv().await {
            let event = item.unwrap().event;
            assert_eq!(event.offset, next);
            assert_eq!(event.text, text(next));
            assert_eq!(event.payload_json, format!(r#"{{"i":{next}}}"#));
            next += 1;
        }
        assert_eq!(next, total);
    }
    // A follower from the start while the log grows, lagging behind.
    let follower = hub.subscribe(execution, 0, true);
    for i in total..total + 2000 {
        writer
            .append(LogKind::Text, text(i), json!({"i": i}), "")
            .unwrap();
    }
    drop(writer);
    assert_eq!(
        collect(follower).await,
        (0..total + 2000).collect::<Vec<_>>()
    );
}
