//! Tests of the `--min-size` and `--max-size` values that pyramid errors suggest: each one
//! must pass, and the pyramid it gives must downscale between every pair of scales. Settings
//! that the user picks may give a table that repeats a size, which is accepted and flagged.

use singan::singan::pyramid::{Pyramid, PyramidConfig, PyramidError, Size, SizeSuggestion};
use singan::singan::sample_image::sample_image_size;

/// Sizes (height x width) of common SinGAN training images.
const COMMON_SIZES: [Size; 10] = [
    (186, 248),
    (164, 244),
    (188, 250),
    (141, 250),
    (171, 256),
    (250, 250),
    (366, 585),
    (380, 572),
    (80, 120),
    (683, 1024),
];

/// Sizes of small and elongated images, for which many settings are rejected.
const EDGE_SIZES: [Size; 6] = [
    (20, 20),
    (24, 24),
    (20, 400),
    (90, 1000),
    (40, 1000),
    (33, 37),
];

fn all_sizes() -> impl Iterator<Item = Size> {
    COMMON_SIZES.into_iter().chain(EDGE_SIZES)
}

fn suggestion_of(error: &PyramidError) -> Option<SizeSuggestion> {
    match error {
        PyramidError::TooFewScales { suggestion, .. }
        | PyramidError::ResizedBelowMinSize { suggestion, .. }
        | PyramidError::ScaleTooSmall { suggestion, .. } => Some(*suggestion),
        _ => None,
    }
}

/// Reads the number after `flag` in an error message, such as 11 in "try --min-size 11".
fn number_after(message: &str, flag: &str) -> Option<usize> {
    let start = message.find(flag)? + flag.len();
    let digits: String = message[start..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn assert_shrinks(pyramid: &Pyramid, context: &str) {
    for (k, pair) in pyramid.sizes.windows(2).enumerate() {
        assert!(
            pair[0].0 < pair[1].0,
            "{context}: height of scale {k} is not below scale {}: {:?}",
            k + 1,
            pyramid.sizes
        );
        assert!(
            pair[0].1 < pair[1].1,
            "{context}: width of scale {k} is not below scale {}: {:?}",
            k + 1,
            pyramid.sizes
        );
    }
}

/// Checks that [`Pyramid::repeated_scale`] names the first scale that is not smaller than the
/// next in both sides, or none when every scale shrinks. Such a table is accepted.
fn assert_repeat_flag(pyramid: &Pyramid, context: &str) {
    let first_repeat = pyramid
        .sizes
        .windows(2)
        .position(|pair| !(pair[0].0 < pair[1].0 && pair[0].1 < pair[1].1));
    assert_eq!(
        pyramid.repeated_scale(),
        first_repeat,
        "{context}: {:?}",
        pyramid.sizes
    );
}

fn with_min_size(min_size: usize) -> PyramidConfig {
    PyramidConfig {
        min_size,
        ..PyramidConfig::default()
    }
}

/// Checks that both values that `error` suggests, as printed in its message, build a pyramid
/// of `size` that downscales at every step.
fn assert_suggestion_works(size: Size, config: &PyramidConfig, error: &PyramidError) {
    let message = error.to_string();
    let context = format!("{size:?} with {config:?}: {message}");
    let suggestion = suggestion_of(error).unwrap_or_else(|| panic!("{context}: no suggestion"));
    assert_eq!(
        number_after(&message, "--min-size"),
        suggestion.min_size,
        "{context}"
    );
    assert_eq!(
        number_after(&message, "--max-size"),
        suggestion.max_size,
        "{context}"
    );
    if let Some(min_size) = suggestion.min_size {
        let fixed = PyramidConfig {
            min_size,
            ..config.clone()
        };
        match Pyramid::new(size, &fixed) {
            Ok(pyramid) => assert_shrinks(&pyramid, &context),
            Err(again) => panic!("{context}: --min-size {min_size} fails with: {again}"),
        }
    }
    if let Some(max_size) = suggestion.max_size {
        let fixed = PyramidConfig {
            max_size,
            ..config.clone()
        };
        match Pyramid::new(size, &fixed) {
            Ok(pyramid) => assert_shrinks(&pyramid, &context),
            Err(again) => panic!("{context}: --max-size {max_size} fails with: {again}"),
        }
    }
}

#[test]
fn balloons_min_size_1_hint_passes() {
    let size = (186, 248);
    let config = with_min_size(1);
    let error = Pyramid::new(size, &config).unwrap_err();
    assert!(
        matches!(error, PyramidError::ScaleTooSmall { .. }),
        "{error:?}"
    );
    assert_eq!(suggestion_of(&error).unwrap().min_size, Some(11));
    assert_suggestion_works(size, &config, &error);
}

#[test]
fn balloons_min_size_10_hint_passes() {
    let size = (186, 248);
    let config = with_min_size(10);
    let error = Pyramid::new(size, &config).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("is 10x14"), "{message}");
    assert!(message.contains("try --min-size 11"), "{message}");
    assert_suggestion_works(size, &config, &error);
}

#[test]
fn min_size_sweep_hints_pass() {
    for size in all_sizes() {
        let short_side = size.0.min(size.1);
        for min_size in 1..=short_side + 5 {
            let config = with_min_size(min_size);
            match Pyramid::new(size, &config) {
                Ok(pyramid) => assert_repeat_flag(&pyramid, &format!("{size:?} min {min_size}")),
                Err(error) => {
                    if suggestion_of(&error).is_some() {
                        assert_suggestion_works(size, &config, &error);
                    }
                }
            }
        }
    }
}

#[test]
fn max_size_sweep_hints_pass() {
    for size in all_sizes() {
        let long_side = size.0.max(size.1);
        for max_size in (1..=long_side + 5).step_by(7) {
            let config = PyramidConfig {
                max_size,
                ..PyramidConfig::default()
            };
            match Pyramid::new(size, &config) {
                Ok(pyramid) => assert_repeat_flag(&pyramid, &format!("{size:?} max {max_size}")),
                Err(error) => {
                    if suggestion_of(&error).is_some() {
                        assert_suggestion_works(size, &config, &error);
                    }
                }
            }
        }
    }
}

#[test]
fn scale_factor_sweep_hints_pass() {
    for size in all_sizes() {
        for scale_factor_init in [0.5, 0.75, 0.7937, 0.9, 0.97] {
            for min_size in [1, 10, 18, 25, 60, 150] {
                let config = PyramidConfig {
                    min_size,
                    scale_factor_init,
                    ..PyramidConfig::default()
                };
                match Pyramid::new(size, &config) {
                    Ok(pyramid) => assert_repeat_flag(&pyramid, &format!("{size:?} {config:?}")),
                    Err(error) => {
                        if suggestion_of(&error).is_some() {
                            assert_suggestion_works(size, &config, &error);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn equal_min_size_repeats_scale() {
    // min_size equal to the shorter side gives r = 1 and two 20x20 scales: valid, but flagged.
    let pyramid = Pyramid::new((20, 20), &with_min_size(20)).unwrap();
    assert_eq!(pyramid.sizes, [(20, 20), (20, 20)]);
    assert_eq!(pyramid.scale_factor, 1.0);
    assert_eq!(pyramid.repeated_scale(), Some(0));
}

#[test]
fn small_square_hint_downscales() {
    let error = Pyramid::new((20, 20), &PyramidConfig::default()).unwrap_err();
    let suggestion = suggestion_of(&error).unwrap();
    assert_ne!(suggestion.min_size, Some(20), "{error}");
    assert_suggestion_works((20, 20), &PyramidConfig::default(), &error);
}

#[test]
fn rounding_cancels_step_repeats_scale() {
    // r = sqrt(23 / 24) is about 0.979, so 24 * r rounds up to 24 and scales 1 and 2 match.
    let pyramid = Pyramid::new((24, 24), &with_min_size(23)).unwrap();
    assert_eq!(pyramid.sizes[1], (24, 24));
    assert_eq!(pyramid.sizes[2], (24, 24));
    assert_eq!(pyramid.repeated_scale(), Some(1));
}

#[test]
fn elongated_hint_avoids_repeated_scale() {
    // 20x400 shrinks to 13x250 for max_size 250, and min_size 13 gives r = 1, so the default
    // settings' error must not suggest 13.
    let pyramid = Pyramid::new((20, 400), &with_min_size(13)).unwrap();
    assert_eq!(pyramid.repeated_scale(), Some(0));
    assert!(pyramid.sizes.contains(&(13, 250)), "{:?}", pyramid.sizes);

    let default_error = Pyramid::new((20, 400), &PyramidConfig::default()).unwrap_err();
    assert_ne!(
        suggestion_of(&default_error).unwrap().min_size,
        Some(13),
        "{default_error}"
    );
    assert_suggestion_works((20, 400), &PyramidConfig::default(), &default_error);
}

#[test]
fn sample_image_min_size_97_hint() {
    let size = sample_image_size();
    let error = Pyramid::new(size, &with_min_size(97)).unwrap_err();
    let suggested = suggestion_of(&error).unwrap().min_size;
    assert_ne!(suggested, Some(size.0.min(size.1)), "{error}");
    assert_suggestion_works(size, &with_min_size(97), &error);
}

#[test]
fn normal_images_still_accepted() {
    // Common image sizes keep the table of the formulas under the default and
    // super-resolution settings, and none of them repeats a size.
    let settings = [
        PyramidConfig::default(),
        PyramidConfig {
            min_size: 18,
            scale_factor_init: 0.25f64.powf(1.0 / 6.0),
            ..PyramidConfig::default()
        },
    ];
    for config in &settings {
        for size in &COMMON_SIZES {
            let pyramid = Pyramid::new(*size, config)
                .unwrap_or_else(|error| panic!("{size:?} with {config:?}: {error}"));
            let unchecked = Pyramid::new_unvalidated(*size, config).unwrap();
            assert_eq!(pyramid, unchecked, "{size:?} with {config:?}");
            assert_shrinks(&pyramid, &format!("{size:?} with {config:?}"));
            assert_eq!(pyramid.repeated_scale(), None, "{size:?} with {config:?}");
        }
    }
}

#[test]
fn factor_near_one_rejected() {
    // scale_factor_init 0.9999999 requests millions of scales, each a network to train.
    let config = PyramidConfig {
        scale_factor_init: 0.9999999,
        ..PyramidConfig::default()
    };
    let error = Pyramid::new((186, 248), &config).unwrap_err();
    let PyramidError::TooManyScales { scales, .. } = &error else {
        panic!("expected TooManyScales, got {error:?}");
    };
    assert!(*scales > 1_000_000, "{error}");
    assert!(error.to_string().contains("--scale-factor-init"), "{error}");

    // 0.98 gives 100 scales, which stays within the limit.
    let config = PyramidConfig {
        scale_factor_init: 0.98,
        ..PyramidConfig::default()
    };
    let pyramid = Pyramid::new((186, 248), &config).unwrap();
    assert!(pyramid.sizes.len() <= singan::singan::pyramid::MAX_SCALES);
}
