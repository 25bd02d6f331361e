//! Call records against a real SQLite file in a temporary directory.

use confab_store::{CallFilter, CallRecordRow, Store};

const T0: i64 = 1_700_000_000_000;

fn ringing(call_id: &str, caller: &str, callee: &str, started_at: i64) -> CallRecordRow {
    let mut row = CallRecordRow::ringing(call_id, caller, callee, started_at);
    row.caller_device = Some("sip:alice@10.0.0.5:5060".into());
    row.devices_tried = vec![
        "sip:bob@10.0.0.7:5060".into(),
        "sip:bob@[2001:db8::1]:5062;transport=tcp".into(),
    ];
    row
}

fn all() -> CallFilter {
    CallFilter::default()
}

#[tokio::test]
async fn ringing_active_ended_updates_one_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    assert!(store.list_calls(all()).await.unwrap().is_empty());

    let mut call = ringing("c1", "alice", "1002", T0);
    call.callee_user = Some("bob".into());
    store.save_calls(&[call.clone()]).await.unwrap();
    assert_eq!(store.list_calls(all()).await.unwrap(), vec![call.clone()]);

    call.state = "active".into();
    call.answered_by = Some("sip:bob@10.0.0.7:5060".into());
    call.answered_at = Some(T0 + 4_000);
    call.final_status = Some(200);
    store.save_calls(&[call.clone()]).await.unwrap();
    let listed = store.list_calls(all()).await.unwrap();
    assert_eq!(listed, vec![call.clone()]);
    assert!(listed[0].is_active());
    assert_eq!(listed[0].talk_time_ms(), None);

    call.state = "ended".into();
    call.ended_at = Some(T0 + 84_000);
    call.disposition = Some("answered".into());
    call.end_reason = Some("caller hung up".into());
    call.media =
        Some(r#"{"a_to_b":{"packets":4000,"bytes":688000,"lost":2,"jitter_ms":1.5}}"#.into());
    store.save_calls(&[call.clone()]).await.unwrap();
    store.close().await;

    // Survives a reopen, still one row, every field intact.
    let store = Store::open(dir.path()).await.unwrap();
    let listed = store.list_calls(all()).await.unwrap();
    assert_eq!(listed, vec![call.clone()]);
    assert!(!listed[0].is_active());
    assert_eq!(listed[0].talk_time_ms(), Some(80_000));
    assert!(store
        .list_calls(CallFilter {
            active_only: true,
            ..all()
        })
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn one_batch_keeps_the_last_snapshot_and_ended_is_final() {
    let store = Store::open_in_memory().await.unwrap();
    let first = ringing("c1", "alice", "bob", T0);
    let mut answered = first.clone();
    answered.state = "active".into();
    answered.answered_at = Some(T0 + 1_000);
    let other = ringing("c2", "carol", "bob", T0 + 500);
    // A write-behind batch with two snapshots of c1 and one of c2.
    store
        .save_calls(&[first.clone(), other.clone(), answered.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.list_calls(all()).await.unwrap(),
        vec![other.clone(), answered.clone()]
    );
    store.save_calls(&[]).await.unwrap();

    let mut ended = answered.clone();
    ended.state = "ended".into();
    ended.ended_at = Some(T0 + 9_000);
    ended.disposition = Some("answered".into());
    store.save_calls(&[ended.clone()]).await.unwrap();
    // A stale snapshot arriving late does not reopen the call...
    store.save_calls(&[answered.clone()]).await.unwrap();
    let c1 = |rows: Vec<CallRecordRow>| rows.into_iter().find(|r| r.call_id == "c1").unwrap();
    assert_eq!(c1(store.list_calls(all()).await.unwrap()), ended);
    // ...but a later ended snapshot (say with media statistics) still updates it.
    let mut with_media = ended.clone();
    with_media.media = Some("{}".into());
    store.save_calls(&[with_media.clone()]).await.unwrap();
    assert_eq!(c1(store.list_calls(all()).await.unwrap()), with_media);
}

#[tokio::test]
async fn list_filters_by_state_user_and_limit_newest_first() {
    let store = Store::open_in_memory().await.unwrap();
    let mut rows = Vec::new();
    // c0: alice → bob (dialled by extension), ended busy.
    let mut c = ringing("c0", "alice", "1002", T0);
    c.callee_user = Some("bob".into());
    c.state = "ended".into();
    c.ended_at = Some(T0 + 2_000);
    c.disposition = Some("busy".into());
    c.final_status = Some(486);
    rows.push(c);
    // c1: an outside caller by URI → alice, ringing.
    let mut c = ringing("c1", "sip:+15551234@carrier.example", "alice", T0 + 1_000);
    c.callee_user = Some("alice".into());
    rows.push(c);
    // c2: bob → a URI naming alice by user part, active.
    let mut c = ringing("c2", "bob", "sips:alice@confab.test", T0 + 2_000);
    c.state = "active".into();
    c.answered_at = Some(T0 + 3_000);
    rows.push(c);
    // c3: axb → dave, ended; "a_b" must not match it as a LIKE wildcard would.
    let mut c = ringing("c3", "sip:axb@x.test", "dave", T0 + 3_000);
    c.state = "ended".into();
    c.disposition = Some("no_answer".into());
    rows.push(c);
    store.save_calls(&rows).await.unwrap();

    let ids = |rows: Vec<CallRecordRow>| rows.into_iter().map(|r| r.call_id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_calls(all()).await.unwrap()),
        ["c3", "c2", "c1", "c0"]
    );
    assert_eq!(
        ids(store
            .list_calls(CallFilter { limit: 2, ..all() })
            .await
            .unwrap()),
        ["c3", "c2"]
    );
    assert_eq!(
        ids(store
            .list_calls(CallFilter {
                active_only: true,
                ..all()
            })
            .await
            .unwrap()),
        ["c2", "c1"]
    );
    let by_user = |user: &str, active_only: bool| {
        let store = store.clone();
        let filter = CallFilter {
            active_only,
            user: Some(user.to_owned()),
            limit: 0,
        };
        async move { ids(store.list_calls(filter).await.unwrap()) }
    };
    assert_eq!(by_user("alice", false).await, ["c2", "c1", "c0"]);
    assert_eq!(by_user("alice", true).await, ["c2", "c1"]);
    assert_eq!(by_user("bob", false).await, ["c2", "c0"]);
    assert_eq!(by_user("1002", false).await, ["c0"]);
    assert_eq!(by_user("+15551234", false).await, ["c1"]);
    assert_eq!(by_user("axb", false).await, ["c3"]);
    assert!(by_user("a_b", false).await.is_empty());
    assert!(by_user("a%", false).await.is_empty());
    assert!(by_user("nobody", false).await.is_empty());
}

#[tokio::test]
async fn unfinished_calls_are_marked_failed_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).await.unwrap();
    let ringing_call = ringing("c1", "alice", "bob", T0);
    let mut active = ringing("c2", "bob", "alice", T0 + 1_000);
    active.state = "active".into();
    active.answered_at = Some(T0 + 2_000);
    active.answered_by = Some("sip:alice@10.0.0.5:5060".into());
    let mut ended = ringing("c3", "carol", "alice", T0 + 2_000);
    ended.state = "ended".into();
    ended.ended_at = Some(T0 + 5_000);
    ended.disposition = Some("cancelled".into());
    ended.final_status = Some(487);
    ended.end_reason = Some("caller hung up".into());
    store
        .save_calls(&[ringing_call.clone(), active.clone(), ended.clone()])
        .await
        .unwrap();
    store.close().await;

    // The server "crashed"; the next start cleans up.
    let store = Store::open(dir.path()).await.unwrap();
    let now = T0 + 60_000;
    assert_eq!(store.mark_unfinished_calls_failed(now).await.unwrap(), 2);
    assert_eq!(store.mark_unfinished_calls_failed(now).await.unwrap(), 0);
    let rows = store.list_calls(all()).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0], ended, "an ended call is left alone");
    for (row, before) in rows[1..].iter().zip([&active, &ringing_call]) {
        assert_eq!(row.call_id, before.call_id);
        assert_eq!(row.state, "ended");
        assert_eq!(row.disposition.as_deref(), Some("failed"));
        assert_eq!(row.end_reason.as_deref(), Some("server restart"));
        assert_eq!(row.ended_at, Some(now));
        assert_eq!(row.answered_at, before.answered_at);
        assert_eq!(row.answered_by, before.answered_by);
        assert_eq!(row.devices_tried, before.devices_tried);
    }
    assert!(store
        .list_calls(CallFilter {
            active_only: true,
            ..all()
        })
        .await
        .unwrap()
        .is_empty());
}
