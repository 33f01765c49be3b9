//! SSH wire encoding (RFC 4251 section 5): the one codec every layer decodes and encodes with.
//!
//! Decoding borrows from the input and never allocates: every length is checked against the
//! bytes that remain before anything is read, so a hostile length costs nothing. A message
//! decoder reads its fields with a [`Reader`] and ends with [`Reader::finish`], which rejects
//! trailing bytes (as OpenSSH's `sshpkt_get_end` does).
//!
//! Encoding appends to a `Vec<u8>` through the [`Writer`] extension trait.

use core::fmt;

/// Why a message could not be decoded. Each variant names the field's kind; the message
/// decoder that called the reader adds which message it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the field did.
    Truncated,
    /// Bytes remained after the last field of a message.
    TrailingBytes,
    /// A `string` that must be UTF-8 was not.
    InvalidUtf8,
    /// A `name-list` held an empty name, a non-printable byte or a non-ASCII byte.
    InvalidNameList,
    /// An `mpint` was negative or not minimally encoded where that matters.
    InvalidMpint,
    /// A `boolean` byte other than 0 or 1 where strictness was asked for, or another field
    /// whose value is out of its allowed range.
    InvalidValue(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("message ends before its last field"),
            Self::TrailingBytes => f.write_str("message has bytes after its last field"),
            Self::InvalidUtf8 => f.write_str("text field is not valid UTF-8"),
            Self::InvalidNameList => f.write_str("name-list is malformed"),
            Self::InvalidMpint => f.write_str("mpint is negative or malformed"),
            Self::InvalidValue(what) => write!(f, "invalid {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A cursor over a received message.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading `buf` from its first byte.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Takes exactly `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// Takes exactly `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated)?;
        self.buf = tail;
        Ok(*head)
    }

    /// Takes everything that is left.
    pub fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }

    /// A `byte`.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let [b] = self.array::<1>()?;
        Ok(b)
    }

    /// A `boolean`: any non-zero byte is true (RFC 4251 section 5).
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        Ok(self.u8()? != 0)
    }

    /// A `uint32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array::<4>()?))
    }

    /// A `uint64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array::<8>()?))
    }

    /// A `string` as raw bytes; the length is checked against what remains first.
    pub fn string(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated)?;
        self.bytes(len)
    }

    /// A `string` that must be UTF-8.
    pub fn utf8(&mut self) -> Result<&'a str, DecodeError> {
        core::str::from_utf8(self.string()?).map_err(|_| DecodeError::InvalidUtf8)
    }

    /// A `name-list`: comma-separated, non-empty, printable US-ASCII names.
    pub fn name_list(&mut self) -> Result<NameList<'a>, DecodeError> {
        NameList::parse(self.string()?)
    }

    /// An `mpint` that must not be negative, returned as its big-endian magnitude without the
    /// leading zero byte that marks a positive number whose top bit is set.
    pub fn mpint_positive(&mut self) -> Result<&'a [u8], DecodeError> {
        let raw = self.string()?;
        match raw {
            [] => Ok(raw),
            [first, ..] if first & 0x80 != 0 => Err(DecodeError::InvalidMpint),
            [0, rest @ ..] => {
                // A leading zero is only allowed when the next byte needs it.
                match rest.first() {
                    Some(next) if next & 0x80 != 0 => Ok(rest),
                    _ => Err(DecodeError::InvalidMpint),
                }
            }
            _ => Ok(raw),
        }
    }

    /// Ends a message: any byte left over is an error.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// A validated `name-list`, iterated without allocating.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NameList<'a> {
    raw: &'a str,
}

impl<'a> NameList<'a> {
    /// Validates a received name-list.
    pub fn parse(raw: &'a [u8]) -> Result<Self, DecodeError> {
        if raw.is_empty() {
            return Ok(Self { raw: "" });
        }
        let mut prev_comma = true;
        for &b in raw {
            let comma = b == b',';
            if comma && prev_comma {
                return Err(DecodeError::InvalidNameList);
            }
            if !comma && !(0x21..=0x7e).contains(&b) {
                return Err(DecodeError::InvalidNameList);
            }
            prev_comma = comma;
        }
        if prev_comma {
            return Err(DecodeError::InvalidNameList);
        }
        let raw = core::str::from_utf8(raw).map_err(|_| DecodeError::InvalidNameList)?;
        Ok(Self { raw })
    }

    /// The list as it was on the wire.
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// The names, in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + 'a {
        let raw = self.raw;
        raw.split(',').filter(|s| !s.is_empty())
    }

    /// Whether `name` is one of the names.
    pub fn contains(&self, name: &str) -> bool {
        self.iter().any(|n| n == name)
    }

    /// Whether the list has no names.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
}

impl fmt::Debug for NameList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.raw, f)
    }
}

impl fmt::Display for NameList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw)
    }
}

/// Encoding onto the end of a buffer.
pub trait Writer {
    /// A `byte`.
    fn put_u8(&mut self, v: u8);
    /// A `boolean`.
    fn put_bool(&mut self, v: bool);
    /// A `uint32`.
    fn put_u32(&mut self, v: u32);
    /// A `uint64`.
    fn put_u64(&mut self, v: u64);
    /// Raw bytes, no length.
    fn put_raw(&mut self, v: &[u8]);
    /// A `string`. Panics never: lengths beyond `u32::MAX` cannot be built by this crate's
    /// callers, whose messages are bounded far below that; such a length is clamped and the
    /// peer will reject the message.
    fn put_string(&mut self, v: &[u8]);
    /// A `string` holding text.
    fn put_str(&mut self, v: &str) {
        self.put_string(v.as_bytes());
    }
    /// A `name-list` from its names.
    fn put_name_list<S: AsRef<str>>(&mut self, names: &[S]);
    /// A non-negative `mpint` from a big-endian magnitude (leading zeros are stripped and a
    /// zero byte is added when the top bit is set).
    fn put_mpint(&mut self, magnitude: &[u8]);
}

fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

impl Writer for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_bool(&mut self, v: bool) {
        self.push(u8::from(v));
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_be_bytes());
    }
    fn put_raw(&mut self, v: &[u8]) {
        self.extend_from_slice(v);
    }
    fn put_string(&mut self, v: &[u8]) {
        self.put_u32(len_u32(v.len()));
        self.extend_from_slice(v);
    }
    fn put_name_list<S: AsRef<str>>(&mut self, names: &[S]) {
        let len: usize =
            names.iter().map(|n| n.as_ref().len()).sum::<usize>() + names.len().saturating_sub(1);
        self.put_u32(len_u32(len));
        for (i, n) in names.iter().enumerate() {
            if i > 0 {
                self.push(b',');
            }
            self.extend_from_slice(n.as_ref().as_bytes());
        }
    }
    fn put_mpint(&mut self, magnitude: &[u8]) {
        let start = magnitude
            .iter()
            .position(|&b| b != 0)
            .unwrap_or(magnitude.len());
        let digits = magnitude.get(start..).unwrap_or_default();
        let pad = digits.first().is_some_and(|b| b & 0x80 != 0);
        self.put_u32(len_u32(digits.len() + usize::from(pad)));
        if pad {
            self.push(0);
        }
        self.extend_from_slice(digits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn string_length_beyond_input_is_truncated_not_allocated() {
        let mut r = Reader::new(&[0xff, 0xff, 0xff, 0xff, 1, 2]);
        assert_eq!(r.string(), Err(DecodeError::Truncated));
    }

    #[test]
    fn finish_rejects_trailing_bytes() {
        let mut r = Reader::new(&[0, 0, 0, 1, 7, 9]);
        assert_eq!(r.u32(), Ok(1));
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes));
    }

    #[test]
    fn name_list_rules() {
        assert!(NameList::parse(b"a,b").is_ok());
        assert!(NameList::parse(b"").is_ok_and(|l| l.is_empty()));
        assert_eq!(NameList::parse(b"a,,b"), Err(DecodeError::InvalidNameList));
        assert_eq!(NameList::parse(b",a"), Err(DecodeError::InvalidNameList));
        assert_eq!(NameList::parse(b"a,"), Err(DecodeError::InvalidNameList));
        assert_eq!(NameList::parse(b"a b"), Err(DecodeError::InvalidNameList));
        assert_eq!(
            NameList::parse(b"a\xc3\xa9"),
            Err(DecodeError::InvalidNameList)
        );
        let l = NameList::parse(b"x,y,z").unwrap_or(NameList { raw: "" });
        assert_eq!(l.iter().collect::<Vec<_>>(), ["x", "y", "z"]);
        assert!(l.contains("y") && !l.contains("w"));
    }

    #[test]
    fn mpint_encoding_matches_rfc4251_examples() {
        let cases: &[(&[u8], &[u8])] = &[
            (&[], &[0, 0, 0, 0]),
            (&[0x00], &[0, 0, 0, 0]),
            (
                &[0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7],
                &[0, 0, 0, 8, 0x09, 0xa3, 0x78, 0xf9, 0xb2, 0xe3, 0x32, 0xa7],
            ),
            (&[0x80], &[0, 0, 0, 2, 0x00, 0x80]),
            (&[0x00, 0x00, 0x7f], &[0, 0, 0, 1, 0x7f]),
        ];
        for (mag, wire) in cases {
            let mut v = Vec::new();
            v.put_mpint(mag);
            assert_eq!(&v[..], *wire);
        }
    }

    #[test]
    fn mpint_decoding_rejects_negative_and_padding() {
        assert_eq!(
            Reader::new(&[0, 0, 0, 1, 0x80]).mpint_positive(),
            Err(DecodeError::InvalidMpint)
        );
        assert_eq!(
            Reader::new(&[0, 0, 0, 2, 0x00, 0x10]).mpint_positive(),
            Err(DecodeError::InvalidMpint)
        );
        assert_eq!(
            Reader::new(&[0, 0, 0, 2, 0x00, 0x80]).mpint_positive(),
            Ok(&[0x80][..])
        );
    }

    proptest! {
        #[test]
        fn fields_round_trip(a in any::<u8>(), b in any::<bool>(), c in any::<u32>(), d in any::<u64>(),
                             s in proptest::collection::vec(any::<u8>(), 0..300),
                             m in proptest::collection::vec(any::<u8>(), 0..70),
                             names in proptest::collection::vec("[a-z0-9@.-]{1,12}", 0..6)) {
            let mut v = Vec::new();
            v.put_u8(a);
            v.put_bool(b);
            v.put_u32(c);
            v.put_u64(d);
            v.put_string(&s);
            v.put_mpint(&m);
            v.put_name_list(&names);
            let mut r = Reader::new(&v);
            prop_assert_eq!(r.u8()?, a);
            prop_assert_eq!(r.bool()?, b);
            prop_assert_eq!(r.u32()?, c);
            prop_assert_eq!(r.u64()?, d);
            prop_assert_eq!(r.string()?, &s[..]);
            let stripped: Vec<u8> = m.iter().copied().skip_while(|&x| x == 0).collect();
            prop_assert_eq!(r.mpint_positive()?, &stripped[..]);
            let got: Vec<&str> = r.name_list()?.iter().collect();
            prop_assert_eq!(got, names.iter().map(String::as_str).collect::<Vec<_>>());
            prop_assert!(r.finish().is_ok());
        }

        #[test]
        fn reader_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&data);
            let _ = r.string();
            let _ = r.name_list();
            let _ = r.mpint_positive();
            let _ = r.u64();
        }
    }
}
