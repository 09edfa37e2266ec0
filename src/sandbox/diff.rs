//! A task's work as a person reviews it: the task branch in the project
//! repository (`claudomator/<task-id>`, delivered there when an attempt
//! succeeds) against the commit it started from, file by file with line
//! counts and a unified diff. Read from the project, so it outlives the
//! sandbox.

use std::path::Path;

use super::error::SandboxError;
use super::git::git;
use super::prepare::branch_tip;
use super::{BRANCH_PREFIX, FileChange, check_task_id, parse_numstat};

/// Unified diff text kept for one file; the rest is cut.
pub const MAX_FILE_PATCH_BYTES: usize = 1024 * 1024;
/// Unified diff text kept for the whole task; later files keep their
/// counts but not their text.
pub const MAX_PATCH_BYTES: usize = 4 * 1024 * 1024;
/// Lines of context around each change, at most.
pub const MAX_CONTEXT_LINES: u32 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileStatus {
    Added,
    Modified,
    Deleted,
    Renamed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileDiff {
    pub change: FileChange,
    pub status: FileStatus,
    /// From its `diff --git` line on; empty for a binary file, or when the
    /// whole diff was over [`MAX_PATCH_BYTES`] before this file.
    pub patch: String,
    /// The text was cut (at [`MAX_FILE_PATCH_BYTES`], or the whole limit).
    pub patch_truncated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BranchDiff {
    pub branch: String,
    pub base_commit: String,
    pub head_commit: String,
    pub files: Vec<FileDiff>,
    /// Some text was left out for the size limits.
    pub truncated: bool,
}

/// The diff of task `task_id`'s branch in `project`. `first_commit` is the
/// task's first commit (its parent is where the task started); without it,
/// the branch's merge base with the project's HEAD.
pub async fn branch_diff(
    project: &Path,
    task_id: &str,
    first_commit: Option<&str>,
    context_lines: u32,
) -> Result<BranchDiff, SandboxError> {
    check_task_id(task_id)?;
    let branch = format!("{BRANCH_PREFIX}{task_id}");
    let Some(head_commit) = branch_tip(project, &branch).await? else {
        return Err(SandboxError::NoBranch {
            project: project.to_path_buf(),
            branch,
        });
    };
    let base_commit = match first_commit {
        Some(first) => {
            git(project, ["rev-parse", "--verify", &format!("{first}^")])
                .user_config()
                .run()
                .await?
        }
        None => {
            git(project, ["merge-base", "HEAD", &head_commit])
                .user_config()
                .run()
                .await?
        }
    };
    let range = [base_commit.as_str(), head_commit.as_str(), "--"];
    let plain = ["-M", "--no-ext-diff", "--no-textconv", "--no-color"];
    let numstat = git(
        project,
        ["diff", "--numstat", "-z"]
            .iter()
            .chain(&plain)
            .chain(&range),
    )
    .user_config()
    .run()
    .await?;
    let statuses = git(
        project,
        ["diff", "--name-status", "-z"]
            .iter()
            .chain(&plain)
            .chain(&range),
    )
    .user_config()
    .run()
    .await?;
    let context = format!("-U{}", context_lines.min(MAX_CONTEXT_LINES));
    let (patch, cut) = git(
        project,
        ["diff", context.as_str()]
            .iter()
            .chain(&plain)
            .chain(&range),
    )
    .user_config()
    .run_capped(MAX_PATCH_BYTES)
    .await?;
    let patch = String::from_utf8_lossy(&patch);
    let mut patches = split_patches(&patch);
    let status_of = parse_name_status(&statuses);
    let files = parse_numstat(&numstat)
        .into_iter()
        .map(|change| {
            let status = status_of
                .iter()
                .find(|(_, path)| *path == change.path)
                .map_or(FileStatus::Modified, |(status, _)| *status);
            let found = patches.iter().position(|(path, _)| *path == change.path);
            let (mut text, mut truncated) = match found {
                Some(i) => (patches.swap_remove(i).1.to_string(), false),
                // Past the whole limit (binary files have a header only).
                None => (String::new(), cut && !change.binary),
            };
            if text.len() > MAX_FILE_PATCH_BYTES {
                let mut end = MAX_FILE_PATCH_BYTES;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                truncated = true;
            }
            FileDiff {
                change,
                status,
                patch: text,
                patch_truncated: truncated,
            }
        })
        .collect::<Vec<_>>();
    // The file the limit fell in has part of its text.
    let truncated = cut || files.iter().any(|f| f.patch_truncated);
    let mut files = files;
    if cut && let Some(last) = files.iter_mut().rev().find(|f| !f.patch.is_empty()) {
        last.patch_truncated = true;
    }
    Ok(BranchDiff {
        branch,
        base_commit,
        head_commit,
        files,
        truncated,
    })
}

/// `git diff` output cut at each `diff --git a/<old> b/<new>` line: the new
/// path and the file's text.
fn split_patches(patch: &str) -> Vec<(String, &str)> {
    let mut starts: Vec<usize> = patch
        .match_indices("diff --git ")
        .map(|(i, _)| i)
        .filter(|&i| i == 0 || patch.as_bytes()[i - 1] == b'\n')
        .collect();
    starts.push(patch.len());
    starts
        .windows(2)
        .map(|w| {
            let text = &patch[w[0]..w[1]];
            (new_path(text).unwrap_or_default(), text)
        })
        .collect()
}

/// The new path of one file's diff: `+++ b/<path>`, or for a file with no
/// text (binary, mode or rename only) the `rename to`, or the header's
/// second path.
fn new_path(text: &str) -> Option<String> {
    let unquote = |p: &str| p.trim_matches('"').to_string();
    for line in text.lines().skip(1) {
        if let Some(path) = line.strip_prefix("+++ b/") {
            return Some(unquote(path));
        }
        if let Some(path) = line.strip_prefix("rename to ") {
            return Some(unquote(path));
        }
        if line.starts_with("@@") {
            break;
        }
    }
    let header = text.lines().next()?;
    let (_, new) = header.rsplit_once(" b/")?;
    Some(unquote(new))
}

/// `git diff --name-status -z`: a status letter, then one path (two for a
/// rename or copy).
fn parse_name_status(raw: &str) -> Vec<(FileStatus, &str)> {
    let mut fields = raw.split('\0').filter(|f| !f.is_empty());
    let mut out = Vec::new();
    while let Some(code) = fields.next() {
        let status = match code.as_bytes().first() {
            Some(b'A') => FileStatus::Added,
            Some(b'D') => FileStatus::Deleted,
            Some(b'R') | Some(b'C') => {
                fields.next();
                FileStatus::Renamed
            }
            _ => FileStatus::Modified,
        };
        if let Some(path) = fields.next() {
            out.push((status, path));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_are_split_per_file_by_their_new_path() {
        let patch = "diff --git a/x.txt b/x.txt\nindex 1..2 100644\n--- a/x.txt\n+++ b/x.txt\n@@ -1 +1 @@\n-a\n+b\ndiff --git a/old b/new\nsimilarity index 100%\nrename from old\nrename to new\ndiff --git a/img.png b/img.png\nnew file mode 100644\nBinary files /dev/null and b/img.png differ\n";
        let split = split_patches(patch);
        let paths: Vec<&str> = split.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["x.txt", "new", "img.png"]);
        assert!(split[0].1.ends_with("+b\n"));
        // A line of content that looks like a header is not a new file.
        let tricky = "diff --git a/a b/a\n--- a/a\n+++ b/a\n@@ -0,0 +1 @@\n+x diff --git a/z b/z\n";
        assert_eq!(split_patches(tricky).len(), 1);
    }

    #[test]
    fn name_status_gives_each_path_its_status() {
        let raw = "M\0a.txt\0A\0b.txt\0D\0c.txt\0R100\0old.txt\0new.txt\0";
        assert_eq!(
            parse_name_status(raw),
            vec![
                (FileStatus::Modified, "a.txt"),
                (FileStatus::Added, "b.txt"),
                (FileStatus::Deleted, "c.txt"),
                (FileStatus::Renamed, "new.txt"),
            ]
        );
    }
}
