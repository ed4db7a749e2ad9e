//! A LightGBM binary model's trees, evaluated natively: the scorer's hot path.
//!
//! Why: LightGBM's `predict` walks one row at a time through each tree with a data-dependent
//! branch per node; on random transactions about half of those branches are mispredicted, and
//! that was over half the scorer's CPU per record. Here every tree is walked for a block of rows
//! in lockstep, one level at a time, with no branch on the data (a leaf points to itself, so
//! every row takes the tree's depth in steps): the rows' walks overlap instead of stalling.
//!
//! It reads LightGBM's own model text and follows LightGBM's rules exactly (missing values,
//! the zero threshold, the order of the sum, the sigmoid), so its scores are the same bits; its
//! SHAP contributions ([`shap`]) agree to rounding. The loader
//! ([`crate::model::LoadedModel`]) still checks that on probe rows against LightGBM itself, and
//! serves with LightGBM when they differ or the model uses what this does not implement
//! (categorical splits, linear trees, objectives other than `binary`).

mod shap;

use crate::features::N_FEATURES;

pub use shap::TOLERANCE as SHAP_TOLERANCE;

/// LightGBM's `kZeroThreshold` (a float constant widened to double, as in LightGBM): values
/// within it are zero, both when a dense row is read and for `missing_type=Zero` splits.
pub const ZERO_THRESHOLD: f64 = 1e-35f32 as f64;

/// A feature value as LightGBM reads it from a dense row: within the zero threshold it is 0.
fn as_lightgbm_reads(v: f64) -> f64 {
    if v.abs() <= ZERO_THRESHOLD {
        0.0
    } else {
        v
    }
}

const DEFAULT_LEFT: u16 = 1;
const MISSING_ZERO: u16 = 2;
const MISSING_NAN: u16 = 4;

/// One node; leaves are nodes whose children are themselves.
#[derive(Debug, Clone, Copy)]
struct Node {
    threshold: f64,
    feature: u16,
    flags: u16,
    /// Where a row goes: `[left, right]`. 16 bytes a node: four to a cache line.
    child: [u16; 2],
}

#[derive(Debug)]
struct Tree {
    nodes: Vec<Node>,
    /// Per node, the leaf's value (0 for split nodes).
    value: Vec<f64>,
    /// Steps from the root to the deepest leaf.
    depth: u32,
    /// Nodes below this are splits, the rest leaves.
    splits: u32,
    /// Every leaf's path, for SHAP contributions ([`shap`]).
    paths: shap::Paths,
}

/// The trees of a LightGBM `binary` model, ready to score row-major feature matrices.
#[derive(Debug)]
pub struct Forest {
    trees: Vec<Tree>,
    sigmoid: f64,
    n_features: usize,
    /// No split treats zero or NaN as missing (LightGBM's default on data without NaN), so NaN
    /// can be read as 0 once per row and each step is one comparison.
    pub(crate) plain: bool,
    /// The trees laid out complete, when the model is `plain` and no tree is deeper than
    /// [`COMPLETE_MAX_DEPTH`]: the walk the scorer takes ([`Complete`]).
    pub(crate) complete: Option<Vec<Complete>>,
}

/// The deepest tree laid out complete: 2^10 leaves take 17 KiB, and the trainer's trees are at
/// most 8 deep. Deeper trees (a model trained elsewhere) take the walk over [`Node`]s.
const COMPLETE_MAX_DEPTH: u32 = 10;
// A split's feature is stored in a byte.
const _: () = assert!(N_FEATURES <= 256);

/// A tree padded to a complete binary tree of its depth, in breadth-first order: the children of
/// node `i` are `2i + 1` (value not above the threshold) and `2i + 2`, so a step computes where it
/// goes instead of loading it, and every row takes `depth` steps. A leaf above the last level
/// stands for the whole subtree below it (every leaf under it holds its value). Measured in
/// `scorer/examples/stages.rs` (a 68-tree model, 631k records): the predict stage took
/// 0.41-0.45 µs a record over [`Node`]s, 0.34-0.37 µs laid out complete.
#[derive(Debug)]
pub(crate) struct Complete {
    depth: u32,
    /// Per split node, its feature (below 256: the walk is for [`N_FEATURES`] columns).
    feature: Vec<u8>,
    threshold: Vec<f64>,
    /// Per leaf of the last level, left to right.
    leaf: Vec<f64>,
}

impl Complete {
    fn of(tree: &Tree) -> Complete {
        let splits = (1usize << tree.depth) - 1;
        let mut c = Complete {
            depth: tree.depth,
            feature: vec![0; splits],
            threshold: vec![f64::INFINITY; splits],
            leaf: vec![0.0; splits + 1],
        };
        c.fill(tree, 0, 0, 0);
        c
    }

    /// Places `node` of `tree` at position `at` (on `level`) and what is below it under `at`.
    fn fill(&mut self, tree: &Tree, node: u32, at: usize, level: u32) {
        if level == self.depth {
            self.leaf[at - self.feature.len()] = tree.value[node as usize];
            return;
        }
        // A leaf above the last level goes both ways to itself: the comparison is moot.
        let [left, right] = if node < tree.splits {
            let n = &tree.nodes[node as usize];
            self.feature[at] = n.feature as u8;
            self.threshold[at] = n.threshold;
            n.child.map(u32::from)
        } else {
            [node, node]
        };
        self.fill(tree, left, 2 * at + 1, level + 1);
        self.fill(tree, right, 2 * at + 2, level + 1);
    }
}

/// Rows walked together through one tree, then the next: enough independent walks to hide each
/// step's latency (measured: 16 beat 8 and 32), and their rows stay in registers and L1 through
/// all the trees (17% faster than each tree over the whole block in turn).
const LANES: usize = 16;
/// Rows copied (and cleaned as LightGBM reads them) at a time.
const BLOCK: usize = 64;

impl Tree {
    /// [`Self::step`] for a tree without missing-value splits, on a row whose NaNs are 0.
    #[inline(always)]
    fn step_plain(&self, at: u32, row: &[f64]) -> u32 {
        // SAFETY: `build` checked every child index against `nodes` and `from_model_text` every
        // feature index against the row length (`n_features`); `row` has `n_features` values.
        unsafe {
            let n = self.nodes.get_unchecked(at as usize);
            let v = *row.get_unchecked(n.feature as usize);
            u32::from(*n.child.get_unchecked(usize::from(v > n.threshold)))
        }
    }

    #[inline(always)]
    fn step(&self, at: u32, row: &[f64]) -> u32 {
        let n = &self.nodes[at as usize];
        let v = row[n.feature as usize];
        let nan = v.is_nan();
        // LightGBM turns NaN into 0 unless the split sends NaN its own way.
        let v0 = if nan { 0.0 } else { v };
        let missing = (n.flags & MISSING_ZERO != 0
            && (-ZERO_THRESHOLD..=ZERO_THRESHOLD).contains(&v0))
            | (n.flags & MISSING_NAN != 0 && nan);
        let left = if missing {
            n.flags & DEFAULT_LEFT != 0
        } else {
            v0 <= n.threshold
        };
        u32::from(n.child[usize::from(!left)])
    }
}

impl Forest {
    /// Reads LightGBM's model text. An error names what is not supported; the caller then
    /// scores with LightGBM.
    pub fn from_model_text(text: &str, n_features: usize) -> Result<Forest, String> {
        let mut header = true;
        let (mut sigmoid, mut trees, mut tree) = (None, Vec::new(), None::<RawTree>);
        for line in text.lines() {
            if let Some(i) = line.strip_prefix("Tree=") {
                if let Some(t) = tree.take() {
                    trees.push(t.build()?);
                }
                tree = Some(RawTree::new(i));
                header = false;
                continue;
            }
            if line == "end of trees" {
                break;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            if header {
                match key {
                    "num_class" | "num_tree_per_iteration" if value != "1" => {
                        return Err(format!("{key}={value} (only one tree per round is)"))
                    }
                    "average_output" => return Err("averaged output (random forest)".into()),
                    "max_feature_idx" if value.parse::<usize>().ok() != Some(n_features - 1) => {
                        return Err(format!("max_feature_idx={value}"))
                    }
                    "objective" => {
                        let mut parts = value.split_whitespace();
                        if parts.next() != Some("binary") {
                            return Err(format!("objective {value} (only binary is)"));
                        }
                        sigmoid = parts
                            .find_map(|p| p.strip_prefix("sigmoid:"))
                            .and_then(|s| s.parse::<f64>().ok());
                    }
                    _ => {}
                }
            } else if let Some(t) = tree.as_mut() {
                t.set(key, value)?;
            }
        }
        if let Some(t) = tree.take() {
            trees.push(t.build()?);
        }
        let sigmoid = sigmoid.ok_or("no binary objective with a sigmoid in the header")?;
        if trees.is_empty() {
            return Err("no trees".into());
        }
        if let Some(bad) = trees
            .iter()
            .flat_map(|t| &t.nodes)
            .find(|n| n.feature as usize >= n_features)
        {
            return Err(format!("a split on feature {}", bad.feature));
        }
        let plain = trees
            .iter()
            .flat_map(|t| &t.nodes)
            .all(|n| n.flags & (MISSING_ZERO | MISSING_NAN) == 0);
        let complete = (plain
            && n_features == N_FEATURES
            && trees.iter().all(|t| t.depth <= COMPLETE_MAX_DEPTH))
        .then(|| trees.iter().map(Complete::of).collect());
        Ok(Forest {
            trees,
            sigmoid,
            n_features,
            plain,
            complete,
        })
    }

    pub fn num_trees(&self) -> usize {
        self.trees.len()
    }

    /// `n` rows that take every split both ways and at its edge: each feature's value is one of
    /// the thresholds it is split on, a value just past one, or one of 0, -0, NaN, ±inf and a
    /// value within the zero threshold. Deterministic, for comparing two evaluators of a model.
    pub fn probe_rows(&self, n: usize) -> Vec<f64> {
        let mut candidates = vec![
            vec![0.0, -0.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e-36];
            self.n_features
        ];
        for t in &self.trees {
            for node in &t.nodes[..t.splits as usize] {
                let c = &mut candidates[node.feature as usize];
                let th = node.threshold;
                c.extend([th, next_up(th), next_down(th)]);
            }
        }
        // xorshift64: fixed seed, so a refusal can be reproduced.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        (0..n * self.n_features)
            .map(|i| {
                let c = &candidates[i % self.n_features];
                c[(next() % c.len() as u64) as usize]
            })
            .collect()
    }

    /// Fraud probabilities for a row-major matrix of `n_features` columns, appended to `out`.
    pub fn predict(&self, rows: &[f64], out: &mut Vec<f64>) {
        let nf = self.n_features;
        assert_eq!(rows.len() % nf, 0, "rows of {nf} features");
        let mut block = vec![0.0; BLOCK * nf];
        for chunk in rows.chunks(BLOCK * nf) {
            let n = chunk.len() / nf;
            // As LightGBM reads a dense row: values within the zero threshold are 0. Without
            // missing-value splits, every split also reads NaN as 0. Rows past `n` (the last
            // block's padding) are scored and dropped.
            for (b, &v) in block.iter_mut().zip(chunk) {
                *b = if self.plain && v.is_nan() {
                    0.0
                } else {
                    as_lightgbm_reads(v)
                };
            }
            let mut raw = [0.0f64; BLOCK];
            for lane0 in (0..n.div_ceil(LANES) * LANES).step_by(LANES) {
                let raw: &mut [f64; LANES] = (&mut raw[lane0..lane0 + LANES]).try_into().unwrap();
                if let Some(complete) = &self.complete {
                    walk_complete(complete, &block, lane0, raw);
                    continue;
                }
                if self.plain && nf == N_FEATURES {
                    self.walk_plain(&block, lane0, raw);
                    continue;
                }
                let rows: [&[f64]; LANES] =
                    std::array::from_fn(|l| &block[(lane0 + l) * nf..(lane0 + l + 1) * nf]);
                for tree in &self.trees {
                    let mut at = [0u32; LANES];
                    for _ in 0..tree.depth {
                        for l in 0..LANES {
                            at[l] = if self.plain {
                                tree.step_plain(at[l], rows[l])
                            } else {
                                tree.step(at[l], rows[l])
                            };
                        }
                        // Leaf-wise trees are lopsided: most rows reach a leaf well before
                        // the deepest one.
                        if at.iter().all(|&a| a >= tree.splits) {
                            break;
                        }
                    }
                    for l in 0..LANES {
                        raw[l] += tree.value[at[l] as usize];
                    }
                }
            }
            out.extend(
                raw[..n]
                    .iter()
                    .map(|r| 1.0 / (1.0 + (-self.sigmoid * r).exp())),
            );
        }
    }

    /// The walk of [`Tree::step_plain`] for `LANES` rows of [`N_FEATURES`] values from `lane0` of
    /// `block`: every lane reads its value at a constant offset from one pointer (`l *
    /// N_FEATURES + feature`). Through 16 row slices, the rows' addresses did not fit in
    /// registers and each step reloaded one.
    #[inline(always)]
    fn walk_plain(&self, block: &[f64], lane0: usize, raw: &mut [f64; LANES]) {
        const NF: usize = N_FEATURES;
        let lanes = &block[lane0 * NF..(lane0 + LANES) * NF];
        for tree in &self.trees {
            let mut at = [0u32; LANES];
            for _ in 0..tree.depth {
                for (l, at) in at.iter_mut().enumerate() {
                    // SAFETY: as in `step_plain`: `build` checked every child index against
                    // `nodes`, `from_model_text` every feature against `n_features` (== NF, the
                    // caller checked), and `lanes` holds LANES rows of NF values.
                    unsafe {
                        let n = tree.nodes.get_unchecked(*at as usize);
                        let v = *lanes.get_unchecked(l * NF + n.feature as usize);
                        *at = u32::from(*n.child.get_unchecked(usize::from(v > n.threshold)));
                    }
                }
                if at.iter().all(|&a| a >= tree.splits) {
                    break;
                }
            }
            for l in 0..LANES {
                raw[l] += tree.value[at[l] as usize];
            }
        }
    }
}

/// [`Forest::walk_plain`] over the trees laid out complete: `LANES` rows of [`N_FEATURES`] values
/// from `lane0` of `block` (NaN already read as 0), each tree's leaf added to `raw` in tree order
/// (the order of LightGBM's sum, so the scores are the same bits).
#[inline(always)]
fn walk_complete(trees: &[Complete], block: &[f64], lane0: usize, raw: &mut [f64; LANES]) {
    const NF: usize = N_FEATURES;
    let lanes = &block[lane0 * NF..(lane0 + LANES) * NF];
    for tree in trees {
        let mut at = [0usize; LANES];
        for _ in 0..tree.depth {
            for (l, at) in at.iter_mut().enumerate() {
                // SAFETY: `at` stays below 2^level - 1 + 2^level, a split node of `feature` and
                // `threshold` (2^depth - 1 long) until the last step; `Complete::of` took every
                // feature from a tree checked against `n_features` (== NF) by `from_model_text`,
                // and `lanes` holds LANES rows of NF values.
                unsafe {
                    let f = usize::from(*tree.feature.get_unchecked(*at));
                    let v = *lanes.get_unchecked(l * NF + f);
                    *at = 2 * *at + 1 + usize::from(v > *tree.threshold.get_unchecked(*at));
                }
            }
        }
        let first_leaf = tree.feature.len();
        for l in 0..LANES {
            raw[l] += tree.leaf[at[l] - first_leaf];
        }
    }
}

fn next_up(v: f64) -> f64 {
    if !v.is_finite() {
        return v;
    }
    let b = v.to_bits();
    f64::from_bits(if v == 0.0 {
        1
    } else if v > 0.0 {
        b + 1
    } else {
        b - 1
    })
}

fn next_down(v: f64) -> f64 {
    -next_up(-v)
}

/// One `Tree=` section as LightGBM writes it: parallel arrays over split nodes, children
/// `>= 0` for split nodes and `~leaf` for leaves.
struct RawTree {
    name: String,
    num_leaves: usize,
    split_feature: Vec<u32>,
    threshold: Vec<f64>,
    decision_type: Vec<u32>,
    left: Vec<i64>,
    right: Vec<i64>,
    leaf_value: Vec<f64>,
    internal_count: Vec<f64>,
    leaf_count: Vec<f64>,
}

fn numbers<T: std::str::FromStr>(key: &str, value: &str) -> Result<Vec<T>, String> {
    value
        .split_whitespace()
        .map(|v| v.parse().map_err(|_| format!("{key}: cannot read {v:?}")))
        .collect()
}

impl RawTree {
    fn new(index: &str) -> RawTree {
        RawTree {
            name: format!("Tree={index}"),
            num_leaves: 0,
            split_feature: Vec::new(),
            threshold: Vec::new(),
            decision_type: Vec::new(),
            left: Vec::new(),
            right: Vec::new(),
            leaf_value: Vec::new(),
            internal_count: Vec::new(),
            leaf_count: Vec::new(),
        }
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let in_tree = |e: String| format!("{}: {e}", self.name);
        match key {
            "num_leaves" => {
                self.num_leaves = value
                    .parse()
                    .map_err(|_| in_tree(format!("{key}={value}")))?
            }
            "num_cat" if value != "0" => return Err(in_tree("categorical splits".into())),
            "is_linear" if value != "0" => return Err(in_tree("a linear tree".into())),
            "split_feature" => self.split_feature = numbers(key, value).map_err(in_tree)?,
            "threshold" => self.threshold = numbers(key, value).map_err(in_tree)?,
            "decision_type" => self.decision_type = numbers(key, value).map_err(in_tree)?,
            "left_child" => self.left = numbers(key, value).map_err(in_tree)?,
            "right_child" => self.right = numbers(key, value).map_err(in_tree)?,
            "leaf_value" => self.leaf_value = numbers(key, value).map_err(in_tree)?,
            "internal_count" => self.internal_count = numbers(key, value).map_err(in_tree)?,
            "leaf_count" => self.leaf_count = numbers(key, value).map_err(in_tree)?,
            _ => {}
        }
        Ok(())
    }

    fn build(self) -> Result<Tree, String> {
        let bad = |what: &str| Err(format!("{}: {what}", self.name));
        let leaves = self.num_leaves;
        if leaves == 0 || self.leaf_value.len() != leaves {
            return bad("leaf values do not match num_leaves");
        }
        let splits = leaves - 1;
        if [
            self.split_feature.len(),
            self.threshold.len(),
            self.decision_type.len(),
            self.left.len(),
            self.right.len(),
        ]
        .iter()
        .any(|&len| len != splits)
        {
            return bad("split arrays do not match num_leaves");
        }
        if self.leaf_count.len() != leaves || self.internal_count.len() != splits {
            return bad("leaf or internal counts do not match num_leaves");
        }
        let count = [&self.internal_count[..], &self.leaf_count[..]].concat();
        // Split nodes keep their numbers; leaf i becomes node splits + i.
        if splits + leaves > usize::from(u16::MAX) {
            return bad("more nodes than a 16-bit index holds");
        }
        let node_of = |c: i64| -> Option<u16> {
            let n = if c >= 0 {
                c as usize
            } else {
                splits + (!c) as usize
            };
            (n < splits + leaves).then_some(n as u16)
        };
        let mut nodes = Vec::with_capacity(splits + leaves);
        for i in 0..splits {
            let d = self.decision_type[i];
            if d & 1 != 0 {
                return bad("categorical splits");
            }
            let flags = (if d & 2 != 0 { DEFAULT_LEFT } else { 0 })
                | match (d >> 2) & 3 {
                    0 => 0,
                    1 => MISSING_ZERO,
                    2 => MISSING_NAN,
                    _ => return bad("an unknown missing-value type"),
                };
            let (Some(l), Some(r)) = (node_of(self.left[i]), node_of(self.right[i])) else {
                return bad("a child out of range");
            };
            nodes.push(Node {
                threshold: self.threshold[i],
                feature: u16::try_from(self.split_feature[i])
                    .map_err(|_| format!("{}: a feature index past 65535", self.name))?,
                flags,
                child: [l, r],
            });
        }
        let mut value = vec![0.0; splits];
        for (i, v) in self.leaf_value.iter().enumerate() {
            let at = (splits + i) as u16;
            nodes.push(Node {
                threshold: 0.0,
                feature: 0,
                flags: 0,
                child: [at, at],
            });
            value.push(*v);
        }
        // Depth by walking from the root; a node reached twice or a cycle means a broken tree.
        let mut depth = 0;
        let mut seen = vec![false; nodes.len()];
        let mut stack = vec![(0u32, 0u32)];
        while let Some((at, d)) = stack.pop() {
            if std::mem::replace(&mut seen[at as usize], true) {
                return bad("a node reached twice");
            }
            if (at as usize) < splits {
                for c in nodes[at as usize].child {
                    stack.push((u32::from(c), d + 1));
                }
            } else {
                depth = depth.max(d);
            }
        }
        if seen.iter().any(|s| !s) {
            return bad("a node the root does not reach");
        }
        let paths = shap::Paths::of(&nodes, splits as u32, &count, &value)
            .map_err(|e| format!("{}: {e}", self.name))?;
        Ok(Tree {
            nodes,
            value,
            depth,
            splits: splits as u32,
            paths,
        })
    }
}
