//! The registrations table: the location service's bindings, written behind by the server.

use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{Store, StoreError};

/// One registered contact of an address of record (RFC 3261 §10.3), as the server persists it
/// so that registrations survive a restart and `confab registrations` can show them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BindingRecord {
    /// The address of record, canonical `sip:user@domain`.
    pub aor: String,
    /// The Contact URI.
    pub contact: String,
    /// When the binding expires, seconds since the Unix epoch.
    pub expires_at: i64,
    /// The Contact's q value times 1000 (0 to 1000).
    pub q_milli: u16,
    pub call_id: String,
    pub cseq: u32,
    /// `+sip.instance` (RFC 5626 §4.1), if given.
    pub instance: Option<String>,
    /// `reg-id` (RFC 5626 §4.2), if given.
    pub reg_id: Option<u32>,
    /// The transport the REGISTER arrived on (`UDP`, `TCP`, `TLS`, `WS`, `WSS`).
    pub transport: String,
    /// The source address of the REGISTER, `IP:PORT`.
    pub source: String,
    /// The local address it arrived at, `IP:PORT`.
    pub local: String,
    pub user_agent: Option<String>,
    /// When the binding was last written, seconds since the Unix epoch.
    pub updated_at: i64,
}

const BINDING_COLUMNS: &str =
    "aor, contact, expires_at, q_milli, call_id, cseq, instance, reg_id, \
                               transport, source, local, user_agent, updated_at";

fn binding_from_row(row: &SqliteRow) -> Result<BindingRecord, sqlx::Error> {
    let q_milli: i64 = row.try_get("q_milli")?;
    let cseq: i64 = row.try_get("cseq")?;
    let reg_id: Option<i64> = row.try_get("reg_id")?;
    Ok(BindingRecord {
        aor: row.try_get("aor")?,
        contact: row.try_get("contact")?,
        expires_at: row.try_get("expires_at")?,
        q_milli: u16::try_from(q_milli.clamp(0, 1000)).unwrap_or(1000),
        call_id: row.try_get("call_id")?,
        cseq: u32::try_from(cseq).unwrap_or(0),
        instance: row.try_get("instance")?,
        reg_id: reg_id.and_then(|r| u32::try_from(r).ok()),
        transport: row.try_get("transport")?,
        source: row.try_get("source")?,
        local: row.try_get("local")?,
        user_agent: row.try_get("user_agent")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl BindingRecord {
    /// The user part of the AoR (`alice` in `sip:alice@example.com`), empty if it has none.
    pub fn aor_user(&self) -> &str {
        user_part(&self.aor)
    }
}

impl Store {
    /// Inserts or updates bindings, keyed by (aor, contact), in one transaction.
    ///
    /// A binding with both `instance` and `reg_id` also replaces any other binding of the same
    /// AoR with the same instance and reg-id (a flow re-registered from a new contact, RFC 5626
    /// §6), so the table never holds two of them.
    pub async fn save_bindings(&self, bindings: &[BindingRecord]) -> Result<(), StoreError> {
        if bindings.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for b in bindings {
            if let (Some(instance), Some(reg_id)) = (&b.instance, b.reg_id) {
                sqlx::query(
                    "DELETE FROM registrations \
                     WHERE aor = $1 AND instance = $2 AND reg_id = $3 AND contact <> $4",
                )
                .bind(&b.aor)
                .bind(instance)
                .bind(i64::from(reg_id))
                .bind(&b.contact)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query(&format!(
                "INSERT INTO registrations ({BINDING_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (aor, contact) DO UPDATE SET \
                 expires_at = excluded.expires_at, q_milli = excluded.q_milli, \
                 call_id = excluded.call_id, cseq = excluded.cseq, instance = excluded.instance, \
                 reg_id = excluded.reg_id, transport = excluded.transport, \
                 source = excluded.source, local = excluded.local, \
                 user_agent = excluded.user_agent, updated_at = excluded.updated_at"
            ))
            .bind(&b.aor)
            .bind(&b.contact)
            .bind(b.expires_at)
            .bind(i64::from(b.q_milli))
            .bind(&b.call_id)
            .bind(i64::from(b.cseq))
            .bind(&b.instance)
            .bind(b.reg_id.map(i64::from))
            .bind(&b.transport)
            .bind(&b.source)
            .bind(&b.local)
            .bind(&b.user_agent)
            .bind(b.updated_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes the bindings named by (aor, contact), in one transaction. Missing ones are ignored.
    pub async fn remove_bindings<A, C>(&self, keys: &[(A, C)]) -> Result<(), StoreError>
    where
        A: AsRef<str> + Sync,
        C: AsRef<str> + Sync,
    {
        if keys.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        for (aor, contact) in keys {
            sqlx::query("DELETE FROM registrations WHERE aor = $1 AND contact = $2")
                .bind(aor.as_ref())
                .bind(contact.as_ref())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every stored binding, expired or not, ordered by AoR and contact. A server loading them at
    /// start drops those whose `expires_at` has passed.
    pub async fn load_bindings(&self) -> Result<Vec<BindingRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {BINDING_COLUMNS} FROM registrations ORDER BY aor, contact"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(binding_from_row)
            .collect::<Result<_, _>>()?)
    }

    /// Deletes bindings that expired at or before `now_unix` (seconds since the Unix epoch) and
    /// returns how many.
    pub async fn remove_expired_bindings(&self, now_unix: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM registrations WHERE expires_at <= $1")
            .bind(now_unix)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

/// The user part of an AoR such as `sip:alice@example.com` (`alice`); empty if it has none.
pub(crate) fn user_part(aor: &str) -> &str {
    let Some(at) = aor.find('@') else { return "" };
    let before = &aor[..at];
    let user = before
        .find(':')
        .map_or(before, |colon| &before[colon + 1..]);
    user.split(';').next().unwrap_or(user)
}

#[cfg(test)]
mod tests {
    use super::user_part;

    #[test]
    fn user_parts() {
        assert_eq!(user_part("sip:alice@example.com"), "alice");
        assert_eq!(user_part("sips:1001@example.com:5061"), "1001");
        assert_eq!(user_part("bob@example.com"), "bob");
        assert_eq!(user_part("sip:example.com"), "");
    }
}
