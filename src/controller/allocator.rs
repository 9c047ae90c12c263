//! The C library's allocator, set up for a process that idles between bursts.
//!
//! glibc serves a large block (a list response, a page of watch events) from an mmap
//! of its own and gives it back when freed, but each such free raises the threshold
//! to the block's size (up to 32 MiB), so the next large blocks come from the heap
//! and their pages stay with the process after the burst. A fixed threshold keeps
//! large blocks in mmaps that are returned when freed. And glibc gives each thread
//! that contends for the heap an arena of its own, each keeping what was freed in it:
//! one arena is enough for two runtime threads that mostly wait on the network.
//! What each setting saves at idle is measured in docs/benchmarks.md ("Round 3").
//!
//! musl (the static build that ships) has neither knob and returns freed memory
//! eagerly on its own; there this does nothing.

/// Blocks this large or larger get an mmap of their own: glibc's initial threshold.
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// Arenas glibc may create.
pub const ARENAS: usize = 1;

/// Fixes the mmap threshold and the number of arenas. Call before the runtime starts
/// its threads. Returns whether the allocator took both settings (always false where
/// it has none).
pub fn tune_for_bursts() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes the allocator's parameters; it takes its own
        // lock and is safe to call at any time from any thread.
        unsafe {
            let threshold = libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1;
            let arenas = libc::mallopt(libc::M_ARENA_MAX, ARENAS as libc::c_int) == 1;
            threshold && arenas
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_fixed_threshold() {
        assert!(tune_for_bursts(), "mallopt refused M_MMAP_THRESHOLD {MMAP_THRESHOLD} or M_ARENA_MAX {ARENAS}");
    }

    #[test]
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    fn elsewhere_nothing_is_changed() {
        assert!(!tune_for_bursts());
    }
}
