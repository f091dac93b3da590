//! Parsing of Kubernetes quantities (`10Gi`, `1G`, `512Mi`) into bytes and of Go-style
//! durations (`90s`, `1h30m`) into [`std::time::Duration`]; byte counts written back the
//! way people read quantities (`10.0Gi`).

use std::time::Duration;

/// A value that is not a valid byte quantity or duration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UnitError {
    /// The quantity could not be read as a whole number of bytes.
    #[error("invalid quantity {0:?}: expected a whole number of bytes such as 500Mi, 10Gi or 1T")]
    Quantity(String),
    /// The duration could not be read.
    #[error("invalid duration {0:?}: expected a duration such as 0s, 90s, 5m or 1h30m")]
    Duration(String),
}

const SUFFIXES: &[(&str, u128)] = &[
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("Pi", 1 << 50),
    ("Ei", 1 << 60),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("P", 1_000_000_000_000_000),
    ("E", 1_000_000_000_000_000_000),
];

/// Largest power of ten a `u128` holds.
const MAX_POW10: u32 = 38;

/// Parse a Kubernetes quantity into bytes: binary (`10Gi`) and decimal (`1G`) suffixes and
/// decimal exponents (`1e9`, the apiserver's form of a quantity written with one). Fractions
/// are allowed when they give whole bytes (`1.5Gi`); negative values and anything that is not
/// a whole number of bytes (`100m`, `1.5`) are refused.
pub fn parse_bytes(text: &str) -> Result<u64, UnitError> {
    let bad = || UnitError::Quantity(text.to_string());
    let s = text.trim();
    let s = s.strip_prefix('+').unwrap_or(s);
    let (number, multiplier, exponent) = match SUFFIXES
        .iter()
        .find_map(|(suffix, m)| s.strip_suffix(suffix).map(|n| (n, *m)))
    {
        Some((n, m)) => (n, m, 0),
        None => match s.split_once(['e', 'E']) {
            Some((n, e)) => (n, 1, exponent_of(e).ok_or_else(bad)?),
            None => (s, 1, 0),
        },
    };
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let down = u32::try_from(frac.len())
        .ok()
        .and_then(|f| f.checked_add(u32::try_from(-exponent.min(0)).ok()?))
        .filter(|d| *d <= MAX_POW10)
        .ok_or_else(bad)?;
    let up = u32::try_from(exponent.max(0))
        .ok()
        .filter(|u| *u <= MAX_POW10)
        .ok_or_else(bad)?;
    let digits: u128 = format!("{whole}{frac}").parse().map_err(|_| bad())?;
    let scaled = digits
        .checked_mul(multiplier)
        .and_then(|d| d.checked_mul(10u128.pow(up)))
        .ok_or_else(bad)?;
    let scale = 10u128.pow(down);
    if scaled % scale != 0 {
        return Err(bad());
    }
    u64::try_from(scaled / scale).map_err(|_| bad())
}

/// The signed decimal exponent after `e` (`9`, `+3`, `-3`); `None` if it is not one.
fn exponent_of(text: &str) -> Option<i32> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Parse a Go-style duration (`0s`, `1.5h`, `2h45m`, `300ms`).
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let bad = || UnitError::Duration(text.to_string());
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..split].parse().map_err(|_| bad())?;
        let unit_len = rest[split..]
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len() - split);
        let seconds = match &rest[split..split + unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * seconds;
        rest = &rest[split + unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad())
}

/// `10.0Gi`-style sizes, exact bytes below 1 KiB.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    let mut value = bytes as f64;
    let mut unit = None;
    for u in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = Some(u);
    }
    match unit {
        None => format!("{bytes}"),
        Some(u) => format!("{value:.1}{u}"),
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_from_quantities() {
        assert_eq!(parse_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(parse_bytes("10Gi"), Ok(10 << 30));
        assert_eq!(parse_bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_bytes("500M"), Ok(500_000_000));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("2k"), Ok(2000));
        // The apiserver keeps a quantity written with an exponent in that form.
        assert_eq!(parse_bytes("1e9"), Ok(1_000_000_000));
        assert_eq!(parse_bytes("15E8"), Ok(1_500_000_000));
        assert_eq!(parse_bytes("+1000e-3"), Ok(1));
        for bad in [
            "", "Gi", "-1Gi", "1.5", "1e-3", "1e", "1e3Gi", "100m", "1 Gi", "1GiB", "20Ei",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn sizes_read_like_quantities() {
        assert_eq!(human_bytes(512), "512");
        assert_eq!(human_bytes(10 << 30), "10.0Gi");
        assert_eq!(human_bytes(1536 << 20), "1.5Gi");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        for bad in ["", "5", "1d", "s", "h1", "1..5s", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
