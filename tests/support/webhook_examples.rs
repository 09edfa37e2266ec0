//! The recorded GitHub deliveries of `@octokit/webhooks-examples`
//! (installed by scripts/install-webhook-examples, or here on first use).
#![allow(dead_code)]

use std::path::Path;
use std::sync::OnceLock;

use serde_json::Value;

/// Every recorded delivery, by event: `[{name, examples: [payload…]}]`.
pub fn examples() -> &'static Vec<Value> {
    static EXAMPLES: OnceLock<Vec<Value>> = OnceLock::new();
    EXAMPLES.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let file = root.join(
            ".webhook-examples/node_modules/@octokit/webhooks-examples/api.github.com/index.json",
        );
        if !file.is_file() {
            let status = std::process::Command::new("bash")
                .arg(root.join("scripts/install-webhook-examples"))
                .status()
                .expect("runs scripts/install-webhook-examples");
            assert!(
                status.success(),
                "scripts/install-webhook-examples failed (npm and the registry are needed once)"
            );
        }
        let text = std::fs::read_to_string(&file).expect("the examples file");
        serde_json::from_str(&text).expect("the examples are JSON")
    })
}

/// The first recorded `event` delivery that `wanted` accepts.
pub fn example(event: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    examples()
        .iter()
        .find(|e| e["name"] == event)
        .and_then(|e| e["examples"].as_array())
        .and_then(|list| list.iter().find(|p| wanted(p)).cloned())
        .unwrap_or_else(|| panic!("no recorded {event} delivery like that"))
}
