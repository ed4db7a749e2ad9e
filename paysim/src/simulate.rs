//! A PaySim-like simulator, since the Kaggle file cannot be shipped.
//!
//! It follows PaySim's published shape rather than replaying it: 744 hourly steps with a daily
//! cycle and most activity in the first ~400 steps; the Kaggle type mix; customers `C…` whose
//! balances update consistently across their transactions; merchants `M…` (PAYMENT destinations,
//! balances not tracked, as in PaySim); agents that pay out CASH_IN and take CASH_OUT.
//! Fraud happens only the way PaySim does it: a fraudster takes over a victim's account, drains it
//! with TRANSFER(s) of at most 10M to a mule (whose recorded balances stay 0, a PaySim artifact),
//! and the mule cashes out the same amount at once, emptying its account. Fraud is spread evenly
//! over time (not with the daily
//! cycle), so the late, quiet steps have a higher fraud rate, as in PaySim. A large fraudulent
//! transfer (> 200,000) is sometimes caught by PaySim's rule: flagged, blocked (no money moves),
//! and not cashed out.
//!
//! That is the `kaggle` profile. The `realistic` one (the default of `producer simulate`) turns
//! on the knobs of [`crate::profile::Knobs`]: partial drains, chunks under the flag threshold,
//! mules reused by several victims with their balances recorded, cash-outs hours later, normal
//! customers who empty their accounts, PaySim's unrecorded destination balances on normal rows,
//! and takeovers nobody reports. [`crate::profile::Drift`] switches on a new pattern mid-month.
//!
//! Deterministic per seed. Money is kept in cents so rows format without float printing.

use crate::format::{write_header, CentsRow};
use crate::profile::{Drift, Knobs, Pattern, Profile};

mod fraud;
use fraud::CashOut;
use fraudstream_schemas::TransactionType;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::Write;

/// Number of hourly steps in PaySim (31 days).
pub const STEPS: i32 = 744;
/// PaySim's fraud share of rows (8,213 of 6,362,620).
pub const FRAUD_RATE: f64 = 8213.0 / 6_362_620.0;
/// The Kaggle type shares, in `TransactionType::ALL` order (PAYMENT, TRANSFER, CASH_OUT, DEBIT, CASH_IN).
pub const PAYSIM_TYPE_SHARES: [f64; 5] = [0.33815, 0.08376, 0.35166, 0.00651, 0.21992];
/// Largest single transfer; PaySim splits bigger thefts into several.
const MAX_TRANSFER_CENTS: i64 = 10_000_000 * 100;
const FLAG_THRESHOLD_CENTS: i64 = 200_000 * 100;

/// Relative activity by hour of day (PaySim is quiet at night).
const HOURLY: [f64; 24] = [
    0.10, 0.05, 0.03, 0.02, 0.02, 0.04, 0.12, 0.35, 0.60, 0.85, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
    0.95, 0.90, 0.85, 0.70, 0.50, 0.30, 0.18,
];

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    pub rows: u64,
    pub seed: u64,
    pub profile: Profile,
    /// New fraud patterns and the step each starts at.
    pub drifts: Vec<Drift>,
}

/// What a simulation produced.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimSummary {
    pub rows: u64,
    /// Rows labelled fraud (`isFraud` = 1).
    pub fraud_rows: u64,
    pub flagged_rows: u64,
    /// Fraud rows labelled 0 because the takeover was never reported.
    pub unreported_rows: u64,
    /// Fraud rows of a drift pattern (reported or not).
    pub drift_rows: u64,
}

/// Rows of each step, proportional to the daily cycle and PaySim's front-loaded month.
fn step_weight(step: i32) -> f64 {
    let trend = if step <= 404 { 1.0 } else { 0.06 };
    HOURLY[((step - 1) % 24) as usize] * trend
}

/// Compact account ids that look like PaySim's (`C1231006815`): a bijection of the index, so
/// every index gets its own id.
fn account_id(prefix: u8, index: usize, buf: &mut Vec<u8>) {
    buf.clear();
    buf.push(prefix);
    let scrambled = (index as u32).wrapping_mul(2_654_435_761) as u64 + 1_000_000_000;
    buf.extend_from_slice(itoa::Buffer::new().format(scrambled).as_bytes());
}

struct World {
    rng: SmallRng,
    knobs: Knobs,
    balances: Vec<i64>,
    agents: usize,
    merchants: usize,
    /// The fraud ring's mule accounts (realistic profile), fixed from the start so that reuse is
    /// the same early and late in the month (a pool that grew would make early mules busier).
    mules: Vec<usize>,
    pending: Vec<CashOut>,
    orig: Vec<u8>,
    dest: Vec<u8>,
}

impl World {
    fn new(rows: u64, seed: u64, knobs: Knobs) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let customers = (rows / 3).clamp(2_000, 50_000_000) as usize;
        let agents = (customers / 100).max(100);
        let balances = (0..customers)
            .map(|i| {
                let (median, sigma) = if i < agents {
                    (2.0e6, 1.0)
                } else {
                    (2.5e5, 1.3)
                };
                to_cents(lognormal(&mut rng, median, sigma))
            })
            .collect();
        World {
            rng,
            knobs,
            balances,
            agents,
            merchants: (rows / 6).max(1_000) as usize,
            mules: Vec::new(), // filled by `recruit_mules` once the number of takeovers is known
            pending: Vec::new(),
            orig: Vec::with_capacity(16),
            dest: Vec::with_capacity(16),
        }
    }

    fn customer(&mut self) -> usize {
        self.rng.random_range(self.agents..self.balances.len())
    }

    fn agent(&mut self) -> usize {
        self.rng.random_range(0..self.agents)
    }

    /// True with probability `p`; draws nothing when `p` is 0, so the `kaggle` profile makes
    /// the same file it always made.
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    /// The destination balances as written: PaySim leaves many unrecorded (0/0) or stale.
    fn recorded_dest(&mut self, old: i64, new: i64) -> (i64, i64) {
        if self.chance(self.knobs.normal_dest_unrecorded) {
            (0, 0)
        } else if self.chance(self.knobs.normal_dest_stale) {
            (old, old)
        } else {
            (old, new)
        }
    }

    /// One ordinary transaction of `step`, appended to `out`.
    fn normal(&mut self, step: i32, out: &mut Vec<u8>) {
        let u: f64 = self.rng.random();
        let mut acc = 0.0;
        let mut tx_type = TransactionType::CashIn;
        for (t, share) in TransactionType::ALL.iter().zip(PAYSIM_TYPE_SHARES) {
            acc += share;
            if u < acc {
                tx_type = *t;
                break;
            }
        }
        let (median, sigma, cap) = match tx_type {
            TransactionType::Payment => (9_000.0, 0.9, 250_000.0),
            TransactionType::Transfer => (480_000.0, 1.0, 10_000_000.0),
            TransactionType::CashOut => (140_000.0, 0.8, 2_500_000.0),
            TransactionType::CashIn => (140_000.0, 0.8, 2_000_000.0),
            TransactionType::Debit => (3_000.0, 0.9, 100_000.0),
        };
        let mut amount = to_cents(lognormal(&mut self.rng, median, sigma).min(cap)).max(1);
        let credit = tx_type == TransactionType::CashIn;
        // A customer can only spend what they have: look for one who can afford it, else spend part.
        let mut orig = self.customer();
        if !credit {
            for _ in 0..3 {
                if self.balances[orig] >= amount {
                    break;
                }
                orig = self.customer();
            }
            if self.balances[orig] < amount {
                let part: f64 = self.rng.random_range(0.05..0.999);
                amount = ((self.balances[orig] as f64 * part) as i64).max(1);
                if self.balances[orig] < amount {
                    // An empty account gets paid first: the transaction becomes a CASH_IN.
                    return self.emit_cash_in(step, orig, amount, out);
                }
            }
        }
        if credit {
            return self.emit_cash_in(step, orig, amount, out);
        }
        let moves_money = matches!(
            tx_type,
            TransactionType::Transfer | TransactionType::CashOut
        );
        let can_empty = self.balances[orig] > 0 && self.balances[orig] <= to_cents(cap);
        if moves_money && can_empty && self.chance(self.knobs.normal_empties) {
            amount = self.balances[orig];
        }
        let old_org = self.balances[orig];
        self.balances[orig] -= amount;
        account_id(b'C', orig, &mut self.orig);
        let (old_dest, new_dest) = match tx_type {
            TransactionType::Payment => {
                let m = self.rng.random_range(0..self.merchants);
                account_id(b'M', m, &mut self.dest);
                (0, 0)
            }
            _ => {
                let d = if tx_type == TransactionType::CashOut {
                    self.agent()
                } else {
                    self.customer()
                };
                account_id(b'C', d, &mut self.dest);
                let old = self.balances[d];
                self.balances[d] += amount;
                self.bank_float(d);
                self.recorded_dest(old, old + amount)
            }
        };
        CentsRow {
            step,
            tx_type,
            amount,
            name_orig: &self.orig,
            oldbalance_org: old_org,
            newbalance_orig: old_org - amount,
            name_dest: &self.dest,
            oldbalance_dest: old_dest,
            newbalance_dest: new_dest,
            is_fraud: false,
            is_flagged_fraud: false,
        }
        .write_line(out);
    }

    /// An agent whose cash float passed the cap banks most of it (not a row of the data set).
    /// Without this, agents' balances only grow through the month, and a model learns the
    /// destination balance of a CASH_OUT as a clock (realistic profile only).
    fn bank_float(&mut self, account: usize) {
        let cap = self.knobs.agent_float_cap_cents;
        if account < self.agents && cap > 0 && self.balances[account] > cap {
            self.balances[account] = cap / 4;
        }
    }

    /// A CASH_IN: an agent pays `amount` into the customer's account.
    fn emit_cash_in(&mut self, step: i32, orig: usize, amount: i64, out: &mut Vec<u8>) {
        let agent = self.agent();
        if self.balances[agent] < amount {
            // The agent's float is refilled by its bank (not a transaction of the data set).
            self.balances[agent] += amount + 10_000_000 * 100;
        }
        let old_org = self.balances[orig];
        let old_dest = self.balances[agent];
        self.balances[orig] += amount;
        self.balances[agent] -= amount;
        account_id(b'C', orig, &mut self.orig);
        account_id(b'C', agent, &mut self.dest);
        CentsRow {
            step,
            tx_type: TransactionType::CashIn,
            amount,
            name_orig: &self.orig,
            oldbalance_org: old_org,
            newbalance_orig: old_org + amount,
            name_dest: &self.dest,
            oldbalance_dest: old_dest,
            newbalance_dest: old_dest - amount,
            is_fraud: false,
            is_flagged_fraud: false,
        }
        .write_line(out);
    }
}
fn to_cents(units: f64) -> i64 {
    (units * 100.0).round() as i64
}

/// exp(N(ln median, sigma)), by Box-Muller.
fn lognormal(rng: &mut SmallRng, median: f64, sigma: f64) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    median * (sigma * z).exp()
}

/// Writes `rows` rows of the `kaggle` profile (plus the header) to `out`. `progress` is called
/// with the running row count every so often.
pub fn simulate(
    rows: u64,
    seed: u64,
    out: &mut impl Write,
    progress: impl FnMut(u64),
) -> std::io::Result<SimSummary> {
    let cfg = SimConfig {
        rows,
        seed,
        profile: Profile::Kaggle,
        drifts: Vec::new(),
    };
    simulate_with(&cfg, out, progress)
}

/// Writes `cfg.rows` rows (plus the header) to `out`, with the profile's knobs and the drifts.
pub fn simulate_with(
    cfg: &SimConfig,
    out: &mut impl Write,
    mut progress: impl FnMut(u64),
) -> std::io::Result<SimSummary> {
    let rows = cfg.rows;
    write_header(out)?;
    let mut world = World::new(rows, cfg.seed, cfg.profile.knobs());
    let total_weight: f64 = (1..=STEPS).map(step_weight).sum();
    // Fraud events spread evenly over the month, as many as give PaySim's fraud share of rows.
    let events = (rows as f64 * FRAUD_RATE / world.knobs.rows_per_event).round() as u64;
    world.recruit_mules(events);
    let mut summary = SimSummary::default();
    let mut buf = Vec::with_capacity(1 << 21);
    let mut cumulative = 0.0;
    let mut frauds = 0u64;
    for step in 1..=STEPS {
        cumulative += step_weight(step);
        let target = if step == STEPS {
            rows
        } else {
            (rows as f64 * cumulative / total_weight).round() as u64
        };
        let card_testing = cfg
            .drifts
            .iter()
            .any(|d| d.pattern == Pattern::CardTesting && step >= d.from_step);
        // Frauds a quiet step had no room for move on to the next step; a drift doubles them.
        let share = events * step as u64 / STEPS as u64 - events * (step as u64 - 1) / STEPS as u64;
        frauds += if card_testing { 2 * share } else { share };
        summary.add_fraud(world.due_cash_outs(step, &mut buf));
        while summary.rows < target {
            // Place this step's frauds at random points among its rows.
            let left = target - summary.rows;
            if frauds > 0 && left > 16 && world.rng.random_range(0..left) < frauds * 2 {
                frauds -= 1;
                let testing = card_testing && world.rng.random::<f64>() < 0.5;
                summary.add_fraud(world.fraud(step, testing, &mut buf));
            } else {
                world.normal(step, &mut buf);
                summary.rows += 1;
            }
            if buf.len() >= 1 << 20 {
                out.write_all(&buf)?;
                buf.clear();
                progress(summary.rows);
            }
        }
    }
    summary.add_fraud(world.due_cash_outs(STEPS, &mut buf));
    out.write_all(&buf)?;
    out.flush()?;
    progress(summary.rows);
    Ok(summary)
}
