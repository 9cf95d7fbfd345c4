//! The size of a value, in the two parts that cost differently: how many values it holds and how
//! many bytes its strings hold. Copying a value allocates a slot per value and its bytes;
//! scanning or comparing it touches both.

use super::VALUE_BYTES;
use super::linear::Linear;

/// Upper bounds on a value's parts (see the module documentation of [`super`]).
#[derive(Debug, Clone, Default)]
pub(super) struct Size {
    /// The value itself and every value inside it (items, keys, map values), recursively.
    pub(super) values: Linear,
    /// Bytes of every string and bytes value inside it.
    pub(super) bytes: Linear,
}

impl Size {
    pub(super) fn scalar() -> Self {
        Self::string(0)
    }

    /// A string or bytes value of `bytes`.
    pub(super) fn string(bytes: u64) -> Self {
        Self {
            values: Linear::constant(1),
            bytes: Linear::constant(bytes),
        }
    }

    pub(super) fn new(values: Linear, bytes: Linear) -> Self {
        Self { values, bytes }
    }

    pub(super) fn plus(&self, other: &Size) -> Size {
        Size {
            values: self.values.plus(&other.values),
            bytes: self.bytes.plus(&other.bytes),
        }
    }

    pub(super) fn max(&self, other: &Size) -> Size {
        Size {
            values: self.values.max(&other.values),
            bytes: self.bytes.max(&other.bytes),
        }
    }

    /// This value inside a new one (a collection, an optional): one more value.
    pub(super) fn wrapped(&self) -> Size {
        Size {
            values: self.values.plus_constant(1),
            bytes: self.bytes.clone(),
        }
    }

    /// What scanning or comparing the whole value touches.
    pub(super) fn touched(&self) -> Linear {
        self.values.plus(&self.bytes)
    }

    /// What a deep copy of the value allocates (`cel` copies an item into every collection it is
    /// put in).
    pub(super) fn copied(&self) -> Linear {
        self.values.times(VALUE_BYTES).plus(&self.bytes)
    }

    pub(super) fn substitute(&self, ids: &[(usize, &Linear)]) -> Size {
        let apply = |l: &Linear| {
            ids.iter()
                .fold(l.clone(), |acc, (id, by)| acc.substitute(*id, by))
        };
        Size {
            values: apply(&self.values),
            bytes: apply(&self.bytes),
        }
    }
}
