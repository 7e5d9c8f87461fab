//! [`Payload`]: an entry's bytes, shared rather than copied.
//!
//! One proposal's bytes pass through the unstable log, a Ready for the local write, one append
//! per follower, storage, and a Ready for applying, on every node. As a `Vec<u8>` each of those
//! hands is a heap copy (about a dozen per commit on a 3-node cluster); as a `Payload` each is
//! a reference-count increment on one immutable buffer.

use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::ops::{Deref, DerefMut};

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Immutable, reference-counted bytes. Cloning shares the buffer; the empty payload allocates
/// nothing. Built from a `Vec<u8>`, a slice or a byte array; reads as a `&[u8]`. Encodes
/// exactly as a `Vec<u8>` does (postcard: length, then the bytes), so the wire format does not
/// depend on it.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Payload(Option<Arc<[u8]>>);

impl Payload {
    /// The empty payload.
    pub const fn new() -> Self {
        Payload(None)
    }

    /// Mutable access, copying the bytes first if the buffer is shared (copy on write), so a
    /// change never shows through another clone.
    pub fn make_mut(&mut self) -> &mut [u8] {
        if let Some(a) = self.0.as_mut() {
            if Arc::get_mut(a).is_none() {
                *a = Arc::from(&a[..]);
            }
        }
        match self.0.as_mut() {
            Some(a) => Arc::get_mut(a).unwrap_or(&mut []),
            None => &mut [],
        }
    }

    /// The bytes, copied into a `Vec`.
    pub fn to_vec(&self) -> Vec<u8> {
        self.deref().to_vec()
    }
}

impl Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.0.as_deref().unwrap_or(&[])
    }
}

impl DerefMut for Payload {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.make_mut()
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl core::borrow::Borrow<[u8]> for Payload {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl From<&[u8]> for Payload {
    fn from(b: &[u8]) -> Self {
        if b.is_empty() {
            Payload(None)
        } else {
            Payload(Some(Arc::from(b)))
        }
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload::from(&v[..])
    }
}

impl<const N: usize> From<&[u8; N]> for Payload {
    fn from(b: &[u8; N]) -> Self {
        Payload::from(&b[..])
    }
}

impl<const N: usize> From<[u8; N]> for Payload {
    fn from(b: [u8; N]) -> Self {
        Payload::from(&b[..])
    }
}

impl From<Arc<[u8]>> for Payload {
    fn from(a: Arc<[u8]>) -> Self {
        if a.is_empty() {
            Payload(None)
        } else {
            Payload(Some(a))
        }
    }
}

impl From<Payload> for Vec<u8> {
    fn from(p: Payload) -> Self {
        p.to_vec()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl PartialEq<[u8]> for Payload {
    fn eq(&self, other: &[u8]) -> bool {
        **self == *other
    }
}

impl PartialEq<&[u8]> for Payload {
    fn eq(&self, other: &&[u8]) -> bool {
        **self == **other
    }
}

impl<const N: usize> PartialEq<[u8; N]> for Payload {
    fn eq(&self, other: &[u8; N]) -> bool {
        **self == other[..]
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Payload {
    fn eq(&self, other: &&[u8; N]) -> bool {
        **self == other[..]
    }
}

impl PartialEq<Vec<u8>> for Payload {
    fn eq(&self, other: &Vec<u8>) -> bool {
        **self == other[..]
    }
}

impl PartialEq<Payload> for Vec<u8> {
    fn eq(&self, other: &Payload) -> bool {
        self[..] == **other
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, s: S) -> core::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(self)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> core::result::Result<Self, D::Error> {
        d.deserialize_byte_buf(PayloadVisitor)
    }
}

struct PayloadVisitor;

impl<'de> Visitor<'de> for PayloadVisitor {
    type Value = Payload;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> core::result::Result<Payload, E> {
        Ok(Payload::from(v))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> core::result::Result<Payload, E> {
        Ok(Payload::from(v))
    }

    // Self-describing formats may present bytes as a sequence of numbers.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> core::result::Result<Payload, A::Error> {
        // The hint comes from the input: cap it so hostile input cannot reserve much.
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            v.push(b);
        }
        Ok(Payload::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn encodes_exactly_as_a_vec() {
        for v in [vec![], vec![7u8], vec![0xA5; 300]] {
            let p = Payload::from(v.clone());
            let as_vec = postcard::to_allocvec(&v).unwrap();
            assert_eq!(postcard::to_allocvec(&p).unwrap(), as_vec);
            let back: Payload = postcard::from_bytes(&as_vec).unwrap();
            assert_eq!(back, v);
            let back_vec: Vec<u8> = postcard::from_bytes(&as_vec).unwrap();
            assert_eq!(back_vec, v);
        }
    }

    #[test]
    fn truncated_input_is_an_error() {
        let bytes = postcard::to_allocvec(&Payload::from(vec![1u8; 10])).unwrap();
        assert!(postcard::from_bytes::<Payload>(&bytes[..5]).is_err());
    }

    #[test]
    fn clones_share_and_writes_copy() {
        let a = Payload::from(b"abc");
        let mut b = a.clone();
        assert_eq!(a.as_ptr(), b.as_ptr(), "a clone shares the buffer");
        b[0] = b'x';
        assert_eq!(a, b"abc", "a write never shows through another clone");
        assert_eq!(b, b"xbc");
        let mut only = Payload::from(b"q");
        let before = only.as_ptr();
        only[0] = b'r';
        assert_eq!(
            only.as_ptr(),
            before,
            "an unshared buffer is written in place"
        );
        assert_eq!(Payload::new(), Payload::from(Vec::new()));
        assert!(Payload::default().is_empty());
    }
}
