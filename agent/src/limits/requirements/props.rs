//! Property tests of the pod annotations' values (`volpool.io/require-*`): any value is read
//! or refused quoting it, and what a person writes reads back.

use proptest::prelude::*;

use super::*;

const RESOURCES: [Resource; 4] = [
    Resource::Memlock,
    Resource::Nofile,
    Resource::Nproc,
    Resource::MaxMapCount,
];

proptest! {
    #[test]
    fn any_value_is_read_or_refused_quoting_it(value in "\\PC{0,20}", r in 0usize..4) {
        if let Err(e) = parse_need(RESOURCES[r], &value) {
            prop_assert!(e.contains(&format!("{:?}", value.trim())), "{}", e);
        }
    }

    #[test]
    fn numbers_and_unlimited_read_back(n in any::<u64>(), r in 0usize..4, pad in " {0,2}") {
        prop_assert_eq!(parse_need(RESOURCES[r], &format!("{pad}{n}{pad}")), Ok(Some(n)));
        let unlimited = parse_need(RESOURCES[r], "Unlimited");
        prop_assert_eq!(unlimited.is_ok(), RESOURCES[r] != Resource::MaxMapCount);
    }
}
