//! The agent stream parsers read hostile output: whatever lines an agent
//! prints (arbitrary text, JSON of any shape, events with odd values),
//! reading them and finishing the run never panics.

use claudomator::runners::StreamParser;
use claudomator::runners::claude::ClaudeStream;
use claudomator::runners::codex::CodexStream;
use claudomator::runners::gemini::GeminiStream;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Lines shaped like the CLIs' events (known `type`s and subtypes, any
/// values), plain text and arbitrary JSON.
fn agent_line() -> impl Strategy<Value = String> {
    let kinds = prop_oneof![
        Just("system"),
        Just("assistant"),
        Just("user"),
        Just("result"),
        Just("init"),
        Just("message"),
        Just("tool_use"),
        Just("tool_result"),
        Just("error"),
        Just("thread.started"),
        Just("turn.started"),
        Just("turn.completed"),
        Just("turn.failed"),
        Just("item.started"),
        Just("item.completed"),
        Just("stream_event"),
    ];
    prop_oneof![
        "(?s).{0,80}",
        any_json().prop_map(|v| v.to_string()),
        (kinds, ".{0,10}", any_json(), any_json(), any_json()).prop_map(
            |(kind, subtype, a, b, c)| {
                json!({
                    "type": kind, "subtype": subtype, "message": a, "item": b,
                    "usage": c, "result": b, "is_error": a, "stats": c,
                    "session_id": subtype, "thread_id": subtype, "content": a,
                    "role": "assistant", "delta": true, "error": c,
                })
                .to_string()
            }
        ),
    ]
}

fn run<P: StreamParser>(mut parser: P, lines: &[String], exit: Option<i32>, stopped: bool) {
    for line in lines {
        let _ = parser.read_line(line);
    }
    let _ = parser.finish(exit, stopped);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn agent_output_never_panics_a_parser(
        lines in proptest::collection::vec(agent_line(), 0..12),
        exit in proptest::option::of(-2..3i32),
        stopped: bool,
    ) {
        run(ClaudeStream::default(), &lines, exit, stopped);
        run(GeminiStream::default(), &lines, exit, stopped);
        run(CodexStream::default(), &lines, exit, stopped);
    }
}
