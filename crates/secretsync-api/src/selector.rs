//! Label-selector matching (`matchLabels` and `matchExpressions`) as the API server does
//! it, for the namespace selectors of the cluster kinds.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// Whether `labels` match `selector`. An empty selector matches everything; an operator
/// this code does not know matches nothing (the API server rejects those anyway).
pub fn matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expression = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let listed = |v: &String| e.values.iter().flatten().any(|x| x == v);
        match e.operator.as_str() {
            "In" => value.is_some_and(listed),
            "NotIn" => !value.is_some_and(listed),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_label && by_expression
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
        }
    }

    #[test]
    fn match_labels_and_expressions() {
        let shop = labels(&[("team", "shop"), ("env", "prod")]);
        let empty = LabelSelector::default();
        assert!(matches(&empty, &shop));
        assert!(matches(&empty, &BTreeMap::new()));
        let team = LabelSelector {
            match_labels: Some(labels(&[("team", "shop")])),
            ..Default::default()
        };
        assert!(matches(&team, &shop));
        assert!(!matches(&team, &labels(&[("team", "pay")])));
        let cases = [
            (expr("env", "In", &["prod", "stage"]), true),
            (expr("env", "In", &["dev"]), false),
            (expr("env", "NotIn", &["dev"]), true),
            (expr("env", "NotIn", &["prod"]), false),
            (expr("missing", "NotIn", &["x"]), true),
            (expr("team", "Exists", &[]), true),
            (expr("missing", "Exists", &[]), false),
            (expr("missing", "DoesNotExist", &[]), true),
            (expr("team", "DoesNotExist", &[]), false),
            (expr("team", "Bogus", &[]), false),
        ];
        for (e, want) in cases {
            let s = LabelSelector {
                match_expressions: Some(vec![e.clone()]),
                ..team.clone()
            };
            assert_eq!(matches(&s, &shop), want, "{e:?}");
        }
    }
}
