//! Property tests of the quantity and duration parsers: any text either parses or is refused
//! with an error that carries it, and every form Kubernetes writes a byte count in reads back
//! as that count.

use proptest::prelude::*;

use super::*;

const BINARY: [&str; 6] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
const DECIMAL: [&str; 6] = ["k", "M", "G", "T", "P", "E"];

/// The forms the apiserver writes `n` bytes in: plain, the largest binary suffix that divides
/// it, the largest decimal suffix that divides it, and a decimal exponent.
fn canonical_forms(n: u64) -> Vec<String> {
    let mut forms = vec![n.to_string()];
    if let Some((i, _)) = (1..=6u32)
        .rev()
        .map(|i| (i, 1u64 << (10 * i)))
        .find(|(_, m)| n.is_multiple_of(*m))
    {
        forms.push(format!("{}{}", n >> (10 * i), BINARY[i as usize - 1]));
    }
    if let Some(i) = (1..=6u32)
        .rev()
        .find(|i| n.is_multiple_of(10u64.pow(3 * i)))
    {
        forms.push(format!(
            "{}{}",
            n / 10u64.pow(3 * i),
            DECIMAL[i as usize - 1]
        ));
    }
    let zeros = (0..20u32)
        .take_while(|k| n.is_multiple_of(10u64.pow(*k)))
        .last()
        .unwrap_or(0);
    forms.push(format!("{}e{zeros}", n / 10u64.pow(zeros)));
    forms
}

/// A quantity-shaped string: sign, digits, fraction, suffix or exponent, each maybe odd.
fn quantity_like() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["", "+", "-", " "]),
        "[0-9]{0,25}",
        prop::option::of("\\.[0-9]{0,22}"),
        prop::sample::select(vec![
            "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E", "m", "e", "E",
            "e3", "e-3", "E+9", "e40", "e-40", "GiB", "i",
        ]),
    )
        .prop_map(|(sign, digits, frac, suffix)| {
            format!("{sign}{digits}{}{suffix}", frac.unwrap_or_default())
        })
}

proptest! {
    #[test]
    fn any_text_parses_or_is_refused_naming_it(text in "\\PC{0,40}") {
        if let Err(e) = parse_bytes(&text) {
            prop_assert_eq!(e, UnitError::Quantity(text.clone()));
        }
        if let Err(e) = parse_duration(&text) {
            prop_assert_eq!(e, UnitError::Duration(text));
        }
    }

    #[test]
    fn quantity_shaped_text_parses_or_is_refused_naming_it(text in quantity_like()) {
        match parse_bytes(&text) {
            Ok(_) => prop_assert!(!text.contains('-') || text.contains("e-")),
            Err(e) => prop_assert_eq!(e, UnitError::Quantity(text)),
        }
    }

    #[test]
    fn every_form_the_apiserver_writes_reads_back(n in any::<u64>()) {
        for form in canonical_forms(n) {
            prop_assert_eq!(parse_bytes(&form), Ok(n), "{}", form);
        }
    }

    #[test]
    fn suffixes_multiply_exactly(n in 0u64..=8191, i in 0usize..6) {
        let binary = u64::try_from(u128::from(n) << (10 * (i + 1))).ok();
        prop_assert_eq!(parse_bytes(&format!("{n}{}", BINARY[i])).ok(), binary);
        let decimal = n.checked_mul(10u64.pow(3 * (i as u32 + 1)));
        prop_assert_eq!(parse_bytes(&format!("{n}{}", DECIMAL[i])).ok(), decimal);
    }

    #[test]
    fn human_sizes_read_back_within_their_rounding(n in any::<u64>()) {
        let text = human_bytes(n);
        // NB: one decimal of a unit is not always whole bytes ("1.1Gi"); when it is, it is
        // within half a tenth of the unit of the exact count.
        if let Ok(read) = parse_bytes(&text) {
            let unit = if n < 1024 { 1.0 } else { 1024f64.powi(((n as f64).log(1024.0)).floor() as i32) };
            prop_assert!((read as f64 - n as f64).abs() <= unit * 0.05 + 1.0, "{} read as {}", text, read);
        }
        prop_assert!(n >= 1024 || parse_bytes(&text) == Ok(n), "{}", text);
    }

    #[test]
    fn go_durations_read_back(h in 0u64..100_000, m in 0u64..60, s in 0u64..60, ms in 0u64..1000) {
        let text = format!("{h}h{m}m{s}s{ms}ms");
        let want = Duration::from_secs(h * 3600 + m * 60 + s) + Duration::from_millis(ms);
        let got = parse_duration(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let diff = got.abs_diff(want);
        prop_assert!(diff < Duration::from_micros(1), "{} read as {:?}", text, got);
    }
}
