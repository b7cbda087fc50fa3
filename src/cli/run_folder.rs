//! The run folders that `train` and `sr` create inside `--results-dir`.

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use singan::singan::run::{stopped_before_first_scale, MODEL_FILE};

/// Checks that `name`, the value of `--save`, names a folder directly inside `--results-dir`.
///
/// An empty name, `.`, `..` and names with a path separator are rejected, because they would
/// put the run into `--results-dir` itself or outside it (`Path::join` with an absolute path
/// replaces the base).
pub fn check_save_name(name: &str) -> Result<(), String> {
    let mut components = Path::new(name).components();
    let plain = match (components.next(), components.next()) {
        (Some(Component::Normal(first)), None) => first == name,
        _ => false,
    };
    if plain {
        return Ok(());
    }
    Err(format!(
        "--save {name:?} must be a plain folder name inside --results-dir, without path \
         separators, such as --save my_run; choose the parent folder with --results-dir"
    ))
}

/// Checks the `--save` name of a new run before any work: it must be a plain folder name (see
/// [`check_save_name`]) that names no existing entry of `results_dir`. For a folder that
/// contains a trained model, the message ends with `trained_hint(folder)`, which names what to
/// do with that run instead.
pub fn check_new_run_name(
    results_dir: &Path,
    name: &str,
    trained_hint: &dyn Fn(&Path) -> String,
) -> Result<(), String> {
    check_save_name(name)?;
    let run_dir = results_dir.join(name);
    if run_dir.exists() {
        return Err(existing_folder_message(&run_dir, trained_hint));
    }
    Ok(())
}

/// Creates the folder of a new run inside `results_dir` and returns its path.
///
/// With `save` (the `--save` value) the folder is `results_dir/save`, which must not exist yet.
/// Without it, the name is `stem`, or `stem-2`, `stem-3` and so on, the first that names no
/// existing entry. Every candidate is claimed with `create_dir`, which fails when the entry
/// exists, so two runs started at the same time never share a folder. `trained_hint` is that
/// of [`check_new_run_name`].
pub fn create_run_folder(
    results_dir: &Path,
    save: Option<&str>,
    stem: &str,
    trained_hint: &dyn Fn(&Path) -> String,
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(results_dir).map_err(|error| {
        format!(
            "{}: cannot create the results folder: {error}",
            results_dir.display()
        )
    })?;
    if let Some(name) = save {
        check_save_name(name)?;
        let run_dir = results_dir.join(name);
        return match std::fs::create_dir(&run_dir) {
            Ok(()) => Ok(run_dir),
            Err(error) if error.kind() == ErrorKind::AlreadyExists => {
                Err(existing_folder_message(&run_dir, trained_hint))
            }
            Err(error) => Err(cannot_create_message(&run_dir, &error)),
        };
    }
    let names =
        std::iter::once(stem.to_string()).chain((2u64..).map(|index| format!("{stem}-{index}")));
    for name in names {
        let run_dir = results_dir.join(name);
        match std::fs::create_dir(&run_dir) {
            Ok(()) => return Ok(run_dir),
            Err(error) if error.kind() == ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(cannot_create_message(&run_dir, &error)),
        }
    }
    unreachable!("the sequence of candidate names is unbounded")
}

/// Builds the error for a `--save` folder that exists already.
fn existing_folder_message(run_dir: &Path, trained_hint: &dyn Fn(&Path) -> String) -> String {
    let folder = run_dir.display();
    if run_dir.join(MODEL_FILE).exists() {
        format!(
            "{folder} already holds a trained model; choose another --save name, or {}",
            trained_hint(run_dir)
        )
    } else if stopped_before_first_scale(run_dir) {
        format!(
            "{folder} contains a run whose training stopped before its first scale was saved; \
             remove the folder to train again under this name, or choose another --save name"
        )
    } else {
        format!("{folder} already exists; choose another --save name, or remove the folder first")
    }
}

fn cannot_create_message(run_dir: &Path, error: &std::io::Error) -> String {
    format!(
        "{}: cannot create the run folder: {error}",
        run_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::{check_new_run_name, check_save_name, create_run_folder};
    use crate::cli::test_folder::TestFolder;

    fn hint(run_dir: &std::path::Path) -> String {
        format!("use {}", run_dir.display())
    }

    #[test]
    fn save_name_accepts_plain_names() {
        for name in ["run", "my run", "run.2", "..run", "2026-01-01_00-00-00"] {
            assert_eq!(check_save_name(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn save_name_rejects_paths() {
        for name in ["", ".", "..", "../x", "/abs/path", "a/b", "run/", "./run"] {
            let error = check_save_name(name).unwrap_err();
            assert!(error.contains("plain folder name"), "{name:?}: {error}");
            assert!(error.contains(&format!("{name:?}")), "{name:?}: {error}");
        }
    }

    #[test]
    fn default_name_skips_existing_entries() {
        let dir = TestFolder::new("default");
        assert_eq!(
            create_run_folder(&dir, None, "stamp", &hint).unwrap(),
            dir.join("stamp")
        );
        assert_eq!(
            create_run_folder(&dir, None, "stamp", &hint).unwrap(),
            dir.join("stamp-2")
        );
        // A file takes a name as well as a folder does.
        std::fs::write(dir.join("stamp-3"), b"").unwrap();
        assert_eq!(
            create_run_folder(&dir, None, "stamp", &hint).unwrap(),
            dir.join("stamp-4")
        );
        assert!(dir.join("stamp-4").is_dir());
    }

    #[test]
    fn concurrent_default_names_differ() {
        let dir = TestFolder::new("concurrent");
        let threads = 16;
        // The barrier releases all threads at once, so that their calls overlap.
        let start = std::sync::Barrier::new(threads);
        let folders: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        create_run_folder(&dir, None, "stamp", &hint).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let unique: std::collections::BTreeSet<_> = folders.iter().collect();
        assert_eq!(unique.len(), folders.len(), "{folders:?}");
    }

    #[test]
    fn save_name_must_be_new() {
        let dir = TestFolder::new("save");
        assert_eq!(
            create_run_folder(&dir, Some("run"), "stamp", &hint).unwrap(),
            dir.join("run")
        );
        let error = create_run_folder(&dir, Some("run"), "stamp", &hint).unwrap_err();
        assert!(error.contains("already exists"), "{error}");
        assert!(error.contains("choose another --save name"), "{error}");

        // A folder left by a training that stopped before its first scale names that cause.
        std::fs::write(dir.join("run").join("log.txt"), b"configuration:\n").unwrap();
        let error = create_run_folder(&dir, Some("run"), "stamp", &hint).unwrap_err();
        assert!(
            error.contains("stopped before its first scale was saved"),
            "{error}"
        );

        // The early check gives the same messages, and a model file takes precedence.
        let error = check_new_run_name(&dir, "run", &hint).unwrap_err();
        assert!(
            error.contains("stopped before its first scale was saved"),
            "{error}"
        );
        std::fs::write(dir.join("run").join("model.safetensors"), b"").unwrap();
        let error = check_new_run_name(&dir, "run", &hint).unwrap_err();
        assert!(error.contains("already holds a trained model"), "{error}");
        assert!(
            error.ends_with(&format!("or use {}", dir.join("run").display())),
            "{error}"
        );
        assert_eq!(check_new_run_name(&dir, "other", &hint), Ok(()));

        let error = create_run_folder(&dir, Some("../x"), "stamp", &hint).unwrap_err();
        assert!(error.contains("plain folder name"), "{error}");
        assert!(!dir.parent().unwrap().join("x").exists());
    }
}
