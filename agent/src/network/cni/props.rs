//! Property tests of the CNI config and kubelet kubeconfig readers: any file is read or
//! skipped with a reason, and host-local ranges written in either form read back.

use std::path::Path;

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::host::RealHost;
use crate::network::kubeconfig;

/// A host root with no files: flannel's `subnet.env` and CA files are absent.
fn empty_host() -> RealHost {
    RealHost::new("/nonexistent/volpool-props")
}

fn cidr() -> impl Strategy<Value = Cidr> {
    (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, prefix)| Cidr {
        addr: std::net::IpAddr::from(a),
        prefix,
    })
}

proptest! {
    #[test]
    fn any_text_is_read_or_skipped_with_a_reason(text in "\\PC{0,60}|\\{\"(plugins|type|ipam|name)\": ?(\\[\\{\"type\": ?\"[a-z-]{0,8}\"\\}\\]|\"[a-z]{0,6}\"|[0-9]|null)\\}") {
        if let Err(e) = parse(&empty_host(), Path::new("/etc/cni/net.d/10-x.conf"), &text) {
            prop_assert!(e.ends_with("skipped"), "{}", e);
        }
        if let Err(e) = kubeconfig::parse(&empty_host(), "/etc/kubernetes/kubelet.conf", &text) {
            prop_assert!(!e.is_empty());
        }
    }

    #[test]
    fn host_local_ranges_read_back(ranges in prop::collection::vec(cidr(), 0..4), single in prop::option::of(cidr()), pod_cidr in any::<bool>(), plugin in "[a-z]{1,10}") {
        let mut listed: Vec<serde_json::Value> = ranges.iter().map(|c| json!([{"subnet": c.to_string()}])).collect();
        if pod_cidr {
            listed.push(json!([{"subnet": "usePodCidr"}]));
        }
        let mut ipam = json!({"type": "host-local", "ranges": listed});
        if let Some(c) = single {
            ipam["subnet"] = json!(c.to_string());
        }
        let conf = json!({"cniVersion": "0.4.0", "name": "net", "plugins": [{"type": plugin, "ipam": ipam}, {"type": "portmap"}]});
        let got = parse(&empty_host(), Path::new("/etc/cni/net.d/10-net.conflist"), &conf.to_string())
            .map_err(TestCaseError::fail)?;
        let mut want = ranges.clone();
        want.extend(single);
        prop_assert_eq!(got.kind, CniKind::HostLocal { plugin, ranges: want, use_pod_cidr: pod_cidr });
    }
}
