//! Device handle: one CUDA context and stream, a cache of the loaded kernel modules, and the
//! caching allocator that device buffers come from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cudarc::driver::result as driver_result;
use cudarc::driver::sys::{CUdeviceptr, CUresult};
use cudarc::driver::{
    CudaContext, CudaModule, CudaSlice, CudaStream, DevicePtrMut, DeviceRepr, ValidAsZeroBits,
};
use cudarc::nvrtc::Ptx;

use super::pool::{BlockPool, PoolStats};
use super::{
    compile_module_cubin, driver_available, nvrtc_available, CudaError, CudaFunction, DriverError,
    KernelModule, PTX_ARCH, PTX_NVRTC_VERSION,
};

/// Environment variable that makes every launch synchronise when set to `1`, so that a failing
/// kernel is reported by the launch that caused it instead of by a later call.
pub const SYNC_ENV_VAR: &str = "SINGAN_CUDA_SYNC";

/// One GPU with its primary context and default stream.
///
/// Kernel modules are loaded on first use and cached for the lifetime of the handle. A module
/// comes from the PTX embedded at build time when the build architecture does not exceed the
/// device's compute capability, and otherwise from a CUBIN that NVRTC compiles at run time.
pub struct CudaDevice {
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    compute_capability: (i32, i32),
    sync_after_launch: bool,
    /// Loaded modules, indexed by [`KernelModule::index`].
    modules: Mutex<Vec<Option<Arc<CudaModule>>>>,
    functions: Mutex<HashMap<(KernelModule, String), CudaFunction>>,
    /// Free device blocks of dropped buffers, for reuse by later allocations of the same size.
    pool: Mutex<BlockPool<CUdeviceptr>>,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("ordinal", &self.context.ordinal())
            .field("compute_capability", &self.compute_capability)
            .field("sync_after_launch", &self.sync_after_launch)
            .finish_non_exhaustive()
    }
}

impl CudaDevice {
    /// Opens the GPU with the given ordinal.
    ///
    /// Returns [`CudaError::DriverNotFound`] when libcuda cannot be loaded and
    /// [`CudaError::DeviceNotFound`] when the ordinal is out of range, including on machines
    /// with a driver but no GPU. Reads `SINGAN_CUDA_SYNC` once, here.
    pub fn open(ordinal: usize) -> Result<Self, CudaError> {
        if !driver_available() {
            return Err(CudaError::DriverNotFound);
        }
        let count = match CudaContext::device_count() {
            Ok(count) => usize::try_from(count).unwrap_or(0),
            // cuInit reports a machine without a GPU, or one that only has the CUDA toolkit's
            // stub libcuda, as an error rather than as zero devices.
            Err(DriverError(
                CUresult::CUDA_ERROR_NO_DEVICE | CUresult::CUDA_ERROR_STUB_LIBRARY,
            )) => 0,
            Err(source) => return Err(driver_error("initialising the CUDA driver", source)),
        };
        if ordinal >= count {
            return Err(CudaError::DeviceNotFound { ordinal, count });
        }

        let context = CudaContext::new(ordinal).map_err(|source| {
            driver_error(format!("creating a context on device {ordinal}"), source)
        })?;
        // SAFETY: every launch, copy, allocation and free of this handle goes to the one default
        // stream below, which runs them in submission order. cudarc's per-buffer events only
        // order work across streams, so they are not needed, and without them an allocation
        // creates no events.
        unsafe { context.disable_event_tracking() };

        let compute_capability = context
            .compute_capability()
            .map_err(|source| driver_error("reading the compute capability", source))?;
        if context.has_async_alloc() {
            keep_freed_memory_in_pool(&context)?;
        }
        let stream = context.default_stream();
        let sync_after_launch = std::env::var(SYNC_ENV_VAR).is_ok_and(|value| value.trim() == "1");
        Ok(CudaDevice {
            context,
            stream,
            compute_capability,
            sync_after_launch,
            modules: Mutex::new(vec![None; KernelModule::ALL.len()]),
            functions: Mutex::new(HashMap::new()),
            pool: Mutex::new(BlockPool::new()),
        })
    }

    /// Returns the handle of GPU `ordinal` that tensors share, opening it on the first call.
    ///
    /// Every tensor on `Device::Cuda(ordinal)` uses this one handle, so all their work goes to
    /// one stream. A failed open is not cached, so a later call tries again.
    pub fn shared(ordinal: usize) -> Result<Arc<CudaDevice>, CudaError> {
        static DEVICES: OnceLock<Mutex<HashMap<usize, Arc<CudaDevice>>>> = OnceLock::new();
        let mut devices = DEVICES
            .get_or_init(|| Mutex::new(HashMap::new()))
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(device) = devices.get(&ordinal) {
            return Ok(device.clone());
        }
        let device = Arc::new(CudaDevice::open(ordinal)?);
        devices.insert(ordinal, device.clone());
        Ok(device)
    }

    pub fn ordinal(&self) -> usize {
        self.context.ordinal()
    }

    /// Returns the GPU's product name, for example `NVIDIA H200`.
    pub fn name(&self) -> Result<String, CudaError> {
        self.context
            .name()
            .map_err(|source| driver_error("reading the device name", source))
    }

    /// Allocates `len` elements without initialising them, from a pooled block of the same
    /// byte size when one is free and from the driver otherwise. A `len` of 0 gets a block of
    /// one element, because the driver rejects allocations of zero bytes.
    ///
    /// Give the slice back with [`CudaDevice::recycle`] instead of dropping it, so that its
    /// block returns to the pool. A dropped slice frees its block to the driver.
    ///
    /// When the driver is out of memory, the pooled blocks are freed and the allocation is
    /// tried once more.
    ///
    /// NOTE: the pool's bookkeeping is unit-tested on the CPU (`pool.rs`), but the driver calls
    /// around it here and in [`CudaDevice::recycle`] have not run on a GPU yet.
    ///
    /// # Safety
    ///
    /// The caller must write every element (usually with a kernel submitted to the same
    /// stream) before anything reads it.
    pub unsafe fn alloc_uninit<T: DeviceRepr>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>, CudaError> {
        let bytes = block_bytes::<T>(len);
        let reused = self.lock_pool().take(bytes);
        let pointer = match reused {
            Some(pointer) => pointer,
            None => self.allocate_block(bytes)?,
        };
        // SAFETY: `pointer` is a live block of `bytes >= len * size_of::<T>()` bytes of this
        // context that nothing else owns: either fresh from the driver or taken out of the
        // pool, which a block enters only once its previous slice has been leaked. Work on it
        // goes to this handle's one stream, after the work queued by its previous owner. The
        // caller initialises the elements.
        Ok(unsafe { self.stream.upgrade_device_ptr(pointer, len) })
    }

    /// Allocates `len` zeroed elements like [`CudaDevice::alloc_uninit`]. The zero fill is
    /// queued, not awaited.
    pub fn alloc_zeros<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
    ) -> Result<CudaSlice<T>, CudaError> {
        // SAFETY: the zero fill below writes every element before anything can read them.
        let mut slice = unsafe { self.alloc_uninit::<T>(len) }?;
        self.zero(&mut slice)?;
        Ok(slice)
    }

    /// Returns the block of a slice from [`CudaDevice::alloc_uninit`] to the pool.
    ///
    /// Kernels queued on the stream may still use the block. That is safe because every later
    /// user of the block is queued on the same stream, after them.
    pub fn recycle<T>(&self, slice: CudaSlice<T>) {
        let bytes = block_bytes::<T>(slice.len());
        let pointer = slice.leak();
        self.lock_pool().give_back(bytes, pointer);
    }

    /// Returns the counters of the caching allocator: pooled bytes and blocks, bytes in use,
    /// and the number of driver allocations and of reuses so far.
    pub fn pool_stats(&self) -> PoolStats {
        self.lock_pool().stats()
    }

    /// Frees every pooled block to the driver and returns the number of bytes freed. Buffers
    /// in use are not affected.
    pub fn release_pooled(&self) -> Result<usize, CudaError> {
        let blocks = self.lock_pool().drain();
        if blocks.is_empty() {
            return Ok(0);
        }
        self.context
            .bind_to_thread()
            .map_err(|source| driver_error("binding the context to free pooled memory", source))?;
        if !self.context.has_async_alloc() {
            // A synchronous free does not wait for the stream, and queued kernels may still
            // use these blocks.
            self.synchronize()?;
        }
        let mut freed = 0;
        for (bytes, pointer) in blocks {
            // SAFETY: the block came from the driver through `allocate_block` and left the
            // pool just now, so nothing else frees it. A stream-ordered free runs after the
            // queued work, and a synchronous one follows the synchronisation above.
            let result = unsafe {
                if self.context.has_async_alloc() {
                    driver_result::free_async(pointer, self.stream.cu_stream())
                } else {
                    driver_result::free_sync(pointer)
                }
            };
            result
                .map_err(|source| driver_error(format!("freeing {bytes} pooled bytes"), source))?;
            freed += bytes;
        }
        Ok(freed)
    }

    /// Allocates a block of `bytes` bytes from the driver and counts it in the pool. When the
    /// driver is out of memory, frees the pooled blocks and tries once more.
    fn allocate_block(&self, bytes: usize) -> Result<CUdeviceptr, CudaError> {
        self.context
            .bind_to_thread()
            .map_err(|source| driver_error("binding the context to allocate", source))?;
        let allocate = || {
            // SAFETY: the context is bound to this thread and `bytes` is not zero. The block
            // is uninitialised, which `alloc_uninit` documents to its caller.
            unsafe {
                if self.context.has_async_alloc() {
                    driver_result::malloc_async(self.stream.cu_stream(), bytes)
                } else {
                    driver_result::malloc_sync(bytes)
                }
            }
        };
        let pointer = match allocate() {
            Ok(pointer) => pointer,
            Err(DriverError(CUresult::CUDA_ERROR_OUT_OF_MEMORY))
                if self.pool_stats().pooled_blocks > 0 =>
            {
                self.release_pooled()?;
                allocate()
                    .map_err(|source| driver_error(format!("allocating {bytes} bytes"), source))?
            }
            Err(source) => return Err(driver_error(format!("allocating {bytes} bytes"), source)),
        };
        self.lock_pool().record_fresh(bytes);
        Ok(pointer)
    }

    fn lock_pool(&self) -> std::sync::MutexGuard<'_, BlockPool<CUdeviceptr>> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a zero fill of `slice` on the stream.
    pub fn zero<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        slice: &mut impl DevicePtrMut<T>,
    ) -> Result<(), CudaError> {
        self.stream
            .memset_zeros(slice)
            .map_err(|source| driver_error("zeroing device memory", source))
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.context
    }

    /// Returns the stream that launchers submit to, which is the context's default stream.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Returns the (major, minor) compute capability, for example (9, 0) for an H100 or H200.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// Returns whether `SINGAN_CUDA_SYNC=1` was set when the device was opened.
    pub fn sync_after_launch(&self) -> bool {
        self.sync_after_launch
    }

    /// Returns the loaded module, loading it on the first call.
    pub fn module(&self, module: KernelModule) -> Result<Arc<CudaModule>, CudaError> {
        // Holding the lock while loading makes concurrent first calls load the module once.
        let mut modules = self.modules.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(loaded) = &modules[module.index()] {
            return Ok(loaded.clone());
        }
        let loaded = self.load_module(module)?;
        modules[module.index()] = Some(loaded.clone());
        Ok(loaded)
    }

    /// Loads every kernel module now, so that a compile or load error shows up at start-up.
    pub fn load_all_modules(&self) -> Result<(), CudaError> {
        for &module in KernelModule::ALL {
            self.module(module)?;
        }
        Ok(())
    }

    /// Returns the kernel `entry` of `module`, loading the module on first use. Functions are
    /// cached, so calling this once per launch is cheap.
    pub fn function(&self, module: KernelModule, entry: &str) -> Result<CudaFunction, CudaError> {
        let key = (module, entry.to_string());
        if let Some(function) = self
            .functions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(function.clone());
        }
        let not_found = || CudaError::EntryPointNotFound {
            module: module.name(),
            entry: entry.to_string(),
        };
        // cudarc panics on a name with an interior NUL byte, and no entry point has one.
        if entry.contains('\0') {
            return Err(not_found());
        }
        let function =
            self.module(module)?
                .load_function(entry)
                .map_err(|source| match source {
                    DriverError(CUresult::CUDA_ERROR_NOT_FOUND) => not_found(),
                    source => driver_error(
                        format!("looking up kernel {entry} in module {}", module.name()),
                        source,
                    ),
                })?;
        self.functions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, function.clone());
        Ok(function)
    }

    /// Checks the result of a kernel launch and, when `SINGAN_CUDA_SYNC=1`, waits for the
    /// kernel to finish so that its own errors are reported here under its name.
    ///
    /// Launchers call this right after `LaunchArgs::launch`, passing its result.
    pub fn after_launch<R>(
        &self,
        entry: &str,
        launched: Result<R, DriverError>,
    ) -> Result<(), CudaError> {
        launched.map_err(|source| driver_error(format!("launching kernel {entry}"), source))?;
        if self.sync_after_launch {
            self.stream
                .synchronize()
                .map_err(|source| CudaError::KernelFailed {
                    entry: entry.to_string(),
                    source,
                })?;
        }
        Ok(())
    }

    /// Waits for all work submitted to the stream.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream
            .synchronize()
            .map_err(|source| driver_error("synchronising the stream", source))
    }

    /// Loads `module`: the embedded PTX when its architecture runs on this device, otherwise a
    /// CUBIN that NVRTC compiles now for this device's compute capability.
    ///
    /// The CUBIN is also the fallback when the driver rejects the embedded PTX as too new,
    /// because a CUBIN needs no JIT step and so no driver newer than NVRTC.
    fn load_module(&self, module: KernelModule) -> Result<Arc<CudaModule>, CudaError> {
        let (major, minor) = self.compute_capability;
        if let (Some(ptx), Some(arch)) = (module.ptx(), PTX_ARCH) {
            if embedded_arch_runs_on(arch, major, minor) {
                match self.context.load_module(Ptx::from_src(ptx)) {
                    Ok(loaded) => return Ok(loaded),
                    Err(DriverError(CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION))
                        if nvrtc_available() => {}
                    Err(source) => {
                        return Err(CudaError::ModuleLoadFailed {
                            module: module.name(),
                            format: "PTX",
                            hint: ptx_load_hint(source),
                            source,
                        })
                    }
                }
            }
        }
        if !nvrtc_available() {
            return Err(CudaError::NvrtcNotFound);
        }
        let compiled = compile_module_cubin(module, &format!("sm_{major}{minor}"))?;
        self.context
            .load_module(Ptx::from_binary(compiled.cubin))
            .map_err(|source| CudaError::ModuleLoadFailed {
                module: module.name(),
                format: "CUBIN",
                hint: String::new(),
                source,
            })
    }
}

impl Drop for CudaDevice {
    /// Frees the pooled blocks. Every buffer holds the device handle, so by the time the handle
    /// drops, all blocks of its buffers are in the pool.
    fn drop(&mut self) {
        // A failure leaks the remaining blocks, which the driver reclaims with the context.
        let _ = self.release_pooled();
    }
}

/// Returns the byte size of the block that holds `len` elements of `T`: at least one element,
/// because the driver rejects allocations of zero bytes.
fn block_bytes<T>(len: usize) -> usize {
    len.max(1) * std::mem::size_of::<T>()
}

/// Explains a PTX load failure that only NVRTC at run time can work around.
fn ptx_load_hint(source: DriverError) -> String {
    if source.0 != CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION {
        return String::new();
    }
    let version = match PTX_NVRTC_VERSION {
        Some((major, minor)) => format!("NVRTC {major}.{minor}"),
        None => "NVRTC".to_string(),
    };
    format!(
        "; the driver is older than the {version} that produced the embedded PTX, so make the NVRTC library loadable (`source .ci/nvrtc-install`) to compile a CUBIN for this GPU instead"
    )
}

/// Returns whether PTX for the virtual architecture `arch` (`compute_XY`, optionally with a
/// one-letter suffix) can be JIT-compiled for a device of compute capability major.minor.
/// Plain PTX runs on the same or any newer capability. PTX with a suffix such as `90a` uses
/// architecture-specific features, so it runs only on exactly that capability.
fn embedded_arch_runs_on(arch: &str, major: i32, minor: i32) -> bool {
    let Some(digits) = arch.strip_prefix("compute_") else {
        return false;
    };
    let number_len = digits.chars().take_while(char::is_ascii_digit).count();
    let Ok(arch_number) = digits[..number_len].parse::<i32>() else {
        return false;
    };
    let device_number = major * 10 + minor;
    if number_len == digits.len() {
        arch_number <= device_number
    } else {
        arch_number == device_number
    }
}

/// Makes the device's default memory pool keep freed memory instead of returning it to the
/// driver at every synchronisation, so the stream-ordered allocations of each training step
/// reuse the blocks of the previous one.
fn keep_freed_memory_in_pool(context: &CudaContext) -> Result<(), CudaError> {
    use cudarc::driver::result::{device, mem_pool};
    use cudarc::driver::sys::CUmemPool_attribute;

    // SAFETY: `cu_device` comes from a live context, so it is a valid device handle.
    let pool = unsafe { device::get_default_mem_pool(context.cu_device()) }
        .map_err(|source| driver_error("reading the default memory pool", source))?;
    let mut threshold = u64::MAX;
    // SAFETY: the pool was just returned by the driver, and the release threshold attribute
    // takes a pointer to a cuuint64_t, which `threshold` is.
    unsafe {
        mem_pool::set_attribute(
            pool,
            CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
    }
    .map_err(|source| driver_error("setting the memory pool release threshold", source))
}

pub(crate) fn driver_error(action: impl Into<String>, source: DriverError) -> CudaError {
    CudaError::Driver {
        action: action.into(),
        source,
    }
}

#[cfg(test)]
mod arch_tests {
    use super::embedded_arch_runs_on;

    #[test]
    fn plain_ptx_runs_on_same_or_newer_devices() {
        assert!(embedded_arch_runs_on("compute_80", 8, 0));
        assert!(embedded_arch_runs_on("compute_80", 8, 6));
        assert!(embedded_arch_runs_on("compute_80", 9, 0));
        assert!(!embedded_arch_runs_on("compute_80", 7, 5));
        assert!(!embedded_arch_runs_on("compute_90", 8, 9));
    }

    #[test]
    fn suffixed_ptx_runs_only_on_its_own_capability() {
        assert!(embedded_arch_runs_on("compute_90a", 9, 0));
        assert!(!embedded_arch_runs_on("compute_90a", 10, 0));
    }

    #[test]
    fn malformed_arch_never_matches() {
        assert!(!embedded_arch_runs_on("sm_80", 9, 0));
        assert!(!embedded_arch_runs_on("compute_", 9, 0));
    }
}
