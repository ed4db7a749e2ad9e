//! How the simulator writes fraud: an account takeover (card-testing probes first, under that
//! drift), the victim's TRANSFERs to a mule, and the mule's CASH_OUTs, at once or hours later.

use super::{
    account_id, to_cents, SimSummary, World, FLAG_THRESHOLD_CENTS, MAX_TRANSFER_CENTS, STEPS,
};
use crate::format::CentsRow;
use fraudstream_schemas::TransactionType;
use rand::Rng;

/// Rows one fraud event wrote.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct EventRows {
    rows: u64,
    labelled: u64,
    unreported: u64,
    flagged: u64,
    drift: u64,
}

/// A mule's cash-out, due at a later step.
pub(super) struct CashOut {
    due: i32,
    mule: usize,
    amount: i64,
    reported: bool,
    drift: bool,
}

impl World {
    /// A victim with something to steal.
    fn victim(&mut self) -> usize {
        let mut victim = self.customer();
        for _ in 0..20 {
            if self.balances[victim] >= 1_000 * 100 {
                break;
            }
            victim = self.customer();
        }
        victim
    }

    /// Recruits the ring's mules: each is used by about three takeovers over the month.
    pub(super) fn recruit_mules(&mut self, takeovers: u64) {
        if self.knobs.mule_reuse > 0.0 {
            let n = (takeovers / 3).max(1);
            self.mules = (0..n).map(|_| self.customer()).collect();
        }
    }

    /// The mule for a takeover: (realistic) one of the ring's, or a fresh account.
    fn mule(&mut self) -> usize {
        if !self.mules.is_empty() && self.chance(self.knobs.mule_reuse) {
            return self.mules[self.rng.random_range(0..self.mules.len())];
        }
        self.customer()
    }

    /// One account takeover: (with card testing, a burst of tiny probes first,) then TRANSFER(s)
    /// from the victim to a mule, each cashed out by the mule at once or hours later.
    pub(super) fn fraud(&mut self, step: i32, card_testing: bool, out: &mut Vec<u8>) -> EventRows {
        let k = self.knobs;
        let victim = self.victim();
        let reported = !self.chance(k.unreported);
        let mut rows = EventRows::default();
        if card_testing {
            for _ in 0..self.rng.random_range(3..=6) {
                let amount = self
                    .rng
                    .random_range(100..=2_000)
                    .min(self.balances[victim]);
                let probe = self.customer();
                self.transfer(
                    step,
                    victim,
                    probe,
                    amount,
                    (reported, true, false),
                    out,
                    &mut rows,
                );
            }
        }
        // An almost empty account still loses what it has (at least 1.00, as PaySim writes it).
        self.balances[victim] = self.balances[victim].max(100);
        let mut remaining = self.balances[victim];
        if self.chance(k.partial_drain) {
            remaining = (remaining as f64 * self.rng.random_range(0.2..0.95)) as i64;
        }
        let chunk = if self.chance(k.small_chunks) {
            to_cents(self.rng.random_range(50_000.0..199_999.0))
        } else {
            MAX_TRANSFER_CENTS
        };
        let mule = self.mule();
        while remaining > 0 {
            let amount = remaining.min(chunk);
            let blocked = amount > FLAG_THRESHOLD_CENTS && self.rng.random::<f64>() < 0.003;
            self.transfer(
                step,
                victim,
                mule,
                amount,
                (reported, card_testing, blocked),
                out,
                &mut rows,
            );
            if blocked {
                break;
            }
            remaining -= amount;
            let delay = match k.cash_out_delay_steps {
                0 => 0,
                d => self.rng.random_range(0..=d),
            };
            let cash_out = CashOut {
                due: step + delay,
                mule,
                amount,
                reported,
                drift: card_testing,
            };
            if delay == 0 {
                rows.add(self.cash_out(step, &cash_out, out));
            } else {
                self.pending.push(cash_out);
            }
        }
        rows
    }

    /// A fraudulent TRANSFER of `amount` from `victim` to `mule`. `flags` = (reported, drift
    /// pattern, blocked by PaySim's rule: no money moves).
    #[allow(clippy::too_many_arguments)]
    fn transfer(
        &mut self,
        step: i32,
        victim: usize,
        mule: usize,
        amount: i64,
        (reported, drift, blocked): (bool, bool, bool),
        out: &mut Vec<u8>,
        rows: &mut EventRows,
    ) {
        let old_org = self.balances[victim];
        let moved = if blocked { 0 } else { amount };
        self.balances[victim] -= moved;
        // PaySim records a mule's balances as 0/0; the realistic profile often records them.
        let (old_dest, new_dest) = if self.chance(self.knobs.mule_balances_recorded) {
            let old = self.balances[mule];
            (old, old + moved)
        } else {
            (0, 0)
        };
        if self.knobs.mule_balances_recorded > 0.0 {
            self.balances[mule] += moved;
        }
        account_id(b'C', victim, &mut self.orig);
        account_id(b'C', mule, &mut self.dest);
        CentsRow {
            step,
            tx_type: TransactionType::Transfer,
            amount,
            name_orig: &self.orig,
            oldbalance_org: old_org,
            newbalance_orig: old_org - moved,
            name_dest: &self.dest,
            oldbalance_dest: old_dest,
            newbalance_dest: new_dest,
            is_fraud: reported,
            is_flagged_fraud: blocked,
        }
        .write_line(out);
        rows.add(EventRows::one(reported, drift, blocked));
    }

    /// The mule's CASH_OUT at an agent. In the `kaggle` profile the mule's account only ever
    /// holds the stolen money (it reads `amount` → 0); otherwise its real balance shows.
    fn cash_out(&mut self, step: i32, c: &CashOut, out: &mut Vec<u8>) -> EventRows {
        let agent = self.agent();
        let agent_balance = self.balances[agent];
        self.balances[agent] += c.amount;
        self.bank_float(agent);
        let old_org = if self.knobs.mule_balances_recorded > 0.0 {
            let old = self.balances[c.mule].max(c.amount);
            self.balances[c.mule] = old - c.amount;
            old
        } else {
            c.amount
        };
        account_id(b'C', c.mule, &mut self.orig);
        account_id(b'C', agent, &mut self.dest);
        CentsRow {
            step,
            tx_type: TransactionType::CashOut,
            amount: c.amount,
            name_orig: &self.orig,
            oldbalance_org: old_org,
            newbalance_orig: old_org - c.amount,
            name_dest: &self.dest,
            oldbalance_dest: agent_balance,
            newbalance_dest: agent_balance + c.amount,
            is_fraud: c.reported,
            is_flagged_fraud: false,
        }
        .write_line(out);
        EventRows::one(c.reported, c.drift, false)
    }

    /// The cash-outs due by `step` (all of them at the last step).
    pub(super) fn due_cash_outs(&mut self, step: i32, out: &mut Vec<u8>) -> EventRows {
        let mut rows = EventRows::default();
        let (due, later): (Vec<CashOut>, Vec<CashOut>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|c| c.due <= step || step == STEPS);
        self.pending = later;
        for c in &due {
            rows.add(self.cash_out(step, c, out));
        }
        rows
    }
}

impl EventRows {
    fn one(reported: bool, drift: bool, flagged: bool) -> Self {
        EventRows {
            rows: 1,
            labelled: reported as u64,
            unreported: !reported as u64,
            flagged: flagged as u64,
            drift: drift as u64,
        }
    }

    fn add(&mut self, o: EventRows) {
        self.rows += o.rows;
        self.labelled += o.labelled;
        self.unreported += o.unreported;
        self.flagged += o.flagged;
        self.drift += o.drift;
    }
}

impl SimSummary {
    pub(super) fn add_fraud(&mut self, e: EventRows) {
        self.rows += e.rows;
        self.fraud_rows += e.labelled;
        self.unreported_rows += e.unreported;
        self.flagged_rows += e.flagged;
        self.drift_rows += e.drift;
    }
}
