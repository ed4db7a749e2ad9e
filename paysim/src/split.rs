//! The historical/stream split, by time (step), never by random rows: a model is trained on the
//! past and judged on the future, as it will be used.

use crate::format::{parse_row, CsvError, CsvReader, HEADER};
use std::io::{BufRead, BufWriter, Write};
use std::path::Path;

/// What a split did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SplitSummary {
    /// Last step in the historical part; the stream starts at `cut_step + 1`.
    pub cut_step: i32,
    pub historical_rows: u64,
    pub historical_fraud: u64,
    pub stream_rows: u64,
    pub stream_fraud: u64,
    pub bad_rows: u64,
}

/// Splits `input` so that about `ratio` of the rows (whole steps only) go to `historical`.
/// Rows are copied byte for byte; bad rows are counted and left out of both.
pub fn split(
    input: &Path,
    ratio: f64,
    historical: &Path,
    stream: &Path,
) -> Result<SplitSummary, CsvError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| CsvError::Io {
            path: path.clone(),
            source,
        }
    };
    // Pass 1: rows per step.
    let mut per_step: std::collections::BTreeMap<i32, u64> = Default::default();
    let mut reader = CsvReader::open(input)?;
    let mut total = 0u64;
    while let Some((_, row)) = reader.next_row()? {
        if let Ok(r) = row {
            *per_step.entry(r.step).or_default() += 1;
            total += 1;
        }
    }
    let want = (total as f64 * ratio).round() as u64;
    let mut cut_step = per_step.keys().next().copied().unwrap_or(0);
    let mut acc = 0;
    for (step, n) in &per_step {
        acc += n;
        cut_step = *step;
        if acc >= want {
            break;
        }
    }
    // Pass 2: copy lines.
    let file = std::fs::File::open(input).map_err(io(input))?;
    let mut lines = std::io::BufReader::with_capacity(1 << 20, file);
    let mut hist = BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(historical).map_err(io(historical))?,
    );
    let mut strm =
        BufWriter::with_capacity(1 << 20, std::fs::File::create(stream).map_err(io(stream))?);
    writeln!(hist, "{HEADER}").map_err(io(historical))?;
    writeln!(strm, "{HEADER}").map_err(io(stream))?;
    let mut summary = SplitSummary {
        cut_step,
        ..Default::default()
    };
    let mut line = String::new();
    let mut first = true;
    loop {
        line.clear();
        if lines.read_line(&mut line).map_err(io(input))? == 0 {
            break;
        }
        if std::mem::take(&mut first) {
            continue; // the header, already checked in pass 1
        }
        let text = line.trim_end_matches(['\n', '\r']);
        let Ok(r) = parse_row(text) else {
            if !text.trim().is_empty() {
                summary.bad_rows += 1;
            }
            continue;
        };
        if r.step <= cut_step {
            summary.historical_rows += 1;
            summary.historical_fraud += r.is_fraud as u64;
            writeln!(hist, "{text}").map_err(io(historical))?;
        } else {
            summary.stream_rows += 1;
            summary.stream_fraud += r.is_fraud as u64;
            writeln!(strm, "{text}").map_err(io(stream))?;
        }
    }
    hist.flush().map_err(io(historical))?;
    strm.flush().map_err(io(stream))?;
    Ok(summary)
}
