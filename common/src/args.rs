//! Value parsers shared by the services' flags: a flag in milliseconds or MiB becomes the
//! `Duration` or byte count the code uses, so no `main` converts fields one by one.

use std::time::Duration;

/// `--...-ms 250` → 250 ms.
pub fn millis(s: &str) -> Result<Duration, String> {
    s.trim()
        .parse()
        .map(Duration::from_millis)
        .map_err(|_| format!("{s:?} is not a whole number of milliseconds"))
}

/// `--...-mib 64` → 64 MiB in bytes.
pub fn mebibytes(s: &str) -> Result<usize, String> {
    s.trim()
        .parse::<usize>()
        .ok()
        .and_then(|mib| mib.checked_mul(1 << 20))
        .ok_or_else(|| format!("{s:?} is not a whole number of MiB"))
}

/// `30s`, `10m`, `24h`, `2d` (a bare number is seconds) → a `Duration`.
pub fn duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let scale = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => f64::NAN,
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .map(|n| n * scale)
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{s:?} is not a duration: use e.g. 30s, 10m, 24h or 2d"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_in_units_become_durations_and_bytes() {
        assert_eq!(millis("250"), Ok(Duration::from_millis(250)));
        assert_eq!(mebibytes("64"), Ok(64 << 20));
        assert!(millis("1.5").unwrap_err().contains("milliseconds"));
        assert!(mebibytes("-1").unwrap_err().contains("MiB"));
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(duration("3 weeks").unwrap_err().contains("24h"));
    }
}
