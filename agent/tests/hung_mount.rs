//! A FUSE mount whose `statfs` never returns, next to a healthy tmpfs: the scan finishes with
//! the FUSE entry `Stuck` and the tmpfs measured, `/metrics` keeps answering, and later mounts
//! are still noticed. The FUSE filesystem is the test kit's `hangfs`, run inside the fake node.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use volpool_api::{NodeVolumesStatus, VolumeState};
use volpool_testkit::metrics::{sample, volume_sample};
use volpool_testkit::{
    FakeNode, Reaper, TempDir, agent::pools_file, cargo_binary, free_port, http_get,
    wait_for_blocking,
};

const AGENT: &str = env!("CARGO_BIN_EXE_volpool-agent");

fn df(node: &FakeNode, path: &Path) -> u64 {
    let out = node.sh(&format!(
        "df -B1 --output=size '{}' | tail -n 1",
        path.display()
    ));
    out.expect("df runs").trim().parse().expect("df size")
}

#[test]
fn hung_fuse_mount_is_stuck_while_the_rest_is_measured_and_metrics_answer() -> anyhow::Result<()> {
    let tmp = TempDir::new("volpool-hung")?;
    let disks = tmp.join("disks");
    for dir in ["ok", "hung", "later"] {
        std::fs::create_dir_all(disks.join(dir)).expect("mkdir");
    }
    let mut reaper = Reaper::default();
    let node = FakeNode::new()?;
    node.sh(&format!(
        "mount -t tmpfs -o size=20m t '{}/ok'",
        disks.display()
    ))?;
    let hangfs = node
        .command(cargo_binary("volpool-testkit", "hangfs")?)
        .arg(disks.join("hung"))
        .stdout(Stdio::null())
        .spawn()?;
    reaper.0.push(hangfs);
    wait_for_blocking("hangfs to be mounted", Duration::from_secs(30), || {
        node.sh("grep -c ' - fuse[.a-z]* hangfs ' /proc/1/mountinfo || true")
            .ok()?
            .trim()
            .ne("0")
            .then_some(())
    })?;
    // The mount really hangs: statfs(1) is killed after a second.
    let probe = node.sh(&format!(
        "timeout -s KILL 1 stat -f '{}/hung' >/dev/null 2>&1 || echo $?",
        disks.display()
    ))?;
    assert_eq!(probe.trim(), "137", "statfs on hangfs must not return");
    let pools = pools_file(&tmp, &disks, "1Mi", false)?;

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
    let port = free_port()?;
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
    wait_for_blocking("/readyz", Duration::from_secs(30), || {
        http_get(port, "/readyz")
            .ok()
            .filter(|(code, _)| *code == 200)
    })?;
    let hung_path = disks.join("hung").display().to_string();
    let ok_path = disks.join("ok").display().to_string();
    let metrics = http_get(port, "/metrics")?.1;
    assert_eq!(
        volume_sample(&metrics, "volpool_volume_stuck", &hung_path),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        volume_sample(&metrics, "volpool_volume_probe_success", &hung_path),
        Some(0.0)
    );
    assert_eq!(
        volume_sample(&metrics, "volpool_volume_probe_success", &ok_path),
        Some(1.0)
    );
    assert_eq!(
        volume_sample(&metrics, "volpool_volume_capacity_bytes", &ok_path),
        Some(df(&node, &disks.join("ok")) as f64)
    );
    assert_eq!(
        sample(&metrics, "volpool_discovery_entries", &["state=\"Stuck\""]),
        Some(1.0)
    );
    assert!(sample(&metrics, "volpool_agent_build_info", &["version="]).is_some());
    assert_eq!(http_get(port, "/healthz")?.0, 200);

    // Scans go on past the hung mount (resync every second, and on mount events): a new
    // mount shows up while the FUSE call is still blocked.
    node.sh(&format!(
        "mount -t tmpfs -o size=8m t '{}/later'",
        disks.display()
    ))?;
    let later = disks.join("later").display().to_string();
    wait_for_blocking("the new mount in /metrics", Duration::from_secs(30), || {
        let metrics = http_get(port, "/metrics").ok()?.1;
        volume_sample(&metrics, "volpool_volume_capacity_bytes", &later)
            .filter(|v| *v == (8 << 20) as f64)
    })?;
    let metrics = http_get(port, "/metrics")?.1;
    assert_eq!(
        volume_sample(&metrics, "volpool_volume_stuck", &hung_path),
        Some(1.0)
    );
    Ok(())
}
