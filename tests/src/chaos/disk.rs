//! What an operator does to a node's disks, done to a fake node's loop-backed ext4 disks: read
//! which filesystem is mounted at each entry, unmount and mount again, replace (a new
//! filesystem on the same device), grow offline (unmount, grow the image, `resize2fs`, mount),
//! and write or read a small file on the volume as the claim's owner would.
//!
//! ```text
//!  identities(node) ──► findmnt --mountpoint <dir>/dN ──► blkid -p (superblock) ──► uuid:<…>
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};

use crate::disks::DiskNode;

/// Quote `s` for `sh`.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The volume identity of the filesystem mounted exactly at each of `paths` on `node`, as the
/// agent names it (`uuid:<fs uuid>`); `None` where nothing is mounted.
pub fn identities(
    node: &DiskNode,
    paths: &[&Path],
) -> anyhow::Result<BTreeMap<String, Option<String>>> {
    let mut script = String::new();
    for path in paths {
        let p = quote(&path.to_string_lossy());
        script += &format!(
            "dev=$(findmnt -n -o SOURCE --mountpoint {p} || true); \
             if [ -n \"$dev\" ]; then echo \"uuid:$(blkid -p -s UUID -o value \"$dev\")\"; \
             else echo -; fi\n"
        );
    }
    let out = node.sh(&script)?;
    let lines: Vec<&str> = out.lines().collect();
    if lines.len() != paths.len() {
        bail!("unexpected identities from {}: {out:?}", node.name);
    }
    Ok(paths
        .iter()
        .zip(lines)
        .map(|(p, l)| {
            let id = (l != "-").then(|| l.to_string());
            (p.to_string_lossy().into_owned(), id)
        })
        .collect())
}

/// Unmount `path` on `node`: the loop device that was mounted there.
pub fn unmount(node: &DiskNode, path: &Path) -> anyhow::Result<String> {
    let p = quote(&path.to_string_lossy());
    let dev = node.sh(&format!("findmnt -n -o SOURCE --mountpoint {p}"))?;
    let dev = dev.trim().to_string();
    if !dev.starts_with("/dev/loop") {
        bail!("{} on {}: mounted from {dev:?}", path.display(), node.name);
    }
    node.sh(&format!("umount {p}"))?;
    Ok(dev)
}

/// Mount `device` at `path` on `node`.
pub fn mount(node: &DiskNode, device: &str, path: &Path) -> anyhow::Result<()> {
    node.sh(&format!(
        "mount {} {}",
        quote(device),
        quote(&path.to_string_lossy())
    ))
    .map(drop)
}

/// Replace the disk at `path`: a new ext4 filesystem on its device, mounted again.
pub fn replace(node: &DiskNode, path: &Path) -> anyhow::Result<()> {
    let dev = unmount(node, path)?;
    let made = node.sh(&format!("mkfs.ext4 -q -F {}", quote(&dev)));
    mount(node, &dev, path)?;
    made.map(drop)
}

/// Grow the disk at `path` by `mib` MiB offline: unmount, grow its image and loop device,
/// check and resize the filesystem, mount.
pub fn grow(node: &DiskNode, path: &Path, mib: u64) -> anyhow::Result<()> {
    let dev = unmount(node, path)?;
    let d = quote(&dev);
    let grown = node.sh(&format!(
        "img=$(losetup -n -O BACK-FILE {d}); truncate -s +{mib}M \"$img\"; losetup -c {d}; \
         e2fsck -f -p {d} >/dev/null; resize2fs {d} 2>&1"
    ));
    mount(node, &dev, path)?;
    grown.map(drop).context("resize2fs")
}

/// Write `content` to `file` inside the volume at `path` on `node`, only when the filesystem
/// mounted there is `identity` (never into the directory under an unmounted disk). Whether it
/// was written.
pub fn write_mark(
    node: &DiskNode,
    path: &Path,
    identity: &str,
    file: &str,
    content: &str,
) -> anyhow::Result<bool> {
    let p = quote(&path.to_string_lossy());
    let out = node.sh(&format!(
        "dev=$(findmnt -n -o SOURCE --mountpoint {p} || true); [ -n \"$dev\" ] || exit 0; \
         [ \"uuid:$(blkid -p -s UUID -o value \"$dev\")\" = {} ] || exit 0; \
         printf %s {} >{p}/{file}.tmp && mv {p}/{file}.tmp {p}/{file} && sync && echo written",
        quote(identity),
        quote(content)
    ))?;
    Ok(out.trim() == "written")
}

/// The content of `file` in the volume at `path` on `node` when `identity` is mounted there:
/// `Ok(None)` when another disk (or none) is there, `Ok(Some(None))` when the file is missing.
pub fn read_mark(
    node: &DiskNode,
    path: &Path,
    identity: &str,
    file: &str,
) -> anyhow::Result<Option<Option<String>>> {
    let p = quote(&path.to_string_lossy());
    let out = node.sh(&format!(
        "dev=$(findmnt -n -o SOURCE --mountpoint {p} || true); [ -n \"$dev\" ] || exit 0; \
         [ \"uuid:$(blkid -p -s UUID -o value \"$dev\")\" = {} ] || exit 0; \
         if [ -e {p}/{file} ]; then printf 'file:'; cat {p}/{file}; else printf missing; fi",
        quote(identity)
    ))?;
    Ok(match out.as_str() {
        "" => None,
        "missing" => Some(None),
        text => Some(Some(text.strip_prefix("file:").unwrap_or(text).to_string())),
    })
}
