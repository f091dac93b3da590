//! Label-selector matching, the same for the agent (which pools scan this node) and the
//! controller (which nodes a pool covers).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` match `selector` (`matchLabels`, and `matchExpressions` with In, NotIn,
/// Exists, DoesNotExist). An unknown operator matches nothing, so a typo offers no node
/// rather than every node.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// Whether a pool with node selector `selector` (`None`: every node) covers a node with
/// `labels` (`None`: the labels are not known — standalone or offline — so every pool does).
pub fn optional_selector_matches(
    selector: Option<&LabelSelector>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    match (selector, labels) {
        (Some(selector), Some(labels)) => selector_matches(selector, labels),
        _ => true,
    }
}
