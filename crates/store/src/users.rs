//! Users and their digest credentials.

use std::collections::HashMap;

use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};

use confab_sip::auth::{ha1, Algorithm};

use crate::registrations::user_part;
use crate::validate::{validate_display_name, validate_password};
use crate::{
    bump_directory_version, unix_now, validate_extension, validate_username, Store, StoreError,
};

/// The algorithms an HA1 is stored for, each under its RFC 8760 name (`MD5`, `SHA-256`).
const ALGORITHMS: [Algorithm; 2] = [Algorithm::Md5, Algorithm::Sha256];

/// What [`Store::add_user`] needs to create a user. The password is hashed into HA1 digests and
/// then dropped.
#[derive(Clone)]
pub struct NewUser {
    /// The canonical user name, also the user part of the address of record.
    pub username: String,
    /// The name shown to callees, if any.
    pub display_name: Option<String>,
    /// A dialable extension (2 to 15 digits), unique across users, if any.
    pub extension: Option<String>,
    /// The SIP password in clear text; never stored.
    pub password: String,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("display_name", &self.display_name)
            .field("extension", &self.extension)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A stored user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub display_name: Option<String>,
    pub extension: Option<String>,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: i64,
}

/// One digest secret the authenticator may check a response against.
///
/// A user has one record per algorithm for its user name and, when it has an extension, one per
/// algorithm for the extension as digest user name (phones often take the extension as their
/// authentication user).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialRecord {
    /// The canonical user name the credential belongs to.
    pub username: String,
    /// The `username` parameter a client puts in its Authorization header.
    pub digest_username: String,
    pub algorithm: Algorithm,
    /// Lower-case hex HA1 = H(digest_username ":" realm ":" password).
    pub ha1: String,
    pub extension: Option<String>,
    pub display_name: Option<String>,
}

const USER_COLUMNS: &str = "id, username, display_name, extension, created_at";

fn user_from_row(row: &SqliteRow) -> Result<User, sqlx::Error> {
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        extension: row.try_get("extension")?,
        created_at: row.try_get("created_at")?,
    })
}

/// Treats an empty or blank optional field as absent.
fn non_blank(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

impl Store {
    /// Creates a user with HA1 credentials for `realm` (the SIP domain).
    ///
    /// Fails with [`StoreError::UserExists`] if the user name is taken, and with
    /// [`StoreError::ExtensionTaken`] if the extension is another user's extension or user name,
    /// or the user name is another user's extension: a name or number identifies one user.
    pub async fn add_user(&self, new: NewUser, realm: &str) -> Result<User, StoreError> {
        let username = new.username.trim().to_owned();
        let display_name = non_blank(new.display_name);
        let extension = non_blank(new.extension);
        validate_username(&username)?;
        if let Some(extension) = &extension {
            validate_extension(extension)?;
        }
        if let Some(display_name) = &display_name {
            validate_display_name(display_name)?;
        }
        validate_password(&new.password)?;

        let mut tx = self.begin_write().await?;
        if let Some(owner) = owner_of(&mut tx, &username).await? {
            return Err(if owner == username {
                StoreError::UserExists(username)
            } else {
                StoreError::ExtensionTaken {
                    extension: username,
                    owner,
                }
            });
        }
        if let Some(extension) = &extension {
            if let Some(owner) = owner_of(&mut tx, extension).await? {
                return Err(StoreError::ExtensionTaken {
                    extension: extension.clone(),
                    owner,
                });
            }
        }
        let row = sqlx::query(
            "INSERT INTO users (username, display_name, extension, created_at) \
             VALUES ($1, $2, $3, $4) RETURNING id, username, display_name, extension, created_at",
        )
        .bind(&username)
        .bind(&display_name)
        .bind(&extension)
        .bind(unix_now())
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| map_unique_violation(e, &username, extension.as_deref()))?;
        let user = user_from_row(&row)?;
        insert_credentials(&mut tx, &user, &new.password, realm).await?;
        bump_directory_version(&mut tx).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Creates many users in one transaction (all or nothing), with the same checks as
    /// [`Store::add_user`], including clashes between the new users themselves. Returns how many
    /// were added. On failure nothing is written and the error comes with the index in `users`
    /// of the user that caused it (`None` for a database failure not tied to one user).
    pub async fn import_users(
        &self,
        users: &[NewUser],
        realm: &str,
    ) -> Result<usize, (Option<usize>, StoreError)> {
        let mut prepared = Vec::with_capacity(users.len());
        for (i, new) in users.iter().enumerate() {
            let username = new.username.trim().to_owned();
            let display_name = non_blank(new.display_name.clone());
            let extension = non_blank(new.extension.clone());
            let checked = validate_username(&username)
                .and_then(|()| extension.as_deref().map_or(Ok(()), validate_extension))
                .and_then(|()| {
                    display_name
                        .as_deref()
                        .map_or(Ok(()), validate_display_name)
                })
                .and_then(|()| validate_password(&new.password));
            checked.map_err(|e| (Some(i), e))?;
            prepared.push((username, display_name, extension));
        }
        let db = |e: StoreError| (None, e);
        let mut tx = self.begin_write().await.map_err(db)?;
        // User names and extensions in use (each → its owner), checked in memory: one query
        // rather than two per imported user.
        let mut owners: HashMap<String, String> = HashMap::new();
        let rows = sqlx::query("SELECT username, extension FROM users")
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| db(e.into()))?;
        for row in &rows {
            let username: String = row.try_get("username").map_err(|e| db(e.into()))?;
            let extension: Option<String> = row.try_get("extension").map_err(|e| db(e.into()))?;
            if let Some(extension) = extension {
                owners.insert(extension, username.clone());
            }
            owners.insert(username.clone(), username);
        }
        for (i, ((username, display_name, extension), new)) in
            prepared.iter().zip(users).enumerate()
        {
            let at = |e: StoreError| (Some(i), e);
            for value in std::iter::once(username).chain(extension) {
                if let Some(owner) = owners.get(value) {
                    return Err(at(if owner == username && value == username {
                        StoreError::UserExists(owner.clone())
                    } else {
                        StoreError::ExtensionTaken {
                            extension: value.clone(),
                            owner: owner.clone(),
                        }
                    }));
                }
            }
            owners.insert(username.clone(), username.clone());
            if let Some(extension) = extension {
                owners.insert(extension.clone(), username.clone());
            }
            let row = sqlx::query(
                "INSERT INTO users (username, display_name, extension, created_at) \
                 VALUES ($1, $2, $3, $4) RETURNING id, username, display_name, extension, created_at",
            )
            .bind(username)
            .bind(display_name)
            .bind(extension)
            .bind(unix_now())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| at(map_unique_violation(e, username, extension.as_deref())))?;
            let user = user_from_row(&row).map_err(|e| at(e.into()))?;
            insert_credentials(&mut tx, &user, &new.password, realm)
                .await
                .map_err(at)?;
        }
        if !users.is_empty() {
            bump_directory_version(&mut tx).await.map_err(db)?;
        }
        tx.commit().await.map_err(|e| db(e.into()))?;
        Ok(users.len())
    }

    /// All users, ordered by user name.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY username"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    /// The user whose user name or extension is `name_or_extension`, if any.
    pub async fn find_user(&self, name_or_extension: &str) -> Result<Option<User>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        find(&mut conn, name_or_extension).await
    }

    /// Replaces a user's credentials with HA1 digests of `password` for `realm`.
    ///
    /// Credentials kept for other realms (from before a change of domain) are removed too, so no
    /// old password keeps working anywhere.
    pub async fn set_password(
        &self,
        name_or_extension: &str,
        password: &str,
        realm: &str,
    ) -> Result<(), StoreError> {
        validate_password(password)?;
        let mut tx = self.begin_write().await?;
        let user = find(&mut tx, name_or_extension)
            .await?
            .ok_or_else(|| StoreError::NoSuchUser(name_or_extension.to_owned()))?;
        sqlx::query("DELETE FROM credentials WHERE user_id = $1")
            .bind(user.id)
            .execute(&mut *tx)
            .await?;
        insert_credentials(&mut tx, &user, password, realm).await?;
        bump_directory_version(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a user (named by user name or extension), its credentials and its registrations,
    /// and returns what was removed.
    pub async fn remove_user(&self, name_or_extension: &str) -> Result<User, StoreError> {
        let mut tx = self.begin_write().await?;
        let user = find(&mut tx, name_or_extension)
            .await?
            .ok_or_else(|| StoreError::NoSuchUser(name_or_extension.to_owned()))?;
        sqlx::query("DELETE FROM credentials WHERE user_id = $1")
            .bind(user.id)
            .execute(&mut *tx)
            .await?;
        // Registrations are keyed by AoR, not user id: match the AoR's user part against the
        // user name and the extension.
        let aors: Vec<String> = sqlx::query("SELECT DISTINCT aor FROM registrations")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|row| row.try_get("aor"))
            .collect::<Result<_, _>>()?;
        for aor in aors {
            let part = user_part(&aor);
            if part == user.username || Some(part) == user.extension.as_deref() {
                sqlx::query("DELETE FROM registrations WHERE aor = $1")
                    .bind(&aor)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(user.id)
            .execute(&mut *tx)
            .await?;
        bump_directory_version(&mut tx).await?;
        tx.commit().await?;
        Ok(user)
    }

    /// Number of users.
    pub async fn user_count(&self) -> Result<u64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?;
        let n: i64 = row.try_get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Every credential stored for `realm`, ordered by user name. The authenticator keys them by
    /// (`digest_username`, `algorithm`).
    pub async fn load_credentials(&self, realm: &str) -> Result<Vec<CredentialRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT u.username, u.extension, u.display_name, c.digest_username, c.algorithm, c.ha1 \
             FROM credentials c JOIN users u ON u.id = c.user_id \
             WHERE c.realm = $1 \
             ORDER BY u.username, c.digest_username, c.algorithm",
        )
        .bind(realm)
        .fetch_all(&self.pool)
        .await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in &rows {
            let name: String = row.try_get("algorithm")?;
            // A row of an algorithm this build does not know (written by a newer one) is skipped.
            let Some(algorithm) = algorithm_from_name(&name) else {
                continue;
            };
            records.push(CredentialRecord {
                username: row.try_get("username")?,
                digest_username: row.try_get("digest_username")?,
                algorithm,
                ha1: row.try_get("ha1")?,
                extension: row.try_get("extension")?,
                display_name: row.try_get("display_name")?,
            });
        }
        Ok(records)
    }

    /// User names of the users that have no credentials for `realm`, e.g. because the domain
    /// changed since their password was set. They cannot authenticate until it is set again.
    pub async fn users_without_credentials(&self, realm: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT username FROM users u WHERE NOT EXISTS \
             (SELECT 1 FROM credentials c WHERE c.user_id = u.id AND c.realm = $1) \
             ORDER BY username",
        )
        .bind(realm)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get("username"))
            .collect::<Result<_, _>>()?)
    }
}

/// The algorithm stored under its RFC 8760 name, if this build knows it.
fn algorithm_from_name(name: &str) -> Option<Algorithm> {
    ALGORITHMS.into_iter().find(|a| a.as_str() == name)
}

async fn find(
    conn: &mut SqliteConnection,
    name_or_extension: &str,
) -> Result<Option<User>, StoreError> {
    // User names and extensions are kept disjoint, so at most one row matches; prefer the user
    // name should old data hold both.
    let row = sqlx::query(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE username = $1 OR extension = $1 \
         ORDER BY CASE WHEN username = $1 THEN 0 ELSE 1 END LIMIT 1"
    ))
    .bind(name_or_extension)
    .fetch_optional(conn)
    .await?;
    Ok(row.as_ref().map(user_from_row).transpose()?)
}

/// The user name of the user whose user name or extension is `value`.
async fn owner_of(conn: &mut SqliteConnection, value: &str) -> Result<Option<String>, StoreError> {
    Ok(find(conn, value).await?.map(|user| user.username))
}

async fn insert_credentials(
    conn: &mut SqliteConnection,
    user: &User,
    password: &str,
    realm: &str,
) -> Result<(), StoreError> {
    let digest_usernames = std::iter::once(user.username.as_str()).chain(user.extension.as_deref());
    for digest_username in digest_usernames {
        for algorithm in ALGORITHMS {
            sqlx::query(
                "INSERT INTO credentials (user_id, realm, algorithm, digest_username, ha1) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(user.id)
            .bind(realm)
            .bind(algorithm.as_str())
            .bind(digest_username)
            .bind(ha1(algorithm, digest_username, realm, password))
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Turns a unique-constraint failure (two writers racing past the checks) into the error the
/// checks would have given.
fn map_unique_violation(error: sqlx::Error, username: &str, extension: Option<&str>) -> StoreError {
    if let sqlx::Error::Database(db) = &error {
        if db.is_unique_violation() {
            return match extension {
                Some(extension) if db.message().contains("extension") => {
                    StoreError::ExtensionTaken {
                        extension: extension.to_owned(),
                        owner: "another user".to_owned(),
                    }
                }
                _ => StoreError::UserExists(username.to_owned()),
            };
        }
    }
    StoreError::Database(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, extension: Option<&str>) -> NewUser {
        NewUser {
            username: name.to_owned(),
            display_name: None,
            extension: extension.map(str::to_owned),
            password: format!("pw-{name}"),
        }
    }

    #[tokio::test]
    async fn import_is_all_or_nothing_and_names_the_bad_user() {
        let store = Store::open_in_memory().await.unwrap();
        store
            .add_user(user("alice", Some("1001")), "r.test")
            .await
            .unwrap();
        let before = store.directory_version().await.unwrap();
        // A clash with an existing extension, and one between two imported users.
        for (batch, bad) in [
            (vec![user("bob", None), user("carol", Some("1001"))], 1),
            (vec![user("bob", Some("2000")), user("2000", None)], 1),
            (vec![user("bob", None), user("Bad Name", None)], 1),
            (vec![user("alice", None)], 0),
        ] {
            let (at, _) = store.import_users(&batch, "r.test").await.unwrap_err();
            assert_eq!(at, Some(bad));
            assert_eq!(store.user_count().await.unwrap(), 1);
        }
        assert_eq!(store.directory_version().await.unwrap(), before);

        let batch: Vec<NewUser> = (0..500).map(|i| user(&format!("u{i}"), None)).collect();
        assert_eq!(store.import_users(&batch, "r.test").await.unwrap(), 500);
        assert_eq!(store.user_count().await.unwrap(), 501);
        assert!(store.directory_version().await.unwrap() > before);
        let creds = store.load_credentials("r.test").await.unwrap();
        let u7 = creds
            .iter()
            .find(|c| c.digest_username == "u7" && c.algorithm == Algorithm::Md5)
            .unwrap();
        assert_eq!(u7.ha1, ha1(Algorithm::Md5, "u7", "r.test", "pw-u7"));
    }
}
