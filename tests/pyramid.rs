//! Tests of the pyramid size table, its validation, the real images and the between-scale
//! upsampling.

use serde_json::Value;
use singan::singan::imresize::{resize_scale, resize_sides, Planes};
use singan::singan::pyramid::{
    build_real_pyramid, upsample_to, upsampled_size, Pyramid, PyramidConfig, PyramidError,
    PyramidRule, Size, UpsamplePlan,
};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/spec/imresize_vectors.json"
);

fn load_vectors() -> Option<Value> {
    match std::fs::read_to_string(VECTORS) {
        Ok(text) => Some(serde_json::from_str(&text).expect("vector file is valid JSON")),
        Err(_) => {
            eprintln!("skipping: reference vectors not found at {VECTORS}");
            None
        }
    }
}

fn size_of(value: &Value) -> Size {
    (
        value[0].as_u64().unwrap() as usize,
        value[1].as_u64().unwrap() as usize,
    )
}

fn sizes_of(value: &Value) -> Vec<Size> {
    value.as_array().unwrap().iter().map(size_of).collect()
}

fn config(rule: PyramidRule) -> PyramidConfig {
    PyramidConfig {
        rule,
        ..PyramidConfig::default()
    }
}

fn pattern(channels: usize, height: usize, width: usize) -> Planes<f32> {
    let data = (0..channels * height * width)
        .map(|i| ((i * 29 + 7) % 31) as f32 / 15.0 - 1.0)
        .collect();
    Planes::new(channels, height, width, data).unwrap()
}

fn assert_close(got: f64, want: f64, context: &str) {
    assert!(
        (got - want).abs() <= 1e-12 * want.abs().max(1.0),
        "{context}: {got} vs {want}"
    );
}

#[test]
fn vectors_spec_rule() {
    let Some(vectors) = load_vectors() else {
        return;
    };
    let cases = vectors["pyramid_cases"].as_array().unwrap();
    assert_eq!(cases.len(), 5);
    for case in cases {
        let input = size_of(&case["input_hw"]);
        let pyramid = Pyramid::new_unvalidated(input, &config(PyramidRule::Spec)).unwrap();
        let label = format!("{}x{} spec rule", input.0, input.1);
        assert_eq!(
            pyramid.num_scales,
            case["num_scales"].as_i64().unwrap(),
            "{label}"
        );
        assert_eq!(
            pyramid.stop_scale_first,
            case["stop_scale_first"].as_i64().unwrap(),
            "{label}"
        );
        assert_close(
            pyramid.scale_one,
            case["scale_one"].as_f64().unwrap(),
            &label,
        );
        assert_eq!(
            pyramid.resized_size,
            size_of(&case["resized_hw"]),
            "{label}"
        );
        assert_close(
            pyramid.scale_factor,
            case["scale_factor"].as_f64().unwrap(),
            &label,
        );
        assert_eq!(
            pyramid.stop_scale as i64, pyramid.stop_scale_first,
            "{label}"
        );
        assert_eq!(
            pyramid.sizes,
            sizes_of(&case["sizes_hw_official_rule"]),
            "{label}"
        );
    }
}

#[test]
fn vectors_fork_rule() {
    let Some(vectors) = load_vectors() else {
        return;
    };
    for case in vectors["pyramid_cases"].as_array().unwrap() {
        let input = size_of(&case["input_hw"]);
        let pyramid = Pyramid::new_unvalidated(input, &config(PyramidRule::Fork)).unwrap();
        let label = format!("{}x{} fork rule", input.0, input.1);
        assert_eq!(
            pyramid.stop_scale as u64,
            case["stop_scale"].as_u64().unwrap(),
            "{label}"
        );
        assert_close(
            pyramid.scale_factor,
            case["scale_factor"].as_f64().unwrap(),
            &label,
        );
        assert_eq!(pyramid.sizes, sizes_of(&case["sizes_hw"]), "{label}");
    }
}

#[test]
fn vectors_upsampled_sizes() {
    let Some(vectors) = load_vectors() else {
        return;
    };
    for case in vectors["pyramid_cases"].as_array().unwrap() {
        let input = size_of(&case["input_hw"]);
        let pyramid = Pyramid::new_unvalidated(input, &config(PyramidRule::Fork)).unwrap();
        let expected = sizes_of(&case["upsampled_before_crop_hw"]);
        assert_eq!(expected.len(), pyramid.stop_scale, "{input:?}: entry count");
        for (k, &want) in expected.iter().enumerate() {
            assert_eq!(
                pyramid.upsampled_size(k).unwrap(),
                want,
                "{input:?}: scale {k}"
            );
        }
    }
}

#[test]
fn vectors_spec_rule_validates() {
    // Every vector image passes validation under the default rule.
    let Some(vectors) = load_vectors() else {
        return;
    };
    for case in vectors["pyramid_cases"].as_array().unwrap() {
        let input = size_of(&case["input_hw"]);
        let result = Pyramid::new(input, &PyramidConfig::default());
        assert!(result.is_ok(), "{input:?}: {:?}", result.err());
    }
}

#[test]
fn example_a_188x250() {
    let pyramid = Pyramid::new((188, 250), &PyramidConfig::default()).unwrap();
    assert_eq!(pyramid.num_scales, 9);
    assert_eq!(pyramid.stop_scale_first, 9);
    assert_eq!(pyramid.scale_one, 1.0);
    assert_eq!(pyramid.resized_size, (188, 250));
    assert_eq!(pyramid.scale_factor, 0.7991760533846793);
    assert_eq!(pyramid.stop_scale, 9);

    let expected = vec![
        (26, 34),
        (32, 42),
        (40, 53),
        (49, 66),
        (62, 82),
        (77, 102),
        (96, 128),
        (121, 160),
        (151, 200),
        (188, 250),
    ];
    assert_eq!(pyramid.sizes, expected);

    let up: Vec<Size> = (0..9).map(|k| pyramid.upsampled_size(k).unwrap()).collect();
    let expected_up = vec![
        (33, 43),
        (41, 53),
        (51, 67),
        (62, 83),
        (78, 103),
        (97, 128),
        (121, 161),
        (152, 201),
        (189, 251),
    ];
    assert_eq!(up, expected_up);
}

#[test]
fn example_a_coarsest_rounds_up() {
    // 188 * r^9 evaluates to slightly above 25, so the coarsest height is 26, not 25.
    let pyramid = Pyramid::new((188, 250), &PyramidConfig::default()).unwrap();
    let coarse = 188.0 * pyramid.scale_factor.powf(9.0);
    assert!(coarse > 25.0, "188 * r^9 = {coarse}");
    assert_eq!(pyramid.sizes[0].0, 26);
}

#[test]
fn example_b_spec_rule() {
    let pyramid = Pyramid::new((683, 1024), &PyramidConfig::default()).unwrap();
    assert_eq!(pyramid.num_scales, 13);
    assert_eq!(pyramid.stop_scale_first, 8);
    assert_eq!(pyramid.scale_one, 0.244140625);
    assert_eq!(pyramid.resized_size, (167, 250));
    assert_eq!(pyramid.scale_factor, 0.7886838398087375);
    assert_eq!(pyramid.stop_scale, 8);
    let expected = vec![
        (26, 38),
        (32, 48),
        (41, 61),
        (51, 77),
        (65, 97),
        (82, 123),
        (104, 156),
        (132, 198),
        (167, 250),
    ];
    assert_eq!(pyramid.sizes, expected);
    assert_eq!(pyramid.upsampled_size(7).unwrap(), (168, 252));
}

#[test]
fn example_b_fork_rule_sizes() {
    let pyramid = Pyramid::new_unvalidated((683, 1024), &config(PyramidRule::Fork)).unwrap();
    assert_eq!(pyramid.stop_scale, 13);
    assert_eq!(pyramid.sizes.len(), 14);
    assert_eq!(pyramid.sizes[0], (8, 12));
    assert_eq!(pyramid.sizes[1], (10, 15));
    assert_eq!(pyramid.sizes[13], (167, 250));
}

#[test]
fn example_b_fork_rule_rejected() {
    let error = Pyramid::new((683, 1024), &config(PyramidRule::Fork)).unwrap_err();
    match &error {
        PyramidError::ScaleTooSmall {
            scale,
            scale_height,
            scale_width,
            min_side,
            suggestion,
            ..
        } => {
            assert_eq!(*scale, 0);
            assert_eq!((*scale_height, *scale_width), (8, 12));
            assert_eq!(*min_side, 11);
            assert!(suggestion.min_size.is_some() || suggestion.max_size.is_some());
        }
        other => panic!("expected ScaleTooSmall, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains("683x1024"), "{message}");
    assert!(message.contains("8x12"), "{message}");
    assert!(message.contains("scale 0"), "{message}");
}

#[test]
fn example_c_64x64() {
    let pyramid = Pyramid::new((64, 64), &PyramidConfig::default()).unwrap();
    assert_eq!(pyramid.num_scales, 5);
    assert_eq!(pyramid.stop_scale, 5);
    assert_eq!(pyramid.scale_factor, 0.8286135043349967);
    let sides: Vec<usize> = pyramid.sizes.iter().map(|&(h, _)| h).collect();
    assert_eq!(sides, vec![25, 31, 37, 44, 54, 64]);
    assert!(pyramid.sizes.iter().all(|&(h, w)| h == w));
    let up: Vec<usize> = (0..5)
        .map(|k| pyramid.upsampled_size(k).unwrap().0)
        .collect();
    assert_eq!(up, vec![31, 38, 45, 54, 66]);
}

#[test]
fn example_d_integer_path() {
    let pyramid = Pyramid::new((375, 500), &PyramidConfig::default()).unwrap();
    assert_eq!(pyramid.scale_one, 0.5);
    assert_eq!(pyramid.resized_size, (187, 250));
    assert_eq!(pyramid.num_scales, 11);
    assert_eq!(pyramid.stop_scale_first, 8);
    assert_eq!(pyramid.scale_factor, 0.7776108295843359);
    let expected = vec![
        (25, 34),
        (33, 43),
        (42, 56),
        (54, 72),
        (69, 92),
        (88, 118),
        (114, 152),
        (146, 195),
        (187, 250),
    ];
    assert_eq!(pyramid.sizes, expected);
    let fork = Pyramid::new_unvalidated((375, 500), &config(PyramidRule::Fork)).unwrap();
    assert_eq!(fork.stop_scale, 11);
    assert_eq!(&fork.sizes[..3], &[(12, 16), (16, 21), (20, 26)]);
    assert_eq!(&fork.sizes[3..], expected.as_slice());
}

#[test]
fn rules_agree_small_images() {
    for input in [(188, 250), (64, 64), (250, 250), (100, 37), (250, 30)] {
        let spec = Pyramid::new_unvalidated(input, &config(PyramidRule::Spec)).unwrap();
        let fork = Pyramid::new_unvalidated(input, &config(PyramidRule::Fork)).unwrap();
        assert_eq!(spec.sizes, fork.sizes, "{input:?}");
    }
}

/// Asserts that no value strictly closer to `current` than `suggested` is accepted (with a
/// table that repeats no size, as the suggestions require).
fn assert_closest(suggested: usize, current: usize, accepts: impl Fn(usize) -> bool) {
    assert!(
        accepts(suggested),
        "suggested value {suggested} is rejected"
    );
    let distance = suggested.abs_diff(current);
    for value in current.saturating_sub(distance - 1)..=current + (distance - 1) {
        assert!(
            !accepts(value),
            "{value} is closer to {current} than {suggested} and works"
        );
    }
}

#[test]
fn elongated_image_rejected() {
    // 90x1000 shrinks to 22x250 (integer path, floor(90 / 4)) for max_size 250, below min_size 25.
    let error = Pyramid::new((90, 1000), &PyramidConfig::default()).unwrap_err();
    let PyramidError::ResizedBelowMinSize {
        resized_height,
        resized_width,
        suggestion,
        ..
    } = &error
    else {
        panic!("expected ResizedBelowMinSize, got {error:?}");
    };
    assert_eq!((*resized_height, *resized_width), (22, 250));
    let message = error.to_string();
    assert!(message.contains("90x1000"), "{message}");
    assert!(message.contains("22x250"), "{message}");
    assert!(message.contains("--max-size"), "{message}");
    assert!(message.contains("--min-size"), "{message}");

    let max_size = suggestion.max_size.expect("another max_size works");
    assert_closest(max_size, 250, |value| {
        let config = PyramidConfig {
            max_size: value,
            ..PyramidConfig::default()
        };
        Pyramid::new((90, 1000), &config).is_ok_and(|pyramid| pyramid.repeated_scale().is_none())
    });
    let min_size = suggestion.min_size.expect("another min_size works");
    assert_closest(min_size, 25, |value| {
        let config = PyramidConfig {
            min_size: value,
            ..PyramidConfig::default()
        };
        Pyramid::new((90, 1000), &config).is_ok_and(|pyramid| pyramid.repeated_scale().is_none())
    });
}

#[test]
fn elongated_image_too_few_scales() {
    // 40x1000: num_scales = 3 but the first resize alone spans 5 factors of 0.75.
    let error = Pyramid::new((40, 1000), &PyramidConfig::default()).unwrap_err();
    let PyramidError::TooFewScales {
        stop_scale,
        suggestion,
        ..
    } = &error
    else {
        panic!("expected TooFewScales, got {error:?}");
    };
    assert_eq!(*stop_scale, -2);
    assert!(error.to_string().contains("40x1000"), "{error}");
    let max_size = suggestion.max_size.expect("a larger max_size works");
    assert_closest(max_size, 250, |value| {
        let config = PyramidConfig {
            max_size: value,
            ..PyramidConfig::default()
        };
        Pyramid::new((40, 1000), &config).is_ok_and(|pyramid| pyramid.repeated_scale().is_none())
    });
}

#[test]
fn small_image_suggests_min_size() {
    // 20x20 with min_size 25 gives r = 1.25 > 1. min_size 20 gives r = 1 and min_size 19
    // rounds scale 1 up to 20x20, so both repeat a size and 18 is the closest that works.
    let error = Pyramid::new((20, 20), &PyramidConfig::default()).unwrap_err();
    let PyramidError::ResizedBelowMinSize { suggestion, .. } = &error else {
        panic!("expected ResizedBelowMinSize, got {error:?}");
    };
    assert_eq!(suggestion.min_size, Some(18));
    assert!(error.to_string().contains("--min-size 18"), "{error}");
}

#[test]
fn tiny_min_size_suggests_larger() {
    let small = PyramidConfig {
        min_size: 5,
        ..PyramidConfig::default()
    };
    let error = Pyramid::new((188, 250), &small).unwrap_err();
    let PyramidError::ScaleTooSmall {
        scale, suggestion, ..
    } = &error
    else {
        panic!("expected ScaleTooSmall, got {error:?}");
    };
    assert_eq!(*scale, 0);
    let min_size = suggestion.min_size.expect("a larger min_size works");
    assert!(min_size >= 11, "suggested {min_size}");
    assert_closest(min_size, 5, |value| {
        let config = PyramidConfig {
            min_size: value,
            ..small.clone()
        };
        Pyramid::new((188, 250), &config).is_ok_and(|pyramid| pyramid.repeated_scale().is_none())
    });
}

#[test]
fn too_small_image_rejected() {
    // A 10x10 image cannot reach the 11-pixel minimum side at any setting.
    let error = Pyramid::new((10, 10), &PyramidConfig::default()).unwrap_err();
    assert!(error.to_string().contains("10x10"), "{error}");
    let suggestion = match &error {
        PyramidError::TooFewScales { suggestion, .. }
        | PyramidError::ResizedBelowMinSize { suggestion, .. }
        | PyramidError::ScaleTooSmall { suggestion, .. } => *suggestion,
        other => panic!("unexpected error {other:?}"),
    };
    assert_eq!(suggestion.min_size, None);
    assert_eq!(suggestion.max_size, None);
}

#[test]
fn too_few_scales_rejected() {
    // 10x10 with min_size 25: num_scales = ceil(log_0.75(2.5)) + 1 = -2.
    let error = Pyramid::new_unvalidated((10, 10), &PyramidConfig::default()).unwrap_err();
    assert!(
        matches!(error, PyramidError::TooFewScales { stop_scale: -2, .. }),
        "{error:?}"
    );
}

#[test]
fn invalid_config_rejected() {
    let cases = [
        PyramidConfig {
            min_size: 0,
            ..PyramidConfig::default()
        },
        PyramidConfig {
            max_size: 0,
            ..PyramidConfig::default()
        },
        PyramidConfig {
            scale_factor_init: 1.0,
            ..PyramidConfig::default()
        },
        PyramidConfig {
            scale_factor_init: f64::NAN,
            ..PyramidConfig::default()
        },
    ];
    for config in cases {
        let error = Pyramid::new((100, 100), &config).unwrap_err();
        assert!(
            matches!(error, PyramidError::InvalidConfig { .. }),
            "{error}"
        );
    }
    let error = Pyramid::new((0, 100), &PyramidConfig::default()).unwrap_err();
    assert!(matches!(error, PyramidError::EmptyImage { .. }), "{error}");
}

#[test]
fn min_scale_side_formula() {
    assert_eq!(PyramidConfig::default().min_scale_side(), 11);
    let wider = PyramidConfig {
        num_blocks: 8,
        kernel_size: 5,
        ..PyramidConfig::default()
    };
    assert_eq!(wider.min_scale_side(), 33);
}

#[test]
fn real_images_match_table() {
    let image = pattern(3, 120, 90);
    let (pyramid, reals) = build_real_pyramid(&image, &PyramidConfig::default()).unwrap();
    assert_eq!(reals.len(), pyramid.len());
    for (k, real) in reals.iter().enumerate() {
        assert_eq!((real.height, real.width), pyramid.sizes[k], "scale {k}");
        assert_eq!(real.channels, 3);
    }
    // 120x90 is below max_size, so x_top is the image itself.
    assert_eq!(reals[pyramid.stop_scale], image);
}

#[test]
fn real_images_resized_from_top() {
    let image = pattern(3, 500, 375);
    let (pyramid, reals) = build_real_pyramid(&image, &PyramidConfig::default()).unwrap();
    let top = resize_scale(&image, pyramid.scale_one).unwrap();
    assert_eq!((top.height, top.width), (250, 187));
    assert_eq!(reals[pyramid.stop_scale], top);
    for (k, real) in reals.iter().enumerate().take(pyramid.stop_scale) {
        let direct = resize_scale(&top, pyramid.level_factor(k)).unwrap();
        assert_eq!(*real, direct, "scale {k} is resized directly from x_top");
    }
}

#[test]
fn real_images_from_top_same() {
    let image = pattern(3, 500, 375);
    let pyramid = Pyramid::new((500, 375), &PyramidConfig::default()).unwrap();
    let top = pyramid.top_image(&image).unwrap();
    let from_top = pyramid.real_images_from_top(top.clone()).unwrap();
    assert_eq!(from_top, pyramid.real_images(&image).unwrap());
    let error = pyramid.real_images_from_top(image).unwrap_err();
    assert!(
        matches!(error, PyramidError::ImageSizeMismatch { .. }),
        "{error}"
    );
}

#[test]
fn real_images_size_mismatch() {
    let pyramid = Pyramid::new((64, 64), &PyramidConfig::default()).unwrap();
    let error = pyramid.real_images(&pattern(3, 64, 65)).unwrap_err();
    assert!(
        matches!(error, PyramidError::ImageSizeMismatch { .. }),
        "{error}"
    );
}

#[test]
fn upsample_reaches_next_size() {
    let pyramid = Pyramid::new((188, 250), &PyramidConfig::default()).unwrap();
    for k in 1..=pyramid.stop_scale {
        let (height, width) = pyramid.sizes[k - 1];
        let coarse = pattern(3, height, width);
        let up = pyramid.upsample(&coarse, k).unwrap();
        assert_eq!((up.height, up.width), pyramid.sizes[k], "U_{k}");

        let (up_height, up_width) = pyramid.upsampled_size(k - 1).unwrap();
        let full = resize_sides(&coarse, up_height, up_width).unwrap();
        let cropped = full
            .crop_top_left(pyramid.sizes[k].0, pyramid.sizes[k].1)
            .unwrap();
        assert_eq!(up, cropped, "U_{k} is resize then top-left crop");

        let plan = pyramid.upsample_plan(k).unwrap();
        assert_eq!(plan.apply(&coarse).unwrap(), up, "U_{k} plan");
    }
}

#[test]
fn upsample_to_other_target() {
    // Arbitrary-size sampling upsamples to targets that are not pyramid sizes.
    let image = pattern(3, 20, 30);
    let factor = 0.8;
    let up = upsample_to(&image, factor, (24, 40)).unwrap();
    assert_eq!((up.height, up.width), (24, 40));
    // ceil(30 / 0.8) = 38 < 40, so the width is resized straight to the target.
    assert_eq!(
        upsampled_size((20, 30), factor, (24, 40)).unwrap(),
        (25, 40)
    );
    let plan = UpsamplePlan::new((20, 30), factor, (24, 40)).unwrap();
    assert_eq!(plan.apply(&image).unwrap(), up);
}

#[test]
fn upsample_scale_range_checked() {
    let pyramid = Pyramid::new((64, 64), &PyramidConfig::default()).unwrap();
    let image = pattern(3, 25, 25);
    assert!(pyramid.upsample(&image, 0).is_err());
    assert!(pyramid.upsample(&image, 6).is_err());
    assert!(pyramid.upsample_plan(0).is_err());
    assert!(pyramid.upsampled_size(5).is_err());
    assert!(upsampled_size((10, 10), 0.0, (12, 12)).is_err());
}

#[test]
fn pyramid_serde_round_trip() {
    let pyramid = Pyramid::new((683, 1024), &PyramidConfig::default()).unwrap();
    let text = serde_json::to_string(&pyramid).unwrap();
    assert!(text.contains("\"rule\":\"spec\""), "{text}");
    let back: Pyramid = serde_json::from_str(&text).unwrap();
    assert_eq!(back, pyramid);
    let config_text = serde_json::to_string(&config(PyramidRule::Fork)).unwrap();
    let config_back: PyramidConfig = serde_json::from_str(&config_text).unwrap();
    assert_eq!(config_back.rule, PyramidRule::Fork);
}
