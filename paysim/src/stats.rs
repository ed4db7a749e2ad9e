//! Statistics of a PaySim file, printed beside PaySim's published figures so a user can judge a
//! generated (or real) file at a glance.

use crate::format::{BadRow, CsvError, CsvReader, PaySimRow};
use crate::simulate::PAYSIM_TYPE_SHARES;
use fraudstream_schemas::TransactionType;
use std::fmt::Write as _;

/// Counts and distributions of one file.
#[derive(Debug, Clone, Default)]
pub struct FileStats {
    pub rows: u64,
    pub bad_rows: Vec<BadRow>,
    pub by_type: [u64; 5],
    pub fraud_by_type: [u64; 5],
    pub flagged: u64,
    /// Non-fraud rows whose balances do not add up (see [`balances_consistent`]).
    pub inconsistent_normal: u64,
    pub amounts_by_type: [Vec<f64>; 5],
    pub first_step: i32,
    pub last_step: i32,
}

fn type_index(t: TransactionType) -> usize {
    TransactionType::ALL.iter().position(|x| *x == t).unwrap()
}

/// Do the row's balances add up? The origin loses the amount (gains it for CASH_IN); a customer
/// destination gains it (an agent loses it for CASH_IN); merchants' balances are not tracked.
pub fn balances_consistent(r: &PaySimRow) -> bool {
    let close = |a: f64, b: f64| (a - b).abs() < 0.011;
    let (orig_ok, dest_ok) = match r.tx_type {
        TransactionType::CashIn => (
            close(r.oldbalance_org + r.amount, r.newbalance_orig),
            close(r.oldbalance_dest - r.amount, r.newbalance_dest),
        ),
        _ => (
            close(r.oldbalance_org - r.amount, r.newbalance_orig),
            if r.name_dest.starts_with('M') {
                r.oldbalance_dest == 0.0 && r.newbalance_dest == 0.0
            } else {
                close(r.oldbalance_dest + r.amount, r.newbalance_dest)
            },
        ),
    };
    orig_ok && dest_ok
}

impl FileStats {
    pub fn add(&mut self, r: &PaySimRow) {
        let i = type_index(r.tx_type);
        if self.rows == 0 {
            self.first_step = r.step;
        }
        self.rows += 1;
        self.last_step = self.last_step.max(r.step);
        self.first_step = self.first_step.min(r.step);
        self.by_type[i] += 1;
        self.fraud_by_type[i] += r.is_fraud as u64;
        self.flagged += r.is_flagged_fraud as u64;
        if !r.is_fraud && !balances_consistent(r) {
            self.inconsistent_normal += 1;
        }
        self.amounts_by_type[i].push(r.amount);
    }

    pub fn fraud(&self) -> u64 {
        self.fraud_by_type.iter().sum()
    }

    pub fn type_share(&self, t: TransactionType) -> f64 {
        self.by_type[type_index(t)] as f64 / self.rows.max(1) as f64
    }

    /// Reads a whole file. Bad rows are collected, not fatal.
    pub fn of_file(path: &std::path::Path) -> Result<FileStats, CsvError> {
        let mut reader = CsvReader::open(path)?;
        let mut stats = FileStats::default();
        while let Some((_, row)) = reader.next_row()? {
            match row {
                Ok(r) => stats.add(&r),
                Err(bad) => stats.bad_rows.push(bad),
            }
        }
        Ok(stats)
    }

    /// A markdown report with PaySim's published figures alongside.
    pub fn report(&mut self) -> String {
        let mut s = String::new();
        let fraud = self.fraud();
        let _ = writeln!(
            s,
            "{} rows, steps {}..{}, fraud {} ({:.3}%; PaySim 0.129%), flagged {} (PaySim 16 of 6.36M)",
            self.rows,
            self.first_step,
            self.last_step,
            fraud,
            100.0 * fraud as f64 / self.rows.max(1) as f64,
            self.flagged
        );
        if !self.bad_rows.is_empty() {
            let _ = writeln!(
                s,
                "{} bad rows skipped (first: line {}: {})",
                self.bad_rows.len(),
                self.bad_rows[0].line,
                self.bad_rows[0].reason
            );
        }
        let _ = writeln!(
            s,
            "non-fraud rows whose balances do not add up: {}\n",
            self.inconsistent_normal
        );
        let _ = writeln!(s, "| type | rows | share | PaySim share | fraud | fraud rate | amount p50 | p90 | p99 | max |");
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (i, t) in TransactionType::ALL.iter().enumerate() {
            let amounts = &mut self.amounts_by_type[i];
            amounts.sort_by(f64::total_cmp);
            let q = |p: f64| {
                if amounts.is_empty() {
                    0.0
                } else {
                    amounts[((amounts.len() - 1) as f64 * p) as usize]
                }
            };
            let n = self.by_type[i];
            let _ = writeln!(
                s,
                "| {} | {} | {:.2}% | {:.2}% | {} | {:.3}% | {:.2} | {:.2} | {:.2} | {:.2} |",
                t,
                n,
                100.0 * n as f64 / self.rows.max(1) as f64,
                100.0 * PAYSIM_TYPE_SHARES[i],
                self.fraud_by_type[i],
                100.0 * self.fraud_by_type[i] as f64 / n.max(1) as f64,
                q(0.5),
                q(0.9),
                q(0.99),
                q(1.0)
            );
        }
        s
    }
}
