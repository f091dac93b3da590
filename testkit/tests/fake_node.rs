//! A fake node dies with the process that made it: SIGKILL the owner (as nextest does to a
//! test past its timeout) and the namespace's processes, its mounts and its loop device go,
//! with no destructor run.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use volpool_testkit::{Reaper, TempDir, wait_for_blocking};

const OWNER: &str = env!("CARGO_BIN_EXE_fake-node");

/// Whether any process on this machine sees a mount whose source is `source`.
fn mounted_anywhere(source: &str) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.filter_map(Result::ok).any(|p| {
        std::fs::read_to_string(p.path().join("mountinfo")).is_ok_and(|text| {
            text.lines()
                .any(|l| l.split(" - ").nth(1).and_then(|r| r.split(' ').nth(1)) == Some(source))
        })
    })
}

fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, s)| s.trim_start().starts_with('Z'))
    })
}

fn backing_file(device: &str) -> Option<String> {
    let name = device.strip_prefix("/dev/")?;
    std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
        .ok()
        .map(|f| f.trim().to_string())
}

#[test]
fn a_killed_owner_leaves_no_namespace_mount_or_loop_device() -> anyhow::Result<()> {
    let tmp = TempDir::new("volpool-kit-owner")?;
    let source = tmp
        .0
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let image = tmp.join("disk.img");
    let mut owner = Command::new(OWNER)
        .arg(&tmp.0)
        .arg(&image)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = owner.stdout.take().expect("piped stdout");
    let mut reaper = Reaper::of(owner);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let field = |key: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no {key} in {line:?}"))
    };
    let (holder, init, device) = (field("holder"), field("init"), field("loop"));
    assert!(alive(&holder) && alive(&init), "the node runs: {line}");
    assert!(mounted_anywhere(&source), "the node's tmpfs is mounted");
    assert_eq!(
        backing_file(&device).as_deref(),
        Some(image.to_string_lossy().as_ref()),
        "{device} is attached to the image"
    );

    // SIGKILL: no Drop runs in the owner.
    let owner = &mut reaper.0[0];
    owner.kill()?;
    owner.wait()?;

    wait_for_blocking(
        "the holder and init to exit",
        Duration::from_secs(10),
        || (!alive(&holder) && !alive(&init)).then_some(()),
    )?;
    wait_for_blocking("the node's mounts to go", Duration::from_secs(10), || {
        (!mounted_anywhere(&source)).then_some(())
    })?;
    wait_for_blocking(
        &format!("{device} to be detached from the image"),
        Duration::from_secs(10),
        || {
            (backing_file(&device).as_deref() != Some(image.to_string_lossy().as_ref()))
                .then_some(())
        },
    )?;
    Ok(())
}
