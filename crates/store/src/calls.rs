//! The calls table: one record per call attempt, written behind by the server, read by
//! `confab calls` and, later, the central call log.

use std::collections::hash_map::{Entry, HashMap};
use std::sync::OnceLock;

use serde::Serialize;
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::{Store, StoreError};

/// One call attempt as the server persists it: saved when it starts ringing, again when it is
/// answered and when it ends, each time as a whole row (an upsert by `call_id`).
///
/// Times are milliseconds since the Unix epoch. `state` is `"ringing"`, `"active"` or `"ended"`;
/// `disposition` (set when it ended) is `"answered"`, `"busy"`, `"no_answer"`, `"cancelled"`,
/// `"failed"` or `"rejected"`. The store does not check these words, but [`Store::list_calls`]
/// and [`Store::mark_unfinished_calls_failed`] treat every state other than `"ended"` as
/// unfinished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CallRecordRow {
    /// Confab's own call id, unique.
    pub call_id: String,
    /// The caller: a user name, or a URI for a caller from outside.
    pub caller: String,
    /// The caller's contact or source address.
    pub caller_device: Option<String>,
    /// The dialled target as given (extension, user name or URI).
    pub callee: String,
    /// The local user the target resolved to, if any.
    pub callee_user: Option<String>,
    /// The devices (contacts) tried, in the order they were tried. Stored as JSON text.
    pub devices_tried: Vec<String>,
    /// The device that answered.
    pub answered_by: Option<String>,
    pub started_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// `"ringing"`, `"active"` or `"ended"`.
    pub state: String,
    /// `"answered"`, `"busy"`, `"no_answer"`, `"cancelled"`, `"failed"` or `"rejected"`.
    pub disposition: Option<String>,
    /// The final SIP status of the INVITE (200, 486, 487, ...).
    pub final_status: Option<u16>,
    /// Why the call ended: `"caller hung up"`, `"callee hung up"`, `"session timer expired"`,
    /// `"media timeout"`, `"server restart"`, ...
    pub end_reason: Option<String>,
    /// Per-call media statistics as JSON text (packets, bytes, loss, jitter per direction).
    pub media: Option<String>,
}

impl CallRecordRow {
    /// A call that has just started ringing: `state` `"ringing"`, everything else empty.
    pub fn ringing(
        call_id: impl Into<String>,
        caller: impl Into<String>,
        callee: impl Into<String>,
        started_at: i64,
    ) -> Self {
        Self {
            call_id: call_id.into(),
            caller: caller.into(),
            caller_device: None,
            callee: callee.into(),
            callee_user: None,
            devices_tried: Vec::new(),
            answered_by: None,
            started_at,
            answered_at: None,
            ended_at: None,
            state: CALL_RINGING.to_owned(),
            disposition: None,
            final_status: None,
            end_reason: None,
            media: None,
        }
    }

    /// Whether the call has not ended yet (`state` is not `"ended"`).
    pub fn is_active(&self) -> bool {
        self.state != CALL_ENDED
    }

    /// Milliseconds from answer to end, for an answered call that ended.
    pub fn talk_time_ms(&self) -> Option<i64> {
        Some((self.ended_at? - self.answered_at?).max(0))
    }
}

/// `state` of a call that is ringing.
pub const CALL_RINGING: &str = "ringing";
/// `state` of an answered call in progress.
pub const CALL_ACTIVE: &str = "active";
/// `state` of a call that is over.
pub const CALL_ENDED: &str = "ended";

/// Which calls [`Store::list_calls`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// Only calls not ended yet (ringing or active).
    pub active_only: bool,
    /// Only calls this user made or received: `caller`, `callee` or `callee_user` equals it, or
    /// `caller` or `callee` is a URI with it as user part (`sip:alice@…`).
    pub user: Option<String>,
    /// At most this many (the newest); 0 for no limit.
    pub limit: u32,
}

const CALL_COLUMNS: &str = "call_id, caller, caller_device, callee, callee_user, devices_tried, \
     answered_by, started_at, answered_at, ended_at, state, disposition, final_status, \
     end_reason, media";

fn call_from_row(row: &SqliteRow) -> Result<CallRecordRow, sqlx::Error> {
    let devices: String = row.try_get("devices_tried")?;
    let final_status: Option<i64> = row.try_get("final_status")?;
    Ok(CallRecordRow {
        call_id: row.try_get("call_id")?,
        caller: row.try_get("caller")?,
        caller_device: row.try_get("caller_device")?,
        callee: row.try_get("callee")?,
        callee_user: row.try_get("callee_user")?,
        devices_tried: decode_string_array(&devices).ok_or_else(|| sqlx::Error::ColumnDecode {
            index: "devices_tried".into(),
            source: format!("not a JSON array of strings: {devices:?}").into(),
        })?,
        answered_by: row.try_get("answered_by")?,
        started_at: row.try_get("started_at")?,
        answered_at: row.try_get("answered_at")?,
        ended_at: row.try_get("ended_at")?,
        state: row.try_get("state")?,
        disposition: row.try_get("disposition")?,
        final_status: final_status.and_then(|s| u16::try_from(s).ok()),
        end_reason: row.try_get("end_reason")?,
        media: row.try_get("media")?,
    })
}

impl Store {
    /// Inserts or updates call records, keyed by `call_id`, in one transaction; rows later in the
    /// slice win over earlier ones for the same call.
    ///
    /// An ended call is final: a row that is not `"ended"` never overwrites a stored `"ended"`
    /// one, so a late ringing or active snapshot cannot bring a finished call back to life. The
    /// same holds inside the slice: an ended row is not undone by a later non-ended one.
    ///
    /// The batch is first collapsed to one row per call, then written up to 200 rows per
    /// `INSERT`, so a batch of hundreds of records costs a handful
    /// of round trips to the database thread instead of one per row.
    pub async fn save_calls(&self, rows: &[CallRecordRow]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let unique = collapse_calls(rows);
        let mut tx = self.begin_write().await?;
        for chunk in unique.chunks(CALLS_PER_STATEMENT) {
            let full = chunk.len() == CALLS_PER_STATEMENT;
            let tail_sql;
            let sql: &str = if full {
                static FULL: OnceLock<String> = OnceLock::new();
                FULL.get_or_init(|| upsert_calls_sql(CALLS_PER_STATEMENT))
            } else {
                tail_sql = upsert_calls_sql(chunk.len());
                &tail_sql
            };
            // Only the full-size statement is worth keeping prepared; a tail of any size would
            // evict it from the connection's statement cache.
            let mut query = sqlx::query(sql).persistent(full);
            for c in chunk {
                query = query
                    .bind(&c.call_id)
                    .bind(&c.caller)
                    .bind(&c.caller_device)
                    .bind(&c.callee)
                    .bind(&c.callee_user)
                    .bind(encode_string_array(&c.devices_tried))
                    .bind(&c.answered_by)
                    .bind(c.started_at)
                    .bind(c.answered_at)
                    .bind(c.ended_at)
                    .bind(&c.state)
                    .bind(&c.disposition)
                    .bind(c.final_status.map(i64::from))
                    .bind(&c.end_reason)
                    .bind(&c.media);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Call records matching `filter`, newest (latest `started_at`) first.
    pub async fn list_calls(&self, filter: CallFilter) -> Result<Vec<CallRecordRow>, StoreError> {
        let mut sql = format!("SELECT {CALL_COLUMNS} FROM calls WHERE 1 = 1");
        if filter.active_only {
            sql.push_str(&format!(" AND state <> '{CALL_ENDED}'"));
        }
        if filter.user.is_some() {
            sql.push_str(
                " AND (caller = $1 OR callee = $1 OR callee_user = $1 \
                 OR caller LIKE $2 ESCAPE '\\' OR callee LIKE $2 ESCAPE '\\')",
            );
        }
        sql.push_str(" ORDER BY started_at DESC, call_id DESC");
        if filter.limit > 0 {
            sql.push_str(&format!(" LIMIT {}", filter.limit));
        }
        let mut query = sqlx::query(&sql);
        if let Some(user) = &filter.user {
            query = query.bind(user).bind(uri_user_pattern(user));
        }
        let rows = query.fetch_all(&self.pool).await?;
        Ok(rows.iter().map(call_from_row).collect::<Result<_, _>>()?)
    }

    /// Ends every call a previous run left ringing or active (the server stopped without ending
    /// them): state `"ended"`, disposition `"failed"`, end reason `"server restart"`, ended at
    /// `now_ms`. Call it at server start, before taking calls. Returns how many were changed.
    pub async fn mark_unfinished_calls_failed(&self, now_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(&format!(
            "UPDATE calls SET state = '{CALL_ENDED}', disposition = 'failed', \
             end_reason = 'server restart', ended_at = $1 WHERE state <> '{CALL_ENDED}'"
        ))
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

/// Rows per multi-row `INSERT` of [`Store::save_calls`]: 200 × 15 = 3,000 bound values, far
/// under SQLite's default limit of 32,766.
const CALLS_PER_STATEMENT: usize = 200;
/// Columns in [`CALL_COLUMNS`], one bound value each.
const CALL_COLUMN_COUNT: usize = 15;
// SQLite's default SQLITE_MAX_VARIABLE_NUMBER.
const _: () = assert!(CALLS_PER_STATEMENT * CALL_COLUMN_COUNT <= 32_766);

/// The upsert of `rows` call records in one statement. `excluded` is the proposed row, so the
/// `WHERE` is checked per row: a stored ended call is only ever replaced by an ended row.
fn upsert_calls_sql(rows: usize) -> String {
    format!(
        "INSERT INTO calls ({CALL_COLUMNS}) VALUES {} \
         ON CONFLICT (call_id) DO UPDATE SET \
         caller = excluded.caller, caller_device = excluded.caller_device, \
         callee = excluded.callee, callee_user = excluded.callee_user, \
         devices_tried = excluded.devices_tried, answered_by = excluded.answered_by, \
         started_at = excluded.started_at, answered_at = excluded.answered_at, \
         ended_at = excluded.ended_at, state = excluded.state, \
         disposition = excluded.disposition, final_status = excluded.final_status, \
         end_reason = excluded.end_reason, media = excluded.media \
         WHERE calls.state <> '{CALL_ENDED}' OR excluded.state = '{CALL_ENDED}'",
        values_placeholders(rows, CALL_COLUMN_COUNT)
    )
}

/// `(?, ?), (?, ?)` for `rows` = 2 and `columns` = 2: the `VALUES` list of a multi-row
/// statement, bound in row order.
///
/// Anonymous `?` rather than numbered `$N`: sqlx looks up every parameter's name when it binds,
/// and SQLite finds a numbered name by a linear scan of all of them, so 3,000 `$N` parameters
/// cost a quadratic 4.5 million steps per statement (measured: more CPU than the rest of the
/// write-behind). Anonymous parameters have no name to scan.
pub(crate) fn values_placeholders(rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 6);
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push('?');
        }
        sql.push(')');
    }
    sql
}

/// One row per `call_id`, in order of first appearance: the row applying the slice in order
/// would leave, were each upserted on its own. That is the last one, except that a row not
/// `"ended"` does not replace an `"ended"` one before it (ended is final).
///
/// Needed for correctness, not only speed: two rows with the same `call_id` in one multi-row
/// `INSERT` would both take the `ON CONFLICT` path (and PostgreSQL refuses that outright).
fn collapse_calls(rows: &[CallRecordRow]) -> Vec<&CallRecordRow> {
    let mut slot: HashMap<&str, usize> = HashMap::with_capacity(rows.len());
    let mut out: Vec<&CallRecordRow> = Vec::with_capacity(rows.len());
    for row in rows {
        match slot.entry(row.call_id.as_str()) {
            Entry::Occupied(entry) => {
                let kept = &mut out[*entry.get()];
                if kept.state != CALL_ENDED || row.state == CALL_ENDED {
                    *kept = row;
                }
            }
            Entry::Vacant(entry) => {
                entry.insert(out.len());
                out.push(row);
            }
        }
    }
    out
}

/// A `LIKE` pattern matching any URI whose user part is `user` (`sip:alice@…`, `<sips:alice@…>`).
fn uri_user_pattern(user: &str) -> String {
    let mut pattern = String::from("%:");
    for ch in user.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(ch);
    }
    pattern.push_str("@%");
    pattern
}

/// `["a","b"]`: the strings as a JSON array.
fn encode_string_array(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for ch in item.chars() {
            match ch {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push(']');
    out
}

/// Parses a JSON array of strings (as [`encode_string_array`] writes it, or any other valid
/// one); `None` if it is anything else.
fn decode_string_array(text: &str) -> Option<Vec<String>> {
    let mut chars = text.trim().chars().peekable();
    let skip_ws = |chars: &mut std::iter::Peekable<std::str::Chars<'_>>| {
        while chars.next_if(|c| c.is_ascii_whitespace()).is_some() {}
    };
    if chars.next()? != '[' {
        return None;
    }
    let mut items = Vec::new();
    skip_ws(&mut chars);
    if chars.next_if_eq(&']').is_some() {
        return chars.next().is_none().then_some(items);
    }
    loop {
        skip_ws(&mut chars);
        if chars.next()? != '"' {
            return None;
        }
        let mut item = String::new();
        loop {
            match chars.next()? {
                '"' => break,
                '\\' => match chars.next()? {
                    '"' => item.push('"'),
                    '\\' => item.push('\\'),
                    '/' => item.push('/'),
                    'b' => item.push('\u{8}'),
                    'f' => item.push('\u{c}'),
                    'n' => item.push('\n'),
                    'r' => item.push('\r'),
                    't' => item.push('\t'),
                    'u' => {
                        let first = hex4(&mut chars)?;
                        let code = if (0xD800..0xDC00).contains(&first) {
                            // A surrogate pair: `\uD83D\uDE00`.
                            if chars.next()? != '\\' || chars.next()? != 'u' {
                                return None;
                            }
                            let second = hex4(&mut chars)?;
                            if !(0xDC00..0xE000).contains(&second) {
                                return None;
                            }
                            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                        } else {
                            first
                        };
                        item.push(char::from_u32(code)?);
                    }
                    _ => return None,
                },
                c if u32::from(c) < 0x20 => return None,
                c => item.push(c),
            }
        }
        items.push(item);
        skip_ws(&mut chars);
        match chars.next()? {
            ',' => continue,
            ']' => break,
            _ => return None,
        }
    }
    skip_ws(&mut chars);
    chars.next().is_none().then_some(items)
}

/// The four hex digits of a `\uXXXX` escape.
fn hex4(chars: &mut impl Iterator<Item = char>) -> Option<u32> {
    let hex: String = chars.take(4).collect();
    if hex.len() != 4 {
        return None;
    }
    u32::from_str_radix(&hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_arrays_round_trip() {
        for items in [
            vec![],
            vec!["sip:alice@10.0.0.1:5060;transport=tcp".to_owned()],
            vec![
                "a\"b\\c".to_owned(),
                "tab\there\nnl\u{1}".to_owned(),
                "Zoë 😀".to_owned(),
            ],
        ] {
            let text = encode_string_array(&items);
            assert_eq!(decode_string_array(&text), Some(items), "{text}");
        }
        assert_eq!(
            decode_string_array(" [ \"a\" , \"\\u00e9\\ud83d\\ude00\\/\" ] "),
            Some(vec!["a".to_owned(), "é😀/".to_owned()])
        );
        for bad in [
            "",
            "[",
            "[\"a\"",
            "[\"a\",]",
            "[1]",
            "{}",
            "[\"a\"] x",
            "[\"\\x\"]",
            "[]]",
        ] {
            assert_eq!(decode_string_array(bad), None, "{bad}");
        }
    }

    #[test]
    fn placeholders_number_rows_in_order() {
        assert_eq!(values_placeholders(1, 1), "(?)");
        assert_eq!(values_placeholders(2, 3), "(?, ?, ?), (?, ?, ?)");
        assert_eq!(CALL_COLUMNS.split(',').count(), CALL_COLUMN_COUNT);
    }

    #[test]
    fn collapse_keeps_the_last_row_but_ended_is_final() {
        let row = |id: &str, state: &str, at: i64| {
            let mut r = CallRecordRow::ringing(id, "alice", "bob", at);
            r.state = state.to_owned();
            r
        };
        let rows = [
            row("a", CALL_RINGING, 1),
            row("b", CALL_RINGING, 2),
            row("a", CALL_ACTIVE, 3),
            row("c", CALL_ENDED, 4),
            row("a", CALL_ENDED, 5),
            row("c", CALL_RINGING, 6),
            row("a", CALL_ACTIVE, 7),
            row("b", CALL_ACTIVE, 8),
            row("a", CALL_ENDED, 9),
        ];
        let kept: Vec<(&str, i64)> = collapse_calls(&rows)
            .into_iter()
            .map(|r| (r.call_id.as_str(), r.started_at))
            .collect();
        assert_eq!(kept, [("a", 9), ("b", 8), ("c", 4)]);
        assert!(collapse_calls(&[]).is_empty());
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(uri_user_pattern("alice"), "%:alice@%");
        assert_eq!(uri_user_pattern("a_b%c"), "%:a\\_b\\%c@%");
    }
}
