//! Owned buffers for I/O (the HAL's [`IoBuf`] / [`IoBufMut`]) and [`Slice`], a window into
//! one.
//!
//! An operation takes its buffer by value and hands it back with the result, so the memory
//! stays valid while the platform (io_uring) uses it, even if the future is dropped:
//!
//! ```no_run
//! # async fn f(stream: seastar::net::TcpStream) -> std::io::Result<()> {
//! let buf = Vec::with_capacity(4096);
//! let (res, buf) = stream.read(buf).await; // the data is buf[..n]
//! let n = res?;
//! let (res, _buf) = stream.write_all(buf).await; // sends buf's initialised bytes
//! res?;
//! # let _ = n; Ok(()) }
//! ```
//!
//! `Vec<u8>`, `Box<[u8]>`, `&'static [u8]` and `&'static str` implement the traits.

use std::ops::{Bound, RangeBounds};

pub use seastar_hal::buf::{IoBuf, IoBufMut};

/// A window `[begin, end)` into an owned buffer, itself an [`IoBuf`]: sending a `Slice` sends
/// the initialised bytes of the window. [`Slice::into_inner`] gives the whole buffer back.
///
/// ```
/// use seastar::buf::{IoBuf, Slice};
/// let s = Slice::new(b"hello world".to_vec(), 6..);
/// assert_eq!(s.bytes_init(), 5);
/// assert_eq!(s.into_inner().len(), 11);
/// ```
#[derive(Debug)]
pub struct Slice<B> {
    buf: B,
    begin: usize,
    end: usize,
}

impl<B: IoBuf> Slice<B> {
    /// The window `range` of `buf`, clamped to its capacity (`bytes_total`).
    pub fn new(buf: B, range: impl RangeBounds<usize>) -> Self {
        let total = buf.bytes_total();
        let begin = match range.start_bound() {
            Bound::Included(&b) => b,
            Bound::Excluded(&b) => b.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => total,
        };
        let end = end.min(total);
        Slice {
            buf,
            begin: begin.min(end),
            end,
        }
    }

    /// Move the start of the window forward by `n` bytes (at most to its end).
    pub fn advance(&mut self, n: usize) {
        self.begin = self.begin.saturating_add(n).min(self.end);
    }
}

impl<B> Slice<B> {
    /// Start of the window in the inner buffer.
    pub fn begin(&self) -> usize {
        self.begin
    }

    /// End of the window in the inner buffer.
    pub fn end(&self) -> usize {
        self.end
    }

    /// The inner buffer.
    pub fn get_ref(&self) -> &B {
        &self.buf
    }

    /// The whole inner buffer back.
    pub fn into_inner(self) -> B {
        self.buf
    }
}

/// Bytes received into a buffer of the core's receive pool, from
/// [`TcpStream::recv`](crate::net::TcpStream::recv): read them through `Deref` (`&buf[..]`),
/// send them back as they are (it is an [`IoBuf`]: no copy), and drop it to give the buffer
/// back to the pool. `!Send`: it belongs to the core that received it.
pub struct RecvBuf(seastar_hal::io::PooledBuf<crate::io_handle::CoreIo>);

impl RecvBuf {
    pub(crate) fn new(inner: seastar_hal::io::PooledBuf<crate::io_handle::CoreIo>) -> Self {
        RecvBuf(inner)
    }

    pub(crate) fn inner(&self) -> &seastar_hal::io::PooledBuf<crate::io_handle::CoreIo> {
        &self.0
    }

    pub(crate) fn into_pooled(self) -> seastar_hal::io::PooledBuf<crate::io_handle::CoreIo> {
        self.0
    }

    /// Keep only the first `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }
}

impl std::ops::Deref for RecvBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for RecvBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvBuf").field("len", &self.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_clamped_and_advances() {
        let mut s = Slice::new(vec![1u8, 2, 3, 4], 1..10);
        assert_eq!((s.begin(), s.end(), s.bytes_init()), (1, 4, 3));
        s.advance(2);
        assert_eq!(s.bytes_init(), 1);
        s.advance(5);
        assert_eq!(s.bytes_init(), 0);
        let v = s.into_inner();
        assert_eq!(v, [1, 2, 3, 4]);
    }

    #[test]
    fn window_of_partly_initialised_vec() {
        let mut v = Vec::with_capacity(16);
        v.extend_from_slice(b"abc");
        let s = Slice::new(v, 1..);
        assert_eq!(s.bytes_init(), 2);
        assert!(s.bytes_total() >= 15);
        assert_eq!(s.stable_ptr(), s.get_ref()[1..].as_ptr());
    }
}
