//! `Pulls` over the executor's harness (a real store, a git project, fake
//! agents), a `FakeHost` and a local bare repository as the push remote.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::fake::FakeHost;
use super::*;
use crate::core::codehost::Permission;
use crate::core::executor::testing::Harness;
use crate::core::model::AgentType::Claude;
use crate::core::runner::FakeStep;

struct Setup {
    h: Harness,
    host: Arc<FakeHost>,
    pulls: Pulls,
    remote: tempfile::TempDir,
    _stop: tokio_util::sync::DropGuard,
}

async fn setup(settings: PullSettings) -> Setup {
    let h = Harness::start(&[Claude], |_| {}).await;
    let remote = tempfile::tempdir().unwrap();
    git(remote.path(), &["init", "--quiet", "--bare"]);
    let repo = RepoName::parse("octo/app").unwrap();
    let host = Arc::new(FakeHost::new(
        &repo,
        &remote.path().display().to_string(),
        "trunk",
    ));
    host.grant("alice", Permission::Write);
    host.grant("rita", Permission::Read);
    let project = PullProject {
        path: h.project(),
        repo,
        host: host.clone(),
    };
    let pulls = Pulls::new(
        h.tasks.clone(),
        settings,
        HashMap::from([("p".to_string(), project)]),
        "unit".into(),
    );
    let cursor = h.tasks.bus().current().await.unwrap();
    let stop = CancellationToken::new();
    pulls.start(cursor, stop.clone());
    Setup {
        h,
        host,
        pulls,
        remote,
        _stop: stop.drop_guard(),
    }
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
    assert!(out.status.success(), "git {args:?}: {:?}", out);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Setup {
    /// Waits until `check` holds of the task's pull request.
    async fn pull_where(&self, task: &Task, check: impl Fn(&PullRecord) -> bool) -> PullRecord {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(p) = self.pulls.get(task.id).await.unwrap()
                && check(&p)
            {
                return p;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no such pull request"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn comments_reach(&self, n: usize) -> Vec<(u64, String)> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let comments = self.host.comments();
            if comments.len() >= n {
                return comments;
            }
            assert!(tokio::time::Instant::now() < deadline, "{comments:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn remote_head(&self, task: &Task) -> String {
        git(
            self.remote.path(),
            &["rev-parse", &format!("refs/heads/claudomator/{}", task.id)],
        )
    }

    /// A task whose pull request is open, with its record.
    async fn opened(&self) -> (Task, PullRecord) {
        self.h
            .fake(Claude)
            .push([FakeStep::write_file("hello.txt", "hi\n")]);
        let task = self
            .h
            .submit(Claude, |s| s.pull_requests = "on_complete".into())
            .await;
        self.h.wait_for(&task, TaskState::Ready).await;
        let record = self.pull_where(&task, |p| !p.is_opening()).await;
        (task, record)
    }
}

fn event(record: &PullRecord, delivery: &str, sender: &str, kind: PullEventKind) -> PullEvent {
    PullEvent {
        delivery: delivery.into(),
        repository: record.repository.clone(),
        number: record.number,
        head_sha: record.head_sha.clone(),
        sender: sender.into(),
        sender_is_bot: sender.ends_with("[bot]"),
        kind,
    }
}

fn changes(body: &str) -> PullEventKind {
    PullEventKind::Review {
        state: "changes_requested".into(),
        body: body.into(),
    }
}

#[tokio::test]
async fn a_finished_task_opens_a_pull_request_and_feedback_resumes_it_onto_the_same_one() {
    let s = setup(PullSettings {
        labels: vec!["bot".into()],
        ..PullSettings::default()
    })
    .await;
    let (task, record) = s.opened().await;

    let opened = s.host.pulls();
    assert_eq!(opened.len(), 1);
    let (asked, pull) = &opened[0];
    assert_eq!(asked.title, "test task");
    assert_eq!(asked.head, format!("claudomator/{}", task.id));
    assert_eq!(asked.base, "trunk");
    assert_eq!(asked.labels, ["bot"]);
    for part in [
        "Wrote hello.txt.",
        "| `hello.txt` | 1 | 0 |",
        &format!("claudomator get {}", task.id),
        &format!("claudomator logs -f {}", task.id),
        "cost: $",
    ] {
        assert!(asked.body.contains(part), "{part} in {}", asked.body);
    }
    assert_eq!(record.number, pull.number);
    assert_eq!(record.url, pull.url);
    assert_eq!(
        record.head_sha,
        s.remote_head(&task),
        "the branch is pushed"
    );
    assert_eq!(
        s.h.task(&task).await.state,
        TaskState::Ready,
        "the PR is the review"
    );

    // Requested changes from a writer: the same session resumes with them.
    s.h.fake(Claude)
        .push([FakeStep::write_file("hello.txt", "hi there\n")]);
    let outcome = s
        .pulls
        .handle(event(&record, "d1", "alice", changes("say hi there")))
        .await
        .unwrap();
    assert!(matches!(outcome, PullOutcome::Resumed(_)), "{outcome:?}");
    s.h.fake(Claude).wait_for_calls(2).await;
    let resumed = &s.h.fake(Claude).requests()[1];
    assert!(resumed.resume_session.is_some(), "the same session");
    assert!(
        resumed.prompt.contains("say hi there"),
        "{}",
        resumed.prompt
    );

    // Its new commit lands on the same pull request, with a reply.
    let updated = s.pull_where(&task, |p| p.head_sha != record.head_sha).await;
    assert_eq!(updated.number, record.number);
    assert_eq!(updated.head_sha, s.remote_head(&task));
    assert_eq!(updated.resumes, 1);
    let comments = s.comments_reach(1).await;
    assert_eq!(comments[0].0, record.number);
    assert!(comments[0].1.starts_with("Pushed "), "{}", comments[0].1);
    assert_eq!(s.host.pulls().len(), 1, "no second pull request");

    // Merged: done.
    let merged = s
        .pulls
        .handle(event(
            &updated,
            "d9",
            "alice",
            PullEventKind::Closed { merged: true },
        ))
        .await
        .unwrap();
    assert!(matches!(merged, PullOutcome::Completed(_)), "{merged:?}");
    let done = s.h.task(&task).await;
    assert_eq!(done.state, TaskState::Completed);
    assert_eq!(
        done.state_reason,
        format!("pull request #{} merged", record.number)
    );
}

#[tokio::test]
async fn bad_input_is_ignored_with_a_reason_and_resumes_nothing() {
    let s = setup(PullSettings::default()).await;
    let (task, record) = s.opened().await;

    let mut unknown = event(&record, "u1", "alice", changes("x"));
    unknown.number = 999;
    let mut other_repo = event(&record, "u2", "alice", changes("x"));
    other_repo.repository = "someone/else".into();
    let mut stale = event(&record, "u3", "alice", changes("x"));
    stale.head_sha = "0123456789abcdef0123456789abcdef01234567".into();
    let cases = [
        (unknown, "not opened by claudomator"),
        (other_repo, "not a project with pull requests"),
        (stale, "stale"),
        (
            event(&record, "u4", "rita", changes("x")),
            "no write access",
        ),
        (
            event(&record, "u5", "mallory", changes("x")),
            "no write access",
        ),
        (
            event(
                &record,
                "u8",
                "claudomator[bot]",
                PullEventKind::Comment {
                    body: "@claudomator said this itself".into(),
                },
            ),
            "is a bot",
        ),
        (
            event(
                &record,
                "u6",
                "alice",
                PullEventKind::Comment {
                    body: "looks fine".into(),
                },
            ),
            "does not mention @claudomator",
        ),
        (
            event(
                &record,
                "u7",
                "alice",
                PullEventKind::Review {
                    state: "approved".into(),
                    body: String::new(),
                },
            ),
            "only requested changes",
        ),
    ];
    for (event, why) in cases {
        match s.pulls.handle(event).await.unwrap() {
            PullOutcome::Ignored(reason) => assert!(reason.contains(why), "{reason} / {why}"),
            other => panic!("{why}: {other:?}"),
        }
    }
    // A delivery handled once is not handled again.
    s.h.fake(Claude).push([FakeStep::succeed()]);
    let first = s
        .pulls
        .handle(event(&record, "dup", "alice", changes("again")))
        .await
        .unwrap();
    assert!(matches!(first, PullOutcome::Resumed(_)), "{first:?}");
    s.h.wait_for(&task, TaskState::Ready).await;
    match s
        .pulls
        .handle(event(&record, "dup", "alice", changes("again")))
        .await
        .unwrap()
    {
        PullOutcome::Ignored(reason) => assert!(reason.contains("handled before"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.h.fake(Claude).requests().len(), 2, "one resume only");
}

#[tokio::test]
async fn past_the_cap_the_task_asks_a_person_and_failed_checks_resume_it() {
    let s = setup(PullSettings {
        max_resumes: 1,
        ..PullSettings::default()
    })
    .await;
    let (task, record) = s.opened().await;
    s.h.fake(Claude).push([FakeStep::succeed()]);
    let failed = PullEventKind::ChecksFailed {
        name: "CI".into(),
        conclusion: "failure".into(),
        url: "https://ci.example/1".into(),
    };
    let outcome = s
        .pulls
        .handle(event(&record, "c1", "ci-bot", failed))
        .await
        .unwrap();
    assert!(matches!(outcome, PullOutcome::Resumed(_)), "{outcome:?}");
    s.h.fake(Claude).wait_for_calls(2).await;
    assert!(
        s.h.fake(Claude).requests()[1]
            .prompt
            .contains("ended `failure`")
    );
    s.h.wait_for(&task, TaskState::Ready).await;
    s.comments_reach(1).await;

    let comment = PullEventKind::Comment {
        body: "@Claudomator please rename it".into(),
    };
    let outcome = s
        .pulls
        .handle(event(&record, "c2", "alice", comment))
        .await
        .unwrap();
    let PullOutcome::Asked(blocked) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(blocked.state, TaskState::Blocked);
    let question = blocked.question.unwrap();
    assert!(question.text.contains("max_resumes"), "{}", question.text);
    assert!(question.context.contains("please rename it"));
    // Answering resumes it.
    s.h.fake(Claude).push([FakeStep::succeed()]);
    s.h.tasks
        .answer(&task.id.to_string(), "yes, rename it")
        .await
        .unwrap();
    s.h.fake(Claude).wait_for_calls(3).await;
    s.h.wait_for(&task, TaskState::Ready).await;
}

#[tokio::test]
async fn closed_unmerged_cancels_and_on_accept_opens_when_accepted() {
    let s = setup(PullSettings {
        delete_branch: true,
        ..PullSettings::default()
    })
    .await;
    let (task, record) = s.opened().await;
    let outcome = s
        .pulls
        .handle(event(
            &record,
            "x1",
            "alice",
            PullEventKind::Closed { merged: false },
        ))
        .await
        .unwrap();
    assert!(matches!(outcome, PullOutcome::Cancelled(_)), "{outcome:?}");
    assert_eq!(s.h.task(&task).await.state, TaskState::Cancelled);
    assert_eq!(s.host.deleted_branches(), vec![record.head_ref]);

    s.h.fake(Claude)
        .push([FakeStep::write_file("b.txt", "b\n")]);
    let later =
        s.h.submit(Claude, |spec| spec.pull_requests = "on_accept".into())
            .await;
    s.h.wait_for(&later, TaskState::Ready).await;
    assert!(
        s.pulls.get(later.id).await.unwrap().is_none(),
        "not before accept"
    );
    let accepted = s.pulls.accept(&later.id.to_string()).await.unwrap();
    assert_eq!(accepted.state, TaskState::Ready, "until the PR is merged");
    let opened = s.pulls.get(later.id).await.unwrap().unwrap();
    assert_eq!(opened.number, 2);
    // `claudomator pr` finds it rather than opening another.
    let (again, new) = s.pulls.open(&later.id.to_string()).await.unwrap();
    assert!(!new);
    assert_eq!(again.number, 2);
}

#[tokio::test]
async fn one_claim_opens_a_pull_request_however_many_ask() {
    let s = setup(PullSettings::default()).await;
    s.h.fake(Claude)
        .push([FakeStep::write_file("a.txt", "a\n")]);
    let task = s.h.submit(Claude, |spec| spec.review_required = true).await;
    s.h.wait_for(&task, TaskState::Ready).await;
    let id = task.id.to_string();
    let (a, b) = tokio::join!(s.pulls.open(&id), s.pulls.open(&id));
    let opened = [a, b]
        .into_iter()
        .filter(|r| matches!(r, Ok((_, true))))
        .count();
    assert_eq!(opened, 1);
    assert_eq!(s.host.pulls().len(), 1);
}

#[tokio::test]
async fn commits_people_pushed_reach_the_resumed_agent_and_are_kept_on_the_branch() {
    let s = setup(PullSettings::default()).await;
    let (task, record) = s.opened().await;
    // A person adds a commit to the pull request's branch.
    let person = tempfile::tempdir().unwrap();
    let remote = s.remote.path().display().to_string();
    git(person.path(), &["clone", "--quiet", &remote, "."]);
    git(person.path(), &["checkout", "--quiet", &record.head_ref]);
    std::fs::write(person.path().join("by-hand.txt"), "a person wrote this\n").unwrap();
    git(person.path(), &["add", "by-hand.txt"]);
    git(
        person.path(),
        &[
            "-c",
            "user.name=P",
            "-c",
            "user.email=p@example.com",
            "commit",
            "--quiet",
            "-m",
            "by hand",
        ],
    );
    git(
        person.path(),
        &["push", "--quiet", "origin", &record.head_ref],
    );
    let theirs = git(person.path(), &["rev-parse", "HEAD"]);

    s.h.fake(Claude)
        .push([FakeStep::write_file("agent.txt", "after the person\n")]);
    let mut review = event(&record, "p1", "alice", changes("keep their file"));
    review.head_sha = theirs.clone();
    // The push is announced first (synchronize), so the review is current.
    let pushed = event(&record, "p0", "alice", PullEventKind::Pushed);
    let pushed = PullEvent {
        head_sha: theirs.clone(),
        ..pushed
    };
    assert_eq!(s.pulls.handle(pushed).await.unwrap(), PullOutcome::Recorded);
    let outcome = s.pulls.handle(review).await.unwrap();
    assert!(matches!(outcome, PullOutcome::Resumed(_)), "{outcome:?}");
    s.h.fake(Claude).wait_for_calls(2).await;
    let resumed = &s.h.fake(Claude).requests()[1];
    assert!(
        resumed.workdir.join("by-hand.txt").is_file(),
        "merged before the run"
    );
    assert!(
        resumed.prompt.contains("People pushed 1 commit(s)"),
        "{}",
        resumed.prompt
    );

    let updated = s.pull_where(&task, |p| p.head_sha != theirs).await;
    assert_eq!(updated.head_sha, s.remote_head(&task));
    git(
        s.remote.path(),
        &["merge-base", "--is-ancestor", &theirs, &updated.head_sha],
    );
}

#[tokio::test]
async fn a_triage_task_for_someone_elses_pull_request_offers_its_fix_onto_that_branch() {
    let s = setup(PullSettings::default()).await;
    let theirs = s.host.add_pull("feature");
    s.h.fake(Claude).push([
        FakeStep::write_file("fix.txt", "fixed\n"),
        FakeStep::succeed(),
    ]);
    let triage =
        s.h.submit(Claude, |spec| {
            spec.tags = vec!["ci".into(), format!("ci-pr:{theirs}")]
        })
        .await;
    s.h.wait_for(&triage, TaskState::Completed).await;
    let fix = s.pull_where(&triage, |p| !p.is_opening()).await;
    let comments = s.comments_reach(1).await;
    let opened = s.host.pulls();
    let (asked, _) = &opened[1];
    assert_eq!(
        asked.base, "feature",
        "onto the failing pull request's branch"
    );
    assert!(
        asked
            .title
            .starts_with(&format!("Fix the failing checks of #{theirs}"))
    );
    assert_eq!(comments[0].0, theirs);
    assert!(
        comments[0].1.contains("Wrote fix.txt."),
        "{}",
        comments[0].1
    );
    assert!(comments[0].1.contains(&fix.url), "{}", comments[0].1);

    // A triage that changed nothing only says what it found.
    let idle =
        s.h.submit(Claude, |spec| {
            spec.tags = vec!["ci".into(), format!("ci-pr:{theirs}")]
        })
        .await;
    s.h.wait_for(&idle, TaskState::Completed).await;
    let comments = s.comments_reach(2).await;
    assert!(
        comments[1].1.contains("It changed nothing."),
        "{}",
        comments[1].1
    );
    assert_eq!(s.host.pulls().len(), 2, "no pull request without a change");
}

#[tokio::test]
async fn a_pull_request_opened_by_hand_is_updated_like_any_other() {
    let s = setup(PullSettings::default()).await;
    s.h.fake(Claude)
        .push([FakeStep::write_file("a.txt", "a\n")]);
    let task = s.h.submit(Claude, |spec| spec.review_required = true).await;
    s.h.wait_for(&task, TaskState::Ready).await;
    let (record, opened) = s.pulls.open(&task.id.to_string()).await.unwrap();
    assert!(opened);
    s.h.fake(Claude)
        .push([FakeStep::write_file("a.txt", "b\n")]);
    let outcome = s
        .pulls
        .handle(event(&record, "h1", "alice", changes("b, not a")))
        .await
        .unwrap();
    assert!(matches!(outcome, PullOutcome::Resumed(_)), "{outcome:?}");
    let updated = s.pull_where(&task, |p| p.head_sha != record.head_sha).await;
    assert_eq!(updated.head_sha, s.remote_head(&task));
    assert!(s.comments_reach(1).await[0].1.starts_with("Pushed "));
}

#[tokio::test]
async fn work_that_changes_a_workflow_is_not_pushed_unless_allowed() {
    for allowed in [false, true] {
        let s = setup(PullSettings {
            allow_workflow_changes: allowed,
            ..PullSettings::default()
        })
        .await;
        s.h.fake(Claude).push([FakeStep::write_file(
            ".github/workflows/ci.yml",
            "on: pull_request\njobs: {}\n",
        )]);
        let task = s.h.submit(Claude, |spec| spec.review_required = true).await;
        s.h.wait_for(&task, TaskState::Ready).await;
        let opened = s.pulls.open(&task.id.to_string()).await;
        if allowed {
            assert!(matches!(opened, Ok((_, true))), "{opened:?}");
            assert_eq!(s.host.pulls().len(), 1);
            continue;
        }
        let err = opened.unwrap_err();
        assert!(matches!(err, CoreError::FailedPrecondition(_)), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains(".github/workflows/ci.yml") && text.contains("allow_workflow_changes"),
            "{text}"
        );
        assert!(s.host.pulls().is_empty(), "no pull request");
        let pushed = std::process::Command::new("git")
            .arg("-C")
            .arg(s.remote.path())
            .args(["rev-parse", "--verify", "--quiet"])
            .arg(format!("refs/heads/claudomator/{}", task.id))
            .output()
            .unwrap();
        assert!(!pushed.status.success(), "the branch was not pushed");
        assert!(
            s.pulls.get(task.id).await.unwrap().is_none(),
            "no claim left"
        );
    }
}
