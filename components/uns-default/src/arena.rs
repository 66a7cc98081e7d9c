//! The component's allocator: a bump arena that starts over whenever
//! everything in it has been freed, with the system allocator behind it.
//!
//! Why: a batch allocates every argument, every intermediate and every
//! string of every result, and frees them all by the time the host has read
//! the results (the canonical ABI's post-return). dlmalloc, the default in
//! `wasm32-wasip2`, does real bookkeeping for each of those and they were a
//! tenth of the sandboxed transform's time; a bump pointer does the same job
//! for a few instructions, and nothing from one batch outlives it.
//!
//! Why it is safe: the arena only starts over when its count of live
//! allocations is zero, so a block that outlives a batch (none should)
//! stops the arena from being reused instead of being overwritten. A
//! request that does not fit goes to the system allocator, and the next
//! time the arena is empty it doubles, up to [`MAX_CHUNK`], so a long batch
//! costs dlmalloc speed once, not corruption. `init`'s allocations (the
//! configuration, kept for the instance's life) are made before
//! [`BatchArena::activate`] and never enter the arena.
//!
//! A component instance runs on one thread (the host calls it from one
//! thread at a time and `wasm32-wasip2` has no threads), which is what makes
//! the unsynchronised state below sound.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;

/// The first arena: about what a batch of 256 UNS JSON messages uses.
const FIRST_CHUNK: usize = 1 << 20;
/// The largest arena; past it, big batches use the system allocator for
/// whatever does not fit.
pub const MAX_CHUNK: usize = 16 << 20;
const CHUNK_ALIGN: usize = 16;

pub struct BatchArena {
    state: UnsafeCell<State>,
}

struct State {
    active: bool,
    base: usize,
    top: usize,
    end: usize,
    /// Blocks handed out from the arena and not yet freed.
    live: usize,
    /// A request did not fit since the arena last started over.
    overflowed: bool,
}

// SAFETY: see the module comment: one thread per instance.
unsafe impl Sync for BatchArena {}

impl BatchArena {
    pub const fn new() -> Self {
        Self {
            state: UnsafeCell::new(State {
                active: false,
                base: 0,
                top: 0,
                end: 0,
                live: 0,
                overflowed: false,
            }),
        }
    }

    /// From now on, allocations come from the arena where they fit.
    pub fn activate(&self) {
        // SAFETY: one thread, and no other borrow of the state is live.
        unsafe { (*self.state.get()).active = true }
    }

    /// Runs `f` with the arena off: what it allocates comes from the
    /// system allocator, for state that outlives the batch (which would
    /// otherwise keep the arena from ever starting over).
    pub fn outside(&self, f: &mut dyn FnMut()) {
        // SAFETY: one thread, and no other borrow of the state is live
        // while the flag is read or written.
        let was = unsafe { (*self.state.get()).active };
        unsafe { (*self.state.get()).active = false };
        f();
        unsafe { (*self.state.get()).active = was };
    }

    /// Replaces an empty arena by one twice as large (the first time, by
    /// the first one).
    ///
    /// SAFETY: `s.live == 0`.
    unsafe fn grow(s: &mut State) {
        let size = match s.end - s.base {
            0 => FIRST_CHUNK,
            n if n >= MAX_CHUNK => return,
            n => (n * 2).min(MAX_CHUNK),
        };
        let Ok(layout) = Layout::from_size_align(size, CHUNK_ALIGN) else {
            return;
        };
        let new = System.alloc(layout);
        if new.is_null() {
            return;
        }
        if s.end > s.base {
            System.dealloc(
                s.base as *mut u8,
                Layout::from_size_align_unchecked(s.end - s.base, CHUNK_ALIGN),
            );
        }
        s.base = new as usize;
        s.top = s.base;
        s.end = s.base + size;
        s.overflowed = false;
    }

    fn owns(s: &State, ptr: *mut u8) -> bool {
        (s.base..s.end).contains(&(ptr as usize))
    }
}

impl Default for BatchArena {
    fn default() -> Self {
        Self::new()
    }
}

unsafe impl GlobalAlloc for BatchArena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let s = &mut *self.state.get();
        if s.active {
            if s.live == 0 && (s.overflowed || s.end == s.base) {
                Self::grow(s);
            }
            // `align` is a power of two; `top + align` cannot overflow the
            // address space of a 32-bit target with a 16 MiB arena in it.
            let start = (s.top + layout.align() - 1) & !(layout.align() - 1);
            if let Some(new_top) = start.checked_add(layout.size()) {
                if s.end > s.base && new_top <= s.end {
                    s.top = new_top;
                    s.live += 1;
                    return start as *mut u8;
                }
            }
            s.overflowed = true;
        }
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let s = &mut *self.state.get();
        if Self::owns(s, ptr) {
            s.live -= 1;
            if s.live == 0 {
                s.top = s.base;
            } else if ptr as usize + layout.size() == s.top {
                // The newest block: give its space back at once, which is
                // what most short-lived temporaries are.
                s.top = ptr as usize;
            }
            return;
        }
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let s = &mut *self.state.get();
        if !Self::owns(s, ptr) {
            return System.realloc(ptr, layout, new_size);
        }
        let at = ptr as usize;
        if at + layout.size() == s.top && at + new_size <= s.end {
            // The newest block (a growing Vec, typically) grows in place.
            s.top = at + new_size;
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        let new = self.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size());
            self.dealloc(ptr, layout);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn inactive_arena_leaves_everything_to_the_system_allocator() {
        let a = BatchArena::new();
        unsafe {
            let p = a.alloc(layout(64, 8));
            assert!(!p.is_null());
            assert!(!BatchArena::owns(&*a.state.get(), p));
            a.dealloc(p, layout(64, 8));
        }
    }

    #[test]
    fn starts_over_only_when_every_block_is_freed() {
        let a = BatchArena::new();
        a.activate();
        unsafe {
            let p = a.alloc(layout(100, 8));
            let q = a.alloc(layout(100, 8));
            assert!(BatchArena::owns(&*a.state.get(), p));
            assert_eq!(q as usize, p as usize + 104, "bumped and aligned");
            q.write_bytes(7, 100);
            // `p` is not the newest block and `q` is live: nothing moves.
            a.dealloc(p, layout(100, 8));
            let r = a.alloc(layout(8, 8));
            assert!(
                r as usize >= q as usize + 100,
                "a live block is never reused"
            );
            assert_eq!(*q.add(99), 7);
            a.dealloc(r, layout(8, 8));
            a.dealloc(q, layout(100, 8));
            // Empty: the next block starts at the base again.
            let s = a.alloc(layout(1, 1));
            assert_eq!(s, p);
            a.dealloc(s, layout(1, 1));
        }
    }

    /// State kept across batches (Sparkplug BIRTHs) is allocated outside
    /// the arena, so the arena still starts over while it lives.
    #[test]
    fn what_outlives_the_batch_is_allocated_outside_the_arena() {
        let a = BatchArena::new();
        a.activate();
        unsafe {
            let p = a.alloc(layout(64, 8));
            let mut kept = std::ptr::null_mut();
            a.outside(&mut || kept = a.alloc(layout(64, 8)));
            assert!(!BatchArena::owns(&*a.state.get(), kept));
            assert!((*a.state.get()).active, "the arena is on again");
            a.dealloc(p, layout(64, 8));
            // `kept` lives on, and the arena starts over all the same.
            let q = a.alloc(layout(1, 1));
            assert_eq!(q, p);
            a.dealloc(q, layout(1, 1));
            a.dealloc(kept, layout(64, 8));
            assert_eq!((*a.state.get()).live, 0);
        }
    }

    #[test]
    fn the_newest_block_grows_in_place_and_others_move() {
        let a = BatchArena::new();
        a.activate();
        unsafe {
            let keep = a.alloc(layout(16, 8));
            let v = a.alloc(layout(4, 1));
            v.copy_from(b"abcd".as_ptr(), 4);
            let grown = a.realloc(v, layout(4, 1), 400);
            assert_eq!(grown, v, "newest block grows in place");
            let other = a.alloc(layout(4, 1));
            let moved = a.realloc(grown, layout(400, 1), 800);
            assert_ne!(moved, grown, "an older block moves");
            assert_eq!(std::slice::from_raw_parts(moved, 4), b"abcd");
            a.dealloc(keep, layout(16, 8));
            a.dealloc(other, layout(4, 1));
            a.dealloc(moved, layout(800, 1));
            assert_eq!((*a.state.get()).live, 0);
        }
    }

    #[test]
    fn what_does_not_fit_goes_to_the_system_and_the_arena_then_doubles() {
        let a = BatchArena::new();
        a.activate();
        unsafe {
            let small = a.alloc(layout(8, 8));
            let big = a.alloc(layout(FIRST_CHUNK, 8));
            assert!(!big.is_null());
            assert!(!BatchArena::owns(&*a.state.get(), big), "overflow");
            big.write_bytes(1, FIRST_CHUNK);
            a.dealloc(big, layout(FIRST_CHUNK, 8));
            a.dealloc(small, layout(8, 8));
            // Empty after an overflow: the next request gets a larger arena.
            let p = a.alloc(layout(FIRST_CHUNK, 8));
            let s = &*a.state.get();
            assert_eq!(s.end - s.base, 2 * FIRST_CHUNK);
            assert!(BatchArena::owns(s, p));
            a.dealloc(p, layout(FIRST_CHUNK, 8));
        }
    }
}
