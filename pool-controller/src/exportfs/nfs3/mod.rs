//! `ExportFs` over the wire: portmap → MOUNT → NFSv3 on TCP, as root (AUTH_UNIX uid 0) so the
//! server's root squash shows instead of being assumed away. One connection per export,
//! re-made after any transport failure; every call has its own deadline. Removing a tree lives
//! in `remove.rs`.

mod remove;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use nfs3_client::nfs3_types::nfs3::{
    FSSTAT3args, LOOKUP3args, MKDIR3args, Nfs3Option, Nfs3Result, READDIRPLUS3args, RENAME3args,
    SETATTR3args, cookieverf3, diropargs3, filename3, ftype3, nfs_fh3, nfsstat3, sattr3,
};
use nfs3_client::nfs3_types::rpc::{auth_unix, opaque_auth};
use nfs3_client::nfs3_types::xdr_codec::Opaque;
use nfs3_client::tokio::{TokioConnector, TokioIo};
use nfs3_client::{Nfs3Client, Nfs3ConnectionBuilder};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::fs::{Entry, ExportError, ExportFs, ExportResult, FailKind, Made, Space, check_name};

type Client = Nfs3Client<TokioIo<TcpStream>>;

struct Conn {
    client: Client,
    root: nfs_fh3,
}

/// An NFSv3 export reached over the wire.
pub struct Nfs3 {
    server: String,
    path: String,
    timeout: Duration,
    conn: Mutex<Option<Conn>>,
}

/// One directory entry as READDIRPLUS gives it.
struct Listed {
    name: Vec<u8>,
    kind: Option<ftype3>,
    uid: u32,
    fsid: Option<u64>,
    handle: Option<nfs_fh3>,
}

fn status_error(what: &str, status: nfsstat3) -> ExportError {
    let kind = match status {
        nfsstat3::NFS3ERR_PERM | nfsstat3::NFS3ERR_ACCES | nfsstat3::NFS3ERR_ROFS => {
            FailKind::Denied
        }
        nfsstat3::NFS3ERR_NOENT => FailKind::NotFound,
        _ => FailKind::Other,
    };
    ExportError::new(kind, format!("{what}: {status}"))
}

fn name(text: &str) -> filename3<'static> {
    filename3::from(text.as_bytes().to_vec())
}

impl Nfs3 {
    /// An export `server:path`; nothing is contacted until the first operation.
    pub fn new(server: &str, path: &str, timeout: Duration) -> Nfs3 {
        Nfs3 {
            server: server.to_string(),
            path: path.to_string(),
            timeout,
            conn: Mutex::new(None),
        }
    }

    fn what(&self) -> String {
        format!("{}:{}", self.server, self.path)
    }

    /// Run one RPC with the deadline; transport failures are `Unreachable`.
    async fn rpc<T, E: std::fmt::Debug>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, E>>,
    ) -> ExportResult<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(ExportError::new(
                FailKind::Unreachable,
                format!("{} {what}: {e:?}", self.what()),
            )),
            Err(_) => Err(ExportError::new(
                FailKind::Unreachable,
                format!(
                    "{} {what}: no answer within {}s",
                    self.what(),
                    self.timeout.as_secs_f64()
                ),
            )),
        }
    }

    async fn connect(&self) -> ExportResult<Conn> {
        let addrs: Vec<SocketAddr> = self
            .rpc(
                "resolve",
                tokio::net::lookup_host((self.server.as_str(), 111)),
            )
            .await?
            .collect();
        let addr = addrs.first().ok_or_else(|| {
            ExportError::new(
                FailKind::Unreachable,
                format!("{}: {} has no address", self.what(), self.server),
            )
        })?;
        let credential = opaque_auth::auth_unix(&auth_unix {
            stamp: 0,
            machinename: Opaque::owned(b"volpool-controller".to_vec()),
            uid: 0,
            gid: 0,
            gids: vec![],
        });
        // NB: servers exporting with `secure` (knfsd's default) want a source port below 1024;
        // an unprivileged controller cannot bind one and falls back to any port (the export
        // then needs `insecure`).
        let mut last = None;
        for privileged in [true, false] {
            let builder = Nfs3ConnectionBuilder::new(
                TokioConnector,
                addr.ip().to_string(),
                self.path.as_str(),
            )
            .credential(credential.clone())
            .connect_from_privileged_port(privileged);
            match self.rpc("mount", builder.mount()).await {
                Ok(conn) => {
                    let root = conn.root_nfs_fh3();
                    return Ok(Conn {
                        client: conn.into_nfs3_client(),
                        root,
                    });
                }
                // Only a source port we may not bind is worth a second try.
                Err(e) if privileged && bind_refused(&e.message) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| ExportError::new(FailKind::Unreachable, self.what())))
    }

    /// Run `op` on the connection (made if needed); a transport failure drops it.
    async fn with_conn<T>(
        &self,
        op: impl AsyncFnOnce(&Nfs3, &mut Conn) -> ExportResult<T>,
    ) -> ExportResult<T> {
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            *guard = Some(self.connect().await?);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(ExportError::new(FailKind::Unreachable, self.what()));
        };
        let result = op(self, conn).await;
        if matches!(&result, Err(e) if e.kind == FailKind::Unreachable) {
            *guard = None;
        }
        result
    }

    async fn lookup(
        &self,
        client: &mut Client,
        dir: &nfs_fh3,
        entry: &str,
    ) -> ExportResult<Option<nfs_fh3>> {
        let args = LOOKUP3args {
            what: diropargs3 {
                dir: dir.clone(),
                name: name(entry),
            },
        };
        match self
            .rpc(&format!("LOOKUP {entry}"), client.lookup(&args))
            .await?
        {
            Nfs3Result::Ok(ok) => Ok(Some(ok.object)),
            Nfs3Result::Err((nfsstat3::NFS3ERR_NOENT, _)) => Ok(None),
            Nfs3Result::Err((status, _)) => Err(status_error(&format!("LOOKUP {entry}"), status)),
        }
    }

    async fn read_dir(
        &self,
        client: &mut Client,
        dir: &nfs_fh3,
        what: &str,
    ) -> ExportResult<Vec<Listed>> {
        let mut out = Vec::new();
        let mut cookie = 0;
        let mut verifier = cookieverf3::default();
        loop {
            let args = READDIRPLUS3args {
                dir: dir.clone(),
                cookie,
                cookieverf: verifier,
                dircount: 8192,
                maxcount: 65536,
            };
            let reply = self
                .rpc(&format!("READDIRPLUS {what}"), client.readdirplus(&args))
                .await?;
            let ok = match reply {
                Nfs3Result::Ok(ok) => ok,
                Nfs3Result::Err((status, _)) => {
                    return Err(status_error(&format!("READDIRPLUS {what}"), status));
                }
            };
            verifier = ok.cookieverf;
            for entry in ok.reply.entries.0 {
                cookie = entry.cookie;
                let bytes = entry.name.0.to_vec();
                if bytes == b"." || bytes == b".." {
                    continue;
                }
                let (kind, uid, fsid) = match &entry.name_attributes {
                    Nfs3Option::Some(a) => (Some(a.type_), a.uid, Some(a.fsid)),
                    Nfs3Option::None => (None, 0, None),
                };
                let handle = match entry.name_handle {
                    Nfs3Option::Some(h) => Some(h),
                    Nfs3Option::None => None,
                };
                out.push(Listed {
                    name: bytes,
                    kind,
                    uid,
                    fsid,
                    handle,
                });
            }
            if ok.reply.eof {
                return Ok(out);
            }
        }
    }

    async fn fsid(&self, client: &mut Client, handle: &nfs_fh3, what: &str) -> ExportResult<u64> {
        let args = nfs3_client::nfs3_types::nfs3::GETATTR3args {
            object: handle.clone(),
        };
        match self
            .rpc(&format!("GETATTR {what}"), client.getattr(&args))
            .await?
        {
            Nfs3Result::Ok(ok) => Ok(ok.obj_attributes.fsid),
            Nfs3Result::Err((status, _)) => Err(status_error(&format!("GETATTR {what}"), status)),
        }
    }
}

/// Whether a failed connect was this process not being allowed a port below 1024.
fn bind_refused(message: &str) -> bool {
    message.contains("PermissionDenied") || message.contains("privileged port")
}

impl ExportFs for Nfs3 {
    async fn list(&self) -> ExportResult<Vec<Entry>> {
        self.with_conn(async |me: &Nfs3, conn: &mut Conn| {
            let root = conn.root.clone();
            let listed = me.read_dir(&mut conn.client, &root, &me.path).await?;
            Ok(listed
                .into_iter()
                .filter_map(|l| {
                    Some(Entry {
                        name: String::from_utf8(l.name).ok()?,
                        is_dir: l.kind == Some(ftype3::NF3DIR),
                        uid: l.uid,
                    })
                })
                .collect())
        })
        .await
    }

    async fn is_empty(&self, dir: &str) -> ExportResult<bool> {
        check_name(dir)?;
        self.with_conn(async |me: &Nfs3, conn: &mut Conn| {
            let root = conn.root.clone();
            let Some(handle) = me.lookup(&mut conn.client, &root, dir).await? else {
                return Ok(true);
            };
            let what = format!("{}/{dir}", me.path);
            Ok(me
                .read_dir(&mut conn.client, &handle, &what)
                .await?
                .is_empty())
        })
        .await
    }

    async fn make_dir(&self, dir: &str, mode: u32) -> ExportResult<Made> {
        check_name(dir)?;
        self.with_conn(async |me: &Nfs3, conn: &mut Conn| {
            let root = conn.root.clone();
            let what = format!("{}/{dir}", me.path);
            let args = MKDIR3args {
                where_: diropargs3 {
                    dir: root.clone(),
                    name: name(dir),
                },
                attributes: sattr3 {
                    mode: Nfs3Option::Some(mode),
                    ..Default::default()
                },
            };
            match me
                .rpc(&format!("MKDIR {what}"), conn.client.mkdir(&args))
                .await?
            {
                Nfs3Result::Ok(_) | Nfs3Result::Err((nfsstat3::NFS3ERR_EXIST, _)) => {}
                Nfs3Result::Err((status, _)) => {
                    return Err(status_error(&format!("MKDIR {what}"), status));
                }
            }
            let handle = me
                .lookup(&mut conn.client, &root, dir)
                .await?
                .ok_or_else(|| {
                    ExportError::new(FailKind::Other, format!("{what} vanished after MKDIR"))
                })?;
            // NB: the mode given to MKDIR passes through the server's umask handling; SETATTR
            // sets it exactly (0777 must stay 0777).
            let args = SETATTR3args {
                object: handle.clone(),
                new_attributes: sattr3 {
                    mode: Nfs3Option::Some(mode),
                    ..Default::default()
                },
                guard: Nfs3Option::None,
            };
            match me
                .rpc(&format!("SETATTR {what}"), conn.client.setattr(&args))
                .await?
            {
                Nfs3Result::Ok(_) => {}
                Nfs3Result::Err((status, _)) => {
                    return Err(status_error(&format!("SETATTR {what}"), status));
                }
            }
            let args = nfs3_client::nfs3_types::nfs3::GETATTR3args { object: handle };
            match me
                .rpc(&format!("GETATTR {what}"), conn.client.getattr(&args))
                .await?
            {
                Nfs3Result::Ok(ok) => Ok(Made {
                    uid: ok.obj_attributes.uid,
                }),
                Nfs3Result::Err((status, _)) => {
                    Err(status_error(&format!("GETATTR {what}"), status))
                }
            }
        })
        .await
    }

    async fn rename(&self, from: &str, to: &str) -> ExportResult<()> {
        check_name(from)?;
        check_name(to)?;
        self.with_conn(async |me: &Nfs3, conn: &mut Conn| {
            let root = conn.root.clone();
            let args = RENAME3args {
                from: diropargs3 {
                    dir: root.clone(),
                    name: name(from),
                },
                to: diropargs3 {
                    dir: root,
                    name: name(to),
                },
            };
            let what = format!("RENAME {}/{from} to {to}", me.path);
            match me.rpc(&what, conn.client.rename(&args)).await? {
                Nfs3Result::Ok(_) => Ok(()),
                Nfs3Result::Err((status, _)) => Err(status_error(&what, status)),
            }
        })
        .await
    }

    async fn remove_tree(&self, dir: &str) -> ExportResult<()> {
        check_name(dir)?;
        self.with_conn(async |me: &Nfs3, conn: &mut Conn| me.remove_from_root(conn, dir).await)
            .await
    }

    async fn space(&self) -> ExportResult<Space> {
        self.with_conn(async |me: &Nfs3, conn: &mut Conn| {
            let args = FSSTAT3args {
                fsroot: conn.root.clone(),
            };
            match me.rpc("FSSTAT", conn.client.fsstat(&args)).await? {
                Nfs3Result::Ok(ok) => Ok(Space {
                    size_bytes: ok.tbytes,
                    available_bytes: ok.abytes,
                }),
                Nfs3Result::Err((status, _)) => Err(status_error("FSSTAT", status)),
            }
        })
        .await
    }

    fn expected_uid(&self) -> Option<u32> {
        Some(0)
    }
}
