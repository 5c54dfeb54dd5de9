//! The one bounded map behind every per-isolate map (the edge state's snapshots, user marks,
//! token buckets, key news, fleet reports and admission shares).
//!
//! Invariant: a map never holds more than its bound. When it is full and a new key comes, it
//! first drops the entries its owner calls idle, and if it is still full, everything. An
//! isolate relearns what it forgot from the origin, so forgetting costs a round trip, never a
//! wrong answer.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::ops::Deref;

#[derive(Clone, Debug)]
pub struct Bounded<K, V> {
    map: HashMap<K, V>,
    bound: usize,
}

impl<K: Eq + Hash, V> Bounded<K, V> {
    pub fn new(bound: usize) -> Self {
        Bounded {
            map: HashMap::new(),
            bound: bound.max(1),
        }
    }

    /// Makes room for `key`: when the map is full and `key` is new, drops the entries `idle`
    /// picks, then (still full) everything.
    pub fn make_room<Q>(&mut self, key: &Q, mut idle: impl FnMut(&V) -> bool)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if self.map.len() >= self.bound && !self.map.contains_key(key) {
            self.map.retain(|_, v| !idle(v));
            if self.map.len() >= self.bound {
                self.map.clear();
            }
        }
    }

    /// The entry for `key`, made with `new` (after [`Bounded::make_room`]) if there is none.
    pub fn entry_or_insert_with(&mut self, key: K, new: impl FnOnce() -> V) -> &mut V {
        self.make_room(&key, |_| false);
        self.map.entry(key).or_insert_with(new)
    }

    pub fn insert(&mut self, key: K, value: V) {
        self.make_room(&key, |_| false);
        self.map.insert(key, value);
    }

    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.get_mut(key)
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map.remove(key)
    }
}

/// Reads go straight to the map; every insertion goes through the bound.
impl<K, V> Deref for Bounded<K, V> {
    type Target = HashMap<K, V>;
    fn deref(&self) -> &HashMap<K, V> {
        &self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_map_drops_the_idle_then_everything_for_a_new_key() {
        let mut m = Bounded::new(3);
        for (k, v) in [("a", 1), ("b", 2), ("c", 3)] {
            m.insert(k, v);
        }
        m.insert("a", 10);
        assert_eq!(m.len(), 3, "an existing key needs no room");
        m.make_room("d", |v| *v == 2);
        m.insert("d", 4);
        assert_eq!((m.len(), m.get("b")), (3, None), "the idle one made room");
        m.insert("e", 5);
        assert_eq!(m.len(), 1, "nothing idle: everything goes");
        assert_eq!(*m.entry_or_insert_with("e", || 0), 5);
    }
}
