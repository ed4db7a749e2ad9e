//! Where a partition resumes after an abort or a lost position: the group's committed offset, but
//! never below an offset this process itself committed.
//!
//! Why the group's answer is not taken alone: in the 200k `broker-restart` fault run, a commit
//! aborted while the broker was reloading the group, and the group coordinator then answered "no
//! offset" for every partition the group had committed, with no error. Read as "never committed",
//! that sent two scorers back to the partitions' start: 77,600 duplicates. A transaction this
//! process committed is proof of its offsets, so an answer below them is a broker's mistake.

use std::collections::HashMap;

/// The offsets this process committed, per input partition, in transactions that committed.
/// Kept across rebalances: the group's offsets only move forward, so a partition that comes
/// back to this instance still cannot resume below them (another instance may have moved it on,
/// which the group's answer then shows).
#[derive(Debug, Default)]
pub(crate) struct CommittedByUs(HashMap<i32, i64>);

/// Where one partition resumes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// The group's committed offset (not below ours).
    Group(i64),
    /// The group answered nothing or less (`group`); this process committed up to `ours`.
    Ours { group: Option<i64>, ours: i64 },
    /// Never committed, by the group or by us: from the partition's start.
    Start,
}

impl CommittedByUs {
    /// Records the offsets of a transaction that committed.
    pub(crate) fn record(&mut self, offsets: &HashMap<i32, i64>) {
        for (&p, &o) in offsets {
            let at = self.0.entry(p).or_insert(o);
            *at = (*at).max(o);
        }
    }

    /// Where `partition` resumes, given the group's answer (`None`: no committed offset).
    pub(crate) fn resume(&self, partition: i32, group: Option<i64>) -> Resume {
        match (group, self.0.get(&partition).copied()) {
            (Some(g), Some(ours)) if g < ours => Resume::Ours {
                group: Some(g),
                ours,
            },
            (Some(g), _) => Resume::Group(g),
            (None, Some(ours)) => Resume::Ours { group: None, ours },
            (None, None) => Resume::Start,
        }
    }

    /// The partition's log was truncated to end at `offset`, below what we committed (an unclean
    /// leader election): the records we committed past it are gone, and new ones take their
    /// offsets.
    pub(crate) fn truncated(&mut self, partition: i32, offset: i64) {
        if let Some(at) = self.0.get_mut(&partition) {
            *at = (*at).min(offset);
        }
    }

    /// The offsets below which a polled record was already scored and committed by us.
    pub(crate) fn floor(&self, partition: i32) -> Option<i64> {
        self.0.get(&partition).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ours(offsets: &[(i32, i64)]) -> CommittedByUs {
        let mut c = CommittedByUs::default();
        c.record(&offsets.iter().copied().collect());
        c
    }

    #[test]
    fn the_groups_answer_is_taken_when_it_is_not_below_ours() {
        let c = ours(&[(0, 500)]);
        assert_eq!(c.resume(0, Some(500)), Resume::Group(500));
        // Another instance moved the partition on since we had it.
        assert_eq!(c.resume(0, Some(900)), Resume::Group(900));
        // A partition we never committed: the group knows best.
        assert_eq!(c.resume(1, Some(7)), Resume::Group(7));
    }

    #[test]
    fn an_answer_below_what_we_committed_is_overruled() {
        let c = ours(&[(0, 500), (1, 40)]);
        assert_eq!(
            c.resume(0, None),
            Resume::Ours {
                group: None,
                ours: 500
            }
        );
        assert_eq!(
            c.resume(1, Some(10)),
            Resume::Ours {
                group: Some(10),
                ours: 40
            }
        );
    }

    #[test]
    fn only_a_partition_nobody_committed_starts_from_the_beginning() {
        assert_eq!(ours(&[(0, 500)]).resume(3, None), Resume::Start);
    }

    #[test]
    fn recorded_offsets_only_move_forward() {
        let mut c = ours(&[(0, 500)]);
        // A transaction that held an older offset for it (cannot happen in order, but a
        // record must never lower what we know was committed).
        c.record(&[(0, 300), (2, 8)].into_iter().collect());
        assert_eq!(c.floor(0), Some(500));
        assert_eq!(c.floor(2), Some(8));
        assert_eq!(c.floor(1), None);
    }

    #[test]
    fn a_truncated_log_lowers_what_we_committed() {
        let mut c = ours(&[(0, 500)]);
        c.truncated(0, 450);
        c.truncated(1, 3);
        assert_eq!(c.floor(0), Some(450));
        assert_eq!(c.floor(1), None);
        c.truncated(0, 470);
        assert_eq!(c.floor(0), Some(450));
    }
}
