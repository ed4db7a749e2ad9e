//! The PaySim CSV format: the Kaggle file's exact header, a row type, a strict reader that names
//! the line and reason of every bad row, and a fast writer.

use fraudstream_schemas::{Transaction, TransactionType};
use std::io::{BufRead, Write};

/// The Kaggle PaySim header, column for column.
pub const HEADER: &str = "step,type,amount,nameOrig,oldbalanceOrg,newbalanceOrig,nameDest,oldbalanceDest,newbalanceDest,isFraud,isFlaggedFraud";
const COLUMNS: usize = 11;

/// One PaySim row. Money is in the file's units (two decimals).
#[derive(Debug, Clone, PartialEq)]
pub struct PaySimRow {
    pub step: i32,
    pub tx_type: TransactionType,
    pub amount: f64,
    pub name_orig: String,
    pub oldbalance_org: f64,
    pub newbalance_orig: f64,
    pub name_dest: String,
    pub oldbalance_dest: f64,
    pub newbalance_dest: f64,
    pub is_fraud: bool,
    pub is_flagged_fraud: bool,
}

impl PaySimRow {
    /// The transaction to publish for this row (the label, `is_fraud`, travels separately).
    pub fn into_transaction(self, transaction_id: String, event_time: i64) -> Transaction {
        Transaction {
            transaction_id,
            event_time,
            step: self.step,
            tx_type: self.tx_type,
            amount: self.amount,
            name_orig: self.name_orig,
            oldbalance_org: self.oldbalance_org,
            newbalance_orig: self.newbalance_orig,
            name_dest: self.name_dest,
            oldbalance_dest: self.oldbalance_dest,
            newbalance_dest: self.newbalance_dest,
            is_flagged_fraud: self.is_flagged_fraud,
        }
    }

    /// The fields the shared feature code reads (same code as the scorer's).
    pub fn view(&self) -> fraudstream_common::features::TxView<'_> {
        fraudstream_common::features::TxView {
            step: self.step,
            tx_type: self.tx_type,
            amount: self.amount,
            name_orig: &self.name_orig,
            oldbalance_org: self.oldbalance_org,
            newbalance_orig: self.newbalance_orig,
            name_dest: &self.name_dest,
            oldbalance_dest: self.oldbalance_dest,
            newbalance_dest: self.newbalance_dest,
        }
    }
}

/// Problems with a PaySim file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsvError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: the file is empty; expected the PaySim header:\n  {HEADER}")]
    Empty { path: String },
    #[error("{path}:1: wrong header\n  found:    {found}\n  expected: {HEADER}\n(the file must have the Kaggle PaySim columns in this order)")]
    Header { path: String, found: String },
    #[error("{path}:{line}: {reason} (run without --strict to skip bad rows and report them)")]
    BadRow {
        path: String,
        line: u64,
        reason: String,
    },
}

/// A data row with its line number: parsed, or rejected with the reason.
pub type NumberedRow = (u64, Result<PaySimRow, BadRow>);

/// A rejected row: where it was and why.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRow {
    pub line: u64,
    pub reason: String,
    pub text: String,
}

/// Parses one data line (without the newline).
pub fn parse_row(text: &str) -> Result<PaySimRow, String> {
    let f: Vec<&str> = text.split(',').collect();
    if f.len() != COLUMNS {
        return Err(format!("expected {COLUMNS} columns, found {}", f.len()));
    }
    fn num<T: std::str::FromStr>(name: &str, s: &str) -> Result<T, String> {
        s.trim()
            .parse()
            .map_err(|_| format!("{name} is not a number: {s:?}"))
    }
    fn money(name: &str, s: &str) -> Result<f64, String> {
        let v: f64 = num(name, s)?;
        if v.is_finite() && v >= 0.0 {
            Ok(v)
        } else {
            Err(format!("{name} must be a non-negative number: {s:?}"))
        }
    }
    fn flag(name: &str, s: &str) -> Result<bool, String> {
        match s.trim() {
            "0" => Ok(false),
            "1" => Ok(true),
            other => Err(format!("{name} must be 0 or 1: {other:?}")),
        }
    }
    fn account(name: &str, s: &str) -> Result<String, String> {
        let s = s.trim();
        if s.is_empty() {
            Err(format!("{name} is empty"))
        } else {
            Ok(s.to_string())
        }
    }
    Ok(PaySimRow {
        step: num("step", f[0])?,
        tx_type: f[1].trim().parse()?,
        amount: money("amount", f[2])?,
        name_orig: account("nameOrig", f[3])?,
        oldbalance_org: money("oldbalanceOrg", f[4])?,
        newbalance_orig: money("newbalanceOrig", f[5])?,
        name_dest: account("nameDest", f[6])?,
        oldbalance_dest: money("oldbalanceDest", f[7])?,
        newbalance_dest: money("newbalanceDest", f[8])?,
        is_fraud: flag("isFraud", f[9])?,
        is_flagged_fraud: flag("isFlaggedFraud", f[10])?,
    })
}

/// Reads a PaySim CSV: checks the header first, then yields `(line number, row or bad row)`.
pub struct CsvReader<R> {
    path: String,
    input: R,
    line: u64,
    buf: String,
}

impl CsvReader<std::io::BufReader<std::fs::File>> {
    pub fn open(path: &std::path::Path) -> Result<Self, CsvError> {
        let file = std::fs::File::open(path).map_err(|source| CsvError::Io {
            path: path.display().to_string(),
            source,
        })?;
        CsvReader::new(
            &path.display().to_string(),
            std::io::BufReader::with_capacity(1 << 20, file),
        )
    }
}

impl<R: BufRead> CsvReader<R> {
    /// Wraps `input`, reading and checking the header line.
    pub fn new(path: &str, input: R) -> Result<Self, CsvError> {
        let mut reader = CsvReader {
            path: path.into(),
            input,
            line: 0,
            buf: String::new(),
        };
        match reader.next_line()? {
            None => Err(CsvError::Empty { path: path.into() }),
            Some(h) if h.trim_start_matches('\u{feff}').trim() == HEADER => Ok(reader),
            Some(h) => Err(CsvError::Header {
                path: path.into(),
                found: h.to_string(),
            }),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    fn next_line(&mut self) -> Result<Option<&str>, CsvError> {
        self.buf.clear();
        let n = self
            .input
            .read_line(&mut self.buf)
            .map_err(|source| CsvError::Io {
                path: self.path.clone(),
                source,
            })?;
        if n == 0 {
            return Ok(None);
        }
        self.line += 1;
        Ok(Some(self.buf.trim_end_matches(['\n', '\r'])))
    }

    /// The next data row (blank lines are skipped), or `None` at the end of the file.
    pub fn next_row(&mut self) -> Result<Option<NumberedRow>, CsvError> {
        loop {
            if self.next_line()?.is_none() {
                return Ok(None);
            }
            let text = self.buf.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                continue;
            }
            let line = self.line;
            let parsed = parse_row(text).map_err(|reason| BadRow {
                line,
                reason,
                text: text.to_string(),
            });
            return Ok(Some((line, parsed)));
        }
    }

    /// The error `--strict` stops with.
    pub fn strict_error(&self, bad: &BadRow) -> CsvError {
        CsvError::BadRow {
            path: self.path.clone(),
            line: bad.line,
            reason: bad.reason.clone(),
        }
    }
}

/// Writes money held in cents as `123.45` (fast: no float formatting).
pub fn write_cents(out: &mut Vec<u8>, cents: i64) {
    let mut b = itoa::Buffer::new();
    if cents < 0 {
        out.push(b'-');
    }
    let c = cents.unsigned_abs();
    out.extend_from_slice(b.format(c / 100).as_bytes());
    out.push(b'.');
    let frac = (c % 100) as u8;
    out.push(b'0' + frac / 10);
    out.push(b'0' + frac % 10);
}

/// A row with money in cents, as the simulator produces it; formats to one CSV line.
#[derive(Debug, Clone, Copy)]
pub struct CentsRow<'a> {
    pub step: i32,
    pub tx_type: TransactionType,
    pub amount: i64,
    pub name_orig: &'a [u8],
    pub oldbalance_org: i64,
    pub newbalance_orig: i64,
    pub name_dest: &'a [u8],
    pub oldbalance_dest: i64,
    pub newbalance_dest: i64,
    pub is_fraud: bool,
    pub is_flagged_fraud: bool,
}

impl CentsRow<'_> {
    pub fn write_line(&self, out: &mut Vec<u8>) {
        let mut b = itoa::Buffer::new();
        out.extend_from_slice(b.format(self.step).as_bytes());
        out.push(b',');
        out.extend_from_slice(self.tx_type.as_str().as_bytes());
        out.push(b',');
        write_cents(out, self.amount);
        out.push(b',');
        out.extend_from_slice(self.name_orig);
        out.push(b',');
        write_cents(out, self.oldbalance_org);
        out.push(b',');
        write_cents(out, self.newbalance_orig);
        out.push(b',');
        out.extend_from_slice(self.name_dest);
        out.push(b',');
        write_cents(out, self.oldbalance_dest);
        out.push(b',');
        write_cents(out, self.newbalance_dest);
        out.push(b',');
        out.push(if self.is_fraud { b'1' } else { b'0' });
        out.push(b',');
        out.push(if self.is_flagged_fraud { b'1' } else { b'0' });
        out.push(b'\n');
    }
}

/// Writes the header line.
pub fn write_header(out: &mut impl Write) -> std::io::Result<()> {
    out.write_all(HEADER.as_bytes())?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_kaggle_row() {
        let r =
            parse_row("1,PAYMENT,9839.64,C1231006815,170136.0,160296.36,M1979787155,0.0,0.0,0,0")
                .unwrap();
        assert_eq!(r.step, 1);
        assert_eq!(r.tx_type, TransactionType::Payment);
        assert_eq!(r.amount, 9839.64);
        assert_eq!(r.name_dest, "M1979787155");
        assert!(!r.is_fraud);
    }

    #[test]
    fn bad_rows_say_why() {
        let cases = [
            ("1,PAYMENT,9839.64", "expected 11 columns, found 3"),
            (
                "1,PAYMNT,1,C1,0,0,M1,0,0,0,0",
                "unknown transaction type \"PAYMNT\"",
            ),
            ("x,PAYMENT,1,C1,0,0,M1,0,0,0,0", "step is not a number"),
            ("1,PAYMENT,abc,C1,0,0,M1,0,0,0,0", "amount is not a number"),
            (
                "1,PAYMENT,-5,C1,0,0,M1,0,0,0,0",
                "amount must be a non-negative number",
            ),
            ("1,PAYMENT,5,C1,0,0,M1,0,0,2,0", "isFraud must be 0 or 1"),
            ("1,PAYMENT,5,,0,0,M1,0,0,0,0", "nameOrig is empty"),
        ];
        for (line, want) in cases {
            let err = parse_row(line).unwrap_err();
            assert!(err.contains(want), "{line}: {err}");
        }
    }

    #[test]
    fn header_is_checked_before_any_row() {
        let err = CsvReader::new("f.csv", "step,type,amount\n1,2,3\n".as_bytes())
            .err()
            .unwrap();
        assert!(err.to_string().contains("f.csv:1: wrong header"), "{err}");
        assert!(matches!(
            CsvReader::new("e.csv", "".as_bytes()),
            Err(CsvError::Empty { .. })
        ));
    }

    #[test]
    fn reader_reports_line_numbers() {
        let text = format!(
            "{HEADER}\n1,PAYMENT,1.5,C1,10,8.5,M1,0,0,0,0\n\n1,PAYMENT,oops,C1,0,0,M1,0,0,0,0\n"
        );
        let mut r = CsvReader::new("f.csv", text.as_bytes()).unwrap();
        let (l1, ok) = r.next_row().unwrap().unwrap();
        assert_eq!(l1, 2);
        assert!(ok.is_ok());
        let (l2, bad) = r.next_row().unwrap().unwrap();
        assert_eq!(l2, 4);
        assert_eq!(bad.unwrap_err().line, 4);
        assert!(r.next_row().unwrap().is_none());
    }

    #[test]
    fn cents_format_round_trips() {
        for cents in [0, 5, 99, 100, 123456789, 100_000_000_000] {
            let mut out = Vec::new();
            write_cents(&mut out, cents);
            let s = String::from_utf8(out).unwrap();
            assert_eq!(
                (s.parse::<f64>().unwrap() * 100.0).round() as i64,
                cents,
                "{s}"
            );
        }
    }
}
