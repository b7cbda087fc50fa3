//! Allocator settings for host tensors.

/// Makes the C allocator keep freed blocks for reuse instead of returning them to the kernel.
///
/// A training iteration allocates and frees hundreds of tensors of a few sizes, from kilobytes
/// to tens of megabytes. With its defaults, glibc maps blocks above its mmap threshold (128 KiB
/// at first, raised up to 32 MiB as such blocks are freed) with fresh pages and trims the top
/// of the heap on free. The kernel then faults in and zeroes the pages of those tensors again
/// on every iteration, which took about a sixth of an iteration at 69x91 pixels and 64
/// channels. After this call, freed memory stays in the process (its peak use is kept) and
/// later tensors of the same size reuse it.
///
/// Call it once at startup, before the first large allocation. It does nothing on other C
/// libraries.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // Largest block served from the heap rather than by its own mapping (1 GiB), and the
        // free space at the top of the heap above which glibc returns memory (about 2 GiB).
        const MMAP_THRESHOLD_BYTES: libc::c_int = 1 << 30;
        const TRIM_THRESHOLD_BYTES: libc::c_int = libc::c_int::MAX;
        // SAFETY: mallopt only changes allocator parameters; both values are in range, and it
        // is safe to call at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
        }
    }
}
