//! Property tests of the CIDR parser: any text parses or is refused quoting it, what
//! `Display` writes reads back, and overlap is symmetric and reflexive.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

fn cidr() -> impl Strategy<Value = Cidr> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(a, prefix)| Cidr {
            addr: IpAddr::V4(Ipv4Addr::from(a)),
            prefix
        }),
        (any::<u128>(), 0u8..=128).prop_map(|(a, prefix)| Cidr {
            addr: IpAddr::V6(Ipv6Addr::from(a)),
            prefix
        }),
    ]
}

proptest! {
    #[test]
    fn any_text_parses_or_is_refused_quoting_it(text in "[0-9a-f.:/ ]{0,24}|\\PC{0,24}") {
        if let Err(e) = text.parse::<Cidr>() {
            prop_assert!(e.contains(&format!("{:?}", text.trim())), "{}", e);
        }
    }

    #[test]
    fn what_display_writes_reads_back(c in cidr()) {
        prop_assert_eq!(c.to_string().parse::<Cidr>(), Ok(c));
    }

    #[test]
    fn overlap_is_symmetric_and_reflexive(a in cidr(), b in cidr()) {
        prop_assert!(a.overlaps(&a));
        prop_assert_eq!(a.overlaps(&b), b.overlaps(&a));
    }
}
