//! The `singan` binary: exit statuses and messages of the check commands.

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
    let dir = std::env::temp_dir().join(format!("singan-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
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
