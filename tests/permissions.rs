//! What the server writes for its owner only: the config `init` writes
//! (it may hold tokens and secrets) is 0600, the data dir it creates 0700.

mod common;

use std::os::unix::fs::PermissionsExt;

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_writes_its_config_for_the_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("claudomator.toml");
    let init = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_claudomator"))
            .arg("init")
            .arg(&config)
            .args(extra)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    assert!(init(&[]).status.success());
    assert_eq!(mode(&config), 0o600);
    // Overwriting a file someone left world-readable makes it private too.
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(init(&["--force"]).status.success());
    assert_eq!(mode(&config), 0o600);
}

#[tokio::test]
async fn the_data_dir_is_created_for_the_owner_only() {
    let server = common::start_server().await;
    assert_eq!(mode(&server.data_dir()), 0o700);
}
