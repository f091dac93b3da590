//! Property tests of the mountinfo parser: arbitrary bytes (newlines, invalid UTF-8, cut
//! lines) never panic and a refusal names the line and quotes it; a table written the way the
//! kernel writes it (octal escapes of space, tab, newline and backslash) reads back exactly.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use proptest::prelude::*;

use super::*;

/// One mount as the kernel knows it: raw bytes for paths.
#[derive(Clone, Debug)]
struct Raw {
    major: u32,
    minor: u32,
    root: Vec<u8>,
    point: Vec<u8>,
    fs_type: String,
    source: Vec<u8>,
}

/// The kernel's `mangle`: octal escapes for the bytes that would break the format.
fn escape(bytes: &[u8]) -> Vec<u8> {
    bytes
        .iter()
        .flat_map(|b| match b {
            b' ' | b'\t' | b'\n' | b'\\' => format!("\\{b:03o}").into_bytes(),
            _ => vec![*b],
        })
        .collect()
}

fn line(id: usize, m: &Raw) -> Vec<u8> {
    let mut out = format!("{} 1 {}:{} ", id + 20, m.major, m.minor).into_bytes();
    out.extend(escape(&m.root));
    out.push(b' ');
    out.extend(escape(&m.point));
    out.extend_from_slice(b" rw,relatime shared:1 - ");
    out.extend(escape(m.fs_type.as_bytes()));
    out.push(b' ');
    out.extend(escape(&m.source));
    out.extend_from_slice(b" rw\n");
    out
}

/// An absolute path as the kernel prints one (`d_path`): `/` and components of bytes without
/// NUL or `/`, none of them `.` or `..`, no empty component and no trailing `/`; biased to
/// what needs escaping and to non-UTF-8.
fn path() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => any::<u8>().prop_filter("NUL or /", |b| *b != 0 && *b != b'/'),
        1 => prop::sample::select(b" \t\n\\".to_vec()),
        1 => 0x80u8..=0xff,
    ];
    let component =
        prop::collection::vec(byte, 1..12).prop_filter(". or ..", |c| c != b"." && c != b"..");
    prop::collection::vec(component, 1..4).prop_map(|components| {
        components
            .iter()
            .flat_map(|c| [&b"/"[..], c].concat())
            .collect()
    })
}

fn mount() -> impl Strategy<Value = Raw> {
    (
        any::<u32>(),
        any::<u32>(),
        path(),
        path(),
        "[a-z0-9._]{1,12}",
        path(),
    )
        .prop_map(|(major, minor, root, point, fs_type, source)| Raw {
            major,
            minor,
            root,
            point,
            fs_type,
            source,
        })
}

proptest! {
    #[test]
    fn arbitrary_bytes_parse_or_name_the_line(bytes in prop::collection::vec(
        prop_oneof![any::<u8>(), prop::sample::select(b" -:0123456789\n\\".to_vec())], 0..300)
    ) {
        if let Err((n, reason)) = parse(&bytes) {
            let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
            prop_assert!(n >= 1 && n <= lines.len(), "line {} of {}", n, lines.len());
            let text = String::from_utf8_lossy(lines[n - 1]);
            if text.chars().count() <= QUOTE_MAX {
                prop_assert!(reason.contains(&format!("{text:?}")), "{}", reason);
            }
        }
    }

    #[test]
    fn a_table_written_by_the_kernel_reads_back(mounts in prop::collection::vec(mount(), 1..12)) {
        let text: Vec<u8> = mounts.iter().enumerate().flat_map(|(i, m)| line(i, m)).collect();
        let table = parse(&text).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        // NB: stacked mounts at one point: the last one wins.
        for (i, m) in mounts.iter().enumerate() {
            let later = mounts[i + 1..].iter().any(|n| n.point == m.point);
            let got = table.at(Path::new(OsStr::from_bytes(&m.point)));
            prop_assert!(got.is_some(), "{:?} not found", m.point);
            if later { continue; }
            let got = got.expect("checked");
            prop_assert_eq!(got.mount_point.as_os_str().as_bytes(), &m.point[..]);
            prop_assert_eq!((got.major, got.minor), (m.major, m.minor));
            prop_assert_eq!(&got.root, &String::from_utf8_lossy(&m.root));
            prop_assert_eq!(&got.fs_type, &m.fs_type);
            prop_assert_eq!(&got.source, &String::from_utf8_lossy(&m.source));
        }
    }

    #[test]
    fn a_cut_table_keeps_its_whole_lines(mounts in prop::collection::vec(mount(), 1..6), cut in any::<prop::sample::Index>()) {
        let text: Vec<u8> = mounts.iter().enumerate().flat_map(|(i, m)| line(i, m)).collect();
        let cut = cut.index(text.len());
        let whole = text[..cut].iter().filter(|b| **b == b'\n').count();
        match parse(&text[..cut]) {
            Ok(table) => {
                for m in &mounts[..whole] {
                    prop_assert!(table.at(Path::new(OsStr::from_bytes(&m.point))).is_some());
                }
            }
            Err((n, _)) => prop_assert_eq!(n, whole + 1, "only the cut line may be refused"),
        }
    }

    #[test]
    fn unescape_inverts_the_kernels_escape(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        prop_assert_eq!(unescape(&escape(&bytes)), bytes);
    }
}
