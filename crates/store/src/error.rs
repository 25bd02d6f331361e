//! The store's one error type.

use std::path::PathBuf;

/// Why a store operation failed. Variants other than `DataDir`, `Open`, `Migrate` and `Database`
/// are the caller's fault and carry a message fit to show a user as is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A user with this user name already exists (or the name is another user's extension).
    #[error("user {0:?} already exists")]
    UserExists(String),
    /// The extension is already assigned (or is another user's user name).
    #[error("extension {extension} is already taken by {owner}")]
    ExtensionTaken {
        extension: String,
        /// The user name of the user holding it.
        owner: String,
    },
    /// No user has this user name or extension.
    #[error("no such user: {0:?}")]
    NoSuchUser(String),
    /// The user name is not a valid SIP user part as Confab restricts it.
    #[error(
        "invalid user name {0:?}: use 1 to 64 lower-case letters, digits, '.', '_' or '-', \
         starting with a letter or digit"
    )]
    InvalidUsername(String),
    /// The extension is not 2 to 15 digits.
    #[error("invalid extension {0:?}: use 2 to 15 digits (0-9)")]
    InvalidExtension(String),
    /// The display name has control characters or is too long.
    #[error("invalid display name {0:?}: at most 128 characters, no control characters")]
    InvalidDisplayName(String),
    /// The password is unusable (empty, too long, or has control characters).
    #[error("invalid password: {0}")]
    InvalidPassword(&'static str),
    /// The data directory could not be created.
    #[error("cannot create data directory {}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database file could not be opened.
    #[error("cannot open database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    /// Applying the embedded schema migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}
