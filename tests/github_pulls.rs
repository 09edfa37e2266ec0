//! Pull requests end to end, with real parts: the real `claude` CLI against
//! the scripted Anthropic server, the GitHub client (`claudomator::github`)
//! against the scripted GitHub API (which checks every request against
//! GitHub's OpenAPI description), a local bare repository as the pushed-to
//! remote, and real webhook deliveries (`@octokit/webhooks-examples`,
//! Codertocat/Hello-World) with the fields a case needs changed (the pull
//! request's number and head, the review's state, the sender), signed as
//! GitHub signs them.
//!
//! Without the claude CLI the test prints `SKIPPED` and passes, unless `CI`
//! is set.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use claudomator::core::codehost::{CodeHost, CodeHosts, RepoName, Secret};
use claudomator::core::model::PullMode;
use claudomator::github::{ApiSettings, Credentials, GithubClient};
use claudomator::proto as pb;
use common::github_api::GithubApi;
use common::{Client, TestServer, get, start_server_with_hosts, submit, wait_for};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use support::anthropic_mock::{AnthropicMock, Script};
use support::claude_env::{claude_or_skip, configure_claude};
use support::webhook_examples::example;

const SECRET: &str = "pull-webhook-secret";
const REPO: &str = "Codertocat/Hello-World";

/// The first recorded `event` delivery with this action.
fn recorded(event: &str, action: &str) -> Value {
    example(event, |p| p["action"] == action)
}

fn signature_of(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Posts `payload` as GitHub does; the shim's answer as JSON.
async fn deliver(server: &TestServer, event: &str, payload: &Value, delivery: &str) -> Value {
    let body = serde_json::to_vec(payload).unwrap();
    let response = reqwest::Client::new()
        .post(format!("http://{}/webhooks/github", server.http_addr))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", signature_of(&body))
        .header("user-agent", "GitHub-Hookshot/test")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let answer: Value = response.json().await.unwrap();
    eprintln!("webhook {event} {delivery} -> {answer}");
    answer
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The pull request a task's `GetTask` shows, once it has a number.
async fn pull_of(client: &mut Client, id: &str, not_head: &str) -> pb::PullRequest {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let task = get(client, id).await;
        if let Some(pull) = task.pull_request
            && pull.number > 0
            && pull.head_sha != not_head
        {
            return pull;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pull request: {}",
            task.state_reason
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `claudomator ARGS --server` against the test server: its stdout.
async fn cli(server: &TestServer, args: &[&str]) -> String {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_claudomator"))
        .args(args)
        .args(["--server", &server.addr.to_string()])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "claudomator {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Waits until the pull request has `n` comments.
async fn comments(api: &GithubApi, number: u64, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let comments = api.comments(REPO, number);
        if comments.len() >= n {
            return comments;
        }
        assert!(std::time::Instant::now() < deadline, "{comments:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A recorded review, changed to request changes on `sha` of `number`.
fn review(number: u64, sha: &str, sender: &str, body: &str) -> Value {
    let mut payload = recorded("pull_request_review", "submitted");
    payload["review"]["state"] = json!("changes_requested");
    payload["review"]["body"] = json!(body);
    payload["review"]["commit_id"] = json!(sha);
    payload["pull_request"]["number"] = json!(number);
    payload["pull_request"]["head"]["sha"] = json!(sha);
    payload["sender"]["login"] = json!(sender);
    payload
}

/// A recorded issue comment, moved onto pull request `number`.
fn comment(number: u64, sender: &str, body: &str) -> Value {
    let mut payload = recorded("issue_comment", "created");
    payload["issue"]["number"] = json!(number);
    payload["issue"]["pull_request"] =
        json!({"url": format!("https://api.github.com/repos/{REPO}/pulls/{number}")});
    payload["comment"]["body"] = json!(body);
    payload["sender"]["login"] = json!(sender);
    payload
}

struct World {
    api: GithubApi,
    server: TestServer,
    mock: AnthropicMock,
    _home: tempfile::TempDir,
    _bare: tempfile::TempDir,
}

/// A server whose project `other` mirrors Codertocat/Hello-World on the
/// scripted GitHub, opening pull requests when its tasks finish; pushes go
/// to a bare repository. Codertocat may write; mallory may only read.
async fn world(max_resumes: u32) -> World {
    world_on(max_resumes, None, "").await
}

/// `world`, on `database` (else the test database) as server `server_id`
/// (else the default).
async fn world_on(max_resumes: u32, database: Option<String>, server_id: &str) -> World {
    let api = GithubApi::start().await;
    api.add_user("claudomator-bot", "tok-bot");
    api.add_user("Codertocat", "tok-codertocat");
    api.add_user("mallory", "tok-mallory");
    let bare = tempfile::tempdir().unwrap();
    git(bare.path(), &["init", "--quiet", "--bare", "-b", "trunk"]);
    let client = GithubClient::new(
        ApiSettings::new(api.api_url()),
        Credentials::Token(Secret::new("tok-bot")),
    )
    .unwrap();
    let mut hosts = CodeHosts::new();
    hosts.insert(
        "other",
        RepoName::parse(REPO).unwrap(),
        Arc::new(client) as Arc<dyn CodeHost>,
    );
    let home = tempfile::tempdir().unwrap();
    let mock = AnthropicMock::start(Script::Bash("ls -a >> listing.txt".into()));
    let bare_path: PathBuf = bare.path().to_path_buf();
    let server = start_server_with_hosts(
        |c| {
            configure_claude(c, &mock.base_url(), home.path(), 1);
            c.executor.enabled = true;
            c.executor.poll_interval = "200ms".into();
            c.github.webhook_secret = SECRET.into();
            c.github.ignore_check_apps = Vec::new();
            c.pull_requests.max_resumes = max_resumes;
            c.pull_requests.labels = vec!["claudomator".into()];
            if let Some(database) = database {
                c.database_url = database;
                // One at a time, so a second task is likely the other's.
                c.executor.max_concurrent = 1;
            }
            c.executor.server_id = server_id.into();
            let project = &mut c.projects[1];
            project.github = Some(REPO.into());
            project.pull_requests = Some(PullMode::OnComplete);
            let bare = bare_path.display().to_string();
            git(&project.path, &["push", "--quiet", &bare, "trunk"]);
        },
        hosts,
    )
    .await;
    api.add_repo_at(REPO, bare.path());
    for (login, permission) in [
        ("claudomator-bot", "write"),
        ("Codertocat", "write"),
        ("mallory", "read"),
    ] {
        api.grant(REPO, login, permission);
    }
    World {
        api,
        server,
        mock,
        _home: home,
        _bare: bare,
    }
}

fn spec() -> pb::TaskSpec {
    pb::TaskSpec {
        name: "List the files".into(),
        instructions: "List the files into listing.txt.".into(),
        project: "other".into(),
        agent: Some(pb::AgentSettings {
            r#type: pb::AgentType::Claude as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_task_opens_a_pull_request_and_its_feedback_loops_back_into_the_same_session() {
    let test = "a_task_opens_a_pull_request_and_its_feedback_loops_back_into_the_same_session";
    if claude_or_skip(test).is_none() {
        return;
    }
    let w = world(3).await;
    let mut client = w.server.client().await;
    let task = submit(&mut client, spec()).await;
    let id = task.id.clone();
    let branch = format!("claudomator/{id}");

    // The run finishes: READY, its branch pushed, a pull request opened.
    let ready = wait_for(&mut client, &id, &[pb::TaskState::Ready]).await;
    let pull = pull_of(&mut client, &id, "").await;
    assert_eq!(
        ready.spec.unwrap().pull_requests,
        pb::PullRequests::OnComplete as i32
    );
    assert_eq!(pull.repository, REPO);
    assert_eq!(pull.state, "open");
    assert_eq!(pull.head_ref, branch);
    assert_eq!(pull.base_ref, "trunk");
    assert_eq!(git(w._bare.path(), &["rev-parse", &branch]), pull.head_sha);
    let opened = w.api.pulls(REPO);
    assert_eq!(opened.len(), 1);
    let body = opened[0]["body"].as_str().unwrap();
    eprintln!("--- pull request #{} body\n{body}\n---", pull.number);
    assert_eq!(opened[0]["title"], "List the files");
    assert_eq!(opened[0]["labels"][0]["name"], "claudomator");
    for part in [
        "| `listing.txt` |",
        "- agent: claude",
        "tokens:",
        &format!("claudomator get {id}"),
        &format!("claudomator logs -f {id}"),
    ] {
        assert!(body.contains(part), "`{part}` in the body:\n{body}");
    }

    // The CLI shows it: `get` (human and JSON) and `pr` (found, not opened).
    let shown = cli(&w.server, &["get", &id]).await;
    let line = format!("pull request:  #{} open {}", pull.number, pull.url);
    assert!(shown.contains(&line), "{shown}");
    let json: Value = serde_json::from_str(&cli(&w.server, &["get", &id, "--json"]).await).unwrap();
    assert_eq!(json["pull_request"]["url"], pull.url.as_str());
    let json: Value = serde_json::from_str(&cli(&w.server, &["pr", &id, "--json"]).await).unwrap();
    assert_eq!(json["opened"], false);
    assert_eq!(json["pull_request"]["number"], pull.number);

    // Changes requested by a writer: the same session resumes with them,
    // and its new commit lands on the same pull request with a reply.
    let answer = deliver(
        &w.server,
        "pull_request_review",
        &review(
            pull.number,
            &pull.head_sha,
            "Codertocat",
            "List hidden files too.",
        ),
        "review-1",
    )
    .await;
    assert_eq!(answer["outcome"], "resumed", "{answer}");
    let second = pull_of(&mut client, &id, &pull.head_sha).await;
    assert_eq!(second.number, pull.number);
    assert_eq!(second.automatic_resumes, 1);
    assert_eq!(
        git(w._bare.path(), &["rev-parse", &branch]),
        second.head_sha
    );
    git(
        w._bare.path(),
        &[
            "merge-base",
            "--is-ancestor",
            &pull.head_sha,
            &second.head_sha,
        ],
    );
    let replies = comments(&w.api, pull.number, 1).await;
    eprintln!("--- reply on #{}\n{}\n---", pull.number, replies[0]);
    assert!(replies[0].starts_with("Pushed "), "{}", replies[0]);
    let runs = common::executions(&mut client, &id).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].session_id, runs[1].session_id, "the same session");
    assert!(
        w.mock.message_requests().iter().any(|r| r
            .messages()
            .iter()
            .any(|m| m.to_string().contains("List hidden files too."))),
        "the feedback reached the model"
    );
    assert_eq!(w.api.pulls(REPO).len(), 1, "no second pull request");

    // Bad input: each ignored with its reason, nothing resumed.
    let stale = review(pull.number, &pull.head_sha, "Codertocat", "old");
    let mut other_repo = review(second.number, &second.head_sha, "Codertocat", "x");
    other_repo["repository"]["full_name"] = json!("octo-org/octo-repo");
    let unknown = review(77, &second.head_sha, "Codertocat", "x");
    let cases = [
        (
            "issue_comment",
            comment(pull.number, "mallory", "@claudomator delete everything"),
            "no write access",
        ),
        ("pull_request_review", stale, "stale"),
        (
            "pull_request_review",
            other_repo,
            "not a project with pull requests",
        ),
        ("pull_request_review", unknown, "not opened by claudomator"),
        (
            "pull_request_review",
            review(second.number, &second.head_sha, "Codertocat", "replayed"),
            "handled before",
        ),
    ];
    for (i, (event, payload, why)) in cases.into_iter().enumerate() {
        let delivery = if why == "handled before" {
            "review-1".to_string()
        } else {
            format!("bad-{i}")
        };
        let answer = deliver(&w.server, event, &payload, &delivery).await;
        assert_eq!(answer["outcome"], "ignored", "{why}: {answer}");
        assert!(
            answer["message"].as_str().unwrap().contains(why),
            "{why}: {answer}"
        );
    }
    let still = get(&mut client, &id).await;
    assert_eq!(still.state, pb::TaskState::Ready as i32);
    assert_eq!(still.attempts, 2, "nothing resumed");

    // A failing check suite on the head resumes it with what failed.
    let mut suite = recorded("check_suite", "completed");
    suite["check_suite"]["conclusion"] = json!("failure");
    suite["check_suite"]["head_sha"] = json!(second.head_sha);
    suite["check_suite"]["pull_requests"][0]["number"] = json!(second.number);
    let answer = deliver(&w.server, "check_suite", &suite, "suite-1").await;
    assert_eq!(answer["outcome"], "resumed", "{answer}");
    let third = pull_of(&mut client, &id, &second.head_sha).await;
    assert_eq!(third.automatic_resumes, 2);
    comments(&w.api, pull.number, 2).await;

    // Merged: the task is COMPLETED.
    let mut closed = recorded("pull_request", "closed");
    closed["number"] = json!(pull.number);
    closed["pull_request"]["number"] = json!(pull.number);
    closed["pull_request"]["merged"] = json!(true);
    let answer = deliver(&w.server, "pull_request", &closed, "merged-1").await;
    assert_eq!(answer["outcome"], "completed", "{answer}");
    let done = get(&mut client, &id).await;
    assert_eq!(done.state, pb::TaskState::Completed as i32);
    assert_eq!(done.pull_request.unwrap().state, "merged");
    w.api.assert_no_violations();
}

#[tokio::test]
async fn past_the_cap_feedback_becomes_a_question_and_a_closed_pull_request_cancels() {
    let test = "past_the_cap_feedback_becomes_a_question_and_a_closed_pull_request_cancels";
    if claude_or_skip(test).is_none() {
        return;
    }
    let w = world(1).await;
    let mut client = w.server.client().await;
    let id = submit(&mut client, spec()).await.id;
    wait_for(&mut client, &id, &[pb::TaskState::Ready]).await;
    let pull = pull_of(&mut client, &id, "").await;

    let answer = deliver(
        &w.server,
        "issue_comment",
        &comment(pull.number, "Codertocat", "@claudomator add a heading"),
        "c-1",
    )
    .await;
    assert_eq!(answer["outcome"], "resumed", "{answer}");
    let second = pull_of(&mut client, &id, &pull.head_sha).await;
    wait_for(&mut client, &id, &[pb::TaskState::Ready]).await;

    // The cap (1) is reached: the next feedback asks a person.
    let answer = deliver(
        &w.server,
        "issue_comment",
        &comment(second.number, "Codertocat", "@Claudomator and a footer"),
        "c-2",
    )
    .await;
    assert_eq!(answer["outcome"], "blocked", "{answer}");
    let blocked = get(&mut client, &id).await;
    assert_eq!(blocked.state, pb::TaskState::Blocked as i32);
    let question = blocked.question.unwrap();
    assert!(question.text.contains("max_resumes"), "{}", question.text);
    assert!(question.context.contains("and a footer"));

    // Answered, it runs again; then the pull request is closed unmerged.
    client
        .answer_question(pb::AnswerQuestionRequest {
            task_id: id.clone(),
            answer: "Yes, add the footer.".into(),
        })
        .await
        .unwrap();
    pull_of(&mut client, &id, &second.head_sha).await;
    wait_for(&mut client, &id, &[pb::TaskState::Ready]).await;
    let mut closed = recorded("pull_request", "closed");
    closed["pull_request"]["number"] = json!(pull.number);
    let answer = deliver(&w.server, "pull_request", &closed, "closed-1").await;
    assert_eq!(answer["outcome"], "cancelled", "{answer}");
    let cancelled = get(&mut client, &id).await;
    assert_eq!(cancelled.state, pb::TaskState::Cancelled as i32);
    assert!(cancelled.state_reason.contains("closed without merging"));
    w.api.assert_no_violations();
}

#[tokio::test]
async fn claudomator_pr_opens_the_pull_request_of_reviewed_work_that_has_none() {
    let test = "claudomator_pr_opens_the_pull_request_of_reviewed_work_that_has_none";
    if claude_or_skip(test).is_none() {
        return;
    }
    let w = world(3).await;
    let mut client = w.server.client().await;
    let id = submit(
        &mut client,
        pb::TaskSpec {
            review_required: true,
            pull_requests: pb::PullRequests::Off as i32,
            ..spec()
        },
    )
    .await
    .id;
    wait_for(&mut client, &id, &[pb::TaskState::Ready]).await;
    assert!(
        get(&mut client, &id).await.pull_request.is_none(),
        "off: none opened"
    );
    assert!(w.api.pulls(REPO).is_empty());

    let printed = cli(&w.server, &["pr", &id]).await;
    assert!(printed.starts_with("opened pull request #1\n"), "{printed}");
    let pull = get(&mut client, &id).await.pull_request.unwrap();
    assert!(printed.contains(&pull.url), "{printed}");
    assert_eq!(w.api.pulls(REPO).len(), 1);
    let again = cli(&w.server, &["pr", &id]).await;
    assert!(!again.contains("opened"), "{again}");
    w.api.assert_no_violations();
}

#[tokio::test]
async fn someone_elses_failing_pull_request_gets_a_triage_fix_onto_its_branch() {
    let test = "someone_elses_failing_pull_request_gets_a_triage_fix_onto_its_branch";
    if claude_or_skip(test).is_none() {
        return;
    }
    let w = world(3).await;
    // A contributor's branch, in the project and on GitHub, with a pull
    // request of its own.
    let project = w.server.config.projects[1].path.clone();
    git(&project, &["checkout", "--quiet", "-b", "feature"]);
    std::fs::write(project.join("feature.txt"), "half done\n").unwrap();
    git(&project, &["add", "feature.txt"]);
    git(
        &project,
        &[
            "-c",
            "user.name=C",
            "-c",
            "user.email=c@example.com",
            "commit",
            "--quiet",
            "-m",
            "wip",
        ],
    );
    let head = git(&project, &["rev-parse", "HEAD"]);
    git(&project, &["checkout", "--quiet", "trunk"]);
    let bare = w._bare.path().display().to_string();
    git(&project, &["push", "--quiet", &bare, "feature"]);
    let contributor = GithubClient::new(
        ApiSettings::new(w.api.api_url()),
        Credentials::Token(Secret::new("tok-codertocat")),
    )
    .unwrap();
    let theirs = contributor
        .open_pull(
            &RepoName::parse(REPO).unwrap(),
            &claudomator::core::codehost::NewPull {
                title: "A feature".into(),
                body: "Work in progress.".into(),
                head: "feature".into(),
                base: "trunk".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    // Its checks fail: a triage task runs on its head...
    let mut suite = recorded("check_suite", "completed");
    suite["check_suite"]["conclusion"] = json!("failure");
    suite["check_suite"]["head_sha"] = json!(head);
    suite["check_suite"]["head_branch"] = json!("feature");
    suite["check_suite"]["pull_requests"][0]["number"] = json!(theirs.number);
    let answer = deliver(&w.server, "check_suite", &suite, "suite-theirs").await;
    assert_eq!(answer["outcome"], "created", "{answer}");
    let id = answer["task_id"].as_str().unwrap().to_string();
    let mut client = w.server.client().await;
    let fix = pull_of(&mut client, &id, "").await;

    // ...and offers its fix onto that branch, saying so on theirs.
    let pulls = w.api.pulls(REPO);
    let offered = pulls
        .iter()
        .find(|p| p["number"] == fix.number)
        .expect("the fix's pull request");
    assert_eq!(offered["base"]["ref"], "feature");
    assert!(
        offered["title"]
            .as_str()
            .unwrap()
            .starts_with(&format!("Fix the failing checks of #{}", theirs.number)),
        "{offered}"
    );
    let said = comments(&w.api, theirs.number, 1).await;
    eprintln!("--- comment on #{}\n{}\n---", theirs.number, said[0]);
    assert!(said[0].contains(&fix.url), "{}", said[0]);
    git(
        w._bare.path(),
        &["merge-base", "--is-ancestor", &head, &fix.head_sha],
    );
    w.api.assert_no_violations();
}

/// Two servers on one PostgreSQL database, one project (the same
/// repository on disk), both hearing every change: the one that ran the
/// task opens its pull request, once, and either takes its feedback.
#[tokio::test]
async fn two_servers_on_one_database_open_one_pull_request() {
    let test = "two_servers_on_one_database_open_one_pull_request";
    if claude_or_skip(test).is_none() {
        return;
    }
    let database = common::postgres_database().await;
    let w = world_on(3, Some(database.clone()), "one").await;
    let project = w.server.config.projects[1].path.clone();
    let home = tempfile::tempdir().unwrap();
    let client = GithubClient::new(
        ApiSettings::new(w.api.api_url()),
        Credentials::Token(Secret::new("tok-bot")),
    )
    .unwrap();
    let mut hosts = CodeHosts::new();
    hosts.insert("other", RepoName::parse(REPO).unwrap(), Arc::new(client));
    let second = start_server_with_hosts(
        |c| {
            configure_claude(c, &w.mock.base_url(), home.path(), 1);
            c.database_url = database;
            c.executor.enabled = true;
            c.executor.server_id = "two".into();
            c.executor.max_concurrent = 1;
            c.executor.poll_interval = "200ms".into();
            c.github.webhook_secret = SECRET.into();
            c.projects[1].path = project;
            c.projects[1].github = Some(REPO.into());
            c.projects[1].pull_requests = Some(PullMode::OnComplete);
        },
        hosts,
    )
    .await;

    let mut client = second.client().await;
    let ids = [
        submit(&mut client, spec()).await.id,
        submit(&mut client, spec()).await.id,
    ];
    for id in &ids {
        wait_for(&mut client, id, &[pb::TaskState::Ready]).await;
        pull_of(&mut client, id, "").await;
    }
    // Each task has one pull request, whichever server ran it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.api.pulls(REPO).len(), ids.len());
    let ran_on: Vec<String> = {
        let mut servers = Vec::new();
        for id in &ids {
            let runs = common::executions(&mut client, id).await;
            servers.push(runs[0].server_id.clone());
        }
        servers
    };
    eprintln!("ran on {ran_on:?}");

    // Feedback through the server that did not run it resumes it there.
    let pull = get(&mut client, &ids[0]).await.pull_request.unwrap();
    let other = if ran_on[0] == "one" {
        &second
    } else {
        &w.server
    };
    let answer = deliver(
        other,
        "pull_request_review",
        &review(pull.number, &pull.head_sha, "Codertocat", "Once more."),
        "cluster-review",
    )
    .await;
    assert_eq!(answer["outcome"], "resumed", "{answer}");
    let again = deliver(
        if std::ptr::eq(other, &second) {
            &w.server
        } else {
            &second
        },
        "pull_request_review",
        &review(pull.number, &pull.head_sha, "Codertocat", "Once more."),
        "cluster-review",
    )
    .await;
    assert_eq!(again["outcome"], "ignored", "one delivery, once: {again}");
    let updated = pull_of(&mut client, &ids[0], &pull.head_sha).await;
    assert_eq!(updated.number, pull.number);
    assert_eq!(w.api.pulls(REPO).len(), ids.len(), "no new pull request");
    w.api.assert_no_violations();
}
