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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_in_units_become_durations_and_bytes() {
        assert_eq!(millis("250"), Ok(Duration::from_millis(250)));
        assert_eq!(mebibytes("64"), Ok(64 << 20));
        assert!(millis("1.5").unwrap_err().contains("milliseconds"));
        assert!(mebibytes("-1").unwrap_err().contains("MiB"));
    }
}
