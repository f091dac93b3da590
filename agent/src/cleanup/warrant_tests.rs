//! The scrub's warrant on PVs as the controller makes them: only the one Released volpool PV
//! of this very volume on this node lets a scrub start, and each refusal says why.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{
    LocalVolumeSource, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectReference,
    PersistentVolume, PersistentVolumeSpec, PersistentVolumeStatus, VolumeNodeAffinity,
};
use kube::api::ObjectMeta;
use volpool_api::{
    ANNOTATION_VOLUME_ID, CleanupMethod, CleanupRequest, LABEL_HOSTNAME, LABEL_MANAGED_BY,
    LABEL_NODE, MANAGED_BY,
};

use super::check;

const NODE: &str = "n1";
const PATH: &str = "/mnt/disks/vol1";
const ID: &str = "uuid:1";

fn request() -> CleanupRequest {
    CleanupRequest {
        volume_id: ID.into(),
        persistent_volume: "fast-n1-vol1".into(),
        pv_uid: "pv-uid".into(),
        claim_uid: "claim-uid".into(),
        method: CleanupMethod::Wipe,
    }
}

/// The PV of `request()` as the controller made it, after its claim was deleted.
fn released() -> PersistentVolume {
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some("fast-n1-vol1".into()),
            uid: Some("pv-uid".into()),
            labels: Some(BTreeMap::from([
                (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
                (LABEL_NODE.to_string(), NODE.to_string()),
            ])),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_VOLUME_ID.to_string(),
                ID.to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            local: Some(LocalVolumeSource {
                path: PATH.into(),
                fs_type: None,
            }),
            persistent_volume_reclaim_policy: Some("Delete".into()),
            node_affinity: Some(on_node(NODE)),
            claim_ref: Some(ObjectReference {
                namespace: Some("apps".into()),
                name: Some("data-0".into()),
                uid: Some("claim-uid".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: Some(PersistentVolumeStatus {
            phase: Some("Released".into()),
            ..Default::default()
        }),
    }
}

/// `kubernetes.io/hostname In [node]`, as the controller writes a local PV's affinity.
fn on_node(node: &str) -> VolumeNodeAffinity {
    VolumeNodeAffinity {
        required: Some(NodeSelector {
            node_selector_terms: vec![NodeSelectorTerm {
                match_expressions: Some(vec![NodeSelectorRequirement {
                    key: LABEL_HOSTNAME.into(),
                    operator: "In".into(),
                    values: Some(vec![node.into()]),
                }]),
                ..Default::default()
            }],
        }),
    }
}

fn entries() -> Vec<PathBuf> {
    vec![PathBuf::from(PATH)]
}

/// The refusal for `pv`, which must mention `why` and that nothing was touched.
fn refused(pv: Option<&PersistentVolume>, request: &CleanupRequest, why: &str) {
    let err = check(pv, request, NODE, &entries()).expect_err(why);
    assert!(err.contains(why), "{why:?} not in {err:?}");
    assert!(err.starts_with("PersistentVolume fast-n1-vol1 "), "{err}");
    assert!(err.ends_with("nothing was touched"), "{err}");
}

fn with(change: impl FnOnce(&mut PersistentVolume)) -> PersistentVolume {
    let mut pv = released();
    change(&mut pv);
    pv
}

fn spec(pv: &mut PersistentVolume) -> &mut PersistentVolumeSpec {
    pv.spec.as_mut().expect("spec")
}

#[test]
fn the_released_pv_of_this_volume_on_this_node_allows_the_scrub() {
    assert_eq!(
        check(Some(&released()), &request(), NODE, &entries()),
        Ok(())
    );
    // Failed with its claimRef is Released to the controller too (a reclaim that failed).
    let failed = with(|pv| pv.status.as_mut().expect("status").phase = Some("Failed".into()));
    assert_eq!(check(Some(&failed), &request(), NODE, &entries()), Ok(()));
    // A request from a controller that names no claim: the claim is not compared.
    let older = CleanupRequest {
        claim_uid: String::new(),
        ..request()
    };
    assert_eq!(check(Some(&released()), &older, NODE, &entries()), Ok(()));
    // One of several entries that are this volume (two symlinks to one device).
    let two = [PathBuf::from("/mnt/disks/other"), PathBuf::from(PATH)];
    assert_eq!(check(Some(&released()), &request(), NODE, &two), Ok(()));
}

#[test]
fn a_pv_in_use_or_about_to_be_is_never_scrubbed() {
    let bound = with(|pv| pv.status.as_mut().expect("status").phase = Some("Bound".into()));
    refused(Some(&bound), &request(), "is Bound (claim apps/data-0");
    refused(Some(&bound), &request(), "see its managedFields");
    // The binder has set the claimRef but not yet the phase.
    let binding = with(|pv| pv.status.as_mut().expect("status").phase = Some("Available".into()));
    refused(Some(&binding), &request(), "is Bound");
    let unclaimed = with(|pv| spec(pv).claim_ref = None);
    refused(Some(&unclaimed), &request(), "is Available (claim none");
    let no_status = with(|pv| pv.status = None);
    refused(Some(&no_status), &request(), "status \"unset\"");
}

#[test]
fn a_request_without_its_pv_or_for_another_pv_is_refused() {
    refused(None, &request(), "does not exist");
    let recreated = with(|pv| pv.metadata.uid = Some("other-uid".into()));
    refused(
        Some(&recreated),
        &request(),
        "has UID other-uid, not pv-uid",
    );
    let foreign = with(|pv| pv.metadata.labels = None);
    refused(Some(&foreign), &request(), "was not made by volpool");
    let elsewhere = with(|pv| spec(pv).node_affinity = Some(on_node("n2")));
    refused(
        Some(&elsewhere),
        &request(),
        "is on node \"n2\" (its nodeAffinity)",
    );
    let no_affinity = with(|pv| spec(pv).node_affinity = None);
    refused(
        Some(&no_affinity),
        &request(),
        "is not a local PV on one node",
    );
    // The label is not where the PV's pods run: an edited one (the controller writes it back)
    // neither stops a scrub nor allows one.
    let relabelled = with(|pv| {
        let labels = pv.metadata.labels.as_mut().expect("labels");
        labels.insert(LABEL_NODE.into(), "n2".into());
    });
    assert_eq!(
        check(Some(&relabelled), &request(), NODE, &entries()),
        Ok(())
    );
    let other_volume = CleanupRequest {
        volume_id: "uuid:2".into(),
        ..request()
    };
    refused(
        Some(&released()),
        &other_volume,
        "is for volume \"uuid:1\" (annotation volpool.io/volume-id), not uuid:2",
    );
    let no_annotation = with(|pv| pv.metadata.annotations = None);
    refused(Some(&no_annotation), &request(), "is for volume \"\"");
}

#[test]
fn a_pv_whose_path_is_not_the_volume_s_entry_is_refused() {
    let moved = with(|pv| spec(pv).local.as_mut().expect("local").path = "/mnt/disks/x".into());
    refused(
        Some(&moved),
        &request(),
        "has spec.local.path \"/mnt/disks/x\", but volume uuid:1 is at /mnt/disks/vol1",
    );
    let nfs = with(|pv| spec(pv).local = None);
    refused(
        Some(&nfs),
        &request(),
        "is not a local PV on one node (no spec.local",
    );
}

#[test]
fn only_a_pv_that_says_delete_is_scrubbed() {
    let retained = with(|pv| spec(pv).persistent_volume_reclaim_policy = Some("Retain".into()));
    refused(Some(&retained), &request(), "has reclaim policy Retain");
    let unset = with(|pv| spec(pv).persistent_volume_reclaim_policy = None);
    refused(Some(&unset), &request(), "has reclaim policy unset");
}

#[test]
fn a_pv_released_by_another_claim_than_the_request_s_is_refused() {
    let rebound = with(|pv| {
        let claim = spec(pv).claim_ref.as_mut().expect("claim");
        claim.uid = Some("new-claim".into());
    });
    refused(
        Some(&rebound),
        &request(),
        "was released by claim apps/data-0 (UID new-claim), not by claim UID claim-uid",
    );
}
