//! Launchers of the forward resize kernels in kernels/resize.cu, and the cache of the weight
//! tables they read.
//!
//! A table is uploaded the first time its size pair is resized on a device and kept for the
//! life of the process, so repeated resizes between the same sizes copy nothing from the host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use cudarc::driver::{CudaSlice, PushKernelArg};

use crate::cuda::launch::{count_arg, grid_stride, int_arg, kernel};
use crate::cuda::params::ResizeParams;
use crate::cuda::{CudaBuffer, CudaDevice, CudaError, KernelModule, Pass};
use crate::element::Element;
use crate::error::{Error, Result};
use crate::singan::imresize::{ResizePath, ResizePlan, WeightTable};

const OP: &str = "resize";

/// One axis's tap table in GPU memory: source indices and f64 weights, `taps` per output.
struct DeviceTable {
    indices: CudaSlice<i32>,
    weights: CudaSlice<f64>,
    taps: usize,
}

/// Identifies a table: the device ordinal, the resize path and the axis lengths. A table is a
/// pure function of the path and the lengths.
type TableKey = (usize, ResizePath, usize, usize);

/// Returns the table of `table` on `device`, uploading it on first use.
fn device_table(
    device: &Arc<CudaDevice>,
    path: ResizePath,
    table: &WeightTable,
) -> Result<Arc<DeviceTable>> {
    static TABLES: OnceLock<Mutex<HashMap<TableKey, Arc<DeviceTable>>>> = OnceLock::new();
    let key = (device.ordinal(), path, table.in_len, table.out_len);
    let mut tables = TABLES
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(uploaded) = tables.get(&key) {
        return Ok(uploaded.clone());
    }
    let indices = table
        .indices
        .iter()
        .map(|&index| int_arg(OP, "a source index", index))
        .collect::<Result<Vec<i32>>>()?;
    let upload_failed = |source| {
        Error::Cuda(CudaError::Driver {
            action: format!(
                "copying the {} to {} resize table to the GPU",
                table.in_len, table.out_len
            ),
            source,
        })
    };
    let stream = device.stream();
    let uploaded = Arc::new(DeviceTable {
        indices: stream.clone_htod(&indices).map_err(upload_failed)?,
        weights: stream.clone_htod(&table.weights).map_err(upload_failed)?,
        taps: table.taps,
    });
    tables.insert(key, uploaded.clone());
    Ok(uploaded)
}

/// Resizes the `planes` planes of `x` with `plan` and keeps the top-left `size` window: the
/// height pass into an f64 buffer, then the width pass into the output.
pub(crate) fn resize_cropped<T: Element>(
    x: &CudaBuffer<T>,
    planes: usize,
    plan: &ResizePlan,
    size: (usize, usize),
) -> Result<CudaBuffer<T>> {
    let device = x.device();
    let (out_h, out_w) = size;
    let (in_h, in_w) = (plan.in_height, plan.in_width);
    let between_numel = planes * out_h * in_w;
    let out_numel = planes * out_h * out_w;
    // SAFETY: each pass below writes every element of its output; empty buffers are not read.
    let mut between = unsafe { CudaBuffer::<f64>::uninit(device, between_numel) }?;
    let mut y = unsafe { CudaBuffer::<T>::uninit(device, out_numel) }?;
    if out_numel == 0 {
        return Ok(y);
    }
    let rows = device_table(device, plan.path, &plan.rows)?;
    let cols = device_table(device, plan.path, &plan.cols)?;

    let height_pass = ResizeParams {
        planes: int_arg(OP, "N * C", planes)?,
        h_in: int_arg(OP, "H", in_h)?,
        w_in: int_arg(OP, "W", in_w)?,
        h_out: int_arg(OP, "the output height", out_h)?,
        w_out: int_arg(OP, "W", in_w)?,
        taps: int_arg(OP, "the taps per output row", rows.taps)?,
    };
    // x has planes * in_h * in_w elements, and the row table has at least out_h rows with
    // indices below in_h.
    launch_pass::<T, T, f64>(
        device,
        "resize_h",
        &height_pass,
        x.slice(),
        &rows,
        between.slice_mut(),
        between_numel,
    )?;

    let width_pass = ResizeParams {
        planes: height_pass.planes,
        h_in: height_pass.h_out,
        w_in: height_pass.w_in,
        h_out: height_pass.h_out,
        w_out: int_arg(OP, "the output width", out_w)?,
        taps: int_arg(OP, "the taps per output column", cols.taps)?,
    };
    // `between` has planes * out_h * in_w elements, and the column table has at least out_w
    // rows with indices below in_w.
    launch_pass::<T, f64, T>(
        device,
        "resize_w",
        &width_pass,
        between.slice(),
        &cols,
        y.slice_mut(),
        out_numel,
    )?;
    Ok(y)
}

/// Queues the forward kernel `<op>_fwd_<T>(ResizeParams, const In* x, const int* src_index,
/// const double* weight, Out* y, long long count)` over the `count` elements of `y`.
///
/// The caller guarantees that `x` and `table` cover every element the kernel reads for
/// `params` (see the signatures in kernels/resize.cu), that `y` has `count` elements, and that
/// `In` and `Out` are the element types of that entry point.
fn launch_pass<T: Element, In, Out>(
    device: &Arc<CudaDevice>,
    op: &str,
    params: &ResizeParams,
    x: &CudaSlice<In>,
    table: &DeviceTable,
    y: &mut CudaSlice<Out>,
    count: usize,
) -> Result<()> {
    let (function, entry) = kernel::<T>(device, KernelModule::Resize, op, Some(Pass::Forward))?;
    let count_value = count_arg(count);
    let mut launch = device.stream().launch_builder(&function);
    launch
        .arg(params) // ResizeParams p
        .arg(x) // const In* x
        .arg(&table.indices) // const int* src_index
        .arg(&table.weights) // const double* weight
        .arg(y) // Out* y
        .arg(&count_value); // long long out_numel

    // Grid-stride loop over the output elements: grid = ceil(count / 256) blocks (capped),
    // block = 256, no dynamic shared memory.
    // SAFETY: the arguments match the entry point's signature, and the caller guarantees the
    // sizes and element types (see above). y is borrowed mutably, so it aliases no input.
    let launched = unsafe { launch.launch(grid_stride(count)) };
    device.after_launch(&entry, launched)?;
    Ok(())
}
