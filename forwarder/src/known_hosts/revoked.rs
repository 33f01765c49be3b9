//! `RevokedHostKeys` files: OpenSSH key revocation lists (KRLs, `ssh-keygen -k`) and plain
//! lists of public keys, consulted before known_hosts for every host key a server presents.
//!
//! ```text
//!  file bytes (at most MAX_FILE_SIZE) ──> starts with "SSHKRL\n\0"?
//!      yes ──> Krl::parse: header, then sections, each checked whole (walk) ──> Krl (the bytes)
//!      no  ──> KeyList::parse: one `type base64 [comment]` per line ──> plain key blobs
//!  (host key, host certificate?) ──> RevokedKeys::check ──> None | Some(RevokedBy)
//!      KRL:  the key (a certificate's key) by SHA1, SHA256 or blob; a certificate by key id,
//!            then serial (never 0), under its CA's sections and the any-CA ones; then the
//!            certificate's CA key by SHA1, SHA256 or blob
//!      list: the key (a certificate's key), or a certificate's CA key, is listed
//!  RevokedHostKeys::load(files) ──> check ──> Revocation { file, by }
//! ```
//!
//! A KRL is kept as its bytes and walked again for each lookup rather than expanded into
//! tables, so a hostile file costs no more memory than its size (a 16-byte serial range or a
//! 2 KiB bitmap revoke up to 16384 serials). Like OpenSSH, anything in a KRL that is not
//! understood (an unknown section, a critical extension, trailing bytes, serial 0) makes the
//! whole file unusable, and an unusable or unreadable file refuses every host key: a
//! revocation list that cannot be read must not let a revoked key through. Signature
//! sections are skipped unverified, as OpenSSH's client skips them.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

use core::fmt;
use std::io;
use std::path::{Path, PathBuf};

use ssh_transport::cert::Certificate;
use ssh_transport::hostkey::{PublicKey, blob_key_type};
use ssh_transport::wire::{DecodeError, Reader};

use super::MAX_FILE_SIZE;

#[cfg(test)]
#[path = "tests_revoked.rs"]
mod tests;

/// The first eight bytes of every KRL.
pub const KRL_MAGIC: &[u8; 8] = b"SSHKRL\n\0";
/// The only KRL format version there is.
const KRL_FORMAT_VERSION: u32 = 1;

const SECTION_CERTIFICATES: u8 = 1;
const SECTION_EXPLICIT_KEY: u8 = 2;
const SECTION_FINGERPRINT_SHA1: u8 = 3;
const SECTION_SIGNATURE: u8 = 4;
const SECTION_FINGERPRINT_SHA256: u8 = 5;
const SECTION_EXTENSION: u8 = 255;

const CERT_SERIAL_LIST: u8 = 0x20;
const CERT_SERIAL_RANGE: u8 = 0x21;
const CERT_SERIAL_BITMAP: u8 = 0x22;
const CERT_KEY_ID: u8 = 0x23;
const CERT_EXTENSION: u8 = 0x39;

/// The largest serial bitmap OpenSSH reads: a 16384-bit number (and the zero byte that
/// keeps it positive).
const MAX_BITMAP_BYTES: usize = 16384 / 8;

/// How a key matched an entry of a revocation list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyMatch {
    /// The key itself is listed (a KRL's explicit keys, or a line of a key list).
    Listed,
    /// Its SHA1 fingerprint is listed.
    Sha1,
    /// Its SHA256 fingerprint is listed.
    Sha256,
}

impl fmt::Display for KeyMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Listed => "listed",
            Self::Sha1 => "listed by its SHA1 fingerprint",
            Self::Sha256 => "listed by its SHA256 fingerprint",
        })
    }
}

/// What in a revocation list revokes a host key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevokedBy {
    /// The key (for a certificate, the certified key) is listed.
    Key(KeyMatch),
    /// The certificate's serial is revoked for its CA (`ca`: the CA's fingerprint), or for
    /// any CA (`ca` is `None`).
    Serial {
        /// The certificate's serial.
        serial: u64,
        /// The fingerprint of the CA whose section revokes it; `None` for any CA.
        ca: Option<String>,
    },
    /// The certificate's key id is revoked for its CA, or for any CA.
    KeyId {
        /// The key id (sanitized).
        key_id: String,
        /// The fingerprint of the CA whose section revokes it; `None` for any CA.
        ca: Option<String>,
    },
    /// The key of the CA that signed the certificate is listed.
    Authority {
        /// The CA's fingerprint.
        fingerprint: String,
        /// How it is listed.
        how: KeyMatch,
    },
}

impl fmt::Display for RevokedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let under = |ca: &Option<String>| match ca {
            Some(ca) => format!("certificates of CA {ca}"),
            None => "certificates of any CA".to_owned(),
        };
        match self {
            Self::Key(how) => write!(f, "the key is {how}"),
            Self::Serial { serial, ca } => {
                write!(
                    f,
                    "certificate serial {serial} is revoked for {}",
                    under(ca)
                )
            }
            Self::KeyId { key_id, ca } => {
                write!(
                    f,
                    "certificate key id {key_id:?} is revoked for {}",
                    under(ca)
                )
            }
            Self::Authority { fingerprint, how } => {
                write!(f, "the certificate's CA key {fingerprint} is {how}")
            }
        }
    }
}

/// A host key refused by a `RevokedHostKeys` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// The file that revokes it.
    pub file: PathBuf,
    /// What in the file revokes it.
    pub by: RevokedBy,
}

impl Revocation {
    /// The error a person reads: which host, which key, which file, why, what to do.
    pub fn refusal(
        &self,
        host: &str,
        port: u16,
        key: &PublicKey,
        certificate: Option<&Certificate>,
    ) -> String {
        let shown = match certificate {
            Some(c) => format!(
                "{} {}, certificate serial {} key id {:?} signed by CA {}",
                super::key_type_label(c.type_name()),
                key.fingerprint(),
                c.serial(),
                c.key_id(),
                c.ca_fingerprint()
            ),
            None => format!(
                "{} {}",
                super::key_type_label(key.key_type().name()),
                key.fingerprint()
            ),
        };
        format!(
            "host key for {} ({shown}) is revoked by {} (RevokedHostKeys): {}; refusing to \
             connect. Ask the server's admin for the server's current host key{}",
            super::lookup_name(host, port),
            self.file.display(),
            self.by,
            if certificate.is_some() {
                " or certificate"
            } else {
                ""
            }
        )
    }
}

/// Why a KRL could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KrlError {
    /// Byte offset in the file where the fault was found.
    pub offset: usize,
    /// What is wrong.
    pub why: String,
}

impl fmt::Display for KrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not a valid KRL (at byte {}): {}", self.offset, self.why)
    }
}

impl std::error::Error for KrlError {}

/// One revocation in a KRL, as the walk meets it. `ca` is the CA key blob of a certificate
/// section, empty for "any CA".
#[derive(Clone, Copy, Debug)]
enum Item<'a> {
    Key(&'a [u8]),
    Sha1(&'a [u8]),
    Sha256(&'a [u8]),
    Serials {
        ca: &'a [u8],
        lo: u64,
        hi: u64,
    },
    /// Serial `offset + n` is revoked when bit `n` of `bits` (big-endian, no leading zero
    /// byte) is set.
    Bitmap {
        ca: &'a [u8],
        offset: u64,
        bits: &'a [u8],
    },
    KeyId {
        ca: &'a [u8],
        id: &'a [u8],
    },
}

/// A parsed KRL: its header, and its bytes, every section of which was checked.
#[derive(Clone)]
pub struct Krl {
    bytes: Vec<u8>,
    version: u64,
    generated: u64,
    comment: String,
}

impl fmt::Debug for Krl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Krl")
            .field("len", &self.bytes.len())
            .field("version", &self.version)
            .field("generated", &self.generated)
            .field("comment", &self.comment)
            .finish()
    }
}

/// A cursor over the file that knows where it is, for errors.
struct Cursor<'a> {
    r: Reader<'a>,
    len: usize,
    /// Offset of this cursor's first byte in the file.
    base: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Self {
            r: Reader::new(buf),
            len: buf.len(),
            base,
        }
    }

    fn offset(&self) -> usize {
        self.base + (self.len - self.r.remaining())
    }

    fn fail<T>(&self, why: impl Into<String>) -> Result<T, KrlError> {
        Err(KrlError {
            offset: self.offset(),
            why: why.into(),
        })
    }

    fn field<T>(
        &mut self,
        what: &str,
        read: impl FnOnce(&mut Reader<'a>) -> Result<T, DecodeError>,
    ) -> Result<T, KrlError> {
        let at = self.offset();
        read(&mut self.r).map_err(|e| KrlError {
            offset: at,
            why: format!("{what}: {e}"),
        })
    }

    fn u8(&mut self, what: &str) -> Result<u8, KrlError> {
        self.field(what, Reader::u8)
    }

    fn u64(&mut self, what: &str) -> Result<u64, KrlError> {
        self.field(what, Reader::u64)
    }

    fn string(&mut self, what: &str) -> Result<&'a [u8], KrlError> {
        self.field(what, Reader::string)
    }

    /// A string that is also a cursor of its own (a section's body).
    fn nested(&mut self, what: &str) -> Result<Cursor<'a>, KrlError> {
        let body = self.string(what)?;
        // The body starts after its 4-byte length.
        Ok(Cursor::new(body, self.offset() - body.len()))
    }

    /// A C string as OpenSSH reads one: a NUL only as its last byte.
    fn cstring(&mut self, what: &str) -> Result<&'a [u8], KrlError> {
        let at = self.offset();
        let s = self.string(what)?;
        let body = match s.split_last() {
            Some((0, head)) => head,
            _ => s,
        };
        if body.contains(&0) {
            return Err(KrlError {
                offset: at,
                why: format!("{what} holds a NUL byte"),
            });
        }
        Ok(s)
    }

    fn is_empty(&self) -> bool {
        self.r.is_empty()
    }
}

/// An extension section or subsection: unknown, so ignored unless it is critical.
fn extension(c: &mut Cursor<'_>, what: &str) -> Result<(), KrlError> {
    let name = c.cstring(&format!("{what} name"))?;
    let critical = c.u8(&format!("{what} criticality"))?;
    c.string(&format!("{what} contents"))?;
    if !c.is_empty() {
        return c.fail(format!("bytes after the {what}"));
    }
    if critical != 0 {
        return c.fail(format!(
            "unsupported critical {what} {:?}",
            ssh_transport::text::sanitize(name, false, 60)
        ));
    }
    Ok(())
}

/// Walks a certificates section, handing each revocation to `visit` until it says stop.
fn walk_certificates<'a>(
    c: &mut Cursor<'a>,
    visit: &mut dyn FnMut(Item<'a>) -> bool,
) -> Result<bool, KrlError> {
    let ca = c.string("CA key")?;
    c.string("reserved field of a certificates section")?;
    if !ca.is_empty() {
        let kind = blob_key_type(ca).map_err(|e| KrlError {
            offset: c.offset(),
            why: format!("the CA key of a certificates section: {e}"),
        })?;
        if kind.is_empty() {
            return c.fail("the CA key of a certificates section has no key type");
        }
    }
    while !c.is_empty() {
        let kind = c.u8("certificate subsection type")?;
        let mut sub = c.nested("certificate subsection")?;
        match kind {
            CERT_SERIAL_LIST => {
                while !sub.is_empty() {
                    let serial = sub.u64("serial")?;
                    if serial == 0 {
                        return sub.fail("serial 0 cannot be revoked");
                    }
                    if visit(Item::Serials {
                        ca,
                        lo: serial,
                        hi: serial,
                    }) {
                        return Ok(true);
                    }
                }
            }
            CERT_SERIAL_RANGE => {
                let lo = sub.u64("first serial of a range")?;
                let hi = sub.u64("last serial of a range")?;
                if lo == 0 || lo > hi {
                    return sub.fail(format!("bad serial range {lo}-{hi}"));
                }
                if visit(Item::Serials { ca, lo, hi }) {
                    return Ok(true);
                }
            }
            CERT_SERIAL_BITMAP => {
                let offset = sub.u64("bitmap offset")?;
                let at = sub.offset();
                let raw = sub.string("serial bitmap")?;
                if raw.first().is_some_and(|b| b & 0x80 != 0) {
                    return Err(KrlError {
                        offset: at,
                        why: "the serial bitmap is a negative number".into(),
                    });
                }
                if raw.len() > MAX_BITMAP_BYTES + 1
                    || (raw.len() == MAX_BITMAP_BYTES + 1 && raw.first() != Some(&0))
                {
                    return Err(KrlError {
                        offset: at,
                        why: format!("the serial bitmap is over {} bits", MAX_BITMAP_BYTES * 8),
                    });
                }
                let start = raw.iter().position(|&b| b != 0).unwrap_or(raw.len());
                let bits = raw.get(start..).unwrap_or_default();
                // The highest set bit: every serial up to it must fit in 64 bits, and
                // serial 0 (bit 0 at offset 0) cannot be revoked.
                let top = bits.first().map_or(0, |b| 8 - b.leading_zeros() as u64);
                let nbits = match bits.len() {
                    0 => 0,
                    n => (n as u64 - 1) * 8 + top,
                };
                if nbits > 0 && offset.checked_add(nbits - 1).is_none() {
                    return Err(KrlError {
                        offset: at,
                        why: "the serial bitmap runs past the largest serial".into(),
                    });
                }
                if offset == 0 && bits.last().is_some_and(|b| b & 1 != 0) {
                    return Err(KrlError {
                        offset: at,
                        why: "serial 0 cannot be revoked".into(),
                    });
                }
                if visit(Item::Bitmap { ca, offset, bits }) {
                    return Ok(true);
                }
            }
            CERT_KEY_ID => {
                while !sub.is_empty() {
                    let id = sub.cstring("key id")?;
                    if visit(Item::KeyId { ca, id }) {
                        return Ok(true);
                    }
                }
            }
            CERT_EXTENSION => extension(&mut sub, "certificate extension")?,
            other => {
                return sub.fail(format!("unknown certificate subsection type {other:#04x}"));
            }
        }
        if !sub.is_empty() {
            return sub.fail("bytes left over in a certificate subsection");
        }
    }
    Ok(false)
}

/// Walks the whole KRL, checking every field, handing each revocation to `visit` until it
/// says stop. Returns the header (version, date, comment).
fn walk<'a>(
    bytes: &'a [u8],
    visit: &mut dyn FnMut(Item<'a>) -> bool,
) -> Result<(u64, u64, String), KrlError> {
    let mut c = Cursor::new(bytes, 0);
    let magic = c.field("magic", Reader::array::<8>)?;
    if &magic != KRL_MAGIC {
        return Err(KrlError {
            offset: 0,
            why: "no KRL magic".into(),
        });
    }
    let format = c.field("format version", Reader::u32)?;
    if format != KRL_FORMAT_VERSION {
        return c.fail(format!("unsupported KRL format version {format}"));
    }
    let version = c.u64("KRL version")?;
    let generated = c.u64("generation date")?;
    c.u64("flags")?;
    c.string("reserved field")?;
    let comment = c.cstring("comment")?;
    let comment = ssh_transport::text::sanitize(comment, false, 120);
    while !c.is_empty() {
        let kind = c.u8("section type")?;
        let mut body = c.nested("section")?;
        let stop = match kind {
            SECTION_CERTIFICATES => walk_certificates(&mut body, visit)?,
            SECTION_EXPLICIT_KEY => {
                walk_blobs(&mut body, None, "revoked key", &mut |b| visit(Item::Key(b)))?
            }
            SECTION_FINGERPRINT_SHA1 => walk_blobs(&mut body, Some(20), "SHA1 hash", &mut |b| {
                visit(Item::Sha1(b))
            })?,
            SECTION_FINGERPRINT_SHA256 => {
                walk_blobs(&mut body, Some(32), "SHA256 hash", &mut |b| {
                    visit(Item::Sha256(b))
                })?
            }
            SECTION_EXTENSION => {
                extension(&mut body, "extension")?;
                false
            }
            SECTION_SIGNATURE => {
                // The body is the signing key; the signature follows as a second string.
                // OpenSSH's client verifies neither, and neither do we.
                body = Cursor::new(&[], c.offset());
                c.string("signature")?;
                false
            }
            other => return c.fail(format!("unknown section type {other}")),
        };
        if stop {
            break;
        }
        if !body.is_empty() {
            return body.fail("bytes left over in a section");
        }
    }
    Ok((version, generated, comment))
}

/// Walks a section of strings, each `len` bytes long when given.
fn walk_blobs<'a>(
    c: &mut Cursor<'a>,
    len: Option<usize>,
    what: &str,
    visit: &mut dyn FnMut(&'a [u8]) -> bool,
) -> Result<bool, KrlError> {
    while !c.is_empty() {
        let at = c.offset();
        let blob = c.string(what)?;
        if len.is_some_and(|l| blob.len() != l) {
            return Err(KrlError {
                offset: at,
                why: format!("a {what} of {} bytes", blob.len()),
            });
        }
        if visit(blob) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether bit `n` (from the least significant end) of the big-endian `bits` is set.
fn bit_is_set(bits: &[u8], n: u64) -> bool {
    let byte = usize::try_from(n / 8).ok();
    let Some(index) = byte.and_then(|b| bits.len().checked_sub(b + 1)) else {
        return false;
    };
    bits.get(index).is_some_and(|b| b >> (n % 8) & 1 != 0)
}

/// What is compared: a key's SHA1 and SHA256 of its plain blob, and the blob.
struct Digests {
    blob: Vec<u8>,
    sha1: Vec<u8>,
    sha256: Vec<u8>,
}

impl Digests {
    fn of(blob: &[u8]) -> Self {
        Self {
            blob: blob.to_vec(),
            sha1: ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, blob)
                .as_ref()
                .to_vec(),
            sha256: ring::digest::digest(&ring::digest::SHA256, blob)
                .as_ref()
                .to_vec(),
        }
    }

    fn matches(&self, item: &Item<'_>) -> Option<KeyMatch> {
        match *item {
            Item::Key(b) if b == self.blob => Some(KeyMatch::Listed),
            Item::Sha1(h) if h == self.sha1 => Some(KeyMatch::Sha1),
            Item::Sha256(h) if h == self.sha256 => Some(KeyMatch::Sha256),
            _ => None,
        }
    }
}

impl Krl {
    /// Parses a KRL, checking every section as OpenSSH does.
    pub fn parse(bytes: &[u8]) -> Result<Krl, KrlError> {
        let (version, generated, comment) = walk(bytes, &mut |_| false)?;
        Ok(Krl {
            bytes: bytes.to_vec(),
            version,
            generated,
            comment,
        })
    }

    /// The KRL's version number.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When it was generated, seconds since the Unix epoch.
    pub fn generated(&self) -> u64 {
        self.generated
    }

    /// Its comment (sanitized).
    pub fn comment(&self) -> &str {
        &self.comment
    }

    /// Whether the KRL revokes `key`, or the host certificate `certificate` (whose key is
    /// `key`), and by what.
    pub fn check(&self, key: &PublicKey, certificate: Option<&Certificate>) -> Option<RevokedBy> {
        let plain = Digests::of(certificate.map_or(key.blob(), |c| c.public_key().blob()));
        let authority = certificate.map(|c| Digests::of(c.ca_key()));
        let mut found: Option<(u8, RevokedBy)> = None;
        // The order OpenSSH checks in, kept for which reason is reported: the key, the
        // certificate under its CA, the certificate under any CA, the CA's key.
        let mut note = |rank: u8, by: RevokedBy| {
            if found.as_ref().is_none_or(|(r, _)| rank < *r) {
                found = Some((rank, by));
            }
            rank == 0
        };
        let result = walk(&self.bytes, &mut |item| {
            if let Some(how) = plain.matches(&item) {
                return note(0, RevokedBy::Key(how));
            }
            if let (Some(cert), Some(ca)) = (certificate, &authority) {
                if let Some(how) = ca.matches(&item) {
                    return note(
                        3,
                        RevokedBy::Authority {
                            fingerprint: cert.ca_fingerprint().to_owned(),
                            how,
                        },
                    );
                }
                if let Some((for_ca, by)) = certificate_item(cert, &item) {
                    return note(if for_ca { 1 } else { 2 }, by);
                }
            }
            false
        });
        // Parsed once already: the same bytes walk the same way.
        result.ok()?;
        found.map(|(_, by)| by)
    }
}

/// Whether `item` revokes `cert` by serial or key id: `(under its own CA, why)`.
fn certificate_item(cert: &Certificate, item: &Item<'_>) -> Option<(bool, RevokedBy)> {
    let (ca, revoked) = match *item {
        Item::KeyId { ca, id } => (ca, id == cert.key_id_bytes()),
        // A certificate without a serial (0) is never revoked by serial.
        Item::Serials { ca, lo, hi } => {
            (ca, cert.serial() != 0 && (lo..=hi).contains(&cert.serial()))
        }
        Item::Bitmap { ca, offset, bits } => (
            ca,
            cert.serial()
                .checked_sub(offset)
                .is_some_and(|n| cert.serial() != 0 && bit_is_set(bits, n)),
        ),
        _ => return None,
    };
    if !revoked || !(ca.is_empty() || ca == cert.ca_key()) {
        return None;
    }
    let for_ca = !ca.is_empty();
    let ca = for_ca.then(|| cert.ca_fingerprint().to_owned());
    let by = match item {
        Item::KeyId { .. } => RevokedBy::KeyId {
            key_id: cert.key_id().to_owned(),
            ca,
        },
        _ => RevokedBy::Serial {
            serial: cert.serial(),
            ca,
        },
    };
    Some((for_ca, by))
}

/// A file of public keys, one per line, as `ssh-keygen` writes `.pub` files: what
/// OpenSSH reads a `RevokedHostKeys` file as when it is not a KRL.
#[derive(Clone, Debug, Default)]
pub struct KeyList {
    /// The plain key blobs (a certificate's line stands for its key).
    blobs: Vec<Vec<u8>>,
}

impl KeyList {
    /// Parses the lines. Blank lines and `#` comments are skipped, and so are RSA keys of a
    /// size no one uses (as OpenSSH skips keys of a bad length); any other line that is not a
    /// public key makes the list unusable, with the line's number, as in OpenSSH.
    pub fn parse(text: &str) -> Result<KeyList, String> {
        let mut list = KeyList::default();
        for (index, line) in text.split('\n').enumerate() {
            let line = line.trim_start_matches([' ', '\t']);
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() || line.starts_with('#') || line.starts_with('\0') {
                continue;
            }
            match key_line(line) {
                Ok(Some(blob)) => list.blobs.push(blob),
                Ok(None) => {}
                Err(why) => return Err(format!("line {}: {why}", index + 1)),
            }
        }
        Ok(list)
    }

    /// How many keys it lists.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether it lists no key.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Whether `key` (a certificate's key), or the CA of `certificate`, is listed.
    pub fn check(&self, key: &PublicKey, certificate: Option<&Certificate>) -> Option<RevokedBy> {
        let plain = certificate.map_or(key.blob(), |c| c.public_key().blob());
        if self.blobs.iter().any(|b| b.as_slice() == plain) {
            return Some(RevokedBy::Key(KeyMatch::Listed));
        }
        let cert = certificate?;
        self.blobs
            .iter()
            .any(|b| b.as_slice() == cert.ca_key())
            .then(|| RevokedBy::Authority {
                fingerprint: cert.ca_fingerprint().to_owned(),
                how: KeyMatch::Listed,
            })
    }
}

/// One key line: `type base64 [comment]`, as the plain key blob it stands for; `None` for a
/// line to skip (an RSA key of a size no one uses, as OpenSSH skips keys of a bad length).
fn key_line(line: &str) -> Result<Option<Vec<u8>>, String> {
    let shown = |s: &str| ssh_transport::text::sanitize(s.as_bytes(), false, 60);
    let mut words = line.split([' ', '\t']).filter(|w| !w.is_empty());
    let type_word = words.next().unwrap_or_default();
    let data = words
        .next()
        .ok_or_else(|| format!("{:?} is not followed by key data", shown(type_word)))?;
    let (blob, caveat) = super::key_field(type_word, data)?;
    if type_word.ends_with("-cert-v01@openssh.com") {
        let cert = Certificate::decode(&blob).map_err(|e| format!("bad certificate: {e}"))?;
        return Ok(Some(cert.public_key().blob().to_vec()));
    }
    Ok(caveat.is_none().then_some(blob))
}

/// One `RevokedHostKeys` file's contents.
#[derive(Clone, Debug)]
pub enum RevokedKeys {
    /// A key revocation list.
    Krl(Krl),
    /// A list of public keys.
    Keys(KeyList),
}

impl RevokedKeys {
    /// Reads a file's bytes: a KRL if it starts with the KRL magic, else a list of keys.
    pub fn parse(bytes: &[u8]) -> Result<RevokedKeys, String> {
        if bytes.starts_with(KRL_MAGIC) {
            Krl::parse(bytes)
                .map(RevokedKeys::Krl)
                .map_err(|e| e.to_string())
        } else {
            KeyList::parse(&String::from_utf8_lossy(bytes))
                .map(RevokedKeys::Keys)
                .map_err(|e| format!("neither a KRL nor a list of public keys: {e}"))
        }
    }

    /// Whether the host key `key`, presented as `certificate` when one was, is revoked.
    pub fn check(&self, key: &PublicKey, certificate: Option<&Certificate>) -> Option<RevokedBy> {
        match self {
            Self::Krl(krl) => krl.check(key, certificate),
            Self::Keys(list) => list.check(key, certificate),
        }
    }
}

/// The `RevokedHostKeys` files of a connection, read.
#[derive(Clone, Debug, Default)]
pub struct RevokedHostKeys {
    files: Vec<(PathBuf, RevokedKeys)>,
}

impl RevokedHostKeys {
    /// Reads every file. Unlike known_hosts, a missing file is an error, as in OpenSSH: the
    /// revocations it was meant to hold must not be skipped. Errors name the file; a file
    /// that is not a KRL or a key list is `InvalidData`.
    pub fn load(paths: &[PathBuf]) -> Result<RevokedHostKeys, io::Error> {
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            files.push((path.clone(), load_one(path)?));
        }
        Ok(RevokedHostKeys { files })
    }

    /// Whether no file was given.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The first file that revokes the host key `key` (presented as `certificate` when one
    /// was), and why.
    pub fn check(&self, key: &PublicKey, certificate: Option<&Certificate>) -> Option<Revocation> {
        self.files.iter().find_map(|(file, keys)| {
            keys.check(key, certificate).map(|by| Revocation {
                file: file.clone(),
                by,
            })
        })
    }
}

fn load_one(path: &Path) -> Result<RevokedKeys, io::Error> {
    let bytes = crate::files::read_bounded(path, MAX_FILE_SIZE).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot read RevokedHostKeys file {}: {e}", path.display()),
        )
    })?;
    RevokedKeys::parse(&bytes).map_err(|why| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot use RevokedHostKeys file {}: {why}", path.display()),
        )
    })
}
