//! Allocator settings for host tensors.

/// Makes the C allocator keep freed blocks for reuse instead of returning them to the kernel.
///
/// A training iteration allocates and frees hundreds of tensors of a few sizes, from kilobytes
/// to tens of megabytes. With its defaults, glibc maps blocks above its mmap threshold (128 KiB
/// at first, raised up to 32 MiB as such blocks are freed) with fresh pages. It trims the top
/// of the heap on free. Each thread that allocates gets its own arena of 64 MiB heaps, which
/// glibc unmaps once they are empty. The kernel then faults in and zeroes the pages of those
/// tensors again on every iteration, which took about a sixth of an iteration at 69x91 pixels
/// and 64 channels. The per-thread arenas also made the peak memory depend on which worker
/// happened to allocate: 1.6 to 2.9 GB over runs of the same iteration at 186x248 pixels.
///
/// After this call, blocks up to 32 MiB (the largest mmap threshold glibc accepts on 64-bit
/// targets) come from the heaps. Each heap keeps 64 MiB of free space at its top
/// (`M_TOP_PAD`), so a thread's heap is never shrunk or unmapped. Freed memory then stays in
/// the process for later tensors of the same size, and the peak at 186x248 pixels was 1.8 GB
/// in every run. One arena for all threads (`M_ARENA_MAX`) also steadied the peak, but lock
/// contention made the coarsest scales 10% slower.
///
/// Call it once at startup, before the first large allocation. It does nothing on other C
/// libraries. Returns false when glibc rejected a setting.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MMAP_THRESHOLD_BYTES: libc::c_int = 32 << 20;
        const TOP_PAD_BYTES: libc::c_int = 64 << 20;
        // The free space at the top of the main heap above which glibc returns memory.
        const TRIM_THRESHOLD_BYTES: libc::c_int = libc::c_int::MAX;
        // SAFETY: mallopt only changes allocator parameters, and each value is in its range.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
                && libc::mallopt(libc::M_TOP_PAD, TOP_PAD_BYTES) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        true
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn allocator_accepts_every_setting() {
        assert!(super::keep_freed_memory());
    }
}
