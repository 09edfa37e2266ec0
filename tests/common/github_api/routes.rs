//! The scripted server's one handler: prefix, OpenAPI check, faults,
//! credentials, then the operation's answer from the in-memory state, with
//! GitHub's status codes, messages and `x-ratelimit-*` headers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use serde_json::{Value, json};

use super::openapi::{percent_decode, spec};
use super::{
    AuthKind, CommentRec, IssuedToken, PullRec, Repo, Request, State, epoch, git, repo_key,
};

const DOCS: &str = "https://docs.github.com/rest";
const LIMIT: u64 = 5000;

pub fn router(state: Arc<Mutex<State>>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

/// Who a request is.
enum Who {
    Nobody,
    User(String),
    App(u64),
    Installation(u64),
}

/// An answer before the common headers.
struct Answer {
    status: u16,
    body: Value,
    headers: Vec<(&'static str, String)>,
}

fn answer(status: u16, body: Value) -> Answer {
    Answer {
        status,
        body,
        headers: Vec::new(),
    }
}

fn message(status: u16, text: &str) -> Answer {
    answer(
        status,
        json!({"message": text, "documentation_url": DOCS, "status": status.to_string()}),
    )
}

async fn handle(
    AxumState(state): AxumState<Arc<Mutex<State>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let mut s = state.lock().unwrap();
    let now = SystemTime::now();
    let full_path = uri.path().to_string();
    let query = uri.query().unwrap_or_default().to_string();
    let mut record = Request {
        method: method.to_string(),
        path: full_path.clone(),
        query: query.clone(),
        operation: None,
        auth: AuthKind::None,
        installation_token: None,
        status: 0,
        at: now,
    };
    let result = serve(
        &mut s,
        &method,
        &full_path,
        &query,
        &headers,
        &body,
        &mut record,
    );
    record.status = result.status;
    s.requests.push(record);
    s.used += 1;
    let (remaining, reset) = match s.exhausted_until {
        Some(until) if until > now => (0, epoch(until)),
        _ => (LIMIT.saturating_sub(s.used), epoch(now) + 3600),
    };
    let mut response = Response::builder()
        .status(StatusCode::from_u16(result.status).unwrap())
        .header("content-type", "application/json; charset=utf-8")
        .header("x-ratelimit-limit", LIMIT.to_string())
        .header("x-ratelimit-remaining", remaining.to_string())
        .header("x-ratelimit-reset", reset.to_string())
        .header("x-ratelimit-used", (LIMIT - remaining).to_string())
        .header("x-ratelimit-resource", "core")
        .header("x-github-request-id", format!("TEST:{}", s.requests.len()));
    for (name, value) in result.headers {
        response = response.header(name, value);
    }
    let body = if result.body.is_null() {
        Body::empty()
    } else {
        Body::from(result.body.to_string())
    };
    response.body(body).unwrap()
}

fn serve(
    s: &mut State,
    method: &Method,
    full_path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
    record: &mut Request,
) -> Answer {
    let Some(path) = full_path.strip_prefix(s.prefix.as_str()) else {
        s.violations.push(format!(
            "{method} {full_path}: outside the API prefix {:?}",
            s.prefix
        ));
        return message(404, "Not Found");
    };
    let path = if path.is_empty() { "/" } else { path };
    record.path = path.to_string();
    let Some(matched) = spec().find(method.as_str(), path) else {
        s.violations.push(format!(
            "{method} {path}: no such operation in GitHub's description"
        ));
        return message(404, "Not Found");
    };
    record.operation = Some(matched.op.id.clone());
    let pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                percent_decode(&k.replace('+', " ")),
                percent_decode(&v.replace('+', " ")),
            )
        })
        .collect();
    let problems = spec().check(&matched, &pairs, body);
    if !problems.is_empty() {
        for p in &problems {
            s.violations.push(format!("{method} {path}: {p}"));
        }
        return answer(
            422,
            json!({"message": "Invalid request.", "errors": problems, "documentation_url": DOCS, "status": "422"}),
        );
    }
    if headers.get("user-agent").is_none() {
        s.violations.push(format!(
            "{method} {path}: no User-Agent (GitHub answers 403)"
        ));
        return message(
            403,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header.",
        );
    }
    let now = SystemTime::now();
    if let Some(limit) = s
        .secondary
        .iter_mut()
        .find(|l| l.path == path && l.remaining > 0)
    {
        limit.remaining -= 1;
        let mut a = message(
            403,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. If you reach out to GitHub Support for help, please include the request ID TEST.",
        );
        a.headers
            .push(("retry-after", limit.retry_after.to_string()));
        return a;
    }
    if let Some(failure) = s
        .server_errors
        .iter_mut()
        .find(|f| f.path == path && f.remaining > 0)
    {
        failure.remaining -= 1;
        let status = failure.status;
        return message(status, "Server Error");
    }
    if s.exhausted_until.is_some_and(|until| until > now) {
        return message(
            403,
            "API rate limit exceeded for installation. If you reach out to GitHub Support for help, please include the request ID TEST.",
        );
    }
    let who = match authenticate(s, headers, record, now) {
        Ok(who) => who,
        Err(a) => return a,
    };
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).unwrap_or(Value::Null)
    };
    let p = &matched.params;
    let op = matched.op.id.as_str();
    let answer = match op {
        "users/get-authenticated" => get_user(s, &who),
        "apps/get-authenticated" => get_app(s, &who),
        "apps/get-repo-installation" => repo_installation(s, &who, &p["owner"], &p["repo"]),
        "apps/create-installation-access-token" => {
            create_token(s, &who, &p["installation_id"], now)
        }
        _ => {
            let key = repo_key(&p["owner"], &p["repo"]);
            let Some(access) = access(s, &who, &key) else {
                return message(404, "Not Found");
            };
            repo_op(s, op, &key, p, &pairs, &body, &who, access)
        }
    };
    if answer.status == 501 {
        s.violations.push(format!(
            "{method} {path}: {op} is valid but not scripted here"
        ));
    }
    answer
}

fn authenticate(
    s: &mut State,
    headers: &HeaderMap,
    record: &mut Request,
    now: SystemTime,
) -> Result<Who, Answer> {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Ok(Who::Nobody);
    };
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token "))
        .unwrap_or(value);
    if let Some(login) = s.users.get(token) {
        record.auth = AuthKind::UserToken;
        return Ok(Who::User(login.clone()));
    }
    if let Some(t) = s.installation_tokens.get(token) {
        record.auth = AuthKind::InstallationToken;
        record.installation_token = Some(t.ordinal);
        if t.expires_at <= now || !s.installations.contains_key(&t.installation) {
            return Err(message(401, "Bad credentials"));
        }
        return Ok(Who::Installation(t.installation));
    }
    if token.split('.').count() == 3 {
        record.auth = AuthKind::AppJwt;
        return check_jwt(s, token, now)
            .map(Who::App)
            .map_err(|e| message(401, &e));
    }
    record.auth = AuthKind::Unknown;
    Err(message(401, "Bad credentials"))
}

/// The app whose key signed this JWT, with GitHub's rules: RS256, `iss` the
/// app id, `iat` not in the future (60 s of drift), `exp` within 10 minutes
/// of `iat` and not past.
fn check_jwt(s: &State, token: &str, now: SystemTime) -> Result<u64, String> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.leeway = 0;
    for (id, app) in &s.apps {
        let key = DecodingKey::from_rsa_pem(app.public_key_pem.as_bytes()).expect("public key");
        let Ok(data) = decode::<Value>(token, &key, &validation) else {
            continue;
        };
        let claims = data.claims;
        let iss = match &claims["iss"] {
            Value::String(s) => s.parse::<u64>().ok(),
            v => v.as_u64(),
        };
        if iss != Some(*id) {
            return Err("'Issuer' claim ('iss') must be an Integer".into());
        }
        let (iat, exp) = (
            claims["iat"].as_u64().unwrap_or(0),
            claims["exp"].as_u64().unwrap_or(0),
        );
        if iat > epoch(now) + 60 {
            return Err(
                "'Issued at' claim ('iat') must be an Integer representing a time in the past"
                    .into(),
            );
        }
        if exp > iat + 600 {
            return Err("'Expiration time' claim ('exp') is too far in the future".into());
        }
        return Ok(*id);
    }
    Err("A JSON web token could not be decoded".into())
}

fn get_user(s: &State, who: &Who) -> Answer {
    match who {
        Who::User(login) => answer(200, user_json(s, login)),
        Who::Nobody => message(401, "Requires authentication"),
        _ => message(403, "Resource not accessible by integration"),
    }
}

fn get_app(s: &State, who: &Who) -> Answer {
    let Who::App(id) = who else {
        return message(401, "A JSON web token could not be decoded");
    };
    let app = &s.apps[id];
    answer(
        200,
        json!({"id": id, "slug": app.slug, "name": app.slug, "owner": {"login": "test-owner", "id": 1, "type": "Organization"},
               "html_url": format!("https://github.com/apps/{}", app.slug), "permissions": {}, "events": []}),
    )
}

fn repo_installation(s: &State, who: &Who, owner: &str, repo: &str) -> Answer {
    let Who::App(app_id) = who else {
        return message(401, "A JSON web token could not be decoded");
    };
    let key = repo_key(owner, repo);
    match s
        .installations
        .iter()
        .find(|(_, i)| i.app_id == *app_id && i.repos.contains(&key))
    {
        Some((id, i)) => answer(200, installation_json(*id, i, owner)),
        None => message(404, "Not Found"),
    }
}

fn create_token(s: &mut State, who: &Who, installation: &str, now: SystemTime) -> Answer {
    let Who::App(app_id) = who else {
        return message(401, "A JSON web token could not be decoded");
    };
    let id: u64 = installation.parse().unwrap_or(0);
    let Some(i) = s.installations.get(&id).filter(|i| i.app_id == *app_id) else {
        return message(404, "Not Found");
    };
    let permissions = i.permissions.clone();
    let ordinal = s.installation_tokens.len() + 1;
    let token = format!("ghs_test{ordinal:04}{}", epoch(now));
    let expires_at = now + s.token_lifetime;
    s.installation_tokens.insert(
        token.clone(),
        IssuedToken {
            installation: id,
            ordinal,
            expires_at,
        },
    );
    answer(
        201,
        json!({"token": token, "expires_at": rfc3339(expires_at), "permissions": permissions, "repository_selection": "selected"}),
    )
}

/// What a caller may do on a repository; `None`: it cannot see it.
#[derive(Clone, Copy)]
struct Access {
    push: bool,
    pulls_write: bool,
    issues_write: bool,
}

fn access(s: &State, who: &Who, key: &str) -> Option<Access> {
    let repo = s.repos.get(key)?;
    match who {
        Who::User(login) => {
            let word = repo.permissions.get(login)?;
            let push = matches!(word.as_str(), "admin" | "maintain" | "write");
            Some(Access {
                push,
                pulls_write: push,
                issues_write: push || word == "triage",
            })
        }
        Who::Installation(id) => {
            let i = s.installations.get(id)?;
            if !i.repos.iter().any(|r| r == key) {
                return None;
            }
            let write = |name: &str| i.permissions.get(name).is_some_and(|v| v == "write");
            Some(Access {
                push: write("contents"),
                pulls_write: write("pull_requests"),
                issues_write: write("issues") || write("pull_requests"),
            })
        }
        Who::Nobody if !repo.private => Some(Access {
            push: false,
            pulls_write: false,
            issues_write: false,
        }),
        _ => None,
    }
}

fn forbidden(who: &Who) -> Answer {
    match who {
        Who::Installation(_) => message(403, "Resource not accessible by integration"),
        Who::Nobody => message(401, "Requires authentication"),
        _ => message(403, "Resource not accessible by personal access token"),
    }
}

#[allow(clippy::too_many_arguments)]
fn repo_op(
    s: &mut State,
    op: &str,
    key: &str,
    p: &HashMap<String, String>,
    query: &[(String, String)],
    body: &Value,
    who: &Who,
    access: Access,
) -> Answer {
    let number = |name: &str| p.get(name).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    match op {
        "repos/get" => answer(200, repo_json(s, &s.repos[key], who)),
        "repos/get-collaborator-permission-level" => {
            let login = &p["username"];
            if !s.user_ids.contains_key(login) {
                return message(404, "Not Found");
            }
            let word = s.repos[key]
                .permissions
                .get(login)
                .cloned()
                .unwrap_or("none".into());
            let permission = match word.as_str() {
                "maintain" => "write",
                "triage" => "read",
                w => w,
            };
            answer(
                200,
                json!({"permission": permission, "role_name": word, "user": user_json(s, login)}),
            )
        }
        "pulls/create" => {
            if !access.pulls_write {
                return forbidden(who);
            }
            create_pull(s, key, body, who)
        }
        "pulls/get" => match s
            .pulls
            .iter()
            .find(|x| x.repo == key && x.number == number("pull_number"))
        {
            Some(pull) => answer(200, pull_json(s, pull)),
            None => message(404, "Not Found"),
        },
        "pulls/list" => {
            let get = |name: &str| {
                query
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            let state = get("state").unwrap_or("open");
            let head = get("head");
            let list: Vec<Value> = s
                .pulls
                .iter()
                .rev()
                .filter(|x| x.repo == key)
                .filter(|x| state == "all" || x.state == state)
                .filter(|x| head.is_none_or(|h| h == format!("{}:{}", s.repos[key].owner, x.head)))
                .filter(|x| get("base").is_none_or(|b| b == x.base))
                .map(|x| pull_json(s, x))
                .collect();
            answer(200, Value::Array(list))
        }
        "issues/add-labels" => {
            if !access.issues_write {
                return forbidden(who);
            }
            let Some(pull) = s
                .pulls
                .iter_mut()
                .find(|x| x.repo == key && x.number == number("issue_number"))
            else {
                return message(404, "Not Found");
            };
            let names = body.get("labels").unwrap_or(body);
            for name in names.as_array().into_iter().flatten() {
                let name = name.as_str().or(name["name"].as_str()).unwrap_or_default();
                if !pull.labels.iter().any(|l| l == name) {
                    pull.labels.push(name.to_string());
                }
            }
            let labels = pull.labels.iter().map(|l| label_json(l)).collect();
            answer(200, Value::Array(labels))
        }
        "pulls/request-reviewers" => {
            if !access.pulls_write {
                return forbidden(who);
            }
            let reviewers: Vec<String> = body["reviewers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect();
            let repo = &s.repos[key];
            if reviewers.iter().any(|r| !repo.permissions.contains_key(r)) {
                return answer(
                    422,
                    json!({"message": "Reviews may only be requested from collaborators. One or more of the users or teams you specified is not a collaborator of the repository.", "documentation_url": DOCS, "status": "422"}),
                );
            }
            let Some(index) = s
                .pulls
                .iter()
                .position(|x| x.repo == key && x.number == number("pull_number"))
            else {
                return message(404, "Not Found");
            };
            for r in reviewers {
                if !s.pulls[index].reviewers.contains(&r) {
                    s.pulls[index].reviewers.push(r);
                }
            }
            answer(201, pull_json(s, &s.pulls[index]))
        }
        "issues/create-comment" => {
            if !access.issues_write {
                return forbidden(who);
            }
            let n = number("issue_number");
            if !s.pulls.iter().any(|x| x.repo == key && x.number == n) {
                return message(404, "Not Found");
            }
            s.next_id += 1;
            let comment = CommentRec {
                id: s.next_id,
                repo: key.to_string(),
                number: n,
                body: body["body"].as_str().unwrap_or_default().to_string(),
                user: actor(s, who),
            };
            let json = comment_json(s, &comment);
            s.comments.push(comment);
            answer(201, json)
        }
        "issues/list-comments" => {
            let n = number("issue_number");
            let list = s
                .comments
                .iter()
                .filter(|c| c.repo == key && c.number == n)
                .map(|c| comment_json(s, c))
                .collect();
            answer(200, Value::Array(list))
        }
        "git/delete-ref" => {
            if !access.push {
                return forbidden(who);
            }
            let Some(branch) = p["ref"].strip_prefix("heads/") else {
                return answer(
                    422,
                    json!({"message": "Reference does not exist", "documentation_url": DOCS, "status": "422"}),
                );
            };
            let repo = s.repos.get_mut(key).unwrap();
            if branch_sha(repo, branch).is_none() {
                return answer(
                    422,
                    json!({"message": "Reference does not exist", "documentation_url": DOCS, "status": "422"}),
                );
            }
            match &repo.git_dir {
                Some(dir) => {
                    git(dir, &["update-ref", "-d", &format!("refs/heads/{branch}")])
                        .expect("git update-ref -d");
                }
                None => {
                    repo.branches.remove(branch);
                }
            }
            answer(204, Value::Null)
        }
        _ => message(501, "Not scripted"),
    }
}

fn create_pull(s: &mut State, key: &str, body: &Value, who: &Who) -> Answer {
    let field = |name: &str| body[name].as_str().unwrap_or_default().to_string();
    let repo = &s.repos[key];
    let head = field("head");
    let head = head
        .split_once(':')
        .map(|(_, b)| b.to_string())
        .unwrap_or(head);
    let base = field("base");
    let invalid = |field: &str| {
        answer(
            422,
            json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "field": field, "code": "invalid"}],
                   "documentation_url": DOCS, "status": "422"}),
        )
    };
    let Some(head_sha) = branch_sha(repo, &head) else {
        return invalid("head");
    };
    if branch_sha(repo, &base).is_none() {
        return invalid("base");
    }
    if s.pulls
        .iter()
        .any(|x| x.repo == key && x.head == head && x.base == base && x.state == "open")
    {
        return answer(
            422,
            json!({"message": "Validation Failed", "errors": [{"resource": "PullRequest", "code": "custom",
                   "message": format!("A pull request already exists for {}:{head}.", repo.owner)}],
                   "documentation_url": DOCS, "status": "422"}),
        );
    }
    let repo = s.repos.get_mut(key).unwrap();
    let number = repo.next_number;
    repo.next_number += 1;
    let pull = PullRec {
        repo: key.to_string(),
        number,
        title: field("title"),
        body: field("body"),
        head,
        head_sha,
        base,
        draft: body["draft"].as_bool().unwrap_or(false),
        state: "open".into(),
        merged: false,
        labels: Vec::new(),
        reviewers: Vec::new(),
        user: actor(s, who),
    };
    let json = pull_json(s, &pull);
    s.pulls.push(pull);
    answer(201, json)
}

/// The login shown as the author of what `who` writes.
fn actor(s: &State, who: &Who) -> String {
    match who {
        Who::User(login) => login.clone(),
        Who::Installation(id) => format!("{}[bot]", s.apps[&s.installations[id].app_id].slug),
        _ => "ghost".into(),
    }
}

/// The branch's head commit, from git when the repository has one.
pub fn branch_sha(repo: &Repo, branch: &str) -> Option<String> {
    match &repo.git_dir {
        Some(dir) => git(
            dir,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("refs/heads/{branch}"),
            ],
        ),
        None => repo.branches.get(branch).cloned(),
    }
}

fn user_json(s: &State, login: &str) -> Value {
    let id = s.user_ids.get(login).copied().unwrap_or(0);
    json!({"login": login, "id": id, "type": "User", "site_admin": false,
           "html_url": format!("https://github.com/{login}"), "url": format!("https://api.github.com/users/{login}")})
}

fn repo_json(s: &State, repo: &Repo, who: &Who) -> Value {
    let full = format!("{}/{}", repo.owner, repo.name);
    let mut json = json!({
        "id": repo.id, "name": repo.name, "full_name": full, "private": repo.private,
        "owner": {"login": repo.owner, "id": 1, "type": "Organization"},
        "html_url": format!("https://github.com/{full}"), "clone_url": repo.clone_url,
        "default_branch": repo.default_branch, "visibility": if repo.private { "private" } else { "public" },
    });
    if let Who::User(login) = who {
        let word = repo
            .permissions
            .get(login)
            .map(String::as_str)
            .unwrap_or("none");
        let rank = ["read", "triage", "write", "maintain", "admin"]
            .iter()
            .position(|w| *w == word)
            .map_or(0, |i| i + 1);
        json["permissions"] = json!({"pull": rank >= 1, "triage": rank >= 2, "push": rank >= 3, "maintain": rank >= 4, "admin": rank >= 5});
    }
    let _ = s;
    json
}

fn installation_json(id: u64, i: &super::Installation, owner: &str) -> Value {
    json!({"id": id, "app_id": i.app_id, "account": {"login": owner, "id": 1, "type": "Organization"},
           "permissions": i.permissions, "repository_selection": "selected", "target_type": "Organization"})
}

pub fn pull_json(s: &State, p: &PullRec) -> Value {
    let repo = &s.repos[&p.repo];
    let full = format!("{}/{}", repo.owner, repo.name);
    json!({
        "id": p.number + 100_000, "number": p.number, "state": if p.state == "open" { "open" } else { "closed" },
        "title": p.title, "body": p.body, "draft": p.draft, "merged": p.merged,
        "html_url": format!("https://github.com/{full}/pull/{}", p.number),
        "url": format!("https://api.github.com/repos/{full}/pulls/{}", p.number),
        "user": user_json(s, &p.user),
        "head": {"ref": p.head, "sha": p.head_sha, "label": format!("{}:{}", repo.owner, p.head)},
        "base": {"ref": p.base, "sha": branch_sha(repo, &p.base).unwrap_or_default(), "label": format!("{}:{}", repo.owner, p.base)},
        "labels": p.labels.iter().map(|l| label_json(l)).collect::<Vec<_>>(),
        "requested_reviewers": p.reviewers.iter().map(|r| user_json(s, r)).collect::<Vec<_>>(),
    })
}

fn label_json(name: &str) -> Value {
    json!({"id": name.len() as u64 + 1, "name": name, "color": "ededed", "default": false})
}

fn comment_json(s: &State, c: &CommentRec) -> Value {
    let repo = &s.repos[&c.repo];
    json!({"id": c.id, "body": c.body, "user": user_json(s, &c.user),
           "html_url": format!("https://github.com/{}/{}/pull/{}#issuecomment-{}", repo.owner, repo.name, c.number, c.id)})
}

/// `2026-12-03T18:40:00Z`, as GitHub writes times.
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}
