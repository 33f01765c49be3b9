//! Reading files a user names (known_hosts, key files, certificates) with a size limit, so a
//! wrong path (a disk image, /dev/zero) is an error instead of an unbounded allocation.

use std::io::{self, Read};
use std::path::Path;

/// Reads all of `reader` into `out` (a `Zeroizing` buffer for secrets), failing once more
/// than `max` bytes have come.
pub fn read_to_end_bounded(reader: impl Read, max: u64, out: &mut Vec<u8>) -> io::Result<()> {
    reader.take(max.saturating_add(1)).read_to_end(out)?;
    if out.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            if max >= 1 << 20 {
                format!("the file is larger than {} MiB", max >> 20)
            } else {
                format!("the file is larger than {} KiB", max >> 10)
            },
        ));
    }
    Ok(())
}

/// The bytes of the file at `path`, at most `max` of them.
pub fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    read_to_end_bounded(std::fs::File::open(path)?, max, &mut bytes)?;
    Ok(bytes)
}

/// The text of the file at `path`, at most `max` bytes of UTF-8.
pub fn read_text_bounded(path: &Path, max: u64) -> io::Result<String> {
    read_text_to_end_bounded(std::fs::File::open(path)?, max)
}

/// The rest of `reader` (a file already opened, say, to check its owner first) as text, at
/// most `max` bytes of UTF-8.
pub fn read_text_to_end_bounded(reader: impl Read, max: u64) -> io::Result<String> {
    let mut bytes = Vec::new();
    read_to_end_bounded(reader, max, &mut bytes)?;
    String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "the file is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_bytes_are_read() {
        let mut out = Vec::new();
        read_to_end_bounded(&b"12345"[..], 5, &mut out).unwrap();
        assert_eq!(out, b"12345");
        let mut out = Vec::new();
        let e = read_to_end_bounded(io::repeat(0), 64 << 10, &mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("larger than 64 KiB"), "{e}");
        assert_eq!(
            out.len(),
            (64 << 10) + 1,
            "reading stopped one byte past the limit"
        );
        let e = read_bounded(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("larger than 1 MiB"), "{e}");
    }
}
