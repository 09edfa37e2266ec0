//! Test support for driving real agent CLIs offline: `mod support;` from an
//! integration test, or `#[path = "support/<file>.rs"] mod <name>;` for one.
pub mod anthropic_mock;
pub mod claude_env;
