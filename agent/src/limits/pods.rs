//! Names for containers: the Pods on this node map a container ID (from
//! `status.containerStatuses[].containerID`, `containerd://<id>`) to namespace, pod and
//! container, and a pod UID to the pod's `volpool.io/require-*` annotations.
//!
//! ```text
//!  [Pod] ─► by container ID ─► ContainerFacts { namespace, pod, container, annotations }
//!        └► by pod UID (a container not in the status yet: namespace and pod only)
//! ```

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;

use super::{Report, requirements};

/// Fill in the names and annotations of `report`'s containers from `pods`, then check every
/// container's requirements. Without pods (no cluster), names stay empty.
pub fn name_and_check<'a>(report: &mut Report, pods: impl IntoIterator<Item = &'a Pod>) {
    let mut by_uid: HashMap<&str, &Pod> = HashMap::new();
    let mut by_container: HashMap<String, (&Pod, &str)> = HashMap::new();
    for pod in pods {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            continue;
        };
        by_uid.insert(uid, pod);
        let status = pod.status.as_ref();
        let statuses = status
            .and_then(|s| s.container_statuses.as_ref())
            .into_iter()
            .chain(status.and_then(|s| s.init_container_statuses.as_ref()))
            .chain(status.and_then(|s| s.ephemeral_container_statuses.as_ref()))
            .flatten();
        for cs in statuses {
            if let Some(id) = cs.container_id.as_deref() {
                // NB: `<runtime>://<id>`; the cgroup holds only the ID.
                let id = id.rsplit_once("://").map_or(id, |(_, id)| id);
                by_container.insert(id.to_ascii_lowercase(), (pod, cs.name.as_str()));
            }
        }
    }
    for c in &mut report.containers {
        let (pod, container) = match by_container.get(&c.container_id) {
            Some((pod, name)) => (Some(*pod), *name),
            None => (by_uid.get(c.pod_uid.as_str()).copied(), ""),
        };
        if let Some(pod) = pod.filter(|p| p.metadata.uid.as_deref() == Some(&c.pod_uid)) {
            c.namespace = pod.metadata.namespace.clone().unwrap_or_default();
            c.pod = pod.metadata.name.clone().unwrap_or_default();
            c.container = container.to_string();
            c.annotations = pod
                .metadata
                .annotations
                .iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("volpool.io/require-"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
        }
    }
    let node = report.node.clone();
    for c in &mut report.containers {
        c.requirements = requirements::check(c, &node);
    }
}

#[cfg(test)]
mod tests {
    use super::super::ContainerFacts;
    use super::*;
    use serde_json::json;

    #[test]
    fn containers_are_named_by_container_id_and_only_within_their_pod() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "es-0", "namespace": "search", "uid": "u-1",
                         "annotations": {"volpool.io/require-nofile": "4096", "other": "x"}},
            "status": {"containerStatuses": [{
                "name": "elasticsearch", "containerID": "containerd://ABC123",
                "image": "es", "imageID": "", "ready": true, "restartCount": 0}]}
        }))
        .expect("a valid Pod");
        let facts = |pod_uid: &str, container_id: &str| ContainerFacts {
            pod_uid: pod_uid.into(),
            container_id: container_id.into(),
            ..ContainerFacts::default()
        };
        let mut report = Report {
            containers: vec![
                facts("u-1", "abc123"),
                facts("u-1", "def456"),
                facts("u-2", "abc123"),
            ],
            ..Report::default()
        };
        name_and_check(&mut report, [&pod]);
        let c = &report.containers;
        assert_eq!(
            (
                c[0].namespace.as_str(),
                c[0].pod.as_str(),
                c[0].container.as_str()
            ),
            ("search", "es-0", "elasticsearch")
        );
        assert_eq!(c[0].requirements.len(), 1, "the nofile annotation applies");
        assert_eq!((c[1].pod.as_str(), c[1].container.as_str()), ("es-0", ""));
        assert_eq!(
            c[2].pod, "",
            "a container ID in another pod's cgroup is not trusted"
        );
    }
}
