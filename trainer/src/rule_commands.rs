//! `trainer rules ...`: add, update, list, show, test, enable, disable and delete analyst rules.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use fraudstream_common::clickhouse::ClickHouseArgs;
use fraudstream_common::features::FEATURE_NAMES;
use fraudstream_common::kafka::{ensure_topics, KafkaArgs, TopicSpec};
use fraudstream_common::rules::{CompiledRule, FIELDS};
use fraudstream_schemas::{topics, Rule, RuleAction};
use trainer::rules;

/// Where rules live.
#[derive(Args, Clone)]
pub struct RulesTarget {
    #[command(flatten)]
    pub kafka: KafkaArgs,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    #[arg(long, env = "FRAUDSTREAM_RULES_TOPIC", default_value = topics::RULES, global = true)]
    pub rules_topic: String,
}

/// A rule's editable parts.
#[derive(Args, Clone)]
pub struct RuleFields {
    /// CEL condition, e.g. "type == 'TRANSFER' && amount > 200000 && orig_steps_since_last == -1".
    /// Names: the transaction's type, name_orig, name_dest, is_flagged_fraud, the model's score and
    /// its features (see `trainer rules fields`).
    #[arg(long = "expr")]
    pub expression: Option<String>,
    /// alert (raise an alert whatever the model says), suppress (never alert: an allow-list) or
    /// tag (record the hit only).
    #[arg(long, value_parser = rules::action)]
    pub action: Option<RuleAction>,
    #[arg(long)]
    pub description: Option<String>,
    #[arg(long)]
    pub owner: Option<String>,
}

#[derive(Subcommand, Clone)]
pub enum RulesCommand {
    /// Add a rule (version 1, enabled); refused if the id exists or the expression does not compile.
    Add {
        id: String,
        #[command(flatten)]
        fields: RuleFields,
        /// Add it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Change a rule's expression, action, description or owner (version + 1).
    Update {
        id: String,
        #[command(flatten)]
        fields: RuleFields,
    },
    /// Every rule: id, version, action, state, owner, expression.
    List,
    /// One rule in full.
    Show { id: String },
    /// What a rule (an existing one, or --expr with --action) would have hit over the last
    /// --hours of transactions in ClickHouse, counted back from the newest: transactions, frauds
    /// (from the labels) and the model's alerts.
    Test {
        /// An existing rule's id (or `-` with --expr).
        id: String,
        #[arg(long = "expr")]
        expression: Option<String>,
        #[arg(long, value_parser = rules::action, default_value = "tag")]
        action: RuleAction,
        #[arg(long, default_value_t = 24.0)]
        hours: f64,
    },
    /// Enable a rule (version + 1).
    Enable { id: String },
    /// Disable a rule: it stays listed but matches nothing (version + 1).
    Disable { id: String },
    /// Delete a rule (a tombstone on the topic).
    Delete { id: String },
    /// The names a rule may use.
    Fields,
}

pub async fn run(target: &RulesTarget, command: &RulesCommand) -> Result<()> {
    let (kafka, topic) = (&target.kafka, target.rules_topic.as_str());
    ensure_topics(&kafka.admin()?, &[TopicSpec::new(topic, 1).compacted()]).await?;
    let (book, _) = rules::read_book(kafka, topic).await?;
    let existing = |id: &str| {
        book.get(id)
            .cloned()
            .with_context(|| format!("no rule {id:?} on {topic} (`trainer rules list`)"))
    };
    let changed = |mut rule: Rule| {
        rule.version += 1;
        rule.updated_at = fraudstream_common::now_millis();
        rule
    };
    match command {
        RulesCommand::Add {
            id,
            fields,
            disabled,
        } => {
            if book.contains_key(id) {
                bail!(
                    "rule {id:?} exists (v{}): use `trainer rules update`",
                    book[id].version
                );
            }
            let rule = Rule {
                id: id.clone(),
                version: 1,
                expression: fields.expression.clone().context("--expr is required")?,
                action: fields
                    .action
                    .context("--action alert|suppress|tag is required")?,
                description: fields.description.clone().unwrap_or_default(),
                owner: fields.owner.clone().unwrap_or_default(),
                enabled: !disabled,
                updated_at: fraudstream_common::now_millis(),
            };
            publish(target, &rule).await
        }
        RulesCommand::Update { id, fields } => {
            let mut rule = changed(existing(id)?);
            if let Some(e) = &fields.expression {
                rule.expression = e.clone();
            }
            if let Some(a) = fields.action {
                rule.action = a;
            }
            if let Some(d) = &fields.description {
                rule.description = d.clone();
            }
            if let Some(o) = &fields.owner {
                rule.owner = o.clone();
            }
            publish(target, &rule).await
        }
        RulesCommand::Enable { id } | RulesCommand::Disable { id } => {
            let mut rule = changed(existing(id)?);
            rule.enabled = matches!(command, RulesCommand::Enable { .. });
            publish(target, &rule).await
        }
        RulesCommand::Delete { id } => {
            existing(id)?;
            rules::delete(kafka, topic, id).await?;
            println!("deleted rule {id}; every scorer drops it before its next batch");
            Ok(())
        }
        RulesCommand::List => {
            println!(
                "{:<24} {:<4} {:<8} {:<8} {:<12} expression",
                "id", "ver", "action", "state", "owner"
            );
            for rule in book.values() {
                println!("{}", rules::summary_line(rule));
            }
            println!(
                "{} rules ({} enabled)",
                book.len(),
                book.values().filter(|r| r.enabled).count()
            );
            Ok(())
        }
        RulesCommand::Show { id } => {
            let r = existing(id)?;
            println!("rule {} v{} ({})\n  action:      {}\n  expression:  {}\n  description: {}\n  owner:       {}\n  updated at:  {} ms since the epoch",
                r.id, r.version, if r.enabled { "enabled" } else { "disabled" }, r.action.as_str(),
                r.expression, r.description, r.owner, r.updated_at);
            Ok(())
        }
        RulesCommand::Test {
            id,
            expression,
            action,
            hours,
        } => {
            let rule = match expression {
                Some(e) => Rule {
                    id: id.clone(),
                    version: 0,
                    expression: e.clone(),
                    action: *action,
                    description: String::new(),
                    owner: String::new(),
                    enabled: true,
                    updated_at: 0,
                },
                None => existing(id)?,
            };
            test(&target.clickhouse, rule, *hours).await
        }
        RulesCommand::Fields => {
            for (name, kind) in FIELDS {
                println!("{name:<24} {kind}");
            }
            for name in FEATURE_NAMES {
                println!("{name:<24} number: model feature");
            }
            Ok(())
        }
    }
}

async fn publish(target: &RulesTarget, rule: &Rule) -> Result<()> {
    rules::publish(&target.kafka, &target.rules_topic, rule).await?;
    println!(
        "published rule {} v{} ({}, {}): every scorer applies it before its next batch",
        rule.id,
        rule.version,
        rule.action.as_str(),
        if rule.enabled { "enabled" } else { "disabled" }
    );
    Ok(())
}

async fn test(ch: &ClickHouseArgs, rule: Rule, hours: f64) -> Result<()> {
    let compiled = CompiledRule::new(rule)?;
    let b = rules::backtest(ch, &compiled, hours).await?;
    let r = &compiled.rule;
    println!(
        "rule {} ({}) over the last {hours} h of transactions in ClickHouse:",
        r.id,
        r.action.as_str()
    );
    println!("  transactions: {}", b.transactions);
    println!("  hits:         {}", b.hits);
    println!(
        "  frauds hit:   {} of {} labelled frauds ({} of the hits have a label)",
        b.fraud_hits, b.frauds, b.labelled_hits
    );
    let precision = if b.labelled_hits > 0 {
        b.fraud_hits as f64 / b.labelled_hits as f64
    } else {
        0.0
    };
    println!("  precision:    {precision:.3} (frauds / labelled hits)");
    println!("  model alerts hit: {}", b.model_alert_hits);
    let change = match r.action {
        RuleAction::Alert => "new alerts (the model did not alert)",
        RuleAction::Suppress => "alerts it would suppress",
        RuleAction::Tag => "alerts changed (a tag changes none)",
    };
    println!("  {change}: {}", b.changed_alerts);
    Ok(())
}
