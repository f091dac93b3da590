//! IP networks in CIDR notation (`10.244.0.0/16`), as the Node, the CNI config and flannel's
//! `subnet.env` write them: parse, print, and tell whether two overlap.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The address as written (host bits may be set, as in flannel's `10.244.1.1/24`).
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} is not in CIDR notation (address/prefix)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?}: {addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{text:?}: the prefix must be 0..={max}"))?;
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// Whether the two networks share an address (for CIDRs: one contains the other).
    pub fn overlaps(&self, other: &Cidr) -> bool {
        let prefix = self.prefix.min(other.prefix);
        let ((a, width), (b, w)) = (bits(self.addr), bits(other.addr));
        if width != w {
            return false;
        }
        let shift = u32::from(width - prefix);
        shift >= 128 || (a >> shift) == (b >> shift)
    }
}

/// The address as a number and its width in bits.
fn bits(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().expect("valid CIDR")
    }

    #[test]
    fn nested_networks_overlap_and_disjoint_ones_do_not() {
        assert!(cidr("10.244.0.0/16").overlaps(&cidr("10.244.3.0/24")));
        assert!(cidr("10.244.3.0/24").overlaps(&cidr("10.244.0.0/16")));
        assert!(cidr("10.244.1.1/24").overlaps(&cidr("10.244.1.0/24")));
        assert!(!cidr("10.244.0.0/16").overlaps(&cidr("192.168.0.0/24")));
        assert!(!cidr("10.244.0.0/16").overlaps(&cidr("fd00::/64")));
        assert!(cidr("0.0.0.0/0").overlaps(&cidr("8.8.8.8/32")));
        assert!(cidr("fd00::/48").overlaps(&cidr("fd00:0:0:1::/64")));
    }

    #[test]
    fn bad_cidrs_say_what_is_wrong() {
        assert!(
            "10.244.0.0"
                .parse::<Cidr>()
                .expect_err("invalid")
                .contains("CIDR")
        );
        assert!(
            "10.244.0.0/33"
                .parse::<Cidr>()
                .expect_err("invalid")
                .contains("0..=32")
        );
        assert!(
            "usePodCidr/1"
                .parse::<Cidr>()
                .expect_err("invalid")
                .contains("not an IP")
        );
        assert_eq!(cidr(" 10.1.0.0/16 ").to_string(), "10.1.0.0/16");
    }
}
