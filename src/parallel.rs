//! Where qconv's parallel loops run: on rayon's threads when a thread pool can be had, else on
//! the calling thread.
//!
//! Every parallel loop of the library (the CPU engine's tasks and padded copy, weight
//! fake-quantization) asks [`available`] first (through a crate-internal `try_for_each` where it
//! can). Its first use outside a rayon pool starts rayon's global pool (`ThreadPoolBuilder::build_global`, which honours `RAYON_NUM_THREADS`). When
//! that fails — no thread can be created (`RLIMIT_NPROC`, an address-space limit too small for
//! the threads' stacks, a sandbox) — qconv runs every loop on the calling thread instead, for the
//! rest of the process, rather than panicking as a rayon iterator would. An application that
//! configured the global pool itself, or calls qconv inside [`rayon::ThreadPool::install`],
//! keeps its pool.
//!
//! The results do not depend on where the loops run: each task owns its outputs and computes
//! them in a fixed order, so a run on the calling thread is bit-identical to a threaded one.

use std::cell::Cell;
use std::sync::OnceLock;

use rayon::prelude::*;

/// Whether the global pool is usable (decided once per process).
static GLOBAL: OnceLock<bool> = OnceLock::new();

thread_local! {
    /// Set by [`run_inline`] on the thread it runs on.
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

fn global_pool_usable() -> bool {
    *GLOBAL.get_or_init(|| match rayon::ThreadPoolBuilder::new().build_global() {
        Ok(()) => true,
        // No `source`: the pool was initialised before (by the application, or by an earlier
        // call of ours); it is usable. With one, the threads could not be started.
        Err(e) => std::error::Error::source(&e).is_none(),
    })
}

/// Whether qconv's parallel loops run on a thread pool here (`false`: on the calling thread).
///
/// Inside a rayon pool this is `true`; inside [`run_inline`] `false`; otherwise it starts the
/// global pool on first use and says whether that worked.
pub fn available() -> bool {
    if INLINE.with(Cell::get) {
        return false;
    }
    rayon::current_thread_index().is_some() || global_pool_usable()
}

/// How many threads qconv's parallel loops use from this thread (1 when they run inline). Unlike
/// [`rayon::current_num_threads`], it never panics when no thread pool can be started.
pub fn current_num_threads() -> usize {
    if available() {
        rayon::current_num_threads().max(1)
    } else {
        1
    }
}

/// Runs `f` with every parallel loop of qconv on the calling thread (e.g. to measure the serial
/// speed, or where threads must not be used). The results are bit-identical to a threaded run.
pub fn run_inline<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            INLINE.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(INLINE.with(|c| c.replace(true)));
    f()
}

/// Runs `f` on every item, in parallel when [`available`] (else in order on this thread),
/// stopping at (and returning) an error: the first
/// in item order when run inline, one of them when run in parallel.
pub(crate) fn try_for_each<T: Send, E: Send>(
    items: Vec<T>,
    f: impl Fn(T) -> Result<(), E> + Sync + Send,
) -> Result<(), E> {
    if items.len() > 1 && available() {
        items.into_par_iter().try_for_each(f)
    } else {
        items.into_iter().try_for_each(f)
    }
}

/// Runs `f(i, chunk)` on the `chunk`-element chunks of `data` (the last may be shorter), in
/// parallel when [`available`], else in order on this thread.
pub(crate) fn for_each_chunk_mut<T: Send>(data: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    let chunk = chunk.max(1);
    if data.len() > chunk && available() {
        data.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    } else {
        data.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_runs_stay_on_the_calling_thread() {
        let me = std::thread::current().id();
        run_inline(|| {
            assert!(!available());
            assert_eq!(current_num_threads(), 1);
            let r: Result<(), ()> = try_for_each((0..64).collect(), |_: i32| {
                assert_eq!(std::thread::current().id(), me);
                Ok(())
            });
            assert!(r.is_ok());
            // Nested use keeps the inline mode, and leaving restores it.
            run_inline(|| assert!(!available()));
            assert!(!available());
        });
        let r: Result<(), usize> =
            run_inline(|| try_for_each((0..10).collect(), |i| if i >= 3 { Err(i) } else { Ok(()) }));
        assert_eq!(r, Err(3));
    }

    #[test]
    fn a_pool_of_ours_is_used_inside_install() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
        pool.install(|| {
            assert!(available());
            assert_eq!(current_num_threads(), 3);
        });
    }
}
