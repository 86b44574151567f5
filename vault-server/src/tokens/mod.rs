//! Access tokens: who may call the server, for which purposes and operations.
//!
//! The token list is one JSON file beside the vault (`tokens.json`, mode 0600), written by
//! `kluis token create/revoke` and read by the server. It holds no secret: each token is kept
//! as the SHA-256 of its bearer text, which is shown once, at creation. The whole list carries
//! an HMAC under the vault's [`Authenticator`] for the domain [`MAC_DOMAIN`], so someone who can
//! write the file but does not hold the vault's credentials cannot add a token or widen one
//! (the server refuses a list whose tag does not verify). Each write raises the list's
//! generation in the vault too (`Admin::raise_app_generation`), so an older copy of the file put
//! back (a revoked token alive again) or the file deleted is refused, across restarts. See
//! docs/format.md, "Token list".

mod secret;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use secrecy::SecretString;
use vault_core::admin::Authenticator;
use vault_core::{Timestamp, Vault};

pub use secret::{TokenId, PREFIX};

/// The [`Authenticator`] domain of the token list's MAC.
pub const MAC_DOMAIN: &str = "kluis-serve/tokens";
/// The token list's format tag.
const FORMAT: &str = "kluis-tokens/1";
/// Longest token name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Most tokens a list holds (revoked ones included).
pub const MAX_TOKENS: usize = 10_000;
/// Largest token list file the server reads.
const MAX_FILE_LEN: u64 = 16 * 1024 * 1024;

/// What a token may do. Each HTTP endpoint needs one of these (see the OpenAPI document).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Operation {
    /// Read whole values of in-scope fields (implies `read_masked`).
    Read,
    /// Read masked values of in-scope fields only (customer service).
    ReadMasked,
    /// Create subjects; put and update records of in-scope types and fields.
    Write,
    /// Delete records of in-scope types.
    Delete,
    /// Look subjects up by an indexed in-scope field.
    Find,
    /// Record anchor events (delivered, invoiced, ...) of in-scope records, near now.
    Event,
    /// Forget a subject (Art. 17). Needs all purposes.
    Forget,
    /// Place and release legal holds. Needs all purposes.
    Hold,
    /// Export a subject (Art. 15/20). Needs all purposes.
    Export,
    /// Read the record of processing activities (Art. 30). Needs all purposes.
    Register,
}

impl Operation {
    /// Every operation, in order.
    pub const ALL: &'static [Operation] = &[
        Operation::Read,
        Operation::ReadMasked,
        Operation::Write,
        Operation::Delete,
        Operation::Find,
        Operation::Event,
        Operation::Forget,
        Operation::Hold,
        Operation::Export,
        Operation::Register,
    ];

    /// The operation's name (`read_masked`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Operation::Read => "read",
            Operation::ReadMasked => "read_masked",
            Operation::Write => "write",
            Operation::Delete => "delete",
            Operation::Find => "find",
            Operation::Event => "event",
            Operation::Forget => "forget",
            Operation::Hold => "hold",
            Operation::Export => "export",
            Operation::Register => "register",
        }
    }

    /// Whether the operation concerns the whole subject (every purpose), so only a token for
    /// all purposes may have it: forgetting, holding and exporting are an operator's acts.
    pub fn needs_all_purposes(self) -> bool {
        matches!(
            self,
            Operation::Forget | Operation::Hold | Operation::Export | Operation::Register
        )
    }
}

impl std::str::FromStr for Operation {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, TokenError> {
        Operation::ALL
            .iter()
            .copied()
            .find(|o| o.name() == s.trim())
            .ok_or_else(|| TokenError::UnknownOperation(s.chars().take(32).collect()))
    }
}

/// The purposes a token may touch.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purposes {
    /// Every purpose of the schema in force (including ones a later schema adds).
    All,
    /// These purposes only.
    Only(BTreeSet<String>),
}

impl Purposes {
    /// The purposes as names, `*` for all.
    pub fn describe(&self) -> String {
        match self {
            Purposes::All => "*".to_owned(),
            Purposes::Only(p) => p.iter().cloned().collect::<Vec<_>>().join(","),
        }
    }
}

/// What `kluis token create` asks for.
#[derive(Debug, Clone)]
pub struct NewToken {
    /// A name for people (`warehouse`, `support`); not secret, not unique.
    pub name: String,
    /// Its purposes.
    pub purposes: Purposes,
    /// Its operations.
    pub operations: BTreeSet<Operation>,
    /// Requests per second it may make (burst: twice that); `None`: the server's default.
    pub rate_per_second: Option<u32>,
    /// Who made it (for the list).
    pub created_by: String,
}

/// One token of the list, as stored (no secret: the digest of its bearer text).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenInfo {
    /// Public id.
    pub id: TokenId,
    /// Name for people.
    pub name: String,
    /// Purposes.
    pub purposes: Purposes,
    /// Operations.
    pub operations: BTreeSet<Operation>,
    /// Requests per second (burst twice that); `None`: the server's default.
    pub rate_per_second: Option<u32>,
    /// When it was made.
    pub created_at: Timestamp,
    /// Who made it.
    pub created_by: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// SHA-256 of the bearer text, base64url.
    digest: String,
}

impl TokenInfo {
    /// Whether the token may `op`.
    pub fn may(&self, op: Operation) -> bool {
        self.revoked_at.is_none()
            && (self.operations.contains(&op)
                || (op == Operation::ReadMasked && self.operations.contains(&Operation::Read)))
    }

    /// Whether the token is still in force.
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }
}

/// A token just made: its public entry and the bearer text, shown once and never stored.
pub struct IssuedToken {
    /// The list entry.
    pub info: TokenInfo,
    /// The bearer text (`kluis_<id>_<secret>`).
    pub bearer: SecretString,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Errors of the token list.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The file could not be read or written.
    #[error("token list {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a token list, or its MAC does not verify under this vault.
    #[error("token list {path} is damaged or was not written for this vault ({why}); refusing it")]
    Integrity {
        /// The file.
        path: PathBuf,
        /// What is wrong (never a token).
        why: &'static str,
    },
    /// The file is older than the newest list this vault has recorded (a copy put back).
    #[error("token list {path} is generation {found}, but the vault has recorded generation {seen}: an older copy was put back; refusing it")]
    RolledBack {
        /// The file.
        path: PathBuf,
        /// The file's generation.
        found: u64,
        /// The vault's.
        seen: u64,
    },
    /// The file is gone though the vault has recorded a list (generation `seen`).
    #[error("token list {path} is missing, but the vault has recorded generation {seen}; restore it (a deleted list would otherwise make way for a new bootstrap token)")]
    Missing {
        /// The file.
        path: PathBuf,
        /// The vault's generation.
        seen: u64,
    },
    /// The vault could not read or record the list's generation.
    #[error("the vault could not record the token list's generation: {0}")]
    Vault(#[source] vault_core::StorageError),
    /// A purpose the schema does not declare.
    #[error("unknown purpose {0:?}")]
    UnknownPurpose(String),
    /// An operation name that is not one.
    #[error("unknown operation {0:?} (read, read_masked, write, delete, find, event, forget, hold, export, register)")]
    UnknownOperation(String),
    /// An operation that needs all purposes on a token for fewer.
    #[error(
        "operation {0:?} concerns the whole subject: give the token all purposes (--purposes '*')"
    )]
    NeedsAllPurposes(&'static str),
    /// No operation, no purpose, a bad name or a zero rate.
    #[error("{0}")]
    Invalid(&'static str),
    /// A token id that is not one.
    #[error("not a token id (12 URL-safe base64 characters, as `kluis token list` shows)")]
    MalformedId,
    /// No token with that id.
    #[error("no token {0}")]
    NotFound(TokenId),
    /// The token was revoked already.
    #[error("token {0} was revoked already")]
    AlreadyRevoked(TokenId),
    /// The list holds the most tokens it may.
    #[error("the token list holds {MAX_TOKENS} tokens; remove revoked ones from a copy first")]
    Full,
    /// The OS random generator failed.
    #[error("the operating system's random generator failed")]
    Rng,
}

/// The stored body (MACed as serialised).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    format: String,
    /// Grows by one per write: a server refuses a list older than one it has read.
    generation: u64,
    tokens: Vec<TokenInfo>,
}

/// The file: the body and its tag.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    body: Body,
    mac: String,
}

/// The token list of one vault, loaded from its file.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    body: Body,
}

impl TokenStore {
    /// The token list's default place: `tokens.json` in a vault directory, or beside the key
    /// store of a vault on PostgreSQL (`<key store>.tokens.json`).
    pub fn default_path(paths: &vault_core::VaultPaths) -> PathBuf {
        let ks = &paths.key_store;
        match ks.parent().and_then(Path::parent) {
            // `DIR/keys/key_store` → `DIR/tokens.json`
            Some(dir) if paths.data_dir().is_some() => dir.join("tokens.json"),
            _ => {
                let mut name = ks.as_os_str().to_owned();
                name.push(".tokens.json");
                PathBuf::from(name)
            }
        }
    }

    /// Reads the list at `path`, checks its MAC under `vault`'s key and its generation against
    /// the one `vault` recorded; a missing file is an empty list only while the vault has
    /// recorded none.
    pub fn open(path: &Path, vault: &Vault) -> Result<TokenStore, TokenError> {
        let seen = vault
            .admin()
            .app_generation(MAC_DOMAIN)
            .map_err(TokenError::Vault)?;
        let store = Self::read(path, &vault.admin().authenticator(MAC_DOMAIN))?;
        match store.body.generation {
            0 if seen > 0 => Err(TokenError::Missing {
                path: path.to_owned(),
                seen,
            }),
            found if found < seen => Err(TokenError::RolledBack {
                path: path.to_owned(),
                found,
                seen,
            }),
            _ => Ok(store),
        }
    }

    /// The list at `path` with its MAC checked; a missing file is an empty list (generation 0).
    fn read(path: &Path, auth: &Authenticator) -> Result<TokenStore, TokenError> {
        let io = |source| TokenError::Io {
            path: path.to_owned(),
            source,
        };
        let bytes = match std::fs::File::open(path) {
            Ok(f) => read_capped(f).map_err(io)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(TokenStore {
                    path: path.to_owned(),
                    body: Body {
                        format: FORMAT.to_owned(),
                        ..Body::default()
                    },
                })
            }
            Err(e) => return Err(io(e)),
        };
        let body = decode(&bytes, auth).map_err(|why| TokenError::Integrity {
            path: path.to_owned(),
            why,
        })?;
        Ok(TokenStore {
            path: path.to_owned(),
            body,
        })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The list's generation (grows by one per write).
    pub fn generation(&self) -> u64 {
        self.body.generation
    }

    /// Every token, revoked ones included, oldest first.
    pub fn list(&self) -> &[TokenInfo] {
        &self.body.tokens
    }

    /// The active token whose bearer text is `bearer`, if any (constant-time digest check).
    pub fn authenticate(&self, bearer: &str) -> Option<&TokenInfo> {
        let id = secret::id_of(bearer)?;
        let t = self.body.tokens.iter().find(|t| t.id == id)?;
        let stored = URL_SAFE_NO_PAD.decode(&t.digest).ok()?;
        let stored: [u8; 32] = stored.try_into().ok()?;
        (secret::same_digest(&secret::digest(bearer), &stored) && t.is_active()).then_some(t)
    }

    /// Makes a token for `spec` (purposes checked against `known_purposes`, the schema's) and
    /// saves the list. The bearer text is in the result only.
    pub fn create<'a>(
        &mut self,
        spec: NewToken,
        known_purposes: impl IntoIterator<Item = &'a str>,
        now: Timestamp,
        vault: &Vault,
    ) -> Result<IssuedToken, TokenError> {
        validate(&spec, &known_purposes.into_iter().collect())?;
        let fresh = secret::generate()?;
        let info = TokenInfo {
            id: fresh.id,
            name: spec.name,
            purposes: spec.purposes,
            operations: spec.operations,
            rate_per_second: spec.rate_per_second,
            created_at: now,
            created_by: spec.created_by.chars().take(MAX_NAME_LEN).collect(),
            revoked_at: None,
            digest: URL_SAFE_NO_PAD.encode(fresh.hash),
        };
        let entry = info.clone();
        self.modify(vault, move |body| {
            if body.tokens.len() >= MAX_TOKENS {
                return Err(TokenError::Full);
            }
            body.tokens.push(entry);
            Ok(())
        })?;
        Ok(IssuedToken {
            info,
            bearer: fresh.bearer,
        })
    }

    /// Revokes token `id` and saves the list (the entry stays, marked, for the record).
    pub fn revoke(
        &mut self,
        id: &TokenId,
        now: Timestamp,
        vault: &Vault,
    ) -> Result<TokenInfo, TokenError> {
        self.modify(vault, |body| {
            let t = body
                .tokens
                .iter_mut()
                .find(|t| &t.id == id)
                .ok_or_else(|| TokenError::NotFound(id.clone()))?;
            if t.revoked_at.is_some() {
                return Err(TokenError::AlreadyRevoked(id.clone()));
            }
            t.revoked_at = Some(now);
            Ok(t.clone())
        })
    }

    /// Starts over with an empty list, for an operator whose list is lost or refused (a file
    /// gone, damaged, or older than the vault's record): every token is gone, the new list's
    /// generation lies above every one the vault recorded, so no old copy can come back.
    pub fn reset(path: &Path, vault: &Vault) -> Result<TokenStore, TokenError> {
        let io = |source| TokenError::Io {
            path: path.to_owned(),
            source,
        };
        let _lock = lock(path).map_err(io)?;
        let seen = vault
            .admin()
            .app_generation(MAC_DOMAIN)
            .map_err(TokenError::Vault)?;
        let body = Body {
            format: FORMAT.to_owned(),
            generation: seen + 1,
            tokens: Vec::new(),
        };
        let bytes = encode(&body, &vault.admin().authenticator(MAC_DOMAIN)).map_err(io)?;
        write_atomic(path, &bytes).map_err(io)?;
        vault
            .admin()
            .raise_app_generation(MAC_DOMAIN, body.generation)
            .map_err(TokenError::Vault)?;
        Ok(TokenStore {
            path: path.to_owned(),
            body,
        })
    }

    /// Applies `change` to the list as it is on disk now and saves it, all under an exclusive
    /// lock on `<file>.lock`: two `kluis token` runs at once (several processes on one vault in
    /// PostgreSQL, or a server's admin socket beside a local CLI) never lose each other's change.
    /// The file is written first, then the vault records its generation: a crash between the
    /// two leaves a file newer than the vault's record, which is accepted (and recorded at the
    /// next change); the other order could leave the vault refusing the only list there is.
    fn modify<T>(
        &mut self,
        vault: &Vault,
        change: impl FnOnce(&mut Body) -> Result<T, TokenError>,
    ) -> Result<T, TokenError> {
        let io = |source| TokenError::Io {
            path: self.path.clone(),
            source,
        };
        let auth = vault.admin().authenticator(MAC_DOMAIN);
        let _lock = lock(&self.path).map_err(io)?;
        self.body = TokenStore::open(&self.path, vault)?.body;
        let out = change(&mut self.body)?;
        self.body.generation += 1;
        let bytes = encode(&self.body, &auth).map_err(io)?;
        write_atomic(&self.path, &bytes).map_err(io)?;
        vault
            .admin()
            .raise_app_generation(MAC_DOMAIN, self.body.generation)
            .map_err(TokenError::Vault)?;
        Ok(out)
    }
}

/// An exclusive lock on `<path>.lock` (0600), held until the file is dropped.
fn lock(path: &Path) -> std::io::Result<std::fs::File> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(false);
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let f = o.open(PathBuf::from(name))?;
    f.lock()?;
    Ok(f)
}

fn validate(spec: &NewToken, known: &BTreeSet<&str>) -> Result<(), TokenError> {
    let name_ok = !spec.name.is_empty()
        && spec.name.len() <= MAX_NAME_LEN
        && spec
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !name_ok {
        return Err(TokenError::Invalid(
            "a token name is 1 to 64 characters of [A-Za-z0-9._-]",
        ));
    }
    if spec.operations.is_empty() {
        return Err(TokenError::Invalid("a token needs at least one operation"));
    }
    if spec.rate_per_second == Some(0) {
        return Err(TokenError::Invalid("a rate limit is at least 1 request/s"));
    }
    match &spec.purposes {
        Purposes::All => Ok(()),
        Purposes::Only(p) => {
            if p.is_empty() {
                return Err(TokenError::Invalid("a token needs at least one purpose"));
            }
            if let Some(u) = p.iter().find(|p| !known.contains(p.as_str())) {
                return Err(TokenError::UnknownPurpose(u.chars().take(64).collect()));
            }
            match spec.operations.iter().find(|o| o.needs_all_purposes()) {
                Some(o) => Err(TokenError::NeedsAllPurposes(o.name())),
                None => Ok(()),
            }
        }
    }
}

fn encode(body: &Body, auth: &Authenticator) -> std::io::Result<Vec<u8>> {
    // serde_json writes a struct's fields in declaration order: the body's bytes are a function
    // of its value, so the reader can re-serialise what it parsed and check the tag on that.
    let body_bytes = serde_json::to_vec(body)?;
    let file = File {
        body: body.clone(),
        mac: URL_SAFE_NO_PAD.encode(auth.tag(&body_bytes)),
    };
    let mut out = serde_json::to_vec_pretty(&file)?;
    out.push(b'\n');
    Ok(out)
}

fn decode(bytes: &[u8], auth: &Authenticator) -> Result<Body, &'static str> {
    let file: File = serde_json::from_slice(bytes).map_err(|_| "not a token list")?;
    if file.body.format != FORMAT {
        return Err("unknown format");
    }
    let tag = URL_SAFE_NO_PAD
        .decode(&file.mac)
        .map_err(|_| "bad MAC encoding")?;
    let body_bytes = serde_json::to_vec(&file.body).map_err(|_| "not a token list")?;
    if !auth.verify(&body_bytes, &tag) {
        return Err("its MAC does not verify");
    }
    Ok(file.body)
}

fn read_capped(f: std::fs::File) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_LEN + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_LEN {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "larger than 16 MiB",
        ));
    }
    Ok(bytes)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let mut f = o.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests;
