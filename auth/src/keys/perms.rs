//! The permission check OpenSSH makes before it uses a private key file: a key the user owns
//! that other users could read or write is refused, since it may already be compromised and
//! the user should learn that rather than have it silently work.
//!
//! Only the rule lives here; the caller reads the file's owner and mode (from the file it
//! opened, so that what is checked is what is read) and its own user id.

use crate::error::KeyFileError;

/// Refuses a key file owned by `me` whose group or others may access it
/// (`mode & 0o077 != 0`), as OpenSSH does; the error names `path`, the permissions found and
/// `chmod 600`. Files owned by another user (root's, say) are not judged, again as OpenSSH
/// does. `mode` is the file's `st_mode` (type bits are ignored).
pub fn check_key_file_mode(path: &str, owner: u32, me: u32, mode: u32) -> Result<(), KeyFileError> {
    if owner == me && mode & 0o077 != 0 {
        return Err(KeyFileError::InsecurePermissions {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_permissions_are_refused_and_0600_or_0400_accepted() {
        for (mode, ok) in [
            (0o100_600, true),
            (0o100_400, true),
            (0o100_700, true),
            (0o100_644, false),
            (0o100_640, false),
            (0o100_604, false),
            (0o100_660, false),
            (0o100_602, false),
        ] {
            let r = check_key_file_mode("/k/id", 1000, 1000, mode);
            if ok {
                assert_eq!(r, Ok(()), "{mode:o}");
            } else {
                let bits = mode & 0o7777;
                assert_eq!(
                    r,
                    Err(KeyFileError::InsecurePermissions {
                        path: "/k/id".into(),
                        mode: bits
                    }),
                    "{mode:o}"
                );
                let text = r.unwrap_err().to_string();
                assert!(text.contains(&format!("{bits:04o} are too open")), "{text}");
                assert!(text.contains("chmod 600 /k/id"), "{text}");
            }
        }
    }

    #[test]
    fn another_users_file_is_not_judged() {
        assert_eq!(check_key_file_mode("/k", 0, 1000, 0o100_644), Ok(()));
        assert!(check_key_file_mode("/k", 1000, 1000, 0o100_644).is_err());
        assert_eq!(check_key_file_mode("/k", 1000, 1000, 0o100_600), Ok(()));
    }
}
