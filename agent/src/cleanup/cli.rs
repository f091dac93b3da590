//! `volpool-agent scrub`: one scrub by hand, exactly as the daemon performs it for a request
//! in `spec.cleanups` (same lookup by volume ID, same refusals), with no cluster: the person
//! running it vouches for it, where the daemon reads the request's PV first.
//! Exit status: 0 Succeeded, 1 Failed, 2 Refused.
//!
//! ```text
//!  --pools-file ─► pools ─┐
//!  --volume-id, --method ─┴► perform ─► CleanupResult ─► table | json | yaml
//! ```

use std::path::PathBuf;

use volpool_api::{CleanupMethod, CleanupOutcome, CleanupRequest, CleanupResult};

use crate::error::{Error, Result};
use crate::host::RealHost;
use crate::output::{Format, columns, encode};
use crate::pools;

/// What `scrub` was asked to do.
pub struct Scrub {
    /// The node's root.
    pub host_root: PathBuf,
    /// The pools whose entries may be scrubbed.
    pub pools_file: PathBuf,
    /// The volume, by identity (`volumeID` as `scan` prints it).
    pub volume_id: String,
    /// How to scrub.
    pub method: CleanupMethod,
    /// Output format.
    pub output: Format,
}

/// Parse a `--method` value (Wipe, Discard, Zero, None; any case).
pub fn parse_method(text: &str) -> std::result::Result<CleanupMethod, String> {
    match text.to_ascii_lowercase().as_str() {
        "wipe" => Ok(CleanupMethod::Wipe),
        "discard" => Ok(CleanupMethod::Discard),
        "zero" => Ok(CleanupMethod::Zero),
        "none" => Ok(CleanupMethod::None),
        _ => Err(format!(
            "{text:?} is not a scrub method: use Wipe (filesystem), Discard or Zero (block)"
        )),
    }
}

/// Run `scrub`; returns the text to print and the exit status.
pub fn run(args: Scrub) -> Result<(String, i32)> {
    let selected = pools::select(&pools::read_pools_file(&args.pools_file)?, None);
    let request = CleanupRequest {
        volume_id: args.volume_id,
        persistent_volume: String::new(),
        pv_uid: String::new(),
        claim_uid: String::new(),
        method: args.method,
    };
    let host = RealHost::new(&args.host_root);
    let result = super::perform(&host, &host, &selected, &request, &super::Warrant::Operator);
    let code = match result.result {
        CleanupOutcome::Succeeded => 0,
        CleanupOutcome::Failed => 1,
        CleanupOutcome::Refused => 2,
        // NB: not reached: perform returns when the scrub has ended.
        CleanupOutcome::Running => 3,
    };
    let text = encode(&result, args.output, table)
        .map_err(|(format, reason)| Error::EncodeReport { format, reason })?;
    Ok((text, code))
}

fn table(result: &CleanupResult) -> String {
    columns(&[
        vec!["RESULT".into(), "VOLUME ID".into(), "MESSAGE".into()],
        vec![
            format!("{:?}", result.result),
            result.volume_id.clone(),
            result.message.clone(),
        ],
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_in_any_case_and_a_typo_says_what_to_use() {
        assert_eq!(parse_method("wipe"), Ok(CleanupMethod::Wipe));
        assert_eq!(parse_method("Zero"), Ok(CleanupMethod::Zero));
        assert_eq!(parse_method("DISCARD"), Ok(CleanupMethod::Discard));
        let err = parse_method("shred").expect_err("not a method");
        assert!(err.contains("use Wipe"), "{err}");
    }
}
