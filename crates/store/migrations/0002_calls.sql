-- Call records: every call attempt the server handled, written behind by the running server
-- (saved when it starts ringing, when it is answered and when it ends), the base of the call log.
--
-- Same portability rules as 0001: BIGINT for integers and unix timestamps (milliseconds here),
-- TEXT for strings; `devices_tried` and `media` hold JSON text, not a database JSON type.

CREATE TABLE calls (
    call_id       TEXT   NOT NULL PRIMARY KEY,  -- Confab's own call id
    caller        TEXT   NOT NULL,              -- user name or URI
    caller_device TEXT,                         -- contact or source address of the caller
    callee        TEXT   NOT NULL,              -- the dialled target as given
    callee_user   TEXT,                         -- the local user it resolved to, if any
    devices_tried TEXT   NOT NULL,              -- JSON array of strings
    answered_by   TEXT,
    started_at    BIGINT NOT NULL,
    answered_at   BIGINT,
    ended_at      BIGINT,
    state         TEXT   NOT NULL,              -- ringing | active | ended
    disposition   TEXT,                         -- answered | busy | no_answer | cancelled | failed | rejected
    final_status  BIGINT,
    end_reason    TEXT,
    media         TEXT                          -- JSON object of per-call media statistics
);
CREATE INDEX calls_by_start ON calls (started_at);
CREATE INDEX calls_unfinished ON calls (state) WHERE state <> 'ended';
