//! What users are told about failed directory operations: an Event on the pool, and on the
//! claim a directory was made for (or on the PV whose directory it is), naming the operation,
//! the path, the error and the fix. Each once per distinct failure, not on every retry; once
//! an operation of that kind works again, its failures are forgotten, so a recurrence is told.
//!
//! ```text
//!  execute: op failed ─► Told::failed ─► [Notice on the VolumePool, on the claim / the PV] (new failures only)
//!           op worked ─► Told::worked ─► that kind's failures forgotten
//! ```

use std::collections::HashSet;

use k8s_openapi::api::core::v1::ObjectReference;
use volpool_api::{NfsAccess, NfsSource};

use super::{ExportError, FailKind};
use crate::plan::nfs::{ExportOp, Op};
use crate::plan::{Change, Notice};

/// The failures already told, by key.
#[derive(Default)]
pub struct Told {
    keys: HashSet<String>,
}

/// Reason, action and verb of an operation's Events.
fn names(op: &Op) -> (&'static str, &'static str, &'static str, &str) {
    match op {
        Op::MakeDir { dir, .. } => ("MakeDirectoryFailed", "MakeDirectory", "make", dir),
        Op::Remove { dir } => ("RemoveDirectoryFailed", "RemoveDirectory", "remove", dir),
        Op::Rename { from, .. } => (
            "ArchiveDirectoryFailed",
            "ArchiveDirectory",
            "archive",
            from,
        ),
    }
}

impl Told {
    /// The Events for a failure of `op` on the export of `pool` (reached as `nfs` says), but
    /// for those already told.
    pub fn failed(
        &mut self,
        pool: &ObjectReference,
        nfs: &NfsSource,
        op: &ExportOp,
        error: &ExportError,
    ) -> Vec<Notice> {
        let (reason, action, verb, dir) = names(&op.op);
        // NB: each try of a MKDIR picks a fresh name, so the name is no part of the failure.
        let failure = match op.op {
            Op::MakeDir { .. } => error.message.replace(dir, "pv-*"),
            _ => error.message.clone(),
        };
        let note = format!(
            "could not {verb} directory {}: {}; {}; the controller retries on every pass",
            path(nfs, dir),
            error.message,
            advice(error.kind, nfs)
        );
        let mut out = Vec::new();
        let mut tell = |key: String, regarding: ObjectReference| {
            if self.keys.insert(key) {
                out.push(Notice {
                    regarding,
                    warning: true,
                    reason: reason.into(),
                    action: action.into(),
                    note: note.clone(),
                });
            }
        };
        tell(format!("{reason}\0\0{failure}"), pool.clone());
        if let Some(other) = concerned(op) {
            let uid = other.uid.clone().unwrap_or_default();
            tell(format!("{reason}\0{uid}\0{failure}"), other);
        }
        out
    }

    /// `op` worked: forget the failures of its kind.
    pub fn worked(&mut self, op: &Op) {
        let (reason, ..) = names(op);
        self.keys.retain(|k| !k.starts_with(reason));
    }
}

/// The claim a directory was being made for, or the PV whose directory is being released.
fn concerned(op: &ExportOp) -> Option<ObjectReference> {
    op.then.iter().find_map(|change| match change {
        Change::ApplyNfsPv { pv, .. } => pv.claim.as_ref().map(|c| c.reference()),
        Change::DeletePv { name, uid, .. } => Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolume".into()),
            name: Some(name.clone()),
            uid: Some(uid.clone()),
            ..Default::default()
        }),
        _ => None,
    })
}

/// Where the directory is, as the user configured the pool.
fn path(nfs: &NfsSource, dir: &str) -> String {
    let export = format!("{}:{}/{dir}", nfs.server, nfs.path.trim_end_matches('/'));
    match nfs.access {
        NfsAccess::NFSv3 => export,
        NfsAccess::Mounted => format!(
            "{}/{dir} (export {export})",
            nfs.mounted_path.trim_end_matches('/')
        ),
    }
}

/// What to do about a failure of that kind.
fn advice(kind: FailKind, nfs: &NfsSource) -> String {
    let export = format!("{}:{}", nfs.server, nfs.path);
    match kind {
        FailKind::Denied => format!(
            "the server refuses the controller's writes: export {export} read-write and without root squash (knfsd: rw,no_root_squash in /etc/exports; nfs-ganesha: Access_Type = RW, Squash = No_Root_Squash), and let root write into the export's root directory"
        ),
        FailKind::Unreachable => format!(
            "{export} stopped answering (see the pool's ExportUnreachable condition): no PV is made or deleted until it answers"
        ),
        FailKind::NotFound => {
            format!("it is gone: check that {export} still holds the pool's directories")
        }
        FailKind::Other => "fix what the error names on the server".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::nfs::pv::{ClaimRef, NfsPv};
    use crate::plan::pv::PoolFields;
    use volpool_api::ReclaimPolicy;

    fn nfs() -> NfsSource {
        serde_json::from_value(serde_json::json!({"server": "10.0.0.1", "path": "/export/"}))
            .expect("spec.nfs")
    }

    fn pool() -> ObjectReference {
        ObjectReference {
            kind: Some("VolumePool".into()),
            name: Some("shared".into()),
            uid: Some("pool-uid".into()),
            ..Default::default()
        }
    }

    fn make_for_claim(dir: &str, claim: &str) -> ExportOp {
        let pv = NfsPv {
            name: format!("shared-{dir}"),
            pool: "shared".into(),
            server: "10.0.0.1".into(),
            export: "/export".into(),
            dir: dir.into(),
            capacity_bytes: 1 << 20,
            fields: PoolFields {
                storage_class: "shared".into(),
                access_modes: Vec::new(),
                reclaim_policy: ReclaimPolicy::Delete,
                mount_options: Vec::new(),
                extra_labels: Default::default(),
            },
            affinity: false,
            missing: false,
            released_at: None,
            claim: Some(ClaimRef {
                namespace: "apps".into(),
                name: claim.into(),
                uid: format!("{claim}-uid"),
            }),
        };
        ExportOp {
            pool: "shared".into(),
            op: Op::MakeDir {
                dir: dir.into(),
                mode: 0o777,
            },
            then: vec![Change::ApplyNfsPv {
                pv,
                resource_version: None,
                reason: String::new(),
            }],
        }
    }

    fn denied(dir: &str) -> ExportError {
        ExportError::new(
            FailKind::Denied,
            format!("MKDIR /export/{dir}: NFS3ERR_ACCES"),
        )
    }

    fn told_about(notices: &[Notice]) -> Vec<String> {
        notices
            .iter()
            .map(|n| n.regarding.name.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn a_failure_is_told_once_on_the_pool_and_once_per_claim_until_it_works_again() {
        let mut told = Told::default();
        let first = told.failed(
            &pool(),
            &nfs(),
            &make_for_claim("pv-0000000a", "db"),
            &denied("pv-0000000a"),
        );
        assert_eq!(told_about(&first), ["shared", "db"]);
        let note = &first[0].note;
        assert_eq!(first[0].reason, "MakeDirectoryFailed");
        assert!(
            note.starts_with("could not make directory 10.0.0.1:/export/pv-0000000a: MKDIR /export/pv-0000000a: NFS3ERR_ACCES; the server refuses")
                && note.contains("no_root_squash")
                && note.ends_with("the controller retries on every pass"),
            "{note}"
        );
        assert_eq!(first[1].regarding.namespace.as_deref(), Some("apps"));
        assert_eq!(first[1].regarding.uid.as_deref(), Some("db-uid"));

        // The retry carves another name: the same failure, told to no one again; another
        // claim hears it once.
        let retry = told.failed(
            &pool(),
            &nfs(),
            &make_for_claim("pv-0000000b", "db"),
            &denied("pv-0000000b"),
        );
        assert!(retry.is_empty(), "{retry:?}");
        let other = told.failed(
            &pool(),
            &nfs(),
            &make_for_claim("pv-0000000c", "web"),
            &denied("pv-0000000c"),
        );
        assert_eq!(told_about(&other), ["web"]);

        // It works, then fails again: told again.
        told.worked(&Op::MakeDir {
            dir: "pv-0000000c".into(),
            mode: 0o777,
        });
        let again = told.failed(
            &pool(),
            &nfs(),
            &make_for_claim("pv-0000000d", "db"),
            &denied("pv-0000000d"),
        );
        assert_eq!(told_about(&again), ["shared", "db"]);
    }

    #[test]
    fn a_failed_removal_is_told_on_the_pool_and_the_pv_with_the_mounted_path() {
        let mut told = Told::default();
        let mut mounted = nfs();
        mounted.access = NfsAccess::Mounted;
        mounted.mounted_path = "/mnt/export".into();
        let op = ExportOp {
            pool: "shared".into(),
            op: Op::Remove {
                dir: "pv-0000000a".into(),
            },
            then: vec![Change::DeletePv {
                name: "shared-pv-0000000a".into(),
                uid: "pv-uid".into(),
                pool: "shared".into(),
                reason: String::new(),
                scrub_seconds: None,
            }],
        };
        let error = ExportError::new(
            FailKind::Other,
            "/mnt/export/pv-0000000a/m is another filesystem: refusing to remove across it",
        );
        let notices = told.failed(&pool(), &mounted, &op, &error);
        assert_eq!(told_about(&notices), ["shared", "shared-pv-0000000a"]);
        assert_eq!(notices[1].reason, "RemoveDirectoryFailed");
        assert!(
            notices[1].note.starts_with(
                "could not remove directory /mnt/export/pv-0000000a (export 10.0.0.1:/export/pv-0000000a): "
            ),
            "{}",
            notices[1].note
        );
        assert!(told.failed(&pool(), &mounted, &op, &error).is_empty());
    }
}
