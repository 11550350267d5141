//! Values read from the store and kept in memory until the hub changes them.
//!
//! Only this hub writes its store (`hub.lock` keeps a second one out), so a
//! cache it clears on every change of what it holds is never stale. A
//! generation counter closes the one race: a read that began before a change
//! and ends after it must not put the old value back.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

pub(crate) struct Cache<K, V> {
    inner: Mutex<Inner<K, V>>,
}

struct Inner<K, V> {
    generation: u64,
    entries: HashMap<K, V>,
}

impl<K: Eq + Hash, V: Clone> Cache<K, V> {
    pub fn new() -> Cache<K, V> {
        Cache { inner: Mutex::new(Inner { generation: 0, entries: HashMap::new() }) }
    }

    /// The kept value, or the generation to hand `put` once it is read.
    pub fn get(&self, key: &K) -> Result<V, u64> {
        let inner = self.inner.lock().expect("cache lock poisoned");
        inner.entries.get(key).cloned().ok_or(inner.generation)
    }

    /// Keeps `value`, unless the cache was cleared since `generation`.
    pub fn put(&self, generation: u64, key: K, value: V) {
        let mut inner = self.inner.lock().expect("cache lock poisoned");
        if inner.generation == generation {
            inner.entries.insert(key, value);
        }
    }

    /// Forgets everything; call after the store changed what is kept.
    pub fn clear(&self) {
        let mut inner = self.inner.lock().expect("cache lock poisoned");
        inner.generation += 1;
        inner.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_straddles_a_change_does_not_put_the_old_value_back() {
        let cache: Cache<&str, u32> = Cache::new();
        let before = cache.get(&"k").expect_err("empty");
        cache.clear();
        cache.put(before, "k", 1);
        let now = cache.get(&"k").expect_err("the stale value was not kept");
        cache.put(now, "k", 2);
        assert_eq!(cache.get(&"k"), Ok(2));
        cache.clear();
        assert!(cache.get(&"k").is_err());
    }
}
