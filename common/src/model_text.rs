//! The feature names a LightGBM model text declares, and re-ordering a model to the scorer's
//! column order.
//!
//! A model trained elsewhere (say in Python, from a pandas frame whose columns are in another
//! order) names its features in the text's `feature_names=` line. Rather than permute every row
//! at scoring time, the text itself is rewritten once at load: each tree's `split_feature`
//! indices are mapped to the scorer's columns, and `feature_names`, `feature_infos` and
//! `tree_sizes` follow. The result is an ordinary model in [`FEATURE_NAMES`] order, so LightGBM,
//! the native forest and the SHAP reasons need nothing else.

use crate::features::FEATURE_NAMES;
use std::borrow::Cow;
use std::collections::HashSet;

/// The names of the text's `feature_names=` line; None when absent or LightGBM's defaults
/// (`Column_0 Column_1 …`, a model trained on an unnamed matrix).
pub fn declared_names(text: &str) -> Option<Vec<String>> {
    let line = header_lines(text).find_map(|l| l.strip_prefix("feature_names="))?;
    let names: Vec<String> = line.split(' ').map(str::to_string).collect();
    let unnamed = names
        .iter()
        .enumerate()
        .all(|(i, n)| *n == format!("Column_{i}"));
    (!unnamed).then_some(names)
}

/// The text with its features in [`FEATURE_NAMES`] order. The names come from the text when it
/// has them, else from `listed` (the record's list, which then must be in the scorer's order).
/// A different set of features is refused with what is missing and what is unknown.
pub fn align_to_scorer<'a>(text: &'a str, listed: &[String]) -> Result<Cow<'a, str>, String> {
    let Some(names) = declared_names(text) else {
        if listed != FEATURE_NAMES {
            return Err(format!(
                "model has {listed:?}, scorer has {FEATURE_NAMES:?}"
            ));
        }
        return Ok(Cow::Borrowed(text));
    };
    if !listed.is_empty() && listed != names {
        return Err(format!(
            "the record lists {listed:?} but the model text names {names:?}"
        ));
    }
    if names == FEATURE_NAMES {
        return Ok(Cow::Borrowed(text));
    }
    let ours: HashSet<&str> = FEATURE_NAMES.iter().copied().collect();
    let theirs: HashSet<&str> = names.iter().map(String::as_str).collect();
    if ours != theirs || theirs.len() != names.len() {
        let mut unknown: Vec<&str> = theirs.difference(&ours).copied().collect();
        let mut missing: Vec<&str> = ours.difference(&theirs).copied().collect();
        unknown.sort();
        missing.sort();
        return Err(format!(
            "the model uses features this scorer does not compute {unknown:?}, and lacks {missing:?} \
             (or names one twice): retrain it on the columns of `trainer features`"
        ));
    }
    let to_ours: Vec<usize> = names
        .iter()
        .map(|n| FEATURE_NAMES.iter().position(|f| f == n).expect("same set"))
        .collect();
    remap(text, &to_ours).map(Cow::Owned)
}

/// The lines before the first tree.
fn header_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().take_while(|l| !l.starts_with("Tree="))
}

/// Rewrites `text` so that its feature `j` becomes feature `to_ours[j]`.
fn remap(text: &str, to_ours: &[usize]) -> Result<String, String> {
    let Some(first_tree) = text.find("\nTree=").map(|i| i + 1) else {
        return Err("the model text has no trees".into());
    };
    let end = text
        .find("end of trees")
        .ok_or("the model text has no \"end of trees\" line")?;
    let permute = |values: &str| -> Result<String, String> {
        let values: Vec<&str> = values.split(' ').collect();
        if values.len() != to_ours.len() {
            return Err(format!(
                "{} per-feature values for {} features",
                values.len(),
                to_ours.len()
            ));
        }
        let mut out = vec![""; values.len()];
        for (j, v) in values.into_iter().enumerate() {
            out[to_ours[j]] = v;
        }
        Ok(out.join(" "))
    };
    // Trees first: the header's tree_sizes are their byte lengths after the rewrite.
    // A tree runs from its `Tree=` line to the next one (blank lines included, as LightGBM
    // counts them in tree_sizes).
    let body = &text[first_tree..end];
    let mut starts: Vec<usize> = body.match_indices("\nTree=").map(|(i, _)| i + 1).collect();
    starts.insert(0, 0);
    starts.push(body.len());
    let mut trees = Vec::new();
    for pair in starts.windows(2) {
        trees.push(remap_tree(&body[pair[0]..pair[1]], to_ours)?);
    }
    let mut out = String::with_capacity(text.len());
    for line in text[..first_tree].split_inclusive('\n') {
        let (body, newline) = line
            .strip_suffix('\n')
            .map_or((line, ""), |body| (body, "\n"));
        let rewritten = if body.starts_with("feature_names=") {
            format!("feature_names={}", FEATURE_NAMES.join(" "))
        } else if let Some(infos) = body.strip_prefix("feature_infos=") {
            format!("feature_infos={}", permute(infos)?)
        } else if body.starts_with("tree_sizes=") {
            let sizes: Vec<String> = trees.iter().map(|t| t.len().to_string()).collect();
            format!("tree_sizes={}", sizes.join(" "))
        } else {
            body.to_string()
        };
        out.push_str(&rewritten);
        out.push_str(newline);
    }
    trees.iter().for_each(|t| out.push_str(t));
    out.push_str(&text[end..]);
    Ok(out)
}

/// One `Tree=` block with its split features mapped.
fn remap_tree(block: &str, to_ours: &[usize]) -> Result<String, String> {
    let mut out = String::with_capacity(block.len());
    for line in block.split_inclusive('\n') {
        if line.starts_with("is_linear=1") {
            return Err("re-ordering the features of linear trees is not supported".into());
        }
        let Some(indices) = line.strip_prefix("split_feature=") else {
            out.push_str(line);
            continue;
        };
        let mapped: Result<Vec<String>, String> = indices
            .trim_end()
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<usize>()
                    .ok()
                    .and_then(|j| to_ours.get(j))
                    .map(|i| i.to_string())
                    .ok_or_else(|| format!("split_feature {s:?} is not a feature of the model"))
            })
            .collect();
        out.push_str("split_feature=");
        out.push_str(&mapped?.join(" "));
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNNAMED: &str = "tree\nfeature_names=Column_0 Column_1\nTree=0\n";

    #[test]
    fn default_names_are_no_names() {
        assert_eq!(declared_names(UNNAMED), None);
        let named = "tree\nfeature_names=amount step\nTree=0\n";
        assert_eq!(
            declared_names(named),
            Some(vec!["amount".to_string(), "step".to_string()])
        );
    }

    #[test]
    fn another_feature_set_is_refused_with_the_difference() {
        let mut names: Vec<&str> = FEATURE_NAMES.to_vec();
        names[0] = "velocity";
        let text = format!("tree\nfeature_names={}\nTree=0\n", names.join(" "));
        let err = align_to_scorer(&text, &[]).unwrap_err();
        assert!(
            err.contains("\"velocity\"") && err.contains("\"step\""),
            "{err}"
        );
    }

    #[test]
    fn a_record_that_contradicts_its_text_is_refused() {
        let text = format!("tree\nfeature_names={}\nTree=0\n", FEATURE_NAMES.join(" "));
        let mut listed: Vec<String> = FEATURE_NAMES.iter().map(|s| s.to_string()).collect();
        listed.swap(0, 1);
        assert!(align_to_scorer(&text, &listed)
            .unwrap_err()
            .contains("the record lists"));
        assert!(matches!(align_to_scorer(&text, &[]), Ok(Cow::Borrowed(_))));
    }
}
