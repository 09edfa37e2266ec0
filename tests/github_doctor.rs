//! `doctor`'s GitHub checks, through the real binary against a real server
//! whose projects reach the scripted GitHub API (tests/common/github_api.rs):
//! a token without push access and an App without `pull_requests: write`
//! are each told what is missing; a token with write access is fine.
//!
//! The one test of this binary: it sets the token's environment variable
//! before any thread of its own starts.

mod common;

use claudomator::config::ProjectConfig;
use common::github_api::{GithubApi, app_key_pair};
use common::{init_git_repo, start_server_with};

const TOKEN_ENV: &str = "CLAUDOMATOR_TEST_DOCTOR_GITHUB_TOKEN";

#[test]
fn doctor_says_what_each_projects_github_credentials_lack() {
    // SAFETY: the only test in this binary, before its runtime starts.
    unsafe { std::env::set_var(TOKEN_ENV, "tok-carol") };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(doctor_checks());
}

async fn doctor_checks() {
    let api = GithubApi::start().await;
    for repo in ["acme/other", "acme/widgets"] {
        api.add_repo(repo);
    }
    api.add_user("carol", "tok-carol");
    api.grant("acme/other", "carol", "read");
    let keys = tempfile::tempdir().unwrap();
    let (private_key, public_key) = app_key_pair(keys.path());
    api.add_app(42, "claudomator-test", &public_key);
    api.install(
        42,
        7,
        &["acme/widgets"],
        &[("contents", "write"), ("pull_requests", "read")],
    );

    let api_url = api.api_url();
    let widgets = keys.path().join("widgets");
    init_git_repo(&widgets);
    let server = start_server_with(|config| {
        // `other` (acme/other) uses [github]'s token; `widgets` its own App.
        config.github.api_url = api_url.clone();
        config.github.token_env = TOKEN_ENV.into();
        config.projects.push(ProjectConfig {
            github: Some("acme/widgets".into()),
            github_app_id: Some(42),
            github_private_key_file: Some(private_key.clone()),
            ..ProjectConfig::new("widgets", &widgets)
        });
    })
    .await;
    assert_eq!(server.config.projects.len(), 3);

    let doctor = async || {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_claudomator"))
            .args(["doctor", "--server", &server.url()])
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = doctor().await;
    let line = |project: &str| {
        shown
            .lines()
            .find(|l| l.starts_with("github") && l.contains(&format!("(project {project})")))
            .unwrap_or_else(|| panic!("no github line for {project}:\n{shown}"))
            .to_string()
    };
    let other = line("other");
    assert!(other.contains("--"), "{other}");
    assert!(
        other.contains("carol: missing push (write access) to acme/other for carol"),
        "{other}"
    );
    let widgets = line("widgets");
    assert!(widgets.contains("--"), "{widgets}");
    assert!(
        widgets.contains("app claudomator-test (installation 7): missing the App's permission `pull_requests: write` on acme/widgets"),
        "{widgets}"
    );
    assert!(!shown.contains("tok-carol"), "{shown}");

    // Write access: the token's check passes.
    api.grant("acme/other", "carol", "write");
    let shown = doctor().await;
    let other = shown
        .lines()
        .find(|l| l.contains("(project other)"))
        .unwrap_or_default();
    assert!(
        other.contains("ok") && other.contains("carol: can push and open pull requests"),
        "{shown}"
    );
    api.assert_no_violations();
}
