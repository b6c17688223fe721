//! [`AlignedBytes`]: a byte buffer whose start is 64-byte aligned (a cache line, a `zmm`
//! register, an AMX tile row). A plain `Vec<u8>` of a large size starts 16 bytes past a page
//! boundary with glibc, so every 64-byte tile row of the padded copy or of a weight panel would
//! straddle two cache lines (twice the loads: the AMX kernel ran at a third of its speed).

use crate::alloc::try_resize;
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;

/// One cache line.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Line([u8; 64]);

/// A byte buffer starting at a 64-byte boundary, `len` bytes long (zero-initialised storage).
#[derive(Clone, Debug, Default)]
pub(super) struct AlignedBytes {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBytes {
    /// `len` zero bytes ([`Error::OutOfMemory`] naming `what` if they cannot be allocated).
    pub(super) fn zeroed(len: usize, what: &str) -> Result<AlignedBytes> {
        let mut b = AlignedBytes::default();
        b.set_len(len, what)?;
        Ok(b)
    }

    /// Sets the length to `len`, keeping the storage (and its bytes) where it suffices; new bytes
    /// are zero. The storage grows fallibly: [`Error::OutOfMemory`] naming `what`.
    pub(super) fn set_len(&mut self, len: usize, what: &str) -> Result<()> {
        let lines = len.div_ceil(64);
        if lines > self.lines.len() {
            try_resize(&mut self.lines, lines, Line([0; 64]), || what.to_string())?;
        }
        self.len = len;
        Ok(())
    }

    /// Bytes of storage.
    pub(super) fn capacity(&self) -> usize {
        self.lines.capacity() * 64
    }

    #[inline]
    pub(super) fn bytes(&self) -> &[u8] {
        // SAFETY: `lines` holds at least `len` initialised bytes (`Line` is a plain byte array
        // without padding), and the slice borrows `self`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const u8, self.len) }
    }

    #[inline]
    pub(super) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `bytes`, with the exclusive borrow of `self`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut u8, self.len) }
    }

    /// The bytes as i8 (weight codes).
    #[inline]
    pub(super) fn codes(&self) -> &[i8] {
        // SAFETY: i8 and u8 have the same size and alignment, and every byte is a valid i8.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr() as *const i8, self.len) }
    }

    /// The bytes as mutable i8.
    #[inline]
    pub(super) fn codes_mut(&mut self) -> &mut [i8] {
        // SAFETY: as for `codes`, with the exclusive borrow of `self`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr() as *mut i8, self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::AlignedBytes;

    #[test]
    fn aligned_and_sized() {
        let mut b = AlignedBytes::zeroed(100, "test").unwrap();
        assert_eq!(b.bytes().len(), 100);
        assert_eq!(b.bytes().as_ptr() as usize % 64, 0);
        b.bytes_mut()[99] = 7;
        b.set_len(1000, "test").unwrap();
        assert_eq!(b.bytes()[99], 7);
        assert!(b.bytes()[100..].iter().all(|&v| v == 0));
        assert_eq!(b.codes()[99], 7);
        b.codes_mut()[0] = -1;
        assert_eq!(b.bytes()[0], 255);
        b.set_len(10, "test").unwrap();
        assert_eq!(b.bytes().len(), 10);
        assert!(b.capacity() >= 1000);
        // A size that cannot be allocated is a typed error, not an abort.
        let e = b.set_len(usize::MAX / 2, "the padded copy").unwrap_err();
        assert!(matches!(e, crate::error::Error::OutOfMemory { .. }), "{e}");
        assert!(e.to_string().contains("the padded copy"), "{e}");
        assert_eq!(b.bytes().len(), 10);
    }
}
