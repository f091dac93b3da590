//! The CRDs on the real v1.20.2 apiserver, with the kinds of writes people and tools make:
//! server-side applies that add and then drop optional fields. Whatever the apiserver stores
//! must still read as a `VolumePool`.

use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;
use volpool_api::VolumePool;
use volpool_e2e::{apply_crds, client, unique};

#[tokio::test]
async fn an_apply_that_drops_optional_maps_is_accepted() -> anyhow::Result<()> {
    let client = client().await?;
    apply_crds(&client).await?;
    let pools: Api<VolumePool> = Api::all(client);
    let name = unique("drop-maps");
    let params = PatchParams::apply("volpool-e2e-person");
    let pool = |spec: serde_json::Value| {
        json!({
            "apiVersion": "volpool.io/v1alpha1", "kind": "VolumePool",
            "metadata": {"name": name}, "spec": spec,
        })
    };
    let base = json!({"storageClassName": "c", "local": {"discoveryDir": "/mnt/x"}});
    let mut full = base.clone();
    full["labels"] = json!({"team": "a"});
    full["nodeSelector"] = json!({"matchLabels": {"disk": "fast"}});
    pools
        .patch(&name, &params, &Patch::Apply(pool(full)))
        .await?;

    // NB: a 1.20 apiserver turns a map the applier no longer sets into null; the schema must
    // take that null, and the typed pool must read it as empty.
    let dropped = pools.patch(&name, &params, &Patch::Apply(pool(base))).await;
    let got = pools.get(&name).await;
    pools.delete(&name, &DeleteParams::default()).await?;
    let dropped = dropped.map_err(|e| anyhow::anyhow!("apply without the maps refused: {e}"))?;
    assert!(dropped.spec.labels.is_empty(), "{:?}", dropped.spec);
    let got = got?;
    assert!(got.spec.labels.is_empty(), "{:?}", got.spec);
    assert!(got.validate().is_ok(), "{:?}", got.validate());
    let match_labels = got.spec.node_selector.and_then(|s| s.match_labels);
    assert!(match_labels.unwrap_or_default().is_empty());
    Ok(())
}
