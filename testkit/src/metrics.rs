//! Reading Prometheus text exposition (`/metrics`) the way a test asserts on it: the samples of
//! one metric, picked by substrings of their labels.
//!
//! ```text
//!  volpool_volume_stuck{path="/mnt/disks/a b",pool="p"} 1
//!  └─ name ───────────┘ └─ labels (raw) ─────────────┘ └ value
//! ```

/// One sample line.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample<'a> {
    /// Metric name (with its `_bucket`/`_count`/`_sum` suffix, if any).
    pub name: &'a str,
    /// The text between the braces, as exposed (`a="1",b="2"`); empty without labels.
    pub labels: &'a str,
    /// The value.
    pub value: f64,
}

/// Every sample in `text`; comments, blank lines and lines that do not parse are skipped.
pub fn samples(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines().filter_map(parse)
}

fn parse(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let (labels, rest) = if line[name_end..].starts_with('{') {
        // NB: a label value may hold spaces and braces; the value after the last '}' cannot.
        let close = line.rfind('}')?;
        (&line[name_end + 1..close], &line[close + 1..])
    } else {
        ("", &line[name_end..])
    };
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The samples of `metric` whose labels contain every one of `needles`.
pub fn matching<'a>(
    text: &'a str,
    metric: &'a str,
    needles: &'a [&'a str],
) -> impl Iterator<Item = Sample<'a>> {
    samples(text).filter(move |s| s.name == metric && needles.iter().all(|n| s.labels.contains(n)))
}

/// The value of the first sample of `metric` whose labels contain every one of `needles`.
pub fn sample(text: &str, metric: &str, needles: &[&str]) -> Option<f64> {
    matching(text, metric, needles).next().map(|s| s.value)
}

/// The sum of the samples of `metric` whose labels contain every one of `needles` (0 when
/// there is none).
pub fn sum(text: &str, metric: &str, needles: &[&str]) -> f64 {
    matching(text, metric, needles).map(|s| s.value).sum()
}

/// The value of the per-volume family `metric` for the volume at `path`, joined the way a
/// query joins it: the `volume` key of the `volpool_volume_info` series whose `path` it is.
pub fn volume_sample(text: &str, metric: &str, path: &str) -> Option<f64> {
    let escaped = path.replace('\\', "\\\\").replace('"', "\\\"");
    let needle = format!("path=\"{escaped}\"");
    let needles = [needle.as_str()];
    let info = matching(text, "volpool_volume_info", &needles).next()?;
    let key = info.labels.strip_prefix("volume=\"")?.split('"').next()?;
    sample(text, metric, &[format!("volume=\"{key}\"").as_str()])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP volpool_volume_stuck Whether the probe hung.\n\
        # TYPE volpool_volume_stuck gauge\n\
        volpool_volume_stuck{path=\"/mnt/disks/my vol\",pool=\"p\"} 1\n\
        volpool_volume_stuck{path=\"/mnt/disks/{x}\",pool=\"p\"} 0\n\
        volpool_volume_stuck_total 7\n\
        volpool_agent_build_info{version=\"0.1.0\"} 1 1700000000000\n\
        volpool_x_seconds_bucket{le=\"+Inf\"} 3\n";

    #[test]
    fn a_sample_is_found_by_name_and_label_substrings() {
        let stuck = |needle: &str| sample(TEXT, "volpool_volume_stuck", &[needle]);
        assert_eq!(stuck("my vol"), Some(1.0));
        assert_eq!(stuck("{x}"), Some(0.0));
        assert_eq!(stuck("nowhere"), None);
        assert_eq!(sample(TEXT, "volpool_volume_stuck_total", &[]), Some(7.0));
        assert_eq!(
            sample(TEXT, "volpool_volume", &[]),
            None,
            "whole names only"
        );
        assert_eq!(
            sample(TEXT, "volpool_agent_build_info", &["version="]),
            Some(1.0),
            "a timestamp after the value is not the value"
        );
        assert_eq!(
            sample(TEXT, "volpool_x_seconds_bucket", &["+Inf"]),
            Some(3.0)
        );
    }

    #[test]
    fn sum_adds_every_match_and_is_zero_without_one() {
        assert_eq!(sum(TEXT, "volpool_volume_stuck", &["pool=\"p\""]), 1.0);
        assert_eq!(sum(TEXT, "volpool_volume_stuck", &[]), 1.0);
        assert_eq!(sum(TEXT, "volpool_missing", &[]), 0.0);
    }
}
