//! Per-thread scratch buffers for the kernels' temporaries: a buffer taken here comes from the
//! thread's pool when one is large enough, so a block's intermediates cost no allocation,
//! page faults or zeroing after the first call. Contents on taking are whatever the last user
//! left (always initialised f32), so every user writes before it reads.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Buffers kept per thread; more are freed on return.
const KEEP: usize = 8;

thread_local! {
    static POOL: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer of `len` f32 lent from the current thread's pool; returned to the pool of the
/// thread that drops it.
pub struct Scratch {
    buf: Vec<f32>,
    len: usize,
}

impl Scratch {
    /// A buffer of `len` values (arbitrary, initialised contents).
    pub fn take(len: usize) -> Scratch {
        let mut buf = POOL
            .with(|p| {
                let mut pool = p.borrow_mut();
                let at = pool.iter().position(|b| b.len() >= len).or_else(|| {
                    // None fits: grow the largest, so the pool converges on the sizes in use.
                    (0..pool.len()).max_by_key(|&i| pool[i].len())
                })?;
                Some(pool.swap_remove(at))
            })
            .unwrap_or_default();
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        Scratch { buf, len }
    }
}

impl Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[..self.len]
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[..self.len]
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        POOL.with(|p| {
            let mut pool = p.borrow_mut();
            if pool.len() < KEEP {
                pool.push(buf);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_have_the_asked_length() {
        let a = Scratch::take(100);
        assert_eq!(a.len(), 100);
        let ptr = a.as_ptr();
        drop(a);
        let b = Scratch::take(50);
        assert_eq!(b.len(), 50);
        assert_eq!(b.as_ptr(), ptr, "the same allocation is lent again");
        let c = Scratch::take(200);
        assert_eq!(c.len(), 200);
    }
}
