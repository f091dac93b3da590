//! Events through events.k8s.io/v1, built one way for the agent and the controller: named
//! `<regarding>.<nanoseconds in hex>`, in the namespace of the object they are about (or
//! `kube-system` for cluster-scoped objects: a 1.20 apiserver takes Events about Nodes and
//! PVs only there; kube's Recorder would put them in "default"), with the note cut to what
//! the API accepts.
//!
//! ```text
//!  Notice { regarding, warning, reason, action, note } + reporter ─► event ─► POST events.k8s.io/v1
//! ```

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;

/// The most bytes of note an Event keeps (the API refuses more than 1 KiB).
pub const NOTE_MAX: usize = 1000;
/// Where Events about cluster-scoped objects go.
pub const CLUSTER_EVENTS_NAMESPACE: &str = "kube-system";
/// `reportingController` of the agent's Events.
pub const REPORTING_AGENT: &str = "volpool.io/volpool-agent";
/// `reportingController` of the controller's Events.
pub const REPORTING_CONTROLLER: &str = "volpool.io/volpool-controller";

/// What an Event says, and about what.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Notice {
    /// The object the Event is about.
    pub regarding: ObjectReference,
    /// Warning rather than Normal.
    pub warning: bool,
    /// PascalCase reason.
    pub reason: String,
    /// PascalCase action taken.
    pub action: String,
    /// What happened, for humans.
    pub note: String,
}

/// Who records an Event: `reportingController` and `reportingInstance`.
#[derive(Clone, Copy, Debug)]
pub struct Reporter<'a> {
    /// `volpool.io/volpool-agent` or `volpool.io/volpool-controller`.
    pub controller: &'a str,
    /// This replica (the agent: its node; the controller: its pod).
    pub instance: &'a str,
}

/// The namespace an Event about `regarding` goes into.
pub fn event_namespace(regarding: &ObjectReference) -> String {
    regarding
        .namespace
        .clone()
        .unwrap_or_else(|| CLUSTER_EVENTS_NAMESPACE.into())
}

/// The Event recording `notice`, made at `now`.
pub fn event(notice: Notice, reporter: Reporter<'_>, now: Timestamp) -> Event {
    let name = notice.regarding.name.clone().unwrap_or_default();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{:x}", now.as_nanosecond())),
            namespace: Some(event_namespace(&notice.regarding)),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        type_: Some(if notice.warning { "Warning" } else { "Normal" }.into()),
        reason: Some(notice.reason),
        action: Some(notice.action),
        note: Some(truncate_note(&notice.note)),
        regarding: Some(notice.regarding),
        reporting_controller: Some(reporter.controller.into()),
        reporting_instance: Some(reporter.instance.into()),
        ..Default::default()
    }
}

/// `note` without surrounding whitespace and, when longer than [`NOTE_MAX`] bytes, only its
/// end (a command's error, a fix, comes last), cut at a character boundary.
pub fn truncate_note(note: &str) -> String {
    let note = note.trim();
    if note.len() <= NOTE_MAX {
        return note.to_string();
    }
    let mut start = note.len() - NOTE_MAX;
    while !note.is_char_boundary(start) {
        start += 1;
    }
    note[start..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(name.into()),
            ..Default::default()
        }
    }

    #[test]
    fn events_are_named_after_what_they_regard_and_cluster_scoped_ones_go_to_kube_system() {
        let now: Timestamp = "2026-12-01T10:00:00Z".parse().expect("timestamp");
        let reporter = Reporter {
            controller: REPORTING_AGENT,
            instance: "n1",
        };
        let notice = Notice {
            regarding: node("n1"),
            warning: true,
            reason: "NfsClientInstallFailed".into(),
            action: "InstallNfsClient".into(),
            note: "  apt-get failed\n".into(),
        };
        let e = event(notice, reporter, now);
        assert_eq!(
            e.metadata.name,
            Some(format!("n1.{:x}", now.as_nanosecond()))
        );
        assert_eq!(e.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.note.as_deref(), Some("apt-get failed"));
        assert_eq!(e.reporting_instance.as_deref(), Some("n1"));
        let pod = ObjectReference {
            namespace: Some("search".into()),
            ..node("es-0")
        };
        assert_eq!(event_namespace(&pod), "search");
    }

    #[test]
    fn a_long_note_keeps_its_end_within_the_limit() {
        let long = format!("{}the end", "é".repeat(600));
        let cut = truncate_note(&long);
        assert!(cut.len() <= NOTE_MAX, "{}", cut.len());
        assert!(cut.ends_with("éthe end"), "{cut}");
        assert_eq!(truncate_note("short"), "short");
    }
}
