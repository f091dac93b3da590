//! Property tests of what the agent reads from an NFS server's export list: an export's path
//! covers exactly itself and what is below it, and a client list lets in exactly the addresses
//! its CIDR blocks, addresses and `*` name.

use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::*;

fn dir() -> impl Strategy<Value = String> {
    "(/[a-z0-9._ -]{1,8}){0,4}"
}

proptest! {
    #[test]
    fn an_export_covers_itself_and_below_it_only(dir in dir(), sub in "[a-z0-9._ -]{1,8}", slash in any::<bool>()) {
        let end = if slash { "/" } else { "" };
        let (itself, below, sibling) = (format!("{dir}{end}"), format!("{dir}/{sub}"), format!("{dir}{sub}"));
        prop_assert!(covers(&dir, &itself));
        prop_assert!(covers(&dir, &below));
        // A sibling that shares the prefix (`/export2` beside `/export`) is not below it.
        prop_assert_eq!(covers(&dir, &sibling), dir.is_empty());
    }

    #[test]
    fn a_client_list_lets_in_exactly_its_networks(net in any::<u32>(), bits in 0u32..=32, client in any::<u32>(), junk in "\\PC{0,12}") {
        let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
        let inside = net & mask == client & mask;
        let ip = IpAddr::V4(Ipv4Addr::from(client));
        let block = format!("{}/{bits}", Ipv4Addr::from(net));
        prop_assert_eq!(exported_to(std::slice::from_ref(&block), ip), inside, "{}", block);
        prop_assert!(exported_to(&[junk.clone(), "*".into()], ip));
        prop_assert!(exported_to(&[junk, ip.to_string()], ip));
        prop_assert!(exported_to(&[], ip));
    }
}
