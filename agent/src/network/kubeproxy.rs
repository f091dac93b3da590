//! kube-proxy's rules for the `kubernetes` Service, read and never changed: the nat table as
//! `iptables-save` prints it (run in the host's root and network namespace), or the IPVS
//! table in `/proc/net/ip_vs`.
//!
//! ```text
//!  iptables-save -t nat ─► KUBE-SERVICES -d <ip>/32 --dport 443 ─► KUBE-SVC-* ─► KUBE-SEP-* DNAT ─┐
//!  /proc/net/ip_vs ─► TCP <ip hex>:01BB ─► real servers ────────────────────────────────────────┴─► Rules
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::host::commands;

/// The comment kube-proxy puts on the `kubernetes` Service's rules.
const SERVICE_COMMENT: &str = "default/kubernetes:https";
/// The programs tried, in order: the host's default, then each backend explicitly (kube-proxy
/// may use the other backend than the host's `iptables`).
const SAVERS: [&str; 3] = ["iptables-save", "iptables-legacy-save", "iptables-nft-save"];

/// What kube-proxy programmed for one Service address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rules {
    /// Traffic to the Service goes to these endpoints; `how` names the mechanism.
    Programmed {
        /// `iptables (KUBE-SVC-...)` or `IPVS`.
        how: String,
        /// The endpoints (`address:port`).
        endpoints: Vec<String>,
    },
    /// kube-proxy's chains are there but nothing for this Service (or no endpoint).
    NotProgrammed(String),
    /// No kube-proxy chain at all.
    NoKubeProxy,
}

/// The `kubernetes` Service's address from the comment kube-proxy puts on its rule.
pub fn service_ip_from_rules(iptables: &str) -> Option<IpAddr> {
    iptables
        .lines()
        .filter(|l| l.starts_with("-A KUBE-SERVICES ") && l.contains(SERVICE_COMMENT))
        .find_map(|l| arg(l, "-d")?.split('/').next()?.parse().ok())
}

/// Read the rules for `service` from `iptables-save` output and `/proc/net/ip_vs`.
pub fn rules(iptables: &str, ip_vs: Option<&str>, service: SocketAddr) -> Rules {
    if let Some(found) = ip_vs.and_then(|text| ipvs_rules(text, service)) {
        return found;
    }
    if !iptables.lines().any(|l| l.starts_with(":KUBE-SERVICES ")) {
        return Rules::NoKubeProxy;
    }
    let dest = format!("{}/32", service.ip());
    let port = service.port().to_string();
    let chain = iptables
        .lines()
        .filter(|l| l.starts_with("-A KUBE-SERVICES "))
        .filter(|l| arg(l, "-d") == Some(dest.as_str()) && arg(l, "--dport") == Some(&port))
        .find_map(|l| arg(l, "-j").filter(|j| j.starts_with("KUBE-SVC-")));
    let Some(chain) = chain else {
        return Rules::NotProgrammed(format!(
            "KUBE-SERVICES has no rule for {service} (kube-proxy has not programmed the \
             kubernetes Service)"
        ));
    };
    let endpoints: Vec<String> = chain_rules(iptables, chain)
        .filter_map(|l| arg(l, "-j").filter(|j| j.starts_with("KUBE-SEP-")))
        .filter_map(|sep| {
            chain_rules(iptables, sep).find_map(|l| arg(l, "--to-destination").map(String::from))
        })
        .collect();
    if endpoints.is_empty() {
        return Rules::NotProgrammed(format!(
            "{chain} (the kubernetes Service {service}) has no endpoint"
        ));
    }
    Rules::Programmed {
        how: format!("iptables ({chain})"),
        endpoints,
    }
}

fn chain_rules<'a>(iptables: &'a str, chain: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    let prefix = format!("-A {chain} ");
    iptables.lines().filter(move |l| l.starts_with(&prefix))
}

/// The word after `flag` in an iptables-save rule.
fn arg<'a>(rule: &'a str, flag: &str) -> Option<&'a str> {
    let mut words = rule.split_whitespace();
    words.find(|w| *w == flag)?;
    words.next()
}

/// The IPVS virtual server for `service` and its real servers, from `/proc/net/ip_vs`:
///
/// ```text
/// TCP  0A000001:01BB rr
///   -> AC120002:192B      Masq    1      0          0
/// ```
fn ipvs_rules(text: &str, service: SocketAddr) -> Option<Rules> {
    let IpAddr::V4(ip) = service.ip() else {
        return None;
    };
    let key = format!("TCP  {:08X}:{:04X}", u32::from(ip), service.port());
    let mut lines = text.lines().skip_while(|l| !l.starts_with(&key));
    lines.next()?;
    let endpoints: Vec<String> = lines
        .map_while(|l| l.trim_start().strip_prefix("-> "))
        .filter_map(|l| hex_addr(l.split_whitespace().next()?))
        .collect();
    Some(if endpoints.is_empty() {
        Rules::NotProgrammed(format!(
            "the IPVS virtual server {service} has no real server"
        ))
    } else {
        Rules::Programmed {
            how: "IPVS".into(),
            endpoints,
        }
    })
}

/// `AC120002:192B` → `172.18.0.2:6443`.
fn hex_addr(text: &str) -> Option<String> {
    let (ip, port) = text.split_once(':')?;
    let ip = Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?);
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(format!("{ip}:{port}"))
}

/// The nat table as the host's `iptables-save` prints it, run chrooted into `host_root` (in
/// the agent's network namespace, which is the node's: hostNetwork). The first program whose
/// output has kube-proxy's chains wins; else the first that ran.
pub async fn save_nat(host_root: &Path, deadline: Duration) -> Result<String, String> {
    let mut first: Option<String> = None;
    let mut errors = Vec::new();
    for program in SAVERS {
        let argv = [program.to_string(), "-t".into(), "nat".into()];
        let cmd = commands::chroot(host_root, &argv, &[]);
        match commands::output_within(cmd, deadline).await {
            Ok(Some(out)) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                if text.contains(":KUBE-SERVICES ") {
                    return Ok(text);
                }
                first.get_or_insert(text);
            }
            Ok(Some(out)) => errors.push(format!(
                "{program}: {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Ok(None) => errors.push(format!("{program}: no answer within {deadline:?}")),
            Err(e) => errors.push(format!("{program}: {e}")),
        }
    }
    first.ok_or_else(|| errors.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> String {
        let path = format!("{}/testdata/network/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    const SERVICE: &str = "10.0.0.1:443";

    #[test]
    fn kube_proxy_iptables_rules_lead_the_service_to_the_apiserver() {
        let text = testdata("iptables-save-kube-proxy.txt");
        let service: SocketAddr = SERVICE.parse().expect("addr");
        assert_eq!(service_ip_from_rules(&text), Some(service.ip()));
        match rules(&text, None, service) {
            Rules::Programmed { how, endpoints } => {
                assert!(how.starts_with("iptables (KUBE-SVC-"), "{how}");
                assert_eq!(endpoints, ["10.253.2.1:43117"]);
            }
            other => panic!("{other:?}"),
        }
        let other: SocketAddr = "10.96.0.1:443".parse().expect("addr");
        assert!(
            matches!(rules(&text, None, other), Rules::NotProgrammed(m) if m.contains("10.96.0.1:443"))
        );
    }

    #[test]
    fn no_kube_proxy_chains_and_ipvs_tables_are_told_apart() {
        let service: SocketAddr = SERVICE.parse().expect("addr");
        assert_eq!(
            rules(&testdata("iptables-save-plain.txt"), None, service),
            Rules::NoKubeProxy
        );
        let ipvs = "IP Virtual Server version 1.2.1 (size=4096)\n\
                    Prot LocalAddress:Port Scheduler Flags\n\
                      -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n\
                    TCP  0A000001:01BB rr\n\
                      -> AC120002:192B      Masq    1      0          0\n\
                    TCP  0A00000A:0035 rr\n";
        assert_eq!(
            rules("", Some(ipvs), service),
            Rules::Programmed {
                how: "IPVS".into(),
                endpoints: vec!["172.18.0.2:6443".into()]
            }
        );
    }
}
