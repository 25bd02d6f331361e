//! The registrations table: the location service's bindings, written behind by the server.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::calls::values_placeholders;
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
    /// Inserts or updates bindings, keyed by (aor, contact), in one transaction; rows later in
    /// the slice win over earlier ones for the same key.
    ///
    /// A binding with both `instance` and `reg_id` also replaces any other binding of the same
    /// AoR with the same instance and reg-id (a flow re-registered from a new contact, RFC 5626
    /// §6), so the table never holds two of them.
    ///
    /// The result is exactly that of saving the rows one at a time in slice order, but written in
    /// a few multi-row statements (up to 200 rows each): one `DELETE` for the flows replaced, one
    /// for bindings a later row of the slice replaced, and the upserts.
    pub async fn save_bindings(&self, bindings: &[BindingRecord]) -> Result<(), StoreError> {
        if bindings.is_empty() {
            return Ok(());
        }
        let plan = BindingPlan::new(bindings);
        let mut tx = self.begin_write().await?;
        for chunk in plan.flows.chunks(ROWS_PER_STATEMENT) {
            // Every other binding of each (aor, instance, reg-id) goes; `contact` is that of the
            // flow's last row in the slice. Searched through the PRIMARY KEY and
            // registrations_by_instance, not by a scan. reg_id is cast because PostgreSQL would
            // type an untyped VALUES parameter as text.
            // Anonymous parameters: see `values_placeholders` for why not `$N`.
            let mut values = String::new();
            for i in 0..chunk.len() {
                if i > 0 {
                    values.push_str(", ");
                }
                values.push_str("(?, ?, CAST(? AS BIGINT), ?)");
            }
            let sql = format!(
                "DELETE FROM registrations WHERE (aor, contact) IN (\
                 SELECT r.aor, r.contact FROM (VALUES {values}) AS f \
                 JOIN registrations AS r ON r.aor = f.column1 AND r.instance = f.column2 \
                 AND r.reg_id = f.column3 AND r.contact <> f.column4)"
            );
            let mut query = sqlx::query(&sql).persistent(false);
            for b in chunk {
                query = query
                    .bind(&b.aor)
                    .bind(&b.instance)
                    .bind(b.reg_id.map(i64::from))
                    .bind(&b.contact);
            }
            query.execute(&mut *tx).await?;
        }
        let superseded: Vec<(&str, &str)> = plan
            .superseded
            .iter()
            .map(|b| (b.aor.as_str(), b.contact.as_str()))
            .collect();
        delete_keys(&mut tx, &superseded).await?;
        for chunk in plan.upserts.chunks(ROWS_PER_STATEMENT) {
            let full = chunk.len() == ROWS_PER_STATEMENT;
            let tail_sql;
            let sql: &str = if full {
                static FULL: OnceLock<String> = OnceLock::new();
                FULL.get_or_init(|| upsert_bindings_sql(ROWS_PER_STATEMENT))
            } else {
                tail_sql = upsert_bindings_sql(chunk.len());
                &tail_sql
            };
            // Only the full-size statement is worth keeping prepared (see `save_calls`).
            let mut query = sqlx::query(sql).persistent(full);
            for b in chunk {
                query = query
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
                    .bind(b.updated_at);
            }
            query.execute(&mut *tx).await?;
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
        let keys: Vec<(&str, &str)> = keys
            .iter()
            .map(|(aor, contact)| (aor.as_ref(), contact.as_ref()))
            .collect();
        let mut tx = self.begin_write().await?;
        delete_keys(&mut tx, &keys).await?;
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

/// Rows per multi-row statement of [`Store::save_bindings`] and [`Store::remove_bindings`]:
/// at most 200 × 13 = 2,600 bound values, far under SQLite's default limit of 32,766.
const ROWS_PER_STATEMENT: usize = 200;
/// Columns in [`BINDING_COLUMNS`], one bound value each.
const BINDING_COLUMN_COUNT: usize = 13;
// SQLite's default SQLITE_MAX_VARIABLE_NUMBER.
const _: () = assert!(ROWS_PER_STATEMENT * BINDING_COLUMN_COUNT <= 32_766);

/// The upsert of `rows` bindings in one statement; their (aor, contact) keys must be distinct.
fn upsert_bindings_sql(rows: usize) -> String {
    format!(
        "INSERT INTO registrations ({BINDING_COLUMNS}) VALUES {} \
         ON CONFLICT (aor, contact) DO UPDATE SET \
         expires_at = excluded.expires_at, q_milli = excluded.q_milli, \
         call_id = excluded.call_id, cseq = excluded.cseq, instance = excluded.instance, \
         reg_id = excluded.reg_id, transport = excluded.transport, \
         source = excluded.source, local = excluded.local, \
         user_agent = excluded.user_agent, updated_at = excluded.updated_at",
        values_placeholders(rows, BINDING_COLUMN_COUNT)
    )
}

/// Deletes the bindings with these (aor, contact) keys, up to 200 per statement (an `IN` over a
/// `VALUES` list, which SQLite answers through the primary key).
async fn delete_keys(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    keys: &[(&str, &str)],
) -> Result<(), StoreError> {
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "DELETE FROM registrations WHERE (aor, contact) IN \
             (SELECT column1, column2 FROM (VALUES {}) AS k)",
            values_placeholders(chunk.len(), 2)
        );
        let mut query = sqlx::query(&sql).persistent(false);
        for (aor, contact) in chunk {
            query = query.bind(*aor).bind(*contact);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

/// What saving a slice of bindings one row at a time would do, as three sets of rows.
///
/// Saved in order, a row `r` first deletes the other bindings of its flow (aor, instance,
/// reg-id, when it has both) and then upserts its key. So, for each key, only its last row
/// matters, and that row survives unless a later row of the same flow (another contact) deleted
/// it again. A stored binding not named in the slice is deleted if any row has its flow.
struct BindingPlan<'a> {
    /// The last row of each flow in the slice: delete the flow's bindings other than its contact.
    flows: Vec<&'a BindingRecord>,
    /// The last row of each key that a later row of its flow replaced: delete the key.
    superseded: Vec<&'a BindingRecord>,
    /// The last row of each other key: upsert it. Keys are distinct.
    upserts: Vec<&'a BindingRecord>,
}

/// A binding's flow (RFC 5626): AoR, instance and reg-id, when it has both.
fn flow(b: &BindingRecord) -> Option<(&str, &str, u32)> {
    Some((b.aor.as_str(), b.instance.as_deref()?, b.reg_id?))
}

impl<'a> BindingPlan<'a> {
    fn new(rows: &'a [BindingRecord]) -> Self {
        let mut last_of_key: HashMap<(&str, &str), usize> = HashMap::with_capacity(rows.len());
        let mut last_of_flow: HashMap<(&str, &str, u32), usize> = HashMap::new();
        for (i, b) in rows.iter().enumerate() {
            last_of_key.insert((b.aor.as_str(), b.contact.as_str()), i);
            if let Some(f) = flow(b) {
                last_of_flow.insert(f, i);
            }
        }
        let mut plan = Self {
            flows: Vec::with_capacity(last_of_flow.len()),
            superseded: Vec::new(),
            upserts: Vec::with_capacity(last_of_key.len()),
        };
        for (i, b) in rows.iter().enumerate() {
            let f = flow(b);
            if f.is_some_and(|f| last_of_flow[&f] == i) {
                plan.flows.push(b);
            }
            if last_of_key[&(b.aor.as_str(), b.contact.as_str())] != i {
                continue;
            }
            // A later row of the same flow has another contact (it is the last row of its own
            // key, so a later row of the flow cannot share it).
            if f.is_some_and(|f| last_of_flow[&f] != i) {
                plan.superseded.push(b);
            } else {
                plan.upserts.push(b);
            }
        }
        plan
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
    use super::*;

    #[test]
    fn binding_columns_match_their_count() {
        assert_eq!(BINDING_COLUMNS.split(',').count(), BINDING_COLUMN_COUNT);
    }

    #[test]
    fn user_parts() {
        assert_eq!(user_part("sip:alice@example.com"), "alice");
        assert_eq!(user_part("sips:1001@example.com:5061"), "1001");
        assert_eq!(user_part("bob@example.com"), "bob");
        assert_eq!(user_part("sip:example.com"), "");
    }
}
