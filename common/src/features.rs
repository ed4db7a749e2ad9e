//! The features of a transaction: one function, used by the trainer to build its training matrix
//! and by the scorer on the live stream, so the two can never disagree (no training/serving skew).
//!
//! Besides the PaySim fields it keeps per-origin-account history (count and sum over the last
//! [`WINDOW_STEPS`] steps, steps since the previous transaction). Both sides feed transactions
//! through [`AccountHistory`] in event order; the scorer can do so because Kafka's key is the
//! origin account, so all of an account's transactions reach the same scorer, in order.

use crate::accounts::{hash_name, AccountTable};
use fraudstream_schemas::{Transaction, TransactionType};
use smallvec::SmallVec;

/// How far back the per-account window reaches, in PaySim steps (hours).
pub const WINDOW_STEPS: i32 = 24;
/// `steps_since_last` for an account seen for the first time.
pub const NEVER_SEEN: f64 = -1.0;

/// The feature names, in matrix column order. A model trained on other features is refused.
pub const FEATURE_NAMES: [&str; 21] = [
    "step",
    "hour_of_day",
    "type_payment",
    "type_transfer",
    "type_cash_out",
    "type_debit",
    "type_cash_in",
    "amount",
    "oldbalance_org",
    "newbalance_orig",
    "oldbalance_dest",
    "newbalance_dest",
    "error_balance_orig",
    "error_balance_dest",
    "dest_is_merchant",
    "amount_to_balance_org",
    "amount_to_balance_dest",
    "orig_emptied",
    "orig_tx_count_window",
    "orig_amount_sum_window",
    "orig_steps_since_last",
];
pub const N_FEATURES: usize = FEATURE_NAMES.len();

/// The feature names as owned strings (for model metadata).
pub fn feature_names() -> Vec<String> {
    FEATURE_NAMES.iter().map(|s| s.to_string()).collect()
}

/// The fields features are computed from: a `Transaction` or a training row.
#[derive(Debug, Clone, Copy)]
pub struct TxView<'a> {
    pub step: i32,
    pub tx_type: TransactionType,
    pub amount: f64,
    pub name_orig: &'a str,
    pub oldbalance_org: f64,
    pub newbalance_orig: f64,
    pub name_dest: &'a str,
    pub oldbalance_dest: f64,
    pub newbalance_dest: f64,
}

impl<'a> From<&'a Transaction> for TxView<'a> {
    fn from(t: &'a Transaction) -> Self {
        TxView {
            step: t.step,
            tx_type: t.tx_type,
            amount: t.amount,
            name_orig: &t.name_orig,
            oldbalance_org: t.oldbalance_org,
            newbalance_orig: t.newbalance_orig,
            name_dest: &t.name_dest,
            oldbalance_dest: t.oldbalance_dest,
            newbalance_dest: t.newbalance_dest,
        }
    }
}

/// What the history knew about the account before this transaction.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AccountFeatures {
    pub count_window: f64,
    pub sum_window: f64,
    pub steps_since_last: f64,
}

/// One account's recent transactions, oldest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountState {
    /// (position, step, amount); position = Kafka offset in the scorer, row index in the trainer.
    /// Most accounts have one transaction in the window: it is stored inline, without a heap
    /// allocation of its own.
    pub recent: SmallVec<[(i64, i32, f64); 1]>,
}

impl AccountState {
    /// Features from what came before `position`, then records this transaction.
    ///
    /// Entries at or after `position` are forgotten first: when a Kafka transaction is aborted and
    /// its records are processed again, they see exactly the state they saw the first time.
    pub fn observe(&mut self, position: i64, step: i32, amount: f64) -> AccountFeatures {
        self.recent
            .retain(|&mut (p, s, _)| p < position && step - s < WINDOW_STEPS);
        let last = self.recent.iter().map(|(_, s, _)| *s).max();
        let features = AccountFeatures {
            count_window: self.recent.len() as f64,
            sum_window: self.recent.iter().map(|(_, _, a)| a).sum(),
            steps_since_last: last.map_or(NEVER_SEEN, |l| (step - l) as f64),
        };
        self.recent.push((position, step, amount));
        features
    }

    /// True when nothing in the window is left at `step`: the state can be forgotten.
    pub fn expired(&self, step: i32) -> bool {
        self.recent.iter().all(|(_, s, _)| step - s >= WINDOW_STEPS)
    }
}

/// Per-origin-account history, fed in event order.
#[derive(Debug, Default)]
pub struct AccountHistory {
    /// Keyed by account name, in a table that can prefetch ([`AccountHistory::prefetch`]).
    pub accounts: AccountTable,
    /// The newest step seen, and the step of the last sweep of expired accounts.
    newest: Option<(i32, i32)>,
}

/// Expired accounts are swept whenever the newest step has moved this far: the table holds about
/// the accounts of the last `WINDOW_STEPS + SWEEP_EVERY` steps, small enough to stay in cache.
/// Sweeping changes no feature: an account with nothing in the window reads as never seen.
const SWEEP_EVERY: i32 = WINDOW_STEPS / 4;

impl AccountHistory {
    pub fn observe(
        &mut self,
        name_orig: &str,
        position: i64,
        step: i32,
        amount: f64,
    ) -> AccountFeatures {
        self.observe_hashed(hash_name(name_orig), name_orig, position, step, amount)
    }

    /// [`AccountHistory::observe`] with the name's [`hash_name`] computed beforehand (once, for
    /// both the prefetch and the lookup).
    pub fn observe_hashed(
        &mut self,
        hash: u64,
        name_orig: &str,
        position: i64,
        step: i32,
        amount: f64,
    ) -> AccountFeatures {
        match self.newest {
            None => self.newest = Some((step, step)),
            Some((newest, swept)) if step > newest => {
                if step - swept >= SWEEP_EVERY {
                    self.evict_expired(step);
                    self.newest = Some((step, step));
                } else {
                    self.newest = Some((step, swept));
                }
            }
            Some(_) => {}
        }
        self.accounts
            .entry(hash, name_orig)
            .observe(position, step, amount)
    }

    /// Starts loading the state of the name whose [`hash_name`] is `hash`: called a few
    /// transactions ahead, it overlaps the cache misses of their lookups.
    pub fn prefetch(&self, hash: u64) {
        self.accounts.prefetch(hash);
    }

    /// Drops accounts with nothing inside the window at `step` (keeps memory bounded).
    pub fn evict_expired(&mut self, step: i32) {
        self.accounts.retain(|s| !s.expired(step));
    }
}

/// Appends the [`N_FEATURES`] features of `tx` to `out` (row-major matrix building).
pub fn push_features(tx: &TxView<'_>, account: AccountFeatures, out: &mut Vec<f64>) {
    let t = tx.tx_type;
    let one_hot = |x: TransactionType| if t == x { 1.0 } else { 0.0 };
    let merchant = tx.name_dest.starts_with('M');
    out.extend_from_slice(&[
        tx.step as f64,
        (tx.step.rem_euclid(24)) as f64,
        one_hot(TransactionType::Payment),
        one_hot(TransactionType::Transfer),
        one_hot(TransactionType::CashOut),
        one_hot(TransactionType::Debit),
        one_hot(TransactionType::CashIn),
        tx.amount,
        tx.oldbalance_org,
        tx.newbalance_orig,
        tx.oldbalance_dest,
        tx.newbalance_dest,
        tx.newbalance_orig + tx.amount - tx.oldbalance_org,
        tx.oldbalance_dest + tx.amount - tx.newbalance_dest,
        merchant as u8 as f64,
        tx.amount / (tx.oldbalance_org + 1.0),
        tx.amount / (tx.oldbalance_dest + 1.0),
        (tx.oldbalance_org > 0.0 && tx.newbalance_orig == 0.0) as u8 as f64,
        account.count_window,
        account.sum_window,
        account.steps_since_last,
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(
        step: i32,
        t: TransactionType,
        amount: f64,
        old: f64,
        new: f64,
        dest: &str,
    ) -> TxView<'_> {
        TxView {
            step,
            tx_type: t,
            amount,
            name_orig: "C1",
            oldbalance_org: old,
            newbalance_orig: new,
            name_dest: dest,
            oldbalance_dest: 0.0,
            newbalance_dest: 0.0,
        }
    }

    #[test]
    fn balance_errors_and_flags() {
        let mut out = Vec::new();
        let v = view(25, TransactionType::Transfer, 100.0, 100.0, 0.0, "C9");
        push_features(&v, AccountFeatures::default(), &mut out);
        assert_eq!(out.len(), N_FEATURES);
        let f = |name: &str| out[FEATURE_NAMES.iter().position(|n| *n == name).unwrap()];
        assert_eq!(f("hour_of_day"), 1.0);
        assert_eq!(f("type_transfer"), 1.0);
        assert_eq!(f("type_payment"), 0.0);
        assert_eq!(f("error_balance_orig"), 0.0); // 0 + 100 - 100
        assert_eq!(f("error_balance_dest"), 100.0); // 0 + 100 - 0: the mule's balance never moved
        assert_eq!(f("orig_emptied"), 1.0);
        assert_eq!(f("dest_is_merchant"), 0.0);
    }

    #[test]
    fn replaying_a_position_sees_the_same_state() {
        let mut h = AccountHistory::default();
        h.observe("C1", 10, 1, 5.0);
        let first = h.observe("C1", 11, 2, 7.0);
        h.observe("C1", 12, 3, 9.0);
        // Positions 11 and 12 are processed again after an abort: same features as before.
        assert_eq!(h.observe("C1", 11, 2, 7.0), first);
        assert_eq!(h.accounts.get("C1").unwrap().recent.len(), 2);
    }

    #[test]
    fn account_window_counts_only_recent_steps() {
        let mut h = AccountHistory::default();
        assert_eq!(
            h.observe("C1", 0, 1, 10.0),
            AccountFeatures {
                count_window: 0.0,
                sum_window: 0.0,
                steps_since_last: NEVER_SEEN
            }
        );
        assert_eq!(
            h.observe("C1", 1, 5, 20.0),
            AccountFeatures {
                count_window: 1.0,
                sum_window: 10.0,
                steps_since_last: 4.0
            }
        );
        // Step 26: the step-1 transaction is 25 steps old, out of the 24-step window.
        assert_eq!(
            h.observe("C1", 2, 26, 1.0),
            AccountFeatures {
                count_window: 1.0,
                sum_window: 20.0,
                steps_since_last: 21.0
            }
        );
        assert_eq!(h.observe("C2", 3, 26, 1.0).steps_since_last, NEVER_SEEN);
        h.evict_expired(49);
        assert_eq!(h.accounts.len(), 2);
        h.evict_expired(50);
        assert!(h.accounts.is_empty());
    }

    #[test]
    fn sweeping_expired_accounts_changes_no_feature() {
        // Many accounts over many steps, some coming back after long gaps: the features with the
        // automatic sweep equal those of a history that never forgets anything.
        let mut swept = AccountHistory::default();
        let mut reference: std::collections::HashMap<String, AccountState> = Default::default();
        let mut max_len = 0;
        for i in 0..20_000i64 {
            let step = (i / 50) as i32; // 400 steps, 50 transactions each
            let name = format!("C{}", (i * 7919) % 3001);
            let amount = (i % 97) as f64;
            let got = swept.observe(&name, i, step, amount);
            let want = reference.entry(name).or_default().observe(i, step, amount);
            assert_eq!(got, want, "transaction {i}");
            max_len = max_len.max(swept.accounts.len());
        }
        // 50 a step over at most WINDOW_STEPS + SWEEP_EVERY + 1 steps.
        assert!(
            max_len <= 50 * (WINDOW_STEPS + SWEEP_EVERY + 1) as usize,
            "{max_len}"
        );
    }
}
