//! Over the wire: the NFS servers of the pools on this node, and rpc.statd on the host's
//! loopback. Every step has its own deadline; a failure keeps the real error text.
//!
//! ```text
//!  server ─resolve─► addr ─TCP─► :2049 ─(v3)─► :111 portmap GETPORT MOUNT/NFS ─► mountd EXPORT
//!                                                             └─► ServerReachability {reachable, exports, message}
//!  127.0.0.1:111 portmap GETPORT(100024) ─► rpc-statd check
//! ```

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use nfs3_client::nfs3_types::mount::{PROGRAM as MOUNT_PROGRAM, VERSION as MOUNT_VERSION};
use nfs3_client::nfs3_types::nfs3::{PROGRAM as NFS_PROGRAM, VERSION as NFS_VERSION};
use nfs3_client::nfs3_types::portmap::{IPPROTO_TCP, IPPROTO_UDP, PMAP_PORT};
use nfs3_client::nfs3_types::xdr_codec::Void;
use nfs3_client::rpc::RpcClient;
use nfs3_client::tokio::TokioIo;
use nfs3_client::{MountClient, PortmapError, PortmapperClient};
use tokio::net::TcpStream;
use volpool_api::{Check, CheckStatus, ServerReachability};

use super::NfsPool;
use super::checks::{RPC_STATD, check};

/// The NFS port (fixed for v4; v3 servers use it too in practice).
pub const NFS_PORT: u16 = 2049;
/// rpc.statd's RPC program number.
const STATD_PROGRAM: u32 = 100_024;

/// Run `step` with a deadline; `Err` is the message.
async fn within<T, E: std::fmt::Display>(
    deadline: Duration,
    what: &str,
    step: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(deadline, step).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!(
            "{what}: no answer within {}s",
            deadline.as_secs_f64()
        )),
    }
}

/// Probe the server of one NFS pool: name, NFS port, and for NFSv3 the portmapper, mountd and
/// the export list for this client.
pub async fn probe_server(pool: &NfsPool, deadline: Duration) -> ServerReachability {
    let mut result = ServerReachability {
        pool: pool.name.clone(),
        server: pool.server.clone(),
        reachable: false,
        exports: Vec::new(),
        message: String::new(),
    };
    match probe_steps(pool, deadline, &mut result.exports).await {
        Ok(()) => result.reachable = true,
        Err(message) => result.message = message,
    }
    result
}

async fn probe_steps(
    pool: &NfsPool,
    deadline: Duration,
    exports: &mut Vec<String>,
) -> Result<(), String> {
    let server = pool.server.as_str();
    let addrs: Vec<SocketAddr> = within(
        deadline,
        &format!("cannot resolve {server}"),
        tokio::net::lookup_host((server, NFS_PORT)),
    )
    .await?
    .collect();
    let mut last = format!("cannot resolve {server}: no address");
    let mut connected = None;
    for addr in addrs {
        match within(deadline, &format!("{addr} (nfs)"), TcpStream::connect(addr)).await {
            Ok(stream) => {
                connected = Some(stream);
                break;
            }
            Err(message) => last = message,
        }
    }
    let stream = connected.ok_or(last)?;
    let peer = stream.peer_addr().map_err(|e| e.to_string())?;
    let ip = peer.ip();
    let local = stream.local_addr().map_err(|e| e.to_string())?.ip();
    if !pool.v3 {
        // NB: NFSv4 has no portmapper or mountd; an RPC NULL to NFS v4 says the server speaks it.
        let mut rpc = RpcClient::new(TokioIo::new(stream));
        let null = rpc.call::<Void, Void>(NFS_PROGRAM, 4, 0, &Void);
        return within(deadline, &format!("{peer} (nfs v4)"), null)
            .await
            .map(drop);
    }
    drop(stream);
    let portmap = SocketAddr::new(ip, PMAP_PORT);
    let what = format!("{portmap} (portmapper)");
    let stream = within(deadline, &what, TcpStream::connect(portmap)).await?;
    let mut pm = PortmapperClient::new(TokioIo::new(stream));
    let getport = async |pm: &mut PortmapperClient<_>, prog, vers, name: &str| match within(
        deadline,
        &what,
        pm.getport(prog, vers, IPPROTO_TCP),
    )
    .await
    {
        Err(message) if message.ends_with("Program unavailable") => Err(format!(
            "{server} has no {name} registered with its portmapper ({portmap})"
        )),
        other => other,
    };
    getport(&mut pm, NFS_PROGRAM, NFS_VERSION, "NFS v3 over TCP").await?;
    let mount_port = getport(
        &mut pm,
        MOUNT_PROGRAM,
        MOUNT_VERSION,
        "MOUNT v3 over TCP (mountd)",
    )
    .await?;
    let mountd = SocketAddr::new(ip, mount_port);
    let what = format!("{mountd} (mountd)");
    let stream = within(deadline, &what, TcpStream::connect(mountd)).await?;
    let mut mount = MountClient::new(TokioIo::new(stream));
    let list = within(deadline, &what, mount.export()).await?;
    *exports = list
        .into_inner()
        .into_iter()
        .filter(|node| {
            let groups: Vec<String> = node
                .ex_groups
                .0
                .iter()
                .map(|g| String::from_utf8_lossy(&g.0).into_owned())
                .collect();
            exported_to(&groups, local)
        })
        .map(|node| String::from_utf8_lossy(&node.ex_dir.0).into_owned())
        .collect();
    if exports.iter().any(|dir| covers(dir, &pool.path)) {
        Ok(())
    } else if exports.is_empty() {
        Err(format!(
            "{} is not exported by {server} to this client ({local}): the server exports nothing to it",
            pool.path
        ))
    } else {
        Err(format!(
            "{} is not exported by {server} to this client ({local}); it exports: {}",
            pool.path,
            exports.join(", ")
        ))
    }
}

/// Whether an export's client list lets `client` in: empty or `*` is everyone; otherwise an
/// address, a CIDR block, or a wildcard pattern on the address.
pub fn exported_to(groups: &[String], client: IpAddr) -> bool {
    groups.is_empty()
        || groups.iter().any(|g| {
            let g = g.trim();
            g == "*"
                || g.parse::<IpAddr>().is_ok_and(|ip| ip == client)
                || in_cidr(g, client)
                || glob::Pattern::new(g).is_ok_and(|p| p.matches(&client.to_string()))
        })
}

fn in_cidr(block: &str, client: IpAddr) -> bool {
    let Some((net, bits)) = block.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
        return false;
    };
    match (net, client) {
        (IpAddr::V4(net), IpAddr::V4(ip)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(net) & mask == u32::from(ip) & mask
        }
        (IpAddr::V6(net), IpAddr::V6(ip)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(net) & mask == u128::from(ip) & mask
        }
        _ => false,
    }
}

/// Whether mounting `path` is allowed by an export of `dir` (the dir itself or below it).
pub fn covers(dir: &str, path: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    let path = path.trim_end_matches('/');
    path == dir || dir.is_empty() || path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// rpcbind answers on the host's loopback and rpc.statd is registered with it (NFSv3 locking).
pub async fn statd(portmap: SocketAddr, deadline: Duration) -> Check {
    let fix = "NFSv3 mounts without nolock need rpcbind and rpc.statd: start them \
               (systemctl enable --now rpcbind rpc-statd) or add nolock to the pool's mountOptions";
    let what = format!("rpcbind on {portmap}");
    let stream = match within(deadline, &what, TcpStream::connect(portmap)).await {
        Ok(stream) => stream,
        Err(message) => return check(RPC_STATD, CheckStatus::NonOK, format!("{message}; {fix}")),
    };
    let mut pm = PortmapperClient::new(TokioIo::new(stream));
    let mut last = None;
    for proto in [IPPROTO_UDP, IPPROTO_TCP] {
        match tokio::time::timeout(deadline, pm.getport(STATD_PROGRAM, 1, proto)).await {
            Ok(Ok(port)) => {
                return check(
                    RPC_STATD,
                    CheckStatus::OK,
                    format!("rpc.statd is registered with rpcbind on {portmap} (port {port})"),
                );
            }
            Ok(Err(PortmapError::ProgramUnavailable)) => {}
            Ok(Err(e)) => last = Some(format!("{what}: {e}")),
            Err(_) => {
                last = Some(format!(
                    "{what}: no answer within {}s",
                    deadline.as_secs_f64()
                ))
            }
        }
    }
    match last {
        Some(message) => check(RPC_STATD, CheckStatus::Unknown, message),
        None => check(
            RPC_STATD,
            CheckStatus::NonOK,
            format!(
                "rpc.statd is not registered with rpcbind on {portmap}: NFSv3 mounts fail with \"rpc.statd is not running but is required for remote locking\"; {fix}"
            ),
        ),
    }
}

#[cfg(test)]
mod props;
