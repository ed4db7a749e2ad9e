//! SHAP contributions of the native trees (an alert's top reasons): the values LightGBM's
//! `predict_contrib` gives (Lundberg et al.'s path-dependent TreeSHAP), computed another way.
//!
//! Why: TreeSHAP walks every path of every tree with O(depth²) work at each leaf, ~4.5 µs a tree
//! for the trainer's 31-leaf trees: ~570 µs an alert, and half the scorer's CPU per record at
//! a 0.3% alert rate. Yet a row enters that math only through which of a leaf path's features
//! it *follows* (goes the path's way at each of that feature's splits). With d distinct
//! features on the path there are 2^d such patterns, and the sum over coalitions for each is
//! fixed by the tree: tabulated when the model loads, a leaf's share is d lookups (~10x faster).
//!
//! For a leaf of value v, distinct path features F (d = |F|), z_j the fraction of training rows
//! that follow the path at feature j's splits, and H the features the row follows:
//!
//! ```text
//! R(T) = Σ_{S ⊆ T} w(|S|) Π_{j ∈ F∖S} z_j    for T ⊊ F,  w(k) = k! (d−k−1)! / d!
//! φ_i += v (1 − z_i) / z_i · R(H ∖ {i})       when the row follows i
//! φ_i −= v R(H)                               when it does not
//! ```
//!
//! These are the Shapley values of E[f | x_S] = Σ_leaves v Π_{j ∈ F∩S} [follows j] Π_{j ∈ F∖S} z_j,
//! TreeSHAP's definition. The sums run in another order than LightGBM's, so the two agree to
//! rounding, not bit for bit: the loader checks them against LightGBM within [`TOLERANCE`].

use super::{as_lightgbm_reads, Forest, Node, Tree};

/// How far a contribution may stray from LightGBM's (relative to the row's largest), at load.
pub const TOLERANCE: f64 = 1e-9;

/// Paths with more distinct features than this compute R when asked instead of keeping a table
/// (2^d values; 256 at the trainer's `max_depth=8`).
const TABLE_FEATURES: usize = 8;

/// A tree's leaf paths, and its splits in an order that reaches a node's parent before it.
#[derive(Debug, Default)]
pub(super) struct Paths {
    leaves: Vec<LeafPath>,
    /// (split node, slot of its feature on the paths through it), parents first. A path's slots
    /// are numbered in path order, so paths through a node agree on the slots above it: which
    /// features a row follows is worked out once per node, not once per split of every path.
    splits: Box<[(u32, u32)]>,
}

/// One root-to-leaf path, as SHAP needs it.
#[derive(Debug)]
pub(super) struct LeafPath {
    leaf: u32,
    /// The path's distinct features, in path order.
    slots: Box<[Slot]>,
    /// v·R(T) for every T ⊊ F (bit s of the index: slot s in T), v the leaf's value; empty when
    /// d > TABLE_FEATURES. The entry of T = F is never read.
    table: Box<[f64]>,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    feature: u32,
    /// z: the fraction of training rows that follow the path at this feature's splits.
    zero: f64,
    /// (1 − z) / z.
    follow_gain: f64,
}

impl Paths {
    /// Every leaf's path of a tree of `nodes` (children as in [`Tree`]) with `count` training
    /// rows per node, and leaf values `value`. Errors on a node no training row reached (z = 0:
    /// LightGBM then serves the model).
    pub(super) fn of(
        nodes: &[Node],
        splits: u32,
        count: &[f64],
        value: &[f64],
    ) -> Result<Paths, String> {
        let mut paths = Paths::default();
        let mut walk = Vec::new();
        // (node, (feature, z) per slot so far); popped parents first.
        let mut stack = vec![(0u32, Vec::new())];
        while let Some((at, slots)) = stack.pop() {
            if at >= splits {
                // A tree that is one leaf adds to no feature.
                if !slots.is_empty() {
                    paths
                        .leaves
                        .push(LeafPath::new(at, value[at as usize], &slots)?);
                }
                continue;
            }
            let n = nodes[at as usize];
            let feature = u32::from(n.feature);
            let mut slots = slots;
            let slot = match slots.iter().position(|&(f, _)| f == feature) {
                Some(s) => s,
                None => {
                    slots.push((feature, 1.0));
                    slots.len() - 1
                }
            };
            walk.push((at, slot as u32));
            for child in n.child.map(u32::from) {
                let mut slots = slots.clone();
                slots[slot].1 *= count[child as usize] / count[at as usize];
                stack.push((child, slots));
            }
        }
        paths.splits = walk.into();
        Ok(paths)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }
}

impl LeafPath {
    fn new(leaf: u32, value: f64, slots: &[(u32, f64)]) -> Result<Self, String> {
        if slots.len() > 64 {
            return Err("a path with more than 64 distinct features".into());
        }
        if slots.iter().any(|&(_, z)| z.is_nan() || z <= 0.0) {
            return Err("a node no training row reached".into());
        }
        let zero: Vec<f64> = slots.iter().map(|&(_, z)| z).collect();
        let d = zero.len();
        let table = if d <= TABLE_FEATURES {
            (0..(1u64 << d) - 1)
                .map(|t| value * r_of(zero.iter().copied(), t))
                .chain([0.0])
                .collect()
        } else {
            Box::default()
        };
        let slots = slots
            .iter()
            .map(|&(feature, zero)| Slot {
                feature,
                zero,
                follow_gain: (1.0 - zero) / zero,
            })
            .collect();
        Ok(LeafPath { leaf, slots, table })
    }

    fn leaf_value(&self, value: &[f64]) -> f64 {
        value[self.leaf as usize]
    }

    /// v·R(T).
    #[inline]
    fn r(&self, value: f64, t: u64) -> f64 {
        match self.table.get(t as usize) {
            Some(r) => *r,
            None => value * r_of(self.slots.iter().map(|s| s.zero), t),
        }
    }

    /// Adds this leaf's share of the contributions, for a row that follows the path's slots whose
    /// bits are set in `followed` (bits past the path's slots are ignored).
    fn add(&self, value: f64, followed: u64, phi: &mut [f64]) {
        let follows = followed & (u64::MAX >> (64 - self.slots.len()));
        for (s, slot) in self.slots.iter().enumerate() {
            let bit = 1u64 << s;
            // Branch-free: a followed feature adds gain·v·R(H∖{s}), another subtracts v·R(H).
            let followed = follows & bit != 0;
            let (t, coef) = if followed {
                (follows ^ bit, slot.follow_gain)
            } else {
                (follows, -1.0)
            };
            phi[slot.feature as usize] += coef * self.r(value, t);
        }
    }
}

/// R(T) = Π_{j ∉ T} z_j · Σ_k w(k) e_{|T|−k}(z_T), with the elementary symmetric polynomials of
/// the z in T read off Π_{j ∈ T} (y + z_j). Only for T ⊊ F; the full set's entry is unused.
fn r_of(zero: impl ExactSizeIterator<Item = f64>, t: u64) -> f64 {
    let d = zero.len();
    let mut outside = 1.0;
    // coefficient k: of y^k
    let mut poly = vec![1.0];
    for (j, z) in zero.enumerate() {
        if t >> j & 1 == 0 {
            outside *= z;
            continue;
        }
        poly.push(0.0);
        for k in (0..poly.len()).rev() {
            poly[k] = poly[k] * z + if k > 0 { poly[k - 1] } else { 0.0 };
        }
    }
    if poly.len() > d {
        return f64::NAN; // T = F
    }
    let sum: f64 = poly
        .iter()
        .enumerate()
        .map(|(k, c)| shapley_weight(k, d) * c)
        .sum();
    outside * sum
}

/// k! (d−k−1)! / d!: the weight of a coalition of k of the other d − 1 features.
fn shapley_weight(k: usize, d: usize) -> f64 {
    // 1 / (d · C(d−1, k)), C built as a product to stay exact for the d here.
    let mut c = 1.0;
    for i in 0..k {
        c = c * (d - 1 - i) as f64 / (i + 1) as f64;
    }
    1.0 / (d as f64 * c)
}

impl Forest {
    /// Each feature's SHAP contribution to the raw score of each row of a row-major matrix of
    /// `n_features` columns (one row or many), summed over the trees, without the bias term:
    /// LightGBM's `predict_contrib`, to rounding. Row by row the sums run in the same order
    /// whether a row comes alone or with others, so its contributions are the same bits.
    pub fn contributions(&self, rows: &[f64]) -> Vec<f64> {
        let nf = self.n_features;
        assert_eq!(rows.len() % nf, 0, "rows of {nf} features");
        let rows: Vec<f64> = rows.iter().map(|&v| as_lightgbm_reads(v)).collect();
        let mut phi = vec![0.0; rows.len()];
        let mut masks = Vec::new();
        for tree in &self.trees {
            tree.add_contributions(&rows, nf, &mut masks, &mut phi);
        }
        phi
    }
}

impl Tree {
    /// For every row, which slots it follows down to each node first, then each leaf's path
    /// over all the rows.
    ///
    /// Why in that order: a model's paths and their tables take ~1 MB (the trainer's 68 trees
    /// of 31 leaves), more than a core's L2, so a row at a time read all of it from further out
    /// for every alert. Path by path, a path is read once for all the alerts of a batch.
    fn add_contributions(&self, rows: &[f64], nf: usize, masks: &mut Vec<u64>, phi: &mut [f64]) {
        if self.paths.is_empty() {
            return; // a tree that is one leaf
        }
        let nodes = self.nodes.len();
        masks.clear();
        masks.resize(rows.len() / nf * nodes, 0);
        for (row, mask) in rows.chunks(nf).zip(masks.chunks_mut(nodes)) {
            mask[0] = u64::MAX;
            for &(node, slot) in self.paths.splits.iter() {
                let went = self.step(node, row);
                let here = mask[node as usize];
                for child in self.nodes[node as usize].child.map(u32::from) {
                    let strayed = u64::from(child != went);
                    mask[child as usize] = here & !(strayed << slot);
                }
            }
        }
        for path in &self.paths.leaves {
            let value = path.leaf_value(&self.value);
            for (mask, phi) in masks.chunks(nodes).zip(phi.chunks_mut(nf)) {
                path.add(value, mask[path.leaf as usize], phi);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapley_weights_sum_to_one_over_coalition_sizes() {
        // Σ_k C(d−1, k) w(k) = 1: every ordering of the features counted once.
        for d in 1..=12usize {
            let mut binomial = 1.0;
            let mut total = 0.0;
            for k in 0..d {
                total += binomial * shapley_weight(k, d);
                binomial = binomial * (d - 1 - k) as f64 / (k + 1) as f64;
            }
            assert!((total - 1.0).abs() < 1e-12, "d={d}: {total}");
        }
    }

    #[test]
    fn one_split_gives_the_leaf_minus_the_expectation() {
        // A stump: 30 of 100 training rows left (value 2), 70 right (value -1).
        let leaf = |at: u16| Node {
            threshold: 0.0,
            feature: 0,
            flags: 0,
            child: [at, at],
        };
        let split = Node {
            threshold: 0.5,
            feature: 3,
            flags: 0,
            child: [1, 2],
        };
        let paths = Paths::of(
            &[split, leaf(1), leaf(2)],
            1,
            &[100.0, 30.0, 70.0],
            &[0.0, 2.0, -1.0],
        )
        .unwrap();
        let expectation = 0.3 * 2.0 - 0.7;
        // Sent left, the row follows the left leaf's path and not the right's; and the reverse.
        for (went, value) in [(1, 2.0), (2, -1.0)] {
            let mut phi = [0.0; 4];
            for p in &paths.leaves {
                let followed = if p.leaf == went { u64::MAX } else { 0 };
                p.add(p.leaf_value(&[0.0, 2.0, -1.0]), followed, &mut phi);
            }
            assert!((phi[3] - (value - expectation)).abs() < 1e-15, "{phi:?}");
            assert_eq!(phi[..3], [0.0; 3]);
        }
    }

    #[test]
    fn r_matches_the_sum_over_coalitions() {
        let zero = [0.5, 0.25, 0.8, 0.1];
        let d = zero.len();
        for t in 0..(1u64 << d) - 1 {
            let mut want = 0.0;
            for s in 0..1u64 << d {
                if s & !t != 0 {
                    continue; // S ⊆ T
                }
                let outside: f64 = (0..d)
                    .filter(|j| s >> j & 1 == 0)
                    .map(|j| zero[j])
                    .product();
                want += shapley_weight(s.count_ones() as usize, d) * outside;
            }
            let got = r_of(zero.iter().copied(), t);
            assert!((got - want).abs() < 1e-15, "T={t:b}: {got} vs {want}");
        }
    }
}
