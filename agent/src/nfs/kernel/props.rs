//! Property tests of the kernel config and `/proc/filesystems` readers: what the kernel
//! writes reads back, and a name is matched exactly, never as a prefix or suffix.

use proptest::prelude::*;

use super::*;

fn option() -> impl Strategy<Value = String> {
    "CONFIG_[A-Z0-9_]{1,12}"
}

proptest! {
    #[test]
    fn a_kernel_config_reads_back(options in prop::collection::btree_map(option(), 0usize..3, 0..12), asked in option()) {
        let text: String = options
            .iter()
            .map(|(o, v)| match v {
                0 => format!("{o}=y\n"),
                1 => format!("{o}=m\n"),
                _ => format!("# {o} is not set\n"),
            })
            .collect();
        let want = match options.get(&asked) {
            Some(0) => Tristate::BuiltIn,
            Some(1) => Tristate::Module,
            _ => Tristate::No,
        };
        prop_assert_eq!(config_option(&text, &asked), want);
    }

    #[test]
    fn a_filesystem_is_listed_by_its_exact_name(names in prop::collection::vec(("[a-z0-9]{1,8}", any::<bool>()), 0..12), asked in "[a-z0-9]{1,8}") {
        let text: String = names
            .iter()
            .map(|(n, nodev)| format!("{}\t{n}\n", if *nodev { "nodev" } else { "" }))
            .collect();
        prop_assert_eq!(has_filesystem(&text, &asked), names.iter().any(|(n, _)| *n == asked));
    }
}
