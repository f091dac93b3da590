//! Property tests of the directory-name check every export operation runs first: a name is
//! accepted exactly when it is one plain path component, and a refusal quotes it.

use proptest::prelude::*;

use super::*;

proptest! {
    #[test]
    fn only_one_plain_component_is_accepted(name in "[a-z0-9./-]{0,12}|\\PC{0,12}|pv-[0-9a-f]{8}") {
        let plain = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0']);
        match check_name(&name) {
            Ok(()) => prop_assert!(plain, "{:?} accepted", name),
            Err(e) => {
                prop_assert!(!plain, "{:?} refused", name);
                prop_assert!(e.message.contains(&format!("{name:?}")), "{}", e.message);
            }
        }
    }
}
