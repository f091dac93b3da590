//! How a scrub ended. A leaf, so that each way of scrubbing (wipe, block) can return it.

/// How a scrub ended, with its message.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The volume is clean.
    Succeeded(String),
    /// The scrub started and did not finish.
    Failed(String),
    /// Nothing was touched.
    Refused(String),
}
