//! Property tests of the package database and config parsers: databases written as dpkg,
//! apk and pacman write them answer for exactly the package asked (never a lookalike), and
//! ini files read back the value set last in the section asked.

use proptest::prelude::*;

use super::*;

/// Package names that look like the client's and are not it.
fn package() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "nfs-common",
            "nfs-common-doc",
            "libnfs-common",
            "nfs-utils",
            "nfs-utils-extra",
            "libnfs-utils",
            "nfs-utils-coreos",
            "nfs-utils-2fa",
            "nfs",
            "bash",
        ])
        .prop_map(String::from),
        "[a-z0-9][a-z0-9+.-]{0,20}",
    ]
}

fn version() -> impl Strategy<Value = String> {
    "[0-9]{1,2}(:[0-9])?\\.[0-9]{1,2}(-[0-9a-z.]{1,5})?"
}

fn status() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "install ok installed",
        "deinstall ok config-files",
        "install ok half-installed",
    ])
    .prop_map(String::from)
}

proptest! {
    #[test]
    fn dpkg_answers_for_exactly_the_package_asked(
        db in prop::collection::vec((package(), status(), version()), 0..12),
        asked in package(),
    ) {
        let text: String = db
            .iter()
            .map(|(p, s, v)| format!("Package: {p}\nStatus: {s}\nPriority: optional\nVersion: {v}\nDescription: {p}\n requires nfs-common\n\n"))
            .collect();
        let want = db.iter().find(|(p, ..)| *p == asked).map(|(_, s, v)| (s.clone(), v.clone()));
        prop_assert_eq!(dpkg_status(&text, &asked), want);
    }

    #[test]
    fn apk_answers_for_exactly_the_package_asked(db in prop::collection::vec((package(), version()), 0..12), asked in package()) {
        let text: String = db
            .iter()
            .map(|(p, v)| format!("C:Q1abc=\nP:{p}\nV:{v}\nD:so:libc.musl-x86_64.so.1 nfs-utils\n\n"))
            .collect();
        prop_assert_eq!(apk_has(&text, &asked), db.iter().any(|(p, _)| *p == asked));
    }

    #[test]
    fn pacman_answers_for_exactly_the_package_asked(db in prop::collection::vec((package(), version()), 0..12), asked in package()) {
        let entries: Vec<String> = db.iter().map(|(p, v)| format!("{p}-{}-1", v.replace('-', "."))).collect();
        let found = pacman_entry(&entries, &asked);
        prop_assert_eq!(found.is_some(), db.iter().any(|(p, _)| *p == asked), "{:?}", found);
    }

    #[test]
    fn any_text_never_panics(text in "(\\PC{0,20}\n{0,2}){0,10}", key in "\\PC{0,8}") {
        let _ = dpkg_status(&text, &key);
        let _ = apk_has(&text, &key);
        let _ = ini_value(&text, &key, &key);
    }

    #[test]
    fn ini_values_read_back_the_last_setting(
        settings in prop::collection::vec((0usize..3, "[A-Za-z]{1,8}", "[a-z0-9.]{0,12}"), 0..12),
        asked in 0usize..3,
        key in "[A-Za-z]{1,8}",
    ) {
        let sections = ["General", "Mapping", "NFSMount_Global_Options"];
        let text: String = settings
            .iter()
            .map(|(s, k, v)| format!("[ {} ]\n# {k} = commented out\n{k} = {v} ; why\n", sections[*s]))
            .collect();
        let want = settings
            .iter()
            .rev()
            .find(|(s, k, _)| *s == asked && k.eq_ignore_ascii_case(&key))
            .map(|(_, _, v)| v.clone());
        prop_assert_eq!(ini_value(&text, &sections[asked].to_ascii_lowercase(), &key), want);
    }
}
