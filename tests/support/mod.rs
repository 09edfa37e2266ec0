//! Test support for driving real agent CLIs offline: `mod support;` from an
//! integration test, or `#[path = "support/<file>.rs"] mod <name>;` for one.
pub mod agent_process;
pub mod anthropic_mock;
pub mod chat_mock;
pub mod claude_env;
pub mod codex_env;
pub mod gemini_env;
pub mod gemini_mock;
pub mod http_thread;
pub mod openai_mock;
pub mod server_process;
pub mod webhook_examples;
