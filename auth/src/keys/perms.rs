//! The permission check OpenSSH makes before it uses a private key file: a key the user owns
//! that other users could read or write is refused, since it may already be compromised and
//! the user should learn that rather than have it silently work.

use std::path::Path;

use crate::error::KeyFileError;

/// Refuses a key file that the current user owns and that its group or others may access
/// (`mode & 0o077 != 0`), as OpenSSH does; the error says which permissions were found and
/// to run `chmod 600`. Files owned by another user (root's, say) are not judged, again as
/// OpenSSH does. Symbolic links are followed. Does nothing on platforms without unix
/// permissions.
///
/// This is a separate step from [`super::PrivateKey::from_file_contents`], which never
/// touches the file system: call it with the path before reading the file.
pub fn check_key_file_permissions(path: &Path) -> Result<(), KeyFileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(path).map_err(|e| {
            KeyFileError::Io(format!(
                "cannot read the permissions of the private key file {}: {e}; check the \
                     path",
                path.display()
            ))
        })?;
        let me = rustix::process::getuid().as_raw();
        check_mode(path, meta.uid(), me, meta.mode())
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

#[cfg(unix)]
fn check_mode(path: &Path, owner: u32, me: u32, mode: u32) -> Result<(), KeyFileError> {
    if owner == me && mode & 0o077 != 0 {
        return Err(KeyFileError::InsecurePermissions {
            path: path.display().to_string(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn open_permissions_are_refused_and_0600_or_0400_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id_test");
        std::fs::write(&path, b"key").unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o700, true),
            (0o644, false),
            (0o640, false),
            (0o604, false),
            (0o660, false),
            (0o602, false),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = check_key_file_permissions(&path);
            if ok {
                assert_eq!(r, Ok(()), "{mode:o}");
            } else {
                let display = path.display().to_string();
                assert_eq!(
                    r,
                    Err(KeyFileError::InsecurePermissions {
                        path: display.clone(),
                        mode
                    }),
                    "{mode:o}"
                );
                let text = r.unwrap_err().to_string();
                assert!(text.contains(&format!("{mode:04o} are too open")), "{text}");
                assert!(text.contains(&format!("chmod 600 {display}")), "{text}");
            }
        }
    }

    #[test]
    fn another_users_file_is_not_judged() {
        let p = Path::new("/k");
        assert_eq!(check_mode(p, 0, 1000, 0o100644), Ok(()));
        assert!(check_mode(p, 1000, 1000, 0o100644).is_err());
        assert_eq!(check_mode(p, 1000, 1000, 0o100600), Ok(()));
    }

    #[test]
    fn a_missing_file_is_an_io_error_naming_it() {
        let r = check_key_file_permissions(Path::new("/nonexistent/dir/id_rsa"));
        match r {
            Err(KeyFileError::Io(text)) => assert!(text.contains("/nonexistent/dir/id_rsa")),
            other => panic!("{other:?}"),
        }
    }
}
