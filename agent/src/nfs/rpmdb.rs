//! The names of the packages in an rpm database, read from its files without rpm: each
//! installed package is one rpm header blob, and its NAME tag is the package's name (a
//! package that merely requires nfs-utils, or is named `libnfs-utils`, is not nfs-utils).
//!
//! ```text
//!  rpmdb.sqlite (+ -wal) ─► sqlite: table Packages(hnum, blob) ─► header blob ─► NAME
//!  Packages (Berkeley DB), Packages.db (ndb) ─► blobs found by their region tag ─► NAME
//!  blob: il u32, dl u32, il × (tag, type, offset, count) u32, dl bytes of data (big-endian)
//! ```

use super::sqlite::{Db, Value, be32};

/// Tag of the immutable region that starts every header stored in the database.
const TAG_IMMUTABLE: u32 = 63;
/// Tag of the package name.
const TAG_NAME: u32 = 1000;
const TYPE_STRING: u32 = 6;
const TYPE_BIN: u32 = 7;
/// rpm refuses headers with more index entries or data than these (`hdrchk`).
const MAX_ENTRIES: u32 = 0xffff;
const MAX_DATA: u32 = 256 << 20;

/// Names of the packages in the database file `db` (with its `-wal` file's bytes, empty if
/// none). SQLite databases are read as tables; the older formats are searched for headers.
pub fn package_names(db: &[u8], wal: &[u8]) -> Result<Vec<String>, String> {
    if db.starts_with(b"SQLite format 3\0") {
        let db = Db::open(db, wal)?;
        return db
            .rows("Packages")?
            .into_iter()
            .enumerate()
            .filter_map(|(i, row)| match row.get(1) {
                Some(Value::Bytes(blob)) => Some((i, blob.clone())),
                _ => None,
            })
            .map(|(i, blob)| header_name(&blob).map_err(|e| format!("Packages row {}: {e}", i + 1)))
            .collect();
    }
    Ok(scan(db))
}

/// The NAME of one header blob.
pub fn header_name(blob: &[u8]) -> Result<String, String> {
    let (il, dl) = match (be32(blob, 0), be32(blob, 4)) {
        (Some(il), Some(dl)) => (il, dl),
        _ => return Err(format!("header of {} bytes is cut short", blob.len())),
    };
    if il == 0 || il > MAX_ENTRIES || dl > MAX_DATA {
        return Err(format!(
            "header sizes ({il} entries, {dl} data bytes) are out of range"
        ));
    }
    let store = 8 + 16 * il as usize;
    let data = blob.get(store..store + dl as usize).ok_or_else(|| {
        format!(
            "header of {} bytes is shorter than its sizes say",
            blob.len()
        )
    })?;
    (0..il as usize)
        .map(|i| entry(blob, 8 + 16 * i))
        .find(|e| e.map(|(tag, ..)| tag) == Some(TAG_NAME))
        .flatten()
        .ok_or_else(|| "header has no NAME tag".to_string())
        .and_then(|(_, kind, offset)| name_at(data, kind, offset))
}

/// The NUL-terminated string of a STRING entry at `offset` of the data store.
fn name_at(data: &[u8], kind: u32, offset: u32) -> Result<String, String> {
    if kind != TYPE_STRING {
        return Err(format!("header NAME has type {kind}, not STRING"));
    }
    let rest = data
        .get(offset as usize..)
        .ok_or_else(|| format!("header NAME offset {offset} is past its data"))?;
    let end = rest
        .iter()
        .position(|b| *b == 0)
        .ok_or("header NAME has no terminating NUL")?;
    let name = std::str::from_utf8(&rest[..end]).map_err(|_| {
        format!(
            "header NAME {:?} is not UTF-8",
            String::from_utf8_lossy(&rest[..end])
        )
    })?;
    if name.is_empty() {
        return Err("header NAME is empty".into());
    }
    Ok(name.to_string())
}

/// (tag, type, offset) of the index entry at `at`.
fn entry(blob: &[u8], at: usize) -> Option<(u32, u32, u32)> {
    Some((be32(blob, at)?, be32(blob, at + 4)?, be32(blob, at + 8)?))
}

/// Names of the headers found anywhere in `bytes`: a header starts with its immutable region
/// entry (tag 63, BIN, 16 bytes). Berkeley DB may split a big header over pages; then the
/// parts after the first page are not contiguous, and a NAME past them is not found.
pub fn scan(bytes: &[u8]) -> Vec<String> {
    let region = [TAG_IMMUTABLE.to_be_bytes(), TYPE_BIN.to_be_bytes()].concat();
    let mut names = Vec::new();
    let mut at = 8;
    while let Some(found) = bytes
        .get(at..)
        .and_then(|rest| rest.windows(region.len()).position(|w| w == region))
    {
        let start = at + found - 8;
        if let Some(name) = truncated_header_name(&bytes[start..]) {
            names.push(name);
        }
        at += found + 1;
    }
    names
}

/// The NAME of a header whose data store may run past the end of `bytes`.
fn truncated_header_name(bytes: &[u8]) -> Option<String> {
    let il = be32(bytes, 0).filter(|il| (1..=MAX_ENTRIES).contains(il))?;
    let dl = be32(bytes, 4).filter(|dl| *dl <= MAX_DATA)?;
    let store = 8 + 16 * il as usize;
    let data = bytes.get(store..)?;
    let data = &data[..data.len().min(dl as usize)];
    let (_, kind, offset) = (0..il as usize)
        .map_while(|i| entry(bytes, 8 + 16 * i))
        .find(|(tag, ..)| *tag == TAG_NAME)?;
    name_at(data, kind, offset).ok()
}

#[cfg(test)]
mod props;
