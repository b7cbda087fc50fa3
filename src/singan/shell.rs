//! Paths inside the command lines that messages suggest to the user.

use std::path::Path;

/// Returns `path` as one word of a POSIX shell command line, for messages that suggest a
/// command to copy.
///
/// A path made only of ASCII letters, digits and `_-./,:+@%=` is returned as it is, so the
/// usual paths print unchanged. Any other path, and the empty path, is put in single quotes,
/// with each `'` inside written as `'\''`. A relative path that starts with `-` gets a `./`
/// in front, so that it does not read as an option. A path that is not valid UTF-8 is shown with
/// U+FFFD in place of the invalid bytes, so the command names a different path then.
pub fn quote_path(path: impl AsRef<Path>) -> String {
    let mut text = path.as_ref().to_string_lossy();
    // A word that starts with `-` reads as an option, so the relative path gets a `./`.
    if text.starts_with('-') {
        text = format!("./{text}").into();
    }
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-./,:+@%=".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        return text.into_owned();
    }
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::quote_path;

    #[test]
    fn plain_path_unquoted() {
        for path in [
            "results/2026-01-01_00-00-00-2",
            "/tmp/run",
            "run.2",
            "a=b,c:d+e@f%g",
        ] {
            assert_eq!(quote_path(path), path);
        }
    }

    #[test]
    fn space_quoted() {
        assert_eq!(quote_path("my runs/run 1"), "'my runs/run 1'");
    }

    #[test]
    fn single_quote_escaped() {
        assert_eq!(quote_path("it's"), r"'it'\''s'");
        assert_eq!(quote_path("'"), r"''\'''");
    }

    #[test]
    fn leading_dash_prefixed() {
        assert_eq!(quote_path("-r/x"), "./-r/x");
        assert_eq!(quote_path("-my run"), "'./-my run'");
    }

    #[test]
    fn empty_path_quoted() {
        assert_eq!(quote_path(""), "''");
    }

    #[test]
    fn shell_characters_quoted() {
        for (path, quoted) in [
            ("a$b", "'a$b'"),
            ("~/run", "'~/run'"),
            ("a;b", "'a;b'"),
            ("a*", "'a*'"),
            ("\"a\"", "'\"a\"'"),
            ("a\nb", "'a\nb'"),
            ("café", "'café'"),
        ] {
            assert_eq!(quote_path(path), quoted, "{path:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn invalid_utf8_shown_lossily() {
        use std::os::unix::ffi::OsStrExt;
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(b"run\xff"));
        assert_eq!(quote_path(path), "'run\u{fffd}'");
    }
}
