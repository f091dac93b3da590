//! The scrub raced: while `volpool-agent scrub` wipes a volume, an adversary inside the volume
//! rewrites it as fast as it can, and not one file outside the volume may be touched. Each
//! round builds a small tree in the volume, starts the adversary, runs the real scrub (the
//! same lookup and wipe the daemon performs), stops the adversary and compares a sentinel
//! tree outside the volume with how it was: same names, kinds, sizes, contents and mtimes.
//!
//! ```text
//!  test ──► unshare --mount --pid --fork --mount-proc (a private namespace: no mount leaks)
//!            └─► the same test, inside: N rounds of
//!                 build the tree ─► adversary on ─► volpool-agent scrub --method Wipe ─► adversary off
//!                 ─► the sentinel outside is exactly as it was (else: the round, the diff, the result)
//! ```
//!
//! Adversaries: directories swapped with symlinks to the sentinel (and back, `RENAME_EXCHANGE`,
//! at two depths); bind mounts of the sentinel appearing on directories of the volume and
//! going again, from another filesystem and from the very filesystem the volume is a sub-tree
//! of (same `st_dev`: only the mount itself tells). What the scrub does with a mount it meets:
//! it leaves it alone, names it, and ends `Failed` ("unmount them, then restart the agent").
//!
//! Rounds: `VOLPOOL_SCRUB_RACE_ROUNDS` (default [`DEFAULT_ROUNDS`] per adversary); a long run
//! is recorded in RELIABILITY.md ("Scrub race").

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::{OFlag, RenameFlags, open, openat, renameat2};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;
use volpool_api::{CleanupOutcome, CleanupResult, NodeVolumesStatus};
use volpool_testkit::{TempDir, check};

const AGENT: &str = env!("CARGO_BIN_EXE_volpool-agent");
/// Set (to the work directory) in the process inside the namespace.
const INSIDE: &str = "VOLPOOL_SCRUB_RACE_DIR";
const ROUNDS: &str = "VOLPOOL_SCRUB_RACE_ROUNDS";
/// Rounds per adversary in `make test`.
const DEFAULT_ROUNDS: u32 = 300;
/// Directories directly in the volume, subdirectories in each, files in each subdirectory.
const TOP: usize = 10;
const SUB: usize = 4;
const FILES: usize = 3;

/// Run `body` in a private mount and pid namespace (so the agent's `/proc/1/mountinfo` is this
/// namespace's, and every mount made there goes with it), with a fresh work directory.
fn in_private_namespace(test: &str, body: fn(&Path)) {
    if let Ok(dir) = std::env::var(INSIDE) {
        return body(Path::new(&dir));
    }
    let tmp = TempDir::new(&format!("volpool-{test}")).expect("temp dir");
    let status = Command::new("unshare")
        .args(["--mount", "--pid", "--fork", "--kill-child", "--mount-proc"])
        .args(["--propagation", "private", "--"])
        .arg(std::env::current_exe().expect("the test binary"))
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(INSIDE, &tmp.0)
        .status()
        .expect("unshare runs (the race tests need root)");
    assert!(
        status.success(),
        "{test} failed in its namespace: see above"
    );
}

fn rounds() -> u32 {
    std::env::var(ROUNDS)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS)
}

fn sh(script: &str) {
    let out = Command::new("sh")
        .args(["-euc", script])
        .output()
        .expect("sh runs");
    check(&out, script).expect("setup succeeds");
}

fn tmpfs(at: &Path) {
    std::fs::create_dir_all(at).expect("mkdir");
    sh(&format!("mount -t tmpfs -o size=64m t '{}'", at.display()));
}

/// `d<i>/f`, `d<i>/s<j>/f<k>`: the same names in the volume and in the sentinel.
fn fill(root: &Path, tag: &str) {
    for i in 0..TOP {
        let d = root.join(format!("d{i}"));
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("f"), format!("{tag} d{i}/f\n")).expect("write");
        for j in 0..SUB {
            let s = d.join(format!("s{j}"));
            std::fs::create_dir_all(&s).expect("mkdir");
            for k in 0..FILES {
                std::fs::write(s.join(format!("f{k}")), format!("{tag} d{i}/s{j}/f{k}\n"))
                    .expect("write");
            }
        }
    }
}

/// What a tree holds: path → (directory, size, contents, mtime in ns), without following links.
type Snapshot = BTreeMap<PathBuf, (bool, u64, Vec<u8>, i128)>;

fn snapshot(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("list the sentinel") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("stat the sentinel");
            let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
            let data = if meta.is_file() {
                std::fs::read(&path).expect("read the sentinel")
            } else {
                Vec::new()
            };
            if meta.is_dir() {
                todo.push(path.clone());
            }
            let rel = path.strip_prefix(root).expect("inside").to_path_buf();
            out.insert(rel, (meta.is_dir(), meta.len(), data, mtime));
        }
    }
    let meta = std::fs::symlink_metadata(root).expect("stat the sentinel root");
    let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    out.insert(PathBuf::from("."), (true, meta.len(), Vec::new(), mtime));
    out
}

/// The entries that differ between two snapshots, for the failure message.
fn diff(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (path, was) in before {
        match after.get(path) {
            None => out.push(format!("{} deleted", path.display())),
            Some(now) if now != was => out.push(format!("{} changed", path.display())),
            Some(_) => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        out.push(format!("{} appeared", path.display()));
    }
    out
}

/// Empty the volume (the adversary is off): links and files removed as such, directories
/// with their contents (`remove_dir_all` never follows a symlink).
fn clear(vol: &Path) {
    for entry in std::fs::read_dir(vol).expect("list the volume") {
        let path = entry.expect("entry").path();
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        if meta.is_dir() {
            std::fs::remove_dir_all(&path).expect("clear a directory");
        } else {
            std::fs::remove_file(&path).expect("clear a file");
        }
    }
}

/// A small xorshift generator: the adversary's choices, without a dependency.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// One change the adversary makes to the volume, given its root directory.
type Move = fn(&OwnedFd, &Path, &Path, &mut Dice);

/// An adversary thread making `step`s while `racing` is set. `gate` is held during each
/// step, so once the test has set `racing` off and taken the gate, no step is under way.
struct Adversary {
    racing: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    gate: Arc<Mutex<u64>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Adversary {
    fn start(vol: &Path, sentinel: &Path, step: Move) -> Adversary {
        let racing = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let gate = Arc::new(Mutex::new(0u64));
        let (r, s, g) = (racing.clone(), stop.clone(), gate.clone());
        let (vol, sentinel) = (vol.to_path_buf(), sentinel.to_path_buf());
        let thread = std::thread::spawn(move || {
            let root = open(&vol, OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW, Mode::empty())
                .expect("open the volume");
            let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
            while !s.load(Ordering::Relaxed) {
                if !r.load(Ordering::Relaxed) {
                    // NB: idle between scrubs without burning a core; the agent takes far
                    // longer than this to start.
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                let mut steps = g.lock().unwrap_or_else(|e| e.into_inner());
                if r.load(Ordering::Relaxed) {
                    step(&root, &vol, &sentinel, &mut dice);
                    *steps += 1;
                }
            }
        });
        Adversary {
            racing,
            stop,
            gate,
            thread: Some(thread),
        }
    }

    fn race(&self, on: bool) {
        self.racing.store(on, Ordering::Relaxed);
        if !on {
            drop(self.gate.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }

    fn steps(&self) -> u64 {
        *self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Adversary {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn name(text: String) -> CString {
    CString::new(text).expect("no NUL")
}

/// Swap a directory with a symlink to the sentinel's directory of the same name, atomically,
/// in the volume's root or one level down (through a descriptor opened without following).
fn swap_with_symlink(root: &OwnedFd, _vol: &Path, _sentinel: &Path, dice: &mut Dice) {
    let i = dice.below(TOP);
    let (d, l) = (name(format!("d{i}")), name(format!("l{i}")));
    if dice.below(2) == 0 {
        let _ = renameat2(
            root,
            d.as_c_str(),
            root,
            l.as_c_str(),
            RenameFlags::RENAME_EXCHANGE,
        );
        return;
    }
    let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW;
    let Ok(dir) = openat(root, d.as_c_str(), flags, Mode::empty()) else {
        return;
    };
    let j = dice.below(SUB);
    let (s, l) = (name(format!("s{j}")), name(format!("l{j}")));
    let _ = renameat2(
        dir.as_fd(),
        s.as_c_str(),
        dir.as_fd(),
        l.as_c_str(),
        RenameFlags::RENAME_EXCHANGE,
    );
}

/// Bind-mount the sentinel's `d<i>` onto the volume's `d<i>` for a moment, then detach it.
fn bind_mount_a_moment(_root: &OwnedFd, vol: &Path, sentinel: &Path, dice: &mut Dice) {
    let i = dice.below(TOP);
    let target = vol.join(format!("d{i}"));
    let source = sentinel.join(format!("d{i}"));
    if mount(
        Some(&source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .is_err()
    {
        return;
    }
    let until = Instant::now() + Duration::from_micros(dice.below(300) as u64);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
    umount2(&target, MntFlags::MNT_DETACH).expect("detach the bind mount");
}

/// The volume's ID, as `volpool-agent scan` reports it.
fn volume_id(pools: &Path) -> String {
    let out = Command::new(AGENT)
        .args(["scan", "--host-root", "/", "-o", "json", "--pools-file"])
        .arg(pools)
        .output()
        .expect("agent runs");
    check(&out, "volpool-agent scan").expect("scan succeeds");
    let status: NodeVolumesStatus = serde_json::from_slice(&out.stdout).expect("a report");
    let entry = status.volumes.iter().find(|v| v.path.ends_with("/vol"));
    let id = entry.map(|v| v.volume_id.clone()).unwrap_or_default();
    assert!(!id.is_empty(), "no volume ID for vol: {status:#?}");
    id
}

fn scrub(pools: &Path, id: &str) -> CleanupResult {
    let out = Command::new(AGENT)
        .args(["scrub", "--host-root", "/", "-o", "json", "--pools-file"])
        .arg(pools)
        .args(["--volume-id", id, "--method", "Wipe"])
        .output()
        .expect("agent runs");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "scrub printed no result ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// How the rounds went.
#[derive(Debug, Default)]
struct Tally {
    succeeded: u32,
    /// Scrubs that met the adversary and said so: `Failed`, naming what they left.
    failed: u32,
    /// Those that named a mount point left alone.
    mounts: u32,
}

/// `rounds()` rounds of build, race, scrub, check; the volume is mounted at `<dir>/disks/vol`
/// and `sentinel` is outside it. Every scrub must end `Succeeded`, or `Failed` naming what it
/// left (entries swapped under it, mount points); the sentinel must never change.
fn race(dir: &Path, sentinel: &Path, step: Move, links: bool) -> Tally {
    let vol = dir.join("disks/vol");
    let pools = dir.join("pools.yaml");
    std::fs::write(
        &pools,
        format!(
            "apiVersion: volpool.io/v1alpha1\nkind: VolumePool\nmetadata: {{name: fs}}\nspec:\n  storageClassName: fs\n  local: {{discoveryDir: {:?}, minCapacity: 1Mi}}\n",
            dir.join("disks").display()
        ),
    )
    .expect("pools file");
    let id = volume_id(&pools);
    let before = snapshot(sentinel);
    let adversary = Adversary::start(&vol, sentinel, step);
    let mut tally = Tally::default();
    let total = rounds();
    for round in 1..=total {
        clear(&vol);
        fill(&vol, "volume");
        if links {
            for i in 0..TOP {
                let d = format!("d{i}");
                symlink(sentinel.join(&d), vol.join(format!("l{i}"))).expect("symlink");
                for j in 0..SUB {
                    let (s, l) = (sentinel.join(&d).join(format!("s{j}")), format!("l{j}"));
                    symlink(s, vol.join(&d).join(l)).expect("symlink");
                }
            }
        }
        adversary.race(true);
        let result = scrub(&pools, &id);
        adversary.race(false);
        let after = snapshot(sentinel);
        assert!(
            after == before,
            "round {round}: the scrub touched files outside the volume: {:?}\nits result: {result:?}",
            diff(&before, &after)
        );
        match result.result {
            CleanupOutcome::Succeeded => tally.succeeded += 1,
            CleanupOutcome::Failed if left_a_mount(&result.message) => {
                tally.failed += 1;
                tally.mounts += 1;
            }
            // NB: `ELOOP`, `ENOTDIR`, `EISDIR`, "replaced during the scrub": an entry changed
            // between the scrub's look and its step, and the scrub did not go on with it.
            CleanupOutcome::Failed if result.message.contains("could not delete") => {
                tally.failed += 1
            }
            _ => panic!("round {round}: unexpected result {result:?}"),
        }
    }
    eprintln!(
        "{total} rounds, {} adversary steps: {tally:?}",
        adversary.steps()
    );
    drop(adversary);
    clear(&vol);
    fill(&vol, "volume");
    let last = scrub(&pools, &id);
    assert_eq!(last.result, CleanupOutcome::Succeeded, "{last:?}");
    assert_eq!(snapshot(sentinel), before);
    tally
}

/// A volume of its own (tmpfs) at `<dir>/disks/vol`, and a sentinel tmpfs at `<dir>/outside`.
fn volume_and_sentinel(dir: &Path) -> PathBuf {
    tmpfs(&dir.join("disks/vol"));
    let outside = dir.join("outside");
    tmpfs(&outside);
    fill(&outside, "sentinel");
    outside
}

fn left_a_mount(message: &str) -> bool {
    message.contains("mount point(s) inside the volume alone") && message.contains("unmount")
}

#[test]
fn directories_swapped_for_symlinks_mid_scrub_never_lead_outside() {
    in_private_namespace(
        "directories_swapped_for_symlinks_mid_scrub_never_lead_outside",
        |dir| {
            let outside = volume_and_sentinel(dir);
            let tally = race(dir, &outside, swap_with_symlink, true);
            assert!(
                tally.failed > 0,
                "no scrub met a swapped entry: the race never happened ({tally:?})"
            );
        },
    );
}

#[test]
fn a_bind_mount_of_another_filesystem_appearing_mid_scrub_is_left_alone() {
    in_private_namespace(
        "a_bind_mount_of_another_filesystem_appearing_mid_scrub_is_left_alone",
        |dir| {
            let outside = volume_and_sentinel(dir);
            let tally = race(dir, &outside, bind_mount_a_moment, false);
            assert!(tally.mounts > 0, "no scrub met a mount ({tally:?})");
        },
    );
}

#[test]
fn a_bind_mount_of_the_volume_s_own_filesystem_appearing_mid_scrub_is_left_alone() {
    in_private_namespace(
        "a_bind_mount_of_the_volume_s_own_filesystem_appearing_mid_scrub_is_left_alone",
        |dir| {
            // The volume is a sub-tree of a tmpfs, bind-mounted into the discovery dir (as a
            // disk shared by several volumes is); the sentinel is another sub-tree of that
            // tmpfs, so a bind mount of it has the volume's st_dev.
            let fs = dir.join("fs");
            tmpfs(&fs);
            let (own, secret) = (fs.join("vol"), fs.join("secret"));
            std::fs::create_dir_all(&own).expect("mkdir");
            std::fs::create_dir_all(dir.join("disks/vol")).expect("mkdir");
            sh(&format!(
                "mount --bind '{}' '{}'",
                own.display(),
                dir.join("disks/vol").display()
            ));
            fill(&secret, "sentinel");
            let tally = race(dir, &secret, bind_mount_a_moment, false);
            assert!(tally.mounts > 0, "no scrub met a mount ({tally:?})");
        },
    );
}
