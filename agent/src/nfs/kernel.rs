//! The kernel check: is there an NFS client in the running kernel, or a module that the first
//! mount would load? Evidence is read in order, and the message names every piece that is
//! missing, so a user can tell "not loaded" from "not built".
//!
//! ```text
//!  /proc/filesystems, /sys/module/{nfs,nfsv4,sunrpc} ─► registered? ─► OK
//!  kernel config (k8s.io/system-validators' search list) + lib/modules/<release> ─► loadable?
//! ```

use std::io::Read;
use std::path::Path;

use volpool_api::{Check, CheckStatus};

use super::checks::{KERNEL, check};
use crate::host::Host;

/// Largest kernel config read.
const CONFIG_MAX: usize = 16 << 20;

/// Where kernel configs are found, `{r}` being the release (k8s.io/system-validators' list).
const CONFIG_PATHS: [&str; 9] = [
    "/proc/config.gz",
    "/boot/config-{r}",
    "/usr/src/linux-{r}/.config",
    "/usr/src/linux/.config",
    "/usr/lib/modules/{r}/config",
    "/usr/lib/ostree-boot/config-{r}",
    "/usr/lib/kernel/config-{r}",
    "/usr/src/linux-headers-{r}/.config",
    "/lib/modules/{r}/build/.config",
];

/// How a kernel config sets an option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tristate {
    /// `=y`
    BuiltIn,
    /// `=m`
    Module,
    /// `# ... is not set`, or absent.
    No,
}

/// The value of `option` in a kernel config; a missing key is "not set".
pub fn config_option(config: &str, option: &str) -> Tristate {
    let prefix = format!("{option}=");
    match config.lines().find_map(|l| l.strip_prefix(&prefix)) {
        Some("y") => Tristate::BuiltIn,
        Some("m") => Tristate::Module,
        _ => Tristate::No,
    }
}

/// Whether `/proc/filesystems` lists `fs` (exact name, not a substring: `nfsd` is not `nfs`).
pub fn has_filesystem(filesystems: &str, fs: &str) -> bool {
    filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some(fs))
}

/// The kernel check.
pub fn kernel(host: &dyn Host) -> Check {
    let filesystems = match host.read_to_string(Path::new("/proc/filesystems")) {
        Ok(text) => text,
        Err(e) => {
            return check(
                KERNEL,
                CheckStatus::Unknown,
                format!("cannot read /proc/filesystems of the host: {e}"),
            );
        }
    };
    let fs: Vec<&str> = ["nfs", "nfs4"]
        .into_iter()
        .filter(|f| has_filesystem(&filesystems, f))
        .collect();
    let modules: Vec<&str> = ["nfs", "nfsv4", "sunrpc"]
        .into_iter()
        .filter(|m| host.stat(&Path::new("/sys/module").join(m)).is_ok())
        .collect();
    if fs.contains(&"nfs") || modules.contains(&"nfs") {
        let mut found = Vec::new();
        if !fs.is_empty() {
            found.push(format!("/proc/filesystems: {}", fs.join(", ")));
        }
        if !modules.is_empty() {
            found.push(format!("/sys/module: {}", modules.join(", ")));
        }
        return check(
            KERNEL,
            CheckStatus::OK,
            format!("the kernel has the NFS client ({})", found.join("; ")),
        );
    }
    let release = host
        .read_to_string(Path::new("/proc/sys/kernel/osrelease"))
        .map(|r| r.trim().to_string())
        .unwrap_or_default();
    let config = find_config(host, &release);
    let module = find_module(host, &release);
    let mut missing = vec![
        "nfs is not in /proc/filesystems".to_string(),
        "/sys/module/nfs does not exist".to_string(),
    ];
    match &module {
        Some(path) => {
            return check(
                KERNEL,
                CheckStatus::OK,
                format!(
                    "the nfs module is not loaded but is available ({path}); the first NFS mount loads it (add nfs to /etc/modules-load.d/nfs.conf to load it at boot)"
                ),
            );
        }
        None => missing.push(format!("no nfs module under /lib/modules/{release}")),
    }
    match &config {
        Some((path, text)) => match config_option(text, "CONFIG_NFS_FS") {
            Tristate::No => missing.push(format!("CONFIG_NFS_FS is not set in {path}")),
            Tristate::Module => missing.push(format!(
                "CONFIG_NFS_FS=m in {path} but the module is not installed"
            )),
            Tristate::BuiltIn => {
                return check(
                    KERNEL,
                    CheckStatus::Unknown,
                    format!(
                        "CONFIG_NFS_FS=y in {path}, but nfs is not in /proc/filesystems: the config may belong to another kernel"
                    ),
                );
            }
        },
        None => missing.push(format!(
            "no kernel config found (searched {})",
            CONFIG_PATHS
                .iter()
                .map(|p| p.replace("{r}", &release))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
    check(
        KERNEL,
        CheckStatus::NonOK,
        format!(
            "kernel {release} has no NFS client: {}; boot a kernel built with CONFIG_NFS_FS (and CONFIG_NFS_V3, CONFIG_NFS_V4), or install its nfs module",
            missing.join(", ")
        ),
    )
}

/// The first kernel config on the search list: (host path, text).
fn find_config(host: &dyn Host, release: &str) -> Option<(String, String)> {
    CONFIG_PATHS.iter().find_map(|pattern| {
        let path = pattern.replace("{r}", release);
        let bytes = host.read_at(Path::new(&path), 0, CONFIG_MAX).ok()?;
        let text = if path.ends_with(".gz") {
            let mut text = String::new();
            flate2::read::GzDecoder::new(bytes.as_slice())
                .read_to_string(&mut text)
                .ok()?;
            text
        } else {
            String::from_utf8_lossy(&bytes).into_owned()
        };
        Some((path, text))
    })
}

/// The nfs module of `release`, from `modules.dep` or the module tree.
fn find_module(host: &dyn Host, release: &str) -> Option<String> {
    if release.is_empty() {
        return None;
    }
    for base in ["/lib/modules", "/usr/lib/modules"] {
        let dir = format!("{base}/{release}");
        if let Ok(dep) = host.read_to_string(&Path::new(&dir).join("modules.dep"))
            && let Some(module) = dep.lines().find_map(|l| {
                let name = l.split(':').next()?;
                is_nfs_module(name).then(|| format!("{dir}/{name}"))
            })
        {
            return Some(module);
        }
        let fs_dir = format!("{dir}/kernel/fs/nfs");
        if let Ok(names) = host.list_dir(Path::new(&fs_dir))
            && let Some(name) = names.iter().find(|n| is_nfs_module(n))
        {
            return Some(format!("{fs_dir}/{name}"));
        }
    }
    None
}

fn is_nfs_module(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    ["nfs.ko", "nfs.ko.xz", "nfs.ko.zst", "nfs.ko.gz"].contains(&name)
}

#[cfg(test)]
mod props;
