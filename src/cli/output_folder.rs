//! The output folders that `sample` and the application commands write their images into.
//!
//! Each command gets its folder ready before it renders anything, so that an output path that
//! cannot be used fails at once instead of after minutes of rendering.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Returns the run folder of a run folder or model file path.
pub fn run_folder(run: &Path) -> PathBuf {
    if run.is_dir() {
        run.to_path_buf()
    } else {
        run.parent().map(PathBuf::from).unwrap_or_default()
    }
}

/// Returns the output folder of a command: `out`, the `--out` value, or else
/// `RUN_DIR/default_name` for the run folder or model file `run`.
pub fn output_folder(out: Option<&Path>, run: &Path, default_name: &str) -> PathBuf {
    match out {
        Some(out) => out.to_path_buf(),
        None => run_folder(run).join(default_name),
    }
}

/// Creates the output folder `folder` and its parents after checking that the command can
/// write its files there. `is_output_name` returns true for the name of a file that the
/// command writes into the folder.
///
/// The checks reject a file in place of `folder` or of one of its parents, and a folder in
/// place of an output file, because a file cannot be renamed over a folder. Both run before
/// anything is created. After creating the folder, the last check rejects it when no file can
/// be created in it. Each error names the path and what to pass instead. When creating or
/// checking fails, the folders that this call created are removed again.
pub fn prepare_output_folder(
    folder: &Path,
    is_output_name: &dyn Fn(&OsStr) -> bool,
) -> Result<(), String> {
    check_output_folder(folder, is_output_name)?;
    // Deepest first, as they must be removed.
    let missing: Vec<&Path> = folder
        .ancestors()
        .filter(|path| !path.as_os_str().is_empty())
        .take_while(|path| std::fs::symlink_metadata(path).is_err())
        .collect();
    let result = std::fs::create_dir_all(folder)
        .map_err(|e| format!("{}: cannot create the output folder: {e}", folder.display()))
        .and_then(|()| check_writable(folder));
    if result.is_err() {
        for path in missing {
            // Only empty folders go, so a folder another process filled meanwhile stays.
            let _ = std::fs::remove_dir(path);
        }
    }
    result
}

/// Runs the checks of [`prepare_output_folder`] that need nothing created, for a command that
/// has long work to do before it creates the folder.
pub fn check_output_folder(
    folder: &Path,
    is_output_name: &dyn Fn(&OsStr) -> bool,
) -> Result<(), String> {
    check_no_file_on_path(folder)?;
    check_no_folder_at_outputs(folder, is_output_name)
}

/// Rejects a file at `folder` or at the nearest of its parents that exists, which gives
/// a clearer error than the operating system's "File exists" or "Not a directory".
fn check_no_file_on_path(folder: &Path) -> Result<(), String> {
    for path in folder.ancestors().filter(|p| !p.as_os_str().is_empty()) {
        // A path that cannot be read is passed over, and `create_dir_all` reports the error
        // if it matters.
        let Ok(metadata) = std::fs::metadata(path) else {
            // A link whose target is missing, or a loop of links, cannot become a folder, and
            // creating one there fails with the operating system's bare "File exists".
            if std::fs::symlink_metadata(path).is_ok_and(|link| link.is_symlink()) {
                return Err(format!(
                    "{}: is a link that leads to no folder; pass a folder path to --out (missing \
                     folders are created)",
                    path.display()
                ));
            }
            continue;
        };
        if metadata.is_dir() {
            return Ok(());
        }
        return Err(format!(
            "{}: is a file, not a folder; pass a folder path to --out (missing folders are \
             created)",
            path.display()
        ));
    }
    Ok(())
}

/// Rejects a folder inside `folder` whose name is that of an output file. Renaming the
/// finished file over it would fail only after the rendering.
fn check_no_folder_at_outputs(
    folder: &Path,
    is_output_name: &dyn Fn(&OsStr) -> bool,
) -> Result<(), String> {
    // A folder that does not exist yet has no entries, and one that cannot be read fails at
    // `create_dir_all` or `check_writable`.
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        // `file_type` does not follow links, and renaming over a link replaces the link.
        let is_folder = entry.file_type().is_ok_and(|kind| kind.is_dir());
        if is_folder && is_output_name(&entry.file_name()) {
            return Err(format!(
                "{}: is a folder, but the command writes a file of that name; move the folder \
                 away or pass another folder to --out",
                entry.path().display()
            ));
        }
    }
    Ok(())
}

/// Checks that a new file can be created in `folder` by creating and removing an empty one.
fn check_writable(folder: &Path) -> Result<(), String> {
    let probe = folder.join(format!(".singan-write-check.{}", std::process::id()));
    match OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(file) => {
            drop(file);
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        // A probe file left by an earlier process with the same id does not show whether the
        // folder takes new files, so the write itself reports that case.
        Err(error) if error.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(format!(
            "{}: cannot create files in the output folder: {error}; pass another folder to --out",
            folder.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::prepare_output_folder;
    use crate::cli::test_folder::TestFolder;
    use std::ffi::OsStr;
    use std::path::Path;

    fn is_image(name: &OsStr) -> bool {
        name == "image.png"
    }

    fn entry_names(folder: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(folder)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn missing_folders_created() {
        let dir = TestFolder::new("create");
        let folder = dir.join("a").join("b");
        prepare_output_folder(&folder, &is_image).unwrap();
        assert!(folder.is_dir());
        assert!(
            entry_names(&folder).is_empty(),
            "the write check left a file"
        );
        // An existing folder with an output file in it is fine, since the file is replaced.
        std::fs::write(folder.join("image.png"), b"old").unwrap();
        prepare_output_folder(&folder, &is_image).unwrap();
        assert_eq!(entry_names(&folder), ["image.png"]);
    }

    #[test]
    fn failed_creation_removes_created_parents() {
        let dir = TestFolder::new("long-name");
        // Longer than the 255 bytes that a name may have on common file systems.
        let folder = dir.join("a").join("b").join("x".repeat(300));
        let error = prepare_output_folder(&folder, &is_image).unwrap_err();
        assert!(error.contains("cannot create the output folder"), "{error}");
        assert!(entry_names(&dir).is_empty(), "{:?}", entry_names(&dir));
    }

    #[test]
    fn file_on_path_rejected() {
        let dir = TestFolder::new("file");
        let file = dir.join("taken");
        std::fs::write(&file, b"x").unwrap();
        for folder in [
            file.clone(),
            file.join("sub"),
            file.join("sub").join("deeper"),
        ] {
            let error = prepare_output_folder(&folder, &is_image).unwrap_err();
            let expected = format!("{}: is a file, not a folder", file.display());
            assert!(error.starts_with(&expected), "{folder:?}: {error}");
        }
        assert_eq!(entry_names(&dir), ["taken"]);
    }

    #[cfg(unix)]
    #[test]
    fn dangling_link_rejected() {
        let dir = TestFolder::new("dangling");
        let link = dir.join("link");
        std::os::unix::fs::symlink(dir.join("missing"), &link).unwrap();
        for folder in [link.clone(), link.join("sub")] {
            let error = prepare_output_folder(&folder, &is_image).unwrap_err();
            let expected = format!("{}: is a link that leads to no folder", link.display());
            assert!(error.starts_with(&expected), "{folder:?}: {error}");
        }
        assert_eq!(entry_names(&dir), ["link"]);
    }

    #[test]
    fn folder_at_output_name_rejected() {
        let dir = TestFolder::new("folder");
        std::fs::create_dir(dir.join("image.png")).unwrap();
        let error = prepare_output_folder(&dir, &is_image).unwrap_err();
        let expected = format!("{}: is a folder", dir.join("image.png").display());
        assert!(error.starts_with(&expected), "{error}");
        // A folder with any other name is left alone.
        prepare_output_folder(&dir, &|name| name == "other.png").unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn read_only_folder_rejected() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TestFolder::new("read-only");
        let folder = dir.join("locked");
        std::fs::create_dir(&folder).unwrap();
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o555)).unwrap();
        let result = prepare_output_folder(&folder, &is_image);
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
        // NOTE: root passes permission checks, so under root this test checks nothing.
        // SAFETY: `geteuid` takes no arguments and cannot fail (POSIX lists no errors for it).
        if unsafe { libc::geteuid() } == 0 {
            eprintln!("skipped: root can create files in a read-only folder");
            return;
        }
        let error = result.unwrap_err();
        assert!(
            error.contains("cannot create files in the output folder"),
            "{error}"
        );
    }
}
