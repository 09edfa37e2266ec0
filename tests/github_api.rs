//! The GitHub client (`claudomator::github`) against the scripted GitHub API
//! (tests/common/github_api.rs), which checks every request it sends against
//! GitHub's OpenAPI description: pull requests with labels and reviewers,
//! comments, permissions, branches; a GitHub App's installation tokens
//! replaced before they expire and after a 401; rate limits waited out or
//! refused; a GitHub Enterprise Server path prefix.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use claudomator::core::codehost::{CodeHost, HostError, NewPull, Permission, PullState, RepoName};
use claudomator::github::{ApiSettings, AppKey, Credentials, GithubClient};
use common::github_api::{AuthKind, GithubApi, app_key_pair};

const REPO: &str = "acme/widgets";
const BRANCH: &str = "claudomator/01JTASK";

fn repo() -> RepoName {
    RepoName::parse(REPO).unwrap()
}

fn settings(api: &GithubApi) -> ApiSettings {
    ApiSettings {
        retry_base: Duration::from_millis(50),
        max_rate_limit_wait: Duration::from_secs(10),
        ..ApiSettings::new(api.api_url())
    }
}

fn token_client(api: &GithubApi, token: &str) -> GithubClient {
    GithubClient::new(
        settings(api),
        Credentials::Token(claudomator::core::codehost::Secret::new(token)),
    )
    .unwrap()
}

/// `acme/widgets` with a work branch; `alice` (token `tok-alice`) may
/// write, `bob` may triage, `carol` only read.
async fn scripted(api: GithubApi) -> GithubApi {
    api.add_repo(REPO);
    api.add_branch(REPO, BRANCH, &"c".repeat(40));
    for (login, permission) in [("alice", "write"), ("bob", "triage"), ("carol", "read")] {
        api.add_user(login, &format!("tok-{login}"));
        api.grant(REPO, login, permission);
    }
    api
}

fn new_pull() -> NewPull {
    NewPull {
        title: "Fix the widget".into(),
        body: "What the agent did.".into(),
        head: BRANCH.into(),
        base: "main".into(),
        draft: false,
        labels: vec!["claudomator".into(), "bot".into()],
        reviewers: vec!["bob".into()],
    }
}

#[tokio::test]
async fn a_pull_request_with_labels_reviewers_and_a_comment() {
    let api = scripted(GithubApi::start().await).await;
    let host = token_client(&api, "tok-alice");
    let found = host.repository(&repo()).await.unwrap();
    assert_eq!(found.default_branch, "main");
    assert_eq!(found.push_url, "https://github.com/acme/widgets.git");
    assert_eq!(
        host.push_token(&repo()).await.unwrap().expose(),
        "tok-alice"
    );

    let pull = host.open_pull(&repo(), &new_pull()).await.unwrap();
    assert_eq!(pull.number, 1);
    assert_eq!(pull.state, PullState::Open);
    assert_eq!(pull.head_sha, "c".repeat(40));
    assert_eq!(pull.url, "https://github.com/acme/widgets/pull/1");
    let on_github = &api.pulls(REPO)[0];
    assert_eq!(on_github["labels"][1]["name"], "bot");
    assert_eq!(on_github["requested_reviewers"][0]["login"], "bob");
    // Opened again (a retry after a lost answer): the same pull request.
    assert_eq!(
        host.open_pull(&repo(), &new_pull()).await.unwrap().number,
        1
    );
    assert_eq!(api.pulls(REPO).len(), 1);

    host.comment(&repo(), 1, "Done: see the diff.")
        .await
        .unwrap();
    assert_eq!(api.comments(REPO, 1), ["Done: see the diff."]);
    assert_eq!(host.pull(&repo(), 1).await.unwrap().base_ref, "main");
    let missing = host.pull(&repo(), 9).await.unwrap_err();
    assert!(matches!(missing, HostError::NotFound(_)), "{missing}");

    assert_eq!(
        host.permission(&repo(), "alice").await.unwrap(),
        Permission::Write
    );
    assert_eq!(
        host.permission(&repo(), "bob").await.unwrap(),
        Permission::Triage
    );
    assert_eq!(
        host.permission(&repo(), "carol").await.unwrap(),
        Permission::Read
    );
    assert_eq!(
        host.permission(&repo(), "mallory").await.unwrap(),
        Permission::None
    );

    host.delete_branch(&repo(), BRANCH).await.unwrap();
    assert!(!api.has_branch(REPO, BRANCH));
    // Already gone is fine.
    host.delete_branch(&repo(), BRANCH).await.unwrap();
    assert!(api.requests().iter().all(|r| r.auth == AuthKind::UserToken));
    api.assert_no_violations();
}

#[tokio::test]
async fn a_token_without_push_is_refused_and_access_says_what_is_missing() {
    let api = scripted(GithubApi::start().await).await;
    let host = token_client(&api, "tok-carol");
    let refused = host.open_pull(&repo(), &new_pull()).await.unwrap_err();
    assert!(matches!(refused, HostError::Forbidden(_)), "{refused}");
    let access = host.access(&repo()).await.unwrap();
    assert_eq!(access.identity, "carol");
    assert!(!access.can_push && !access.can_open_pulls);
    assert!(
        access.missing[0].contains("push (write access) to acme/widgets for carol"),
        "{access:?}"
    );
    let writer = token_client(&api, "tok-alice")
        .access(&repo())
        .await
        .unwrap();
    assert!(
        writer.can_push && writer.can_open_pulls && writer.missing.is_empty(),
        "{writer:?}"
    );
    let bad = token_client(&api, "tok-nobody")
        .access(&repo())
        .await
        .unwrap_err();
    assert!(matches!(bad, HostError::Unauthorized(_)), "{bad}");
    api.assert_no_violations();
}

/// A tracing subscriber writing into a buffer, for checking what is logged.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// An App (id 42) installed on the repository with these permissions, and
/// a client for it.
fn app_client(
    api: &GithubApi,
    dir: &std::path::Path,
    permissions: &[(&str, &str)],
) -> GithubClient {
    let (private_key, public_key) = app_key_pair(dir);
    api.add_app(42, "claudomator-test", &public_key);
    api.install(42, 7, &[REPO], permissions);
    let key = AppKey::from_pem(&std::fs::read(private_key).unwrap()).unwrap();
    GithubClient::new(settings(api), Credentials::App { app_id: 42, key }).unwrap()
}

#[tokio::test]
async fn an_app_token_is_replaced_before_it_expires_and_after_a_401() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let api = scripted(GithubApi::start().await).await;
    let dir = tempfile::tempdir().unwrap();
    let host = app_client(
        &api,
        dir.path(),
        &[
            ("contents", "write"),
            ("pull_requests", "write"),
            ("metadata", "read"),
        ],
    );
    // Tokens live ten minutes and two seconds: fresh enough at first.
    api.set_token_lifetime(Duration::from_secs(602));
    let first = host.push_token(&repo()).await.unwrap();
    host.repository(&repo()).await.unwrap();
    assert_eq!(api.installation_tokens_issued(), 1);
    // Two seconds on, less than ten minutes remain: the next call gets a
    // new token first.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    api.set_token_lifetime(Duration::from_secs(3600));
    host.repository(&repo()).await.unwrap();
    assert_eq!(api.installation_tokens_issued(), 2);
    let last = api.requests().pop().unwrap();
    assert_eq!(
        (last.auth, last.installation_token),
        (AuthKind::InstallationToken, Some(2))
    );
    host.repository(&repo()).await.unwrap();
    assert_eq!(api.installation_tokens_issued(), 2);

    // GitHub forgets the token while the client still trusts it: the 401
    // gets one new token and the call succeeds.
    api.expire_installation_tokens();
    let pull = host.open_pull(&repo(), &new_pull()).await.unwrap();
    assert_eq!(pull.number, 1);
    assert_eq!(api.installation_tokens_issued(), 3);
    let statuses: Vec<(String, u16, Option<usize>)> = api
        .requests()
        .iter()
        .rev()
        .take(5)
        .map(|r| {
            (
                r.operation.clone().unwrap_or_default(),
                r.status,
                r.installation_token,
            )
        })
        .collect();
    assert_eq!(
        statuses[3..],
        [
            ("apps/create-installation-access-token".into(), 201, None),
            ("pulls/create".into(), 401, Some(2)),
        ],
        "{statuses:?}"
    );
    // The installation was looked up once; the App authenticated with JWTs.
    let lookups = api
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/installation"))
        .count();
    assert_eq!(lookups, 1);
    assert!(
        api.requests()
            .iter()
            .filter(|r| r.path.starts_with("/app/"))
            .all(|r| r.auth == AuthKind::AppJwt)
    );

    let logs = captured.text();
    assert!(logs.contains("new GitHub App installation token"), "{logs}");
    assert!(logs.contains("getting a new one"), "{logs}");
    let current = host.push_token(&repo()).await.unwrap();
    for token in [first.expose(), current.expose()] {
        assert!(!logs.contains(token), "a token was logged");
    }
    assert!(!format!("{host:?}").contains(current.expose()));
    api.assert_no_violations();
}

#[tokio::test]
async fn an_apps_access_names_the_missing_permissions() {
    let api = scripted(GithubApi::start().await).await;
    let dir = tempfile::tempdir().unwrap();
    let host = app_client(
        &api,
        dir.path(),
        &[("contents", "write"), ("pull_requests", "read")],
    );
    let access = host.access(&repo()).await.unwrap();
    assert_eq!(access.identity, "app claudomator-test (installation 7)");
    assert!(access.can_push && !access.can_open_pulls);
    assert_eq!(
        access.missing,
        [
            "the App's permission `pull_requests: write` on acme/widgets to open pull requests (it has read)"
        ]
    );
    let elsewhere = RepoName::parse("acme/gadgets").unwrap();
    api.add_repo("acme/gadgets");
    let access = host.access(&elsewhere).await.unwrap();
    assert!(
        access.missing[0].contains("not installed on acme/gadgets"),
        "{access:?}"
    );
    api.assert_no_violations();
}

#[tokio::test]
async fn an_app_installed_again_is_found_again() {
    let api = scripted(GithubApi::start().await).await;
    let dir = tempfile::tempdir().unwrap();
    let write = [("contents", "write"), ("pull_requests", "write")];
    let host = app_client(&api, dir.path(), &write);
    host.repository(&repo()).await.unwrap();
    api.uninstall(7);
    api.install(42, 8, &[REPO], &write);
    host.repository(&repo()).await.unwrap();
    let lookups = api
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/installation"))
        .count();
    assert_eq!(lookups, 2);
    api.assert_no_violations();
}

#[tokio::test]
async fn a_secondary_rate_limit_is_waited_out() {
    let api = scripted(GithubApi::start().await).await;
    let host = token_client(&api, "tok-alice");
    api.secondary_limit("/repos/acme/widgets", 1, 1);
    let started = Instant::now();
    host.repository(&repo()).await.unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    let statuses: Vec<u16> = api.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [403, 200]);
    // A limit that outlasts the retries is a rate limit, not a refusal.
    api.secondary_limit("/repos/acme/widgets", 10, 0);
    let error = host.repository(&repo()).await.unwrap_err();
    assert!(matches!(error, HostError::RateLimited(_)), "{error}");
    api.assert_no_violations();
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    let api = scripted(GithubApi::start().await).await;
    let host = token_client(&api, "tok-alice");
    api.server_error("/repos/acme/widgets/pulls/1", 2, 502);
    host.open_pull(&repo(), &new_pull()).await.unwrap();
    assert_eq!(host.pull(&repo(), 1).await.unwrap().number, 1);
    // More failures than retries (4): the outage is the answer.
    api.server_error("/repos/acme/widgets/pulls/1", 10, 503);
    let error = host.pull(&repo(), 1).await.unwrap_err();
    assert!(matches!(error, HostError::Unavailable(_)), "{error}");
    let tries = api.requests().iter().filter(|r| r.status == 503).count();
    assert_eq!(tries, 5);
    api.assert_no_violations();
}

#[tokio::test]
async fn a_primary_limit_resetting_too_late_fails_at_once() {
    let api = scripted(GithubApi::start().await).await;
    let host = token_client(&api, "tok-alice");
    api.exhaust_rate_limit(SystemTime::now() + Duration::from_secs(3600));
    let started = Instant::now();
    let error = host.repository(&repo()).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let HostError::RateLimited(why) = &error else {
        panic!("{error}");
    };
    assert!(why.contains("used up until"), "{why}");
    assert_eq!(api.requests().len(), 1);
    // A reset within the allowed wait is waited for.
    api.exhaust_rate_limit(SystemTime::now() + Duration::from_secs(1));
    host.repository(&repo()).await.unwrap();
    api.assert_no_violations();
}

#[tokio::test]
async fn github_enterprise_server_is_reached_under_its_prefix() {
    let api = scripted(GithubApi::start_at("/api/v3").await).await;
    let host = token_client(&api, "tok-alice");
    assert!(host.api_url().ends_with("/api/v3"));
    host.repository(&repo()).await.unwrap();
    host.open_pull(&repo(), &new_pull()).await.unwrap();
    assert_eq!(api.requests().len(), 4);
    api.assert_no_violations();
}
