//! User private keys: loading them from the files `ssh-keygen` and `openssl` write (with or
//! without a passphrase), signing, and making new ones.
//!
//! ```text
//!  file bytes ─> armor (BEGIN/END, headers, base64)
//!    ├─ OPENSSH PRIVATE KEY ─> openssh: header ─[passphrase: bcrypt-pbkdf, AES-CTR/CBC/GCM]─┐
//!    ├─ RSA PRIVATE KEY ─┬─[DEK-Info: EVP_BytesToKey(MD5), AES/3DES-CBC]─> pkcs1 ──────────┤
//!    ├─ EC PRIVATE KEY ──┘                                              └─> sec1 ───────────┤
//!    ├─ ENCRYPTED PRIVATE KEY ─[passphrase: PBES2 (PBKDF2 or scrypt)]─┐                      │
//!    └─ PRIVATE KEY ─────────────────────────────────────────────────┴─> pkcs8 ────────────┤
//!                                                                                           v
//!   PrivateKey { public, comment, signer }  signer = Ed25519 (ring) | RSA ≤ 4096 (ring)
//!                                                  | RSA > 4096 (rsa 0.10) | ECDSA (RustCrypto)
//!   PrivateKey::generate_* ─> to_openssh_file ─> the text `ssh-keygen -N ""` would write
//! ```
//!
//! Nothing here reads files or prompts: callers pass the file's bytes and, when
//! [`is_encrypted`] says so (or loading returns [`KeyFileError::PassphraseRequired`]), a
//! passphrase they got from a terminal prompt or from a file or environment variable the user
//! named (never from the command line, where other users can see it). They should keep the
//! passphrase in a `zeroize::Zeroizing` buffer; every buffer here that holds derived keys or
//! decrypted key material is one too. [`check_key_file_mode`] is OpenSSH's rule for refusing
//! key files other users can read; the caller gives it the file's owner and mode.
//!
//! What a hostile file can cost is bounded: at most [`MAX_KEY_FILE_LEN`] bytes are parsed, and
//! the passphrase derivation by [`KdfLimits`] (by default bcrypt at most 4096 rounds, PBKDF2
//! at most ten million iterations, scrypt at most 256 MiB).
//!
//! ring keeps its own copy of an Ed25519 or RSA key inside its key pair and does not wipe it
//! when dropped; that copy lives as long as the [`PrivateKey`].

mod armor;
mod der;
mod ecdsa;
mod openssh;
mod pem;
mod perms;
mod rsa_key;
mod sym;

use core::fmt;

use ring::signature::{Ed25519KeyPair, KeyPair as _};
use ssh_transport::hostkey::{PublicKey, SignatureAlgorithm};
use ssh_transport::wire::Writer as _;
use zeroize::Zeroizing;

use crate::error::{KeyFileError, SignError};
use ecdsa::{Curve, EcdsaKey};
use rsa_key::{RsaKey, SystemRng};

pub use perms::check_key_file_mode;

/// Larger files are refused before any parsing: an OpenSSH RSA-16384 key file is about 13 KiB.
pub const MAX_KEY_FILE_LEN: usize = 64 * 1024;

/// How much work and memory deriving a key from a passphrase may cost: key files say how much
/// they want, and a hostile one could otherwise ask for hours or gigabytes. A file asking for
/// more is refused with [`KeyFileError::KdfTooCostly`] before any work, and before a
/// passphrase is needed. The defaults are far above what `ssh-keygen` and `openssl` write and
/// bound one key to about half a minute of one core and 256 MiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct KdfLimits {
    /// bcrypt rounds of OpenSSH's format. `ssh-keygen` uses 16 unless told otherwise with
    /// `-a` (guides suggest 100 or so); a round of deriving an AES-256 key and IV takes about
    /// 8 ms on a current x86 core. Default 4096.
    pub bcrypt_rounds: u32,
    /// PBKDF2 iterations of PKCS#8. OpenSSL writes 2048 by default; the most cautious current
    /// advice for HMAC-SHA-256 is 600 000. Default ten million (seconds).
    pub pbkdf2_iterations: u32,
    /// scrypt memory of PKCS#8, 128·r·N bytes. OpenSSL's `-scrypt` uses 16 MiB. Default
    /// 256 MiB.
    pub scrypt_memory: u64,
    /// scrypt work of PKCS#8, N·r·p block mixes. Default sixteen times OpenSSL's 16384·8·1.
    pub scrypt_work: u64,
}

impl KdfLimits {
    /// The defaults, as a constant.
    pub const DEFAULT: Self = Self {
        bcrypt_rounds: 4096,
        pbkdf2_iterations: 10_000_000,
        scrypt_memory: 256 * 1024 * 1024,
        scrypt_work: 16 * 16384 * 8,
    };
}

impl Default for KdfLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The RSA size [`PrivateKey::generate_rsa`] is usually given, as `forwarder keygen` does:
/// what platforms hand their customers today.
pub const DEFAULT_RSA_BITS: usize = 4096;

const RSA_ALGORITHMS: &[SignatureAlgorithm] =
    &[SignatureAlgorithm::RsaSha512, SignatureAlgorithm::RsaSha256];
const ED25519_ALGORITHMS: &[SignatureAlgorithm] = &[SignatureAlgorithm::Ed25519];
const ECDSA_P256_ALGORITHMS: &[SignatureAlgorithm] = &[SignatureAlgorithm::EcdsaP256];
const ECDSA_P384_ALGORITHMS: &[SignatureAlgorithm] = &[SignatureAlgorithm::EcdsaP384];
const ECDSA_P521_ALGORITHMS: &[SignatureAlgorithm] = &[SignatureAlgorithm::EcdsaP521];

/// A user's private key, ready to sign.
pub struct PrivateKey {
    public: PublicKey,
    comment: String,
    signer: Signer,
}

enum Signer {
    Rsa(Box<RsaKey>),
    Ed25519 {
        pair: Ed25519KeyPair,
        /// Kept for [`PrivateKey::to_openssh_file`]: ring does not give it back.
        seed: Zeroizing<[u8; 32]>,
    },
    Ecdsa(EcdsaKey),
}

/// Whether a key file needs a passphrase: an OpenSSH key with a cipher other than `none`, a
/// PEM block with `Proc-Type: 4,ENCRYPTED` / `DEK-Info` headers, or an `ENCRYPTED PRIVATE KEY`
/// block. `false` for anything else, including files that are not keys at all (loading them
/// then says what is wrong).
pub fn is_encrypted(data: &[u8]) -> bool {
    let Some(block) = text_of(data).ok().and_then(|t| armor::parse(t).ok()) else {
        return false;
    };
    match block.label {
        "OPENSSH PRIVATE KEY" => block.decode().is_ok_and(|bin| openssh::is_encrypted(&bin)),
        "ENCRYPTED PRIVATE KEY" => true,
        _ => block.encrypted_headers,
    }
}

fn text_of(data: &[u8]) -> Result<&str, KeyFileError> {
    if data.len() > MAX_KEY_FILE_LEN {
        return Err(KeyFileError::TooLarge {
            len: data.len(),
            max: MAX_KEY_FILE_LEN,
        });
    }
    let text = core::str::from_utf8(data).map_err(|_| KeyFileError::NotAPrivateKey)?;
    Ok(text.strip_prefix('\u{feff}').unwrap_or(text))
}

impl PrivateKey {
    /// Loads an unencrypted key from the contents of a key file: OpenSSH format, PEM PKCS#1
    /// (`RSA PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`) or PKCS#8 (`PRIVATE KEY`). Supported keys
    /// are Ed25519, ECDSA on nistp256/384/521 and RSA of 2048 to 16384 bits. A key protected
    /// by a passphrase gives [`KeyFileError::PassphraseRequired`] (once the rest of what can
    /// be checked without it is fine); load it with
    /// [`Self::from_file_contents_with_passphrase`]. The caller should wipe `data` when done.
    pub fn from_file_contents(data: &[u8]) -> Result<Self, KeyFileError> {
        Self::load(data, None, &KdfLimits::DEFAULT)
    }

    /// Like [`Self::from_file_contents`], decrypting an encrypted key with `passphrase`:
    /// OpenSSH's bcrypt-pbkdf with `aes{128,192,256}-{ctr,cbc}`, `aes{128,256}-gcm@openssh.com`
    /// or `3des-cbc`; legacy PEM `DEK-Info` with AES-128/192/256-CBC or DES-EDE3-CBC; PKCS#8
    /// PBES2 with PBKDF2 (HMAC-SHA-1 or SHA-2) or scrypt and AES-CBC, AES-GCM or DES-EDE3-CBC.
    /// An unencrypted key loads as it is; the passphrase is then not used. A passphrase that
    /// does not decrypt the key gives [`KeyFileError::WrongPassphrase`].
    pub fn from_file_contents_with_passphrase(
        data: &[u8],
        passphrase: &[u8],
    ) -> Result<Self, KeyFileError> {
        Self::load(data, Some(passphrase), &KdfLimits::DEFAULT)
    }

    /// Like [`Self::from_file_contents_with_passphrase`] with other bounds on the passphrase
    /// derivation than the defaults (a fuzzer, for one, wants far smaller ones).
    pub fn from_file_contents_with_passphrase_limited(
        data: &[u8],
        passphrase: &[u8],
        limits: &KdfLimits,
    ) -> Result<Self, KeyFileError> {
        Self::load(data, Some(passphrase), limits)
    }

    fn load(
        data: &[u8],
        passphrase: Option<&[u8]>,
        limits: &KdfLimits,
    ) -> Result<Self, KeyFileError> {
        let block = armor::parse(text_of(data)?)?;
        match block.label {
            "OPENSSH PRIVATE KEY" => openssh::parse(&block.decode()?, passphrase, limits),
            "RSA PRIVATE KEY" | "EC PRIVATE KEY" => {
                let body = block.decode()?;
                let der = match block.dek_info {
                    Some(dek) => pem::decrypt(dek, &body, passphrase)?,
                    None if block.encrypted_headers => {
                        return Err(KeyFileError::Malformed(
                            "the block is marked encrypted but has no DEK-Info header".into(),
                        ));
                    }
                    None => body,
                };
                let parsed = if block.label == "RSA PRIVATE KEY" {
                    der::pkcs1(&der)
                } else {
                    der::sec1(&der, None)
                };
                match parsed {
                    // Bytes decrypted with a wrong key that happened to pad correctly.
                    Err(KeyFileError::Malformed(_)) if block.dek_info.is_some() => {
                        Err(KeyFileError::WrongPassphrase)
                    }
                    other => other,
                }
            }
            "ENCRYPTED PRIVATE KEY" => der::encrypted_pkcs8(&block.decode()?, passphrase, limits),
            // Named before the passphrase: removing it would not make these usable.
            "DSA PRIVATE KEY" => Err(KeyFileError::UnsupportedKeyType("ssh-dss (DSA)".into())),
            _ if block.encrypted_headers => Err(KeyFileError::UnsupportedEncryption(
                "legacy PEM encryption of a PKCS#8 block".into(),
            )),
            "PRIVATE KEY" => der::pkcs8(&block.decode()?),
            "PUBLIC KEY" | "RSA PUBLIC KEY" | "SSH2 PUBLIC KEY" => {
                Err(KeyFileError::PublicKeyInstead)
            }
            _ => Err(KeyFileError::NotAPrivateKey),
        }
    }

    /// Makes an Ed25519 key from its 32-byte seed (the private key proper). Useful for tests
    /// and for keys kept outside files.
    pub fn from_ed25519_seed(seed: &[u8; 32], comment: &str) -> Result<Self, KeyFileError> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|e| KeyFileError::InvalidKey(format!("Ed25519 seed rejected: {e}")))?;
        let public: [u8; 32] =
            pair.public_key().as_ref().try_into().map_err(|_| {
                KeyFileError::InvalidKey("Ed25519 public key is not 32 bytes".into())
            })?;
        Ok(Self {
            public: PublicKey::ed25519(&public),
            comment: comment.to_owned(),
            signer: Signer::Ed25519 {
                pair,
                seed: Zeroizing::new(*seed),
            },
        })
    }

    /// A new Ed25519 key from the operating system's random numbers.
    pub fn generate_ed25519() -> Result<Self, KeyFileError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        SystemRng::default().fill(&mut *seed)?;
        Self::from_ed25519_seed(&seed, "")
    }

    /// A new RSA key of `bits` bits (2048 to 16384; [`DEFAULT_RSA_BITS`] is the usual choice)
    /// with public exponent 65537, generated by the `rsa` crate from the operating system's
    /// random numbers. Takes seconds for 4096 bits and far longer for the largest sizes.
    /// Generation is done once, on the user's machine, so its timing is no remote attack
    /// surface.
    pub fn generate_rsa(bits: usize) -> Result<Self, KeyFileError> {
        Self::from_rsa(RsaKey::generate(bits)?, String::new())
    }

    /// An Ed25519 key whose file carries the public key too; ring checks that they agree.
    fn ed25519_parts(
        seed: &[u8; 32],
        public: &[u8; 32],
        comment: String,
    ) -> Result<Self, KeyFileError> {
        let pair = Ed25519KeyPair::from_seed_and_public_key(seed, public).map_err(|e| {
            KeyFileError::InvalidKey(format!(
                "the Ed25519 seed does not give its public key ({e})"
            ))
        })?;
        Ok(Self {
            public: PublicKey::ed25519(public),
            comment,
            signer: Signer::Ed25519 {
                pair,
                seed: Zeroizing::new(*seed),
            },
        })
    }

    fn from_rsa(key: RsaKey, comment: String) -> Result<Self, KeyFileError> {
        let public = PublicKey::from_blob(&key.public_blob())
            .map_err(|e| KeyFileError::InvalidKey(format!("RSA public key: {e}")))?;
        Ok(Self {
            public,
            comment,
            signer: Signer::Rsa(Box::new(key)),
        })
    }

    fn from_ecdsa(key: EcdsaKey, comment: String) -> Result<Self, KeyFileError> {
        let public = match PublicKey::from_blob(&key.public_blob()) {
            Ok(p) => p,
            // The transport does not know this curve: the key cannot be offered.
            Err(ssh_transport::hostkey::KeyError::UnsupportedKeyType(name)) => {
                return Err(KeyFileError::UnsupportedKeyType(name));
            }
            Err(e) => return Err(KeyFileError::InvalidKey(format!("ECDSA public key: {e}"))),
        };
        Ok(Self {
            public,
            comment,
            signer: Signer::Ecdsa(key),
        })
    }

    /// The public half.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The comment stored with the key (OpenSSH format only; empty otherwise), sanitized.
    pub fn comment(&self) -> &str {
        &self.comment
    }

    /// The public key's `SHA256:` fingerprint, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.public.fingerprint()
    }

    /// Signature algorithms this key can make, in our preference order: RSA gives
    /// `[RsaSha512, RsaSha256]` (SHA-1 `ssh-rsa` never), Ed25519 gives `[Ed25519]`, an ECDSA
    /// key its curve's one algorithm.
    pub fn signature_algorithms(&self) -> &'static [SignatureAlgorithm] {
        match &self.signer {
            Signer::Rsa(_) => RSA_ALGORITHMS,
            Signer::Ed25519 { .. } => ED25519_ALGORITHMS,
            Signer::Ecdsa(k) => match k.curve() {
                Curve::P256 => ECDSA_P256_ALGORITHMS,
                Curve::P384 => ECDSA_P384_ALGORITHMS,
                Curve::P521 => ECDSA_P521_ALGORITHMS,
            },
        }
    }

    /// Signs `data`, returning a whole SSH signature blob: `string algorithm-name,
    /// string signature`.
    pub fn sign(&self, alg: SignatureAlgorithm, data: &[u8]) -> Result<Vec<u8>, SignError> {
        if !self.signature_algorithms().contains(&alg) {
            return Err(SignError::UnsupportedAlgorithm {
                algorithm: alg,
                key_type: self.public.key_type(),
            });
        }
        let sig = match &self.signer {
            Signer::Ed25519 { pair, .. } => pair.sign(data).as_ref().to_vec(),
            Signer::Rsa(key) => key.sign(alg, data)?,
            Signer::Ecdsa(key) => key.sign(data)?,
        };
        let mut out = Vec::with_capacity(sig.len() + 32);
        out.put_str(alg.name());
        out.put_string(&sig);
        Ok(out)
    }

    /// The key in OpenSSH's format, unencrypted, exactly as `ssh-keygen -N ""` writes it
    /// (a random check number, padding 1, 2, 3, ..., base64 in lines of 70), with `comment`
    /// (OpenSSH's default is `user@host`). The text is wiped when dropped; write it to a
    /// file created with mode 0600.
    pub fn to_openssh_file(&self, comment: &str) -> Result<Zeroizing<String>, KeyFileError> {
        let mut check = [0u8; 4];
        SystemRng::default().fill(&mut check)?;
        openssh::encode(self, comment, u32::from_ne_bytes(check))
    }

    /// Appends the type-specific private fields of OpenSSH's format.
    fn write_openssh_private(&self, out: &mut Vec<u8>) -> Result<(), KeyFileError> {
        match &self.signer {
            Signer::Ed25519 { pair, seed } => {
                let public = pair.public_key().as_ref();
                out.put_string(public);
                out.put_u32(64);
                out.put_raw(&**seed);
                out.put_raw(public);
            }
            Signer::Rsa(key) => key.write_openssh_private(out)?,
            Signer::Ecdsa(key) => {
                out.put_str(key.curve().ssh_name());
                out.put_string(&key.public_point());
                out.put_mpint(&key.scalar());
            }
        }
        Ok(())
    }

    /// More than the bytes [`Self::write_openssh_private`] appends.
    fn private_len_bound(&self) -> usize {
        match &self.signer {
            Signer::Ed25519 { .. } => 128,
            Signer::Rsa(key) => key.private_len_bound(),
            Signer::Ecdsa(_) => 256,
        }
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secret: only what `ssh-keygen -l` would show.
        f.debug_struct("PrivateKey")
            .field("type", &self.public.key_type().name())
            .field("fingerprint", &self.public.fingerprint())
            .field("comment", &self.comment)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
