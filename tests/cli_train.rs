//! The `train` and `sample` commands as a user runs them, with images the tests write.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;
use common::TestFolder;

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

/// Writes a 44x36 training image into a new test folder named after `tag`, and returns the
/// folder, the image's path and the results folder beside it (not created).
fn tiny_training_input(tag: &str) -> (TestFolder, PathBuf, PathBuf) {
    let dir = TestFolder::new(tag);
    let image = dir.join("input.png");
    write_png(&image, 44, 36);
    let results = dir.join("results");
    (dir, image, results)
}

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
    let dir = TestFolder::new("ok");
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
    let (_dir, image, results) = tiny_training_input("pixels");
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
    let dir = TestFolder::new("bad");
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
    let dir = TestFolder::new("small");
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
    let (code, _, stderr) = singan(&["train", "--max-features", "256"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--max-features 256 is above 128"),
        "{stderr}"
    );
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
fn scale_factor_init_message_is_shared() {
    for value in ["0", "1.5", "1", "-0.5"] {
        let (code, _, stderr) = singan(&["train", "--scale-factor-init", value]);
        assert_eq!(code, 2, "{value}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "{value} must be strictly between 0 and 1, such as 0.75"
            )),
            "{value}: {stderr}"
        );
        let (code, _, stderr) = singan(&["bench", "iteration", "--scale-factor-init", value]);
        assert_eq!(code, 2, "{value}: {stderr}");
        assert!(
            stderr.contains("must be strictly between 0 and 1"),
            "{value}: {stderr}"
        );
    }
}

#[test]
fn negative_seed_of_sample_is_explained() {
    for command in ["sample", "animate", "sr"] {
        let (code, _, stderr) = singan(&[command, "/nonexistent/run", "--seed", "-1"]);
        assert_eq!(code, 2, "{command}: {stderr}");
        assert!(stderr.contains("-1 is negative"), "{command}: {stderr}");
        assert!(
            stderr.contains("only `singan train` takes -1"),
            "{command}: {stderr}"
        );
        assert!(!stderr.contains("tip:"), "{command}: {stderr}");
    }
}

#[test]
fn train_save_name_must_be_plain() {
    let dir = TestFolder::new("save-names");
    let results = dir.join("results");
    let outside = dir.join("outside");
    for name in [
        "",
        ".",
        "..",
        "../escaped",
        outside.to_str().unwrap(),
        "a/b",
    ] {
        let (code, _, stderr) = singan(&[
            "train",
            "--results-dir",
            results.to_str().unwrap(),
            "--save",
            name,
        ]);
        assert_eq!(code, 2, "{name:?}: {stderr}");
        assert!(stderr.contains("plain folder name"), "{name:?}: {stderr}");
    }
    assert!(!results.exists());
    assert!(!outside.exists());
    assert!(!dir.join("escaped").exists());
}

/// Runs the binary with stdout (`close_stdout`) or stderr closed before it writes anything,
/// as `singan ... | head -0` would, and returns what it wrote to the other stream.
fn singan_with_closed_pipe(args: &[&str], close_stdout: bool) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_singan"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if close_stdout {
        drop(child.stdout.take());
    } else {
        drop(child.stderr.take());
    }
    child.wait_with_output().unwrap()
}

/// Asserts that the process ended by SIGPIPE, as standard Unix tools do on a closed pipe, and
/// not by a panic (status 101).
#[cfg(unix)]
fn assert_ended_by_sigpipe(output: &Output) {
    use std::os::unix::process::ExitStatusExt;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGPIPE),
        "status {:?}: {stderr}",
        output.status
    );
}

/// Lists the temporary files (`.NAME.PID.N.tmp`) that an interrupted atomic write leaves.
fn temporary_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(temporary_files(&path));
        } else if path.extension().is_some_and(|e| e == "tmp") {
            found.push(path);
        }
    }
    found
}

#[cfg(unix)]
#[test]
fn closed_stdout_ends_sample_quietly() {
    let (_dir, image, results) = tiny_training_input("closed-stdout-sample");
    assert_eq!(singan(&tiny_train_args(&image, &results)).0, 0);

    let out = results.with_file_name("samples");
    let run = results.join("run");
    let args = [
        "sample",
        run.to_str().unwrap(),
        "--num-samples",
        "5",
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    let output = singan_with_closed_pipe(&args, true);
    assert_ended_by_sigpipe(&output);

    // The first path line fails, after the first image is written in full, so the command
    // stops before the fifth image.
    let written = common::folder_entries(&out);
    assert!(!written.is_empty());
    assert!(written.len() < 5, "{written:?}");
    for path in &written {
        let image = image::open(path).unwrap();
        assert_eq!((image.width(), image.height()), (44, 36), "{path:?}");
    }
    assert!(temporary_files(&out).is_empty());
}

#[cfg(unix)]
#[test]
fn closed_stdout_keeps_trained_model() {
    let (_dir, image, results) = tiny_training_input("closed-stdout-train");
    let mut args = tiny_train_args(&image, &results);
    args.extend(["--device", "cpu"]);
    // `train` writes stdout only after the last scale is saved, for its closing table.
    let output = singan_with_closed_pipe(&args, true);
    assert_ended_by_sigpipe(&output);
    let run = results.join("run");
    let model = singan::singan::run::load_model::<f32>(&run).unwrap();
    assert!(model.is_complete());
    assert!(
        temporary_files(&run).is_empty(),
        "{:?}",
        temporary_files(&run)
    );
}

#[cfg(unix)]
#[test]
fn closed_stderr_ends_train_quietly() {
    let (_dir, image, results) = tiny_training_input("closed-stderr-train");
    let mut args = tiny_train_args(&image, &results);
    args.extend(["--device", "cpu"]);
    let output = singan_with_closed_pipe(&args, false);
    assert_ended_by_sigpipe(&output);
    assert!(output.stdout.is_empty());
    if results.exists() {
        assert!(temporary_files(&results).is_empty());
    }
}

/// Writes what a training that stopped during scale 0 leaves: the log, the losses of the
/// iterations run so far and the scale's image folder, but no model.
fn write_stopped_run(run: &Path) {
    std::fs::create_dir_all(run.join("s0")).unwrap();
    std::fs::write(run.join("log.txt"), "configuration:\n{}\n").unwrap();
    std::fs::write(
        run.join("losses.jsonl"),
        "{\"scale\":0,\"iteration\":0,\"lr\":0.0005,\"D\":0.5}\n",
    )
    .unwrap();
}

#[test]
fn stopped_run_names_the_cause() {
    let dir = TestFolder::new("stopped");
    let results = dir.join("results");
    let run = results.join("run");
    write_stopped_run(&run);
    let run_text = run.to_str().unwrap();

    let (code, _, stderr) = singan(&["sample", run_text, "--device", "cpu"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("this run has no finished scale yet"),
        "{stderr}"
    );
    assert!(
        stderr.contains("stopped before the first scale was saved"),
        "{stderr}"
    );
    assert!(
        stderr.contains("Train again with `singan train`"),
        "{stderr}"
    );
    assert!(!stderr.contains("no trained model here"), "{stderr}");

    let (code, _, stderr) = singan(&["train", "--resume", run_text, "--device", "cpu"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--resume {run_text}: this run has no finished scale yet"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("no model.safetensors"), "{stderr}");

    let (code, _, stderr) = singan(&["animate", run_text, "--device", "cpu"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("this run has no finished scale yet"),
        "{stderr}"
    );

    // Training again under the same --save name says why the folder is in the way.
    let (code, _, stderr) = singan(&[
        "train",
        "--results-dir",
        results.to_str().unwrap(),
        "--save",
        "run",
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("stopped before its first scale was saved"),
        "{stderr}"
    );
    assert!(stderr.contains("remove the folder"), "{stderr}");
    assert_eq!(std::fs::read_dir(&run).unwrap().count(), 3);
}

#[test]
fn concurrent_trains_get_own_folders() {
    let dir = TestFolder::new("concurrent");
    let image = dir.join("input.png");
    write_png(&image, 44, 36);
    let results = dir.join("results");
    let mut args = vec![
        "train",
        image.to_str().unwrap(),
        "--results-dir",
        results.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    args.extend(TINY);
    for output in common::singan_concurrently(&args, 3) {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
    }
    let folders: Vec<PathBuf> = common::folder_entries(&results);
    assert_eq!(folders.len(), 3, "{folders:?}");
    for folder in &folders {
        let model = singan::singan::run::load_model::<f32>(folder).unwrap();
        assert!(model.is_complete(), "{folder:?}");
    }
}

#[test]
fn random_seeds_differ_between_runs() {
    // A results folder that is a file stops each run right after it prints its seed, before
    // any training.
    let dir = TestFolder::new("random-seed");
    let blocker = dir.join("results");
    std::fs::write(&blocker, b"").unwrap();
    let args = [
        "train",
        "--results-dir",
        blocker.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    let mut seeds = Vec::new();
    for output in common::singan_concurrently(&args, 3) {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("cannot create the results folder"),
            "{stderr}"
        );
        let seed: u64 = stderr
            .lines()
            .find_map(|line| line.strip_prefix("seed: "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|seed| seed.parse().ok())
            .unwrap_or_else(|| panic!("no seed line:\n{stderr}"));
        assert!(seed <= 12_345, "{seed}");
        seeds.push(seed);
    }
    // Three seeds drawn from 12346 values are all equal with probability below 1e-8, while
    // seeds taken from the clock in seconds are equal for runs started together.
    assert!(
        seeds.iter().any(|&seed| seed != seeds[0]),
        "three runs started together picked the same seed {seeds:?}"
    );
}

#[test]
fn cuda_device_without_gpu_is_rejected() {
    if singan::cuda::probe_device(0).is_ok() {
        println!("skipped: a CUDA GPU is present, so --device cuda is accepted");
        return;
    }
    let (_dir, image, results) = tiny_training_input("cuda");
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
    let dir = TestFolder::new("image-as-run");
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
    let (code, _, stderr) = singan(&["train", "--resume", png, "--device", "cpu"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!("--resume {png} is a PNG image")),
        "{stderr}"
    );
    assert!(stderr.contains("`singan train "), "{stderr}");
    // The three input files are all there is, so no output folder was created.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 3);
}

#[test]
fn non_image_garbage_keeps_safetensors_error() {
    let dir = TestFolder::new("garbage-model");
    let garbage = dir.join("model.safetensors");
    std::fs::write(&garbage, b"this is neither a model nor an image").unwrap();
    let (code, _, stderr) = singan(&["sample", garbage.to_str().unwrap(), "--device", "cpu"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not a valid safetensors file"), "{stderr}");
    assert!(!stderr.contains("image"), "{stderr}");
}

#[test]
fn resume_warns_about_ignored_options() {
    let (_dir, image, results) = tiny_training_input("resume-options");
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

#[test]
fn suggested_commands_quote_paths() {
    let dir = TestFolder::new("quoted-hints");
    let results = dir.join("results with space");
    let run = results.join("it's a run");
    std::fs::create_dir_all(&run).unwrap();
    // The name check reads only whether the model file exists, so an empty one will do.
    std::fs::write(run.join("model.safetensors"), b"").unwrap();
    let quoted_run = format!("'{}/it'\\''s a run'", results.display());

    let mut args = vec![
        "train",
        "--results-dir",
        results.to_str().unwrap(),
        "--save",
        "it's a run",
        "--device",
        "cpu",
    ];
    args.extend(TINY);
    let (code, _, stderr) = singan(&args);
    assert_eq!(code, 2, "{stderr}");
    let expected = format!("continue it with --resume {quoted_run}");
    assert!(stderr.contains(&expected), "{stderr}");

    let picture = dir.join("my picture.png");
    write_png(&picture, 44, 36);
    let (code, _, stderr) = singan(&["sample", picture.to_str().unwrap(), "--device", "cpu"]);
    assert_eq!(code, 2, "{stderr}");
    let expected = format!("`singan train '{}'`", picture.display());
    assert!(stderr.contains(&expected), "{stderr}");
}
