//! What the server does not take from a sandbox: the agent's git config,
//! links out of the repository, untracked files through links, alternates;
//! and what a sandbox shares with its project.

use super::*;

#[tokio::test]
async fn config_the_agent_leaves_never_runs_in_the_servers_git() {
    let world = World::new();
    let project = world.project("demo");
    let cfg = world.cfg(true);
    let sandbox = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();
    // As the agent: an fsmonitor and a clean filter that would run code in
    // the server's `git add`, and a file the filter applies to.
    let pwned = world.path("pwned");
    let run = format!("touch {}", pwned.display());
    world.git(&sandbox.path, &["config", "core.fsmonitor", &run]);
    world.git(&sandbox.path, &["config", "filter.evil.clean", &run]);
    world.git(&sandbox.path, &["config", "claudomator.baseCommit", "0000"]);
    write(&sandbox.path, ".gitattributes", "* filter=evil\n");
    write(&sandbox.path, "work.txt", "done\n");

    let changes = sandbox.commit_all(&cfg, "agent work").await.unwrap();
    assert!(
        !pwned.exists(),
        "the agent's config ran in the server's git"
    );
    assert!(changes.files.iter().any(|f| f.path == "work.txt"));
    let config = fs::read_to_string(sandbox.path.join(".git/config")).unwrap();
    assert!(
        !config.contains("evil") && !config.contains("fsmonitor"),
        "{config}"
    );
    // The base commit is the server's, not the agent's.
    let again = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();
    assert_eq!(again.base_commit, sandbox.base_commit);
}

#[tokio::test]
async fn a_repository_pointing_outside_the_sandbox_is_refused() {
    let world = World::new();
    let project = world.project("demo");
    let cfg = world.cfg(true);
    let sandbox = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();
    // As the agent: the objects git writes go to a directory of its choice.
    let elsewhere = world.path("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    let objects = sandbox.path.join(".git/objects");
    fs::rename(&objects, elsewhere.join("objects")).unwrap();
    std::os::unix::fs::symlink(elsewhere.join("objects"), &objects).unwrap();
    write(&sandbox.path, "work.txt", "done\n");
    let err = sandbox.commit_all(&cfg, "agent work").await.unwrap_err();
    assert!(matches!(err, SandboxError::Tampered { .. }), "{err}");
    assert!(err.to_string().contains(".git/objects"), "{err}");

    // `.git` itself a link to the project's repository.
    fs::remove_dir_all(sandbox.path.join(".git")).unwrap();
    std::os::unix::fs::symlink(project.join(".git"), sandbox.path.join(".git")).unwrap();
    let err = sandbox.commit_all(&cfg, "agent work").await.unwrap_err();
    assert!(err.to_string().contains(".git is not a directory"), "{err}");
    assert_eq!(world.git(&project, &["status", "--porcelain"]), "");
}

#[tokio::test]
async fn untracked_files_are_copied_in_but_never_through_a_link() {
    let world = World::new();
    let project = world.project("demo");
    write(&project, ".gitignore", ".env\n");
    world.commit(&project, "ignore .env");
    write(&project, ".env", "TOKEN=local\n");
    fs::create_dir(project.join("config")).unwrap();
    write(&project.join("config"), "local.toml", "x = 1\n");
    write(&project.join("config"), "other.txt", "not matched\n");
    let cfg = world.cfg(true);
    let sandbox = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();
    assert!(sandbox.fresh);
    let mut copied = sandbox
        .copy_from(&project, &[".env".into(), "config/*.toml".into()])
        .await
        .unwrap();
    copied.sort();
    assert_eq!(copied, vec![".env", "config/local.toml"]);
    assert_eq!(
        fs::read_to_string(sandbox.path.join(".env")).unwrap(),
        "TOKEN=local\n"
    );
    assert!(!sandbox.path.join("config/other.txt").exists());
    let again = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();
    assert!(!again.fresh);

    // A sandbox whose `config` is a link out (as a hostile commit could
    // make it): nothing is written through it.
    let outside = world.path("outside");
    fs::create_dir(&outside).unwrap();
    fs::remove_dir_all(sandbox.path.join("config")).unwrap();
    std::os::unix::fs::symlink(&outside, sandbox.path.join("config")).unwrap();
    let err = sandbox
        .copy_from(&project, &["config/*.toml".into()])
        .await
        .unwrap_err();
    assert!(matches!(err, SandboxError::CopyBlocked { .. }), "{err}");
    assert!(!outside.join("local.toml").exists());
}

/// Bytes of the files under `dir` (what a copy of it would hold).
fn bytes_under(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                bytes_under(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

#[tokio::test]
async fn a_sandbox_shares_the_projects_history_and_keeps_its_base() {
    let world = World::new();
    let project = world.project("demo");
    // History worth sharing: 2 MB the clone would otherwise copy.
    let noise: String = (0..400_000u32)
        .map(|i| format!("{:x}", i.wrapping_mul(2_654_435_761)))
        .collect();
    write(&project, "big.txt", &noise[..2_000_000]);
    let base = world.commit(&project, "big");
    let cfg = world.cfg(false);
    let sandbox = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();
    let store = project.join(".git/objects").canonicalize().unwrap();
    assert_eq!(shared_paths(&sandbox.path).await, vec![store.clone()]);
    let own = bytes_under(&sandbox.path.join(".git/objects"));
    assert!(own < 100_000, "the clone copied {own} bytes of objects");
    let kept = format!("refs/claudomator/base/{TASK}");
    assert_eq!(world.git(&project, &["rev-parse", &kept]), base);

    // The project drops the commit and prunes everything unreachable: the
    // sandbox still has its base, through the kept ref.
    world.git(&project, &["reset", "--quiet", "--hard", "HEAD~1"]);
    world.git(&project, &["reflog", "expire", "--expire=now", "--all"]);
    world.git(&project, &["gc", "--quiet", "--prune=now"]);
    write(&sandbox.path, "work.txt", "done\n");
    let changes = sandbox.commit_all(&cfg, "agent work").await.unwrap();
    assert_eq!(changes.files, vec![change("work.txt", 1, 0)]);
    world.git(
        &sandbox.path,
        &["cat-file", "-e", &format!("{base}:big.txt")],
    );

    // Gone with the sandbox: the ref, the saved copies.
    let path = sandbox.path.clone();
    sandbox.finish(&cfg, true).await.unwrap();
    let refs = world.git(&project, &["for-each-ref", "refs/claudomator/"]);
    assert_eq!(refs, "");
    assert!(shared_paths(&path).await.is_empty());
}

#[tokio::test]
async fn alternates_the_agent_rewrites_are_put_back() {
    let world = World::new();
    let project = world.project("demo");
    let other = world.project("other");
    let cfg = world.cfg(true);
    let sandbox = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();
    let alternates = sandbox.path.join(".git/objects/info/alternates");
    let saved = fs::read_to_string(&alternates).unwrap();
    // As the agent: its clone now reads another repository's objects.
    let elsewhere = other.join(".git/objects");
    fs::write(&alternates, format!("{}\n", elsewhere.display())).unwrap();
    assert_eq!(
        shared_paths(&sandbox.path).await,
        vec![project.join(".git/objects").canonicalize().unwrap()],
        "what the agent wrote decides what the OS sandbox shows"
    );
    write(&sandbox.path, "work.txt", "done\n");
    sandbox.commit_all(&cfg, "agent work").await.unwrap();
    assert_eq!(fs::read_to_string(&alternates).unwrap(), saved);

    // `objects/info` turned into a link: refused, nothing written through.
    let info = sandbox.path.join(".git/objects/info");
    fs::remove_dir_all(&info).unwrap();
    std::os::unix::fs::symlink(other.join(".git/objects/info"), &info).unwrap();
    let err = sandbox.commit_all(&cfg, "agent work").await.unwrap_err();
    assert!(err.to_string().contains(".git/objects/info"), "{err}");
    assert!(!other.join(".git/objects/info/alternates").exists());
}

/// A git HTTP remote on loopback that asks for credentials, then records the
/// `Authorization` header git comes back with and refuses the push.
fn credential_checking_remote() -> (String, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/o/r.git", listener.local_addr().unwrap());
    let (seen, headers) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { return };
            let mut auth = String::new();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                if let Some(value) = line.strip_prefix("Authorization: ") {
                    auth = value.trim().to_string();
                }
                line.clear();
            }
            let reply = if auth.is_empty() {
                "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"t\"\r\n"
            } else {
                let _ = seen.send(auth);
                "HTTP/1.1 403 Forbidden\r\n"
            };
            let _ = stream.write_all(
                format!("{reply}Content-Length: 0\r\nConnection: close\r\n\r\n").as_bytes(),
            );
        }
    });
    (url, headers)
}

#[tokio::test]
async fn a_push_token_reaches_git_only_through_the_one_process_helper() {
    let world = World::new();
    let project = world.project("demo");
    let cfg = world.cfg(true);
    let sandbox = Sandbox::prepare(&cfg, "demo", &project, TASK)
        .await
        .unwrap();
    write(&sandbox.path, "work.txt", "done\n");
    sandbox.commit_all(&cfg, "agent work").await.unwrap();
    deliver(&sandbox).await.unwrap();
    // As the user: a helper of their own that would hand out another secret.
    world.git(
        &project,
        &[
            "config",
            "credential.helper",
            "!echo password=users-own-secret #",
        ],
    );

    let (url, headers) = credential_checking_remote();
    let token = crate::core::codehost::Secret::new("ghs_pushTOKEN_4242");
    let branch = format!("claudomator/{TASK}");
    let err = push_branch(&project, &url, &branch, Some(&token), true)
        .await
        .unwrap_err();
    // base64("x-access-token:ghs_pushTOKEN_4242"): the helper answered, the
    // user's own helper did not.
    let auth = headers
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("git came back with credentials");
    assert_eq!(auth, "Basic eC1hY2Nlc3MtdG9rZW46Z2hzX3B1c2hUT0tFTl80MjQy");
    assert!(!err.to_string().contains("ghs_pushTOKEN"), "{err}");
    // Nowhere on disk: not in the project's or the sandbox's repository.
    for dir in [project.join(".git"), sandbox.path.join(".git")] {
        let found = Command::new("grep")
            .args(["-r", "-l", "ghs_pushTOKEN"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            found.stdout.is_empty(),
            "the token was written under {}: {}",
            dir.display(),
            String::from_utf8_lossy(&found.stdout)
        );
    }
}
