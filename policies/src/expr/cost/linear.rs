//! Upper bounds that grow linearly with the sizes of the elements being iterated.
//!
//! A comprehension's body is priced once, with its element's size left as variables; the
//! comprehension then charges `iterations × (the body with an empty element) + (the body's
//! per-size coefficient × the size of the whole range)`. That is exact arithmetic on an upper
//! bound, because the elements' sizes sum to less than their range's: a body that scans its
//! element costs one scan of the range in total, not one per element times the largest an
//! element could be.

/// `constant + Σ coefficient × size(variable)`, every number saturating.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Linear {
    constant: u64,
    /// By variable, without zero coefficients.
    terms: Vec<(usize, u64)>,
}

impl Linear {
    pub(super) fn constant(value: u64) -> Self {
        Self {
            constant: value,
            terms: Vec::new(),
        }
    }

    /// The size (in values or bytes) of variable `id`.
    pub(super) fn variable(id: usize) -> Self {
        Self {
            constant: 0,
            terms: vec![(id, 1)],
        }
    }

    pub(super) fn coefficient(&self, id: usize) -> u64 {
        self.terms
            .iter()
            .find(|(v, _)| *v == id)
            .map_or(0, |(_, c)| *c)
    }

    /// The bound with no variable left, when every remaining variable is at most `ceiling`.
    pub(super) fn at_most(&self, ceiling: u64) -> u64 {
        self.terms.iter().fold(self.constant, |acc, (_, c)| {
            acc.saturating_add(c.saturating_mul(ceiling))
        })
    }

    pub(super) fn plus(&self, other: &Linear) -> Linear {
        self.combine(other, u64::saturating_add)
    }

    pub(super) fn plus_constant(&self, value: u64) -> Linear {
        let mut out = self.clone();
        out.constant = out.constant.saturating_add(value);
        out
    }

    /// A bound on both: each coefficient is the larger one (sizes are never negative).
    pub(super) fn max(&self, other: &Linear) -> Linear {
        self.combine(other, u64::max)
    }

    pub(super) fn times(&self, factor: u64) -> Linear {
        let mut out = Linear::constant(self.constant.saturating_mul(factor));
        out.terms = self
            .terms
            .iter()
            .map(|(v, c)| (*v, c.saturating_mul(factor)))
            .filter(|(_, c)| *c > 0)
            .collect();
        out
    }

    /// The bound with variable `id` replaced by the bound `by`.
    pub(super) fn substitute(&self, id: usize, by: &Linear) -> Linear {
        let coefficient = self.coefficient(id);
        self.without(&[id]).plus(&by.times(coefficient))
    }

    /// The sum over at most `iterations` elements, where each variable in `totals` adds up over
    /// the elements to at most its total.
    pub(super) fn summed_over(&self, totals: &[(usize, &Linear)], iterations: u64) -> Linear {
        let ids: Vec<usize> = totals.iter().map(|(id, _)| *id).collect();
        totals
            .iter()
            .fold(self.without(&ids).times(iterations), |acc, (id, total)| {
                acc.plus(&total.times(self.coefficient(*id)))
            })
    }

    fn without(&self, ids: &[usize]) -> Linear {
        Linear {
            constant: self.constant,
            terms: self
                .terms
                .iter()
                .copied()
                .filter(|(v, _)| !ids.contains(v))
                .collect(),
        }
    }

    fn combine(&self, other: &Linear, op: fn(u64, u64) -> u64) -> Linear {
        let mut terms = self.terms.clone();
        for (v, c) in &other.terms {
            match terms.iter_mut().find(|(w, _)| w == v) {
                Some((_, mine)) => *mine = op(*mine, *c),
                None => terms.push((*v, op(0, *c))),
            }
        }
        for (v, mine) in terms.iter_mut() {
            if !other.terms.iter().any(|(w, _)| w == v) {
                *mine = op(*mine, 0);
            }
        }
        terms.retain(|(_, c)| *c > 0);
        terms.sort_unstable();
        Linear {
            constant: op(self.constant, other.constant),
            terms,
        }
    }
}
