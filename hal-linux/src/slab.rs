//! Operation slots indexed by the low 32 bits of a key, with a generation in the high 32 bits,
//! so a key (an `OpId`, an SQE's `user_data`) for a released slot never matches the slot's
//! next occupant.

/// Indices stay below this, so keys never collide with the driver's reserved `user_data`
/// values at the top of the `u64` range, and bit 30 is free to tag which slab a key is of.
pub(crate) const MAX_SLOTS: usize = 1 << 30;

#[derive(Debug)]
struct Entry<T> {
    gen: u32,
    value: Option<T>,
}

#[derive(Debug)]
pub(crate) struct Slab<T> {
    entries: Vec<Entry<T>>,
    free: Vec<u32>,
    len: usize,
}

fn key(index: u32, gen: u32) -> u64 {
    (u64::from(gen) << 32) | u64::from(index)
}

fn split(key: u64) -> (usize, u32) {
    ((key & 0xffff_ffff) as usize, (key >> 32) as u32)
}

impl<T> Slab<T> {
    pub(crate) fn new() -> Self {
        Slab {
            entries: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }

    /// Store `value`; handed back when all slots are taken.
    #[inline]
    pub(crate) fn insert(&mut self, value: T) -> Result<u64, T> {
        let index = match self.free.pop() {
            Some(i) => i,
            None if self.entries.len() < MAX_SLOTS => {
                self.entries.push(Entry {
                    gen: 0,
                    value: None,
                });
                (self.entries.len() - 1) as u32
            }
            None => return Err(value),
        };
        let e = &mut self.entries[index as usize];
        e.value = Some(value);
        self.len += 1;
        Ok(key(index, e.gen))
    }

    pub(crate) fn get_mut(&mut self, key: u64) -> Option<&mut T> {
        let (index, gen) = split(key);
        match self.entries.get_mut(index) {
            Some(e) if e.gen == gen => e.value.as_mut(),
            _ => None,
        }
    }

    pub(crate) fn get(&self, key: u64) -> Option<&T> {
        let (index, gen) = split(key);
        match self.entries.get(index) {
            Some(e) if e.gen == gen => e.value.as_ref(),
            _ => None,
        }
    }

    /// The values of the occupied slots.
    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().filter_map(|e| e.value.as_ref())
    }

    /// Release the slot; its key becomes stale.
    pub(crate) fn remove(&mut self, key: u64) -> Option<T> {
        let (index, gen) = split(key);
        let e = self.entries.get_mut(index)?;
        if e.gen != gen {
            return None;
        }
        let value = e.value.take()?;
        e.gen = e.gen.wrapping_add(1);
        self.free.push(index as u32);
        self.len -= 1;
        Some(value)
    }

    /// Release the slot, dropping its value where it is (no move out); its key becomes stale.
    /// `false` if the key was stale already.
    #[inline]
    pub(crate) fn free(&mut self, key: u64) -> bool {
        let (index, gen) = split(key);
        let Some(e) = self.entries.get_mut(index) else {
            return false;
        };
        if e.gen != gen || e.value.is_none() {
            return false;
        }
        e.value = None;
        e.gen = e.gen.wrapping_add(1);
        self.free.push(index as u32);
        self.len -= 1;
        true
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Keys of the occupied slots.
    pub(crate) fn keys(&self) -> Vec<u64> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.value.is_some())
            .map(|(i, e)| key(i as u32, e.gen))
            .collect()
    }

    /// Take every value out, leaving the slab empty.
    pub(crate) fn drain(&mut self) -> Vec<T> {
        self.free.clear();
        self.len = 0;
        self.entries.drain(..).filter_map(|e| e.value).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_key_never_reaches_the_reused_slot() {
        let mut s = Slab::new();
        let a = s.insert("a").expect("slot");
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert("b").expect("slot");
        assert_eq!(a & 0xffff_ffff, b & 0xffff_ffff, "same index reused");
        assert_ne!(a, b, "different generation");
        assert!(s.get_mut(a).is_none());
        assert_eq!(s.remove(a), None);
        assert_eq!(s.get_mut(b).copied(), Some("b"));
        assert_eq!(s.len(), 1);
        assert_eq!(s.keys(), vec![b]);
        assert!(s.free(b));
        assert!(!s.free(b), "a freed key is stale");
        assert!(s.get_mut(b).is_none());
        assert_eq!(s.len(), 0);
    }
}
