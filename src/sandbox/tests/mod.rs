//! Sandboxes over real temporary repositories. The tests' own git calls run
//! with an empty HOME and no system config; the default branch is `trunk`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::*;

const TASK: &str = "01J9ZQ4T6Y8W2X3V5B7N9M1K0A";

/// A temp dir holding an empty HOME, the projects and the sandbox root.
struct World {
    dir: TempDir,
}

impl World {
    fn new() -> World {
        let world = World {
            dir: tempfile::tempdir().unwrap(),
        };
        fs::create_dir(world.home()).unwrap();
        world
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn cfg(&self, keep_on_failure: bool) -> SandboxConfig {
        SandboxConfig {
            root: self.path("sandboxes"),
            author_name: "Claudomator Bot".to_string(),
            author_email: "bot@claudomator.invalid".to_string(),
            keep_on_failure,
        }
    }

    /// Runs git as a user with no config and no identity; panics on failure.
    fn git(&self, dir: &Path, args: &[&str]) -> String {
        let mut command = Command::new("git");
        for name in git::CLEARED_ENV {
            command.env_remove(name);
        }
        let output = command
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.home())
            .env("GIT_CONFIG_GLOBAL", self.home().join(".gitconfig"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "git {args:?} in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    /// Commits everything in `dir` as a test user.
    fn commit(&self, dir: &Path, message: &str) -> String {
        self.git(dir, &["add", "--all"]);
        self.git(
            dir,
            &[
                "-c",
                "user.name=Test",
                "-c",
                "user.email=test@example.com",
                "commit",
                "--quiet",
                "-m",
                message,
            ],
        );
        self.git(dir, &["rev-parse", "HEAD"])
    }

    /// A repository on `trunk` with one commit.
    fn project(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        fs::create_dir(&path).unwrap();
        self.git(&path, &["init", "--quiet", "-b", "trunk"]);
        fs::write(path.join("README.md"), "# demo\nold line\n").unwrap();
        fs::write(path.join("old.txt"), "to be deleted\n").unwrap();
        self.commit(&path, "initial");
        path
    }
}

fn write(dir: &Path, file: &str, content: &str) {
    fs::write(dir.join(file), content).unwrap();
}

fn change(path: &str, added: u64, removed: u64) -> FileChange {
    FileChange {
        path: path.to_string(),
        renamed_from: None,
        added,
        removed,
        binary: false,
    }
}

#[tokio::test]
async fn commit_all_reports_numstat_and_one_commit() {
    let world = World::new();
    let project = world.project("demo");
    let base = world.git(&project, &["rev-parse", "HEAD"]);
    let cfg = world.cfg(false);

    let sandbox = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();
    assert_eq!(sandbox.path, cfg.root.join(TASK));
    assert_eq!(sandbox.branch, format!("claudomator/{TASK}"));
    assert_eq!(sandbox.base_commit, base);
    let on = world.git(&sandbox.path, &["symbolic-ref", "--short", "HEAD"]);
    assert_eq!(on, sandbox.branch);

    // The agent edits, adds (text and binary) and deletes.
    write(&sandbox.path, "README.md", "# demo\nnew line\nmore\n");
    write(&sandbox.path, "new.rs", "fn main() {\n}\n");
    fs::write(sandbox.path.join("image.bin"), [0u8, 1, 2, 0, 255]).unwrap();
    fs::remove_file(sandbox.path.join("old.txt")).unwrap();

    let changes = sandbox.commit_all(&cfg, "agent work").await.unwrap();
    let binary = FileChange {
        binary: true,
        ..change("image.bin", 0, 0)
    };
    let expected = vec![
        change("README.md", 2, 1),
        binary,
        change("new.rs", 2, 0),
        change("old.txt", 0, 1),
    ];
    assert_eq!(changes.files, expected);
    assert_eq!(changes.commits.len(), 1);
    let head = world.git(&sandbox.path, &["rev-parse", "HEAD"]);
    assert_eq!(changes.commits, vec![head]);
    let author = world.git(&sandbox.path, &["log", "-1", "--format=%an <%ae>|%cn|%s"]);
    assert_eq!(
        author,
        "Claudomator Bot <bot@claudomator.invalid>|Claudomator Bot|agent work"
    );
    // The project repository is untouched.
    assert_eq!(world.git(&project, &["rev-parse", "HEAD"]), base);
    assert_eq!(world.git(&project, &["status", "--porcelain"]), "");
}

#[tokio::test]
async fn agent_commit_plus_uncommitted_work_gives_two_commits() {
    let world = World::new();
    let project = world.project("demo");
    let cfg = world.cfg(false);
    let sandbox = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();

    // The agent commits with plain git: the sandbox has its own identity.
    write(&sandbox.path, "first.txt", "one\n");
    world.git(&sandbox.path, &["add", "first.txt"]);
    world.git(&sandbox.path, &["commit", "--quiet", "-m", "agent commit"]);
    write(&sandbox.path, "second.txt", "two\nlines\n");

    let changes = sandbox.commit_all(&cfg, "leftovers").await.unwrap();
    assert_eq!(
        changes.files,
        vec![change("first.txt", 1, 0), change("second.txt", 2, 0)]
    );
    assert_eq!(changes.commits.len(), 2);
    let subjects: Vec<String> = changes
        .commits
        .iter()
        .map(|id| world.git(&sandbox.path, &["log", "-1", "--format=%s", id]))
        .collect();
    assert_eq!(subjects, vec!["agent commit", "leftovers"]);
}

#[tokio::test]
async fn nothing_changed_makes_no_commit() {
    let world = World::new();
    let project = world.project("demo");
    let cfg = world.cfg(false);
    let sandbox = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();

    let changes = sandbox.commit_all(&cfg, "nothing").await.unwrap();
    assert_eq!(changes, Changes::default());
    let head = world.git(&sandbox.path, &["rev-parse", "HEAD"]);
    assert_eq!(head, sandbox.base_commit);
}

#[tokio::test]
async fn a_rename_is_one_change() {
    let world = World::new();
    let project = world.project("demo");
    let cfg = world.cfg(false);
    let sandbox = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();

    fs::create_dir(sandbox.path.join("docs")).unwrap();
    fs::rename(
        sandbox.path.join("README.md"),
        sandbox.path.join("docs/README.md"),
    )
    .unwrap();
    let changes = sandbox.commit_all(&cfg, "move").await.unwrap();
    let renamed = FileChange {
        renamed_from: Some("README.md".to_string()),
        ..change("docs/README.md", 0, 0)
    };
    assert_eq!(changes.files, vec![renamed]);
}

#[tokio::test]
async fn prepare_twice_reuses_the_sandbox() {
    let world = World::new();
    let project = world.project("demo");
    let cfg = world.cfg(false);
    let first = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();
    write(&first.path, "work.txt", "in progress\n");
    // The project moving on does not move a resumed sandbox.
    write(&project, "later.txt", "later\n");
    world.commit(&project, "later");

    let second = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();
    assert_eq!(
        second,
        Sandbox {
            fresh: false,
            start: String::new(),
            ..first.clone()
        }
    );
    assert!(first.fresh && !second.fresh);
    assert!(second.path.join("work.txt").exists());

    // A directory that is not this task's sandbox is never taken over.
    world.git(&first.path, &["checkout", "--quiet", "-b", "elsewhere"]);
    let err = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::SandboxConflict { .. }), "{err}");
    assert!(err.to_string().contains("on branch elsewhere"), "{err}");
}

#[tokio::test]
async fn a_dirty_project_starts_from_head_or_its_working_tree() {
    let world = World::new();
    let project = world.project("demo");
    let cfg = world.cfg(false);
    // Untracked files do not count.
    write(&project, "scratch.txt", "notes\n");
    let clean = Sandbox::prepare(&cfg, "demo", &project, "untracked")
        .await
        .unwrap();
    assert!(clean.left_out.is_empty());

    // From HEAD: the edit is not there, and the sandbox says so.
    write(&project, "README.md", "edited\n");
    let head = world.git(&project, &["rev-parse", "HEAD"]);
    let sandbox = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();
    assert_eq!(sandbox.base_commit, head);
    assert_eq!(sandbox.left_out, vec!["README.md".to_string()]);
    assert!(
        sandbox
            .start
            .contains("the project's uncommitted changes in README.md are not in it"),
        "{}",
        sandbox.start
    );
    assert_eq!(
        fs::read_to_string(sandbox.path.join("README.md")).unwrap(),
        "# demo\nold line\n"
    );

    // From the working tree: the edit is the base, committed on HEAD; the
    // project itself is untouched.
    let from_tree = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let snap = Sandbox::prepare_from(&cfg, "demo", &project, from_tree, &Base::WorkingTree)
        .await
        .unwrap();
    assert_eq!(
        fs::read_to_string(snap.path.join("README.md")).unwrap(),
        "edited\n"
    );
    assert!(!snap.path.join("scratch.txt").exists());
    assert!(snap.left_out.is_empty());
    assert_eq!(world.git(&snap.path, &["rev-parse", "HEAD^"]), head);
    assert_eq!(world.git(&project, &["rev-parse", "HEAD"]), head);
    assert_eq!(
        world.git(&project, &["status", "--porcelain"]),
        "M README.md\n?? scratch.txt"
    );
    // The agent's changes are counted from the snapshot.
    write(&snap.path, "work.txt", "done\n");
    let changes = snap.commit_all(&cfg, "work").await.unwrap();
    assert_eq!(changes.files, vec![change("work.txt", 1, 0)]);
}

#[tokio::test]
async fn a_task_starts_from_the_work_of_the_tasks_it_depends_on() {
    let world = World::new();
    let project = world.project("demo");
    let cfg = world.cfg(false);
    // Two finished tasks, each with its branch in the project.
    let work = |id: &'static str, file: &'static str, text: &'static str| {
        let cfg = cfg.clone();
        let project = project.clone();
        async move {
            let sandbox = Sandbox::prepare(&cfg, "demo", &project, id).await.unwrap();
            write(&sandbox.path, file, text);
            sandbox.commit_all(&cfg, id).await.unwrap();
            deliver(&sandbox).await.unwrap();
            sandbox.finish(&cfg, true).await.unwrap();
        }
    };
    work("SCHEMA", "schema.sql", "create table t;\n").await;
    work("API", "api.rs", "fn api() {}\n").await;

    let one = Sandbox::prepare_from(
        &cfg,
        "demo",
        &project,
        "DOCS",
        &Base::Tasks(vec!["SCHEMA".into()]),
    )
    .await
    .unwrap();
    assert!(one.path.join("schema.sql").exists());
    assert!(
        one.start.starts_with("the work of task SCHEMA"),
        "{}",
        one.start
    );
    assert_eq!(
        one.base_commit,
        world.git(&project, &["rev-parse", "claudomator/SCHEMA"])
    );

    // Several: merged, and the new task's changes count from the merge. A
    // task with no branch is skipped.
    let both = Base::Tasks(vec!["SCHEMA".into(), "NOBRANCH".into(), "API".into()]);
    let merged = Sandbox::prepare_from(&cfg, "demo", &project, "BOTH", &both)
        .await
        .unwrap();
    assert!(merged.path.join("schema.sql").exists() && merged.path.join("api.rs").exists());
    assert!(
        merged.start.contains("task API's merged in"),
        "{}",
        merged.start
    );
    write(&merged.path, "docs.md", "# docs\n");
    let changes = merged.commit_all(&cfg, "docs").await.unwrap();
    assert_eq!(changes.files, vec![change("docs.md", 1, 0)]);

    // Work that conflicts: refused, naming the file, nothing left behind.
    work("OTHER", "schema.sql", "create table other;\n").await;
    let clash = Base::Tasks(vec!["SCHEMA".into(), "OTHER".into()]);
    let err = Sandbox::prepare_from(&cfg, "demo", &project, "CLASH", &clash)
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::StartConflict { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("task OTHER's branch conflicts in schema.sql"),
        "{err}"
    );
    assert!(!cfg.root.join("CLASH").exists());
    assert!(!cfg.root.join(".CLASH.partial").exists());
}

#[tokio::test]
async fn a_project_must_be_a_repository_top_level_with_commits() {
    let world = World::new();
    let cfg = world.cfg(false);

    let plain = world.path("plain");
    fs::create_dir(&plain).unwrap();
    let err = Sandbox::prepare(&cfg, "demo", &plain, TASK)
        .await
        .unwrap_err();
    let expected = format!(
        "project `demo`: {} is not a git repository",
        plain.display()
    );
    assert_eq!(err.to_string(), expected);

    let missing = world.path("missing");
    let err = Sandbox::prepare(&cfg, "demo", &missing, TASK)
        .await
        .unwrap_err();
    let expected = format!("project `demo`: {} does not exist", missing.display());
    assert_eq!(err.to_string(), expected);

    let project = world.project("demo");
    fs::create_dir(project.join("sub")).unwrap();
    let err = Sandbox::prepare(&cfg, "demo", &project.join("sub"), TASK)
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::NotTopLevel { .. }), "{err}");

    let empty = world.path("empty");
    fs::create_dir(&empty).unwrap();
    world.git(&empty, &["init", "--quiet", "-b", "trunk"]);
    let err = Sandbox::prepare(&cfg, "demo", &empty, TASK)
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::EmptyRepository { .. }), "{err}");
    assert!(!cfg.root.join(TASK).exists());
}

#[tokio::test]
async fn task_ids_cannot_escape_the_root() {
    let world = World::new();
    let project = world.project("demo");
    let cfg = world.cfg(false);
    for id in ["", "..", "../x", "a/b", "a.b", "-x"] {
        let err = Sandbox::prepare(&cfg, "demo", &project, id)
            .await
            .unwrap_err();
        assert!(matches!(err, SandboxError::InvalidTaskId(_)), "{id}: {err}");
    }
}

#[tokio::test]
async fn finish_removes_on_success_and_keeps_on_failure() {
    let world = World::new();
    let project = world.project("demo");
    let keep = world.cfg(true);
    let sandbox = Sandbox::prepare(&keep, "demo", &project, TASK)
        .await
        .unwrap();
    let path = sandbox.path.clone();

    assert!(sandbox.clone().finish(&keep, false).await.unwrap());
    assert!(path.exists());
    assert!(!sandbox.clone().finish(&keep, true).await.unwrap());
    assert!(!path.exists());

    let discard = world.cfg(false);
    let sandbox = Sandbox::prepare(&discard, "demo", &project, TASK)
        .await
        .unwrap();
    assert!(!sandbox.finish(&discard, false).await.unwrap());
    assert!(!path.exists());

    let forged = Sandbox {
        path: project.clone(),
        branch: "x".to_string(),
        base_commit: "x".to_string(),
        fresh: false,
        start: String::new(),
        left_out: Vec::new(),
    };
    let err = forged.finish(&discard, true).await.unwrap_err();
    assert!(matches!(err, SandboxError::OutsideRoot { .. }), "{err}");
    assert!(project.exists());
}

#[tokio::test]
async fn default_branch_is_trunk_without_a_remote() {
    let world = World::new();
    let project = world.project("demo");
    assert_eq!(default_branch(&project).await.unwrap(), "trunk");
}

#[tokio::test]
async fn default_branch_follows_the_remote_head() {
    let world = World::new();
    let project = world.project("demo");
    let bare = world.path("bare.git");
    world.git(
        world.dir.path(),
        &["init", "--quiet", "--bare", "-b", "trunk", "bare.git"],
    );
    world.git(
        &project,
        &["push", "--quiet", bare.to_str().unwrap(), "trunk"],
    );
    world.git(world.dir.path(), &["clone", "--quiet", "bare.git", "clone"]);
    let clone = world.path("clone");
    // The checked-out branch is not the default one.
    world.git(&clone, &["checkout", "--quiet", "-b", "feature"]);
    assert_eq!(default_branch(&clone).await.unwrap(), "trunk");
}

#[tokio::test]
async fn rebase_and_push_publishes_onto_the_moved_trunk() {
    let world = World::new();
    let project = world.project("demo");
    let cfg = world.cfg(false);
    let sandbox = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();
    write(&sandbox.path, "feature.txt", "agent work\n");
    sandbox.commit_all(&cfg, "agent feature").await.unwrap();

    write(&project, "upstream.txt", "moved on\n");
    let trunk = world.commit(&project, "trunk moved");
    let bare = world.path("publish.git");
    world.git(
        world.dir.path(),
        &["init", "--quiet", "--bare", "-b", "trunk", "publish.git"],
    );

    let onto = default_branch(&project).await.unwrap();
    rebase_and_push(&sandbox, &cfg, bare.to_str().unwrap(), &onto)
        .await
        .unwrap();

    let published = format!("refs/heads/{}", sandbox.branch);
    let subjects = world.git(&bare, &["log", "--format=%s", &published]);
    assert_eq!(subjects, "agent feature\ntrunk moved\ninitial");
    let parent = world.git(&bare, &["rev-parse", &format!("{published}^")]);
    assert_eq!(parent, trunk);
    let files = world.git(&bare, &["ls-tree", "--name-only", &published]);
    assert_eq!(files, "README.md\nfeature.txt\nold.txt\nupstream.txt");
}

#[tokio::test]
async fn rebase_and_push_resolves_the_projects_remote_names() {
    let world = World::new();
    let project = world.project("demo");
    let cfg = world.cfg(false);
    let bare = world.path("publish.git");
    world.git(
        world.dir.path(),
        &["init", "--quiet", "--bare", "-b", "trunk", "publish.git"],
    );
    world.git(
        &project,
        &["remote", "add", "publish", bare.to_str().unwrap()],
    );
    let sandbox = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();
    write(&sandbox.path, "feature.txt", "agent work\n");
    sandbox.commit_all(&cfg, "agent feature").await.unwrap();

    let err = rebase_and_push(&sandbox, &cfg, "nowhere", "trunk")
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::UnknownRemote { .. }), "{err}");

    rebase_and_push(&sandbox, &cfg, "publish", "trunk")
        .await
        .unwrap();
    let published = format!("refs/heads/{}", sandbox.branch);
    let head = world.git(&sandbox.path, &["rev-parse", "HEAD"]);
    assert_eq!(world.git(&bare, &["rev-parse", &published]), head);
}

#[tokio::test]
async fn a_rebase_conflict_leaves_the_branch_as_it_was() {
    let world = World::new();
    let project = world.project("demo");
    let cfg = world.cfg(false);
    let sandbox = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();
    write(&sandbox.path, "README.md", "# demo\nagent line\n");
    sandbox.commit_all(&cfg, "agent edit").await.unwrap();
    let before = world.git(&sandbox.path, &["rev-parse", "HEAD"]);

    write(&project, "README.md", "# demo\nupstream line\n");
    world.commit(&project, "upstream edit");
    let bare = world.path("publish.git");
    world.git(
        world.dir.path(),
        &["init", "--quiet", "--bare", "publish.git"],
    );

    let err = rebase_and_push(&sandbox, &cfg, bare.to_str().unwrap(), "trunk")
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::RebaseConflict { .. }), "{err}");
    assert!(err.to_string().contains("conflicts in README.md"), "{err}");
    assert_eq!(world.git(&sandbox.path, &["rev-parse", "HEAD"]), before);
    assert_eq!(world.git(&sandbox.path, &["status", "--porcelain"]), "");
    assert_eq!(world.git(&bare, &["for-each-ref"]), "");
}

#[test]
fn numstat_parses_renames_and_binary_files() {
    let raw = "1\t2\tsrc/a.rs\0-\t-\tlogo.png\x000\t0\t\0old name.txt\0new name.txt\0";
    let renamed = FileChange {
        renamed_from: Some("old name.txt".to_string()),
        ..change("new name.txt", 0, 0)
    };
    let binary = FileChange {
        binary: true,
        ..change("logo.png", 0, 0)
    };
    assert_eq!(
        parse_numstat(raw),
        vec![change("src/a.rs", 1, 2), binary, renamed]
    );
    assert!(parse_numstat("").is_empty());
}

#[tokio::test]
async fn commit_all_refuses_a_sandbox_moved_off_its_branch() {
    let world = World::new();
    let project = world.project("demo");
    let cfg = world.cfg(false);
    let sandbox = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();

    world.git(&sandbox.path, &["checkout", "--quiet", "-b", "elsewhere"]);
    let err = sandbox.commit_all(&cfg, "work").await.unwrap_err();
    assert!(matches!(err, SandboxError::WrongBranch { .. }), "{err}");
    assert!(err.to_string().contains("is on elsewhere"), "{err}");

    world.git(&sandbox.path, &["checkout", "--quiet", "--detach"]);
    let err = sandbox.commit_all(&cfg, "work").await.unwrap_err();
    assert!(err.to_string().contains("on a detached HEAD"), "{err}");

    world.git(
        &sandbox.path,
        &["checkout", "--quiet", "--orphan", "unborn"],
    );
    let err = sandbox.commit_all(&cfg, "work").await.unwrap_err();
    assert!(err.to_string().contains("is on unborn"), "{err}");
}

#[tokio::test]
async fn the_agents_own_commit_alone_is_reported_and_delivered() {
    let world = World::new();
    let project = world.project("demo");
    let cfg = world.cfg(false);
    let sandbox = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();
    write(&sandbox.path, "first.txt", "one\n");
    world.git(&sandbox.path, &["add", "first.txt"]);
    world.git(&sandbox.path, &["commit", "--quiet", "-m", "agent commit"]);
    let head = world.git(&sandbox.path, &["rev-parse", "HEAD"]);

    let changes = sandbox.commit_all(&cfg, "nothing left").await.unwrap();
    assert_eq!(changes.files, vec![change("first.txt", 1, 0)]);
    assert_eq!(changes.commits, vec![head.clone()]);

    deliver(&sandbox).await.unwrap();
    let delivered = format!("refs/heads/{}", sandbox.branch);
    assert_eq!(world.git(&project, &["rev-parse", &delivered]), head);
    // The project's checkout did not move.
    assert_eq!(
        world.git(&project, &["symbolic-ref", "--short", "HEAD"]),
        "trunk"
    );
}

mod review;
mod trust;
