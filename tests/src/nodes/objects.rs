//! What a user applies on the real-node cluster, and the waits that go with it: namespaces,
//! StorageClasses with their VolumePools, claims, busybox pods, and the PVs and Events that
//! follow.
//!
//! ```text
//!  local_pool / nfs_pool ──► StorageClass + VolumePool ──► controller ──► pv_of(…) PVs
//!  claim + writer_pod    ──► scheduler ──► kubelet ──► running(…) the pod's node
//!                                                  └─► event_message(…) why not
//! ```

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, PersistentVolume, Pod};
use kube::Api;
use kube::api::ListParams;

use super::{BUSYBOX, NAMESPACE, NfsServer, agent_on, apply, client, kubectl, kubectl_stdout};
use crate::wait_for;

/// How long a pod may take to run or go, and a PV or an Event to appear.
pub const TIMEOUT: Duration = Duration::from_secs(90);

/// A namespace.
pub fn namespace(name: &str) -> anyhow::Result<()> {
    apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n"
    ))
}

/// A StorageClass `pool` without a provisioner, binding volumes `binding` (its
/// volumeBindingMode), and the VolumePool of that name serving it; `spec` is the rest of the
/// pool's spec, each line indented by two spaces. Both reclaim policies are Delete, the
/// default.
fn class_and_pool(pool: &str, binding: &str, spec: &str) -> anyhow::Result<()> {
    apply(&format!(
        "apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {{name: {pool}}}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: {binding}
---
apiVersion: volpool.io/v1alpha1
kind: VolumePool
metadata: {{name: {pool}}}
spec:
  storageClassName: {pool}
{spec}"
    ))
}

/// A StorageClass and a local VolumePool of that name over `/mnt/<pool>` on every node, taking
/// disks of at least `min_capacity` (e.g. "1Gi"); returns that directory.
pub fn local_pool(pool: &str, min_capacity: &str) -> anyhow::Result<String> {
    class_and_pool(
        pool,
        "WaitForFirstConsumer",
        &format!("  local: {{discoveryDir: /mnt/{pool}, minCapacity: {min_capacity}}}\n"),
    )?;
    Ok(format!("/mnt/{pool}"))
}

/// A StorageClass and an NFS VolumePool of that name carving `export` of `server` into 1 GiB
/// ReadWriteMany volumes (one kept Available, two at most), with `nfsClientAffinity: affinity`.
pub fn nfs_pool(
    pool: &str,
    server: &NfsServer,
    export: &str,
    affinity: bool,
) -> anyhow::Result<()> {
    let address = &server.address;
    class_and_pool(
        pool,
        "Immediate",
        &format!(
            "  accessModes: [ReadWriteMany]
  mountOptions: [nfsvers=3, hard]
  nfs: {{server: {address}, path: {export}, volumeSize: 1Gi, minAvailable: 1, maxVolumes: 2,
        nfsClientAffinity: {affinity}}}
"
        ),
    )
}

/// A 1 GiB claim of `class` with access mode `mode`.
pub fn claim(ns: &str, name: &str, class: &str, mode: &str) -> anyhow::Result<()> {
    apply(&format!(
        "apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}, namespace: {ns}}}
spec:
  storageClassName: {class}
  accessModes: [{mode}]
  resources: {{requests: {{storage: 1Gi}}}}
"
    ))
}

/// A busybox pod with the claim at /data that runs `script`, then sleeps.
pub fn writer_pod(ns: &str, name: &str, claim: &str, script: &str) -> anyhow::Result<()> {
    apply(&format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: [sh, -c, '{script}; exec sleep 3600']
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes: [{{name: data, persistentVolumeClaim: {{claimName: {claim}}}}}]
"
    ))
}

/// Wait until the pod runs; returns its node.
pub async fn running(ns: &str, name: &str) -> anyhow::Result<String> {
    let pods: Api<Pod> = Api::namespaced(client().await?, ns);
    wait_for(&format!("pod {ns}/{name} Running"), TIMEOUT, || async {
        let pod = pods.get(name).await?;
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        Ok((phase.as_deref() == Some("Running"))
            .then(|| pod.spec.and_then(|s| s.node_name))
            .flatten())
    })
    .await
}

/// Delete a pod and wait until it is gone.
pub async fn delete_pod(ns: &str, name: &str) -> anyhow::Result<()> {
    kubectl(&["-n", ns, "delete", "pod", name, "--wait=false"])?;
    let pods: Api<Pod> = Api::namespaced(client().await?, ns);
    wait_for(&format!("pod {ns}/{name} gone"), TIMEOUT, || async {
        Ok(pods.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

/// A shell script run in a pod's container; its stdout.
pub fn exec(ns: &str, pod: &str, script: &str) -> anyhow::Result<String> {
    kubectl(&["-n", ns, "exec", pod, "--", "sh", "-c", script])
}

/// `volpool-agent <args>` run in the agent pod on `node`, whatever its exit status; its stdout.
pub fn agent_command(node: &str, args: &[&str]) -> anyhow::Result<String> {
    let agent = agent_on(node)?;
    let exec = ["-n", NAMESPACE, "exec", &agent, "--", "volpool-agent"];
    kubectl_stdout(&[&exec[..], args].concat())
}

/// Wait for the pool's PV of a disk (`<pool>-<node>-<disk>-…`), in `phase` when one is given;
/// its name.
pub async fn pv_of(
    pool: &str,
    node: &str,
    disk: &str,
    phase: Option<&str>,
) -> anyhow::Result<String> {
    let pvs: Api<PersistentVolume> = Api::all(client().await?);
    let prefix = format!("{pool}-{node}-{disk}-");
    let what = format!("a PV {prefix}… {}", phase.unwrap_or_default());
    wait_for(what.trim_end(), TIMEOUT, || async {
        let list = pvs
            .list(&ListParams::default().labels(&format!("{}={pool}", volpool_api::LABEL_POOL)))
            .await?;
        Ok(list.items.into_iter().find_map(|pv| {
            let name = pv.metadata.name?;
            let now = pv.status.and_then(|s| s.phase);
            (name.starts_with(&prefix) && phase.is_none_or(|p| now.as_deref() == Some(p)))
                .then_some(name)
        }))
    })
    .await
}

/// Wait until `at_least` Events about `name` in `ns` have `reason`; their messages.
pub async fn event_messages(
    ns: &str,
    name: &str,
    reason: &str,
    at_least: usize,
) -> anyhow::Result<Vec<String>> {
    let what = format!("{reason} Events on {name}");
    events_where(ns, name, reason, &what, |messages| {
        Ok((messages.len() >= at_least).then_some(messages))
    })
    .await
}

/// Wait for an Event about `name` in `ns` with `reason` whose message contains `about` (the
/// scheduler and the kubelet may first say something else, e.g. that the claim is not bound
/// yet); its message. On a timeout the error lists the messages seen.
pub async fn event_message(
    ns: &str,
    name: &str,
    reason: &str,
    about: &str,
) -> anyhow::Result<String> {
    let what = format!("a {reason} Event on {name} about {about:?}");
    events_where(ns, name, reason, &what, |seen| {
        match seen.iter().find(|m| m.contains(about)) {
            Some(found) => Ok(Some(found.clone())),
            None => Err(anyhow::anyhow!("{reason} Events seen: {seen:?}")),
        }
    })
    .await
}

/// Wait until `pick` takes what it needs from the messages of the Events about `name` in `ns`
/// with `reason`.
async fn events_where<T>(
    ns: &str,
    name: &str,
    reason: &str,
    what: &str,
    pick: impl Fn(Vec<String>) -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let events: Api<Event> = Api::namespaced(client().await?, ns);
    let fields = format!("involvedObject.name={name},reason={reason}");
    wait_for(what, TIMEOUT, || async {
        let list = events.list(&ListParams::default().fields(&fields)).await?;
        pick(list.items.into_iter().filter_map(|e| e.message).collect())
    })
    .await
}
