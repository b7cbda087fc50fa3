//! The `train` and `sample` commands as a user runs them, with images the tests write.

use std::path::{Path, PathBuf};
use std::process::Command;

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

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("singan-cli-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a `w`x`h` RGB PNG with a diagonal pattern.
fn write_png(path: &Path, w: u32, h: u32) {
    let image = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 7) as u8, ((x + y) * 3) as u8])
    });
    image.save(path).unwrap();
}

const TINY: [&str; 10] = [
    "--num-steps",
    "2",
    "--max-features",
    "8",
    "--min-features",
    "8",
    "--seed",
    "1",
    "--eval-every",
    "2",
];

/// Returns the arguments of a tiny `train` run on `image` into `results/run`.
fn tiny_train_args<'a>(image: &'a Path, results: &'a Path) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        image.to_str().unwrap(),
        "--results-dir",
        results.to_str().unwrap(),
        "--save",
        "run",
    ];
    args.extend(TINY);
    args
}

#[test]
fn train_then_sample_writes_images() {
    let dir = temp_dir("ok");
    let image = dir.join("input.png");
    write_png(&image, 44, 36);
    let results = dir.join("results");
    let args = tiny_train_args(&image, &results);
    let (code, stdout, stderr) = singan(&args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("s0"), "no scale table:\n{stdout}");
    assert!(stdout.contains("model saved in"), "{stdout}");
    let run = results.join("run");
    assert!(run.join("model.safetensors").is_file());

    let out = dir.join("samples");
    let (code, stdout, stderr) = singan(&[
        "sample",
        run.to_str().unwrap(),
        "--num-samples",
        "2",
        "--scale-w",
        "1.5",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for name in ["sample_000.png", "sample_001.png"] {
        let image = image::open(out.join(name)).unwrap();
        assert_eq!(image.height(), 36);
        assert_eq!(image.width(), 66);
    }

    // A second train into the same run folder is refused rather than overwriting it.
    let (code, _, stderr) = singan(&args);
    assert_eq!(code, 2);
    assert!(stderr.contains("already holds a trained model"), "{stderr}");
}

#[test]
fn sample_rejects_pixel_counts() {
    let dir = temp_dir("pixels");
    let image = dir.join("input.png");
    write_png(&image, 44, 36);
    let results = dir.join("results");
    let args = tiny_train_args(&image, &results);
    assert_eq!(singan(&args).0, 0);
    let (code, _, stderr) = singan(&[
        "sample",
        results.join("run").to_str().unwrap(),
        "--scale-w",
        "250",
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("looks like a pixel count"), "{stderr}");
}

#[test]
fn missing_image_names_the_file() {
    let (code, _, stderr) = singan(&["train", "/nonexistent/picture.png"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("/nonexistent/picture.png"), "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");
}

#[test]
fn empty_and_garbage_files_are_rejected() {
    let dir = temp_dir("bad");
    let empty = dir.join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    let (code, _, stderr) = singan(&[
        "train",
        empty.to_str().unwrap(),
        "--results-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("empty"), "{stderr}");

    let garbage = dir.join("garbage.png");
    std::fs::write(&garbage, b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
    let (code, _, stderr) = singan(&[
        "train",
        garbage.to_str().unwrap(),
        "--results-dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("garbage.png"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Nothing is left behind for a rejected input.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);
}

#[test]
fn too_small_image_suggests_min_size() {
    let dir = temp_dir("small");
    let image = dir.join("small.png");
    write_png(&image, 20, 18);
    let results = dir.join("results");
    let (code, _, stderr) = singan(&[
        "train",
        image.to_str().unwrap(),
        "--results-dir",
        results.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("small.png"), "{stderr}");
    assert!(stderr.contains("18x20"), "{stderr}");
    assert!(stderr.contains("--min-size"), "{stderr}");
    assert!(
        !results.exists(),
        "a rejected image must not create a run folder"
    );
}

#[test]
fn invalid_options_are_rejected() {
    let (code, _, stderr) = singan(&["train", "--seed", "-5"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--seed -5"), "{stderr}");
    let (code, _, stderr) = singan(&["train", "--kernel-size", "4"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--kernel-size 4"), "{stderr}");
    let (code, _, stderr) = singan(&["train", "--lr", "-1"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--lr -1 must be a finite number above 0"),
        "{stderr}"
    );
    let (code, _, stderr) = singan(&["train", "--gen-betas", "0.5"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("B1,B2"), "{stderr}");
    let (code, _, stderr) = singan(&["train", "--save", "../elsewhere"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("plain folder name"), "{stderr}");
    let (code, _, stderr) = singan(&["train", "--step-size", "0"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--step-size"), "{stderr}");
    let (code, _, stderr) = singan(&["sample", "/nonexistent/run"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no trained model"), "{stderr}");
    let (code, _, stderr) = singan(&["train", "--resume", "/nonexistent/run"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--resume"), "{stderr}");
}

#[test]
fn cuda_device_without_gpu_is_rejected() {
    if singan::cuda::probe_device(0).is_ok() {
        println!("skipped: a CUDA GPU is present, so --device cuda is accepted");
        return;
    }
    let dir = temp_dir("cuda");
    let image = dir.join("input.png");
    write_png(&image, 44, 36);
    let results = dir.join("results");
    let args = tiny_train_args(&image, &results);

    let mut on_cuda = args.clone();
    on_cuda.extend(["--device", "cuda"]);
    let (code, _, stderr) = singan(&on_cuda);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--device cuda: no usable CUDA GPU"),
        "{stderr}"
    );
    assert!(stderr.contains("use --device cpu"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !results.exists(),
        "a rejected device must not create a run folder"
    );

    let (code, _, stderr) = singan(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("device: cpu (no usable CUDA GPU"),
        "--device auto must say that it picked the CPU and why:\n{stderr}"
    );

    let (code, _, stderr) = singan(&[
        "sample",
        results.join("run").to_str().unwrap(),
        "--device",
        "cuda",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--device cuda: no usable CUDA GPU"),
        "{stderr}"
    );
}

#[test]
fn image_instead_of_run_is_named() {
    let dir = temp_dir("image-as-run");
    let png = dir.join("picture.png");
    write_png(&png, 44, 36);
    let jpeg = dir.join("picture.jpg");
    image::RgbImage::from_pixel(8, 8, image::Rgb([90, 120, 200]))
        .save(&jpeg)
        .unwrap();
    // A PNG renamed to look like a model file reaches the model loader of `sr` as well.
    let renamed = dir.join("renamed.safetensors");
    std::fs::copy(&png, &renamed).unwrap();
    let (png, jpeg, renamed) = (
        png.to_str().unwrap(),
        jpeg.to_str().unwrap(),
        renamed.to_str().unwrap(),
    );

    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("PNG", vec!["sample", png]),
        ("JPEG", vec!["sample", jpeg]),
        (
            "PNG",
            vec![
                "harmonize",
                png,
                "--ref",
                png,
                "--mask",
                png,
                "--start-scale",
                "1",
            ],
        ),
        (
            "PNG",
            vec![
                "edit",
                png,
                "--ref",
                png,
                "--mask",
                png,
                "--start-scale",
                "1",
            ],
        ),
        (
            "PNG",
            vec!["paint2image", png, "--ref", png, "--start-scale", "1"],
        ),
        ("PNG", vec!["animate", png]),
        ("PNG", vec!["sr", renamed]),
    ];
    for (format, mut args) in cases {
        args.extend(["--device", "cpu"]);
        let (code, _, stderr) = singan(&args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        let path = args[1];
        assert!(
            stderr.contains(&format!("{path} is a {format} image, not a trained model")),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains("Pass the run folder that `singan train` created"),
            "{args:?}: {stderr}"
        );
        assert!(
            !stderr.contains("not a valid safetensors file"),
            "{args:?}: {stderr}"
        );
    }
    // The three input files are all there is, so no output folder was created.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
}

#[test]
fn non_image_garbage_keeps_safetensors_error() {
    let dir = temp_dir("garbage-model");
    let garbage = dir.join("model.safetensors");
    std::fs::write(&garbage, b"this is neither a model nor an image").unwrap();
    let (code, _, stderr) = singan(&["sample", garbage.to_str().unwrap(), "--device", "cpu"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not a valid safetensors file"), "{stderr}");
    assert!(!stderr.contains("image"), "{stderr}");
}

#[test]
fn resume_warns_about_ignored_options() {
    let dir = temp_dir("resume-options");
    let image = dir.join("input.png");
    write_png(&image, 44, 36);
    let results = dir.join("results");
    assert_eq!(singan(&tiny_train_args(&image, &results)).0, 0);
    let run = results.join("run");
    let run = run.to_str().unwrap();

    let (code, stdout, stderr) = singan(&[
        "train",
        "--resume",
        run,
        "--num-steps",
        "5",
        "--lr",
        "0.001",
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let warning = stderr
        .lines()
        .find(|line| line.starts_with("warning: "))
        .unwrap_or_else(|| panic!("no warning:\n{stderr}"));
    assert!(
        warning.contains("ignoring --num-steps, --lr because --resume"),
        "{warning}"
    );
    assert!(!warning.contains("--device"), "{warning}");
    assert!(stdout.contains("nothing to resume"), "{stdout}");

    // A default value typed out is still an option the resumed run ignores.
    let (code, _, stderr) = singan(&["train", "--resume", run, "--num-steps", "4000"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("warning: ignoring --num-steps"), "{stderr}");

    let (code, _, stderr) = singan(&["train", "--resume", run, "--device", "cpu"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
}
