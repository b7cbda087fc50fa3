//! The application commands (harmonize, edit, paint2image, sr, animate) on a tiny run trained
//! here, through the binary and the library, with every image made by the tests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::sync::OnceLock;

use image::codecs::gif::GifDecoder;
use image::AnimationDecoder;

use singan::rng::Rng;
use singan::singan::apps::animate::{animate, encode_gif, AnimationOptions};
use singan::singan::apps::inject::{aspect_ratio_matches, blend, fit_to_size, inject};
use singan::singan::apps::quantize::Palette;
use singan::singan::apps::super_resolution::{super_resolve, SrPlan};
use singan::singan::config::TrainConfig;
use singan::singan::image_io::{
    encode_byte, load_image, prepare_mask, AlphaBackground, MaskOptions,
};
use singan::singan::imresize::Planes;
use singan::singan::run::{load_model, save_model};
use singan::singan::train::{train, TrainJob};
use singan::Device;

mod common;
use common::{Quiet, TestFolder};

const HEIGHT: u32 = 48;
const WIDTH: u32 = 64;
/// The pasted square and the mask cover rows and columns 2..6.
const PATCH: std::ops::Range<u32> = 2..6;

fn singan(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_singan"))
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs the binary and asserts that it succeeded.
fn singan_ok(args: &[&str]) -> (String, String) {
    let (code, stdout, stderr) = singan(args);
    assert_eq!(code, 0, "singan {args:?} failed:\n{stdout}{stderr}");
    (stdout, stderr)
}

/// Runs the binary, asserts that it failed with status 2 (an error, not a panic) and returns
/// stderr.
fn singan_error(args: &[&str]) -> String {
    let (code, stdout, stderr) = singan(args);
    assert_eq!(
        code, 2,
        "singan {args:?} should fail with status 2:\n{stdout}{stderr}"
    );
    assert!(stderr.contains("error"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Draws a landscape-like `w`x`h` picture: sky and ground gradients with a few discs.
fn scene(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let disc = [(0.3, 0.25), (0.6, 0.7), (0.75, 0.3)]
            .iter()
            .any(|&(cy, cx): &(f32, f32)| {
                (fy - cy).powi(2) + ((fx - cx) * w as f32 / h as f32).powi(2) < 0.012
            });
        let rgb = if disc {
            [200.0, 60.0 + 80.0 * fx, 40.0]
        } else if fy < 0.5 {
            [90.0 + 60.0 * fy, 140.0 + 80.0 * fy, 230.0 - 40.0 * fx]
        } else {
            [60.0 + 50.0 * fx, 120.0 - 40.0 * fy, 50.0 + 30.0 * fy]
        };
        image::Rgb(rgb.map(|v| v as u8))
    })
}

/// Returns the training image with a magenta square pasted over the patch.
fn pasted(training: &image::RgbImage) -> image::RgbImage {
    let mut image = training.clone();
    for y in PATCH {
        for x in PATCH {
            image.put_pixel(x, y, image::Rgb([250, 0, 250]));
        }
    }
    image
}

/// Draws a black `w`x`h` mask with the patch (scaled to this size) in white.
fn mask_image(w: u32, h: u32) -> image::RgbImage {
    let scale = w / WIDTH;
    image::RgbImage::from_fn(w, h, |x, y| {
        let inside = PATCH.contains(&(x / scale)) && PATCH.contains(&(y / scale));
        image::Rgb(if inside { [255; 3] } else { [0; 3] })
    })
}

fn tiny_config() -> TrainConfig {
    TrainConfig {
        num_steps: 10,
        max_features: 8,
        min_features: 8,
        print_every: 10,
        eval_every: 10,
        seed: 5,
        ..TrainConfig::default()
    }
}

/// The shared fixture: a folder with the training image, the pasted reference and the mask as
/// PNGs, and a run trained on the training image in `run/`.
fn fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = TestFolder::new("fixture");
        let training = scene(WIDTH, HEIGHT);
        training.save(dir.join("training.png")).unwrap();
        pasted(&training).save(dir.join("pasted.png")).unwrap();
        mask_image(WIDTH, HEIGHT)
            .save(dir.join("mask.png"))
            .unwrap();
        let job = TrainJob {
            config: tiny_config(),
            image: load_image(dir.join("training.png"), AlphaBackground::White).unwrap(),
            image_name: None,
            run_dir: dir.join("run"),
            device: Device::Cpu,
        };
        let (model, _) = train(&job, false, &mut Quiet, &AtomicBool::new(false)).unwrap();
        assert_eq!(
            *model.info.pyramid.sizes.last().unwrap(),
            (HEIGHT as usize, WIDTH as usize)
        );
        assert!(
            model.info.pyramid.sizes.len() >= 3,
            "{:?}",
            model.info.pyramid.sizes
        );
        dir.remove_at_exit()
    })
}

fn run_path() -> PathBuf {
    fixture().join("run")
}

/// Index N of the finest scale of the fixture run.
fn finest() -> usize {
    load_model::<f32>(&run_path())
        .unwrap()
        .info
        .pyramid
        .sizes
        .len()
        - 1
}

fn decode_rgb(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

/// Computes the soft mask that the command computes from `mask.png`.
fn soft_mask(options: &MaskOptions) -> Planes<f32> {
    let mask = load_image(fixture().join("mask.png"), AlphaBackground::Black).unwrap();
    prepare_mask(&mask, options, "mask").unwrap()
}

/// Asserts that `output` has the bytes of `reference` wherever `mask` is exactly 0, that such
/// pixels exist, and that `output` differs from `reference` somewhere inside the mask.
fn assert_unchanged_outside(
    output: &image::RgbImage,
    reference: &image::RgbImage,
    mask: &Planes<f32>,
) {
    assert_eq!(output.dimensions(), reference.dimensions());
    let mut outside = 0;
    let mut changed_inside = 0;
    for (i, &m) in mask.data.iter().enumerate() {
        let (x, y) = ((i % mask.width) as u32, (i / mask.width) as u32);
        let (a, b) = (output.get_pixel(x, y), reference.get_pixel(x, y));
        if m == 0.0 {
            outside += 1;
            assert_eq!(a, b, "pixel ({y}, {x}) outside the mask changed");
        } else if m > 0.5 && a != b {
            changed_inside += 1;
        }
    }
    assert!(outside > 0, "the mask is nowhere exactly 0");
    assert!(changed_inside > 0, "nothing inside the mask changed");
}

#[test]
fn harmonize_keeps_pixels_outside_mask() {
    let dir = fixture();
    let out = TestFolder::new("harmonize");
    let (stdout, _) = singan_ok(&[
        "harmonize",
        text(&run_path()),
        "--ref",
        text(&dir.join("pasted.png")),
        "--mask",
        text(&dir.join("mask.png")),
        "--start-scale",
        "1",
        "--out",
        text(&out),
    ]);
    assert!(stdout.contains("start_scale=1.png"), "{stdout}");
    let output = decode_rgb(&out.join("start_scale=1.png"));
    assert_eq!(output.dimensions(), (WIDTH, HEIGHT));
    let reference = decode_rgb(&dir.join("pasted.png"));
    assert_unchanged_outside(&output, &reference, &soft_mask(&MaskOptions::HARMONIZATION));
}

#[test]
fn edit_writes_raw_and_masked() {
    let dir = fixture();
    let out = TestFolder::new("edit");
    let start = finest().to_string();
    singan_ok(&[
        "edit",
        text(&run_path()),
        "--ref",
        text(&dir.join("pasted.png")),
        "--mask",
        text(&dir.join("mask.png")),
        "--start-scale",
        &start,
        "--out",
        text(&out),
    ]);
    let raw = decode_rgb(&out.join(format!("start_scale={start}.png")));
    let masked = decode_rgb(&out.join(format!("start_scale={start}_masked.png")));
    assert_eq!(raw.dimensions(), (WIDTH, HEIGHT));
    let reference = decode_rgb(&dir.join("pasted.png"));
    let mask = soft_mask(&MaskOptions::EDITING);
    assert_unchanged_outside(&masked, &reference, &mask);
    // The raw output is the generator's, so it differs from the reference outside the mask too.
    assert_ne!(raw, reference);
}

#[test]
fn blend_is_reference_where_mask_is_zero() {
    let reference = Planes::new(
        3,
        1,
        3,
        vec![0.25, -0.5, 1.0, 0.0, 0.75, -1.0, 0.5, 0.5, 0.5],
    )
    .unwrap();
    let output = Planes::filled(3, 1, 3, -0.125f32);
    let mask = Planes::new(1, 1, 3, vec![0.0, 1.0, 0.5]).unwrap();
    let blended = blend(&reference, &output, &mask).unwrap();
    assert_eq!(blended.data[0], 0.25);
    assert_eq!(blended.data[3], 0.0);
    assert_eq!(blended.data[6], 0.5);
    assert_eq!(blended.data[1], -0.125);
    assert_eq!(blended.data[2], 0.5 * 1.0 + 0.5 * -0.125);
    let wrong = Planes::filled(1, 1, 2, 0.0f32);
    assert!(blend(&reference, &output, &wrong).is_err());
}

#[test]
fn harmonize_resizes_same_aspect_reference() {
    let dir = TestFolder::new("resized");
    let training = scene(WIDTH, HEIGHT);
    let big = image::imageops::resize(
        &pasted(&training),
        2 * WIDTH,
        2 * HEIGHT,
        image::imageops::FilterType::Triangle,
    );
    big.save(dir.join("big.png")).unwrap();
    mask_image(2 * WIDTH, 2 * HEIGHT)
        .save(dir.join("big_mask.png"))
        .unwrap();
    let out = dir.join("out");
    let (_, stderr) = singan_ok(&[
        "harmonize",
        text(&run_path()),
        "--ref",
        text(&dir.join("big.png")),
        "--mask",
        text(&dir.join("big_mask.png")),
        "--start-scale",
        "2",
        "--out",
        text(&out),
    ]);
    assert!(stderr.contains("note: reference"), "{stderr}");
    assert!(stderr.contains("is 96x128; resized to 48x64"), "{stderr}");
    assert!(stderr.contains("note: mask"), "{stderr}");
    assert_eq!(
        decode_rgb(&out.join("start_scale=2.png")).dimensions(),
        (WIDTH, HEIGHT)
    );
}

#[test]
fn aspect_ratio_tolerance() {
    assert!(aspect_ratio_matches((48, 64), (48, 64)));
    assert!(aspect_ratio_matches((96, 128), (48, 64)));
    // A 375x500 image whose finest scale rounded down to 187x250.
    assert!(aspect_ratio_matches((375, 500), (187, 250)));
    // A 366x585 photograph shrunk to 41x64, its short side rounded up from 40.04.
    assert!(aspect_ratio_matches((366, 585), (41, 64)));
    assert!(!aspect_ratio_matches((48, 48), (48, 64)));
    assert!(!aspect_ratio_matches((64, 48), (48, 64)));
    assert!(!aspect_ratio_matches((50, 64), (48, 64)));
}

#[test]
fn masked_commands_reject_bad_input() {
    let dir = fixture();
    let scratch = TestFolder::new("bad-input");
    let run = run_path();
    let pasted_png = dir.join("pasted.png");
    let mask_png = dir.join("mask.png");
    let harmonize = |reference: &Path, mask: &Path, start: &str| {
        singan_error(&[
            "harmonize",
            text(&run),
            "--ref",
            text(reference),
            "--mask",
            text(mask),
            "--start-scale",
            start,
            "--out",
            text(&scratch.join("out")),
        ])
    };

    // Another aspect ratio: the message names both sizes and the fix.
    image::RgbImage::new(48, 48)
        .save(scratch.join("square.png"))
        .unwrap();
    let error = harmonize(&scratch.join("square.png"), &mask_png, "1");
    assert!(error.contains("48x48"), "{error}");
    assert!(error.contains("48x64"), "{error}");
    assert!(error.contains("aspect ratio"), "{error}");
    assert!(error.contains("crop or pad"), "{error}");
    let error = harmonize(&pasted_png, &scratch.join("square.png"), "1");
    assert!(error.contains("mask"), "{error}");
    assert!(error.contains("aspect ratio"), "{error}");

    // A missing file.
    let error = harmonize(&scratch.join("missing.png"), &mask_png, "1");
    assert!(error.contains("missing.png"), "{error}");
    assert!(error.contains("not found"), "{error}");

    // An unreadable image.
    std::fs::write(scratch.join("garbage.png"), b"this is not an image").unwrap();
    let error = harmonize(&scratch.join("garbage.png"), &mask_png, "1");
    assert!(error.contains("garbage.png"), "{error}");

    // An all-black mask.
    image::RgbImage::new(WIDTH, HEIGHT)
        .save(scratch.join("black.png"))
        .unwrap();
    let error = harmonize(&pasted_png, &scratch.join("black.png"), "1");
    assert!(error.contains("no pixel"), "{error}");

    // Start scales out of range.
    let last = finest();
    let error = harmonize(&pasted_png, &mask_png, "9");
    assert!(error.contains("--start-scale 9"), "{error}");
    assert!(error.contains(&format!("from 1 to {last}")), "{error}");
    let error = harmonize(&pasted_png, &mask_png, "0");
    assert!(error.contains("--start-scale 0"), "{error}");
    let error = singan_error(&[
        "edit",
        text(&run),
        "--ref",
        text(&pasted_png),
        "--mask",
        text(&mask_png),
        "--start-scale",
        "9",
    ]);
    assert!(error.contains("--start-scale 9"), "{error}");

    // A missing run folder.
    let error = singan_error(&[
        "harmonize",
        text(&scratch.join("no-run")),
        "--ref",
        text(&pasted_png),
        "--mask",
        text(&mask_png),
        "--start-scale",
        "1",
    ]);
    assert!(error.contains("no trained model"), "{error}");
    assert!(
        !scratch.join("no-run").exists(),
        "a failed command created the run folder"
    );
}

#[test]
fn incomplete_run_names_resume() {
    let dir = TestFolder::new("incomplete");
    let mut model = load_model::<f32>(&run_path()).unwrap();
    model.generators.truncate(2);
    model.info.amplitudes.truncate(2);
    model.info.finished_scales = 2;
    save_model(&dir, &model).unwrap();
    let error = singan_error(&["animate", text(&dir), "--frames", "2"]);
    assert!(error.contains("finished 2 of"), "{error}");
    assert!(error.contains("--resume"), "{error}");
}

#[test]
fn paint2image_with_and_without_quantize() {
    let out = TestFolder::new("paint");
    // A painting: four flat colour bands.
    let painting = image::RgbImage::from_fn(WIDTH, HEIGHT, |_, y| {
        image::Rgb(match y * 4 / HEIGHT {
            0 => [110, 160, 230],
            1 => [140, 190, 220],
            2 => [80, 110, 50],
            _ => [100, 80, 60],
        })
    });
    painting.save(out.join("painting.png")).unwrap();
    let painting_path = out.join("painting.png");
    let run = run_path();
    singan_ok(&[
        "paint2image",
        text(&run),
        "--ref",
        text(&painting_path),
        "--start-scale",
        "1",
        "--out",
        text(&out),
    ]);
    assert_eq!(
        decode_rgb(&out.join("start_scale=1.png")).dimensions(),
        (WIDTH, HEIGHT)
    );

    let (_, stderr) = singan_ok(&[
        "paint2image",
        text(&run),
        "--ref",
        text(&painting_path),
        "--start-scale",
        "1",
        "--quantize",
        "--num-steps",
        "3",
        "--out",
        text(&out),
    ]);
    assert!(stderr.contains("for 4 iterations"), "{stderr}");
    assert!(stderr.contains("iteration 3/3"), "{stderr}");
    assert_eq!(
        decode_rgb(&out.join("start_scale=1_quantized.png")).dimensions(),
        (WIDTH, HEIGHT)
    );
    let quantized = decode_rgb(&out.join("start_scale=1_painting_quantized.png"));
    let mut colours: Vec<[u8; 3]> = quantized.pixels().map(|p| p.0).collect();
    colours.sort();
    colours.dedup();
    assert!(
        colours.len() <= 5,
        "the quantised painting has {} colours",
        colours.len()
    );

    // --num-steps only applies to the retraining.
    let (code, _, stderr) = singan(&[
        "paint2image",
        text(&run),
        "--ref",
        text(&painting_path),
        "--start-scale",
        "1",
        "--num-steps",
        "3",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--quantize"), "{stderr}");
}

#[test]
fn kmeans_finds_distinct_colours() {
    // Three colours in unequal amounts: the palette is exactly those colours.
    let colours = [[-1.0f32, 0.0, 1.0], [0.5, 0.5, -0.5], [0.9, -0.9, 0.1]];
    let (h, w) = (6, 10);
    let mut data = vec![0.0f32; 3 * h * w];
    for i in 0..h * w {
        let colour = colours[if i < 30 {
            0
        } else if i < 50 {
            1
        } else {
            2
        }];
        for c in 0..3 {
            data[c * h * w + i] = colour[c];
        }
    }
    let image = Planes::new(3, h, w, data).unwrap();
    let palette = Palette::kmeans(&image, 5, 0).unwrap();
    assert_eq!(palette.centres.len(), 3, "{palette:?}");
    for colour in colours {
        assert!(
            palette.centres.contains(&colour),
            "{colour:?} missing from {palette:?}"
        );
    }
    assert_eq!(palette.quantize(&image).unwrap(), image);
}

#[test]
fn kmeans_is_deterministic() {
    let image = load_image(fixture().join("training.png"), AlphaBackground::White).unwrap();
    let first = Palette::kmeans(&image, 5, 7).unwrap();
    let second = Palette::kmeans(&image, 5, 7).unwrap();
    assert_eq!(first, second);
    assert_eq!(first.centres.len(), 5);
    let quantized = first.quantize(&image).unwrap();
    for i in 0..quantized.plane_len() {
        let pixel = [
            quantized.data[i],
            quantized.data[quantized.plane_len() + i],
            quantized.data[2 * quantized.plane_len() + i],
        ];
        assert!(first.centres.contains(&pixel));
    }
}

#[test]
fn sr_plan_steps() {
    let plan = SrPlan::new(4.0).unwrap();
    assert_eq!(plan.steps, 6);
    assert!((plan.step_factor - 4f64.powf(1.0 / 6.0)).abs() < 1e-12);
    assert!((plan.scale_factor_init() - 0.7937005259840998).abs() < 1e-12);
    assert_eq!(SrPlan::new(2.0).unwrap().steps, 3);
    // A factor close to 1 still takes one step.
    let small = SrPlan::new(1.1).unwrap();
    assert_eq!(small.steps, 1);
    assert!((small.step_factor - 1.1).abs() < 1e-12);
    for bad in [1.0, 0.5, 0.0, -2.0, f64::NAN, f64::INFINITY] {
        let error = SrPlan::new(bad).unwrap_err().to_string();
        assert!(error.contains("--factor"), "{error}");
    }
}

#[test]
fn sr_output_sizes() {
    let mut model = load_model::<f32>(&run_path()).unwrap();
    let mut rng = Rng::new(3);
    for (factor, expected) in [
        (4.0, (192, 256)),
        (2.0, (96, 128)),
        (2.5, (120, 160)),
        (1.3, (62, 83)),
    ] {
        let plan = SrPlan::new(factor).unwrap();
        let mut steps = 0;
        let output = super_resolve(&mut model, &plan, &mut rng, &mut |_, _| steps += 1).unwrap();
        assert_eq!((output.height, output.width), expected, "factor {factor}");
        assert_eq!(steps, plan.steps, "factor {factor}");
        assert!(output.data.iter().all(|v| v.is_finite()), "factor {factor}");
    }
}

#[test]
fn sr_output_limit_is_inclusive() {
    // 64 x 256 is exactly the limit of 16384 pixels per side, which is allowed.
    let plan = SrPlan::new(256.0).unwrap();
    assert_eq!(plan.checked_output_size((64, 64)).unwrap(), (16384, 16384));
    assert_eq!(plan.checked_output_size((48, 64)).unwrap(), (12288, 16384));

    let plan = SrPlan::new(256.5).unwrap();
    let error = plan.checked_output_size((64, 64)).unwrap_err().to_string();
    assert!(error.contains("16416x16416"), "{error}");
    assert!(
        error.contains("over the limit of 16384 pixels per side"),
        "{error}"
    );
    assert!(error.contains("at most 256 "), "{error}");

    // The suggested factor is rounded down, so it passes the check.
    let plan = SrPlan::new(100.0).unwrap();
    let error = plan
        .checked_output_size((250, 188))
        .unwrap_err()
        .to_string();
    assert!(error.contains("at most 65.536 "), "{error}");
    let suggested = SrPlan::new(65.536).unwrap();
    assert_eq!(
        suggested.checked_output_size((250, 188)).unwrap(),
        (16384, 12320)
    );
}

#[test]
fn sr_from_run_dir() {
    let out = TestFolder::new("sr-run");
    let run = run_path();
    let (stdout, stderr) = singan_ok(&["sr", text(&run), "--factor", "2", "--out", text(&out)]);
    assert!(stdout.contains("factor=2.png"), "{stdout}");
    // The fixture run was trained with the default settings, which the command points out.
    assert!(
        stderr.contains("not trained with the super-resolution settings"),
        "{stderr}"
    );
    assert_eq!(
        decode_rgb(&out.join("factor=2.png")).dimensions(),
        (2 * WIDTH, 2 * HEIGHT)
    );

    for bad in ["1", "0.5", "0", "-3", "nan"] {
        let error = singan_error(&["sr", text(&run), "--factor", bad, "--out", text(&out)]);
        assert!(error.contains("--factor"), "{error}");
    }
    let error = singan_error(&["sr", text(&run), "--factor", "1000"]);
    assert!(error.contains("limit"), "{error}");
    let error = singan_error(&["sr", text(&run), "--num-steps", "3"]);
    assert!(error.contains("--num-steps"), "{error}");
    assert!(error.contains("only when the input is an image"), "{error}");
    let error = singan_error(&["sr", text(&out.join("missing.png"))]);
    assert!(error.contains("not found"), "{error}");
}

#[test]
fn sr_trains_from_image() {
    let dir = TestFolder::new("sr-image");
    let (w, h) = (30, 24);
    scene(w, h).save(dir.join("small.png")).unwrap();
    let (stdout, _) = singan_ok(&[
        "sr",
        text(&dir.join("small.png")),
        "--num-steps",
        "3",
        "--max-features",
        "8",
        "--min-features",
        "8",
        "--results-dir",
        text(&dir),
        "--save",
        "run",
    ]);
    let run = dir.join("run");
    assert!(stdout.contains("factor=4.png"), "{stdout}");
    let output = decode_rgb(&run.join("sr").join("factor=4.png"));
    assert_eq!(output.dimensions(), (4 * w, 4 * h));
    let model = load_model::<f32>(&run).unwrap();
    assert!(model.is_complete());
    assert_eq!(model.info.config.min_size, 18);
    assert_eq!(model.info.config.reconstruction_weight, 100.0);
    assert!((model.info.config.scale_factor_init - 0.7937005259840998).abs() < 1e-12);
    assert_eq!(model.info.config.num_steps, 3);

    // The run folder now contains a model, so training into it again is rejected.
    let error = singan_error(&[
        "sr",
        text(&dir.join("small.png")),
        "--num-steps",
        "3",
        "--results-dir",
        text(&dir),
        "--save",
        "run",
    ]);
    assert!(error.contains("already holds a trained model"), "{error}");

    // A factor whose output exceeds the size limit is rejected before any training.
    let error = singan_error(&[
        "sr",
        text(&dir.join("small.png")),
        "--factor",
        "1000",
        "--results-dir",
        text(&dir),
        "--save",
        "huge",
    ]);
    assert!(error.contains("limit"), "{error}");
    assert!(
        !dir.join("huge").exists(),
        "the rejected run created its folder"
    );
}

/// Runs `sr` on `dir/small.png` with `--save name` in `results`, asserts that it failed and
/// returns stderr. The tests pass names that the run-folder check rejects before any training.
fn sr_save_error(dir: &Path, results: &Path, name: &str) -> String {
    singan_error(&[
        "sr",
        text(&dir.join("small.png")),
        "--num-steps",
        "1",
        "--results-dir",
        text(results),
        "--save",
        name,
        "--device",
        "cpu",
    ])
}

#[test]
fn sr_rejects_save_outside_results_dir() {
    let dir = TestFolder::new("sr-save");
    let results = dir.join("results");
    std::fs::create_dir_all(&results).unwrap();
    scene(30, 24).save(dir.join("small.png")).unwrap();
    let outside = dir.join("outside");
    for name in ["", ".", "..", "../escaped", text(&outside), "a/b"] {
        let error = sr_save_error(&dir, &results, name);
        assert!(error.contains("plain folder name"), "{name:?}: {error}");
        assert!(error.contains(&format!("{name:?}")), "{name:?}: {error}");
    }
    // Nothing was written: the results folder is still empty and nothing appeared beside it.
    assert_eq!(std::fs::read_dir(&results).unwrap().count(), 0);
    assert!(!dir.join("escaped").exists());
    assert!(!outside.exists());
}

#[test]
fn sr_hint_quotes_run_folder() {
    let dir = TestFolder::new("sr-quoted-hint");
    let results = dir.join("results with space");
    std::fs::create_dir_all(results.join("run")).unwrap();
    // The name check reads only whether the model file exists, so an empty one will do.
    std::fs::write(results.join("run").join("model.safetensors"), b"").unwrap();
    scene(30, 24).save(dir.join("small.png")).unwrap();
    let error = sr_save_error(&dir, &results, "run");
    // The suggested command keeps the factor (the default 4 here).
    let expected = format!(
        "upscale with that run: singan sr '{}/run' --factor 4",
        results.display()
    );
    assert!(error.contains(&expected), "{error}");
}

#[test]
fn sr_checks_out_before_training() {
    let dir = TestFolder::new("sr-out-file");
    let results = dir.join("results");
    let file = dir.write("file", b"x");
    scene(30, 24).save(dir.join("small.png")).unwrap();
    let error = singan_error(&[
        "sr",
        text(&dir.join("small.png")),
        "--num-steps",
        "1",
        "--results-dir",
        text(&results),
        "--out",
        text(&file),
        "--device",
        "cpu",
    ]);
    let expected = format!("{}: is a file, not a folder", file.display());
    assert!(error.contains(&expected), "{error}");
    // The check ran before the training, which would have created the results folder.
    assert!(!results.exists(), "training ran before the check");
}

#[test]
fn concurrent_sr_runs_get_own_folders() {
    let dir = TestFolder::new("sr-concurrent");
    let image = dir.join("small.png");
    scene(30, 24).save(&image).unwrap();
    let results = dir.join("results");
    let args = [
        "sr",
        text(&image),
        "--num-steps",
        "1",
        "--max-features",
        "8",
        "--min-features",
        "8",
        "--results-dir",
        text(&results),
        "--device",
        "cpu",
    ];

    // Started together, the runs get the same UTC start time unless a second boundary falls
    // between them, so their folder names collide without -2, -3 appended.
    for output in common::singan_concurrently(&args, 3) {
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let folders: Vec<PathBuf> = common::folder_entries(&results);
    assert_eq!(folders.len(), 3, "{folders:?}");
    for folder in &folders {
        assert!(folder.join("model.safetensors").is_file(), "{folder:?}");
        assert!(
            folder.join("sr").join("factor=4.png").is_file(),
            "{folder:?}"
        );
    }
}

#[test]
fn output_path_naming_file_rejected() {
    let dir = TestFolder::new("out-file");
    let file = dir.join("taken");
    std::fs::write(&file, b"x").unwrap();
    let run = run_path();
    for command in ["sample", "animate"] {
        let args = [command, text(&run), "--out", text(&file), "--device", "cpu"];
        let error = singan_error(&args);
        assert!(
            error.contains("is a file, not a folder"),
            "{command}: {error}"
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"x");

    // A folder inside that file names the file, not the operating system's "Not a directory".
    let nested = file.join("sub");
    for command in ["sample", "animate"] {
        let args = [
            command,
            text(&run),
            "--out",
            text(&nested),
            "--device",
            "cpu",
        ];
        let error = singan_error(&args);
        let expected = format!("{}: is a file, not a folder", file.display());
        assert!(error.contains(&expected), "{command}: {error}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

#[test]
fn sample_checks_targets_before_rendering() {
    let out = TestFolder::new("sample-target-folder");
    let blocked = out.join("sample_001.png");
    std::fs::create_dir(&blocked).unwrap();
    let run = run_path();
    let args = [
        "sample",
        text(&run),
        "--num-samples",
        "3",
        "--out",
        text(&out),
    ];
    let error = singan_error(&[&args[..], &["--device", "cpu"]].concat());
    let expected = format!("{}: is a folder", blocked.display());
    assert!(error.contains(&expected), "{error}");
    // The check ran before the first sample, so nothing was written.
    assert_eq!(out.entry_names(), ["sample_001.png"]);
    assert!(blocked.is_dir());
}

#[test]
fn rejected_sample_option_creates_no_folder() {
    let dir = TestFolder::new("sample-bad-option");
    let out = dir.join("samples");
    let run = run_path();
    let args = [
        "sample",
        text(&run),
        "--start-scale",
        "9",
        "--out",
        text(&out),
    ];
    let error = singan_error(&[&args[..], &["--device", "cpu"]].concat());
    assert!(error.contains("--start-scale 9"), "{error}");
    assert!(
        !out.exists(),
        "the rejected command created {}",
        out.display()
    );
}

#[test]
fn animate_checks_target_before_rendering() {
    let out = TestFolder::new("animate-target-folder");
    let blocked = out.join("start_scale=0").join("alpha=0.1_beta=0.9.gif");
    std::fs::create_dir_all(&blocked).unwrap();
    let run = run_path();
    let args = ["animate", text(&run), "--frames", "20", "--out", text(&out)];
    let error = singan_error(&[&args[..], &["--device", "cpu"]].concat());
    let expected = format!("{}: is a folder", blocked.display());
    assert!(error.contains(&expected), "{error}");
    let context = format!(
        "(animate writes alpha=0.1_beta=0.9.gif into the start_scale=0 subfolder of {})",
        out.display()
    );
    assert!(error.contains(&context), "{error}");
    // Rendering prints a line every 10 frames, so none means no frame was drawn.
    assert!(!error.contains("frame 10/20"), "{error}");
    assert!(blocked.is_dir());
    assert_eq!(
        common::folder_entries(&out.join("start_scale=0")),
        [blocked]
    );
}

#[test]
fn animate_rejects_frames_beyond_memory() {
    let out = TestFolder::new("animate-huge");
    let run = run_path();
    let error = singan_error(&[
        "animate",
        text(&run),
        "--frames",
        "100000000",
        "--out",
        text(&out),
    ]);
    assert!(error.contains("--frames 100000000"), "{error}");
    assert!(error.contains("use at most"), "{error}");
    assert!(
        !out.join("start_scale=0").exists(),
        "the rejected animation created its folder"
    );
}

#[test]
fn animate_writes_gif_with_frames() {
    let out = TestFolder::new("animate");
    let run = run_path();
    let (stdout, _) = singan_ok(&["animate", text(&run), "--frames", "7", "--out", text(&out)]);
    let path = out.join("start_scale=0").join("alpha=0.1_beta=0.9.gif");
    assert!(stdout.contains("7 frames"), "{stdout}");
    let decoder =
        GifDecoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap())).unwrap();
    let frames = decoder.into_frames().collect_frames().unwrap();
    assert_eq!(frames.len(), 7);
    for frame in &frames {
        assert_eq!(frame.buffer().dimensions(), (WIDTH, HEIGHT));
        assert_eq!(frame.delay().numer_denom_ms(), (100, 1));
    }
    assert_ne!(
        frames[0].buffer(),
        frames[6].buffer(),
        "the animation does not move"
    );

    singan_ok(&[
        "animate",
        text(&run),
        "--frames",
        "3",
        "--start-scale",
        "1",
        "--alpha",
        "0.2",
        "--beta",
        "0.8",
        "--fps",
        "5",
        "--out",
        text(&out),
    ]);
    let path = out.join("start_scale=1").join("alpha=0.2_beta=0.8.gif");
    let decoder =
        GifDecoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap())).unwrap();
    let frames = decoder.into_frames().collect_frames().unwrap();
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[0].delay().numer_denom_ms(), (200, 1));
}

#[test]
fn animate_rejects_bad_options() {
    let run = run_path();
    let out = TestFolder::new("animate-bad");
    let cases: [(&[&str], &str); 6] = [
        (&["--frames", "0"], "--frames 0"),
        (&["--alpha", "1.5"], "--alpha 1.5"),
        (&["--beta", "-0.1"], "--beta -0.1"),
        (&["--fps", "0"], "--fps 0"),
        (&["--fps", "60"], "--fps 60"),
        (&["--start-scale", "9"], "--start-scale 9"),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["animate", text(&run), "--out", text(&out)];
        args.extend_from_slice(extra);
        let error = singan_error(&args);
        assert!(error.contains(expected), "{args:?}: {error}");
    }
}

#[test]
fn animation_frames_below_start_scale() {
    let mut model = load_model::<f32>(&run_path()).unwrap();
    let last = model.info.pyramid.sizes.len() - 1;
    let options = AnimationOptions {
        start_scale: last,
        frames: 4,
        ..AnimationOptions::default()
    };
    let mut count = 0;
    let frames = animate(&mut model, &options, &mut Rng::new(1), &mut |_| count += 1).unwrap();
    assert_eq!(frames.len(), 4);
    assert_eq!(count, 4);
    // Only the finest scale moves, so frames differ but stay close to each other.
    let difference: f32 = frames[0]
        .data
        .iter()
        .zip(&frames[3].data)
        .map(|(a, b)| (a - b).abs())
        .sum::<f32>()
        / frames[0].data.len() as f32;
    assert!(difference > 0.0);
    assert!(difference < 0.5, "mean difference {difference}");
    let gif = encode_gif(&frames, 10).unwrap();
    let decoder = GifDecoder::new(std::io::Cursor::new(gif)).unwrap();
    assert_eq!(decoder.into_frames().collect_frames().unwrap().len(), 4);
}

#[test]
fn inject_checks_scale_and_size() {
    let mut model = load_model::<f32>(&run_path()).unwrap();
    let last = model.info.pyramid.sizes.len() - 1;
    let reference = load_image(fixture().join("pasted.png"), AlphaBackground::White).unwrap();
    let output = inject(&mut model, &reference, last, &mut Rng::new(2), "harmonize").unwrap();
    assert_eq!(
        (output.channels, output.height, output.width),
        (3, HEIGHT as usize, WIDTH as usize)
    );
    let error = inject(
        &mut model,
        &reference,
        last + 1,
        &mut Rng::new(2),
        "harmonize",
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains(&format!("--start-scale {}", last + 1)),
        "{error}"
    );
    let small = Planes::filled(3, 10, 10, 0.0f32);
    assert!(inject(&mut model, &small, 1, &mut Rng::new(2), "harmonize").is_err());
}

/// Returns the path of the sample photograph `name`, or `None` after printing `skipped:` when
/// it is missing.
fn shared_image(name: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/images")
        .join(name);
    if path.is_file() {
        Some(path)
    } else {
        println!("skipped: {} not found", path.display());
        None
    }
}

fn planes_to_rgb(planes: &Planes<f32>) -> image::RgbImage {
    let plane = planes.plane_len();
    image::RgbImage::from_fn(planes.width as u32, planes.height as u32, |x, y| {
        let i = y as usize * planes.width + x as usize;
        image::Rgb([0, 1, 2].map(|c| encode_byte(planes.data[c * plane + i])))
    })
}

/// Cuts the large balloon out of `balloons` (pixels within 28 of its centre whose colour is
/// far from the surrounding sky) and pastes it into the sky of `tree`. Returns the pasted
/// image and the mask of the pasted pixels, both at the size of `tree`.
fn paste_balloon(
    tree: &image::RgbImage,
    balloons: &image::RgbImage,
) -> (image::RgbImage, image::RgbImage) {
    let (cx, cy, radius) = (155i64, 28i64, 28i64);
    let (tx, ty) = (60i64, 55i64);
    let inside = |x: i64, y: i64, r: i64| (x - cx).pow(2) + (y - cy).pow(2) <= r * r;
    let in_bounds = |x: i64, y: i64| {
        x >= 0 && y >= 0 && x < balloons.width() as i64 && y < balloons.height() as i64
    };

    // The sky colour: the mean of a ring just outside the disc.
    let mut sky = [0.0f64; 3];
    let mut count = 0.0;
    for y in cy - radius - 4..=cy + radius + 4 {
        for x in cx - radius - 4..=cx + radius + 4 {
            if in_bounds(x, y) && inside(x, y, radius + 4) && !inside(x, y, radius + 1) {
                let p = balloons.get_pixel(x as u32, y as u32).0;
                for c in 0..3 {
                    sky[c] += f64::from(p[c]);
                }
                count += 1.0;
            }
        }
    }
    let sky = sky.map(|v| v / count);

    let mut pasted = tree.clone();
    let mut mask = image::RgbImage::new(tree.width(), tree.height());
    for y in cy - radius..=cy + radius {
        for x in cx - radius..=cx + radius {
            if !in_bounds(x, y) || !inside(x, y, radius) {
                continue;
            }
            let p = balloons.get_pixel(x as u32, y as u32).0;
            let distance: f64 = (0..3)
                .map(|c| (f64::from(p[c]) - sky[c]).powi(2))
                .sum::<f64>()
                .sqrt();
            let (px, py) = (x - cx + tx, y - cy + ty);
            if distance > 60.0
                && px >= 0
                && py >= 0
                && px < tree.width() as i64
                && py < tree.height() as i64
            {
                pasted.put_pixel(px as u32, py as u32, image::Rgb(p));
                mask.put_pixel(px as u32, py as u32, image::Rgb([255; 3]));
            }
        }
    }
    (pasted, mask)
}

/// Loads a photograph as training loads it (alpha over white), as 8-bit RGB.
fn load_photo(path: &Path) -> image::RgbImage {
    planes_to_rgb(&load_image(path, AlphaBackground::White).unwrap())
}

#[test]
fn photo_harmonize_and_sr() {
    let (Some(tree_path), Some(balloons_path), Some(low_res)) = (
        shared_image("tree.png"),
        shared_image("balloons.png"),
        shared_image("33039_LR.png"),
    ) else {
        return;
    };
    let dir = TestFolder::new("photos");
    let (pasted, mask) = paste_balloon(&load_photo(&tree_path), &load_photo(&balloons_path));
    let masked_pixels = mask.pixels().filter(|p| p.0[0] > 0).count();
    assert!(
        masked_pixels > 500,
        "the balloon cut-out has only {masked_pixels} pixels"
    );
    pasted.save(dir.join("pasted.png")).unwrap();
    mask.save(dir.join("mask.png")).unwrap();

    // A tiny run at 64x64, so the 250x250 reference and mask are resized.
    let tiny = [
        "--num-steps",
        "3",
        "--max-features",
        "8",
        "--min-features",
        "8",
        "--seed",
        "2",
    ];
    let mut args = vec![
        "train",
        text(&tree_path),
        "--max-size",
        "64",
        "--eval-every",
        "3",
        "--results-dir",
        text(&dir),
        "--save",
        "tree",
    ];
    args.extend(tiny);
    singan_ok(&args);
    let run = dir.join("tree");
    let out = dir.join("harmonize");
    let (_, stderr) = singan_ok(&[
        "harmonize",
        text(&run),
        "--ref",
        text(&dir.join("pasted.png")),
        "--mask",
        text(&dir.join("mask.png")),
        "--start-scale",
        "2",
        "--out",
        text(&out),
    ]);
    assert!(stderr.contains("is 250x250; resized to 64x64"), "{stderr}");
    let output = decode_rgb(&out.join("start_scale=2.png"));

    // Outside the mask the output has the bytes of the reference after its resize to 64x64.
    let model = load_model::<f32>(&run).unwrap();
    let fit = |path: &Path, background| {
        let image = load_image(path, background).unwrap();
        fit_to_size("harmonize", image, (64, 64), "image", "64x64")
            .unwrap()
            .planes
    };
    let reference = planes_to_rgb(&fit(&dir.join("pasted.png"), AlphaBackground::White));
    let soft = prepare_mask(
        &fit(&dir.join("mask.png"), AlphaBackground::Black),
        &MaskOptions::HARMONIZATION,
        "mask",
    )
    .unwrap();
    assert_eq!(*model.info.pyramid.sizes.last().unwrap(), (64, 64));
    assert_unchanged_outside(&output, &reference, &soft);

    // Super-resolution of the low-resolution photograph, trained here for a few steps.
    let mut args = vec![
        "sr",
        text(&low_res),
        "--results-dir",
        text(&dir),
        "--save",
        "low_res",
    ];
    args.extend(tiny);
    singan_ok(&args);
    let upscaled = decode_rgb(&dir.join("low_res").join("sr").join("factor=4.png"));
    let source = image::open(&low_res).unwrap();
    assert_eq!(
        upscaled.dimensions(),
        (4 * source.width(), 4 * source.height())
    );
}

/// Writes the inputs of the harmonization demo in docs/apps.md to `target/apps-demo/`.
#[test]
#[ignore = "writes the demo inputs; run it by name with --ignored"]
fn write_demo_inputs() {
    // Run by name, a missing photograph is a failure rather than a skip, because nothing
    // would be written.
    let (Some(tree_path), Some(balloons_path)) =
        (shared_image("tree.png"), shared_image("balloons.png"))
    else {
        panic!("the demo inputs need the tree.png and balloons.png photographs (see above)");
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/apps-demo");
    std::fs::create_dir_all(&dir).unwrap();
    let (pasted, mask) = paste_balloon(&load_photo(&tree_path), &load_photo(&balloons_path));
    pasted.save(dir.join("tree_balloon.png")).unwrap();
    mask.save(dir.join("tree_balloon_mask.png")).unwrap();
    println!(
        "wrote {} and {}",
        dir.join("tree_balloon.png").display(),
        dir.join("tree_balloon_mask.png").display()
    );
}
