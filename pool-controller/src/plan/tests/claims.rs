//! Claims: NFS pools carve PVs pre-bound to Pending claims; every Pending claim volpool cannot
//! serve is told why, once per reason and again at most every 5 minutes.

use super::nfs::{nfs_pool, pass, plan_nfs, start};
use super::*;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

const GIB: u64 = 1 << 30;

/// A Pending claim of class `fast-disks` (the test pools' class).
fn claim(name: &str, size: &str, modes: &[&str], extra: &str) -> Arc<PersistentVolumeClaim> {
    claim_of("fast-disks", name, size, modes, extra)
}

fn claim_of(
    class: &str,
    name: &str,
    size: &str,
    modes: &[&str],
    extra: &str,
) -> Arc<PersistentVolumeClaim> {
    let yaml = format!(
        "metadata: {{name: {name}, namespace: apps, uid: uid-{name}}}\nspec:\n  storageClassName: {class}\n  accessModes: [{}]\n  resources: {{requests: {{storage: {size}}}}}\n{extra}status: {{phase: Pending}}\n",
        modes.join(", ")
    );
    let mut pvc: PersistentVolumeClaim = serde_yaml::from_str(&yaml).expect("claim");
    pvc.metadata.creation_timestamp = Some(Time(now()));
    Arc::new(pvc)
}

/// The claims' NoMatchingVolume notes, by claim name.
fn told(plan: &Plan) -> Vec<(String, String)> {
    plan.changes
        .iter()
        .filter_map(|c| match c {
            Change::Event(n) if n.reason == crate::plan::claims::NO_MATCHING_VOLUME => {
                Some((n.regarding.name.clone().unwrap_or_default(), n.note.clone()))
            }
            _ => None,
        })
        .collect()
}

fn pre_bound(world: &World) -> Vec<(String, String)> {
    world
        .pvs
        .iter()
        .filter_map(|pv| {
            let claim = pv.spec.as_ref()?.claim_ref.as_ref()?;
            let size = pv
                .spec
                .as_ref()?
                .capacity
                .as_ref()?
                .get("storage")?
                .0
                .clone();
            Some((claim.name.clone()?, size))
        })
        .collect()
}

#[test]
fn a_claim_no_available_pv_fits_gets_one_pv_pre_bound_to_it_and_min_available_stays() {
    let (mut world, mut export) = start(nfs_pool(", maxVolumes: 10", ""));
    pass(&mut world, &mut export);
    assert_eq!(world.pvs.len(), 3);
    // The Elasticsearch chart's claim: ReadWriteOnce, 5Gi, against 1Mi volumes.
    world.claims = vec![claim("data-es-0", "5Gi", &["ReadWriteOnce"], "")];
    let plan = pass(&mut world, &mut export);
    assert_eq!(
        plan.ops.len(),
        1,
        "one directory for the claim: {:?}",
        plan.ops
    );
    assert_eq!(
        pre_bound(&world),
        [("data-es-0".to_string(), (5 * GIB).to_string())]
    );
    let pv = world
        .pvs
        .iter()
        .find(|p| p.spec.as_ref().is_some_and(|s| s.claim_ref.is_some()));
    let claim_ref = pv
        .and_then(|p| p.spec.as_ref()?.claim_ref.clone())
        .expect("claimRef");
    assert_eq!(
        (claim_ref.namespace.as_deref(), claim_ref.uid.as_deref()),
        (Some("apps"), Some("uid-data-es-0"))
    );
    // The next passes see the pre-bound PV: never a second one for the claim.
    let again = pass(&mut world, &mut export);
    assert!(again.ops.is_empty(), "{:?}", again.ops);
    assert_eq!(world.pvs.len(), 4);
    assert_eq!(export.dirs.len(), 4, "one directory per PV");
    assert!(told(&again).is_empty());
}

#[test]
fn claims_take_available_pvs_first_and_min_available_is_topped_up_for_the_next() {
    let (mut world, mut export) = start(nfs_pool(", maxVolumes: 10", ""));
    pass(&mut world, &mut export);
    world.claims = vec![
        claim("a", "1Mi", &["ReadWriteOnce"], ""),
        claim("b", "1Mi", &["ReadWriteMany"], ""),
    ];
    let plan = pass(&mut world, &mut export);
    assert!(
        pre_bound(&world).is_empty(),
        "two Available PVs fit: none is made for them"
    );
    assert_eq!(
        plan.ops.len(),
        2,
        "minAvailable counts the PVs the claims will take"
    );
    assert_eq!(world.pvs.len(), 5);
}

#[test]
fn max_volumes_bounds_the_pvs_made_for_claims_and_the_rest_are_told() {
    let (mut world, mut export) = start(nfs_pool(", minAvailable: 0, maxVolumes: 2", ""));
    world.claims = (0..4)
        .map(|i| claim(&format!("c{i}"), "1Mi", &["ReadWriteOnce"], ""))
        .collect();
    let plan = pass(&mut world, &mut export);
    assert_eq!(pre_bound(&world).len(), 2);
    let notes = told(&plan);
    assert_eq!(
        notes,
        [
            (
                "c2".to_string(),
                "pool shared is at maxVolumes (2)".to_string()
            ),
            (
                "c3".to_string(),
                "pool shared is at maxVolumes (2)".to_string()
            ),
        ]
    );
    // Told once; not again on the next passes within 5 minutes, again after.
    world.explained = plan
        .explained
        .iter()
        .map(|k| (k.clone(), world.now))
        .collect();
    for _ in 0..3 {
        assert!(told(&pass(&mut world, &mut export)).is_empty());
    }
    world.now += Duration::from_secs(301);
    assert_eq!(told(&plan_nfs(&mut world, &export)).len(), 2);
}

#[test]
fn a_claim_asking_what_the_pool_does_not_offer_is_told_the_fix_and_gets_no_pv() {
    let (mut world, mut export) = start(nfs_pool(
        ", minAvailable: 0",
        "  accessModes: [ReadWriteMany]\n",
    ));
    world.claims = vec![
        claim("rwo", "1Gi", &["ReadWriteOnce"], ""),
        claim("block", "1Gi", &["ReadWriteMany"], "  volumeMode: Block\n"),
        claim(
            "picky",
            "1Gi",
            &["ReadWriteMany"],
            "  selector: {matchLabels: {tier: gold}}\n",
        ),
    ];
    let plan = pass(&mut world, &mut export);
    assert!(
        world.pvs.is_empty(),
        "nothing is pre-bound to a claim it would not fit"
    );
    let notes = told(&plan);
    assert!(notes.contains(&(
        "rwo".to_string(),
        "pool shared offers [ReadWriteMany]; the claim asks ReadWriteOnce: add it to spec.accessModes".to_string()
    )), "{notes:?}");
    assert!(
        notes
            .iter()
            .any(|(c, n)| c == "block" && n.contains("volumeMode Block")),
        "{notes:?}"
    );
    assert!(
        notes
            .iter()
            .any(|(c, n)| c == "picky" && n.contains("selector")),
        "{notes:?}"
    );
}

#[test]
fn an_unreachable_export_is_the_reason_a_claim_hears() {
    let (mut world, mut export) = start(nfs_pool(", minAvailable: 0", ""));
    export.unreachable = true;
    world.claims = vec![claim("data", "1Gi", &["ReadWriteOnce"], "")];
    let notes = told(&pass(&mut world, &mut export));
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0]
            .1
            .contains("the export is unreachable (connection refused)"),
        "{notes:?}"
    );
}

#[test]
fn a_local_claim_larger_than_every_disk_hears_the_largest_and_wait_for_consumer_waits_for_a_pod() {
    let mut w = two_disks();
    converge(&mut w);
    w.claims = vec![claim("big", "50Gi", &["ReadWriteOnce"], "")];
    assert_eq!(
        told(&plan(&w)),
        [(
            "big".to_string(),
            "pool fast has 2 Available PVs; the largest is 20Gi on n1; the claim asks 50Gi"
                .to_string()
        )]
    );
    w.storage_classes = Some(BTreeMap::from([("fast-disks".to_string(), class(true))]));
    assert!(told(&plan(&w)).is_empty(), "no pod waits for it yet");
    w.claims_in_use.insert(("apps".into(), "big".into()));
    assert_eq!(told(&plan(&w)).len(), 1);
}

#[test]
fn a_claim_of_a_no_provisioner_class_no_pool_serves_is_told_to_create_one() {
    let mut w = two_disks();
    converge(&mut w);
    w.storage_classes
        .as_mut()
        .expect("classes")
        .insert("orphan".into(), class(false));
    w.claims = vec![claim_of("orphan", "x", "1Gi", &["ReadWriteOnce"], "")];
    assert_eq!(
        told(&plan(&w)),
        [(
            "x".to_string(),
            "no VolumePool serves class orphan (provisioner kubernetes.io/no-provisioner): create one, or use a class volpool serves".to_string()
        )]
    );
}

#[test]
fn pool_status_counts_pending_and_bound_claims() {
    let mut w = two_disks();
    let mut bound = (*claim("b", "1Gi", &["ReadWriteOnce"], "")).clone();
    bound.status.as_mut().expect("status").phase = Some("Bound".into());
    w.claims = vec![claim("p", "1Gi", &["ReadWriteOnce"], ""), Arc::new(bound)];
    converge(&mut w);
    let counts = &w.pools[0].status.as_ref().expect("status").claims;
    assert_eq!((counts.pending, counts.bound), (1, 1));
}
