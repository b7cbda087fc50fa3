//! The `singan` binary: exit statuses and messages of the check and bench commands.

use std::process::Command;

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

#[test]
fn check_grad_passes_with_a_row_per_case() {
    let (code, stdout, stderr) = singan(&["check", "grad", "--device", "cpu"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for case in singan::gradcheck::all_cases() {
        let found = stdout.lines().any(|line| {
            let mut words = line.split_whitespace();
            words.next() == Some(case.name) && words.next() == Some(&case.order.to_string())
        });
        assert!(
            found,
            "no row for {} order {}:\n{stdout}",
            case.name, case.order
        );
    }
    assert!(stdout.contains("all gradient checks passed"));
}

#[test]
fn check_fixtures_missing_folder_exits_2() {
    let (code, _, stderr) = singan(&["check", "fixtures", "/nonexistent/singan-fixtures"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("cannot list the fixture folder"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn check_fixtures_bad_file_exits_1() {
    let dir = TestFolder::new("bad");
    std::fs::write(dir.join("bad.safetensors"), [0u8; 3]).unwrap();
    let (code, stdout, stderr) = singan(&["check", "fixtures", dir.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.contains("bad.safetensors: error"), "{stdout}");
}

#[test]
fn check_fixtures_shared_passes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    if !dir.is_dir() {
        eprintln!("skipped: reference fixtures not found at {}", dir.display());
        return;
    }
    let (code, stdout, stderr) = singan(&[
        "check",
        "fixtures",
        dir.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn check_trace_passes_on_shared_trace() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/trace/training_trace.safetensors");
    if !path.exists() {
        eprintln!("skipped: training trace not found at {}", path.display());
        return;
    }
    let (code, stdout, stderr) =
        singan(&["check", "trace", path.to_str().unwrap(), "--device", "cpu"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("log.critic_loss"), "{stdout}");
    assert!(stdout.contains(" 0 failed"), "{stdout}");
}

#[test]
fn check_trace_missing_file_exits_2() {
    let (code, _, stderr) = singan(&["check", "trace", "/nonexistent/trace.safetensors"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("/nonexistent/trace.safetensors"),
        "{stderr}"
    );
}

#[test]
fn check_trace_reports_cpu_without_probing() {
    // The replay takes no device, so even --device cuda neither probes a GPU nor fails for the
    // lack of one, and the device line names the CPU.
    let (code, _, stderr) = singan(&[
        "check",
        "trace",
        "/nonexistent/trace.safetensors",
        "--device",
        "cuda",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("device: cpu (check trace replays on the CPU only)"),
        "{stderr}"
    );
    assert!(!stderr.contains("cuda"), "{stderr}");
    assert!(!stderr.contains("CUDA"), "{stderr}");
    assert!(
        stderr.contains("/nonexistent/trace.safetensors"),
        "{stderr}"
    );
}

#[test]
fn bench_iteration_prints_a_row_per_scale() {
    let args = [
        "bench",
        "iteration",
        "--device",
        "cpu",
        "--scales",
        "1, 0",
        "--steps",
        "1",
    ];
    let (code, stdout, stderr) = singan(&args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(
        rows[0].starts_with("0 "),
        "scales are timed in order: {stdout}"
    );
    assert!(
        rows[1].starts_with("1 "),
        "scales are timed in order: {stdout}"
    );
}

#[test]
fn bench_iteration_rejects_bad_options() {
    let cases: [(&[&str], &str); 5] = [
        (&["--steps", "0"], "must be from 1 to"),
        (&["--steps=-1"], "must be from 1 to"),
        (&["--steps", "18446744073709551616"], "must be from 1 to"),
        (&["--scales=-1"], "scales are numbered from 0"),
        (&["--scales", "0,,1"], "is not a scale number"),
    ];
    for (options, message) in cases {
        let mut args = vec!["bench", "iteration", "--device", "cpu"];
        args.extend_from_slice(options);
        let (code, stdout, stderr) = singan(&args);
        assert_eq!(code, 2, "{options:?}: {stdout}{stderr}");
        assert!(stderr.contains(message), "{options:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{options:?}: {stderr}");
    }
}

/// Writes a flat 20x20 PNG into a new test folder named after `tag`, and returns the folder and
/// the image's path.
fn small_png(tag: &str) -> (TestFolder, String) {
    let dir = TestFolder::new(tag);
    let path = dir.join("small.png");
    image::RgbImage::from_pixel(20, 20, image::Rgb([120, 90, 60]))
        .save(&path)
        .unwrap();
    let path = path.to_str().unwrap().to_string();
    (dir, path)
}

#[test]
fn repeated_scale_size_warns() {
    // min_size equal to the shorter side of a 20x20 image gives two 20x20 scales.
    let (_dir, path) = small_png("repeat");
    let args = [
        "bench",
        "iteration",
        &path,
        "--device",
        "cpu",
        "--min-size",
        "20",
        "--scales",
        "0",
        "--steps",
        "1",
    ];
    let (code, stdout, stderr) = singan(&args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stderr.contains("warning: scale 0 (20x20) is not smaller than scale 1 (20x20)"),
        "{stderr}"
    );
}

/// A pyramid error suggests an option, and `bench iteration` takes that option.
#[test]
fn bench_iteration_takes_suggested_min_size() {
    let (_dir, path) = small_png("bench");
    let path = path.as_str();
    let (code, stdout, stderr) = singan(&["bench", "iteration", path, "--device", "cpu"]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("try --min-size 18"), "{stderr}");
    let args = [
        "bench",
        "iteration",
        path,
        "--device",
        "cpu",
        "--min-size",
        "18",
        "--scales",
        "0",
        "--steps",
        "1",
    ];
    let (code, stdout, stderr) = singan(&args);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("18x18"), "{stdout}");
}

#[cfg(unix)]
#[test]
fn full_stdout_is_an_error_not_a_panic() {
    // A command's own output, and the help and version that the argument parser prints.
    let commands: [&[&str]; 3] = [
        &["check", "grad", "--device", "cpu"],
        &["--help"],
        &["--version"],
    ];
    for args in commands {
        let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
            eprintln!("skipped: /dev/full cannot be opened");
            return;
        };
        let output = Command::new(env!("CARGO_BIN_EXE_singan"))
            .args(args)
            .stdout(full)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("error: failed printing to stdout"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
