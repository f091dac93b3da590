//! Parsers for the `/proc` files the limits check reads: `/proc/<pid>/limits`,
//! `/proc/<pid>/cgroup`, `/proc/<pid>/status` and `/proc/meminfo`. Text in, plain data out.
//!
//! ```text
//!  "Max locked memory  65536  65536  bytes"            ─► Limit { soft: Some(65536), hard: Some(65536) }
//!  "0::/kubepods.slice/…-pod<uid_>.slice/cri-containerd-<id>.scope" ─► ("<uid>", "<id>")
//! ```

use serde::Serialize;

/// One resource limit; `None` is unlimited (serialized as null).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Limit {
    /// The soft limit, which the process gets.
    pub soft: Option<u64>,
    /// The hard limit, up to which the process may raise its soft limit.
    pub hard: Option<u64>,
}

/// The limits the check reports, from one `/proc/<pid>/limits`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rlimits {
    /// `Max locked memory`, bytes.
    pub memlock: Limit,
    /// `Max open files`.
    pub nofile: Limit,
    /// `Max processes`.
    pub nproc: Limit,
}

/// Parse `/proc/<pid>/limits`. Rows it does not know are ignored; a missing row is an error.
pub fn parse_limits(text: &str) -> Result<Rlimits, String> {
    let row = |name: &str| -> Result<Limit, String> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| format!("no \"{name}\" row"))?;
        let mut fields = line[name.len()..].split_whitespace();
        let mut value = |which: &str| -> Result<Option<u64>, String> {
            match fields.next() {
                Some("unlimited") => Ok(None),
                Some(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("\"{name}\" {which} limit {v:?} is not a number")),
                None => Err(format!("\"{name}\" has no {which} limit")),
            }
        };
        Ok(Limit {
            soft: value("soft")?,
            hard: value("hard")?,
        })
    };
    Ok(Rlimits {
        memlock: row("Max locked memory")?,
        nofile: row("Max open files")?,
        nproc: row("Max processes")?,
    })
}

/// The pod and container a process belongs to, from its `/proc/<pid>/cgroup`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodContainer {
    /// The pod's UID, with dashes (as in the API).
    pub pod_uid: String,
    /// The container ID without the runtime's prefix (as after `://` in `containerStatuses`).
    pub container_id: String,
}

/// Find the pod UID and container ID in `/proc/<pid>/cgroup`, for cgroup v1 and v2, the
/// cgroupfs driver (`/kubepods/burstable/pod<uid>/<id>`) and the systemd driver
/// (`/kubepods.slice/…/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope`, `crio-`,
/// `docker-`). `None` for a process outside any pod's container (the pod's own cgroup, the
/// host, cri-o's `conmon`).
pub fn parse_cgroup(text: &str) -> Option<PodContainer> {
    text.lines().find_map(|line| {
        // NB: hierarchy-ID:controllers:path, and the path may itself hold colons.
        let path = line.splitn(3, ':').nth(2)?;
        let segments: Vec<&str> = path.split('/').collect();
        let at = segments.iter().position(|s| pod_uid(s).is_some())?;
        let pod_uid = pod_uid(segments[at])?;
        let container_id = container_id(segments.get(at + 1)?)?;
        Some(PodContainer {
            pod_uid,
            container_id,
        })
    })
}

/// `pod<uid>` (cgroupfs) or `kubepods[-<qos>]-pod<uid_>.slice` (systemd).
fn pod_uid(segment: &str) -> Option<String> {
    let uid = match segment.strip_suffix(".slice") {
        Some(slice) if slice.starts_with("kubepods") => slice.rsplit_once("-pod")?.1,
        Some(_) => return None,
        None => segment.strip_prefix("pod")?,
    };
    let uid = uid.replace('_', "-");
    let valid = uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    valid.then_some(uid)
}

/// `<id>` (cgroupfs) or `<runtime>-<id>.scope` (systemd), where the ID is hex.
fn container_id(segment: &str) -> Option<String> {
    let id = match segment.strip_suffix(".scope") {
        Some(scope) => {
            if scope.starts_with("crio-conmon-") {
                return None;
            }
            ["cri-containerd-", "crio-", "docker-", "containerd-"]
                .iter()
                .find_map(|prefix| scope.strip_prefix(prefix))?
        }
        None => segment,
    };
    let valid = id.len() >= 12 && id.bytes().all(|b| b.is_ascii_hexdigit());
    valid.then(|| id.to_ascii_lowercase())
}

/// A `<key>: <n> kB` field of `/proc/meminfo` or `/proc/<pid>/status`, in bytes (`None` when
/// absent, not a number, or more bytes than a `u64` holds).
pub fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        kb.checked_mul(1024)
    })
}

/// The NUL-separated arguments of `/proc/<pid>/cmdline` (or variables of `environ`).
pub fn nul_separated(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/limits")
            .join(name);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
    }

    fn ids(pod: &str, container: &str) -> Option<PodContainer> {
        Some(PodContainer {
            pod_uid: pod.into(),
            container_id: container.into(),
        })
    }

    #[test]
    fn limits_of_a_containerd_child_with_systemd_defaults() {
        let limits = parse_limits(&fixture("limits-containerd")).expect("limits parse");
        assert_eq!(
            limits.memlock,
            Limit {
                soft: Some(8_388_608),
                hard: Some(8_388_608)
            }
        );
        assert_eq!(
            limits.nofile,
            Limit {
                soft: Some(1_048_576),
                hard: Some(1_048_576)
            }
        );
        assert_eq!(
            limits.nproc,
            Limit {
                soft: None,
                hard: None
            }
        );
    }

    #[test]
    fn limits_of_an_elasticsearch_with_64k_memlock() {
        let limits = parse_limits(&fixture("limits-es-64k")).expect("limits parse");
        assert_eq!(limits.memlock.soft, Some(65_536));
        assert_eq!(limits.nofile.soft, Some(1024));
        assert_eq!(limits.nofile.hard, Some(4096));
        assert_eq!(limits.nproc.soft, Some(4096));
    }

    #[test]
    fn truncated_limits_are_an_error_not_a_panic() {
        let err = parse_limits("Limit  Soft Limit  Hard Limit  Units\nMax open files  1024\n")
            .expect_err("refused");
        assert!(err.contains("Max locked memory"), "{err}");
        let err = parse_limits("Max locked memory  lots  lots  bytes\n").expect_err("refused");
        assert!(err.contains("not a number"), "{err}");
    }

    #[test]
    fn cgroup_v2_systemd_driver_containerd() {
        assert_eq!(
            parse_cgroup(&fixture("cgroup-v2-systemd-containerd")),
            ids(
                "8c1e2f4a-5b6d-4e7f-9a0b-1c2d3e4f5a6b",
                "4f9a1c0b7d2e3f4a5b6c7d8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a"
            )
        );
    }

    #[test]
    fn cgroup_v2_systemd_driver_crio_and_its_conmon() {
        assert_eq!(
            parse_cgroup(&fixture("cgroup-v2-systemd-crio")),
            ids(
                "0e6b8d2c-9f1a-4b3c-8d7e-6f5a4b3c2d1e",
                "b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f4a6c8e0b2d4"
            )
        );
        assert_eq!(
            parse_cgroup(&fixture("cgroup-v2-systemd-crio-conmon")),
            None
        );
    }

    #[test]
    fn cgroup_v1_cgroupfs_driver_docker() {
        assert_eq!(
            parse_cgroup(&fixture("cgroup-v1-cgroupfs-docker")),
            ids(
                "3a7c9e1b-2d4f-4a6c-8e0b-2d4f6a8c0e1b",
                "9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c"
            )
        );
    }

    #[test]
    fn cgroup_v1_systemd_driver_docker() {
        assert_eq!(
            parse_cgroup(&fixture("cgroup-v1-systemd-docker")),
            ids(
                "5b7d9f1a-3c5e-4f7a-9b1d-3f5a7c9e1b3d",
                "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b"
            )
        );
    }

    #[test]
    fn processes_outside_containers_have_no_pod() {
        assert_eq!(parse_cgroup(&fixture("cgroup-v2-host")), None);
        // The pause-less pod cgroup itself, and a guaranteed pod's (no QoS level).
        assert_eq!(
            parse_cgroup("0::/kubepods/pod3a7c9e1b-2d4f-4a6c-8e0b-2d4f6a8c0e1b\n"),
            None
        );
        assert_eq!(
            parse_cgroup(
                "0::/kubepods.slice/kubepods-pod3a7c9e1b_2d4f_4a6c_8e0b_2d4f6a8c0e1b.slice/cri-containerd-abcdef0123456789.scope\n"
            ),
            ids("3a7c9e1b-2d4f-4a6c-8e0b-2d4f6a8c0e1b", "abcdef0123456789")
        );
        assert_eq!(parse_cgroup("garbage\n\n::\n0::/pod/x\n"), None);
    }

    #[test]
    fn kb_fields_are_bytes() {
        let meminfo = fixture("meminfo");
        assert_eq!(kb_field(&meminfo, "Mlocked"), Some(16_384 * 1024));
        assert_eq!(kb_field(&meminfo, "Unevictable"), Some(20_480 * 1024));
        assert_eq!(kb_field(&meminfo, "SwapTotal"), Some(0));
        assert_eq!(kb_field(&meminfo, "Nope"), None);
        // NB: was `kb * 1024`, a panic (debug) or a wrapped small number (release).
        assert_eq!(kb_field("VmLck:\t18014398509481984 kB\n", "VmLck"), None);
        assert_eq!(
            kb_field("VmLck:\t18014398509481983 kB\n", "VmLck"),
            Some(18_014_398_509_481_983 * 1024)
        );
    }
}
