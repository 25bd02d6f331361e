//! Where digest secrets come from: the [`UserDirectory`] trait the binary implements over its
//! store, and [`MemoryDirectory`], a small in-memory implementation for tests and tools.

use std::collections::HashMap;

use confab_sip::auth::{self, Algorithm};
use parking_lot::RwLock;

/// The digest secret of one user, for one realm and algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCredential {
    /// The canonical user name (what the registrar binds and logs).
    pub user: String,
    /// The user's extension number, if any (an AOR may use it as its user part).
    pub extension: Option<String>,
    /// Hex HA1 = H(username ":" realm ":" password) for the requested algorithm (RFC 7616 §3.4.2).
    pub ha1: String,
}

/// A user as call routing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    /// The canonical user name (the registrar's AoR key).
    pub user: String,
    pub extension: Option<String>,
    /// A display name for the From header of calls this user places, if known.
    pub display_name: Option<String>,
}

/// Looks up digest secrets and users. Called on the request path from several transport threads
/// at once, so implementations answer from memory (a cache of the store), quickly, without IO.
pub trait UserDirectory: Send + Sync {
    /// The credential for `digest_username` (the `username` of the Authorization header, as
    /// sent) and `algorithm`, or `None` when there is no such user or no HA1 for that algorithm.
    fn credentials(&self, digest_username: &str, algorithm: Algorithm) -> Option<UserCredential>;

    /// The user a dialled name means: `name` is the user part of a Request-URI (already
    /// %-decoded), a user name or an extension number. `None`: no such user (404).
    ///
    /// The default finds user names only (through `credentials`); implementations should
    /// override it to resolve extensions too.
    fn lookup_user(&self, name: &str) -> Option<DirectoryUser> {
        let c = self
            .credentials(name, Algorithm::Sha256)
            .or_else(|| self.credentials(name, Algorithm::Md5))?;
        Some(DirectoryUser {
            user: c.user,
            extension: c.extension,
            display_name: None,
        })
    }
}

#[derive(Debug, Clone)]
struct MemoryUser {
    user: String,
    extension: Option<String>,
    ha1_md5: String,
    ha1_sha256: String,
}

/// A [`UserDirectory`] held in memory: users keyed by digest username, with both HA1s.
#[derive(Debug)]
pub struct MemoryDirectory {
    realm: String,
    users: RwLock<HashMap<String, MemoryUser>>,
}

impl MemoryDirectory {
    pub fn new(realm: impl Into<String>) -> Self {
        Self {
            realm: realm.into(),
            users: RwLock::new(HashMap::new()),
        }
    }

    /// Adds or replaces `user`, who authenticates with digest username `user` and `password`.
    pub fn insert(&self, user: &str, extension: Option<&str>, password: &str) {
        let entry = MemoryUser {
            user: user.to_owned(),
            extension: extension.map(str::to_owned),
            ha1_md5: auth::ha1(Algorithm::Md5, user, &self.realm, password),
            ha1_sha256: auth::ha1(Algorithm::Sha256, user, &self.realm, password),
        };
        self.users.write().insert(user.to_owned(), entry);
    }

    pub fn remove(&self, user: &str) {
        self.users.write().remove(user);
    }
}

impl UserDirectory for MemoryDirectory {
    fn credentials(&self, digest_username: &str, algorithm: Algorithm) -> Option<UserCredential> {
        let users = self.users.read();
        let u = users.get(digest_username)?;
        let ha1 = match algorithm {
            Algorithm::Md5 => u.ha1_md5.clone(),
            Algorithm::Sha256 => u.ha1_sha256.clone(),
            #[allow(unreachable_patterns)]
            _ => return None,
        };
        Some(UserCredential {
            user: u.user.clone(),
            extension: u.extension.clone(),
            ha1,
        })
    }

    /// By user name first, then by extension.
    fn lookup_user(&self, name: &str) -> Option<DirectoryUser> {
        let users = self.users.read();
        let u = users.get(name).or_else(|| {
            users
                .values()
                .find(|u| u.extension.as_deref() == Some(name))
        })?;
        Some(DirectoryUser {
            user: u.user.clone(),
            extension: u.extension.clone(),
            display_name: None,
        })
    }
}
