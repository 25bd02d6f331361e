//! `confab calls` run as a process against call records written through the store.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use confab_store::{CallRecordRow, NewUser, Store};

/// 2023-11-14 22:13:20 UTC.
const T0: i64 = 1_700_000_000_000;

/// `confab --data-dir DIR ARGS` with `TZ` set and no inherited CONFAB_* variables; must succeed.
fn confab(data_dir: &Path, tz: &str, args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_confab"));
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .current_dir(data_dir.parent().unwrap());
    for (name, _) in std::env::vars() {
        if name.starts_with("CONFAB_") || name == "RUST_LOG" || name == "TZDIR" {
            command.env_remove(name);
        }
    }
    let out: Output = command.env("TZ", tz).output().unwrap();
    assert!(
        out.status.success(),
        "confab {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

/// Three calls: alice → 1002 (bob) answered and ended after 1m20s, carol → alice busy, and bob →
/// alice answered 80 s ago and still active.
async fn write_calls(data_dir: &Path) {
    let store = Store::open(data_dir).await.unwrap();
    store
        .add_user(
            NewUser {
                username: "bob".into(),
                display_name: None,
                extension: Some("1002".into()),
                password: "pw".into(),
            },
            "confab.local",
        )
        .await
        .unwrap();

    let mut answered = CallRecordRow::ringing("c1", "alice", "1002", T0);
    answered.callee_user = Some("bob".into());
    answered.devices_tried = vec!["sip:bob@10.0.0.7:5060".into()];
    store.save_calls(&[answered.clone()]).await.unwrap();
    answered.state = "active".into();
    answered.answered_by = Some("sip:bob@10.0.0.7:5060".into());
    answered.answered_at = Some(T0 + 5_000);
    answered.final_status = Some(200);
    store.save_calls(&[answered.clone()]).await.unwrap();
    answered.state = "ended".into();
    answered.ended_at = Some(T0 + 85_000);
    answered.disposition = Some("answered".into());
    answered.end_reason = Some("callee hung up".into());
    answered.media = Some(r#"{"caller_to_callee":{"packets":4000,"lost":3}}"#.into());

    let mut busy = CallRecordRow::ringing("c2", "carol", "alice", T0 + 100_000);
    busy.callee_user = Some("alice".into());
    busy.state = "ended".into();
    busy.ended_at = Some(T0 + 101_000);
    busy.disposition = Some("busy".into());
    busy.final_status = Some(486);

    let started = now_ms() - 90_000;
    let mut active = CallRecordRow::ringing("c3", "bob", "alice", started);
    active.callee_user = Some("alice".into());
    active.state = "active".into();
    active.answered_by = Some("sip:alice@10.0.0.5:5060".into());
    active.answered_at = Some(started + 10_000);
    active.final_status = Some(200);

    store.save_calls(&[answered, busy, active]).await.unwrap();
    store.close().await;
}

#[tokio::test]
async fn calls_lists_records_written_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert_eq!(confab(&data, "UTC0", &["calls"]), "no calls\n");
    assert_eq!(
        confab(&data, "UTC0", &["calls", "--active"]),
        "no active calls\n"
    );
    write_calls(&data).await;

    let out = confab(&data, "UTC0", &["calls"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    for column in [
        "STARTED",
        "CALLER",
        "CALLEE",
        "ANSWERED BY",
        "DURATION",
        "DISPOSITION",
        "STATUS",
    ] {
        assert!(lines[0].contains(column), "{out}");
    }
    // Newest first: the active call, then the busy one, then the answered one.
    assert!(
        lines[1].contains("bob") && lines[1].contains("active for 1m"),
        "{out}"
    );
    let busy: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        busy,
        [
            "2023-11-14T22:15:00Z",
            "carol",
            "alice",
            "-",
            "-",
            "busy",
            "486"
        ],
        "{out}"
    );
    let answered: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(
        answered,
        [
            "2023-11-14T22:13:20Z",
            "alice",
            "1002",
            "(bob)",
            "sip:bob@10.0.0.7:5060",
            "1m20s",
            "answered",
            "200"
        ],
        "{out}"
    );

    // Start times are local: here Central European time.
    let out = confab(&data, "CET-1CEST,M3.5.0,M10.5.0/3", &["calls"]);
    assert!(out.contains("2023-11-14T23:13:20+01:00"), "{out}");

    // Filters: --active, --user (by name or extension), --limit.
    let out = confab(&data, "UTC0", &["calls", "--active"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("active for"), "{out}");
    for who in ["bob", "1002"] {
        let out = confab(&data, "UTC0", &["calls", "--user", who]);
        assert_eq!(out.lines().count(), 3, "{who}: {out}");
        assert!(!out.contains("carol"), "{who}: {out}");
    }
    let out = confab(&data, "UTC0", &["calls", "--user", "carol"]);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert_eq!(
        confab(&data, "UTC0", &["calls", "--user", "nobody"]),
        "no calls\n"
    );
    let out = confab(&data, "UTC0", &["calls", "--limit", "1"]);
    assert_eq!(out.lines().count(), 2, "{out}");

    // JSON: every field, media as an object, talk time in milliseconds.
    let json: serde_json::Value =
        serde_json::from_str(&confab(&data, "UTC0", &["calls", "--json"])).unwrap();
    let list = json.as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0]["call_id"], "c3");
    assert_eq!(list[0]["state"], "active");
    assert!(list[0]["duration_ms"].as_i64().unwrap() >= 80_000);
    assert_eq!(list[1]["disposition"], "busy");
    assert_eq!(list[1]["duration_ms"], serde_json::Value::Null);
    let c1 = &list[2];
    assert_eq!(c1["call_id"], "c1");
    assert_eq!(c1["callee_user"], "bob");
    assert_eq!(c1["devices_tried"][0], "sip:bob@10.0.0.7:5060");
    assert_eq!(c1["started_at"], T0);
    assert_eq!(c1["final_status"], 200);
    assert_eq!(c1["end_reason"], "callee hung up");
    assert_eq!(c1["media"]["caller_to_callee"]["lost"], 3);
    assert_eq!(c1["duration_ms"], 80_000);
}

#[tokio::test]
async fn unfinished_calls_show_as_failed_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    write_calls(&data).await;
    let store = Store::open(&data).await.unwrap();
    assert_eq!(
        store.mark_unfinished_calls_failed(now_ms()).await.unwrap(),
        1
    );
    store.close().await;
    assert_eq!(
        confab(&data, "UTC0", &["calls", "--active"]),
        "no active calls\n"
    );
    let out = confab(&data, "UTC0", &["calls", "--limit", "1"]);
    assert!(out.lines().nth(1).unwrap().contains("failed"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&confab(&data, "UTC0", &["calls", "--json", "--limit", "1"])).unwrap();
    assert_eq!(json[0]["end_reason"], "server restart");
}
