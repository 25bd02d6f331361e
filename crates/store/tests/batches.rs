//! Large write-behind batches: `save_calls`, `save_bindings` and `remove_bindings` write many
//! rows per statement, and must leave exactly what saving the rows one at a time in order would.

use std::collections::BTreeMap;

use confab_store::{BindingRecord, CallFilter, CallRecordRow, Store};

const T0: i64 = 1_700_000_000_000;

/// A small deterministic generator (xorshift64*), so the batches are varied but reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn call(id: &str, state: &str, version: i64) -> CallRecordRow {
    let mut row = CallRecordRow::ringing(id, "alice", "1002", T0);
    row.state = state.to_owned();
    row.devices_tried = vec![format!("sip:bob@10.0.0.7:5060;v={version}")];
    if state != "ringing" {
        row.answered_at = Some(T0 + version);
        row.final_status = Some(200);
    }
    if state == "ended" {
        row.ended_at = Some(T0 + 10 * version);
        row.disposition = Some("answered".into());
        row.end_reason = Some("caller hung up".into());
        row.media = Some(format!("{{\"v\":{version}}}"));
    }
    row
}

/// What the calls table holds after upserting `rows` one at a time: the last row per call id,
/// except that nothing but an ended row replaces an ended one.
fn apply_calls(model: &mut BTreeMap<String, CallRecordRow>, rows: &[CallRecordRow]) {
    for row in rows {
        let keep_stored = model
            .get(&row.call_id)
            .is_some_and(|stored| stored.state == "ended" && row.state != "ended");
        if !keep_stored {
            model.insert(row.call_id.clone(), row.clone());
        }
    }
}

async fn stored_calls(store: &Store) -> BTreeMap<String, CallRecordRow> {
    store
        .list_calls(CallFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.call_id.clone(), r))
        .collect()
}

#[tokio::test]
async fn a_batch_of_hundreds_of_calls_keeps_the_last_row_per_call() {
    let store = Store::open_in_memory().await.unwrap();
    // 300 calls, each ringing → active → ended in one batch (900 rows, ids repeated), plus
    // call "late": ended and then, still in the same batch, a stale ringing snapshot.
    let mut batch = Vec::new();
    for state in ["ringing", "active", "ended"] {
        for i in 0..300 {
            batch.push(call(&format!("c{i:03}"), state, i));
        }
    }
    batch.push(call("late", "ended", 1));
    batch.push(call("late", "ringing", 2));
    // And "open": ringing then active, still going at the end of the batch.
    batch.push(call("open", "ringing", 3));
    batch.push(call("open", "active", 4));
    store.save_calls(&batch).await.unwrap();

    let stored = stored_calls(&store).await;
    assert_eq!(stored.len(), 302);
    for i in 0..300 {
        let id = format!("c{i:03}");
        assert_eq!(stored[&id], call(&id, "ended", i), "{id}");
    }
    assert_eq!(stored["late"], call("late", "ended", 1));
    assert_eq!(stored["open"], call("open", "active", 4));

    // The next batch: a stale ringing row for an ended call does not reopen it, an ended row
    // for an open call ends it, and a later ended row still updates an ended call.
    store
        .save_calls(&[
            call("c007", "ringing", 70),
            call("open", "ended", 5),
            call("c008", "ended", 80),
            call("c007", "active", 71),
        ])
        .await
        .unwrap();
    let stored = stored_calls(&store).await;
    assert_eq!(stored.len(), 302);
    assert_eq!(stored["c007"], call("c007", "ended", 7));
    assert_eq!(stored["open"], call("open", "ended", 5));
    assert_eq!(stored["c008"], call("c008", "ended", 80));
    let active = store
        .list_calls(CallFilter {
            active_only: true,
            ..CallFilter::default()
        })
        .await
        .unwrap();
    assert!(active.is_empty(), "{active:?}");
}

#[tokio::test]
async fn call_batches_match_saving_row_by_row() {
    let store = Store::open_in_memory().await.unwrap();
    let mut model = BTreeMap::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let states = ["ringing", "active", "ended"];
    let mut version = 0;
    // Batch sizes around the statement size: below, exactly, above, several statements.
    for size in [1, 3, 199, 200, 201, 450, 37, 600] {
        let batch: Vec<CallRecordRow> = (0..size)
            .map(|_| {
                version += 1;
                let id = format!("c{}", rng.below(260));
                call(&id, states[rng.below(3) as usize], version)
            })
            .collect();
        store.save_calls(&batch).await.unwrap();
        apply_calls(&mut model, &batch);
        assert_eq!(stored_calls(&store).await, model, "after a batch of {size}");
    }
}

fn binding(aor: &str, contact: &str, version: i64) -> BindingRecord {
    BindingRecord {
        aor: aor.into(),
        contact: contact.into(),
        expires_at: 2_000 + version,
        q_milli: 1000,
        call_id: format!("reg-{version}@host"),
        cseq: u32::try_from(version).unwrap(),
        instance: None,
        reg_id: None,
        transport: "UDP".into(),
        source: "127.0.0.1:5099".into(),
        local: "127.0.0.1:5060".into(),
        user_agent: Some("test-phone/1.0".into()),
        updated_at: 1_700_000_000 + version,
    }
}

fn with_flow(mut b: BindingRecord, instance: &str, reg_id: u32) -> BindingRecord {
    b.instance = Some(instance.into());
    b.reg_id = Some(reg_id);
    b
}

/// What the registrations table holds after saving `rows` one at a time: each row first deletes
/// the other bindings of its flow (aor, instance, reg-id, when it has both), then is upserted.
fn apply_bindings(model: &mut BTreeMap<(String, String), BindingRecord>, rows: &[BindingRecord]) {
    for b in rows {
        if let (Some(instance), Some(reg_id)) = (&b.instance, b.reg_id) {
            model.retain(|(aor, contact), old| {
                !(*aor == b.aor
                    && old.instance.as_ref() == Some(instance)
                    && old.reg_id == Some(reg_id)
                    && *contact != b.contact)
            });
        }
        model.insert((b.aor.clone(), b.contact.clone()), b.clone());
    }
}

async fn stored_bindings(store: &Store) -> BTreeMap<(String, String), BindingRecord> {
    store
        .load_bindings()
        .await
        .unwrap()
        .into_iter()
        .map(|b| ((b.aor.clone(), b.contact.clone()), b))
        .collect()
}

#[tokio::test]
async fn a_batch_of_hundreds_of_bindings_keeps_the_last_row_per_contact() {
    let store = Store::open_in_memory().await.unwrap();
    let aor = |i: i64| format!("sip:u{i:03}@confab.test");
    let contact = |i: i64, port: i64| format!("sip:u{i:03}@10.0.0.1:{port}");
    // 250 users registering twice in one batch (500 rows, keys repeated); the second wins.
    let mut batch = Vec::new();
    for version in [1, 2] {
        for i in 0..250 {
            batch.push(binding(&aor(i), &contact(i, 5060), version * 1000 + i));
        }
    }
    // u000 has a flow that moves from port 6000 to 6001 and back to 6000 in the same batch;
    // u001's flow moves from 7000 to 7001 and 7000 is then refreshed without the flow.
    let flow_a = "<urn:uuid:a>";
    batch.push(with_flow(binding(&aor(0), &contact(0, 6000), 1), flow_a, 1));
    batch.push(with_flow(binding(&aor(0), &contact(0, 6001), 2), flow_a, 1));
    batch.push(with_flow(binding(&aor(0), &contact(0, 6000), 3), flow_a, 1));
    batch.push(with_flow(binding(&aor(1), &contact(1, 7000), 4), flow_a, 1));
    batch.push(with_flow(binding(&aor(1), &contact(1, 7001), 5), flow_a, 1));
    batch.push(binding(&aor(1), &contact(1, 7000), 6));
    store.save_bindings(&batch).await.unwrap();

    let stored = stored_bindings(&store).await;
    assert_eq!(stored.len(), 250 + 1 + 2);
    for i in 0..250 {
        let key = (aor(i), contact(i, 5060));
        assert_eq!(stored[&key], binding(&key.0, &key.1, 2000 + i));
    }
    let flow_row =
        |i, port, version| with_flow(binding(&aor(i), &contact(i, port), version), flow_a, 1);
    assert_eq!(stored[&(aor(0), contact(0, 6000))], flow_row(0, 6000, 3));
    assert!(!stored.contains_key(&(aor(0), contact(0, 6001))));
    assert_eq!(stored[&(aor(1), contact(1, 7001))], flow_row(1, 7001, 5));
    assert_eq!(
        stored[&(aor(1), contact(1, 7000))],
        binding(&aor(1), &contact(1, 7000), 6)
    );

    // The next batch moves u000's flow to 6002: the stored 6000 binding goes.
    store.save_bindings(&[flow_row(0, 6002, 7)]).await.unwrap();
    let stored = stored_bindings(&store).await;
    assert!(!stored.contains_key(&(aor(0), contact(0, 6000))));
    assert_eq!(stored[&(aor(0), contact(0, 6002))], flow_row(0, 6002, 7));

    // Removing 300 keys (some twice, some never stored) in one call.
    let mut keys: Vec<(String, String)> = (0..250).map(|i| (aor(i), contact(i, 5060))).collect();
    keys.extend((0..30).map(|i| (aor(i), contact(i, 5060))));
    keys.extend((0..20).map(|i| (aor(i), contact(i, 9999))));
    store.remove_bindings(&keys).await.unwrap();
    let stored = stored_bindings(&store).await;
    assert_eq!(
        stored.keys().cloned().collect::<Vec<_>>(),
        [
            (aor(0), contact(0, 6002)),
            (aor(1), contact(1, 7000)),
            (aor(1), contact(1, 7001)),
        ]
    );
}

#[tokio::test]
async fn binding_batches_match_saving_row_by_row() {
    let store = Store::open_in_memory().await.unwrap();
    let mut model = BTreeMap::new();
    let mut rng = Rng(0x0123_4567_89ab_cdef);
    let mut version = 0;
    // Few AoRs, contacts and flows, so keys and flows collide often within and across batches.
    for size in [1, 5, 199, 200, 201, 450, 60, 700] {
        let batch: Vec<BindingRecord> = (0..size)
            .map(|_| {
                version += 1;
                let aor = format!("sip:u{}@confab.test", rng.below(4));
                let contact = format!("sip:x@10.0.0.{}:5060", rng.below(12));
                let b = binding(&aor, &contact, version);
                match rng.below(4) {
                    0 => b,
                    1 => {
                        // instance without reg-id: not a flow.
                        let mut b = b;
                        b.instance = Some(format!("<urn:uuid:{}>", rng.below(2)));
                        b
                    }
                    _ => with_flow(
                        b,
                        &format!("<urn:uuid:{}>", rng.below(2)),
                        rng.below(2) as u32 + 1,
                    ),
                }
            })
            .collect();
        store.save_bindings(&batch).await.unwrap();
        apply_bindings(&mut model, &batch);
        assert_eq!(
            stored_bindings(&store).await,
            model,
            "after a batch of {size}"
        );

        // Some removals between batches.
        let removals: Vec<(String, String)> = (0..rng.below(250))
            .map(|_| {
                (
                    format!("sip:u{}@confab.test", rng.below(4)),
                    format!("sip:x@10.0.0.{}:5060", rng.below(12)),
                )
            })
            .collect();
        store.remove_bindings(&removals).await.unwrap();
        for key in &removals {
            model.remove(key);
        }
        assert_eq!(stored_bindings(&store).await, model, "after removals");
    }
}
