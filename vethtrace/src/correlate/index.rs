//! The correlator's index: each packet key's newest packet number, looked up by the key's
//! 64-bit hash.
//!
//! Keyed by the whole [`PacketKey`] an entry took 64 bytes, and a table of tens of thousands
//! of them (every packet of the last ~60 ms of a busy trace) missed the cache on every new
//! packet and on every sweep. By hash an entry takes 16 bytes. A hash says nothing certain
//! about the key, so a hit is checked against the packet's own key (the caller's `key_of`),
//! and a key whose hash is held by another open packet's key is kept apart, exactly, in
//! `collided`: the index answers exactly as a map keyed by `PacketKey` would.

use std::{
    collections::{hash_map::Entry, HashMap},
    hash::{BuildHasher, BuildHasherDefault, Hasher},
};

use super::PacketKey;

/// The map's own hasher passes the key hash through: it is already foldhash's output.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the keys are u64); fold anything else in all the same.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[derive(Default)]
pub(super) struct Index {
    /// foldhash with a random seed per correlator: crafted headers cannot pile into a bucket.
    hasher: foldhash::fast::RandomState,
    by_hash: HashMap<u64, u64, BuildHasherDefault<Prehashed>>,
    collided: HashMap<PacketKey, u64, foldhash::fast::RandomState>,
    /// Replaces the hash in tests, to make collisions.
    #[cfg(test)]
    pub(super) hash_fn: Option<fn(&PacketKey) -> u64>,
}

impl Index {
    pub(super) fn hash(&self, key: &PacketKey) -> u64 {
        #[cfg(test)]
        if let Some(f) = self.hash_fn {
            return f(key);
        }
        self.hasher.hash_one(key)
    }

    /// The number of `key`'s newest packet (`h` is its [`Index::hash`]), which may have been
    /// flushed since. `key_of(n)` is the key of open packet `n` (`None` once flushed).
    pub(super) fn get<'k>(
        &self,
        key: &PacketKey,
        h: u64,
        key_of: impl Fn(u64) -> Option<&'k PacketKey>,
    ) -> Option<u64> {
        if let Some(&n) = self.by_hash.get(&h) {
            if key_of(n) == Some(key) {
                return Some(n);
            }
        }
        if self.collided.is_empty() {
            return None;
        }
        self.collided.get(key).copied()
    }

    /// The number of `key`'s newest packet if it is open ([`Index::get`]); else makes `n` its
    /// newest packet ([`Index::set`]). One probe of the table in the common case (no collided
    /// keys): every new packet asks both, and each probe of a table of tens of thousands of
    /// entries is a cache miss.
    pub(super) fn get_or_set<'k>(
        &mut self,
        key: &PacketKey,
        h: u64,
        n: u64,
        key_of: impl Fn(u64) -> Option<&'k PacketKey>,
    ) -> Option<u64> {
        if !self.collided.is_empty() {
            // `get` may answer a flushed packet from `collided`: that one is no longer open.
            let found = self.get(key, h, &key_of).filter(|&m| key_of(m).is_some());
            if found.is_none() {
                self.set(key, h, n, key_of);
            }
            return found;
        }
        match self.by_hash.entry(h) {
            Entry::Vacant(v) => {
                v.insert(n);
                None
            }
            Entry::Occupied(mut e) => match key_of(*e.get()) {
                Some(k) if k == key => Some(*e.get()),
                // Held by an open packet of another key.
                Some(_) => {
                    self.collided.insert(*key, n);
                    None
                }
                // Left behind by a flushed packet.
                None => {
                    e.insert(n);
                    None
                }
            },
        }
    }

    /// Makes `n` the newest packet of `key`.
    pub(super) fn set<'k>(
        &mut self,
        key: &PacketKey,
        h: u64,
        n: u64,
        key_of: impl Fn(u64) -> Option<&'k PacketKey>,
    ) {
        let entry = self.by_hash.entry(h).or_insert(n);
        match key_of(*entry) {
            // Held by an open packet of another key.
            Some(k) if k != key => {
                self.collided.insert(*key, n);
            }
            _ => {
                *entry = n;
                if !self.collided.is_empty() {
                    self.collided.remove(key);
                }
            }
        }
    }

    /// Moves `key`'s entry from packet number `from` to `to` (compaction), if it is there.
    pub(super) fn renumber(&mut self, key: &PacketKey, h: u64, from: u64, to: u64) {
        if let Some(n) = self.by_hash.get_mut(&h) {
            if *n == from {
                *n = to;
                return;
            }
        }
        if let Some(n) = self.collided.get_mut(key) {
            if *n == from {
                *n = to;
            }
        }
    }

    /// Keeps the entries of packets for which `open(n)`.
    pub(super) fn retain(&mut self, open: impl Fn(u64) -> bool) {
        self.by_hash.retain(|_, n| open(*n));
        self.collided.retain(|_, n| open(*n));
    }

    pub(super) fn len(&self) -> usize {
        self.by_hash.len() + self.collided.len()
    }

    pub(super) fn clear(&mut self) {
        self.by_hash.clear();
        self.collided.clear();
    }
}
