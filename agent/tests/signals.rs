//! The daemon stops cleanly on SIGTERM and SIGINT, even as PID 1 of its own pid namespace (a
//! container without `hostPID`), where the kernel drops every signal PID 1 has no handler for.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use volpool_testkit::{TempDir, free_port, http_get, pools_file, wait_for_blocking};

const AGENT: &str = env!("CARGO_BIN_EXE_volpool-agent");

/// The agent as PID 1 of a new pid namespace; its pid as this machine sees it.
fn agent_as_pid_1(tmp: &TempDir, port: u16) -> anyhow::Result<(Child, u32)> {
    std::fs::create_dir_all(tmp.join("disks"))?;
    let pools = pools_file(tmp, &tmp.join("disks"), "1Mi", false)?;
    let holder = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "--mount-proc", "--"])
        .arg(AGENT)
        .args(["--host-root", "/", "--node-name", "n1", "--resync", "1s"])
        .args([
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--pools-file",
        ])
        .arg(&pools)
        .stderr(Stdio::null())
        .spawn()?;
    let children = format!("/proc/{0}/task/{0}/children", holder.id());
    let pid = wait_for_blocking("the agent to start", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&children).ok()?;
        text.split_whitespace().next()?.parse().ok()
    })?;
    wait_for_blocking("/healthz", Duration::from_secs(60), || {
        http_get(port, "/healthz").ok().filter(|r| r.0 == 200)
    })?;
    Ok((holder, pid))
}

fn stops_on(signal: &str) -> anyhow::Result<()> {
    let tmp = TempDir::new("volpool-signals")?;
    let port = free_port()?;
    let (mut holder, pid) = agent_as_pid_1(&tmp, port)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let nspid = status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .unwrap_or("");
    assert!(
        nspid.trim_end().ends_with("\t1"),
        "the agent is PID 1 inside: {nspid}"
    );
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(exit) = holder.try_wait()? {
            assert!(exit.success(), "the agent exits 0 on {signal}: {exit}");
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = holder.kill();
    anyhow::bail!("the agent, PID 1 of its namespace, ignored {signal}")
}

#[test]
fn sigterm_stops_the_agent_as_pid_1() -> anyhow::Result<()> {
    stops_on("TERM")
}

#[test]
fn sigint_stops_the_agent_as_pid_1() -> anyhow::Result<()> {
    stops_on("INT")
}
