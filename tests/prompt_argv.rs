//! Instructions that look like options (a markdown list starts with `-`)
//! reach the model as text: the real server runs the real `claude` CLI
//! against the scripted Anthropic model, which records what it was sent.

mod common;
mod support;

use claudomator::proto as pb;
use common::{agent_spec, start_server_with, submit, wait_completed};
use support::anthropic_mock::{AnthropicMock, Script};
use support::claude_env::{claude_or_skip, configure_claude};

#[tokio::test]
async fn instructions_that_start_with_a_dash_reach_claude_as_text() {
    if claude_or_skip("instructions_that_start_with_a_dash_reach_claude_as_text").is_none() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let mock = AnthropicMock::start(Script::write_file("typo.txt", "fixed"));
    let server = start_server_with(|c| {
        configure_claude(c, &mock.base_url(), home.path(), 1);
        c.executor.enabled = true;
        c.executor.poll_interval = "200ms".into();
    })
    .await;
    let mut client = server.client().await;

    let instructions = "- fix the typo\n- --help is not an option here";
    let mut spec = agent_spec(pb::AgentType::Claude, instructions);
    // A list-valued option right before the prompt must not swallow it.
    spec.agent.as_mut().unwrap().allowed_tools = vec!["Read".into(), "Write".into()];
    let task = submit(&mut client, spec).await;
    wait_completed(&mut client, &task.id).await;

    let first = mock
        .message_requests()
        .into_iter()
        .next()
        .expect("claude called the model");
    let sent = serde_json::to_string(first.messages()).unwrap();
    assert!(
        sent.contains("- fix the typo\\n- --help is not an option here"),
        "the instructions are not in the model's messages: {sent}"
    );
}
