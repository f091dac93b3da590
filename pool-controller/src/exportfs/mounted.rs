//! `ExportFs` through a mount in the controller's pod (`access: Mounted`, for NFSv4-only
//! servers): plain file operations under `mountedPath`, each on a blocking worker with a
//! deadline, so a hung mount stalls no pass.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::fs::{Entry, ExportError, ExportFs, ExportResult, FailKind, Made, Space, check_name};

/// An export mounted at a path.
pub struct Mounted {
    root: PathBuf,
    timeout: Duration,
}

fn io_error(what: &str, e: &std::io::Error) -> ExportError {
    let kind = match e.kind() {
        ErrorKind::PermissionDenied | ErrorKind::ReadOnlyFilesystem => FailKind::Denied,
        ErrorKind::NotFound => FailKind::NotFound,
        _ if e.raw_os_error() == Some(116) => FailKind::Unreachable,
        _ => FailKind::Other,
    };
    ExportError::new(kind, format!("{what}: {e}"))
}

/// Remove everything inside `dir`, without following symlinks or leaving device `dev`.
fn empty_tree(dir: &Path, dev: u64, depth: u32) -> ExportResult<()> {
    if depth > 512 {
        return Err(ExportError::new(
            FailKind::Other,
            format!("{} is nested too deep: remove it by hand", dir.display()),
        ));
    }
    let what = dir.display().to_string();
    for entry in fs::read_dir(dir).map_err(|e| io_error(&what, &e))? {
        let entry = entry.map_err(|e| io_error(&what, &e))?;
        let path = entry.path();
        let shown = path.display().to_string();
        let meta = fs::symlink_metadata(&path).map_err(|e| io_error(&shown, &e))?;
        if meta.is_dir() {
            if meta.dev() != dev {
                return Err(ExportError::new(
                    FailKind::Other,
                    format!("{shown} is another filesystem: refusing to remove across it"),
                ));
            }
            empty_tree(&path, dev, depth + 1)?;
            fs::remove_dir(&path).map_err(|e| io_error(&shown, &e))?;
        } else {
            fs::remove_file(&path).map_err(|e| io_error(&shown, &e))?;
        }
    }
    Ok(())
}

impl Mounted {
    /// The export mounted at `root`.
    pub fn new(root: &str, timeout: Duration) -> Mounted {
        Mounted {
            root: PathBuf::from(root),
            timeout,
        }
    }

    /// Run a blocking file operation on a worker, with the deadline.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &str,
        op: impl FnOnce(&Path) -> ExportResult<T> + Send + 'static,
    ) -> ExportResult<T> {
        let root = self.root.clone();
        let work = tokio::task::spawn_blocking(move || op(&root));
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(ExportError::new(FailKind::Other, format!("{what}: {e}"))),
            Err(_) => Err(ExportError::new(
                FailKind::Unreachable,
                format!(
                    "{what} under {}: no answer within {}s (is the mount hung?)",
                    self.root.display(),
                    self.timeout.as_secs_f64()
                ),
            )),
        }
    }
}

impl ExportFs for Mounted {
    async fn list(&self) -> ExportResult<Vec<Entry>> {
        self.blocking("list", |root| {
            let what = root.display().to_string();
            let mut out = Vec::new();
            for entry in fs::read_dir(root).map_err(|e| {
                let mut err = io_error(&what, &e);
                if e.kind() == ErrorKind::NotFound {
                    err.kind = FailKind::Unreachable;
                }
                err
            })? {
                let entry = entry.map_err(|e| io_error(&what, &e))?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                let meta = entry.metadata().map_err(|e| io_error(&what, &e))?;
                out.push(Entry {
                    name,
                    is_dir: meta.is_dir(),
                    uid: meta.uid(),
                });
            }
            Ok(out)
        })
        .await
    }

    async fn is_empty(&self, dir: &str) -> ExportResult<bool> {
        check_name(dir)?;
        let dir = dir.to_string();
        self.blocking("read", move |root| {
            let path = root.join(&dir);
            match fs::read_dir(&path) {
                Ok(mut entries) => Ok(entries.next().is_none()),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
                Err(e) => Err(io_error(&path.display().to_string(), &e)),
            }
        })
        .await
    }

    async fn make_dir(&self, dir: &str, mode: u32) -> ExportResult<Made> {
        check_name(dir)?;
        let dir = dir.to_string();
        self.blocking("mkdir", move |root| {
            let path = root.join(&dir);
            let what = path.display().to_string();
            match fs::create_dir(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error(&what, &e)),
            }
            let meta = fs::symlink_metadata(&path).map_err(|e| io_error(&what, &e))?;
            if !meta.is_dir() {
                return Err(ExportError::new(
                    FailKind::Other,
                    format!("{what} exists and is not a directory"),
                ));
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(|e| io_error(&what, &e))?;
            Ok(Made { uid: meta.uid() })
        })
        .await
    }

    async fn rename(&self, from: &str, to: &str) -> ExportResult<()> {
        check_name(from)?;
        check_name(to)?;
        let (from, to) = (from.to_string(), to.to_string());
        self.blocking("rename", move |root| {
            let what = format!("rename {} to {to}", root.join(&from).display());
            fs::rename(root.join(&from), root.join(&to)).map_err(|e| io_error(&what, &e))
        })
        .await
    }

    async fn remove_tree(&self, dir: &str) -> ExportResult<()> {
        check_name(dir)?;
        let dir = dir.to_string();
        self.blocking("remove", move |root| {
            let path = root.join(&dir);
            let what = path.display().to_string();
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_error(&what, &e)),
            };
            if !meta.is_dir() {
                return fs::remove_file(&path).map_err(|e| io_error(&what, &e));
            }
            let dev = fs::metadata(root).map_err(|e| io_error(&what, &e))?.dev();
            if meta.dev() != dev {
                return Err(ExportError::new(
                    FailKind::Other,
                    format!("{what} is another filesystem: refusing to remove across it"),
                ));
            }
            empty_tree(&path, dev, 0)?;
            fs::remove_dir(&path).map_err(|e| io_error(&what, &e))
        })
        .await
    }

    async fn space(&self) -> ExportResult<Space> {
        self.blocking("statvfs", |root| {
            let what = root.display().to_string();
            let stat = nix::sys::statvfs::statvfs(root)
                .map_err(|e| io_error(&what, &std::io::Error::from_raw_os_error(e as i32)))?;
            let block = stat.fragment_size() as u64;
            Ok(Space {
                size_bytes: stat.blocks() as u64 * block,
                available_bytes: stat.blocks_available() as u64 * block,
            })
        })
        .await
    }

    fn expected_uid(&self) -> Option<u32> {
        None
    }
}
