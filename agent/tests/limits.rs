//! `volpool-agent limits` on a fake node with real processes in real pod-like cgroups: one in
//! the cgroup v1 `pids` hierarchy named by the cgroupfs driver (`…/kubepods/burstable/pod<uid>/
//! <id>`) that locks its memory with `mlockall`, one in the cgroup v2 hierarchy named by the
//! systemd driver (`…-pod<uid_>.slice/cri-containerd-<id>.scope`) whose command line is
//! Elasticsearch's, and a `containerd` daemon. Limits are set by `prlimit` (lowered only: these
//! machines refuse to raise a hard limit). The report must map each process to its pod and
//! container and give its limits and locked bytes exactly.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use volpool_testkit::agent::json_report;
use volpool_testkit::{FakeNode, TempDir, wait_for_blocking};

const AGENT: &str = env!("CARGO_BIN_EXE_volpool-agent");

const V1: &str = "/sys/fs/cgroup/pids";
const V2: &str = "/sys/fs/cgroup/unified";

/// Python that maps and touches 4 MiB, locks everything with mlockall, then sleeps.
const MLOCKALL: &str = "import ctypes, mmap, time\n\
libc = ctypes.CDLL(None, use_errno=True)\n\
buf = mmap.mmap(-1, 4 << 20)\n\
buf.write(b'x' * (4 << 20))\n\
assert libc.mlockall(1) == 0, ctypes.get_errno()\n\
libc.prctl(15, b'locked')\n\
time.sleep(3600)\n";

/// Cgroups made for the test and the processes in them: killed and removed on drop.
#[derive(Default)]
struct Cgroups {
    dirs: Vec<PathBuf>,
    children: Vec<Child>,
}

impl Cgroups {
    /// Create `<root>/<path>` (and its parents); remember them for removal.
    fn create(&mut self, root: &str, path: &str) -> PathBuf {
        let mut dir = PathBuf::from(root);
        for part in path.split('/') {
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", dir.display()));
                self.dirs.push(dir.clone());
            }
        }
        dir
    }

    /// Start `script` (sh) on `node` inside `cgroup`; returns its host pid once it has exec'd
    /// a program whose command line holds `marker`.
    fn start(&mut self, node: &FakeNode, cgroup: &Path, script: &str, marker: &str) -> u32 {
        let (child, pid) = node
            .spawn_in_cgroup(cgroup, script, marker)
            .expect("the process starts");
        self.children.push(child);
        pid
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.split_whitespace() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", pid])
                    .status();
            }
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // NB: a cgroup can be removed only once its last process is reaped.
        let deadline = Instant::now() + Duration::from_secs(10);
        for dir in self.dirs.iter().rev() {
            while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// A UUID-shaped string unique to this run.
fn uid(n: u32) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let hex = format!(
        "{:032x}",
        nanos ^ (u128::from(std::process::id()) << 64) ^ u128::from(n)
    );
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn vm_lck_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .expect("VmLck")
        * 1024
}

fn container<'a>(report: &'a Value, container_id: &str) -> &'a Value {
    report["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["containerID"] == container_id)
        .unwrap_or_else(|| panic!("no container {container_id} in {report:#}"))
}

fn limit(soft: u64, hard: u64) -> Value {
    json!({"soft": soft, "hard": hard})
}

#[test]
fn limits_maps_processes_to_pods_and_reports_their_limits_and_locked_memory() -> anyhow::Result<()>
{
    let tmp = TempDir::new("volpool-limits")?;
    let node = FakeNode::new()?;
    let mut cgroups = Cgroups::default();
    let top = format!("volpool-test-{}", std::process::id());

    // The runtime daemon: a `sleep` named containerd.
    let daemon = tmp.join("containerd");
    std::fs::copy("/bin/sleep", &daemon).expect("copy sleep");
    let runtime_cgroup = cgroups.create(V1, &format!("{top}/system.slice/containerd.service"));
    let runtime_pid = cgroups.start(
        &node,
        &runtime_cgroup,
        &format!(
            "prlimit --memlock=4194304:8388608 --nofile=10000:20000 --nproc=5000:6000 -- {} 3600",
            daemon.display()
        ),
        "containerd",
    );

    // A cgroupfs-driver container that locks its memory.
    let (locker_pod, locker_id) = (uid(1), uid(2).replace('-', ""));
    let locker_cgroup = cgroups.create(
        V1,
        &format!("{top}/kubepods/burstable/pod{locker_pod}/{locker_id}"),
    );
    let locker_pid = cgroups.start(
        &node,
        &locker_cgroup,
        &format!(
            "prlimit --memlock=8388608:8388608 --nofile=1024:4096 --nproc=1000:2000 -- python3 -c \"{MLOCKALL}\" locker"
        ),
        "locker",
    );
    // NB: mlockall locks one mapping after another, so VmLck is read only once the locker
    // has named itself `locked` after the call returned.
    let locked = wait_for_blocking("mlockall", Duration::from_secs(20), || {
        let comm = std::fs::read_to_string(format!("/proc/{locker_pid}/comm")).ok()?;
        (comm.trim() == "locked").then(|| vm_lck_bytes(locker_pid))
    })?;
    assert!(locked >= 4 << 20, "the 4 MiB buffer is locked: {locked}");

    // A systemd-driver (cgroup v2) container running Elasticsearch, asked to lock its memory,
    // with memlock 64 KiB.
    let (es_pod, es_id) = (uid(3), uid(4).replace('-', ""));
    let es_cgroup = cgroups.create(
        V2,
        &format!(
            "{top}.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{es_id}.scope",
            es_pod.replace('-', "_")
        ),
    );
    cgroups.start(
        &node,
        &es_cgroup,
        "prlimit --memlock=65536:65536 --nofile=4096:8192 --nproc=4096:4096 -- python3 -c 'import time; time.sleep(3600)' \
         -Xms1g org.elasticsearch.bootstrap.Elasticsearch -Ebootstrap.memory_lock=true",
        "org.elasticsearch.bootstrap.Elasticsearch",
    );

    let out = node
        .command(AGENT)
        .args(["limits", "--host-root", "/", "--output", "json"])
        .env_remove("NODE_NAME")
        .output()
        .expect("agent runs");
    let report = json_report(&out, "volpool-agent limits");
    assert_eq!(
        out.status.code(),
        Some(1),
        "a requirement is not met: {report:#}"
    );

    let max_map_count: u64 = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .expect("max_map_count")
        .trim()
        .parse()
        .expect("a number");
    assert_eq!(report["vmMaxMapCount"], max_map_count);
    let runtime = &report["runtime"];
    assert_eq!(runtime["name"], "containerd", "{report:#}");
    assert_ne!(
        runtime["pid"], runtime_pid,
        "the pid is the node's, not the test's"
    );
    assert_eq!(runtime["memlock"], limit(4 << 20, 8 << 20));
    assert_eq!(runtime["nofile"], limit(10_000, 20_000));
    assert_eq!(runtime["nproc"], limit(5000, 6000));

    let c = container(&report, &locker_id);
    assert_eq!(c["podUID"], locker_pod);
    assert_eq!(c["memlock"], limit(8 << 20, 8 << 20));
    assert_eq!(c["nofile"], limit(1024, 4096));
    assert_eq!(c["nproc"], limit(1000, 2000));
    assert_eq!(c["lockedMemoryBytes"], locked, "{c:#}");
    assert_eq!(
        vm_lck_bytes(locker_pid),
        locked,
        "locked memory did not move"
    );
    assert_eq!(c["requirements"], json!([]), "no profile, no annotations");
    for name in ["namespace", "pod", "container"] {
        assert_eq!(c[name], "", "no cluster, no names");
    }

    let es = container(&report, &es_id);
    assert_eq!(es["podUID"], es_pod);
    assert_eq!(es["memlock"], limit(65_536, 65_536));
    assert_eq!(es["lockedMemoryBytes"], 0);
    let requirement = |name: &str| {
        es["requirements"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["requirement"] == name)
            .unwrap_or_else(|| panic!("no {name} requirement in {es:#}"))
            .clone()
    };
    let memlock = requirement("memlock");
    assert_eq!(memlock["met"], false);
    assert_eq!(memlock["source"], "elasticsearch");
    assert_eq!(memlock["required"], "unlimited");
    assert_eq!(memlock["actual"], "65536");
    let message = memlock["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("LimitMEMLOCK=infinity") && message.contains("containerd.service"),
        "{message}"
    );
    assert_eq!(requirement("nproc")["met"], true);
    assert_eq!(requirement("nofile")["met"], false, "4096 < 65535");
    assert_eq!(
        requirement("max-map-count")["met"],
        max_map_count >= 262_144
    );

    let table = node
        .command(AGENT)
        .args(["limits", "--host-root", "/"])
        .env_remove("NODE_NAME")
        .output()
        .expect("agent runs");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(&locker_pod)
            && table.contains("8.0Mi/8.0Mi")
            && table.contains("LimitMEMLOCK=infinity"),
        "{table}"
    );
    Ok(())
}
