//! `fake-node <dir> <image>`: hold a fake node with a tmpfs mounted at `<dir>` and an ext4
//! image on a loop device mounted at `<dir>/disk`, print `holder=<pid> init=<pid>
//! loop=<device>`, and wait to be killed. What a test does, in a process a test can kill:
//! nothing it made may outlive it.

use std::io::Write;
use std::path::PathBuf;

use volpool_testkit::{FakeNode, Fs, LoopDevice};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(dir), Some(image)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: fake-node <dir> <image>");
    };
    let disk = LoopDevice::new(image, 16, Some(Fs::Ext4))?;
    let node = FakeNode::new()?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    node.sh(&format!(
        "mount -t tmpfs {name} '{0}' && mkdir '{0}/disk' && mount '{1}' '{0}/disk'",
        dir.display(),
        disk.device
    ))?;
    let mut stdout = std::io::stdout();
    writeln!(
        stdout,
        "holder={} init={} loop={}",
        node.holder_pid(),
        node.pid(),
        disk.device
    )?;
    stdout.flush()?;
    loop {
        std::thread::park();
    }
}
