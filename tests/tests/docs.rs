//! The documentation says what the code does: `docs/architecture.md` and the top `README.md`
//! list exactly the metric names the agent and the controller register, the architecture
//! names every field of both CRDs and only paths that exist, and the READMEs link it.
//! No cluster needed.
//!
//! ```text
//!  README.md "## Metrics" ─────────────┐
//!  docs/architecture.md "## Metrics" ──┼─► same names, same histograms
//!  "volpool_…" in agent/src, pool-controller/src ─┘
//!  deploy/crds/*.yaml properties ──► each named in docs/architecture.md
//!  docs/architecture.md "## Code map" ──► each path exists
//! ```

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;
use volpool_e2e::deploy::{DocumentedMetrics, markdown_section};
use volpool_e2e::repo_root;

const ARCHITECTURE: &str = "docs/architecture.md";

fn read(path: &str) -> String {
    let path = repo_root().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every `"volpool_<name>"` string literal in the `.rs` files under `dir`: the metric names.
fn metric_literals(dir: &Path, out: &mut BTreeSet<String>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            metric_literals(&path, out);
            continue;
        }
        if path.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (start, _) in text.match_indices("\"volpool_") {
            let rest = &text[start + 1..];
            let len = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
                .unwrap_or(rest.len());
            if rest[len..].starts_with('"') {
                out.insert(rest[..len].to_string());
            }
        }
    }
}

#[test]
fn the_metrics_tables_list_exactly_the_metrics_the_programs_register() {
    let readme = DocumentedMetrics::parse(&read("README.md"));
    let architecture = DocumentedMetrics::parse(&read(ARCHITECTURE));
    let mut in_code = BTreeSet::new();
    for dir in ["agent/src", "pool-controller/src"] {
        metric_literals(&repo_root().join(dir), &mut in_code);
    }
    assert!(
        in_code.len() > 20,
        "too few metric names found in the code: {in_code:?}"
    );
    assert_eq!(
        readme.names, in_code,
        "README.md's metrics table (left) differs from the metric names in agent/src and \
         pool-controller/src (right)"
    );
    assert_eq!(
        architecture, readme,
        "{ARCHITECTURE}'s metrics (left) differ from README.md's (right)"
    );
    assert_eq!(
        readme.histograms,
        BTreeSet::from([
            "volpool_claim_bind_seconds".to_string(),
            "volpool_cleanup_duration_seconds".to_string(),
            "volpool_controller_reconcile_duration_seconds".to_string(),
        ]),
        "the histograms"
    );
}

/// The property paths of a CRD schema under `spec` and `status` (`a.b[].c`), not descending
/// into Kubernetes' own types (conditions, label selectors).
fn properties(schema: &Value, path: &str, out: &mut Vec<(String, String)>) {
    let props = match schema["type"].as_str() {
        Some("array") => &schema["items"]["properties"],
        _ => &schema["properties"],
    };
    for (name, sub) in props.as_object().into_iter().flatten() {
        let is_array = sub["type"] == "array";
        let here = format!("{path}.{name}{}", if is_array { "[]" } else { "" });
        out.push((name.clone(), here.clone()));
        if !["conditions", "nodeSelector"].contains(&name.as_str()) {
            properties(sub, &here, out);
        }
    }
}

#[test]
fn the_architecture_names_every_field_of_both_crds() {
    let doc = read(ARCHITECTURE);
    for file in [
        "deploy/crds/volumepools.volpool.io.yaml",
        "deploy/crds/nodevolumes.volpool.io.yaml",
    ] {
        let crd: Value = serde_yaml::from_str(&read(file)).expect("CRD YAML");
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut fields = Vec::new();
        for top in ["spec", "status"] {
            properties(&schema["properties"][top], top, &mut fields);
        }
        assert!(fields.len() > 20, "{file}: too few fields found");
        for (name, path) in fields {
            // NB: the tables name a field `name`, `parent.name` or `parent[].name`, or as the
            // parent of its own fields (`name.child`, `name[].child`).
            let named = ["`", "."].iter().any(|before| {
                ["`", "[]", "."]
                    .iter()
                    .any(|after| doc.contains(&format!("{before}{name}{after}")))
            });
            assert!(named, "{ARCHITECTURE} does not describe {file}'s {path}");
        }
    }
}

#[test]
fn the_code_map_names_only_paths_that_exist() {
    let doc = read(ARCHITECTURE);
    let mut paths = Vec::new();
    for row in markdown_section(&doc, "Code map")
        .into_iter()
        .filter(|line| line.starts_with("| `"))
    {
        let first = row.split('|').nth(1).unwrap_or_default();
        paths.extend(first.split('`').skip(1).step_by(2).map(str::to_string));
    }
    assert!(paths.len() > 20, "too few paths in the code map: {paths:?}");
    let missing: Vec<&String> = paths
        .iter()
        .filter(|path| !repo_root().join(path).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "{ARCHITECTURE}'s code map names paths that do not exist: {missing:?}"
    );
}

#[test]
fn the_readmes_link_the_architecture() {
    for (readme, link) in [
        ("README.md", "docs/architecture.md"),
        ("deploy/README.md", "../docs/architecture.md"),
    ] {
        assert!(
            read(readme).contains(&format!("]({link}")),
            "{readme} does not link {link}"
        );
    }
}
