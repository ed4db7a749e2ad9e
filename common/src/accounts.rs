//! The table of per-account states: open addressing with linear probing over a dense array of
//! hashes, so that where a name will be found is known before it is looked up, and can be
//! prefetched.
//!
//! Why not a `HashMap`: the scorer keeps the accounts of the last ~30 PaySim steps, tens of
//! megabytes, so nearly every lookup missed the cache twice (the map's control bytes, then the
//! entry), and those two misses were most of the features stage. A batch knows all its names up
//! front: the stage hashes them first, then asks for the slots of a few records ahead of the one
//! it looks up, and the misses overlap instead of following one another.

use crate::features::AccountState;
use compact_str::CompactString;
use std::hash::Hasher;

/// Slot 0 of `hashes` marks an empty slot; a name's hash always has its top bit set.
const EMPTY: u64 = 0;
const MIN_SLOTS: usize = 16;

/// How many lookups ahead a caller of [`AccountTable::prefetch`] asks for a slot: far enough for
/// a miss to memory (~100 ns) to complete while the transactions in between are handled (2 to 32
/// measured the same in `scorer/examples/stages.rs`).
pub const PREFETCH_AHEAD: usize = 8;

/// The hash a name is stored under (FxHash: the names come from our own stream, so there is
/// no hash-flooding risk worth SipHash's cost).
pub fn hash_name(name: &str) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    h.write(name.as_bytes());
    h.finish() | 1 << 63
}

/// Account name → state.
pub struct AccountTable {
    /// Per slot: `EMPTY` or the hash of the name in `entries` at the same index. Probing reads
    /// this array, 8 slots a cache line, and touches an entry only when its hash matches.
    hashes: Vec<u64>,
    /// Names up to 24 bytes (PaySim's are 10-11) are stored inside the entry, without a heap
    /// allocation of their own.
    entries: Vec<(CompactString, AccountState)>,
    len: usize,
}

/// The size, not the states (there are often millions).
impl std::fmt::Debug for AccountTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountTable")
            .field("len", &self.len)
            .field("slots", &self.hashes.len())
            .finish()
    }
}

impl Default for AccountTable {
    fn default() -> Self {
        Self::with_slots(MIN_SLOTS)
    }
}

impl AccountTable {
    fn with_slots(slots: usize) -> Self {
        debug_assert!(slots.is_power_of_two());
        AccountTable {
            hashes: vec![EMPTY; slots],
            entries: (0..slots).map(|_| Default::default()).collect(),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn home(&self, hash: u64) -> usize {
        hash as usize & (self.hashes.len() - 1)
    }

    /// Starts loading the slot where `hash` is probed first. A hint: it changes no result.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        let i = self.home(hash);
        prefetch(&self.hashes[i]);
        prefetch(&self.entries[i]);
    }

    /// The state of `name`, if the table has it.
    pub fn get(&self, name: &str) -> Option<&AccountState> {
        let i = self.find(hash_name(name), name).ok()?;
        Some(&self.entries[i].1)
    }

    /// The state of `name` (whose [`hash_name`] is `hash`), inserted empty if it is new.
    pub fn entry(&mut self, hash: u64, name: &str) -> &mut AccountState {
        // At most 3/4 full: a new name (most of PaySim's) probes ~8 slots, one or two lines.
        if (self.len + 1) * 4 > self.hashes.len() * 3 {
            self.rehash(self.hashes.len() * 2);
        }
        let i = match self.find(hash, name) {
            Ok(found) => found,
            Err(empty) => {
                self.hashes[empty] = hash;
                self.entries[empty] = (CompactString::from(name), AccountState::default());
                self.len += 1;
                empty
            }
        };
        &mut self.entries[i].1
    }

    /// The slot of `name` (whose [`hash_name`] is `hash`), or `Err` with the empty slot where it
    /// would go. The table is never full, so the probe ends.
    fn find(&self, hash: u64, name: &str) -> Result<usize, usize> {
        let mask = self.hashes.len() - 1;
        let mut i = self.home(hash);
        loop {
            match self.hashes[i] {
                EMPTY => return Err(i),
                h if h == hash && self.entries[i].0 == name => return Ok(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Keeps the states for which `keep` is true. Memory follows the accounts kept: a table
    /// left less than 1/8 full is rebuilt smaller.
    pub fn retain(&mut self, mut keep: impl FnMut(&AccountState) -> bool) {
        let mut i = 0;
        while i < self.hashes.len() {
            if self.hashes[i] != EMPTY && !keep(&self.entries[i].1) {
                // Slot i may now hold a later entry, shifted back: look at it again.
                self.remove_at(i);
            } else {
                i += 1;
            }
        }
        if self.hashes.len() > MIN_SLOTS && self.len * 8 < self.hashes.len() {
            self.rehash((self.len * 2).next_power_of_two().max(MIN_SLOTS));
        }
    }

    /// Empties slot `hole`, then moves back the entries after it that may fill it (backward-shift
    /// deletion: no tombstones, so probes stay as short as the load allows).
    fn remove_at(&mut self, mut hole: usize) {
        let mask = self.hashes.len() - 1;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let h = self.hashes[j];
            if h == EMPTY {
                break;
            }
            // The entry at j may move to the hole unless its home lies after the hole (cyclically,
            // within (hole, j]): it would then sit before its home, where no probe looks.
            let from_home = j.wrapping_sub(self.home(h)) & mask;
            if from_home >= (j.wrapping_sub(hole) & mask) {
                self.hashes[hole] = h;
                self.entries.swap(hole, j);
                hole = j;
            }
        }
        self.hashes[hole] = EMPTY;
        self.entries[hole] = Default::default();
        self.len -= 1;
    }

    fn rehash(&mut self, slots: usize) {
        let old = std::mem::replace(self, Self::with_slots(slots));
        for (hash, entry) in old.hashes.into_iter().zip(old.entries) {
            if hash == EMPTY {
                continue;
            }
            // Names are unique in the old table: the probe ends at an empty slot.
            let (Ok(i) | Err(i)) = self.find(hash, &entry.0);
            self.hashes[i] = hash;
            self.entries[i] = entry;
            self.len += 1;
        }
    }
}

/// Asks the CPU to bring the cache line(s) of `value` closer.
#[inline(always)]
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let first = (value as *const T).cast::<i8>();
        let last = first.wrapping_add(std::mem::size_of::<T>() - 1);
        // SAFETY: a prefetch only hints; it never faults and reads nothing into the program. The
        // addresses are those of a live value.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(first);
            _mm_prefetch::<_MM_HINT_T0>(last);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn state(step: i32) -> AccountState {
        let mut s = AccountState::default();
        s.observe(0, step, 1.0);
        s
    }

    #[test]
    fn finds_what_was_inserted_through_growth_and_removals() {
        // Against a HashMap, with removals that leave runs of shifted entries behind.
        let mut table = AccountTable::default();
        let mut reference = HashMap::new();
        for round in 0..20 {
            for i in 0..5_000 {
                let name = format!("C{}", (i * 7919 + round * 131) % 20_011);
                let step = round * 10 + i % 10;
                table
                    .entry(hash_name(&name), &name)
                    .observe(i.into(), step, 1.0);
                reference
                    .entry(name)
                    .or_insert_with(AccountState::default)
                    .observe(i.into(), step, 1.0);
            }
            let cut = round * 10 + 3;
            table.retain(|s| s.recent.iter().any(|(_, st, _)| *st >= cut));
            reference.retain(|_, s| s.recent.iter().any(|(_, st, _)| *st >= cut));
            assert_eq!(table.len(), reference.len(), "round {round}");
            for (name, want) in &reference {
                assert_eq!(table.get(name), Some(want), "round {round}: {name}");
            }
        }
        assert_eq!(table.get("nobody"), None);
    }

    #[test]
    fn removal_wraps_around_the_end() {
        // Names whose home is the last slot of a 16-slot table spill over to slots 0, 1, ...
        let mut table = AccountTable::default();
        let names: Vec<String> = (0..100_000)
            .map(|i| format!("A{i}"))
            .filter(|n| hash_name(n) as usize & 15 == 15)
            .take(4)
            .collect();
        for (i, n) in names.iter().enumerate() {
            *table.entry(hash_name(n), n) = state(i as i32);
        }
        // Remove the one at the end of the table: the spilled ones must shift back and be found.
        table.retain(|s| s.recent[0].1 != 0);
        assert_eq!(table.len(), 3);
        assert_eq!(table.get(&names[0]), None);
        for (i, n) in names.iter().enumerate().skip(1) {
            assert_eq!(table.get(n), Some(&state(i as i32)), "{n}");
        }
    }

    #[test]
    fn shrinks_when_mostly_emptied() {
        let mut table = AccountTable::default();
        for i in 0..10_000 {
            let n = format!("C{i}");
            *table.entry(hash_name(&n), &n) = state(i % 100);
        }
        let grown = table.hashes.len();
        table.retain(|s| s.recent[0].1 == 0);
        assert_eq!(table.len(), 100);
        assert!(
            table.hashes.len() * 16 <= grown,
            "{} of {grown}",
            table.hashes.len()
        );
        assert_eq!(table.get("C200"), Some(&state(0)));
    }
}
