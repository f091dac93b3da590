//! Removing a volume's directory with everything in it, over NFSv3: depth first, never
//! following a symlink (a link is removed as a link) and never crossing into another
//! filesystem, so nothing outside the pool's root is touched.
//!
//! ```text
//!  LOOKUP dir ─► FSSTAT root fsid ─► READDIRPLUS ─► (dirs: recurse, RMDIR) (others: REMOVE) ─► RMDIR dir
//! ```

use std::future::Future;
use std::pin::Pin;

use nfs3_client::nfs3_types::nfs3::{
    Nfs3Result, REMOVE3args, RMDIR3args, diropargs3, filename3, ftype3, nfs_fh3, nfsstat3,
};

use super::{Client, Conn, Nfs3, name, status_error};
use crate::exportfs::fs::{ExportError, ExportResult, FailKind};

/// Deepest directory nesting a removal follows.
const MAX_DEPTH: u32 = 512;

impl Nfs3 {
    /// Remove `dir` (one name under the root) and everything in it; a missing `dir` is fine.
    pub(super) async fn remove_from_root(&self, conn: &mut Conn, dir: &str) -> ExportResult<()> {
        let root = conn.root.clone();
        let what = format!("{}/{dir}", self.path);
        let Some(handle) = self.lookup(&mut conn.client, &root, dir).await? else {
            return Ok(());
        };
        let fsid = self.fsid(&mut conn.client, &root, &self.path).await?;
        let listed = self.read_dir(&mut conn.client, &root, &self.path).await?;
        let kind = listed
            .iter()
            .find(|l| l.name == dir.as_bytes())
            .and_then(|l| l.kind);
        let at = diropargs3 {
            dir: root,
            name: name(dir),
        };
        let is_dir = kind == Some(ftype3::NF3DIR);
        if is_dir {
            self.empty_tree(&mut conn.client, handle, what.clone(), fsid, 0)
                .await?;
        }
        // NB: a symlink or file where a volume's directory should be: remove the link itself,
        // never what it points to.
        self.unlink(&mut conn.client, at, is_dir, &what).await
    }

    /// RMDIR (`is_dir`) or REMOVE one entry; already gone is fine.
    async fn unlink(
        &self,
        client: &mut Client,
        at: diropargs3<'static>,
        is_dir: bool,
        what: &str,
    ) -> ExportResult<()> {
        let call = format!("{} {what}", if is_dir { "RMDIR" } else { "REMOVE" });
        let failed = if is_dir {
            let args = RMDIR3args { object: at };
            match self.rpc(&call, client.rmdir(&args)).await? {
                Nfs3Result::Ok(_) => None,
                Nfs3Result::Err((status, _)) => Some(status),
            }
        } else {
            let args = REMOVE3args { object: at };
            match self.rpc(&call, client.remove(&args)).await? {
                Nfs3Result::Ok(_) => None,
                Nfs3Result::Err((status, _)) => Some(status),
            }
        };
        match failed {
            None | Some(nfsstat3::NFS3ERR_NOENT) => Ok(()),
            Some(status) => Err(status_error(&call, status)),
        }
    }

    /// Empty the directory `dir` (a handle), depth first. Only directories on filesystem
    /// `fsid` are entered; a symlink is removed as a link, never followed.
    fn empty_tree<'a>(
        &'a self,
        client: &'a mut Client,
        dir: nfs_fh3,
        path: String,
        fsid: u64,
        depth: u32,
    ) -> Pin<Box<dyn Future<Output = ExportResult<()>> + 'a>> {
        Box::pin(async move {
            if depth > MAX_DEPTH {
                return Err(ExportError::new(
                    FailKind::Other,
                    format!(
                        "{path} is nested deeper than {MAX_DEPTH} directories: remove it by hand"
                    ),
                ));
            }
            for entry in self.read_dir(client, &dir, &path).await? {
                let text = String::from_utf8_lossy(&entry.name).into_owned();
                let child = format!("{path}/{text}");
                let at = diropargs3 {
                    dir: dir.clone(),
                    name: filename3::from(entry.name.clone()),
                };
                if entry.kind == Some(ftype3::NF3DIR) {
                    if entry.fsid.is_some_and(|f| f != fsid) {
                        return Err(ExportError::new(
                            FailKind::Other,
                            format!("{child} is another filesystem: refusing to remove across it"),
                        ));
                    }
                    let handle = match entry.handle {
                        Some(h) => Some(h),
                        None => self.lookup(client, &dir, &text).await?,
                    };
                    if let Some(handle) = handle {
                        self.empty_tree(client, handle, child.clone(), fsid, depth + 1)
                            .await?;
                    }
                    self.unlink(client, at, true, &child).await?;
                } else {
                    self.unlink(client, at, false, &child).await?;
                }
            }
            Ok(())
        })
    }
}
