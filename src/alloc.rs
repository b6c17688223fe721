//! Fallible allocation.
//!
//! Every buffer whose size comes from a file, a shape or an argument is reserved with
//! `try_reserve_exact` through these helpers, so that a size the allocator (or an address-space
//! limit such as `ulimit -v`) refuses becomes an [`Error::OutOfMemory`] naming the buffer, not an
//! abort. Buffers of a size fixed by the code (small scratch, headers) use the ordinary
//! allocation.

use crate::error::{Error, Result};

/// An empty vector with room for exactly `n` elements.
pub(crate) fn try_with_capacity<T>(n: usize, what: impl FnOnce() -> String) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::oom::<T>(what(), n))?;
    Ok(v)
}

/// `n` copies of `value`.
pub(crate) fn try_filled<T: Clone>(n: usize, value: T, what: impl FnOnce() -> String) -> Result<Vec<T>> {
    let mut v = try_with_capacity(n, what)?;
    v.resize(n, value);
    Ok(v)
}

/// Resizes `v` to `len` elements (new ones `value`), growing its allocation fallibly.
pub(crate) fn try_resize<T: Clone>(v: &mut Vec<T>, len: usize, value: T, what: impl FnOnce() -> String) -> Result<()> {
    if len > v.len() {
        v.try_reserve_exact(len - v.len()).map_err(|_| Error::oom::<T>(what(), len))?;
    }
    v.resize(len, value);
    Ok(())
}

/// The elements of `iter` (whose length is known) in a vector allocated fallibly.
pub(crate) fn try_collect<T>(iter: impl ExactSizeIterator<Item = T>, what: impl FnOnce() -> String) -> Result<Vec<T>> {
    let mut v = try_with_capacity(iter.len(), what)?;
    v.extend(iter);
    Ok(v)
}

/// A copy of `s`, allocated fallibly.
pub(crate) fn try_to_vec<T: Clone>(s: &[T], what: impl FnOnce() -> String) -> Result<Vec<T>> {
    let mut v = try_with_capacity(s.len(), what)?;
    v.extend_from_slice(s);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_sizes_are_typed_errors() {
        let e = try_with_capacity::<f32>(usize::MAX / 2, || "a huge buffer".into()).unwrap_err();
        assert!(matches!(e, Error::OutOfMemory { ref what, .. } if what == "a huge buffer"), "{e}");
        let mut v = vec![1u8; 3];
        assert!(try_resize(&mut v, usize::MAX, 0, || "x".into()).is_err());
        assert_eq!(v, [1, 1, 1]);
        try_resize(&mut v, 5, 7, || "x".into()).unwrap();
        assert_eq!(v, [1, 1, 1, 7, 7]);
        assert_eq!(try_filled(2, 9u16, || "x".into()).unwrap(), [9, 9]);
        assert_eq!(try_collect([1, 2].into_iter(), || "x".into()).unwrap(), [1, 2]);
        assert_eq!(try_to_vec(&[4, 5], || "x".into()).unwrap(), [4, 5]);
    }
}
