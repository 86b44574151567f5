//! Bearer secrets: `kluis_<id>_<secret>`, made from the OS CSPRNG, kept by the server only as a
//! SHA-256 (the secret has 256 bits of entropy, so a plain hash is as strong as a slow one, and a
//! lookup costs microseconds, not an Argon2 run per request).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};

use super::TokenError;

/// The prefix every token starts with (so secret scanners and log filters can spot one).
pub const PREFIX: &str = "kluis_";
/// Characters of a token id (9 random bytes, base64url).
pub const ID_LEN: usize = 12;
/// Characters of the secret part (32 random bytes, base64url).
const SECRET_LEN: usize = 43;

/// A token's public id: shown by `kluis token list`, named in the audit log (`token:<id>`).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct TokenId(String);

impl TokenId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The actor its requests are audited as.
    pub fn actor(&self) -> String {
        format!("token:{}", self.0)
    }
}

impl std::fmt::Display for TokenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TokenId {
    type Error = TokenError;
    fn try_from(s: String) -> Result<Self, TokenError> {
        if s.len() == ID_LEN && s.bytes().all(is_b64url) {
            Ok(TokenId(s))
        } else {
            Err(TokenError::MalformedId)
        }
    }
}

impl From<TokenId> for String {
    fn from(id: TokenId) -> String {
        id.0
    }
}

impl std::str::FromStr for TokenId {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, TokenError> {
        TokenId::try_from(s.to_owned())
    }
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// A freshly made token: its id and the whole bearer text, shown once.
pub(crate) struct Fresh {
    pub(crate) id: TokenId,
    pub(crate) bearer: SecretString,
    pub(crate) hash: [u8; 32],
}

/// Makes a new token from the OS CSPRNG.
pub(crate) fn generate() -> Result<Fresh, TokenError> {
    let rng = SystemRandom::new();
    let mut raw = zeroize::Zeroizing::new([0u8; 9 + 32]);
    rng.fill(raw.as_mut()).map_err(|_| TokenError::Rng)?;
    let id = TokenId(URL_SAFE_NO_PAD.encode(&raw[..9]));
    let secret = zeroize::Zeroizing::new(URL_SAFE_NO_PAD.encode(&raw[9..]));
    let bearer = SecretString::from(format!("{PREFIX}{}_{}", id.0, secret.as_str()));
    let hash = digest(bearer.expose_secret());
    Ok(Fresh { id, bearer, hash })
}

/// SHA-256 of a bearer text.
pub(crate) fn digest(bearer: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bearer.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The id of a well-formed bearer text (`None` for anything else; the secret is not checked here).
pub(crate) fn id_of(bearer: &str) -> Option<TokenId> {
    let rest = bearer.strip_prefix(PREFIX)?;
    let (id, secret) = (rest.get(..ID_LEN)?, rest.get(ID_LEN..)?);
    let secret = secret.strip_prefix('_')?;
    let ok =
        id.bytes().all(is_b64url) && secret.len() == SECRET_LEN && secret.bytes().all(is_b64url);
    ok.then(|| TokenId(id.to_owned()))
}

/// Compares two digests without an early exit.
pub(crate) fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_token_parses_and_its_digest_matches() {
        let t = generate().unwrap();
        let text = t.bearer.expose_secret();
        assert!(text.starts_with(PREFIX));
        assert_eq!(id_of(text), Some(t.id.clone()));
        assert!(same_digest(&digest(text), &t.hash));
        let other = generate().unwrap();
        assert_ne!(other.id, t.id);
        assert!(!same_digest(&other.hash, &t.hash));
    }

    #[test]
    fn malformed_bearers_have_no_id() {
        let t = generate().unwrap();
        let text = t.bearer.expose_secret();
        for bad in [
            "",
            "kluis_",
            &text[..text.len() - 1],
            &format!("{text}x"),
            &text.replace('_', "-"),
            &text.replacen("kluis_", "kluis-", 1),
            "kluis_ééééééééééé_",
        ] {
            assert_eq!(id_of(bad), None, "{bad:?}");
        }
    }
}
