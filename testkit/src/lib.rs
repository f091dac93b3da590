//! The one test kit of volpool: what the agent's integration tests and the end-to-end tests
//! share. Nothing here talks to Kubernetes; the e2e crate (`tests/`) builds its cluster
//! harnesses on top.
//!
//! ```text
//!  FakeNode ──► unshare --mount --pid --fork … (init reads a pipe from the test)
//!     │            command()/sh() ──► nsenter -t <init> -m -p …   (the node's own mounts)
//!     └─ the test process dies ──► the pipe closes ──► init exits ──► namespace and mounts gone
//!  LoopDevice ──► losetup, marked autoclear while a guard holds it open ──► gone with the guard
//!  json_diff · TempDir · free_port · http_get · metrics::sample/sum · wait_for/wait_for_blocking · Reaper
//!  agent::{pools_file, scan, find} (the agent's CLI) · cargo_binary · bins: hangfs, fake-node
//! ```
//!
//! Everything a test starts is tied to the test process: a test killed on its timeout leaves
//! no namespace, mount or loop device behind.

pub mod agent;
mod diff;
mod http;
mod loopdev;
pub mod metrics;
mod node;
mod process;
mod temp;
mod wait;

pub use agent::pools_file;
pub use diff::json_diff;
pub use http::{free_port, http_get};
pub use loopdev::{Fs, LoopDevice};
pub use node::FakeNode;
pub use process::{Reaper, cargo_binary, check, repo_root, run, stdout_of};
pub use temp::TempDir;
pub use wait::{wait_for, wait_for_blocking};
