//! The scripted GitHub API server itself (tests/common/github_api.rs): it
//! checks requests against GitHub's real OpenAPI description, so a body off
//! the schema, an unknown path or a missing parameter is a violation, and it
//! answers like GitHub (credentials, rate-limit headers, faults).

mod common;

use std::time::{Duration, SystemTime};

use common::github_api::{AuthKind, GithubApi};
use serde_json::{Value, json};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent("claudomator-tests")
        .build()
        .unwrap()
}

/// One request (`"GET /user"`) with this bearer token, and GitHub's answer:
/// status, headers, JSON (`Null` when empty).
async fn call(
    api: &GithubApi,
    token: &str,
    request: &str,
    body: Option<Value>,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let (method, path) = request.split_once(' ').unwrap();
    let method: reqwest::Method = method.parse().unwrap();
    let mut request = client()
        .request(method, format!("{}{path}", api.api_url()))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let json = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    (status, headers, json)
}

/// `GET path` as alice.
async fn get(api: &GithubApi, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    call(api, "tok-alice", &format!("GET {path}"), None).await
}

/// `POST path` with this body as alice.
async fn post(
    api: &GithubApi,
    path: &str,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    call(api, "tok-alice", &format!("POST {path}"), Some(body)).await
}

/// `DELETE path` as alice.
async fn delete(api: &GithubApi, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    call(api, "tok-alice", &format!("DELETE {path}"), None).await
}

/// A user `alice` (token `tok-alice`) who may write to `acme/widgets`,
/// which has a branch `claudomator/t1`.
async fn scripted() -> GithubApi {
    let api = GithubApi::start().await;
    api.add_user("alice", "tok-alice");
    api.add_repo("acme/widgets");
    api.grant("acme/widgets", "alice", "write");
    api.add_branch("acme/widgets", "claudomator/t1", &"a".repeat(40));
    api
}

#[tokio::test]
async fn a_body_off_githubs_schema_is_a_violation_and_422() {
    let api = scripted().await;
    // `title` must be a string, `draft` a boolean.
    let (status, _, body) = post(
        &api,
        "/repos/acme/widgets/pulls",
        json!({"title": 7, "head": "claudomator/t1", "base": "main", "draft": "yes"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let violations = api.violations();
    assert_eq!(violations.len(), 2, "{violations:?}");
    assert!(
        violations[0].contains("body.title") || violations[1].contains("body.title"),
        "{violations:?}"
    );
    assert!(
        violations.iter().any(|v| v.contains("body.draft")),
        "{violations:?}"
    );
    assert!(api.pulls("acme/widgets").is_empty());
}

#[tokio::test]
async fn unknown_paths_missing_bodies_and_bad_labels_are_violations() {
    let api = scripted().await;
    let (status, _, _) = get(&api, "/repos/acme/widgets/pullz").await;
    assert_eq!(status, 404);
    // A comment needs a body with `body`.
    let (status, _, _) = post(
        &api,
        "/repos/acme/widgets/issues/1/comments",
        json!({"text": "hi"}),
    )
    .await;
    assert_eq!(status, 422);
    // Labels: at least one (minItems 1).
    let (status, _, _) = post(
        &api,
        "/repos/acme/widgets/issues/1/labels",
        json!({"labels": []}),
    )
    .await;
    assert_eq!(status, 422);
    // A path parameter of type integer.
    let (status, _, _) = get(&api, "/repos/acme/widgets/pulls/abc").await;
    assert_eq!(status, 422);
    let violations = api.violations();
    assert_eq!(violations.len(), 4, "{violations:#?}");
    assert!(
        violations[0].contains("no such operation"),
        "{violations:?}"
    );
    assert!(
        violations[1].contains("required property body missing"),
        "{violations:?}"
    );
    assert!(violations[2].contains("minItems"), "{violations:?}");
    assert!(violations[3].contains("pull_number"), "{violations:?}");
}

#[tokio::test]
async fn valid_requests_are_answered_like_github_with_rate_limit_headers() {
    let api = scripted().await;
    let (status, headers, pull) = post(&api, "/repos/acme/widgets/pulls", json!({"title": "Add it", "head": "claudomator/t1", "base": "main", "body": "why", "draft": false}))
    .await;
    assert_eq!(status, 201, "{pull}");
    assert_eq!(pull["number"], 1);
    assert_eq!(pull["head"]["sha"], "a".repeat(40));
    for name in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-used",
    ] {
        assert!(headers.contains_key(name), "{name}");
    }
    // The same head again: GitHub's 422, not a violation.
    let (status, _, again) = post(
        &api,
        "/repos/acme/widgets/pulls",
        json!({"title": "Add it", "head": "claudomator/t1", "base": "main"}),
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        again["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("already exists"),
        "{again}"
    );
    let (status, _, list) = get(
        &api,
        "/repos/acme/widgets/pulls?head=acme:claudomator/t1&state=open",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 1);
    // A git ref with slashes (x-multi-segment); gone the second time.
    let (status, _, _) = delete(&api, "/repos/acme/widgets/git/refs/heads/claudomator/t1").await;
    assert_eq!(status, 204);
    let (status, _, gone) = delete(&api, "/repos/acme/widgets/git/refs/heads/claudomator/t1").await;
    assert_eq!(
        (status, gone["message"].as_str()),
        (422, Some("Reference does not exist"))
    );
    // Bad credentials.
    let (status, _, bad) = call(&api, "nope", "GET /user", None).await;
    assert_eq!(
        (status, bad["message"].as_str()),
        (401, Some("Bad credentials"))
    );
    assert_eq!(api.requests().last().unwrap().auth, AuthKind::Unknown);
    api.assert_no_violations();
}

#[tokio::test]
async fn faults_secondary_and_primary_limits() {
    let api = scripted().await;
    api.secondary_limit("/user", 1, 3);
    let (status, headers, body) = get(&api, "/user").await;
    assert_eq!(status, 403);
    assert_eq!(headers["retry-after"], "3");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("secondary rate limit")
    );
    let (status, _, me) = get(&api, "/user").await;
    assert_eq!((status, me["login"].as_str()), (200, Some("alice")));
    let reset = SystemTime::now() + Duration::from_secs(900);
    api.exhaust_rate_limit(reset);
    let (status, headers, _) = get(&api, "/user").await;
    assert_eq!(status, 403);
    assert_eq!(headers["x-ratelimit-remaining"], "0");
    let reset_secs = reset
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(
        headers["x-ratelimit-reset"],
        reset_secs.to_string().as_str()
    );
    api.assert_no_violations();
}

#[tokio::test]
async fn the_enterprise_prefix_is_required() {
    let api = GithubApi::start_at("/api/v3").await;
    api.add_user("alice", "tok-alice");
    assert!(api.api_url().ends_with("/api/v3"));
    let (status, _, me) = get(&api, "/user").await;
    assert_eq!((status, me["login"].as_str()), (200, Some("alice")));
    api.assert_no_violations();
    let response = client()
        .get(format!("http://{}/user", api.addr()))
        .bearer_auth("tok-alice")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(
        api.violations()[0].contains("outside the API prefix"),
        "{:?}",
        api.violations()
    );
}

/// A GitHub App's JWT, as GitHub wants it (RS256, `iss` the app id).
fn app_jwt(private_key: &std::path::Path, app_id: u64, lifetime: u64) -> String {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iat": now - 60, "exp": now + lifetime, "iss": app_id.to_string()});
    let key =
        jsonwebtoken::EncodingKey::from_rsa_pem(&std::fs::read(private_key).unwrap()).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .unwrap()
}

#[tokio::test]
async fn an_app_gets_installation_tokens_that_expire() {
    let dir = tempfile::tempdir().unwrap();
    let (private_key, public_key) = common::github_api::app_key_pair(dir.path());
    let api = scripted().await;
    api.add_app(42, "claudomator-test", &public_key);
    api.install(
        42,
        7,
        &["acme/widgets"],
        &[("contents", "write"), ("pull_requests", "write")],
    );
    let jwt = app_jwt(&private_key, 42, 540);
    let (status, _, app) = call(&api, &jwt, "GET /app", None).await;
    assert_eq!(
        (status, app["slug"].as_str()),
        (200, Some("claudomator-test"))
    );
    let (status, _, installation) =
        call(&api, &jwt, "GET /repos/acme/widgets/installation", None).await;
    assert_eq!((status, installation["id"].as_u64()), (200, Some(7)));
    let (status, _, token) =
        call(&api, &jwt, "POST /app/installations/7/access_tokens", None).await;
    assert_eq!(status, 201, "{token}");
    let token = token["token"].as_str().unwrap().to_string();
    let (status, _, _) = call(&api, &token, "GET /repos/acme/widgets", None).await;
    assert_eq!(status, 200);
    api.expire_installation_tokens();
    let (status, _, bad) = call(&api, &token, "GET /repos/acme/widgets", None).await;
    assert_eq!(
        (status, bad["message"].as_str()),
        (401, Some("Bad credentials"))
    );
    let last = api.requests().pop().unwrap();
    assert_eq!(
        (last.auth, last.installation_token),
        (AuthKind::InstallationToken, Some(1))
    );
    // A JWT that lives longer than GitHub allows (10 minutes).
    let (status, _, _) = call(&api, &app_jwt(&private_key, 42, 1200), "GET /app", None).await;
    assert_eq!(status, 401);
    api.assert_no_violations();
}

#[tokio::test]
async fn a_repository_on_disk_has_its_branches_read_and_deleted_in_git() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    common::init_git_repo(&project);
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(&project)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )
    };
    assert!(git(&["branch", "claudomator/t1"]).0);
    let (_, sha) = git(&["rev-parse", "claudomator/t1"]);
    let api = GithubApi::start().await;
    api.add_user("alice", "tok-alice");
    api.add_repo_at("acme/proj", &project);
    api.grant("acme/proj", "alice", "admin");

    let (status, _, repo) = get(&api, "/repos/acme/proj").await;
    assert_eq!(status, 200);
    assert_eq!(repo["clone_url"], project.display().to_string());
    assert_eq!(repo["default_branch"], "trunk");
    assert_eq!(repo["permissions"]["admin"], true);
    let (status, _, pull) = post(
        &api,
        "/repos/acme/proj/pulls",
        json!({"title": "t1", "head": "claudomator/t1", "base": "trunk"}),
    )
    .await;
    assert_eq!(status, 201, "{pull}");
    assert_eq!(pull["head"]["sha"], sha);
    // A head that is not a branch there: GitHub's 422.
    let (status, _, _) = post(
        &api,
        "/repos/acme/proj/pulls",
        json!({"title": "t2", "head": "claudomator/t2", "base": "trunk"}),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _, _) = delete(&api, "/repos/acme/proj/git/refs/heads/claudomator/t1").await;
    assert_eq!(status, 204);
    assert!(
        !git(&[
            "rev-parse",
            "--verify",
            "--quiet",
            "refs/heads/claudomator/t1"
        ])
        .0
    );
    assert!(!api.has_branch("acme/proj", "claudomator/t1"));
    api.assert_no_violations();
}
