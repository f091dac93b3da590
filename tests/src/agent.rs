//! Running the real `volpool-agent` as a fake node: in its own mount and pid namespace
//! (`unshare --mount --pid --fork --mount-proc --propagation private`), where its
//! `/proc/1/mountinfo` is that node's mount table, and mounts made with `nsenter` are its own.
//!
//! ```text
//!  test ──► FakeNode::new() ──► unshare … sleep infinity         (the node's namespace)
//!       ──► node.sh("mount …")  ──► nsenter -t <init> -m -p sh   (a disk appears on the node)
//!       ──► node.spawn_agent()  ──► nsenter … volpool-agent ──► kube-apiserver (NodeVolumes)
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::{kubeconfig, repo_root};

/// The agent binary, built once per test process (a no-op when it is up to date).
pub fn agent_binary() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let out = Command::new(cargo)
                .current_dir(repo_root())
                .args([
                    "build",
                    "-q",
                    "-p",
                    "volpool-agent",
                    "--bin",
                    "volpool-agent",
                ])
                .output()
                .map_err(|e| format!("cannot run cargo build: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "cargo build -p volpool-agent failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| repo_root().join("target"));
            Ok(target.join("debug/volpool-agent"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// A node simulated by a private mount + pid namespace. Everything in it (the agent
/// included) is killed when it is dropped, and its mounts go with it.
pub struct FakeNode {
    holder: Child,
    pid: u32,
}

impl FakeNode {
    /// Start the namespace.
    pub fn new() -> anyhow::Result<FakeNode> {
        let holder = Command::new("unshare")
            .args([
                "--mount",
                "--pid",
                "--fork",
                "--mount-proc",
                "--propagation",
                "private",
                "sleep",
                "infinity",
            ])
            .stdin(Stdio::null())
            .spawn()
            .context("failed to run unshare (the agent e2e tests run as root)")?;
        let children = format!("/proc/{0}/task/{0}/children", holder.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            let text = std::fs::read_to_string(&children).unwrap_or_default();
            if let Some(pid) = text.split_whitespace().next().and_then(|p| p.parse().ok()) {
                break pid;
            }
            ensure!(Instant::now() < deadline, "unshare did not start its child");
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(FakeNode { holder, pid })
    }

    /// A command that runs inside the node's namespaces.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid.to_string(), "-m", "-p", "--"])
            .arg(program);
        cmd
    }

    /// Run a shell script on the node; its stdout, or an error with its stderr.
    pub fn sh(&self, script: &str) -> anyhow::Result<String> {
        let out = self.command("sh").args(["-euc", script]).output()?;
        if !out.status.success() {
            bail!(
                "{script:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Start the agent for Node `node` on this fake node, against the test cluster, serving
    /// HTTP on 127.0.0.1:`port`. Extra arguments follow. It authenticates as the
    /// ServiceAccount `volpool-system/volpool-agent` with the RBAC of `deploy/`, as in a real
    /// install, so every agent feature an e2e test shows also works with least privilege.
    pub async fn spawn_agent(
        &self,
        node: &str,
        port: u16,
        extra: &[&str],
    ) -> anyhow::Result<Child> {
        let kubeconfig = crate::deploy::service_account_kubeconfig(crate::deploy::AGENT).await?;
        self.spawn_agent_with(&kubeconfig, node, port, extra)
    }

    /// [`FakeNode::spawn_agent`] with another kubeconfig (e.g. an [`ApiRelay`]'s).
    pub fn spawn_agent_with(
        &self,
        kubeconfig: &Path,
        node: &str,
        port: u16,
        extra: &[&str],
    ) -> anyhow::Result<Child> {
        let log = std::env::temp_dir().join(format!("volpool-agent-{node}.log"));
        let log = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        self.command(agent_binary()?)
            .args(["--host-root", "/", "--node-name", node])
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("failed to start volpool-agent")
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        // NB: killing the namespace's init kills every process in it.
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .status();
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Create `<tmp>/<name>`.
    pub fn new(name: &str) -> anyhow::Result<TempDir> {
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&path)?;
        Ok(TempDir(path))
    }

    /// A path inside it.
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// GET `http://127.0.0.1:<port><path>`: (status, body); `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "-w", "\n%{http_code}"])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n')?;
    match code.trim().parse() {
        Ok(0) | Err(_) => None,
        Ok(code) => Some((code, body.to_string())),
    }
}

/// A TCP relay in front of the apiserver whose outage a test controls: while it is down,
/// every open connection is cut and new ones are closed at once, as when the apiserver
/// restarts. TLS passes through untouched.
pub struct ApiRelay {
    /// A kubeconfig that reaches the apiserver through the relay.
    pub kubeconfig: PathBuf,
    state: std::sync::Arc<RelayState>,
}

#[derive(Default)]
struct RelayState {
    down: std::sync::atomic::AtomicBool,
    stop: std::sync::atomic::AtomicBool,
    open: std::sync::Mutex<Vec<std::net::TcpStream>>,
}

impl ApiRelay {
    /// Start relaying to the test cluster's apiserver; `dir` receives the kubeconfig.
    pub fn start(dir: &Path) -> anyhow::Result<ApiRelay> {
        let original = std::fs::read_to_string(kubeconfig()?)?;
        let mut config: serde_yaml::Value = serde_yaml::from_str(&original)?;
        let server = config["clusters"][0]["cluster"]["server"]
            .as_str()
            .context("kubeconfig has no clusters[0].cluster.server")?
            .to_string();
        let upstream = server
            .strip_prefix("https://")
            .context("apiserver URL is not https")?
            .to_string();
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        config["clusters"][0]["cluster"]["server"] =
            serde_yaml::Value::String(format!("https://127.0.0.1:{port}"));
        let path = dir.join("relay-kubeconfig");
        std::fs::write(&path, serde_yaml::to_string(&config)?)?;
        let state = std::sync::Arc::new(RelayState::default());
        let relay = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if relay.stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                if relay.down.load(Ordering::Relaxed) {
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else {
                    continue;
                };
                if let (Ok(c), Ok(s)) = (client.try_clone(), server.try_clone()) {
                    let mut open = relay.open.lock().unwrap_or_else(|e| e.into_inner());
                    open.push(c);
                    open.push(s);
                }
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
        Ok(ApiRelay {
            kubeconfig: path,
            state,
        })
    }

    /// Cut every connection and refuse new ones (`true`), or relay again (`false`).
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::Relaxed);
        if down {
            let mut open = self.state.open.lock().unwrap_or_else(|e| e.into_inner());
            for stream in open.drain(..) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

impl Drop for ApiRelay {
    fn drop(&mut self) {
        self.set_down(true);
        self.state.stop.store(true, Ordering::Relaxed);
    }
}

/// Copy `from` to `to` on a thread until either side closes.
fn pipe(from: &std::net::TcpStream, to: &std::net::TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(std::net::Shutdown::Both);
        let _ = from.shutdown(std::net::Shutdown::Both);
    });
}
