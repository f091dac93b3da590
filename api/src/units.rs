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

/// Parse a Kubernetes quantity into bytes. Fractions are allowed when they give whole bytes
/// (`1.5Gi`); negative values, exponents and milli-units are refused.
pub fn parse_bytes(text: &str) -> Result<u64, UnitError> {
    let bad = || UnitError::Quantity(text.to_string());
    let s = text.trim();
    let (number, multiplier) = SUFFIXES
        .iter()
        .find_map(|(suffix, m)| s.strip_suffix(suffix).map(|n| (n, *m)))
        .unwrap_or((s, 1));
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 18
    {
        return Err(bad());
    }
    let scale = 10u128.pow(frac.len() as u32);
    let digits: u128 = format!("{whole}{frac}").parse().map_err(|_| bad())?;
    let scaled = digits.checked_mul(multiplier).ok_or_else(bad)?;
    if scaled % scale != 0 {
        return Err(bad());
    }
    u64::try_from(scaled / scale).map_err(|_| bad())
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
        for bad in [
            "", "Gi", "-1Gi", "1.5", "1e3", "100m", "1 Gi", "1GiB", "20Ei",
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
