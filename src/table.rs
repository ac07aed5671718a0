//! Tables indexed by the small closed enums of [`crate::model`]: one value per signal, per
//! priority class, per drop or reject reason, per destination.
//!
//! This is the only place an enum becomes an array index. Adding a signal, a class or a
//! reason is one enum variant and its name: every table, counter, metric label set and
//! API map built from [`Key::all`] grows with it.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Index, IndexMut};

/// An enum usable as a table key: closed, small, with stable names.
pub trait Key: Copy + Eq + fmt::Debug + 'static {
    /// Every key, in index order.
    fn all() -> &'static [Self];
    /// The key's position in [`Key::all`].
    fn index(self) -> usize;
    /// The key's stable name (a metric label value and an API key).
    fn name(self) -> &'static str;
}

/// Implements [`Key`] for an enum with an inherent `ALL` array and `as_str`.
macro_rules! table_key {
    ($t:ty) => {
        impl $crate::table::Key for $t {
            fn all() -> &'static [Self] {
                &<$t>::ALL
            }
            fn index(self) -> usize {
                self as usize
            }
            fn name(self) -> &'static str {
                self.as_str()
            }
        }
    };
}
pub(crate) use table_key;

/// One `V` per key `K`; `N` is the number of keys (the aliases in [`crate::model`] fix it).
pub struct Table<K, V, const N: usize> {
    values: [V; N],
    key: PhantomData<K>,
}

impl<K: Key, V, const N: usize> Table<K, V, N> {
    /// A table from its values in key order.
    pub const fn new(values: [V; N]) -> Self {
        Self {
            values,
            key: PhantomData,
        }
    }

    /// A table with `f(key)` for each key.
    pub fn from_fn(mut f: impl FnMut(K) -> V) -> Self {
        debug_assert_eq!(K::all().len(), N, "a table's size is its key's count");
        Self::new(std::array::from_fn(|i| f(K::all()[i])))
    }

    /// Each key with its value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (K, &V)> {
        K::all().iter().copied().zip(self.values.iter())
    }

    /// Each key with its value, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (K, &mut V)> {
        K::all().iter().copied().zip(self.values.iter_mut())
    }

    /// The values in key order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.values.iter()
    }

    /// A table of `f(key, value)`.
    pub fn map<W>(&self, mut f: impl FnMut(K, &V) -> W) -> Table<K, W, N> {
        Table::from_fn(|k| f(k, &self[k]))
    }
}

impl<K: Key, V: Default, const N: usize> Default for Table<K, V, N> {
    fn default() -> Self {
        Self::new(std::array::from_fn(|_| V::default()))
    }
}

impl<K, V: Clone, const N: usize> Clone for Table<K, V, N> {
    fn clone(&self) -> Self {
        Self {
            values: self.values.clone(),
            key: PhantomData,
        }
    }
}

impl<K, V: Copy, const N: usize> Copy for Table<K, V, N> {}

impl<K, V: PartialEq, const N: usize> PartialEq for Table<K, V, N> {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values
    }
}

impl<K, V: Eq, const N: usize> Eq for Table<K, V, N> {}

impl<K: Key, V, const N: usize> Index<K> for Table<K, V, N> {
    type Output = V;

    fn index(&self, k: K) -> &V {
        &self.values[k.index()]
    }
}

impl<K: Key, V, const N: usize> IndexMut<K> for Table<K, V, N> {
    fn index_mut(&mut self, k: K) -> &mut V {
        &mut self.values[k.index()]
    }
}

impl<K: Key, V: fmt::Debug, const N: usize> fmt::Debug for Table<K, V, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(k, v)| (k.name(), v)))
            .finish()
    }
}

/// Serialised as a map from each key's name to its value.
impl<K: Key, V: serde::Serialize, const N: usize> serde::Serialize for Table<K, V, N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut m = s.serialize_map(Some(N))?;
        for (k, v) in self.iter() {
            m.serialize_entry(k.name(), v)?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Class, DropReason, PerClass, PerDropReason, Signal};

    #[test]
    fn tables_index_by_key_and_serialise_by_name() {
        let mut t: PerClass<u64> = PerClass::default();
        t[Class::Normal] += 5;
        t[Class::Bulk] = 2;
        assert_eq!(t.values().sum::<u64>(), 7);
        assert_eq!(
            serde_json::to_value(t).unwrap(),
            serde_json::json!({"priority": 0, "normal": 5, "bulk": 2})
        );
        let names = PerDropReason::from_fn(|r: DropReason| r.as_str());
        assert_eq!(names[DropReason::RateLimit], "rate_limit");
        let doubled = t.map(|_, v| v * 2);
        assert_eq!(doubled[Class::Normal], 10);
        assert_eq!(
            format!(
                "{:?}",
                crate::model::PerSignal::from_fn(|s: Signal| s.as_str().len())
            ),
            r#"{"traces": 6, "logs": 4, "metrics": 7}"#
        );
    }
}
