//! Which policies could match a namespace, from its labels alone: a policy whose namespace
//! selector has `matchLabels` can only match a namespace carrying its first pair, so a decision
//! visits the policies indexed under the namespace's own labels plus those that cannot be indexed
//! (no selector, or only `matchExpressions`) — the cost follows the policies that may match, not
//! the size of the set. The full selector is still checked on every candidate.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

#[derive(Debug, Clone, Default)]
pub(crate) struct NamespaceIndex {
    /// label key → label value → positions of the policies whose first `matchLabels` pair it is.
    by_label: HashMap<String, HashMap<String, Vec<usize>>>,
    /// Positions of the policies every namespace may match.
    unindexed: Vec<usize>,
}

impl NamespaceIndex {
    /// Indexes the policies' namespace selectors by their position in the set.
    pub fn new<'a>(selectors: impl IntoIterator<Item = Option<&'a LabelSelector>>) -> Self {
        let mut index = Self::default();
        for (position, selector) in selectors.into_iter().enumerate() {
            match selector
                .and_then(|s| s.match_labels.as_ref())
                .and_then(|labels| labels.iter().next())
            {
                Some((key, value)) => index
                    .by_label
                    .entry(key.clone())
                    .or_default()
                    .entry(value.clone())
                    .or_default()
                    .push(position),
                None => index.unindexed.push(position),
            }
        }
        index
    }

    /// The positions of the policies a namespace with `labels` may match, in set order.
    pub fn candidates(&self, labels: &BTreeMap<String, String>) -> Vec<usize> {
        let mut out = self.unindexed.clone();
        for (key, value) in labels {
            if let Some(positions) = self.by_label.get(key).and_then(|values| values.get(value)) {
                out.extend_from_slice(positions);
            }
        }
        // Each policy sits under one pair, so there are no duplicates to remove.
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn selector(value: serde_json::Value) -> LabelSelector {
        serde_json::from_value(value).expect("selector")
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn candidates_are_the_policies_a_namespace_can_match_in_set_order() {
        let selectors = [
            Some(selector(json!({"matchLabels": {"team": "a"}}))),
            None,
            Some(selector(
                json!({"matchLabels": {"env": "prod", "team": "b"}}),
            )),
            Some(selector(
                json!({"matchExpressions": [{"key": "team", "operator": "Exists"}]}),
            )),
            Some(selector(json!({"matchLabels": {"team": "b"}}))),
            Some(selector(json!({}))),
        ];
        let index = NamespaceIndex::new(selectors.iter().map(Option::as_ref));
        // Unindexable ones (1, 3, 5) always; 2 is indexed under env=prod, its first pair.
        assert_eq!(index.candidates(&labels(&[])), vec![1, 3, 5]);
        assert_eq!(
            index.candidates(&labels(&[("team", "b")])),
            vec![1, 3, 4, 5]
        );
        assert_eq!(
            index.candidates(&labels(&[("env", "prod"), ("team", "a")])),
            vec![0, 1, 2, 3, 5]
        );
    }

    #[test]
    fn no_policy_that_matches_is_left_out() {
        // Every selector below matches the namespace; each must be a candidate.
        let ns = labels(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let selectors = [
            selector(json!({"matchLabels": {"a": "1"}})),
            selector(json!({"matchLabels": {"b": "2", "c": "3"}})),
            selector(json!({"matchLabels": {"c": "3"},
                            "matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]})),
            selector(json!({"matchExpressions": [{"key": "z", "operator": "DoesNotExist"}]})),
        ];
        for s in &selectors {
            assert!(crate::selector::matches(Some(s), &ns), "{s:?}");
        }
        let index = NamespaceIndex::new(selectors.iter().map(Some));
        assert_eq!(index.candidates(&ns), vec![0, 1, 2, 3]);
    }

    fn pairs() -> impl proptest::strategy::Strategy<Value = BTreeMap<String, String>> {
        proptest::collection::btree_map("[abc]", "[xy]", 0..3)
    }

    proptest::proptest! {
        /// Pruning by the index never changes which policies match: the candidates that match
        /// are exactly the policies that match when every selector is checked.
        #[test]
        fn the_index_agrees_with_checking_every_selector(
            selectors in proptest::collection::vec(
                proptest::option::of((pairs(), proptest::option::of("[abc]"))),
                0..12,
            ),
            ns in pairs(),
        ) {
            let selectors: Vec<Option<LabelSelector>> = selectors
                .into_iter()
                .map(|s| s.map(|(labels, exists)| selector(json!({
                    "matchLabels": labels,
                    "matchExpressions": exists.map(|key| vec![json!({"key": key, "operator": "Exists"})]).unwrap_or_default(),
                }))))
                .collect();
            let index = NamespaceIndex::new(selectors.iter().map(Option::as_ref));
            let matching = |positions: Vec<usize>| -> Vec<usize> {
                positions
                    .into_iter()
                    .filter(|&i| crate::selector::matches(selectors[i].as_ref(), &ns))
                    .collect()
            };
            proptest::prop_assert_eq!(
                matching(index.candidates(&ns)),
                matching((0..selectors.len()).collect())
            );
        }
    }
}
