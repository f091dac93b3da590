//! `Mounted` on a real temporary directory, and the name checks both implementations share.
//! (`Nfs3` is tested against nfs-ganesha in `tests/tests/nfs_pool.rs`.)

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::PathBuf;
use std::time::Duration;

use super::*;

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let path =
            std::env::temp_dir().join(format!("volpool-exportfs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mounted(dir: &Dir) -> Mounted {
    Mounted::new(dir.0.to_str().expect("utf-8 path"), Duration::from_secs(5))
}

#[tokio::test]
async fn makes_lists_renames_and_reads_space() {
    let root = Dir::new("basic");
    let fs = mounted(&root);
    fs.make_dir("pv-0000000a", 0o777).await.expect("mkdir");
    fs.make_dir("pv-0000000a", 0o777)
        .await
        .expect("mkdir again is fine");
    let mode = std::fs::metadata(root.0.join("pv-0000000a"))
        .expect("made")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o7777,
        0o777,
        "the mode is exact, whatever the umask"
    );
    assert!(fs.is_empty("pv-0000000a").await.expect("read"));
    std::fs::write(root.0.join("pv-0000000a/data"), b"x").expect("write");
    assert!(!fs.is_empty("pv-0000000a").await.expect("read"));
    let names: Vec<String> = fs
        .list()
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["pv-0000000a"]);
    fs.rename("pv-0000000a", "archived-pv-0000000a-x")
        .await
        .expect("rename");
    assert!(root.0.join("archived-pv-0000000a-x/data").exists());
    let err = fs.rename("pv-0000000a", "y").await.expect_err("gone");
    assert_eq!(err.kind, FailKind::NotFound);
    let space = fs.space().await.expect("statvfs");
    assert!(space.size_bytes >= space.available_bytes && space.size_bytes > 0);
}

#[tokio::test]
async fn removal_stays_inside_the_directory_and_never_follows_symlinks() {
    let root = Dir::new("remove");
    let outside = Dir::new("outside");
    std::fs::write(outside.0.join("precious"), b"keep").expect("write");
    let fs = mounted(&root);
    fs.make_dir("pv-0000000b", 0o777).await.expect("mkdir");
    let vol = root.0.join("pv-0000000b");
    std::fs::create_dir_all(vol.join("a/b/c")).expect("tree");
    std::fs::write(vol.join("a/b/c/file"), b"data").expect("file");
    symlink(&outside.0, vol.join("a/link-to-outside")).expect("symlink");
    symlink(outside.0.join("precious"), vol.join("file-link")).expect("symlink");
    std::fs::set_permissions(vol.join("a/b"), std::fs::Permissions::from_mode(0o500))
        .expect("chmod");
    let result = fs.remove_tree("pv-0000000b").await;
    // A read-only subdirectory may stop an unprivileged run; root removes it. Either way
    // nothing outside moved.
    if result.is_ok() {
        assert!(!vol.exists());
    }
    assert_eq!(
        std::fs::read(outside.0.join("precious")).expect("kept"),
        b"keep"
    );
    fs.remove_tree("pv-0000000b").await.ok();
    fs.remove_tree("pv-missing")
        .await
        .expect("a missing directory is fine");
}

#[tokio::test]
async fn names_outside_the_root_are_refused() {
    let root = Dir::new("names");
    let fs = mounted(&root);
    for bad in ["", ".", "..", "../etc", "a/b"] {
        assert!(fs.make_dir(bad, 0o777).await.is_err(), "{bad:?}");
        assert!(fs.remove_tree(bad).await.is_err(), "{bad:?}");
        assert!(fs.rename("x", bad).await.is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn a_missing_mount_is_unreachable() {
    let fs = Mounted::new("/nonexistent/volpool-mount", Duration::from_secs(5));
    let err = fs.list().await.expect_err("no such mount");
    assert_eq!(err.kind, FailKind::Unreachable, "{err}");
}
