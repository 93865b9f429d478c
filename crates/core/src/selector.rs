//! Kubernetes label selectors (`matchLabels` and `matchExpressions` with
//! `In`, `NotIn`, `Exists`, `DoesNotExist`), and their evaluation.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Kubernetes label selector. All terms must match; an empty selector
/// matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One set-based requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// How the key relates to the values.
    pub operator: SelectorOperator,
    /// Values for `In` and `NotIn`; must be empty for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// A label selector operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectorOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy every term of the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// The selector in the API server's query syntax (`a=b,c in (d,e),!f`).
    pub fn to_query(&self) -> String {
        let mut terms: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            terms.push(match r.operator {
                SelectorOperator::In => format!("{} in ({})", r.key, r.values.join(",")),
                SelectorOperator::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                SelectorOperator::Exists => r.key.clone(),
                SelectorOperator::DoesNotExist => format!("!{}", r.key),
            });
        }
        terms.join(",")
    }
}

impl LabelSelectorRequirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, operator: SelectorOperator, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[rstest]
    #[case(req("env", SelectorOperator::In, &["prod", "dr"]), &[("env", "prod")], true)]
    #[case(req("env", SelectorOperator::In, &["prod"]), &[("env", "dev")], false)]
    #[case(req("env", SelectorOperator::In, &["prod"]), &[], false)]
    #[case(req("env", SelectorOperator::NotIn, &["prod"]), &[], true)]
    #[case(req("env", SelectorOperator::NotIn, &["prod"]), &[("env", "prod")], false)]
    #[case(req("env", SelectorOperator::Exists, &[]), &[("env", "")], true)]
    #[case(req("env", SelectorOperator::DoesNotExist, &[]), &[("env", "x")], false)]
    fn expressions(
        #[case] r: LabelSelectorRequirement,
        #[case] have: &[(&str, &str)],
        #[case] expect: bool,
    ) {
        let sel = LabelSelector {
            match_expressions: vec![r],
            ..Default::default()
        };
        assert_eq!(sel.matches(&labels(have)), expect);
    }

    #[test]
    fn match_labels_and_query() {
        let sel = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![
                req("tier", SelectorOperator::In, &["a", "b"]),
                req("legacy", SelectorOperator::DoesNotExist, &[]),
            ],
        };
        assert!(sel.matches(&labels(&[("app", "web"), ("tier", "b")])));
        assert!(!sel.matches(&labels(&[("app", "db"), ("tier", "b")])));
        assert_eq!(sel.to_query(), "app=web,tier in (a,b),!legacy");
        assert!(LabelSelector::default().matches(&labels(&[])));
    }
}
