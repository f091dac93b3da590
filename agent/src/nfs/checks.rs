//! The file-based checks: each reads the host through [`Host`] and returns one [`Check`]
//! (OK / NonOK / Unknown) whose message says what was found and, when not OK, what to do.
//!
//! ```text
//!  <host>/sbin/mount.nfs, /usr/sbin/mount.nfs ─► mount-helper
//!  dpkg status | rpm db | apk db | pacman db  ─► package
//!  etc/nfsmount.conf                          ─► nfs-version
//!  etc/idmapd.conf                            ─► idmap-domain
//! ```

use std::io::ErrorKind;
use std::path::Path;

use volpool_api::{Check, CheckStatus};

use super::rpmdb;
use crate::host::{FileKind, Host};

/// Name of the mount helper check.
pub const MOUNT_HELPER: &str = "mount-helper";
/// Name of the package check.
pub const PACKAGE: &str = "package";
/// Name of the kernel check.
pub const KERNEL: &str = "kernel";
/// Name of the rpcbind + rpc.statd check (NFSv3 with locking).
pub const RPC_STATD: &str = "rpc-statd";
/// Name of the default NFS version check.
pub const NFS_VERSION: &str = "nfs-version";
/// Name of the NFSv4 ID mapping domain check.
pub const IDMAP_DOMAIN: &str = "idmap-domain";

/// Where mount(8) looks for `mount.nfs`.
const HELPERS: [&str; 2] = ["/sbin/mount.nfs", "/usr/sbin/mount.nfs"];

/// A check result.
pub fn check(name: &str, status: CheckStatus, message: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status,
        message: message.into(),
    }
}

/// `mount.nfs` exists in the host root: without it kubelet's NFS mounts fail.
pub fn mount_helper(host: &dyn Host) -> Check {
    let mut unknown = Vec::new();
    for helper in HELPERS {
        match host.stat(Path::new(helper)) {
            Ok(info) if info.kind == FileKind::File => {
                return check(MOUNT_HELPER, CheckStatus::OK, format!("found {helper}"));
            }
            Ok(_) => unknown.push(format!("{helper} is not a regular file")),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => unknown.push(format!("{helper}: {e}")),
        }
    }
    if !unknown.is_empty() {
        return check(MOUNT_HELPER, CheckStatus::Unknown, unknown.join("; "));
    }
    check(
        MOUNT_HELPER,
        CheckStatus::NonOK,
        "no mount.nfs in /sbin or /usr/sbin of the host: NFS mounts fail with \"bad option; \
         ... you might need a /sbin/mount.<type> helper program\"; install nfs-common \
         (Debian, Ubuntu), nfs-utils (RHEL, Fedora, Alpine, Arch) or nfs-client (SUSE), or \
         run the agent with --install-nfs-client",
    )
}

/// The distribution's NFS client package is installed, read from its package database files.
pub fn package(host: &dyn Host) -> Check {
    if let Some(result) = dpkg(host) {
        return result;
    }
    if let Some(result) = apk(host) {
        return result;
    }
    if let Some(result) = pacman(host) {
        return result;
    }
    if let Some(result) = rpm(host) {
        return result;
    }
    check(
        PACKAGE,
        CheckStatus::Unknown,
        "no package database found in the host root (dpkg, rpm, apk or pacman)",
    )
}

fn dpkg(host: &dyn Host) -> Option<Check> {
    let path = "/var/lib/dpkg/status";
    let text = match host.read_to_string(Path::new(path)) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => return None,
        Err(e) => return Some(check(PACKAGE, CheckStatus::Unknown, format!("{path}: {e}"))),
    };
    Some(match dpkg_status(&text, "nfs-common") {
        Some((status, version)) if status == "install ok installed" => check(
            PACKAGE,
            CheckStatus::OK,
            format!("nfs-common {version} is installed"),
        ),
        Some((status, _)) => check(
            PACKAGE,
            CheckStatus::NonOK,
            format!(
                "nfs-common is not fully installed (dpkg status {status:?}): run apt-get install -y nfs-common"
            ),
        ),
        None => check(
            PACKAGE,
            CheckStatus::NonOK,
            "nfs-common is not installed: run apt-get install -y nfs-common, or run the agent \
             with --install-nfs-client",
        ),
    })
}

/// The `Status` and `Version` of `package` in a dpkg status file.
pub fn dpkg_status(text: &str, package: &str) -> Option<(String, String)> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        };
        (field("Package")?.as_str() == package).then(|| {
            (
                field("Status").unwrap_or_default(),
                field("Version").unwrap_or_default(),
            )
        })
    })
}

fn apk(host: &dyn Host) -> Option<Check> {
    let text = host
        .read_to_string(Path::new("/lib/apk/db/installed"))
        .ok()?;
    Some(if apk_has(&text, "nfs-utils") {
        check(PACKAGE, CheckStatus::OK, "nfs-utils is installed (apk)")
    } else {
        check(
            PACKAGE,
            CheckStatus::NonOK,
            "nfs-utils is not installed: run apk add nfs-utils",
        )
    })
}

/// Whether the apk database (`lib/apk/db/installed`) has a `P:<package>` line.
pub fn apk_has(text: &str, package: &str) -> bool {
    text.lines().any(|l| l.strip_prefix("P:") == Some(package))
}

/// The pacman database entry (`<name>-<pkgver>-<pkgrel>`) of `package`, among `entries`. A
/// name may hold dashes, a version and a release never do: the name is all before the last two.
pub fn pacman_entry<'a>(entries: &'a [String], package: &str) -> Option<&'a String> {
    entries.iter().find(|entry| {
        let mut parts = entry.rsplitn(3, '-');
        let (_rel, _ver) = (parts.next(), parts.next());
        parts.next() == Some(package)
    })
}

fn pacman(host: &dyn Host) -> Option<Check> {
    let names = host.list_dir(Path::new("/var/lib/pacman/local")).ok()?;
    let found = pacman_entry(&names, "nfs-utils");
    Some(match found {
        Some(name) => check(
            PACKAGE,
            CheckStatus::OK,
            format!("{name} is installed (pacman)"),
        ),
        None => check(
            PACKAGE,
            CheckStatus::NonOK,
            "nfs-utils is not installed: run pacman -S nfs-utils",
        ),
    })
}

/// Largest rpm database read (bytes); bigger ones are reported as Unknown.
const RPMDB_MAX: usize = 256 << 20;

/// The rpm database files, newest format first (SQLite, ndb, Berkeley DB).
const RPMDBS: [&str; 5] = [
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/var/lib/rpm/rpmdb.sqlite",
    "/usr/lib/sysimage/rpm/Packages.db",
    "/var/lib/rpm/Packages.db",
    "/var/lib/rpm/Packages",
];

/// Package names that provide `mount.nfs` on rpm systems.
const RPM_CLIENTS: [&str; 2] = ["nfs-utils", "nfs-client"];

fn rpm(host: &dyn Host) -> Option<Check> {
    let (path, bytes) = RPMDBS.iter().find_map(|p| {
        let bytes = host.read_at(Path::new(p), 0, RPMDB_MAX + 1).ok()?;
        Some((*p, bytes))
    })?;
    if bytes.len() > RPMDB_MAX {
        return Some(check(
            PACKAGE,
            CheckStatus::Unknown,
            format!("the rpm database {path} is larger than {RPMDB_MAX} bytes: not read"),
        ));
    }
    // NB: the write-ahead log holds transactions not yet copied into the database.
    let wal = host
        .read_at(Path::new(&format!("{path}-wal")), 0, RPMDB_MAX)
        .unwrap_or_default();
    let names = match rpmdb::package_names(&bytes, &wal) {
        Ok(names) => names,
        Err(e) => {
            return Some(check(
                PACKAGE,
                CheckStatus::Unknown,
                format!("cannot read the rpm database {path}: {e}"),
            ));
        }
    };
    let found = RPM_CLIENTS
        .into_iter()
        .find(|client| names.iter().any(|n| n == client));
    Some(match found {
        Some(name) => check(
            PACKAGE,
            CheckStatus::OK,
            format!("{name} is in the rpm database {path}"),
        ),
        None => check(
            PACKAGE,
            CheckStatus::NonOK,
            format!(
                "neither nfs-utils nor nfs-client is in the rpm database {path} ({} packages): install nfs-utils (dnf, yum) or nfs-client (zypper)",
                names.len()
            ),
        ),
    })
}

/// Values of `key` (case-insensitive) in `section` of an ini-style file such as
/// `nfsmount.conf` (`[ NFSMount_Global_Options ]`) or `idmapd.conf` (`[General]`).
pub fn ini_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut current = String::new();
    let mut found = None;
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("").trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.trim().to_ascii_lowercase();
        } else if current == section.to_ascii_lowercase()
            && let Some((k, v)) = line.split_once('=')
            && k.trim().eq_ignore_ascii_case(key)
        {
            found = Some(v.trim().to_string());
        }
    }
    found
}

/// NFS versions `mount.nfs` accepts.
const VERSIONS: [&str; 6] = ["3", "4", "4.0", "4.1", "4.2", "2"];

/// The default NFS version from `etc/nfsmount.conf`: informative, NonOK only when it is not a
/// version at all (every mount would fail).
pub fn nfs_version(host: &dyn Host) -> Check {
    let path = "/etc/nfsmount.conf";
    let text = match host.read_to_string(Path::new(path)) {
        Ok(text) => text,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return check(
                NFS_VERSION,
                CheckStatus::OK,
                "no /etc/nfsmount.conf: mount.nfs negotiates the version (4.2, 4.1, 4.0, then 3)",
            );
        }
        Err(e) => return check(NFS_VERSION, CheckStatus::Unknown, format!("{path}: {e}")),
    };
    let section = "NFSMount_Global_Options";
    let setting = ["Nfsvers", "Defaultvers"]
        .into_iter()
        .find_map(|k| Some((k, ini_value(&text, section, k)?)));
    match setting {
        None => check(
            NFS_VERSION,
            CheckStatus::OK,
            format!("no default version in {path}: mount.nfs negotiates (4.2, 4.1, 4.0, then 3)"),
        ),
        Some((key, v)) if VERSIONS.contains(&v.as_str()) => check(
            NFS_VERSION,
            CheckStatus::OK,
            format!("{key}={v} in {path}; a pool's nfsvers= mount option overrides it"),
        ),
        Some((key, v)) => check(
            NFS_VERSION,
            CheckStatus::NonOK,
            format!(
                "{key}={v} in {path} is not an NFS version (3, 4, 4.0, 4.1, 4.2): mounts fail with \"requested NFS version or transport protocol is not supported\"; fix or remove it"
            ),
        ),
    }
}

/// The NFSv4 ID mapping domain from `etc/idmapd.conf`: informative (never NonOK).
pub fn idmap_domain(host: &dyn Host) -> Check {
    let path = "/etc/idmapd.conf";
    match host.read_to_string(Path::new(path)) {
        Ok(text) => match ini_value(&text, "General", "Domain") {
            Some(domain) if !domain.is_empty() => check(
                IDMAP_DOMAIN,
                CheckStatus::OK,
                format!(
                    "NFSv4 ID mapping domain {domain} (from {path}); it must match the server's or files show as owned by nobody"
                ),
            ),
            _ => check(
                IDMAP_DOMAIN,
                CheckStatus::OK,
                format!(
                    "no Domain in {path}: NFSv4 ID mapping uses the host's DNS domain, which must match the server's or files show as owned by nobody"
                ),
            ),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => check(
            IDMAP_DOMAIN,
            CheckStatus::Unknown,
            format!(
                "no {path} (it comes with the nfs client package): the NFSv4 ID mapping domain is not known"
            ),
        ),
        Err(e) => check(IDMAP_DOMAIN, CheckStatus::Unknown, format!("{path}: {e}")),
    }
}

#[cfg(test)]
mod props;
