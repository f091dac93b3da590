//! Which command installs the NFS client on a host, from its `etc/os-release` (`ID`, then
//! `ID_LIKE`). Pure: the plan is data (argv lists), tested without running anything.
//!
//! ```text
//!  etc/os-release ─► OsRelease ─► plan(os, tools present) ─► Ok([argv, ...]) | Err(why refused)
//! ```

use std::collections::BTreeMap;

/// The fields of `os-release(5)` the installer needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID`, lowercase.
    pub id: String,
    /// `ID_LIKE`, split on spaces.
    pub id_like: Vec<String>,
    /// `VARIANT_ID` (e.g. `coreos` on Fedora CoreOS).
    pub variant_id: String,
    /// `PRETTY_NAME` (else `NAME`), for messages.
    pub pretty_name: String,
}

/// Parse `os-release(5)`: `KEY=value` lines, values optionally quoted with `\` escapes.
pub fn parse(text: &str) -> OsRelease {
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            fields.insert(key.trim().to_string(), unquote(value.trim()));
        }
    }
    let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
    OsRelease {
        id: get("ID").to_ascii_lowercase(),
        id_like: get("ID_LIKE")
            .split_whitespace()
            .map(str::to_ascii_lowercase)
            .collect(),
        variant_id: get("VARIANT_ID").to_ascii_lowercase(),
        pretty_name: fields
            .get("PRETTY_NAME")
            .or_else(|| fields.get("NAME"))
            .cloned()
            .unwrap_or_default(),
    }
}

fn unquote(value: &str) -> String {
    // NB: a value that opens a quote it does not close keeps all it has after the quote.
    let inner = match value.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let rest = &value[1..];
            rest.strip_suffix(q).unwrap_or(rest)
        }
        _ => value,
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Systems whose root is read-only or image-based: a package manager cannot add the client.
const IMMUTABLE: [(&str, &str); 12] = [
    ("flatcar", "Flatcar Container Linux"),
    ("talos", "Talos Linux"),
    ("bottlerocket", "Bottlerocket"),
    ("fedora-coreos", "Fedora CoreOS"),
    ("rhcos", "Red Hat Enterprise Linux CoreOS"),
    ("cos", "Container-Optimized OS"),
    ("sle-micro", "SLE Micro"),
    ("sl-micro", "SL Micro"),
    ("opensuse-microos", "openSUSE MicroOS"),
    ("ubuntu-core", "Ubuntu Core"),
    ("nixos", "NixOS"),
    ("coreos", "CoreOS"),
];

/// One command of an install, run chrooted into the host root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// argv, the program first (resolved by `PATH` inside the host root).
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

impl Step {
    fn new(argv: &[&str]) -> Self {
        Step {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
        }
    }

    fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The command line, for people and logs (never run through a shell).
    pub fn display(&self) -> String {
        self.argv.join(" ")
    }
}

/// Seconds apt waits for the dpkg lock before failing (another apt run on the host).
pub const DPKG_LOCK_TIMEOUT: &str = "DPkg::Lock::Timeout=60";

/// The commands that install the NFS client on `os`, or why the installer refuses.
/// `has` tells whether a program exists in the host root (`dnf` vs `yum`).
pub fn plan(os: &OsRelease, has: &dyn Fn(&str) -> bool) -> Result<Vec<Step>, String> {
    let name = if os.pretty_name.is_empty() {
        format!("ID={}", os.id)
    } else {
        os.pretty_name.clone()
    };
    let immutable_id = if os.id == "fedora" && os.variant_id == "coreos" {
        Some("Fedora CoreOS")
    } else {
        IMMUTABLE
            .iter()
            .find(|(id, _)| os.id == *id)
            .map(|(_, what)| *what)
    };
    if let Some(what) = immutable_id {
        return Err(format!(
            "{name} is an immutable system ({what}): packages cannot be installed on it; use an image that has the NFS client (mount.nfs), or add it with the system's own extension mechanism"
        ));
    }
    let family = std::iter::once(os.id.as_str())
        .chain(os.id_like.iter().map(String::as_str))
        .find_map(family_of);
    match family {
        Some(Family::Debian) => Ok(vec![
            Step::new(&["apt-get", "-o", DPKG_LOCK_TIMEOUT, "update"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
            Step::new(&[
                "apt-get",
                "install",
                "-y",
                "-o",
                DPKG_LOCK_TIMEOUT,
                "nfs-common",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive"),
        ]),
        Some(Family::RedHat) => {
            let tool = if has("dnf") { "dnf" } else { "yum" };
            Ok(vec![Step::new(&[tool, "install", "-y", "nfs-utils"])])
        }
        Some(Family::Suse) => Ok(vec![Step::new(&[
            "zypper",
            "--non-interactive",
            "install",
            "nfs-client",
        ])]),
        Some(Family::Alpine) => Ok(vec![Step::new(&["apk", "add", "nfs-utils"])]),
        Some(Family::Arch) => Ok(vec![Step::new(&[
            "pacman",
            "-S",
            "--noconfirm",
            "--needed",
            "nfs-utils",
        ])]),
        None => Err(format!(
            "{name} (ID={}, ID_LIKE={}) is not a distribution the installer knows (Debian, Ubuntu, RHEL, Fedora, SUSE, Alpine, Arch families); install the NFS client (mount.nfs) yourself",
            os.id,
            os.id_like.join(" ")
        )),
    }
}

enum Family {
    Debian,
    RedHat,
    Suse,
    Alpine,
    Arch,
}

fn family_of(id: &str) -> Option<Family> {
    Some(match id {
        "debian" | "ubuntu" | "raspbian" | "linuxmint" | "pop" => Family::Debian,
        "rhel" | "fedora" | "centos" | "rocky" | "almalinux" | "ol" | "amzn" | "azurelinux"
        | "mariner" => Family::RedHat,
        "suse" | "sles" | "opensuse" | "opensuse-leap" | "opensuse-tumbleweed" => Family::Suse,
        "alpine" => Family::Alpine,
        "arch" | "manjaro" => Family::Arch,
        _ => return None,
    })
}

#[cfg(test)]
mod props;
