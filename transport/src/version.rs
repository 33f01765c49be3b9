//! Protocol version exchange (RFC 4253 section 4.2).
//!
//! The server may send lines before its version line; we tolerate them but bound how many and
//! how long, so a banner that never ends costs a bounded amount of memory and ends in an error.

/// The most lines a server may send before its version line (OpenSSH allows 1024).
pub const MAX_PRE_VERSION_LINES: usize = 1024;
/// The longest line before the version line.
pub const MAX_LINE_LEN: usize = 8192;
/// The most bytes before the version line, all lines together.
pub const MAX_PRE_VERSION_BYTES: usize = 64 * 1024;
/// The longest version line, CR LF included (RFC 4253 4.2).
pub const MAX_VERSION_LEN: usize = 255;

/// Why the server's identification was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VersionError {
    /// More lines, or longer lines, than we tolerate before the version line.
    BannerTooLong,
    /// The version line itself is longer than 255 bytes or holds a NUL.
    BadVersionLine(String),
    /// The server speaks only protocol 1.
    Protocol1(String),
    /// Some other protocol version.
    UnsupportedVersion(String),
}

impl core::fmt::Display for VersionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::BannerTooLong => write!(
                f,
                "the server sent more than {MAX_PRE_VERSION_LINES} lines or {MAX_PRE_VERSION_BYTES} bytes \
                 without an SSH version line; is this port an SSH server?"
            ),
            Self::BadVersionLine(l) => write!(f, "the server's version line is malformed: {l:?}"),
            Self::Protocol1(l) => write!(
                f,
                "the server only speaks SSH protocol 1 ({l:?}), which is insecure and not supported"
            ),
            Self::UnsupportedVersion(l) => {
                write!(
                    f,
                    "the server speaks an unsupported SSH protocol version ({l:?})"
                )
            }
        }
    }
}

/// What one call to [`VersionReader::read`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A complete line before the version line (for logging, unsanitized).
    Banner(&'a [u8], usize),
    /// The version line without CR LF, and the bytes it took.
    Version(&'a [u8], usize),
}

/// Reads the server's identification from its first bytes.
#[derive(Debug, Default)]
pub struct VersionReader {
    lines: usize,
    bytes: usize,
}

impl VersionReader {
    /// Looks for one complete line at the start of `input`; `Ok(None)` means more input is
    /// needed.
    pub fn read<'a>(&mut self, input: &'a [u8]) -> Result<Option<Line<'a>>, VersionError> {
        let Some(nl) = input.iter().position(|&b| b == b'\n') else {
            let starts_version = input.starts_with(b"SSH-") || b"SSH-".starts_with(input);
            let limit = if starts_version {
                MAX_VERSION_LEN
            } else {
                MAX_LINE_LEN
            };
            if input.len() > limit || self.bytes + input.len() > MAX_PRE_VERSION_BYTES {
                return Err(if starts_version {
                    VersionError::BadVersionLine(lossy(input))
                } else {
                    VersionError::BannerTooLong
                });
            }
            return Ok(None);
        };
        let consumed = nl + 1;
        let line = input.get(..nl).unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.starts_with(b"SSH-") {
            if consumed > MAX_VERSION_LEN || line.contains(&0) {
                return Err(VersionError::BadVersionLine(lossy(line)));
            }
            if line.starts_with(b"SSH-2.0-") || line.starts_with(b"SSH-1.99-") {
                if line.len() <= b"SSH-2.0-".len() + usize::from(line.starts_with(b"SSH-1.99-")) {
                    return Err(VersionError::BadVersionLine(lossy(line)));
                }
                return Ok(Some(Line::Version(line, consumed)));
            }
            if line.starts_with(b"SSH-1.") {
                return Err(VersionError::Protocol1(lossy(line)));
            }
            return Err(VersionError::UnsupportedVersion(lossy(line)));
        }
        self.lines += 1;
        self.bytes += consumed;
        if self.lines > MAX_PRE_VERSION_LINES
            || consumed > MAX_LINE_LEN
            || self.bytes > MAX_PRE_VERSION_BYTES
        {
            return Err(VersionError::BannerTooLong);
        }
        Ok(Some(Line::Banner(line, consumed)))
    }
}

fn lossy(b: &[u8]) -> String {
    crate::text::sanitize(b, false, 120)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8]) -> Result<Option<Vec<u8>>, VersionError> {
        let mut r = VersionReader::default();
        let mut at = 0;
        loop {
            match r.read(&input[at..])? {
                None => return Ok(None),
                Some(Line::Banner(_, n)) => at += n,
                Some(Line::Version(v, _)) => return Ok(Some(v.to_vec())),
            }
        }
    }

    #[test]
    fn accepts_version_after_banner_lines() {
        assert_eq!(
            run(b"hello\r\nworld\nSSH-2.0-OpenSSH_9.2p1 Debian-2\r\nrest").unwrap(),
            Some(b"SSH-2.0-OpenSSH_9.2p1 Debian-2".to_vec())
        );
        assert_eq!(
            run(b"SSH-1.99-Old\n").unwrap(),
            Some(b"SSH-1.99-Old".to_vec())
        );
        assert_eq!(run(b"SSH-2.0-x").unwrap(), None);
    }

    #[test]
    fn refuses_protocol_1_and_others() {
        assert!(matches!(
            run(b"SSH-1.5-Old\r\n"),
            Err(VersionError::Protocol1(_))
        ));
        assert!(matches!(
            run(b"SSH-3.0-New\r\n"),
            Err(VersionError::UnsupportedVersion(_))
        ));
        assert!(matches!(
            run(b"SSH-2.0-\r\n"),
            Err(VersionError::BadVersionLine(_))
        ));
    }

    #[test]
    fn bounds_banner_and_version_lengths() {
        let long_version = [b"SSH-2.0-".as_slice(), &[b'a'; 300]].concat();
        assert!(matches!(
            run(&long_version),
            Err(VersionError::BadVersionLine(_))
        ));
        let long_line = vec![b'x'; MAX_LINE_LEN + 1];
        assert_eq!(run(&long_line), Err(VersionError::BannerTooLong));
        let many: Vec<u8> = b"x\n".repeat(MAX_PRE_VERSION_LINES + 1);
        assert_eq!(run(&many), Err(VersionError::BannerTooLong));
        let big: Vec<u8> = [vec![b'y'; 8000], b"\n".to_vec()].concat().repeat(9);
        assert_eq!(run(&big), Err(VersionError::BannerTooLong));
    }
}
