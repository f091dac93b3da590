//! Property tests of the rpm database reader: headers written as rpm writes them read back
//! by NAME only (never a required or provided name), any bytes or any damage to a real
//! database give names or an error, never a panic or a loop.

use proptest::prelude::*;

use super::*;

const TAG_PROVIDENAME: u32 = 1047;
const TAG_REQUIRENAME: u32 = 1049;
const TYPE_STRING_ARRAY: u32 = 8;

/// A header blob as rpm stores it: the immutable region entry first, then NAME, then the
/// requires and provides string arrays.
fn header(name: &str, requires: &[String], provides: &[String]) -> Vec<u8> {
    let mut data = vec![0u8; 16];
    let mut entries = vec![(TAG_IMMUTABLE, TYPE_BIN, 0u32, 16u32)];
    let mut push = |tag: u32, kind: u32, values: &[String]| {
        entries.push((tag, kind, data.len() as u32, values.len() as u32));
        for v in values {
            data.extend_from_slice(v.as_bytes());
            data.push(0);
        }
    };
    push(TAG_REQUIRENAME, TYPE_STRING_ARRAY, requires);
    push(TAG_NAME, TYPE_STRING, &[name.to_string()]);
    push(TAG_PROVIDENAME, TYPE_STRING_ARRAY, provides);
    // NB: rpm sorts the index by tag; the data stays where it was written.
    entries.sort();
    let mut blob = Vec::new();
    blob.extend((entries.len() as u32).to_be_bytes());
    blob.extend((data.len() as u32).to_be_bytes());
    for (tag, kind, offset, count) in entries {
        for v in [tag, kind, offset, count] {
            blob.extend(v.to_be_bytes());
        }
    }
    blob.extend(data);
    blob
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof!["(lib)?nfs-utils(-[a-z]{1,6})?", "[a-zA-Z0-9._+-]{1,30}",]
}

/// The real rpm database of the `rocky` fixture (nfs-utils and bash, 512-byte pages).
fn rocky() -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/nfs/hosts/rocky/var/lib/rpm/rpmdb.sqlite"
    );
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

proptest! {
    #[test]
    fn a_header_is_its_name_not_what_it_requires_or_provides(
        n in name(), requires in prop::collection::vec(name(), 0..5), provides in prop::collection::vec(name(), 0..5)
    ) {
        let blob = header(&n, &requires, &provides);
        prop_assert_eq!(header_name(&blob), Ok(n.clone()));
        // The same header found inside other bytes, as in a Berkeley DB file.
        let mut file = vec![0xaa; 37];
        file.extend(&blob);
        file.extend(header("bash", std::slice::from_ref(&n), std::slice::from_ref(&n)));
        prop_assert_eq!(scan(&file), vec![n, "bash".to_string()]);
    }

    #[test]
    fn any_bytes_give_names_or_an_error(bytes in prop::collection::vec(any::<u8>(), 0..2048), wal in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = header_name(&bytes);
        let _ = scan(&bytes);
        let mut sqlite = b"SQLite format 3\0".to_vec();
        sqlite.extend(&bytes);
        if let Err(e) = package_names(&sqlite, &wal) {
            prop_assert!(!e.is_empty());
        }
    }

    #[test]
    fn a_damaged_real_database_gives_names_or_an_error(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut db = rocky();
        for (at, byte) in flips {
            let i = at.index(db.len());
            db[i] = byte;
        }
        if truncate {
            db.truncate(cut.index(db.len()));
        }
        match package_names(&db, &[]) {
            Ok(names) => prop_assert!(names.len() <= 64, "{:?}", names),
            Err(e) => prop_assert!(!e.is_empty()),
        }
    }

    #[test]
    fn a_damaged_header_gives_its_name_or_an_error(
        n in name(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)
    ) {
        let mut blob = header(&n, &["nfs-utils".to_string()], &[]);
        for (at, byte) in flips {
            let i = at.index(blob.len());
            blob[i] = byte;
        }
        if let Err(e) = header_name(&blob) {
            prop_assert!(e.starts_with("header"), "{}", e);
        }
    }
}
