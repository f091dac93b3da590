//! NFS pools on plain data: upkeep, adoption, release, and the export conditions. A tiny
//! in-memory export plays the executor: it applies each operation, then its follow-up writes.

use super::*;
use crate::plan::nfs::{ExportOp, ExportView, Op, SeenDir};
use volpool_api::{ExportSpace, NfsClientStatus, NodeVolumesSpec, NodeVolumesStatus};

const MIB: u64 = 1 << 20;

pub(super) fn nfs_pool(nfs_extra: &str, extra: &str) -> Arc<VolumePool> {
    let min = if nfs_extra.contains("minAvailable") {
        ""
    } else {
        ", minAvailable: 3"
    };
    let yaml = format!(
        "metadata: {{name: shared, generation: 1}}\nspec:\n  storageClassName: fast-disks\n  mountOptions: [nfsvers=3]\n  nfs: {{server: 10.0.0.1, path: /export, volumeSize: 1Mi{min}{nfs_extra}}}\n{extra}"
    );
    Arc::new(serde_yaml::from_str(&yaml).expect("pool"))
}

/// The export, as the executor would read it.
#[derive(Default)]
pub(super) struct FakeExport {
    pub(super) dirs: BTreeMap<String, (u32, bool)>,
    pub(super) unreachable: bool,
    available: u64,
}

impl FakeExport {
    fn view(&self) -> BTreeMap<String, ExportView> {
        let view = if self.unreachable {
            ExportView {
                unreachable: Some("connection refused".into()),
                ..Default::default()
            }
        } else {
            ExportView {
                dirs: self
                    .dirs
                    .iter()
                    .map(|(d, (uid, empty))| {
                        (
                            d.clone(),
                            SeenDir {
                                uid: *uid,
                                empty: Some(*empty),
                            },
                        )
                    })
                    .collect(),
                space: Some(ExportSpace {
                    size_bytes: 100 * MIB,
                    available_bytes: self.available,
                }),
                expected_uid: Some(0),
                ..Default::default()
            }
        };
        BTreeMap::from([("shared".to_string(), view)])
    }
}

pub(super) fn start(pool: Arc<VolumePool>) -> (World, FakeExport) {
    let mut world = world(vec![pool], vec![], &[]);
    world.pvs.clear();
    let export = FakeExport {
        available: 50 * MIB,
        ..Default::default()
    };
    (world, export)
}

/// Run the ops on the export and apply their follow-ups plus the plain changes to the world.
fn settle_nfs(world: &mut World, export: &mut FakeExport, plan: &Plan) {
    let mut changes = plan.changes.clone();
    for ExportOp { op, then, .. } in &plan.ops {
        match op {
            Op::MakeDir { dir, .. } => {
                export.dirs.entry(dir.clone()).or_insert((0, true));
            }
            Op::Remove { dir } => {
                export.dirs.remove(dir);
            }
            Op::Rename { from, to } => {
                let moved = export.dirs.remove(from).expect("renamed dir exists");
                // NB: archived names are not pv-*, so the executor would not list them.
                assert!(to.starts_with("archived-"), "{to}");
                let _ = moved;
            }
        }
        changes.extend(then.iter().cloned());
    }
    apply_changes(world, &changes);
}

/// Plan with what the export holds now.
pub(super) fn plan_nfs(world: &mut World, export: &FakeExport) -> Plan {
    world.exports = export.view();
    plan(world)
}

pub(super) fn pass(world: &mut World, export: &mut FakeExport) -> Plan {
    let plan = plan_nfs(world, export);
    settle_nfs(world, export, &plan);
    plan
}

fn pv_names(world: &World) -> Vec<String> {
    world
        .pvs
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

/// The message of the pool's condition `type_`, which must be True.
fn true_condition<'a>(world: &'a World, type_: &str) -> &'a str {
    let Condition {
        status, message, ..
    } = condition(&world.pools[0], type_);
    assert_eq!(status, "True", "{type_}: {message}");
    message
}

fn available(world: &World) -> Vec<String> {
    world
        .pvs
        .iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound"))
        .filter(|p| p.spec.as_ref().is_some_and(|s| s.claim_ref.is_none()))
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

#[test]
fn a_new_pool_gets_min_available_directories_each_before_its_pv_then_idles() {
    let (mut world, mut export) = start(nfs_pool("", ""));
    let plan = pass(&mut world, &mut export);
    assert_eq!(plan.ops.len(), 3);
    for op in &plan.ops {
        let Op::MakeDir { dir, mode } = &op.op else {
            panic!("{op:?}");
        };
        assert!(crate::plan::nfs::is_pool_dir(dir), "{dir}");
        assert_eq!(*mode, 0o777);
        let [Change::ApplyNfsPv { pv, .. }] = op.then.as_slice() else {
            panic!("the PV waits for its directory: {op:?}");
        };
        assert_eq!(pv.name, format!("shared-{dir}"));
    }
    assert!(
        !has_any(&plan, &["apply-nfs"]),
        "no PV is created outside its directory's operation"
    );
    assert_eq!(export.dirs.len(), 3);
    assert_eq!(world.pvs.len(), 3);
    let pv = &world.pvs[0];
    let spec = pv.spec.as_ref().expect("spec");
    let nfs = spec.nfs.as_ref().expect("nfs source");
    assert_eq!(nfs.server, "10.0.0.1");
    assert!(nfs.path.starts_with("/export/pv-"), "{}", nfs.path);
    assert_eq!(
        spec.access_modes.as_deref(),
        Some(&["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"].map(String::from)[..]),
        "an NFS pool offers every mode NFS can do"
    );
    assert_eq!(
        spec.mount_options.as_deref(),
        Some(&["nfsvers=3".to_string()][..])
    );
    assert_eq!(
        spec.capacity.as_ref().expect("capacity")["storage"].0,
        MIB.to_string()
    );
    let req = node_requirement(spec);
    assert_eq!(
        (req.key.as_str(), req.values.as_deref()),
        ("volpool.io/nfs-client", Some(&["ready".to_string()][..]))
    );

    let status = world.pools[0].status.clone().expect("status");
    assert_eq!(
        status.volumes.available, 0,
        "the status of the first pass counted no PV yet"
    );
    let plan = pass(&mut world, &mut export);
    assert!(plan.ops.is_empty(), "{:?}", plan.ops);
    let status = world.pools[0].status.clone().expect("status");
    assert_eq!(status.volumes.available, 3);
    assert_eq!(
        status.export.as_ref().map(|e| e.size_bytes),
        Some(100 * MIB)
    );
    let idle = plan_nfs(&mut world, &export);
    assert_eq!(idle, Plan::default(), "the idle pass writes nothing");
}

#[test]
fn a_bound_pv_is_replaced_up_to_max_volumes() {
    let (mut world, mut export) = start(nfs_pool(", maxVolumes: 4", ""));
    pass(&mut world, &mut export);
    let first = world.pvs[0].metadata.name.clone().expect("name");
    set_phase(&mut world, &first, "Bound", true);
    let plan = pass(&mut world, &mut export);
    assert_eq!(plan.ops.len(), 1);
    assert_eq!((world.pvs.len(), export.dirs.len()), (4, 4));
    assert_eq!(available(&world).len(), 3);

    let second = available(&world)[0].clone();
    set_phase(&mut world, &second, "Bound", true);
    let plan = pass(&mut world, &mut export);
    assert!(
        plan.ops.is_empty(),
        "maxVolumes 4 is reached: {:?}",
        plan.ops
    );
    pass(&mut world, &mut export);
    let message = true_condition(&world, "Degraded");
    assert!(message.contains("maxVolumes is 4"), "{message}");
}

#[test]
fn an_empty_directory_without_a_pv_is_adopted_and_one_with_data_is_left() {
    let (mut world, mut export) = start(nfs_pool(", minAvailable: 2", ""));
    export.dirs.insert("pv-0000abcd".into(), (0, true));
    export.dirs.insert("pv-0000beef".into(), (0, false));
    let plan = pass(&mut world, &mut export);
    let made: Vec<&str> = plan
        .ops
        .iter()
        .map(|o| match &o.op {
            Op::MakeDir { dir, .. } => dir.as_str(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(made.len(), 2);
    assert_eq!(made[0], "pv-0000abcd", "the crash leftover is taken first");
    assert_ne!(
        made[1], "pv-0000beef",
        "a directory holding data is never offered again"
    );
    assert_eq!(export.dirs.len(), 3, "one new directory, no duplicate");
    pass(&mut world, &mut export);
    let message = true_condition(&world, "Degraded");
    assert!(message.contains("pv-0000beef"), "{message}");
}

fn release_one(on_release: &str, grace: &str) -> (World, FakeExport, String, String) {
    let (mut world, mut export) = start(nfs_pool(
        &format!(", minAvailable: 1, onRelease: {on_release}"),
        &format!("  releaseGracePeriod: {grace}\n"),
    ));
    pass(&mut world, &mut export);
    let name = world.pvs[0].metadata.name.clone().expect("name");
    let dir = name.trim_start_matches("shared-").to_string();
    set_phase(&mut world, &name, "Bound", true);
    pass(&mut world, &mut export);
    set_phase(&mut world, &name, "Released", true);
    (world, export, name, dir)
}

#[test]
fn delete_removes_the_directory_before_the_pv_and_tops_up() {
    let (mut world, mut export, name, dir) = release_one("Delete", "0s");
    let plan = pass(&mut world, &mut export);
    let op = plan
        .ops
        .iter()
        .find(|o| o.op == Op::Remove { dir: dir.clone() })
        .expect("remove op");
    assert!(
        op.then
            .iter()
            .any(|c| matches!(c, Change::DeletePv { name: n, .. } if *n == name)),
        "the PV is deleted only after its directory"
    );
    assert!(!has_any(&plan, &["delete"]));
    assert!(!export.dirs.contains_key(&dir));
    assert!(pv_named(&world, &name).is_none());
    pass(&mut world, &mut export);
    assert_eq!(available(&world).len(), 1, "topped up again");
}

#[test]
fn archive_renames_with_a_utc_timestamp() {
    let (mut world, mut export, _, dir) = release_one("Archive", "0s");
    let plan = pass(&mut world, &mut export);
    let to = plan
        .ops
        .iter()
        .find_map(|o| match &o.op {
            Op::Rename { from, to } if *from == dir => Some(to.clone()),
            _ => None,
        })
        .expect("rename op");
    assert_eq!(to, format!("archived-{dir}-20260101T120000Z"));
}

#[test]
fn retain_leaves_the_directory_and_counts_it() {
    let (mut world, mut export, name, dir) = release_one("Retain", "0s");
    let plan = pass(&mut world, &mut export);
    assert!(
        plan.ops
            .iter()
            .all(|o| !matches!(o.op, Op::Remove { .. } | Op::Rename { .. }))
    );
    assert!(export.dirs.contains_key(&dir));
    assert!(pv_named(&world, &name).is_some());
    pass(&mut world, &mut export);
    assert_eq!(
        world.pools[0].status.as_ref().map(|s| s.volumes.released),
        Some(1)
    );
}

#[test]
fn the_grace_period_is_waited_for() {
    let (mut world, mut export, _, dir) = release_one("Delete", "10m");
    let plan = pass(&mut world, &mut export);
    assert!(
        plan.ops
            .iter()
            .all(|o| o.op != Op::Remove { dir: dir.clone() })
    );
    assert_eq!(plan.wake_after, Some(Duration::from_secs(600)));
    assert!(export.dirs.contains_key(&dir));
    world.now = "2026-01-01T12:10:01Z".parse().expect("time");
    let plan = pass(&mut world, &mut export);
    assert!(
        plan.ops
            .iter()
            .any(|o| o.op == Op::Remove { dir: dir.clone() })
    );
}

#[test]
fn an_unreachable_export_creates_and_deletes_nothing() {
    let (mut world, mut export) = start(nfs_pool("", ""));
    pass(&mut world, &mut export);
    pass(&mut world, &mut export);
    let name = world.pvs[0].metadata.name.clone().expect("name");
    set_phase(&mut world, &name, "Bound", true);
    export.unreachable = true;
    let plan = pass(&mut world, &mut export);
    assert!(plan.ops.is_empty(), "{:?}", plan.ops);
    assert!(!has_any(&plan, &["delete", "apply-nfs"]));
    let message = true_condition(&world, "ExportUnreachable");
    assert!(message.contains("connection refused"), "{message}");
    assert_eq!(world.pvs.len(), 3);

    export.unreachable = false;
    pass(&mut world, &mut export);
    assert_eq!(
        condition(&world.pools[0], "ExportUnreachable").status,
        "False"
    );
    assert_eq!(world.pvs.len(), 4, "upkeep resumes");
}

#[test]
fn root_squash_full_export_and_ready_nodes_show_as_conditions() {
    let (mut world, mut export) = start(nfs_pool("", ""));
    export.available = MIB / 2;
    export.dirs.insert("pv-00000001".into(), (65534, true));
    pass(&mut world, &mut export);
    pass(&mut world, &mut export);
    let message = true_condition(&world, "RootSquashed");
    assert!(
        message.contains("no_root_squash") && message.contains("No_Root_Squash"),
        "{message}"
    );
    assert_eq!(condition(&world.pools[0], "ExportFull").status, "True");
    assert_eq!(condition(&world.pools[0], "NoReadyNodes").status, "True");

    world.nodes = vec![node("n1"), node("n2")];
    let mut ready = NodeVolumes::new("n1", NodeVolumesSpec::default());
    ready.status = Some(NodeVolumesStatus {
        node_uid: "uid-n1".into(),
        nfs_client: Some(NfsClientStatus {
            ready: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    let mut missing = ready.clone();
    missing.metadata.name = Some("n2".into());
    if let Some(s) = missing.status.as_mut() {
        s.nfs_client = Some(NfsClientStatus::default());
    }
    world.reports = vec![Arc::new(ready), Arc::new(missing)];
    pass(&mut world, &mut export);
    assert_eq!(condition(&world.pools[0], "NoReadyNodes").status, "False");
    assert_eq!(world.pools[0].status.as_ref().map(|s| s.nodes), Some(1));
}

#[test]
fn an_available_pv_whose_directory_vanished_is_deleted_a_bound_one_labelled() {
    let (mut world, mut export) = start(nfs_pool(", minAvailable: 2", ""));
    pass(&mut world, &mut export);
    let names = pv_names(&world);
    set_phase(&mut world, &names[1], "Bound", true);
    export.dirs.clear();
    let plan = pass(&mut world, &mut export);
    assert!(
        plan.changes
            .iter()
            .any(|c| matches!(c, Change::DeletePv { name, .. } if *name == names[0]))
    );
    let bound = pv_named(&world, &names[1]).expect("kept");
    assert_eq!(label(bound, "volpool.io/health"), Some("missing"));
}

#[test]
fn new_default_access_modes_reach_available_pvs_and_leave_bound_ones() {
    let (mut world, mut export) = start(nfs_pool(", minAvailable: 2", ""));
    pass(&mut world, &mut export);
    // PVs made when the default was ReadWriteMany only.
    for pv in &mut world.pvs {
        let spec = Arc::make_mut(pv).spec.as_mut().expect("spec");
        spec.access_modes = Some(vec!["ReadWriteMany".into()]);
    }
    let names = pv_names(&world);
    set_phase(&mut world, &names[0], "Bound", true);
    pass(&mut world, &mut export);
    let modes = |world: &World, name: &str| {
        pv_named(world, name)
            .and_then(|p| p.spec.as_ref()?.access_modes.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        modes(&world, &names[0]),
        ["ReadWriteMany"],
        "the Bound PV is left alone"
    );
    assert_eq!(
        modes(&world, &names[1]),
        ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany"],
        "the Available PV offers the new default"
    );
}
