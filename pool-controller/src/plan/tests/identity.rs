//! What a PV is: its node affinity and path (immutable in the API) and its volume identity,
//! never a label someone can edit.

use super::*;

/// Set (or, with `None`, remove) a label of the PV `name`.
fn edit_label(world: &mut World, name: &str, key: &str, value: Option<&str>) {
    let pv = world
        .pvs
        .iter_mut()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .expect("pv");
    let labels = Arc::make_mut(pv).metadata.labels.get_or_insert_default();
    match value {
        Some(v) => labels.insert(key.into(), v.into()),
        None => labels.remove(key),
    };
}

fn pv_uid(world: &World, name: &str) -> Option<String> {
    pv_named(world, name)?.metadata.uid.clone()
}

/// The world of `two_disks` plus a node n2 with a disk of its own, converged.
fn two_nodes() -> World {
    let mut w = two_disks();
    w.nodes.push(node("n2"));
    w.reports
        .push(report("n2", vec![vol("/mnt/disks/vol9", "uuid:9", GIB)]));
    converge(&mut w);
    w
}

#[test]
fn an_edited_node_label_is_restored_and_no_pv_is_deleted_or_made_again() {
    for bound in [false, true] {
        for edited in [Some("n2"), Some("no-such-node"), None] {
            let mut w = two_nodes();
            if bound {
                set_phase(&mut w, &pv1(), "Bound", true);
            }
            let uid = pv_uid(&w, &pv1());
            edit_label(&mut w, &pv1(), "volpool.io/node", edited);
            let plan1 = plan(&w);
            let case = format!("bound {bound}, label {edited:?}: {:#?}", plan1.changes);
            assert!(!has_any(&plan1, &["create", "delete"]), "{case}");
            assert!(
                !events(&plan1)
                    .iter()
                    .any(|(r, _)| r.contains("Gone") || r.contains("Missing")),
                "{case}"
            );
            settle(&mut w, &plan1);
            converge(&mut w);
            let pv = pv_named(&w, &pv1()).expect("the PV");
            assert_eq!(label(pv, "volpool.io/node"), Some("n1"), "{case}");
            assert_eq!(label(pv, "volpool.io/health"), None, "{case}");
            assert_eq!(pv_uid(&w, &pv1()), uid, "{case}");
            assert_eq!(w.pvs.len(), 3, "{case}");
        }
    }
}

#[test]
fn a_pv_whose_identity_cannot_be_read_is_left_alone_named_and_not_made_again() {
    for lost in ["annotation", "affinity"] {
        let mut w = two_nodes();
        let i = w
            .pvs
            .iter()
            .position(|p| p.metadata.name.as_deref() == Some(pv1().as_str()))
            .expect("pv1");
        let pv = Arc::make_mut(&mut w.pvs[i]);
        match lost {
            "annotation" => {
                let annotations = pv.metadata.annotations.as_mut().expect("annotations");
                annotations.remove("volpool.io/volume-id");
            }
            _ => pv.spec.as_mut().expect("spec").node_affinity = None,
        }
        let plan1 = plan(&w);
        let case = format!("{lost}: {:#?}", plan1.changes);
        assert_eq!(kinds(&plan1), ["status"], "{case}");
        settle(&mut w, &plan1);
        let says = format!("PV {} (local path /mnt/disks/vol1)", pv1());
        assert_condition(&w.pools[0], "Degraded", ("True", "UnreadablePV"), &says);
        assert_eq!(plan(&w), Plan::default(), "{case}");
    }
}

#[test]
fn a_disk_seen_at_another_path_gets_no_second_pv_while_its_pv_is_in_use() {
    let (mut w, vol2) = vol2_bound();
    // vol2's disk is mounted at vol3 now.
    w.reports = vec![report(
        "n1",
        vec![
            vol("/mnt/disks/vol1", "uuid:1", 10 * GIB),
            vol("/mnt/disks/vol3", "uuid:2", 20 * GIB),
        ],
    )];
    converge(&mut w);
    assert_eq!(w.pvs.len(), 2, "no second PV for uuid:2");
    assert_eq!(
        label(pv_named(&w, &vol2).expect("kept"), "volpool.io/health"),
        Some("missing")
    );
    let says = format!("volume uuid:2 at n1:/mnt/disks/vol3 already has PV {vol2}");
    assert_condition(&w.pools[0], "Degraded", ("True", "DuplicateVolume"), &says);
    // Once its PV is deleted, the disk is offered at its new path.
    w.pvs
        .retain(|p| p.metadata.name.as_deref() != Some(vol2.as_str()));
    converge(&mut w);
    assert!(pv_named(&w, &local_pv_name_of("n1", "vol3", "uuid:2")).is_some());
}
