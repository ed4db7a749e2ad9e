//! What kind of data the simulator makes: how hard the fraud is to tell apart, and which new
//! patterns switch on mid-month (drift).
//!
//! `kaggle` is the simulator as it was: fraud exactly as PaySim's generator writes it (the victim
//! drained to 0 in chunks of at most 10M, a fresh mule whose recorded balances stay 0, the cash-out
//! at once), and normal rows whose balances always add up. Any model separates that perfectly.
//! `realistic` keeps PaySim's published shape (type mix, amounts, ~0.13% fraud, fraud only in
//! TRANSFER and CASH_OUT) and adds what makes real data hard, each a named knob below.

use std::fmt;
use std::str::FromStr;

/// A named set of knobs (`producer simulate --profile`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Profile {
    Kaggle,
    Realistic,
}

impl Profile {
    pub const NAMES: [&'static str; 2] = ["realistic", "kaggle"];

    pub fn knobs(self) -> Knobs {
        match self {
            Profile::Kaggle => Knobs {
                rows_per_event: 2.0,
                ..Knobs::default()
            },
            Profile::Realistic => Knobs {
                rows_per_event: 4.2,
                normal_dest_unrecorded: 0.35,
                normal_dest_stale: 0.10,
                normal_empties: 0.08,
                partial_drain: 0.5,
                small_chunks: 0.3,
                mule_reuse: 0.6,
                mule_balances_recorded: 0.65,
                cash_out_delay_steps: 12,
                unreported: 0.08,
                agent_float_cap_cents: 10_000_000 * 100,
            },
        }
    }
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "kaggle" => Ok(Profile::Kaggle),
            "realistic" => Ok(Profile::Realistic),
            _ => Err(format!("unknown profile {s:?}: use realistic or kaggle")),
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Kaggle => "kaggle",
            Profile::Realistic => "realistic",
        })
    }
}

/// Probabilities (0..1) and sizes of what makes fraud hard to see. All zero (but the rows per
/// takeover): the `kaggle` profile.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Knobs {
    /// Fraud rows one takeover writes on average (measured): the number of takeovers is chosen
    /// so that fraud is PaySim's share of the rows.
    pub rows_per_event: f64,
    /// A normal TRANSFER/CASH_OUT whose destination balances are recorded as 0/0 (as PaySim does
    /// for many rows): the mule's 0/0 is no longer a tell.
    pub normal_dest_unrecorded: f64,
    /// A normal TRANSFER/CASH_OUT whose destination balance is recorded unchanged.
    pub normal_dest_stale: f64,
    /// A normal TRANSFER/CASH_OUT that empties the account (moving savings, closing it).
    pub normal_empties: f64,
    /// A takeover that takes only part of the balance (20–95%).
    pub partial_drain: f64,
    /// A takeover that moves the money in chunks under the 200,000 flag threshold.
    pub small_chunks: f64,
    /// A takeover that pays a mule already used by another victim.
    pub mule_reuse: f64,
    /// A fraudulent transfer whose mule balances are recorded (not 0/0).
    pub mule_balances_recorded: f64,
    /// A mule cashes out up to this many steps (hours) after the transfer; 0 = at once.
    pub cash_out_delay_steps: i32,
    /// A takeover nobody reports: its rows are labelled 0 (label noise).
    pub unreported: f64,
    /// An agent's cash float above this is banked (0: never; it then only grows).
    pub agent_float_cap_cents: i64,
}

/// A fraud pattern that starts at a step (`--drift card-testing@400`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drift {
    pub pattern: Pattern,
    pub from_step: i32,
}

/// New fraud patterns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    /// Before draining a stolen account, the fraudster tests it with a burst of tiny TRANSFERs
    /// (1–20) to fresh accounts; from `from_step` half the takeovers do this, and there are
    /// twice as many.
    CardTesting,
}

impl Pattern {
    pub const NAMES: [&'static str; 1] = ["card-testing"];
}

impl FromStr for Drift {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let usage = || format!("drift {s:?}: use <pattern>@<step>, e.g. card-testing@400");
        let (name, step) = s.split_once('@').ok_or_else(usage)?;
        let pattern = match name {
            "card-testing" => Pattern::CardTesting,
            _ => {
                return Err(format!(
                    "unknown drift pattern {name:?}: known are {}",
                    Pattern::NAMES.join(", ")
                ))
            }
        };
        let from_step = step.trim().parse().map_err(|_| usage())?;
        if !(1..=crate::simulate::STEPS).contains(&from_step) {
            return Err(format!("drift step {from_step} is outside 1..=744"));
        }
        Ok(Drift { pattern, from_step })
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pattern {
            Pattern::CardTesting => write!(f, "card-testing@{}", self.from_step),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_and_drifts_parse_and_say_what_is_wrong() {
        assert_eq!("kaggle".parse(), Ok(Profile::Kaggle));
        assert_eq!(Profile::Kaggle.knobs().unreported, 0.0);
        assert!("hard"
            .parse::<Profile>()
            .unwrap_err()
            .contains("realistic or kaggle"));
        let d: Drift = "card-testing@400".parse().unwrap();
        assert_eq!(
            (d.pattern, d.from_step, d.to_string().as_str()),
            (Pattern::CardTesting, 400, "card-testing@400")
        );
        assert!("skimming@3"
            .parse::<Drift>()
            .unwrap_err()
            .contains("card-testing"));
        assert!("card-testing@900"
            .parse::<Drift>()
            .unwrap_err()
            .contains("outside"));
        assert!("card-testing"
            .parse::<Drift>()
            .unwrap_err()
            .contains("<pattern>@<step>"));
    }
}
