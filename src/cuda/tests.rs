//! Tests of the kernel modules: NVRTC compilation, entry-point names, parameter-struct layout,
//! and, on machines with a GPU, numeric checks of the kernels with the most index arithmetic.
//!
//! Tests that need NVRTC print `skipped: NVRTC library not found` and pass when the library
//! cannot be loaded, and GPU tests print `skipped: no CUDA device` likewise.

use std::collections::BTreeSet;

use super::params::*;
use super::*;

const NVRTC_SKIP: &str = "skipped: NVRTC library not found";

/// Entry-point operations of the kernel modules, by module name. Each operation is stamped as
/// `<op>_f32` and `<op>_f64`. kernels/random.cu is not listed because it is maintained
/// separately, so only the naming checks cover it.
const EXPECTED_OPS: &[(&str, &[&str])] = &[
    (
        "activation",
        &[
            "leaky_relu_fwd",
            "leaky_relu_bwd",
            "tanh_fwd",
            "tanh_bwd",
            "softplus_fwd",
            "softplus_bwd",
            "sigmoid_fwd",
            "sigmoid_bwd",
        ],
    ),
    ("adam", &["adam_update"]),
    (
        "batchnorm",
        &[
            "batchnorm_stats_fwd",
            "batchnorm_fwd",
            "batchnorm_inference_fwd",
            "batchnorm_running_update",
            "batchnorm_bwd",
            "channel_sum",
            "channel_sum_prod2",
            "channel_sum_prod3",
        ],
    ),
    (
        "conv2d",
        &[
            "conv2d_fwd",
            "conv2d_input_bwd",
            "conv2d_weight_bwd",
            "conv2d_weight_reduce_bwd",
            "bias_add_fwd",
            "bias_add_bwd",
        ],
    ),
    (
        "elementwise",
        &[
            "add_fwd",
            "sub_fwd",
            "mul_fwd",
            "div_fwd",
            "scalar_add_fwd",
            "scalar_mul_fwd",
            "square_fwd",
            "square_bwd",
            "sqrt_fwd",
            "sqrt_bwd",
            "safe_recip_fwd",
            "safe_recip_bwd",
            "fill",
            "copy",
            "axpy",
        ],
    ),
    (
        "reduce",
        &[
            "sum_all_partial",
            "sum_all_final",
            "sum_all_bwd",
            "sum_to_shape_fwd",
            "sum_to_shape_bwd",
            "channel_norm_fwd",
            "channel_norm_bwd",
        ],
    ),
    (
        "resize",
        &[
            "resize_h_fwd",
            "resize_w_fwd",
            "resize_h_bwd",
            "resize_w_bwd",
        ],
    ),
    (
        "shape",
        &[
            "pad2d_fwd",
            "pad2d_bwd",
            "crop2d_fwd",
            "crop2d_bwd",
            "broadcast_to_fwd",
            "broadcast_to_bwd",
        ],
    ),
];

fn find_module(name: &str) -> KernelModule {
    KernelModule::ALL
        .iter()
        .copied()
        .find(|module| module.name() == name)
        .unwrap_or_else(|| panic!("kernel module {name} not found in KernelModule::ALL"))
}

/// Compiles every module for the default architecture, or returns None without NVRTC.
fn compile_default() -> Option<KernelReport> {
    if !nvrtc_available() {
        println!("{NVRTC_SKIP}");
        return None;
    }
    Some(compile_all_kernels(DEFAULT_PTX_ARCH).unwrap_or_else(|error| panic!("{error}")))
}

#[test]
fn entry_name_formats_passes_and_dtypes() {
    assert_eq!(
        entry_name("conv2d", Some(Pass::Forward), KernelDtype::F32),
        "conv2d_fwd_f32"
    );
    assert_eq!(
        entry_name("conv2d_input", Some(Pass::Backward), KernelDtype::F64),
        "conv2d_input_bwd_f64"
    );
    assert_eq!(
        entry_name("adam_update", None, KernelDtype::F32),
        "adam_update_f32"
    );
}

#[test]
fn normalize_arch_accepts_compute_and_sm() {
    assert_eq!(
        nvrtc_compile::normalize_arch("compute_80").unwrap(),
        "compute_80"
    );
    assert_eq!(
        nvrtc_compile::normalize_arch(" sm_90 ").unwrap(),
        "compute_90"
    );
    assert_eq!(
        nvrtc_compile::normalize_arch("compute_90a").unwrap(),
        "compute_90a"
    );
    assert_eq!(
        nvrtc_compile::normalize_arch("sm_120").unwrap(),
        "compute_120"
    );
}

#[test]
fn normalize_arch_rejects_malformed_values() {
    for value in [
        "",
        "80",
        "compute_",
        "compute_8",
        "sm_80ab",
        "compute_80A",
        "gfx90a",
    ] {
        assert!(
            nvrtc_compile::normalize_arch(value).is_err(),
            "{value:?} was accepted"
        );
    }
}

#[test]
fn compile_all_kernels_rejects_invalid_arch() {
    let error = compile_all_kernels("turing").unwrap_err();
    assert!(
        matches!(error, CudaError::InvalidArch { .. }),
        "unexpected error: {error}"
    );
}

#[test]
fn compile_all_kernels_without_nvrtc_reports_install_steps() {
    if nvrtc_available() {
        println!("skipped: NVRTC library found, so the missing-library error cannot occur");
        return;
    }
    let error = compile_all_kernels(DEFAULT_PTX_ARCH).unwrap_err();
    assert!(
        matches!(error, CudaError::NvrtcNotFound),
        "unexpected error: {error}"
    );
}

#[test]
fn missing_nvrtc_message_says_how_to_install() {
    let message = CudaError::NvrtcNotFound.to_string();
    assert!(
        message.contains("pip install nvidia-cuda-nvrtc"),
        "{message}"
    );
    assert!(message.contains("nvidia/cu13/lib"), "{message}");
    assert!(message.contains("LD_LIBRARY_PATH"), "{message}");
}

#[test]
fn ptx_entry_points_reads_entry_directives() {
    let ptx = ".version 9.0\n.visible .entry add_fwd_f32(\n\t.param .u64 a\n)\n.entry fill_f64 (\n";
    assert_eq!(
        ptx_entry_points(ptx),
        vec!["add_fwd_f32".to_string(), "fill_f64".to_string()]
    );
}

#[test]
fn module_enum_lists_every_kernel_file() {
    let names: Vec<&str> = KernelModule::ALL
        .iter()
        .map(|module| module.name())
        .collect();
    for (name, _) in EXPECTED_OPS {
        assert!(
            names.contains(name),
            "kernels/{name}.cu missing from KernelModule::ALL {names:?}"
        );
    }
    for (position, module) in KernelModule::ALL.iter().enumerate() {
        assert_eq!(module.index(), position, "index of {}", module.name());
        assert!(
            module.source().contains("extern \"C\""),
            "{} has no entry points",
            module.name()
        );
    }
}

#[test]
fn every_module_compiles_with_entry_points() {
    let Some(report) = compile_default() else {
        return;
    };
    assert_eq!(report.arch, DEFAULT_PTX_ARCH);
    assert_eq!(report.modules.len(), KernelModule::ALL.len());
    for module in &report.modules {
        assert!(
            module.entry_point_count > 0,
            "module {} has no entry points",
            module.name
        );
        assert_eq!(
            module.entry_point_count,
            module.entry_points.len(),
            "module {}",
            module.name
        );
    }
}

#[test]
fn every_module_compiles_to_cubin() {
    if !nvrtc_available() {
        println!("{NVRTC_SKIP}");
        return;
    }
    // The CUBIN path is what CudaDevice uses when the embedded PTX cannot be loaded.
    for &module in KernelModule::ALL {
        let compiled =
            compile_module_cubin(module, "sm_90").unwrap_or_else(|error| panic!("{error}"));
        assert!(
            !compiled.cubin.is_empty(),
            "module {} gave an empty CUBIN",
            module.name()
        );
    }
}

#[test]
fn modules_define_expected_entry_points() {
    let Some(report) = compile_default() else {
        return;
    };
    for (name, ops) in EXPECTED_OPS {
        let module = report
            .modules
            .iter()
            .find(|module| module.name == *name)
            .unwrap_or_else(|| panic!("module {name} not compiled"));
        let found: BTreeSet<&str> = module.entry_points.iter().map(String::as_str).collect();
        let expected: BTreeSet<String> = ops
            .iter()
            .flat_map(|op| [format!("{op}_f32"), format!("{op}_f64")])
            .collect();
        let expected: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
        assert_eq!(found, expected, "entry points of module {name}");
    }
}

#[test]
fn entry_points_follow_naming_scheme() {
    let Some(report) = compile_default() else {
        return;
    };
    for module in &report.modules {
        let names: BTreeSet<&str> = module.entry_points.iter().map(String::as_str).collect();
        for name in &names {
            let (op, other_dtype) = if let Some(op) = name.strip_suffix("_f32") {
                (op, format!("{op}_f64"))
            } else if let Some(op) = name.strip_suffix("_f64") {
                (op, format!("{op}_f32"))
            } else {
                panic!(
                    "entry point {name} of module {} lacks an _f32/_f64 suffix",
                    module.name
                );
            };
            assert!(
                !op.is_empty(),
                "entry point {name} of module {} has no operation name",
                module.name
            );
            assert!(
                names.contains(other_dtype.as_str()),
                "entry point {name} of module {} has no {other_dtype} counterpart",
                module.name
            );
        }
    }
}

#[test]
fn embedded_ptx_matches_fresh_compilation() {
    let Some(arch) = PTX_ARCH else {
        println!("skipped: the build embedded no PTX because NVRTC was not found");
        return;
    };
    if !nvrtc_available() {
        println!("{NVRTC_SKIP}");
        return;
    }
    let report = compile_all_kernels(arch).unwrap_or_else(|error| panic!("{error}"));
    for (module, fresh) in KernelModule::ALL.iter().zip(&report.modules) {
        let embedded = module.ptx().unwrap_or_else(|| {
            panic!(
                "module {} has no embedded PTX although PTX_ARCH is set",
                module.name()
            )
        });
        assert_eq!(
            ptx_entry_points(embedded),
            fresh.entry_points,
            "module {}",
            module.name()
        );
    }
}

/// Layout of a C struct: (field name, byte offset) in order, and the total size.
fn c_struct_layout(source: &str, struct_name: &str) -> (Vec<(String, usize)>, usize) {
    let header = format!("struct {struct_name} {{");
    let start = source
        .find(&header)
        .unwrap_or_else(|| panic!("struct {struct_name} not found"))
        + header.len();
    let end = start
        + source[start..]
            .find("};")
            .expect("struct definition ends with `};`");
    let mut fields = Vec::new();
    let mut offset = 0usize;
    let mut alignment = 1usize;
    for line in source[start..end].lines() {
        let line = line.split("//").next().unwrap().trim();
        if line.is_empty() {
            continue;
        }
        let declaration = line
            .strip_suffix(';')
            .unwrap_or_else(|| panic!("unexpected line {line:?} in {struct_name}"));
        let (c_type, declarator) = declaration
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("unexpected field {declaration:?} in {struct_name}"));
        let size = match c_type.trim() {
            "int" => 4,
            "long long" => 8,
            other => panic!("unexpected field type {other:?} in {struct_name}"),
        };
        let (name, count) = match declarator.split_once('[') {
            Some((name, rest)) => (
                name,
                rest.trim_end_matches(']')
                    .parse::<usize>()
                    .expect("array length"),
            ),
            None => (declarator, 1),
        };
        offset = offset.next_multiple_of(size);
        alignment = alignment.max(size);
        fields.push((name.to_string(), offset));
        offset += size * count;
    }
    (fields, offset.next_multiple_of(alignment))
}

macro_rules! rust_layout {
    ($type:ty, [$($field:ident),* $(,)?]) => {
        (
            vec![$((stringify!($field).to_string(), std::mem::offset_of!($type, $field))),*],
            std::mem::size_of::<$type>(),
        )
    };
}

#[test]
fn params_structs_match_kernel_sources() {
    let cases = [
        (
            "Conv2dParams",
            &["conv2d"][..],
            rust_layout!(
                Conv2dParams,
                [n, c_in, c_out, h_in, w_in, h_out, w_out, k_h, k_w, padding]
            ),
        ),
        (
            "ChannelShape",
            &["conv2d", "batchnorm", "reduce"][..],
            rust_layout!(ChannelShape, [n, c, hw]),
        ),
        (
            "BinaryBroadcastParams",
            &["elementwise"][..],
            rust_layout!(BinaryBroadcastParams, [out_shape, lhs_strides, rhs_strides]),
        ),
        (
            "BroadcastShapes",
            &["reduce", "shape"][..],
            rust_layout!(BroadcastShapes, [full_shape, reduced_shape]),
        ),
        (
            "Pad2dParams",
            &["shape"][..],
            rust_layout!(Pad2dParams, [n, c, h_in, w_in, top, bottom, left, right]),
        ),
        (
            "Crop2dParams",
            &["shape"][..],
            rust_layout!(Crop2dParams, [n, c, h_in, w_in, top, left, h_out, w_out]),
        ),
        (
            "ResizeParams",
            &["resize"][..],
            rust_layout!(ResizeParams, [planes, h_in, w_in, h_out, w_out, taps]),
        ),
    ];
    for (struct_name, modules, rust) in cases {
        for module in modules {
            let c = c_struct_layout(find_module(module).source(), struct_name);
            assert_eq!(
                c, rust,
                "layout of {struct_name} in kernels/{module}.cu vs src/cuda/params.rs"
            );
        }
    }
}

#[test]
fn device_open_reports_missing_driver_or_gpu() {
    match CudaDevice::open(0) {
        Ok(device) => {
            device
                .load_all_modules()
                .unwrap_or_else(|error| panic!("{error}"));
            let error = device
                .function(find_module("adam"), "no_such_kernel_f32")
                .unwrap_err();
            assert!(
                matches!(error, CudaError::EntryPointNotFound { .. }),
                "unexpected error: {error}"
            );
        }
        Err(CudaError::DriverNotFound) => assert!(!driver_available()),
        Err(CudaError::DeviceNotFound { ordinal, .. }) => assert_eq!(ordinal, 0),
        Err(error) => panic!("unexpected error opening device 0: {error}"),
    }
}

/// Numeric checks that launch kernels, which need a GPU and skip without one.
mod gpu {
    use std::sync::Arc;

    use cudarc::driver::{CudaSlice, CudaStream, LaunchArgs, PushKernelArg};

    use super::*;

    const TOLERANCE: f64 = 1e-10;

    fn open_device() -> Option<CudaDevice> {
        match CudaDevice::open(0) {
            Ok(device) => Some(device),
            Err(error @ (CudaError::DriverNotFound | CudaError::DeviceNotFound { .. })) => {
                println!("skipped: no CUDA device ({error})");
                None
            }
            Err(error) => panic!("opening device 0 failed: {error}"),
        }
    }

    /// Deterministic test values in [-1, 1).
    fn test_values(len: usize, seed: u64) -> Vec<f64> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect()
    }

    fn upload(stream: &Arc<CudaStream>, values: &[f64]) -> CudaSlice<f64> {
        stream.clone_htod(values).expect("copy to device")
    }

    fn download(device: &CudaDevice, values: &CudaSlice<f64>) -> Vec<f64> {
        device.synchronize().expect("synchronise");
        device.stream().clone_dtoh(values).expect("copy to host")
    }

    fn assert_close(actual: &[f64], expected: &[f64], what: &str) {
        assert_eq!(actual.len(), expected.len(), "{what}: length");
        for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert!(
                (a - e).abs() <= TOLERANCE * (1.0 + e.abs()),
                "{what}[{i}]: got {a}, expected {e}"
            );
        }
    }

    fn blocks(count: usize, block: usize) -> u32 {
        u32::try_from(count.div_ceil(block).max(1)).expect("grid fits in u32")
    }

    /// Launches the kernel and fails the test if the launch or, with `SINGAN_CUDA_SYNC=1`, the
    /// kernel itself fails.
    fn run_launch(
        device: &CudaDevice,
        entry: &str,
        launch: &mut LaunchArgs<'_>,
        cfg: LaunchConfig,
    ) {
        // SAFETY: every caller pushes the arguments in the order and with the types that the
        // kernel file documents, and sizes each buffer for the launch's element counts.
        let launched = unsafe { launch.launch(cfg) };
        device
            .after_launch(entry, launched)
            .unwrap_or_else(|error| panic!("{error}"));
    }

    fn config(grid: (u32, u32, u32), block: u32) -> LaunchConfig {
        LaunchConfig {
            grid_dim: grid,
            block_dim: (block, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    struct ConvCase {
        p: Conv2dParams,
        weight_splits: u32,
    }

    #[allow(clippy::too_many_arguments)]
    fn conv_case(
        n: i32,
        c_in: i32,
        c_out: i32,
        h_in: i32,
        w_in: i32,
        k_h: i32,
        k_w: i32,
        padding: i32,
        splits: u32,
    ) -> ConvCase {
        ConvCase {
            p: Conv2dParams {
                n,
                c_in,
                c_out,
                h_in,
                w_in,
                h_out: h_in + 2 * padding - k_h + 1,
                w_out: w_in + 2 * padding - k_w + 1,
                k_h,
                k_w,
                padding,
            },
            weight_splits: splits,
        }
    }

    /// Calls `visit(x_index, weight_index, y_index)` for every product term of the convolution.
    fn for_each_conv_term(p: &Conv2dParams, mut visit: impl FnMut(usize, usize, usize)) {
        for n in 0..p.n {
            for co in 0..p.c_out {
                for oy in 0..p.h_out {
                    for ox in 0..p.w_out {
                        let y_index = (((n * p.c_out + co) * p.h_out + oy) * p.w_out + ox) as usize;
                        for ci in 0..p.c_in {
                            for ky in 0..p.k_h {
                                for kx in 0..p.k_w {
                                    let iy = oy + ky - p.padding;
                                    let ix = ox + kx - p.padding;
                                    if iy < 0 || iy >= p.h_in || ix < 0 || ix >= p.w_in {
                                        continue;
                                    }
                                    let x_index =
                                        (((n * p.c_in + ci) * p.h_in + iy) * p.w_in + ix) as usize;
                                    let w_index =
                                        (((co * p.c_in + ci) * p.k_h + ky) * p.k_w + kx) as usize;
                                    visit(x_index, w_index, y_index);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn run_conv_case(device: &CudaDevice, case: &ConvCase) {
        let p = case.p;
        let stream = device.stream();
        let x_len = (p.n * p.c_in * p.h_in * p.w_in) as usize;
        let y_len = (p.n * p.c_out * p.h_out * p.w_out) as usize;
        let w_len = (p.c_out * p.c_in * p.k_h * p.k_w) as usize;
        let x = test_values(x_len, 1);
        let w = test_values(w_len, 2);
        let bias = test_values(p.c_out as usize, 3);
        let grad_y = test_values(y_len, 4);

        let mut y_expected: Vec<f64> = (0..y_len)
            .map(|i| bias[(i / (p.h_out * p.w_out) as usize) % p.c_out as usize])
            .collect();
        // Gradients start at 1 to check that the backward kernels accumulate.
        let mut grad_x_expected = vec![1.0; x_len];
        let mut grad_w_expected = vec![1.0; w_len];
        for_each_conv_term(&p, |xi, wi, yi| {
            y_expected[yi] += w[wi] * x[xi];
            grad_x_expected[xi] += w[wi] * grad_y[yi];
            grad_w_expected[wi] += x[xi] * grad_y[yi];
        });

        let x_dev = upload(stream, &x);
        let w_dev = upload(stream, &w);
        let bias_dev = upload(stream, &bias);
        let grad_y_dev = upload(stream, &grad_y);
        let mut y_dev = stream.alloc_zeros::<f64>(y_len).unwrap();
        let mut grad_x_dev = upload(stream, &vec![1.0; x_len]);
        let mut grad_w_dev = upload(stream, &vec![1.0; w_len]);
        let mut partials_dev = stream
            .alloc_zeros::<f64>(w_len * case.weight_splits as usize)
            .unwrap();

        let out_pixels = (p.n * p.h_out * p.w_out) as usize;
        let in_pixels = (p.n * p.h_in * p.w_in) as usize;
        let weight_cols = (p.c_in * p.k_h * p.k_w) as usize;

        let forward = device
            .function(find_module("conv2d"), "conv2d_fwd_f64")
            .unwrap();
        let mut launch = stream.launch_builder(&forward);
        launch
            .arg(&p)
            .arg(&x_dev)
            .arg(&w_dev)
            .arg(&bias_dev)
            .arg(&mut y_dev);
        let cfg = config(
            (blocks(out_pixels, 64), blocks(p.c_out as usize, 32), 1),
            128,
        );
        run_launch(device, "conv2d_fwd_f64", &mut launch, cfg);

        let input_bwd = device
            .function(find_module("conv2d"), "conv2d_input_bwd_f64")
            .unwrap();
        let mut launch = stream.launch_builder(&input_bwd);
        launch
            .arg(&p)
            .arg(&grad_y_dev)
            .arg(&w_dev)
            .arg(&mut grad_x_dev);
        let cfg = config((blocks(in_pixels, 64), blocks(p.c_in as usize, 32), 1), 128);
        run_launch(device, "conv2d_input_bwd_f64", &mut launch, cfg);

        let weight_bwd = device
            .function(find_module("conv2d"), "conv2d_weight_bwd_f64")
            .unwrap();
        let mut launch = stream.launch_builder(&weight_bwd);
        launch
            .arg(&p)
            .arg(&grad_y_dev)
            .arg(&x_dev)
            .arg(&mut partials_dev);
        let cfg = config(
            (
                blocks(weight_cols, 64),
                blocks(p.c_out as usize, 32),
                case.weight_splits,
            ),
            128,
        );
        run_launch(device, "conv2d_weight_bwd_f64", &mut launch, cfg);

        let reduce = device
            .function(find_module("conv2d"), "conv2d_weight_reduce_bwd_f64")
            .unwrap();
        let splits = case.weight_splits as i32;
        let weight_numel = w_len as i64;
        let mut launch = stream.launch_builder(&reduce);
        launch
            .arg(&partials_dev)
            .arg(&mut grad_w_dev)
            .arg(&splits)
            .arg(&weight_numel);
        let cfg = config((blocks(w_len, 256), 1, 1), 256);
        run_launch(device, "conv2d_weight_reduce_bwd_f64", &mut launch, cfg);

        let label = format!("{p:?}");
        assert_close(
            &download(device, &y_dev),
            &y_expected,
            &format!("forward {label}"),
        );
        assert_close(
            &download(device, &grad_x_dev),
            &grad_x_expected,
            &format!("input gradient {label}"),
        );
        assert_close(
            &download(device, &grad_w_dev),
            &grad_w_expected,
            &format!("weight gradient {label}"),
        );
    }

    #[test]
    fn conv2d_matches_cpu_reference() {
        let Some(device) = open_device() else { return };
        let cases = [
            // Several tiles in every GEMM dimension, and a split past the last pixel.
            conv_case(2, 8, 33, 7, 9, 3, 3, 1, 5),
            // Negative padding crops the input.
            conv_case(1, 3, 5, 8, 6, 3, 3, -1, 1),
            // Non-square kernel, padding wider than the kernel, a single input channel.
            conv_case(3, 1, 2, 5, 4, 3, 2, 2, 2),
        ];
        for case in &cases {
            run_conv_case(&device, case);
        }
    }

    #[test]
    fn sum_all_is_exact_and_repeatable() {
        let Some(device) = open_device() else { return };
        let stream = device.stream();
        let numel = 100_003usize;
        let values = test_values(numel, 7);
        let x_dev = upload(stream, &values);

        // Grid size from numel only, as reduce.cu requires for repeatable sums.
        let grid = blocks(numel, 2048).min(1024);
        let mut partials = stream.alloc_zeros::<f64>(grid as usize).unwrap();
        let partial = device
            .function(find_module("reduce"), "sum_all_partial_f64")
            .unwrap();
        let last = device
            .function(find_module("reduce"), "sum_all_final_f64")
            .unwrap();

        let mut results = Vec::new();
        for _ in 0..2 {
            let mut out = stream.alloc_zeros::<f64>(1).unwrap();
            let numel_arg = numel as i64;
            let mut launch = stream.launch_builder(&partial);
            launch.arg(&x_dev).arg(&mut partials).arg(&numel_arg);
            run_launch(
                &device,
                "sum_all_partial_f64",
                &mut launch,
                config((grid, 1, 1), 256),
            );

            let scale = 1.0f64;
            let count = grid as i64;
            let mut launch = stream.launch_builder(&last);
            launch.arg(&partials).arg(&mut out).arg(&scale).arg(&count);
            run_launch(
                &device,
                "sum_all_final_f64",
                &mut launch,
                config((1, 1, 1), 256),
            );
            results.push(download(&device, &out)[0]);
        }

        let expected: f64 = values.iter().sum();
        assert_close(&results[..1], &[expected], "sum_all");
        assert_eq!(
            results[0].to_bits(),
            results[1].to_bits(),
            "sum_all differs between runs"
        );
    }

    #[test]
    fn sum_to_shape_and_its_backward_match_cpu() {
        let Some(device) = open_device() else { return };
        let stream = device.stream();
        let full = [2i64, 3, 5, 7];
        let reduced = [1i64, 3, 1, 7];
        let shapes = BroadcastShapes {
            full_shape: full,
            reduced_shape: reduced,
        };
        let full_numel = full.iter().product::<i64>() as usize;
        let reduced_numel = reduced.iter().product::<i64>() as usize;
        let x = test_values(full_numel, 11);
        let grad_out = test_values(reduced_numel, 12);

        // Reduced index of full element (a, b, c, d) is (b, d) here.
        let reduced_index = |i: usize| {
            let d = i % 7;
            let b = (i / (7 * 5)) % 3;
            b * 7 + d
        };
        let mut sums = vec![0.0; reduced_numel];
        let mut grad_x_expected = vec![1.0; full_numel];
        for i in 0..full_numel {
            sums[reduced_index(i)] += x[i];
            grad_x_expected[i] += grad_out[reduced_index(i)];
        }

        let x_dev = upload(stream, &x);
        let grad_out_dev = upload(stream, &grad_out);
        let mut out_dev = stream.alloc_zeros::<f64>(reduced_numel).unwrap();
        let mut grad_x_dev = upload(stream, &vec![1.0; full_numel]);

        let forward = device
            .function(find_module("reduce"), "sum_to_shape_fwd_f64")
            .unwrap();
        let out_numel = reduced_numel as i64;
        let mut launch = stream.launch_builder(&forward);
        launch
            .arg(&shapes)
            .arg(&x_dev)
            .arg(&mut out_dev)
            .arg(&out_numel);
        run_launch(
            &device,
            "sum_to_shape_fwd_f64",
            &mut launch,
            config((reduced_numel as u32, 1, 1), 32),
        );

        let backward = device
            .function(find_module("reduce"), "sum_to_shape_bwd_f64")
            .unwrap();
        let full_numel_arg = full_numel as i64;
        let mut launch = stream.launch_builder(&backward);
        launch
            .arg(&shapes)
            .arg(&grad_out_dev)
            .arg(&mut grad_x_dev)
            .arg(&full_numel_arg);
        run_launch(
            &device,
            "sum_to_shape_bwd_f64",
            &mut launch,
            config((blocks(full_numel, 256), 1, 1), 256),
        );

        assert_close(&download(&device, &out_dev), &sums, "sum_to_shape forward");
        assert_close(
            &download(&device, &grad_x_dev),
            &grad_x_expected,
            "sum_to_shape backward",
        );
    }

    #[test]
    fn broadcast_mul_matches_cpu() {
        let Some(device) = open_device() else { return };
        let stream = device.stream();
        // (2, 3, 4, 5) * (1, 3, 1, 1): a per-channel scale.
        let lhs = test_values(120, 21);
        let rhs = test_values(3, 22);
        let params = BinaryBroadcastParams {
            out_shape: [2, 3, 4, 5],
            lhs_strides: [60, 20, 5, 1],
            rhs_strides: [0, 1, 0, 0],
        };
        let expected: Vec<f64> = (0..120).map(|i| lhs[i] * rhs[(i / 20) % 3]).collect();

        let lhs_dev = upload(stream, &lhs);
        let rhs_dev = upload(stream, &rhs);
        let mut out_dev = stream.alloc_zeros::<f64>(120).unwrap();
        let mul = device
            .function(find_module("elementwise"), "mul_fwd_f64")
            .unwrap();
        let numel = 120i64;
        let mut launch = stream.launch_builder(&mul);
        launch
            .arg(&params)
            .arg(&lhs_dev)
            .arg(&rhs_dev)
            .arg(&mut out_dev)
            .arg(&numel);
        run_launch(&device, "mul_fwd_f64", &mut launch, config((1, 1, 1), 64));

        assert_close(&download(&device, &out_dev), &expected, "broadcast mul");
    }

    #[test]
    fn batchnorm_backward_matches_cpu() {
        let Some(device) = open_device() else { return };
        let stream = device.stream();
        let shape = ChannelShape { n: 3, c: 4, hw: 37 };
        let numel = (shape.n * shape.c * shape.hw) as usize;
        let count = (shape.n * shape.hw) as f64;
        let eps = 1e-5f64;
        let x = test_values(numel, 31);
        let grad_y = test_values(numel, 32);
        let gamma = test_values(shape.c as usize, 33);
        let channel = |i: usize| (i / shape.hw as usize) % shape.c as usize;

        let mut mean = vec![0.0; shape.c as usize];
        let mut var = vec![0.0; shape.c as usize];
        for i in 0..numel {
            mean[channel(i)] += x[i] / count;
        }
        for i in 0..numel {
            var[channel(i)] += (x[i] - mean[channel(i)]).powi(2) / count;
        }
        let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
        let xhat: Vec<f64> = (0..numel)
            .map(|i| (x[i] - mean[channel(i)]) * invstd[channel(i)])
            .collect();
        let mut sum_g = vec![0.0; shape.c as usize];
        let mut sum_g_xhat = vec![0.0; shape.c as usize];
        for i in 0..numel {
            sum_g[channel(i)] += grad_y[i];
            sum_g_xhat[channel(i)] += grad_y[i] * xhat[i];
        }
        let grad_x_expected: Vec<f64> = (0..numel)
            .map(|i| {
                let c = channel(i);
                gamma[c]
                    * invstd[c]
                    * (grad_y[i] - sum_g[c] / count - xhat[i] * sum_g_xhat[c] / count)
            })
            .collect();

        let x_dev = upload(stream, &x);
        let grad_y_dev = upload(stream, &grad_y);
        let gamma_dev = upload(stream, &gamma);
        let mut mean_dev = stream.alloc_zeros::<f64>(shape.c as usize).unwrap();
        let mut var_dev = stream.alloc_zeros::<f64>(shape.c as usize).unwrap();
        let mut invstd_dev = stream.alloc_zeros::<f64>(shape.c as usize).unwrap();
        let mut grad_x_dev = stream.alloc_zeros::<f64>(numel).unwrap();
        let mut grad_gamma_dev = stream.alloc_zeros::<f64>(shape.c as usize).unwrap();
        let mut grad_beta_dev = stream.alloc_zeros::<f64>(shape.c as usize).unwrap();

        let stats = device
            .function(find_module("batchnorm"), "batchnorm_stats_fwd_f64")
            .unwrap();
        let mut launch = stream.launch_builder(&stats);
        launch
            .arg(&shape)
            .arg(&x_dev)
            .arg(&mut mean_dev)
            .arg(&mut var_dev)
            .arg(&mut invstd_dev)
            .arg(&eps);
        run_launch(
            &device,
            "batchnorm_stats_fwd_f64",
            &mut launch,
            config((shape.c as u32, 1, 1), 256),
        );

        let backward = device
            .function(find_module("batchnorm"), "batchnorm_bwd_f64")
            .unwrap();
        let mut launch = stream.launch_builder(&backward);
        launch
            .arg(&shape)
            .arg(&x_dev)
            .arg(&grad_y_dev)
            .arg(&mean_dev)
            .arg(&invstd_dev)
            .arg(&gamma_dev)
            .arg(&mut grad_x_dev)
            .arg(&mut grad_gamma_dev)
            .arg(&mut grad_beta_dev);
        run_launch(
            &device,
            "batchnorm_bwd_f64",
            &mut launch,
            config((shape.c as u32, 1, 1), 256),
        );

        assert_close(&download(&device, &mean_dev), &mean, "batchnorm mean");
        assert_close(&download(&device, &var_dev), &var, "batchnorm var");
        assert_close(&download(&device, &invstd_dev), &invstd, "batchnorm invstd");
        assert_close(
            &download(&device, &grad_x_dev),
            &grad_x_expected,
            "batchnorm grad_x",
        );
        assert_close(
            &download(&device, &grad_gamma_dev),
            &sum_g_xhat,
            "batchnorm grad_gamma",
        );
        assert_close(
            &download(&device, &grad_beta_dev),
            &sum_g,
            "batchnorm grad_beta",
        );
    }
}
