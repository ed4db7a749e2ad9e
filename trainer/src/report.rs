//! The evaluation report of one trained model: JSON for machines, and one self-contained HTML file
//! (inline SVG, no scripts, no network) with the PR curve, the ROC curve, the score histogram by
//! class and the feature importance, for a person to open in a browser.

use crate::registry::GateDecision;
use crate::{Trained, TrainerError};
use std::fmt::Write as _;
use std::path::Path;

/// Everything the report shows besides the model itself.
pub struct ReportContext<'a> {
    pub model_name: &'a str,
    pub version: Option<i32>,
    pub source: &'a str,
    pub gate: Option<&'a GateDecision>,
}

/// The report as JSON: metrics, threshold, confusion matrix, importance, gate.
pub fn json(t: &Trained, ctx: &ReportContext<'_>) -> serde_json::Value {
    let m = |k: &str| t.metrics.get(k).copied().unwrap_or(f64::NAN);
    serde_json::json!({
        "model_name": ctx.model_name,
        "version": ctx.version,
        "source": ctx.source,
        "threshold": t.threshold,
        "metrics": t.metrics,
        "confusion_matrix": {"tp": m("tp"), "fp": m("fp"), "tn": m("tn"), "fn": m("fn")},
        "feature_importance_gain": t.importance.iter().map(|(f, g)| serde_json::json!({"feature": f, "gain": g})).collect::<Vec<_>>(),
        "gate": ctx.gate.map(|g| serde_json::json!({
            "candidate_pr_auc": g.candidate_pr_auc,
            "champion_pr_auc": g.champion_pr_auc,
            "holdout_frauds": g.holdout_frauds,
            "promoted": g.promote,
        })),
    })
}

/// Writes `<stem>.json` and `<stem>.html` next to each other; returns their paths.
pub fn write(
    t: &Trained,
    ctx: &ReportContext<'_>,
    stem: &Path,
) -> Result<(String, String), TrainerError> {
    let json_path = stem.with_extension("json");
    let html_path = stem.with_extension("html");
    let io = |p: &Path, e: std::io::Error| TrainerError::File {
        path: p.display().to_string(),
        detail: e.to_string(),
    };
    if let Some(dir) = stem.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    }
    let text = serde_json::to_string_pretty(&json(t, ctx)).unwrap_or_default();
    std::fs::write(&json_path, text).map_err(|e| io(&json_path, e))?;
    std::fs::write(&html_path, html(t, ctx)).map_err(|e| io(&html_path, e))?;
    Ok((
        json_path.display().to_string(),
        html_path.display().to_string(),
    ))
}

/// Points (x, y) of a curve.
pub type Curve = Vec<(f64, f64)>;

/// (recall, precision) and (false positive rate, true positive rate) points, highest score first.
pub fn curves(scores: &[f64], labels: &[bool]) -> (Curve, Curve) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let pos = labels.iter().filter(|l| **l).count().max(1) as f64;
    let neg = (labels.len() as f64 - pos).max(1.0);
    let (mut tp, mut fp) = (0.0, 0.0);
    let (mut pr, mut roc) = (vec![], vec![(0.0, 0.0)]);
    for (k, i) in order.iter().enumerate() {
        if labels[*i] {
            tp += 1.0
        } else {
            fp += 1.0
        }
        let last_of_tie = order.get(k + 1).is_none_or(|j| scores[*j] != scores[*i]);
        if last_of_tie {
            pr.push((tp / pos, tp / (tp + fp)));
            roc.push((fp / neg, tp / pos));
        }
    }
    (thin(pr), thin(roc))
}

/// At most ~500 points per curve keep the HTML small.
fn thin(points: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    let step = (points.len() / 500).max(1);
    let last = points.last().copied();
    let mut out: Vec<_> = points.into_iter().step_by(step).collect();
    if let Some(l) = last {
        if out.last() != Some(&l) {
            out.push(l);
        }
    }
    out
}

const W: f64 = 420.0;
const H: f64 = 300.0;
const PAD: f64 = 40.0;

/// The plot area of every chart: frame, axis labels, 0 and 1 at the ends of the axes.
fn frame(caption: &str, x_label: &str, y_label: &str, body: &str) -> String {
    format!(
        r##"<figure><figcaption>{caption}</figcaption><svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{caption}">
<rect x="{PAD}" y="{PAD}" width="{iw}" height="{ih}" fill="#fafafa" stroke="#999"/>{body}
<text x="{cx}" y="{H2}" text-anchor="middle">{x_label}</text>
<text x="12" y="{cy}" text-anchor="middle" transform="rotate(-90 12 {cy})">{y_label}</text>
<text x="{PAD}" y="{ty}" text-anchor="middle">0</text><text x="{xr}" y="{ty}" text-anchor="middle">1</text>
</svg></figure>"##,
        iw = W - 2.0 * PAD,
        ih = H - 2.0 * PAD,
        cx = W / 2.0,
        H2 = H - 5.0,
        cy = H / 2.0,
        ty = H - PAD + 15.0,
        xr = W - PAD,
    )
}

fn line_chart(title: &str, x_label: &str, y_label: &str, points: &[(f64, f64)]) -> String {
    let mut path = String::new();
    for (k, (x, y)) in points.iter().enumerate() {
        let (px, py) = (PAD + x * (W - 2.0 * PAD), H - PAD - y * (H - 2.0 * PAD));
        let _ = write!(path, "{}{px:.1},{py:.1} ", if k == 0 { "M" } else { "L" });
    }
    let body = format!(
        r##"<path d="{path}" fill="none" stroke="#c0392b" stroke-width="2"/><text x="{lx}" y="{yb}" text-anchor="end">0</text><text x="{lx}" y="{yt}" text-anchor="end">1</text>"##,
        lx = PAD - 5.0,
        yb = H - PAD,
        yt = PAD + 5.0,
    );
    frame(title, x_label, y_label, &body)
}

/// Score histogram, 20 bins, one bar series per class, counts on a log scale (fraud is rare).
fn histogram(scores: &[f64], labels: &[bool]) -> String {
    let mut bins = [[0u64; 20]; 2];
    for (s, l) in scores.iter().zip(labels) {
        let b = ((s * 20.0) as usize).min(19);
        bins[*l as usize][b] += 1;
    }
    let max = bins.iter().flatten().copied().max().unwrap_or(1).max(1) as f64;
    let bar_w = (W - 2.0 * PAD) / 20.0 / 2.0;
    let mut bars = String::new();
    for (class, color) in [(0usize, "#2980b9"), (1, "#c0392b")] {
        for (b, n) in bins[class].iter().enumerate() {
            if *n == 0 {
                continue;
            }
            let h = (*n as f64 + 1.0).ln() / (max + 1.0).ln() * (H - 2.0 * PAD);
            let x = PAD + b as f64 * 2.0 * bar_w + class as f64 * bar_w;
            let _ = write!(
                bars,
                r#"<rect x="{x:.1}" y="{:.1}" width="{bar_w:.1}" height="{h:.1}" fill="{color}"><title>{n}</title></rect>"#,
                H - PAD - h
            );
        }
    }
    frame(
        "Score histogram by class (log count; blue = legitimate, red = fraud)",
        "score",
        "log count",
        &bars,
    )
}

fn importance_chart(importance: &[(String, f64)]) -> String {
    let max = importance.first().map_or(1.0, |(_, g)| g.max(1e-12));
    let row_h = 16.0;
    let height = importance.len() as f64 * row_h + 10.0;
    let mut bars = String::new();
    for (k, (f, g)) in importance.iter().enumerate() {
        let y = 5.0 + k as f64 * row_h;
        let w = g / max * 230.0;
        let _ = write!(
            bars,
            r##"<text x="165" y="{:.1}" text-anchor="end" font-size="11">{f}</text><rect x="170" y="{y:.1}" width="{w:.1}" height="12" fill="#16a085"><title>{g:.1}</title></rect>"##,
            y + 10.0
        );
    }
    format!(
        r#"<figure><figcaption>Feature importance (total gain)</figcaption><svg viewBox="0 0 {W} {height}" width="{W}" height="{height}" role="img" aria-label="feature importance">{bars}</svg></figure>"#
    )
}

/// The whole HTML page.
pub fn html(t: &Trained, ctx: &ReportContext<'_>) -> String {
    let m = |k: &str| t.metrics.get(k).copied().unwrap_or(f64::NAN);
    let (pr, roc) = curves(&t.holdout_scores, &t.holdout_labels);
    let version = ctx
        .version
        .map_or("(not published)".to_string(), |v| format!("v{v}"));
    let gate = match ctx.gate {
        Some(g) => format!(
            "<p>Gate: candidate PR-AUC {:.4} vs champion {} on the same holdout → <b>{}</b></p>",
            g.candidate_pr_auc,
            g.champion_pr_auc
                .map_or("(none)".into(), |c| format!("{c:.4}")),
            if g.promote {
                "champion"
            } else if g.too_few_frauds() {
                "not promoted: too few frauds in the holdout to judge"
            } else {
                "not promoted"
            }
        ),
        None => String::new(),
    };
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>fraudstream model {name} {version}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}figure{{display:inline-block;margin:0 1em 1em 0}}
figcaption{{font-weight:600;margin-bottom:.3em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .7em;text-align:right}}</style></head>
<body><h1>Model {name} {version}</h1><p>Trained on {source}; {train_rows} training rows, {rounds} boosting rounds; evaluated on the last {holdout_rows} rows in time (holdout).</p>
{gate}
<table><tr><th>PR-AUC</th><th>ROC-AUC</th><th>threshold</th><th>precision</th><th>recall</th><th>F1</th><th>alerts / 10k</th></tr>
<tr><td>{pr_auc:.4}</td><td>{roc_auc:.4}</td><td>{threshold:.4}</td><td>{precision:.3}</td><td>{recall:.3}</td><td>{f1:.3}</td><td>{alerts:.1}</td></tr></table>
<h2>Confusion matrix at the threshold</h2>
<table><tr><th></th><th>predicted fraud</th><th>predicted legitimate</th></tr>
<tr><th>fraud</th><td>{tp}</td><td>{fn_}</td></tr><tr><th>legitimate</th><td>{fp}</td><td>{tn}</td></tr></table>
<h2>Curves</h2>{pr_chart}{roc_chart}{hist}{imp}
</body></html>"#,
        name = ctx.model_name,
        source = ctx.source,
        train_rows = m("train_rows"),
        rounds = m("rounds"),
        holdout_rows = m("holdout_rows"),
        pr_auc = m("pr_auc"),
        roc_auc = m("roc_auc"),
        threshold = t.threshold,
        precision = m("precision"),
        recall = m("recall"),
        f1 = m("f1"),
        alerts = m("alerts_per_10k"),
        tp = m("tp"),
        fn_ = m("fn"),
        fp = m("fp"),
        tn = m("tn"),
        pr_chart = line_chart("Precision-recall (holdout)", "recall", "precision", &pr),
        roc_chart = line_chart(
            "ROC (holdout)",
            "false positive rate",
            "true positive rate",
            &roc
        ),
        hist = histogram(&t.holdout_scores, &t.holdout_labels),
        imp = importance_chart(&t.importance),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curves_end_at_full_recall_and_roc_corner() {
        let scores = [0.9, 0.8, 0.7, 0.2];
        let labels = [true, false, true, false];
        let (pr, roc) = curves(&scores, &labels);
        assert_eq!(pr.first(), Some(&(0.5, 1.0)));
        assert_eq!(pr.last(), Some(&(1.0, 0.5)));
        assert_eq!(roc.last(), Some(&(1.0, 1.0)));
    }
}
