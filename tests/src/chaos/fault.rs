//! The faults and their schedule. A step is one fault or, one time in four, two at once; the
//! schedule is drawn from the seed alone, printed before the run, and replayed by the same
//! seed.

use std::fmt;
use std::time::Duration;

use super::rng::Rng;

/// One fault, with its target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL the agent of node `n`, then start it again.
    KillAgent(usize),
    /// SIGKILL the controller replica holding the Lease, then start it again.
    KillLeader,
    /// SIGKILL kube-apiserver, then start it again.
    KillApiserver,
    /// SIGKILL etcd, then start it again.
    KillEtcd,
    /// Unmount disk `d` of node `n`, then mount it again.
    UnmountDisk(usize, usize),
    /// A new filesystem on disk `d` of node `n` (the old one's data is gone by design).
    ReplaceDisk(usize, usize),
    /// Grow disk `d` of node `n` offline.
    GrowDisk(usize, usize),
    /// Delete Node `n`, then create it again with the same name.
    DeleteNode(usize),
    /// Stop the NFS server, then restart it.
    StopNfs,
    /// Freeze the NFS server (SIGSTOP), then thaw it.
    FreezeNfs,
    /// Plain directories, files and symlinks in the discovery directory, then removed.
    Junk,
    /// Edit both VolumePools (labels, minAvailable).
    EditPool,
    /// A FUSE mount that never answers in node `n`'s discovery directory, then unmounted.
    HangFuse(usize),
}

impl Fault {
    /// The kind, for the per-kind table.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::KillAgent(_) => "agent SIGKILL + restart",
            Fault::KillLeader => "leading controller SIGKILL + restart",
            Fault::KillApiserver => "kube-apiserver SIGKILL + restart",
            Fault::KillEtcd => "etcd SIGKILL + restart",
            Fault::UnmountDisk(..) => "disk unmounted + mounted again",
            Fault::ReplaceDisk(..) => "disk replaced (new filesystem)",
            Fault::GrowDisk(..) => "disk grown offline",
            Fault::DeleteNode(_) => "Node deleted + re-created",
            Fault::StopNfs => "NFS server stopped + restarted",
            Fault::FreezeNfs => "NFS server frozen (SIGSTOP) + thawed",
            Fault::Junk => "junk in the discovery directory",
            Fault::EditPool => "VolumePools edited",
            Fault::HangFuse(_) => "hung FUSE mount",
        }
    }

    /// Whether two faults may not run together (same node, disk or component).
    fn clashes(&self, other: &Fault) -> bool {
        let node = |f: &Fault| match f {
            Fault::KillAgent(n)
            | Fault::UnmountDisk(n, _)
            | Fault::ReplaceDisk(n, _)
            | Fault::GrowDisk(n, _)
            | Fault::DeleteNode(n)
            | Fault::HangFuse(n) => Some(*n),
            _ => None,
        };
        self.kind() == other.kind() || node(self).is_some() && node(self) == node(other)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::KillAgent(n) => write!(f, "kill agent n{n}"),
            Fault::KillLeader => write!(f, "kill leader"),
            Fault::KillApiserver => write!(f, "kill kube-apiserver"),
            Fault::KillEtcd => write!(f, "kill etcd"),
            Fault::UnmountDisk(n, d) => write!(f, "unmount n{n}/d{d}"),
            Fault::ReplaceDisk(n, d) => write!(f, "replace n{n}/d{d}"),
            Fault::GrowDisk(n, d) => write!(f, "grow n{n}/d{d}"),
            Fault::DeleteNode(n) => write!(f, "delete Node n{n}"),
            Fault::StopNfs => write!(f, "stop NFS server"),
            Fault::FreezeNfs => write!(f, "freeze NFS server"),
            Fault::Junk => write!(f, "junk in discovery dir"),
            Fault::EditPool => write!(f, "edit pools"),
            Fault::HangFuse(n) => write!(f, "hung FUSE mount on n{n}"),
        }
    }
}

/// Faults injected together, held for a while (the load goes on), then undone.
#[derive(Clone, Debug)]
pub struct Step {
    /// The faults.
    pub faults: Vec<Fault>,
    /// How long they last before recovery.
    pub hold: Duration,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.faults.iter().map(Fault::to_string).collect();
        write!(f, "{} (held {}s)", names.join(" + "), self.hold.as_secs())
    }
}

/// What the schedule may draw from.
#[derive(Clone, Copy, Debug)]
pub struct Scope {
    /// Fake nodes.
    pub nodes: usize,
    /// Disks per node.
    pub disks: usize,
    /// Whether etcd and the apiserver may be killed (a cluster `tests/cluster/up` made).
    pub control_plane: bool,
}

fn draw(rng: &mut Rng, scope: &Scope) -> Fault {
    let (n, d) = (rng.below(scope.nodes), rng.below(scope.disks));
    // Weights: process kills and disk faults most, the rest less.
    loop {
        let fault = match rng.below(30) {
            0..=3 => Fault::KillAgent(n),
            4..=6 => Fault::KillLeader,
            7..=8 => Fault::KillApiserver,
            9 => Fault::KillEtcd,
            10..=12 => Fault::UnmountDisk(n, d),
            13..=14 => Fault::ReplaceDisk(n, d),
            15..=16 => Fault::GrowDisk(n, d),
            17..=19 => Fault::DeleteNode(n),
            20..=21 => Fault::StopNfs,
            22 => Fault::FreezeNfs,
            23..=24 => Fault::Junk,
            25..=26 => Fault::EditPool,
            _ => Fault::HangFuse(n),
        };
        let control = matches!(fault, Fault::KillApiserver | Fault::KillEtcd);
        if !control || scope.control_plane {
            return fault;
        }
    }
}

/// The schedule of `seed`: an endless sequence of steps, drawn one at a time. The soak takes
/// steps while its minutes last, so the seed fixes which faults come and in what order, and
/// the time fixes how many.
pub struct Schedule {
    rng: Rng,
    scope: Scope,
}

impl Schedule {
    /// The schedule of `seed` over `scope`.
    pub fn new(seed: u64, scope: Scope) -> Schedule {
        Schedule {
            rng: Rng::new(seed, 1),
            scope,
        }
    }
}

impl Iterator for Schedule {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        let rng = &mut self.rng;
        let mut faults = vec![draw(rng, &self.scope)];
        if rng.chance(1, 4) {
            let second = draw(rng, &self.scope);
            if !faults[0].clashes(&second) {
                faults.push(second);
            }
        }
        let hold = Duration::from_secs(3 + rng.below(8) as u64);
        Some(Step { faults, hold })
    }
}

/// The first `steps` steps of the schedule of `seed`.
pub fn schedule(seed: u64, steps: usize, scope: Scope) -> Vec<Step> {
    Schedule::new(seed, scope).take(steps).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCOPE: Scope = Scope {
        nodes: 3,
        disks: 3,
        control_plane: true,
    };

    #[test]
    fn a_seed_gives_one_schedule_and_every_kind_comes_up() {
        let one = schedule(42, 300, SCOPE);
        let two = schedule(42, 300, SCOPE);
        let names = |steps: &[Step]| steps.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(names(&one), names(&two));
        // A shorter soak draws the same faults, only fewer of them.
        assert_eq!(names(&schedule(42, 7, SCOPE)), names(&one[..7]));
        let kinds: std::collections::BTreeSet<&str> = one
            .iter()
            .flat_map(|s| s.faults.iter().map(Fault::kind))
            .collect();
        assert_eq!(kinds.len(), 13, "{kinds:?}");
        assert!(one.iter().any(|s| s.faults.len() == 2));
        for step in &one {
            if let [a, b] = step.faults.as_slice() {
                assert!(!a.clashes(b), "{step}");
            }
        }
    }

    #[test]
    fn without_the_control_plane_neither_etcd_nor_the_apiserver_is_killed() {
        let scope = Scope {
            control_plane: false,
            ..SCOPE
        };
        let faults: Vec<Fault> = schedule(7, 300, scope)
            .into_iter()
            .flat_map(|s| s.faults)
            .collect();
        assert!(
            faults
                .iter()
                .all(|f| !matches!(f, Fault::KillApiserver | Fault::KillEtcd))
        );
    }
}
