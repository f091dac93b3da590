//! What differs between two JSON documents, leaf by leaf: for a failure message that says what
//! was written, not only that something was.

use serde_json::Value;

/// One line per leaf that differs: `path: before -> after` (`-` where one side has nothing).
pub fn json_diff(before: &Value, after: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk("", before, after, &mut out);
    out
}

fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let (l, r) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                walk(&format!("{path}.{k}"), l, r, out);
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().max(y.len()) {
                let (l, r) = (
                    x.get(i).unwrap_or(&Value::Null),
                    y.get(i).unwrap_or(&Value::Null),
                );
                walk(&format!("{path}[{i}]"), l, r, out);
            }
        }
        _ if a != b => out.push(format!("{path}: {} -> {}", shown(a), shown(b))),
        _ => {}
    }
}

fn shown(v: &Value) -> String {
    if v.is_null() {
        "-".into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::json_diff;
    use serde_json::json;

    #[test]
    fn names_each_changed_leaf_with_both_values() {
        let a = json!({"status": {"checks": [{"message": "x", "ok": true}], "gone": 1}});
        let b = json!({"status": {"checks": [{"message": "y", "ok": true}], "new": [2]}});
        assert_eq!(
            json_diff(&a, &b),
            [
                ".status.checks[0].message: \"x\" -> \"y\"",
                ".status.gone: 1 -> -",
                ".status.new: - -> [2]",
            ]
        );
    }
}
