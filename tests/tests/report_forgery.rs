//! A NodeVolumes report written by hand that claims another node's disk: RBAC lets any agent
//! token write any node's report, so the controller must not trust one report against another.
//! The node that already has the PV keeps it; the forger's report gets no PV for that
//! identity (none moves to its node, none is duplicated), and the pool's `Degraded` condition
//! names both nodes. What the controller can and cannot tell is in docs/architecture.md,
//! "What the controller trusts".

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::Api;
use serde_json::json;
use volpool_api::{LABEL_NODE, local_pv_name};
use volpool_e2e::controller::{
    Controller, LONG, class_and_namespace, create_pool, label, publish_report, pvs_of, volume,
    wait_for_pvs,
};
use volpool_e2e::pool::wait_for_pool_condition;
use volpool_e2e::{create_node, unique};

const GIB: u64 = 1 << 30;

#[tokio::test]
async fn a_report_claiming_another_node_s_disk_gets_no_pv_and_the_pool_names_the_conflict()
-> anyhow::Result<()> {
    let test = unique("forged");
    let client = class_and_namespace(&test, false).await?;
    create_pool(&client, &test, &test, &test, json!({})).await?;
    let _controller = Controller::start(&test, &format!("{test}-a")).await?;
    let (victim, forger) = (format!("{test}-victim"), format!("{test}-forger"));
    create_node(&client, &victim).await?;
    create_node(&client, &forger).await?;

    let disk = format!("uuid:{victim}-disk");
    publish_report(
        &client,
        &victim,
        vec![volume(&test, "vol0", &disk, 10 * GIB)],
        vec![],
    )
    .await?;
    let original = local_pv_name(&test, &victim, "vol0", &disk);
    wait_for_pvs(&client, &test, std::slice::from_ref(&original)).await?;

    // The forger's report, written as its agent would (same field manager, its own Node's
    // UID): its own disk, and the victim's disk under another path.
    let own = format!("uuid:{forger}-own");
    let forged = vec![
        volume(&test, "own", &own, 10 * GIB),
        volume(&test, "stolen", &disk, 10 * GIB),
    ];
    publish_report(&client, &forger, forged, vec![]).await?;

    let what = "True naming the duplicate volume";
    let message = wait_for_pool_condition(&client, &test, "Degraded", what, LONG, |c| {
        c.status == "True" && c.message.contains(&disk)
    })
    .await?
    .message;
    assert!(
        message.contains(&format!(
            "NodeVolumes \"{forger}\" reports volume {disk}, which node {victim} already offers as PV {original}"
        )),
        "{message}"
    );
    // The forger's own disk is a PV as usual; the victim's PV is untouched and is the only
    // one for its disk.
    let own_pv = local_pv_name(&test, &forger, "own", &own);
    let pvs = wait_for_pvs(&client, &test, &[original.clone(), own_pv]).await?;
    let first = pvs
        .iter()
        .find(|p| p.metadata.name.as_ref() == Some(&original))
        .expect("listed");
    assert_eq!(label(first, LABEL_NODE), Some(victim.as_str()));
    let stolen = local_pv_name(&test, &forger, "stolen", &disk);
    assert!(
        Api::<PersistentVolume>::all(client.clone())
            .get_opt(&stolen)
            .await?
            .is_none()
    );
    assert_eq!(pvs_of(&client, &test).await?.len(), 2);
    Ok(())
}
