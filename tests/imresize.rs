//! Tests of the MATLAB-compatible bicubic resize against the reference vectors and its own
//! invariants.

use serde_json::Value;
use singan::singan::imresize::{
    cubic, integer_factor, integer_kernel, output_size, reflect_index, resize, resize_scale,
    resize_sides, Planes, Resize, ResizeError, ResizePath, ResizePlan, WeightTable,
};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/spec/imresize_vectors.json"
);
const TOLERANCE: f64 = 1e-4;

fn load_vectors() -> Option<Value> {
    match std::fs::read_to_string(VECTORS) {
        Ok(text) => Some(serde_json::from_str(&text).expect("vector file is valid JSON")),
        Err(_) => {
            eprintln!("skipping: reference vectors not found at {VECTORS}");
            None
        }
    }
}

fn as_usize(value: &Value) -> usize {
    value.as_u64().expect("non-negative integer") as usize
}

fn matrix(value: &Value) -> (usize, usize, Vec<f64>) {
    let rows = value.as_array().expect("array of rows");
    let width = rows[0].as_array().expect("row array").len();
    let mut data = Vec::new();
    for row in rows {
        let row = row.as_array().expect("row array");
        assert_eq!(row.len(), width, "ragged matrix in vector file");
        data.extend(row.iter().map(|v| v.as_f64().expect("number")));
    }
    (rows.len(), width, data)
}

fn target_of(case: &Value) -> Resize {
    match case["mode"].as_str().expect("mode") {
        "sides" => Resize::Sides {
            height: as_usize(&case["sides"][0]),
            width: as_usize(&case["sides"][1]),
        },
        "scale" => Resize::Scale(case["scale"].as_f64().expect("scale")),
        other => panic!("unknown mode {other}"),
    }
}

fn arange(height: usize, width: usize) -> Planes<f64> {
    let data = (0..height * width).map(|v| v as f64).collect();
    Planes::new(1, height, width, data).unwrap()
}

fn pattern(channels: usize, height: usize, width: usize) -> Planes<f32> {
    let data = (0..channels * height * width)
        .map(|i| ((i * 37 + 11) % 23) as f32 / 11.0 - 1.0)
        .collect();
    Planes::new(channels, height, width, data).unwrap()
}

#[test]
fn vectors_all_cases_f64() {
    let Some(vectors) = load_vectors() else {
        return;
    };
    let cases = vectors["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let (height, width, input) = matrix(&case["input"]);
        let (out_height, out_width, expected) = matrix(&case["expected"]);
        let planes = Planes::new(1, height, width, input).unwrap();
        let output = resize(&planes, target_of(case)).unwrap();
        assert_eq!(
            (output.height, output.width),
            (out_height, out_width),
            "{name}: output shape"
        );
        for (i, (&got, &want)) in output.data.iter().zip(&expected).enumerate() {
            assert!(
                (got - want).abs() <= TOLERANCE,
                "{name}: value {i} is {got}, expected {want}"
            );
        }
    }
}

#[test]
fn vectors_all_cases_f32() {
    let Some(vectors) = load_vectors() else {
        return;
    };
    for case in vectors["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (height, width, input) = matrix(&case["input"]);
        let (_, _, expected) = matrix(&case["expected"]);
        let input: Vec<f32> = input.iter().map(|&v| v as f32).collect();
        let planes = Planes::new(1, height, width, input).unwrap();
        let output = resize(&planes, target_of(case)).unwrap();
        for (i, (&got, &want)) in output.data.iter().zip(&expected).enumerate() {
            assert!(
                (f64::from(got) - want).abs() <= TOLERANCE,
                "{name}: value {i} is {got}, expected {want}"
            );
        }
    }
}

#[test]
fn vectors_paths_match_notes() {
    let Some(vectors) = load_vectors() else {
        return;
    };
    for case in vectors["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let shape = &case["input_shape"];
        let plan =
            ResizePlan::new(as_usize(&shape[0]), as_usize(&shape[1]), target_of(case)).unwrap();
        let is_integer = matches!(plan.path, ResizePath::Integer(_));
        let expected_integer = case["path"].as_str().unwrap() == "integer";
        assert_eq!(is_integer, expected_integer, "{name}: resize path");
        let out_shape = &case["output_shape"];
        assert_eq!(
            (plan.out_height, plan.out_width),
            (as_usize(&out_shape[0]), as_usize(&out_shape[1])),
            "{name}: planned output shape"
        );
    }
}

#[test]
fn anchor_arange4x4_to_3x3() {
    let output = resize_sides(&arange(4, 4), 3, 3).unwrap();
    let expected = [
        0.7506, 2.1004, 3.4503, 6.1501, 7.5, 8.8499, 11.5497, 12.8996, 14.2494,
    ];
    for (i, (&got, &want)) in output.data.iter().zip(&expected).enumerate() {
        assert!(
            (got - want).abs() <= TOLERANCE,
            "value {i} is {got}, expected {want}"
        );
    }
    // Separability makes the output antisymmetric around the centre value 7.5.
    for i in 0..9 {
        let mirrored = output.data[8 - i];
        assert!(
            (output.data[i] + mirrored - 15.0).abs() < 1e-12,
            "antisymmetry at {i}"
        );
    }
}

fn assert_table_matches(name: &str, table: &WeightTable, rows: &Value) {
    let rows = rows.as_array().unwrap();
    assert_eq!(table.out_len, rows.len(), "{name}: row count");
    for (j, row) in rows.iter().enumerate() {
        let expected: Vec<(usize, f64)> = row
            .as_array()
            .unwrap()
            .iter()
            .map(|tap| (as_usize(&tap[0]), tap[1].as_f64().unwrap()))
            .collect();
        let got: Vec<(usize, f64)> = table.row_nonzero(j).collect();
        assert_eq!(got.len(), expected.len(), "{name}: tap count of row {j}");
        for (t, (&(got_index, got_weight), &(want_index, want_weight))) in
            got.iter().zip(&expected).enumerate()
        {
            assert_eq!(
                got_index, want_index,
                "{name}: source index of row {j} tap {t}"
            );
            assert!(
                (got_weight - want_weight).abs() <= 1e-6,
                "{name}: row {j} tap {t} weight {got_weight}, expected {want_weight}"
            );
        }
    }
}

#[test]
fn weight_tables_match_vectors() {
    let Some(vectors) = load_vectors() else {
        return;
    };
    let tables = &vectors["weights_1d"];
    for name in ["n4_to_m3", "n4_to_m6"] {
        let entry = &tables[name];
        let table = WeightTable::general(as_usize(&entry["n"]), as_usize(&entry["m"])).unwrap();
        assert_table_matches(name, &table, &entry["rows"]);
    }
}

#[test]
fn integer_kernels_match_vectors() {
    let Some(vectors) = load_vectors() else {
        return;
    };
    let tables = &vectors["weights_1d"];
    for (name, factor) in [("integer_factor2_kernel", 2), ("integer_factor3_kernel", 3)] {
        let expected: Vec<f64> = tables[name]["taps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let kernel = integer_kernel(factor);
        assert_eq!(kernel.len(), expected.len(), "{name}: tap count");
        for (i, (&got, &want)) in kernel.iter().zip(&expected).enumerate() {
            assert!(
                (got - want).abs() <= 1e-6,
                "{name}: tap {i} is {got}, expected {want}"
            );
        }
    }
}

#[test]
fn weight_table_n4_to_m3_tap_count() {
    // sigma = 0.75 gives ceil(4 / 0.75) + 2 = 8 taps, of which the outer ones are zero.
    let table = WeightTable::general(4, 3).unwrap();
    assert_eq!(table.taps, 8);
    assert_eq!(table.indices.len(), 24);
    assert_eq!(table.weights.len(), 24);
    let upscale = WeightTable::general(4, 6).unwrap();
    assert_eq!(upscale.taps, 6);
}

#[test]
fn weight_table_rows_sum_to_one() {
    let mut tables = Vec::new();
    for n in [1, 2, 3, 4, 5, 7, 13, 25, 64, 250] {
        for m in [1, 2, 3, 5, 8, 19, 26, 31, 188, 251] {
            tables.push(WeightTable::general(n, m).unwrap());
        }
        for factor in 1..=5 {
            if n >= factor {
                tables.push(WeightTable::integer(n, factor).unwrap());
            }
        }
    }
    for table in &tables {
        for j in 0..table.out_len {
            let sum: f64 = table.row(j).map(|(_, weight)| weight).sum();
            assert!(
                (sum - 1.0).abs() < 1e-12,
                "{} -> {} row {j} sums to {sum}",
                table.in_len,
                table.out_len
            );
            for (index, _) in table.row(j) {
                assert!(
                    index < table.in_len,
                    "index {index} outside {}",
                    table.in_len
                );
            }
        }
    }
}

#[test]
fn weight_table_equal_lengths_identity() {
    let table = WeightTable::general(7, 7).unwrap();
    assert!(table.is_identity());
    for j in 0..7 {
        let row: Vec<_> = table.row(j).collect();
        assert_eq!(row, vec![(j, 1.0)]);
    }
}

#[test]
fn weight_table_gpu_views() {
    let table = WeightTable::general(5, 3).unwrap();
    let indices = table.indices_u32();
    let weights = table.weights_f32();
    assert_eq!(indices.len(), table.out_len * table.taps);
    assert_eq!(weights.len(), table.out_len * table.taps);
    for (i, (&index, &weight)) in indices.iter().zip(&weights).enumerate() {
        assert_eq!(index as usize, table.indices[i]);
        assert_eq!(weight, table.weights[i] as f32);
    }
}

#[test]
fn integer_table_one_is_identity_kernel() {
    assert_eq!(integer_kernel(1), vec![0.0, 1.0, 0.0]);
    let table = WeightTable::integer(4, 1).unwrap();
    assert_eq!(table.out_len, 4);
    for j in 0..4 {
        let taps: Vec<_> = table.row_nonzero(j).collect();
        assert_eq!(taps, vec![(j, 1.0)]);
    }
}

#[test]
fn integer_path_equals_general_when_divisible() {
    // When s divides n, the integer path and the general path to n / s coincide.
    for (n, factor) in [(8, 2), (12, 2), (12, 3), (20, 4), (15, 5)] {
        let integer = WeightTable::integer(n, factor).unwrap();
        let general = WeightTable::general(n, n / factor).unwrap();
        assert_eq!(integer.out_len, general.out_len);
        for j in 0..integer.out_len {
            let mut a = vec![0.0; n];
            let mut b = vec![0.0; n];
            for (index, weight) in integer.row(j) {
                a[index] += weight;
            }
            for (index, weight) in general.row(j) {
                b[index] += weight;
            }
            for i in 0..n {
                assert!(
                    (a[i] - b[i]).abs() < 1e-12,
                    "n {n} factor {factor} row {j} source {i}: {} vs {}",
                    a[i],
                    b[i]
                );
            }
        }
    }
}

#[test]
fn cubic_kernel_values() {
    assert_eq!(cubic(0.0), 1.0);
    assert_eq!(cubic(1.0), 0.0);
    assert_eq!(cubic(-1.0), 0.0);
    assert_eq!(cubic(2.0), 0.0);
    assert_eq!(cubic(2.5), 0.0);
    assert_eq!(cubic(0.5), 0.5625);
    assert_eq!(cubic(-0.5), 0.5625);
    assert_eq!(cubic(1.5), -0.0625);
}

#[test]
fn reflect_index_pads_symmetrically() {
    // [a b c d] padded by 2 reads b a | a b c d | d c.
    let read: Vec<usize> = (-2..6).map(|i| reflect_index(i, 4)).collect();
    assert_eq!(read, vec![1, 0, 0, 1, 2, 3, 3, 2]);
}

#[test]
fn reflect_index_beyond_length() {
    // The mapping is periodic with period 2n, so offsets larger than n stay in range.
    assert_eq!(reflect_index(8, 4), 0);
    assert_eq!(reflect_index(-9, 4), 0);
    assert_eq!(reflect_index(-5, 4), 3);
    assert_eq!(reflect_index(11, 4), 3);
    assert_eq!(reflect_index(1_000_001, 1), 0);
    for i in -50..50 {
        assert!(reflect_index(i, 3) < 3);
        assert_eq!(
            reflect_index(i, 3),
            reflect_index(i + 6, 3),
            "period at {i}"
        );
    }
}

#[test]
fn large_downscale_reflects_past_edge() {
    // 3 -> 1 with sigma 1/3 has 14 taps, far more than the axis length.
    let table = WeightTable::general(3, 1).unwrap();
    assert_eq!(table.taps, 14);
    let output = resize_sides(&arange(1, 3), 1, 1).unwrap();
    assert!(
        (output.data[0] - 1.0).abs() < 1e-12,
        "mean of 0, 1, 2 by symmetry"
    );
}

#[test]
fn integer_factor_detection() {
    assert_eq!(integer_factor(1.0), Some(1));
    assert_eq!(integer_factor(0.5), Some(2));
    assert_eq!(integer_factor(1.0 / 3.0), Some(3));
    assert_eq!(integer_factor(0.25), Some(4));
    assert_eq!(integer_factor(0.75), None);
    assert_eq!(integer_factor(2.0), None);
    assert_eq!(integer_factor(0.0), None);
    assert_eq!(integer_factor(f64::NAN), None);
}

#[test]
fn output_size_scale_rules() {
    // General path: ceil. Integer path: floor.
    assert_eq!(output_size(25, 25, Resize::Scale(0.75)).unwrap(), (19, 19));
    assert_eq!(output_size(5, 7, Resize::Scale(0.75)).unwrap(), (4, 6));
    assert_eq!(
        output_size(375, 500, Resize::Scale(0.5)).unwrap(),
        (187, 250)
    );
    assert_eq!(output_size(5, 5, Resize::Scale(0.5)).unwrap(), (2, 2));
    assert_eq!(
        output_size(4, 4, Resize::Scale(1.0 / 0.75)).unwrap(),
        (6, 6)
    );
    assert_eq!(output_size(3, 4, Resize::Scale(1.0)).unwrap(), (3, 4));
    let sides = Resize::Sides {
        height: 9,
        width: 2,
    };
    assert_eq!(output_size(3, 4, sides).unwrap(), (9, 2));
}

#[test]
fn scale_one_returns_input() {
    let input = pattern(3, 5, 6);
    let output = resize_scale(&input, 1.0).unwrap();
    assert_eq!(output, input);
}

#[test]
fn sides_same_size_returns_input() {
    let input = pattern(2, 4, 9);
    let output = resize_sides(&input, 4, 9).unwrap();
    assert_eq!(output, input);
}

#[test]
fn constant_image_stays_constant() {
    let input = Planes::filled(3, 17, 23, 0.25f32);
    for target in [
        Resize::Scale(0.75),
        Resize::Scale(0.5),
        Resize::Scale(1.3),
        Resize::Sides {
            height: 5,
            width: 40,
        },
    ] {
        let output = resize(&input, target).unwrap();
        for &value in &output.data {
            assert!((value - 0.25).abs() < 1e-6, "{target:?} gave {value}");
        }
    }
}

#[test]
fn channels_resized_independently() {
    let input = pattern(3, 11, 13);
    let output = resize_scale(&input, 0.7).unwrap();
    for c in 0..3 {
        let single = Planes::new(1, 11, 13, input.plane(c).to_vec()).unwrap();
        let alone = resize_scale(&single, 0.7).unwrap();
        assert_eq!(output.plane(c), alone.data.as_slice(), "channel {c}");
    }
}

#[test]
fn height_resized_before_width() {
    // Applying the row table and then the column table by hand gives the same result.
    let input = arange(6, 9);
    let plan = ResizePlan::new(
        6,
        9,
        Resize::Sides {
            height: 4,
            width: 5,
        },
    )
    .unwrap();
    let mut between = vec![0.0; 4 * 9];
    for j in 0..4 {
        for x in 0..9 {
            between[j * 9 + x] = plan
                .rows
                .row(j)
                .map(|(source, weight)| weight * input.data[source * 9 + x])
                .sum();
        }
    }
    let output = plan.apply(&input).unwrap();
    for y in 0..4 {
        for j in 0..5 {
            let want: f64 = plan
                .cols
                .row(j)
                .map(|(source, weight)| weight * between[y * 9 + source])
                .sum();
            assert!((output.data[y * 5 + j] - want).abs() < 1e-12);
        }
    }
}

#[test]
fn plan_reuse_matches_resize() {
    let plan = ResizePlan::new(12, 10, Resize::Scale(0.75)).unwrap();
    for seed in 0..3 {
        let mut input = pattern(3, 12, 10);
        for value in &mut input.data {
            *value *= seed as f32 + 1.0;
        }
        assert_eq!(
            plan.apply(&input).unwrap(),
            resize_scale(&input, 0.75).unwrap()
        );
    }
}

#[test]
fn plan_rejects_other_size() {
    let plan = ResizePlan::new(12, 10, Resize::Scale(0.75)).unwrap();
    let error = plan.apply(&pattern(1, 10, 12)).unwrap_err();
    assert!(
        matches!(error, ResizeError::PlanSizeMismatch { .. }),
        "{error}"
    );
}

#[test]
fn invalid_scales_rejected() {
    let input = pattern(1, 4, 4);
    for scale in [0.0, -0.5, f64::NAN, f64::INFINITY] {
        let error = resize_scale(&input, scale).unwrap_err();
        assert!(
            matches!(error, ResizeError::InvalidScale { .. }),
            "scale {scale}: {error}"
        );
    }
}

#[test]
fn empty_output_rejected() {
    // Integer path with factor 2 on a 1-pixel axis gives floor(1 / 2) = 0 rows.
    let input = pattern(1, 1, 4);
    let error = resize_scale(&input, 0.5).unwrap_err();
    assert!(
        matches!(error, ResizeError::EmptyOutput { out_height: 0, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("1x4"), "{error}");
}

#[test]
fn zero_sides_rejected() {
    let input = pattern(1, 4, 4);
    let error = resize_sides(&input, 0, 3).unwrap_err();
    assert!(matches!(error, ResizeError::InvalidSides { .. }), "{error}");
}

#[test]
fn empty_input_rejected() {
    let input = Planes::<f32>::new(3, 0, 5, Vec::new()).unwrap();
    let error = resize_scale(&input, 0.5).unwrap_err();
    assert!(matches!(error, ResizeError::EmptyInput { .. }), "{error}");
}

#[test]
fn bad_buffer_length_rejected() {
    let error = Planes::new(3, 2, 2, vec![0.0f32; 11]).unwrap_err();
    assert!(matches!(
        error,
        ResizeError::DataLength {
            expected: 12,
            actual: 11,
            ..
        }
    ));
    let broken = Planes {
        channels: 3,
        height: 2,
        width: 2,
        data: vec![0.0f32; 5],
    };
    assert!(resize_scale(&broken, 0.5).is_err());
}

#[test]
fn planes_crop_top_left() {
    let input = arange(4, 5);
    let cropped = input.crop_top_left(2, 3).unwrap();
    assert_eq!(cropped.data, vec![0.0, 1.0, 2.0, 5.0, 6.0, 7.0]);
    let error = input.crop_top_left(5, 5).unwrap_err();
    assert!(matches!(error, ResizeError::CropTooLarge { .. }));
}

#[test]
fn planes_broadcast_channels() {
    let mask = arange(2, 2);
    let rgb = mask.broadcast_channels(3).unwrap();
    assert_eq!(rgb.channels, 3);
    for c in 0..3 {
        assert_eq!(rgb.plane(c), mask.data.as_slice());
    }
    assert!(rgb.broadcast_channels(3).is_err());
}

#[test]
#[ignore = "timing only; run with --ignored --nocapture to print it"]
fn speed_250x250x3() {
    let input = pattern(3, 250, 250);
    let start = std::time::Instant::now();
    let repeats = 200;
    for _ in 0..repeats {
        std::hint::black_box(resize_scale(&input, 0.75).unwrap());
    }
    let down = start.elapsed().as_secs_f64() * 1e3 / repeats as f64;
    let small = pattern(3, 199, 199);
    let start = std::time::Instant::now();
    for _ in 0..repeats {
        std::hint::black_box(resize_sides(&small, 251, 251).unwrap());
    }
    let up = start.elapsed().as_secs_f64() * 1e3 / repeats as f64;
    println!("250x250x3 by 0.75: {down:.3} ms per call; 199 -> 251 upsample: {up:.3} ms per call");
}
