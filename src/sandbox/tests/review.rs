//! A task's work reviewed in the project: its branch's diff, and merging
//! it into a project branch.

use super::*;

#[tokio::test]
async fn a_branch_diff_lists_every_file_and_cuts_text_past_the_limits() {
    let world = World::new();
    let project = world.project("demo");
    let cfg = world.cfg(false);
    let sandbox = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();
    let big: String = (0..300_000).map(|i| format!("line {i}\n")).collect();
    write(&sandbox.path, "big.txt", &big);
    write(&sandbox.path, "README.md", "# demo\nnew line\n");
    fs::remove_file(sandbox.path.join("old.txt")).unwrap();
    let changes = sandbox.commit_all(&cfg, "work").await.unwrap();
    deliver(&sandbox).await.unwrap();

    let diff = branch_diff(
        &project,
        TASK,
        changes.commits.first().map(String::as_str),
        3,
    )
    .await
    .unwrap();
    assert_eq!(diff.base_commit, sandbox.base_commit);
    assert_eq!(diff.branch, sandbox.branch);
    let by_path = |p: &str| diff.files.iter().find(|f| f.change.path == p).unwrap();
    assert_eq!(by_path("big.txt").status, FileStatus::Added);
    assert_eq!(by_path("big.txt").change.added, 300_000);
    assert!(by_path("big.txt").patch_truncated);
    assert!(by_path("big.txt").patch.len() <= MAX_FILE_PATCH_BYTES);
    assert_eq!(by_path("old.txt").status, FileStatus::Deleted);
    let readme = by_path("README.md");
    assert_eq!(readme.status, FileStatus::Modified);
    assert!(
        readme
            .patch
            .starts_with("diff --git a/README.md b/README.md\n")
    );
    assert!(
        readme.patch.contains("-old line\n+new line\n"),
        "{}",
        readme.patch
    );
    assert!(diff.truncated);

    // Without the first commit: the merge base with the project's HEAD.
    let again = branch_diff(&project, TASK, None, 0).await.unwrap();
    assert_eq!(again.base_commit, sandbox.base_commit);
    assert!(matches!(
        branch_diff(&project, "01ARZ3NDEKTSV4RRFFQ69G5FAV", None, 3).await,
        Err(SandboxError::NoBranch { .. })
    ));
}

#[tokio::test]
async fn merge_takes_a_task_branch_into_a_project_branch_or_changes_nothing() {
    let world = World::new();
    let project = world.project("demo");
    let cfg = world.cfg(false);
    let finished = |id: &'static str, file: &'static str, text: &'static str| {
        let (cfg, project) = (cfg.clone(), project.clone());
        async move {
            let sandbox = Sandbox::prepare(&cfg, "demo", &project, id).await.unwrap();
            write(&sandbox.path, file, text);
            sandbox.commit_all(&cfg, id).await.unwrap();
            deliver(&sandbox).await.unwrap();
            sandbox.finish(&cfg, true).await.unwrap();
        }
    };
    finished("ONE", "one.txt", "one\n").await;
    finished("TWO", "README.md", "# two\n").await;
    finished("CLASH", "README.md", "# clash\n").await;

    // Into a branch that is not checked out: the checkout is untouched.
    world.git(&project, &["branch", "release"]);
    let merged = merge_task(&cfg, &project, "ONE", "release", MergeMode::Merge, "m")
        .await
        .unwrap();
    assert!(!merged.checked_out);
    assert_eq!(
        world.git(&project, &["rev-parse", "release"]),
        merged.new_commit
    );
    assert!(!project.join("one.txt").exists());

    // Rebased into the checked-out default branch: a fast-forward there.
    write(&project, "later.txt", "later\n");
    world.commit(&project, "moved on");
    let rebased = merge_task(&cfg, &project, "TWO", "", MergeMode::Rebase, "m")
        .await
        .unwrap();
    assert!(rebased.checked_out);
    assert_eq!(rebased.into, "trunk");
    assert_eq!(
        fs::read_to_string(project.join("README.md")).unwrap(),
        "# two\n"
    );
    assert_eq!(
        world.git(&project, &["rev-parse", "claudomator/TWO"]),
        rebased.new_commit
    );
    assert_eq!(world.git(&project, &["status", "--porcelain"]), "");

    // A conflict changes nothing and names the file.
    let head = world.git(&project, &["rev-parse", "HEAD"]);
    let err = merge_task(&cfg, &project, "CLASH", "", MergeMode::Merge, "m")
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::MergeConflict { .. }), "{err}");
    assert!(err.to_string().contains("conflicts in README.md"), "{err}");
    assert_eq!(world.git(&project, &["rev-parse", "HEAD"]), head);
    assert_eq!(world.git(&project, &["status", "--porcelain"]), "");
    assert_eq!(
        world.git(&project, &["worktree", "list"]).lines().count(),
        1
    );
}
