//! Types and names shared by `volpool-agent` and `volpool-controller`. No I/O.
//!
//! ```text
//!  people ──► VolumePool.spec ──► controller ──► VolumePool.status
//!  agent  ──► NodeVolumes.status ──► controller ──► NodeVolumes.spec.cleanups ──► agent
//! ```
//!
//! Everything the two programs must agree on lives here: the CRD types, label and annotation
//! keys, field managers, PV naming, when a PV counts as Released, quantity/duration parsing,
//! selector matching and how an Event is built.

pub mod crd;
pub mod events;
pub mod names;
pub mod network;
pub mod node;
pub mod pool;
pub mod pool_status;
pub mod pv;
pub mod retry;
pub mod selector;
pub mod units;

pub use names::*;
pub use network::*;
pub use node::*;
pub use pool::*;
pub use pool_status::*;
pub use selector::{optional_selector_matches, selector_matches};

/// API group of every volpool kind.
pub const GROUP: &str = "volpool.io";
/// API version of every volpool kind.
pub const VERSION: &str = "v1alpha1";
