//! Analyst rules next to the model: each rule is a CEL condition over one transaction (its fields,
//! the model's features, the model's score) with an action. The scorer evaluates the rule set on
//! every transaction of a batch after the model, and decides:
//!
//! alert = (model alert OR an ALERT rule hit) AND NOT a SUPPRESS rule hit
//!
//! TAG rules are recorded only. Rules arrive on the compacted `rules` topic; a rule that does not
//! compile is refused and the rules in force keep serving ([`RuleSet::apply`]).

mod compile;

pub use compile::{Input, FIELDS};
use fraudstream_schemas::{Rule, RuleAction, RuleHit};
use std::collections::BTreeMap;

/// A rule compiled for evaluation.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub rule: Rule,
    test: compile::Bool,
}

/// Why a rule was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("rule {id} v{version}: {reason}")]
pub struct RuleError {
    pub id: String,
    pub version: i32,
    pub reason: String,
}

impl CompiledRule {
    /// Compiles `rule`'s expression (once, when it loads).
    pub fn new(rule: Rule) -> Result<Self, RuleError> {
        let refuse = |reason: String| RuleError {
            id: rule.id.clone(),
            version: rule.version,
            reason,
        };
        if rule.id.trim().is_empty() {
            return Err(refuse("a rule needs an id".into()));
        }
        let test = compile::compile(&rule.expression)
            .map_err(|e| refuse(format!("expression `{}` {e}", rule.expression)))?;
        Ok(CompiledRule { rule, test })
    }

    pub fn matches(&self, input: &Input<'_>) -> bool {
        self.test.eval(input)
    }
}

/// The rules in force, by id, and the version of the set.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: BTreeMap<String, CompiledRule>,
    /// The enabled rules, in id order (what a transaction is evaluated against).
    enabled: Vec<CompiledRule>,
    /// The rules topic's offset after the last change applied (0: none).
    version: i64,
}

impl RuleSet {
    /// Applies the record at `offset` of the rules topic: a rule added or changed (`Some`), or
    /// the rule `key` deleted (`None`, a tombstone). A rule that does not compile is refused and
    /// the set is unchanged.
    pub fn apply(&mut self, key: &str, rule: Option<Rule>, offset: i64) -> Result<(), RuleError> {
        match rule {
            Some(rule) => {
                let compiled = CompiledRule::new(rule)?;
                self.rules.insert(compiled.rule.id.clone(), compiled);
            }
            None => {
                self.rules.remove(key);
            }
        }
        self.enabled = self
            .rules
            .values()
            .filter(|r| r.rule.enabled)
            .cloned()
            .collect();
        self.version = offset + 1;
        Ok(())
    }

    pub fn version(&self) -> i64 {
        self.version
    }

    /// Enabled rules.
    pub fn active(&self) -> usize {
        self.enabled.len()
    }

    pub fn rules(&self) -> impl Iterator<Item = &CompiledRule> {
        self.rules.values()
    }

    /// The enabled rules that `input` matches, in id order, appended to `hits`.
    pub fn evaluate(&self, input: &Input<'_>, hits: &mut Vec<RuleHit>) {
        for r in &self.enabled {
            if r.matches(input) {
                hits.push(RuleHit {
                    id: r.rule.id.clone(),
                    version: r.rule.version,
                    action: r.rule.action,
                });
            }
        }
    }
}

/// The verdict: the model's alert, raised by an ALERT hit, and overruled by a SUPPRESS hit.
pub fn decide(model_alert: bool, hits: &[RuleHit]) -> bool {
    let any = |a: RuleAction| hits.iter().any(|h| h.action == a);
    (model_alert || any(RuleAction::Alert)) && !any(RuleAction::Suppress)
}

#[cfg(test)]
mod tests;
