//! A read-only reader of one table of an SQLite 3 file (the rpm database `rpmdb.sqlite`),
//! enough to list its rows without linking SQLite: the file's bytes (and those of its
//! write-ahead log, if any) in, each row's column values out.
//!
//! ```text
//!  page 1: sqlite_master ─► rootpage of "Packages" ─► table b-tree (interior 0x05, leaf 0x0d)
//!  leaf cell: payload size, rowid, local payload [+ overflow page chain] ─► record ─► [Value]
//!  <db>-wal: committed frames replace the pages they carry
//! ```
//!
//! Every length and page number read from the file is checked, and every page is visited at
//! most once, so a corrupt or hostile file gives an error, never a panic or a loop.

use std::collections::{HashMap, HashSet};

const MAGIC: &[u8; 16] = b"SQLite format 3\0";
const WAL_HEADER: usize = 32;
const FRAME_HEADER: usize = 24;

/// One column value of a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// NULL (also an `INTEGER PRIMARY KEY`, which lives in the rowid).
    Null,
    /// An integer.
    Int(i64),
    /// A float, as its bits (not needed here beyond skipping it).
    Float(u64),
    /// A BLOB or TEXT, as bytes.
    Bytes(Vec<u8>),
}

/// An SQLite database file, with the committed pages of its write-ahead log laid over it.
pub struct Db<'a> {
    file: &'a [u8],
    page_size: usize,
    usable: usize,
    wal: HashMap<u32, &'a [u8]>,
}

impl<'a> Db<'a> {
    /// Open the bytes of a database file and of its `-wal` file (empty if there is none).
    pub fn open(file: &'a [u8], wal: &'a [u8]) -> Result<Self, String> {
        if file.len() < 100 || &file[..16] != MAGIC {
            return Err("not an SQLite 3 database (no \"SQLite format 3\" header)".into());
        }
        let page_size = match u16::from_be_bytes([file[16], file[17]]) {
            1 => 65_536,
            n if n >= 512 && n.is_power_of_two() => usize::from(n),
            n => return Err(format!("SQLite page size {n} is not valid")),
        };
        let usable = page_size - usize::from(file[20]);
        if usable < 480 {
            return Err(format!("SQLite usable page size {usable} is below 480"));
        }
        let wal = wal_pages(wal, page_size);
        Ok(Db {
            file,
            page_size,
            usable,
            wal,
        })
    }

    fn page(&self, number: u32) -> Result<&'a [u8], String> {
        if let Some(page) = self.wal.get(&number) {
            return Ok(page);
        }
        let start = (number as usize)
            .checked_sub(1)
            .map(|n| n.saturating_mul(self.page_size))
            .ok_or("page number 0")?;
        self.file
            .get(start..start.saturating_add(self.page_size))
            .ok_or_else(|| format!("page {number} is past the end of the file"))
    }

    /// Every row of the table `name`, each as its column values.
    pub fn rows(&self, name: &str) -> Result<Vec<Vec<Value>>, String> {
        let root = self
            .payloads(1)?
            .iter()
            .map(|p| record(p))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .find_map(|row| match row.as_slice() {
                [Value::Bytes(kind), Value::Bytes(n), _, Value::Int(root), ..]
                    if kind == b"table" && n == name.as_bytes() =>
                {
                    u32::try_from(*root).ok()
                }
                _ => None,
            })
            .ok_or_else(|| format!("no table {name:?} in the SQLite schema"))?;
        self.payloads(root)?.iter().map(|p| record(p)).collect()
    }

    /// The payload of every cell of the table b-tree rooted at `root`, in key order.
    fn payloads(&self, root: u32) -> Result<Vec<Vec<u8>>, String> {
        let mut out = Vec::new();
        // NB: a sound table's payloads fit in the database; cells that share one overflow
        // chain over and over must not grow memory without bound.
        let mut budget = self.file.len() + self.wal.len() * self.page_size;
        let mut seen = HashSet::new();
        let mut todo = vec![root];
        while let Some(number) = todo.pop() {
            if !seen.insert(number) {
                return Err(format!("page {number} is reached twice: the b-tree loops"));
            }
            let page = self.page(number)?;
            let at = if number == 1 { 100 } else { 0 };
            let kind = page[at];
            let header = match kind {
                0x05 => 12,
                0x0d => 8,
                _ => {
                    return Err(format!(
                        "page {number} is not a table b-tree page ({kind:#x})"
                    ));
                }
            };
            let cells = usize::from(u16::from_be_bytes([page[at + 3], page[at + 4]]));
            let mut children = Vec::new();
            for i in 0..cells {
                let ptr = at + header + 2 * i;
                let cell = page
                    .get(ptr..ptr + 2)
                    .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                    .filter(|c| *c < self.usable)
                    .ok_or_else(|| format!("page {number}: cell {i} is outside the page"))?;
                if kind == 0x05 {
                    children.push(be32(page, cell).ok_or("cut interior cell")?);
                } else {
                    let payload = self.payload(page, cell, number)?;
                    budget = budget.checked_sub(payload.len()).ok_or_else(|| {
                        format!("page {number}: the cells hold more bytes than the database")
                    })?;
                    out.push(payload);
                }
            }
            if kind == 0x05 {
                children.push(be32(page, at + 8).ok_or("cut page header")?);
                // NB: a stack: push in reverse so the leftmost child is read first.
                todo.extend(children.into_iter().rev());
            }
        }
        Ok(out)
    }

    /// The whole payload of the leaf cell at `cell` of `page`, following its overflow chain.
    fn payload(&self, page: &[u8], cell: usize, number: u32) -> Result<Vec<u8>, String> {
        let cut = || format!("page {number}: cell at {cell} is cut short");
        let (size, n) = varint(page.get(cell..).ok_or_else(cut)?).ok_or_else(cut)?;
        let (_rowid, m) = varint(page.get(cell + n..).ok_or_else(cut)?).ok_or_else(cut)?;
        let start = cell + n + m;
        let size = usize::try_from(size)
            .ok()
            .filter(|s| *s <= self.file.len() + self.wal.len() * self.page_size)
            .ok_or_else(|| {
                format!("page {number}: payload of {size} bytes is larger than the database")
            })?;
        let u = self.usable;
        let max_local = u - 35;
        let local = if size <= max_local {
            size
        } else {
            let min_local = (u - 12) * 32 / 255 - 23;
            let k = min_local + (size - min_local) % (u - 4);
            if k <= max_local { k } else { min_local }
        };
        let mut out = page.get(start..start + local).ok_or_else(cut)?.to_vec();
        let mut next = if local < size {
            be32(page, start + local).ok_or_else(cut)?
        } else {
            0
        };
        let mut seen = HashSet::new();
        while out.len() < size {
            if next == 0 || !seen.insert(next) {
                return Err(format!("page {number}: overflow chain ends early or loops"));
            }
            let overflow = self.page(next)?;
            let take = (size - out.len()).min(u - 4);
            out.extend_from_slice(&overflow[4..4 + take]);
            next = be32(overflow, 0).ok_or_else(cut)?;
        }
        Ok(out)
    }
}

/// The pages of the committed transactions of a write-ahead log (a torn or stale tail is
/// ignored, as SQLite does), newest version of each page.
fn wal_pages(wal: &[u8], page_size: usize) -> HashMap<u32, &[u8]> {
    let mut pages = HashMap::new();
    let valid = wal.len() >= WAL_HEADER
        && matches!(be32(wal, 0), Some(0x377f_0682 | 0x377f_0683))
        && be32(wal, 8) == Some(page_size as u32);
    if !valid {
        return pages;
    }
    let salt = &wal[16..24];
    let mut pending = Vec::new();
    let mut at = WAL_HEADER;
    while let Some(frame) = wal.get(at..at + FRAME_HEADER + page_size) {
        if &frame[8..16] != salt {
            break;
        }
        let number = be32(frame, 0).unwrap_or(0);
        pending.push((number, &frame[FRAME_HEADER..]));
        if be32(frame, 4).unwrap_or(0) != 0 {
            pages.extend(pending.drain(..));
        }
        at += FRAME_HEADER + page_size;
    }
    pages
}

/// The column values of a record (header of serial types, then the values).
pub fn record(payload: &[u8]) -> Result<Vec<Value>, String> {
    let cut = || format!("record of {} bytes is cut short", payload.len());
    let (header_len, n) = varint(payload).ok_or_else(cut)?;
    let header_len = usize::try_from(header_len)
        .ok()
        .filter(|h| *h <= payload.len())
        .ok_or_else(cut)?;
    let mut at = n;
    let mut body = header_len;
    let mut values = Vec::new();
    while at < header_len {
        let (kind, n) = varint(&payload[at..header_len]).ok_or_else(cut)?;
        at += n;
        let len = match kind {
            0 | 8 | 9 => 0,
            1..=4 => kind as usize,
            5 => 6,
            6 | 7 => 8,
            10 | 11 => return Err(format!("record has reserved serial type {kind}")),
            _ => usize::try_from((kind - 12) / 2).map_err(|_| cut())?,
        };
        let bytes = payload
            .get(body..body.saturating_add(len))
            .ok_or_else(cut)?;
        body += len;
        values.push(match kind {
            0 => Value::Null,
            8 => Value::Int(0),
            9 => Value::Int(1),
            1..=6 => {
                let sign = if bytes[0] & 0x80 != 0 { -1i64 } else { 0 };
                Value::Int(bytes.iter().fold(sign, |v, b| (v << 8) | i64::from(*b)))
            }
            7 => Value::Float(bytes.iter().fold(0, |v, b| (v << 8) | u64::from(*b))),
            _ => Value::Bytes(bytes.to_vec()),
        });
    }
    Ok(values)
}

/// An SQLite varint (1 to 9 bytes, big-endian, 7 bits a byte and 8 in the ninth) and its
/// length.
pub fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().take(9).enumerate() {
        if i == 8 {
            return Some(((value << 8) | u64::from(*b), 9));
        }
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The big-endian `u32` at `at`, if the bytes reach that far.
pub fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}
