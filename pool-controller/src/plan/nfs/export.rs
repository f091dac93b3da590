//! The export as the plan sees it: what the executor read before planning ([`ExportView`]),
//! and the names of the directories (the work the plan asks for is `change::ExportOp`).
//!
//! ```text
//!  executor ──► ExportView {dirs, space, unreachable, denied} ──► plan
//! ```

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::jiff::Timestamp;
use volpool_api::ExportSpace;

/// Prefix of every directory the controller carves.
pub const DIR_PREFIX: &str = "pv-";
/// Prefix of archived directories.
pub const ARCHIVE_PREFIX: &str = "archived-";

/// What the executor read from one pool's export before planning.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportView {
    /// `Some(message)` when the export could not be read: nothing is created or deleted.
    pub unreachable: Option<String>,
    /// `pv-*` directories under the root: name → what is known of it.
    pub dirs: BTreeMap<String, SeenDir>,
    /// FSSTAT (or statvfs) of the export.
    pub space: Option<ExportSpace>,
    /// The uid the controller's directories should have (`None`: unknown, not checked).
    pub expected_uid: Option<u32>,
    /// The last "not permitted" answer of a write, kept until a write succeeds.
    pub denied: Option<String>,
}

/// A `pv-*` directory of the export.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeenDir {
    /// Owner's uid.
    pub uid: u32,
    /// Whether it holds nothing; read only for directories without a PV.
    pub empty: Option<bool>,
}

/// The directory a PV of volpool's owns, if it is an NFS PV.
pub fn pv_dir(pv: &PersistentVolume) -> Option<String> {
    let path = &pv.spec.as_ref()?.nfs.as_ref()?.path;
    Some(path.rsplit('/').next()?.to_string())
}

/// Whether a name is one the controller carves (`pv-` and 8 lowercase hex digits).
pub fn is_pool_dir(name: &str) -> bool {
    name.strip_prefix(DIR_PREFIX).is_some_and(|hex| {
        hex.len() == 8
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A new directory name: `pv-` and 8 hex digits from a hash of the pool, the time and a
/// counter, never one already taken. Deterministic for the same inputs.
pub fn new_dir(pool: &str, now: Timestamp, taken: &BTreeSet<String>) -> String {
    let mut seed = now.as_nanosecond() as u64;
    for b in pool.bytes() {
        seed = (seed ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    loop {
        // splitmix64
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        let dir = format!("{DIR_PREFIX}{:08x}", z as u32);
        if !taken.contains(&dir) {
            return dir;
        }
    }
}

/// `archived-<dir>-<UTC timestamp>`.
pub fn archive_name(dir: &str, now: Timestamp) -> String {
    format!("{ARCHIVE_PREFIX}{dir}-{}", now.strftime("%Y%m%dT%H%M%SZ"))
}
