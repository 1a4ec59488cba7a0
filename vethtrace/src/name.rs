//! [`Name`]: a namespace, interface, drop reason or netfilter name as observations carry it.
//!
//! Every event carries two names (namespace, device), and decoding runs ≥ 10 M events/s on
//! one core (issue 6), so a name is one pointer and copying one is free in the common case:
//!
//! - names of the topology and of fixed tables are *interned* ([`Name::interned`]): one
//!   allocation per distinct text for the life of the process, shared by every event, and
//!   cloning or dropping one touches no counter. They are few (one per namespace, interface
//!   and netfilter hook/verdict ever seen) and the tracer needs them all along anyway.
//! - other names (`netns:<cookie>` for a namespace we never saw, a symbolized drop location,
//!   anything built with `From`) are *counted* like an `Arc<str>` and freed with their last
//!   reference, so decoding arbitrary bytes (the fuzzer) cannot grow memory without bound.
//!
//! `Arc<str>` cost two atomic read-modify-writes per name per event (clone in decode, drop
//! after render) and two words; this is one word and a plain load on the interned path.

use std::{
    borrow::Borrow,
    cmp::Ordering as CmpOrdering,
    collections::HashSet,
    fmt,
    hash::{Hash, Hasher},
    ops::Deref,
    ptr::NonNull,
    sync::{
        atomic::{fence, AtomicUsize, Ordering},
        LazyLock, Mutex,
    },
};

/// The shared text and its reference count.
struct Inner {
    /// References held, or [`INTERNED`] for a name that is never freed.
    refs: AtomicUsize,
    text: Box<str>,
}

/// The count of an interned name. A counted name's count is at least 1 while a reference
/// exists, so 0 never collides with it.
const INTERNED: usize = 0;

/// A shared, immutable string: reads like a `&str` (`Deref`, `as_str`, comparisons with
/// `str`/`String`) and serializes as a string. See the module documentation for the two kinds.
pub struct Name(NonNull<Inner>);

// SAFETY: `Inner` is immutable apart from its atomic count, and is freed only by the last
// counted reference (or never), exactly as `Arc<str>`, which is Send and Sync.
unsafe impl Send for Name {}
// SAFETY: as above.
unsafe impl Sync for Name {}

impl Name {
    fn alloc(text: Box<str>, refs: usize) -> Name {
        let inner = Box::new(Inner {
            refs: AtomicUsize::new(refs),
            text,
        });
        Name(NonNull::from(Box::leak(inner)))
    }

    fn inner(&self) -> &Inner {
        // SAFETY: the pointer came from `Box::leak` and stays valid while any reference
        // exists (counted names) or forever (interned names).
        unsafe { self.0.as_ref() }
    }

    /// The name shared by every caller that interns the same text, never freed: cloning and
    /// dropping it cost nothing. For names of bounded sets only (the topology's, fixed tables).
    pub fn interned(text: &str) -> Name {
        static TABLE: LazyLock<Mutex<HashSet<Name>>> = LazyLock::new(Default::default);
        // A panic while holding the lock cannot leave the set inconsistent (insert is the
        // only write), so a poisoned lock is used as it is.
        let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = table.get(text) {
            return n.clone();
        }
        let n = Name::alloc(text.into(), INTERNED);
        table.insert(n.clone());
        n
    }

    pub fn as_str(&self) -> &str {
        &self.inner().text
    }

    /// Whether this name is interned (tests).
    pub fn is_interned(&self) -> bool {
        self.inner().refs.load(Ordering::Relaxed) == INTERNED
    }
}

impl Clone for Name {
    #[inline]
    fn clone(&self) -> Self {
        let refs = &self.inner().refs;
        if refs.load(Ordering::Relaxed) != INTERNED {
            // Relaxed as in `Arc::clone`: the new reference is made from one we hold.
            let old = refs.fetch_add(1, Ordering::Relaxed);
            if old > isize::MAX as usize {
                // As `Arc`: a count this high means leaked references; wrapping would free
                // a name still in use.
                std::process::abort();
            }
        }
        Name(self.0)
    }
}

impl Drop for Name {
    #[inline]
    fn drop(&mut self) {
        let refs = &self.inner().refs;
        if refs.load(Ordering::Relaxed) == INTERNED {
            return;
        }
        // Release/Acquire as in `Arc::drop`: every use of the text happens before the free.
        if refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        fence(Ordering::Acquire);
        // SAFETY: this was the last reference to a counted name, allocated by `Name::alloc`.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

impl Default for Name {
    fn default() -> Self {
        static EMPTY: LazyLock<Name> = LazyLock::new(|| Name::interned(""));
        EMPTY.clone()
    }
}

impl Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.0 == other.0 || self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

/// As `str`'s, so that `Borrow<str>` lookups work.
impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> CmpOrdering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name::alloc(s.into(), 1)
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Name::alloc(s.into_boxed_str(), 1)
    }
}

impl From<&String> for Name {
    fn from(s: &String) -> Self {
        Name::from(s.as_str())
    }
}

impl From<Name> for String {
    fn from(n: Name) -> Self {
        n.as_str().to_string()
    }
}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Name {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Name> for str {
    fn eq(&self, other: &Name) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Name> for &str {
    fn eq(&self, other: &Name) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Name> for String {
    fn eq(&self, other: &Name) -> bool {
        self.as_str() == other.as_str()
    }
}

impl serde::Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_word_and_an_option_of_it_too() {
        assert_eq!(std::mem::size_of::<Name>(), 8);
        assert_eq!(std::mem::size_of::<Option<Name>>(), 8);
    }

    #[test]
    fn interning_shares_one_allocation_per_text() {
        let a = Name::interned("veth-intern-test");
        let b = Name::interned("veth-intern-test");
        assert_eq!(a.0, b.0);
        assert!(a.is_interned());
        let c = a.clone();
        drop(a);
        drop(b);
        assert_eq!(c.as_str(), "veth-intern-test");
        assert_ne!(Name::interned("other").0, c.0);
    }

    #[test]
    fn counted_names_are_freed_with_their_last_reference() {
        let a = Name::from(format!("netns:{}", 42));
        assert!(!a.is_interned());
        let b = a.clone();
        assert_eq!(a.inner().refs.load(Ordering::Relaxed), 2);
        drop(a);
        assert_eq!(b.inner().refs.load(Ordering::Relaxed), 1);
        assert_eq!(b, "netns:42");
        // Moved across threads and dropped there.
        let t = std::thread::spawn(move || b.len());
        assert_eq!(t.join().ok(), Some(8));
    }

    #[test]
    fn compares_hashes_and_orders_as_its_text() {
        use std::collections::HashMap;
        let (i, c) = (Name::interned("eth0"), Name::from("eth0"));
        assert_eq!(i, c);
        let (a, b) = (Name::from("a"), Name::interned("b"));
        assert_eq!(a.cmp(&b), CmpOrdering::Less);
        let mut m = HashMap::new();
        m.insert(c.clone(), 1);
        assert_eq!(m.get("eth0"), Some(&1));
        assert_eq!(m.get(&i), Some(&1));
        assert_eq!(format!("{i} {c:?}"), "eth0 \"eth0\"");
        assert_eq!(Name::default(), "");
        assert_eq!(serde_json::to_string(&c).ok().as_deref(), Some("\"eth0\""));
    }
}
