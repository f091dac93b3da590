//! A FUSE mount whose `statfs` never returns, next to a healthy tmpfs: the scan finishes with
//! the FUSE entry `Stuck` and the tmpfs measured, `/metrics` keeps answering, and later mounts
//! are still noticed. The FUSE filesystem is this test binary itself, re-run as
//! `hangfs_server` inside the fake node.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use common::{AGENT, FakeNode, Reaper, TempDir, free_port, get, pools_file, sample, wait_for};
use fuser::{Errno, FileAttr, FileType, INodeNo, ReplyAttr, ReplyStatfs, Request};
use volpool_api::{NodeVolumesStatus, VolumeState};

const MOUNT_ENV: &str = "VOLPOOL_HANGFS_MOUNT";

/// A one-directory filesystem that answers `getattr` and never answers `statfs`.
struct HangFs;

impl fuser::Filesystem for HangFs {
    fn getattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: Option<fuser::FileHandle>,
        reply: ReplyAttr,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOENT);
        }
        let now = SystemTime::now();
        let attr = FileAttr {
            ino,
            size: 0,
            blocks: 0,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            kind: FileType::Directory,
            perm: 0o755,
            nlink: 2,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        };
        reply.attr(&Duration::from_secs(1), &attr);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // NB: dropping a reply answers EIO; forgetting it leaves the caller waiting forever.
        std::mem::forget(reply);
    }
}

#[test]
#[ignore = "helper process: serves the hanging FUSE filesystem for the test below"]
fn hangfs_server() {
    let Ok(mountpoint) = std::env::var(MOUNT_ENV) else {
        return;
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("hangfs".into()),
        fuser::MountOption::Subtype("hangfs".into()),
    ];
    fuser::mount(HangFs, mountpoint, &config).expect("mount hangfs");
}

fn df(node: &FakeNode, path: &Path) -> u64 {
    let out = node.sh(&format!(
        "df -B1 --output=size '{}' | tail -n 1",
        path.display()
    ));
    out.trim().parse().expect("df size")
}

#[test]
fn hung_fuse_mount_is_stuck_while_the_rest_is_measured_and_metrics_answer() {
    let tmp = TempDir::new("volpool-hung");
    let disks = tmp.join("disks");
    for dir in ["ok", "hung", "later"] {
        std::fs::create_dir_all(disks.join(dir)).expect("mkdir");
    }
    let mut reaper = Reaper::default();
    let node = FakeNode::new();
    node.sh(&format!(
        "mount -t tmpfs -o size=20m t '{}/ok'",
        disks.display()
    ));
    let hangfs = node
        .command(std::env::current_exe().expect("test binary"))
        .args(["hangfs_server", "--exact", "--ignored", "--nocapture"])
        .env(MOUNT_ENV, disks.join("hung"))
        .stdout(Stdio::null())
        .spawn()
        .expect("start hangfs");
    reaper.0.push(hangfs);
    wait_for("hangfs to be mounted", Duration::from_secs(30), || {
        node.sh("grep -c ' - fuse[.a-z]* hangfs ' /proc/1/mountinfo || true")
            .trim()
            .ne("0")
            .then_some(())
    });
    // The mount really hangs: statfs(1) is killed after a second.
    let probe = node.sh(&format!(
        "timeout -s KILL 1 stat -f '{}/hung' >/dev/null 2>&1 || echo $?",
        disks.display()
    ));
    assert_eq!(probe.trim(), "137", "statfs on hangfs must not return");
    let pools = pools_file(&tmp, &disks, "1Mi", false);

    // One scan with a 1 s probe deadline ends, with the FUSE entry Stuck. NB: the process
    // itself cannot exit while its probe thread waits in the kernel for a FUSE request that
    // the daemon read and never answered (such waits are not even killable), so the test
    // waits for the report, not for the exit.
    let start = Instant::now();
    let mut scan = node
        .command(AGENT)
        .args([
            "scan",
            "--host-root",
            "/",
            "--probe-timeout",
            "1s",
            "-o",
            "json",
            "--pools-file",
        ])
        .arg(&pools)
        .stdout(Stdio::piped())
        .spawn()
        .expect("agent runs");
    let stdout = scan.stdout.take().expect("stdout");
    reaper.0.push(scan);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            text.push_str(&line);
            text.push('\n');
            if line == "}" {
                let _ = tx.send(text.clone());
            }
        }
    });
    let stdout = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the scan report");
    eprintln!(
        "scan with a hung mount reported after {:?} (probe timeout 1s)",
        start.elapsed()
    );
    let report: NodeVolumesStatus = serde_json::from_str(&stdout).expect("json");
    let by_name = |name: &str| {
        report
            .volumes
            .iter()
            .find(|v| v.path.ends_with(&format!("/{name}")))
            .unwrap_or_else(|| panic!("{name} in {report:#?}"))
            .clone()
    };
    let hung = by_name("hung");
    assert_eq!(hung.state, VolumeState::Stuck, "{hung:?}");
    assert!(hung.fs_type.starts_with("fuse"), "{hung:?}");
    assert!(hung.message.contains("did not answer"), "{hung:?}");
    let ok = by_name("ok");
    assert_eq!(
        (ok.state, ok.capacity_bytes),
        (VolumeState::Ready, df(&node, &disks.join("ok")))
    );

    // The daemon: ready, /metrics answers with the stuck entry and the healthy one.
    let port = free_port();
    let agent = node
        .command(AGENT)
        .args([
            "--host-root",
            "/",
            "--probe-timeout",
            "1s",
            "--resync",
            "1s",
            "--pools-file",
        ])
        .arg(&pools)
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .expect("agent daemon");
    reaper.0.push(agent);
    wait_for("/readyz", Duration::from_secs(30), || {
        get(port, "/readyz").filter(|(code, _)| *code == 200)
    });
    let hung_path = format!("path=\"{}\"", disks.join("hung").display());
    let ok_path = format!("path=\"{}\"", disks.join("ok").display());
    let metrics = get(port, "/metrics").expect("/metrics answers").1;
    assert_eq!(
        sample(&metrics, "volpool_volume_stuck", &[&hung_path]),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "volpool_volume_probe_success", &[&hung_path]),
        Some(0.0)
    );
    assert_eq!(
        sample(&metrics, "volpool_volume_probe_success", &[&ok_path]),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "volpool_volume_capacity_bytes", &[&ok_path]),
        Some(df(&node, &disks.join("ok")) as f64)
    );
    assert_eq!(
        sample(&metrics, "volpool_discovery_entries", &["state=\"Stuck\""]),
        Some(1.0)
    );
    assert!(sample(&metrics, "volpool_agent_build_info", &["version="]).is_some());
    assert_eq!(get(port, "/healthz").map(|r| r.0), Some(200));

    // Scans go on past the hung mount (resync every second, and on mount events): a new
    // mount shows up while the FUSE call is still blocked.
    node.sh(&format!(
        "mount -t tmpfs -o size=8m t '{}/later'",
        disks.display()
    ));
    let later = format!("path=\"{}\"", disks.join("later").display());
    wait_for("the new mount in /metrics", Duration::from_secs(30), || {
        let metrics = get(port, "/metrics")?.1;
        sample(&metrics, "volpool_volume_capacity_bytes", &[&later])
            .filter(|v| *v == (8 << 20) as f64)
    });
    let metrics = get(port, "/metrics").expect("/metrics answers").1;
    assert_eq!(
        sample(&metrics, "volpool_volume_stuck", &[&hung_path]),
        Some(1.0)
    );
}
