//! The Grafana dashboards in `dashboards/` load cleanly and query only what volpool exports:
//! unique uids and panel ids, every panel on the grid, every query through the `datasource`
//! variable and filtered by `cluster`, and only the metrics the README's table lists. No cluster
//! needed.
//! (`dashboards_live.rs` runs every query against a real Prometheus.)
//! (That the JSON is what `dashboards/generate.py` writes is checked by `tests/check-rules`.)

use std::collections::BTreeSet;

use serde_json::Value;
use volpool_e2e::deploy::{DocumentedMetrics, promql_selectors};
use volpool_e2e::repo_root;

const DASHBOARDS: &[(&str, &str)] = &[
    ("pools.json", "volpool / Pools"),
    ("nodes.json", "volpool / Nodes"),
];

fn dashboards() -> Vec<(&'static str, Value)> {
    DASHBOARDS
        .iter()
        .map(|(file, _)| {
            let path = repo_root().join("dashboards").join(file);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            (*file, value)
        })
        .collect()
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

/// Every query of a dashboard: panel targets and query variables, as (where, PromQL).
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default().to_string();
            out.push((format!("panel {}", panel["title"]), expr));
        }
    }
    for variable in variables(dashboard) {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"].as_str().unwrap_or_default();
        // NB: label_values(<selector>, <label>): only the selector is PromQL.
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.rsplit_once(','))
            .map_or(query, |(selector, _)| selector);
        out.push((
            format!("variable {}", variable["name"]),
            selector.to_string(),
        ));
    }
    out
}

fn variables(dashboard: &Value) -> Vec<&Value> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .collect()
}

#[test]
fn dashboards_have_their_titles_and_unique_uids() {
    let mut uids = BTreeSet::new();
    for ((file, dashboard), (_, title)) in dashboards().iter().zip(DASHBOARDS) {
        assert_eq!(dashboard["title"], *title, "{file}");
        let uid = dashboard["uid"].as_str().unwrap_or_default();
        assert!(!uid.is_empty() && uid.len() <= 40, "{file}: uid {uid:?}");
        assert!(uids.insert(uid.to_string()), "{file}: uid {uid} used twice");
        assert!(dashboard["schemaVersion"].is_u64(), "{file}: schemaVersion");
    }
}

#[test]
fn panel_ids_are_unique_and_every_panel_is_on_the_grid() {
    for (file, dashboard) in dashboards() {
        let mut ids = BTreeSet::new();
        let all = panels(&dashboard);
        assert!(all.len() > 5, "{file} has almost no panels");
        for panel in all {
            let title = &panel["title"];
            let id = panel["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{file}: panel {title} has no id"));
            assert!(ids.insert(id), "{file}: panel id {id} used twice");
            let grid = &panel["gridPos"];
            let [h, w, x, y] = ["h", "w", "x", "y"].map(|k| {
                grid[k]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{file}: panel {title} has no gridPos.{k}"))
            });
            assert!(
                h > 0 && w > 0 && x + w <= 24,
                "{file}: panel {title} is off the grid: {grid}"
            );
            let _ = y;
        }
    }
}

#[test]
fn every_query_uses_the_datasource_variable() {
    for (file, dashboard) in dashboards() {
        let datasource = variables(&dashboard)
            .into_iter()
            .find(|v| v["name"] == "datasource")
            .unwrap_or_else(|| panic!("{file} has no datasource variable"));
        assert_eq!(datasource["type"], "datasource");
        assert_eq!(datasource["query"], "prometheus");
        for panel in panels(&dashboard) {
            let Some(targets) = panel["targets"].as_array() else {
                assert_eq!(
                    panel["type"], "row",
                    "{file}: panel {} has no targets",
                    panel["title"]
                );
                continue;
            };
            assert!(
                !targets.is_empty(),
                "{file}: panel {} has no targets",
                panel["title"]
            );
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{file}: panel {}",
                panel["title"]
            );
            for target in targets {
                assert_eq!(
                    target["datasource"]["uid"], "${datasource}",
                    "{file}: a target of panel {}",
                    panel["title"]
                );
                assert!(
                    target["expr"].as_str().is_some_and(|e| !e.is_empty()),
                    "{file}: panel {} has an empty query",
                    panel["title"]
                );
            }
        }
        for variable in variables(&dashboard) {
            if variable["type"] == "query" {
                assert_eq!(
                    variable["datasource"]["uid"], "${datasource}",
                    "{file}: variable {}",
                    variable["name"]
                );
            }
        }
    }
}

#[test]
fn dashboards_have_cluster_node_and_pool_variables() {
    for (file, dashboard) in dashboards() {
        let names: Vec<&str> = variables(&dashboard)
            .iter()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert_eq!(
            names,
            ["datasource", "cluster", "node", "pool"],
            "{file} variables"
        );
    }
}

#[test]
fn queries_use_only_documented_metrics_and_filter_by_cluster() {
    let documented = DocumentedMetrics::of_file("README.md").expect("the README's metrics");
    for (file, dashboard) in dashboards() {
        for (place, query) in queries(&dashboard) {
            let selectors = promql_selectors(&query);
            assert!(
                !selectors.is_empty(),
                "{file}: {place} queries no metric: {query}"
            );
            for selector in selectors {
                assert!(
                    documented.contains(&selector.metric),
                    "{file}: {place} queries {}, which the README's metrics table does not list: \
                     {query}",
                    selector.metric
                );
                // NB: the cluster variable's own query cannot filter on itself.
                if place != "variable \"cluster\"" {
                    assert!(
                        selector.matchers.contains("cluster=~\"$cluster\""),
                        "{file}: {place} does not filter {} by cluster: {query}",
                        selector.metric
                    );
                }
            }
        }
    }
}

#[test]
fn selector_scanner_finds_metrics_not_functions_or_labels() {
    let found = promql_selectors(
        "histogram_quantile(0.9, sum by (pool, le) (rate(a_bucket{x=~\"$x\",y=\"}\"}[$__rate_interval]))) \
         / on (pool) group_left () max without (instance) (b) * 4e9 > bool 0 unless c offset 5m",
    );
    let names: Vec<&str> = found.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(names, ["a_bucket", "b", "c"]);
    assert_eq!(found[0].matchers, "x=~\"$x\",y=\"}\"");
}
