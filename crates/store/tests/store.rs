//! The store against a real SQLite file in a temporary directory.

use confab_sip::auth::{ha1, Algorithm};
use confab_store::{BindingRecord, NewUser, Store, StoreError};

const REALM: &str = "confab.test";

fn alice() -> NewUser {
    NewUser {
        username: "alice".into(),
        display_name: Some("Alice Liddell".into()),
        extension: Some("1001".into()),
        password: "s3cret".into(),
    }
}

fn bob() -> NewUser {
    NewUser {
        username: "bob".into(),
        display_name: None,
        extension: None,
        password: "hunter2".into(),
    }
}

fn binding(aor: &str, contact: &str, expires_at: i64) -> BindingRecord {
    BindingRecord {
        aor: aor.into(),
        contact: contact.into(),
        expires_at,
        q_milli: 1000,
        call_id: "abc@host".into(),
        cseq: 7,
        instance: None,
        reg_id: None,
        transport: "UDP".into(),
        source: "127.0.0.1:5099".into(),
        local: "127.0.0.1:5060".into(),
        user_agent: Some("test-phone/1.0".into()),
        updated_at: 1_700_000_000,
    }
}

#[tokio::test]
async fn open_creates_wal_database_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested/data");
    let store = Store::open(&data).await.unwrap();
    assert!(data.join("confab.db").exists());
    assert_eq!(store.user_count().await.unwrap(), 0);
    store.add_user(alice(), REALM).await.unwrap();
    store.close().await;
    // WAL mode leaves its -wal file beside the database while open.
    let store = Store::open(&data).await.unwrap();
    assert_eq!(store.user_count().await.unwrap(), 1);
    assert!(data.join("confab.db-wal").exists());
}

#[tokio::test]
async fn users_round_trip_and_credentials_are_ha1_only() {
    let store = Store::open_in_memory().await.unwrap();
    let v0 = store.directory_version().await.unwrap();
    let user = store.add_user(alice(), REALM).await.unwrap();
    assert_eq!(user.username, "alice");
    assert_eq!(user.extension.as_deref(), Some("1001"));
    store.add_user(bob(), REALM).await.unwrap();
    assert!(store.directory_version().await.unwrap() >= v0 + 2);

    let names: Vec<_> = store
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, ["alice", "bob"]);
    assert_eq!(
        store.find_user("1001").await.unwrap().unwrap().username,
        "alice"
    );
    assert_eq!(store.find_user("alice").await.unwrap().unwrap().id, user.id);
    assert!(store.find_user("carol").await.unwrap().is_none());

    let creds = store.load_credentials(REALM).await.unwrap();
    // alice: {alice, 1001} x {MD5, SHA-256}; bob: {bob} x {MD5, SHA-256}.
    assert_eq!(creds.len(), 6);
    let by_ext = creds
        .iter()
        .find(|c| c.digest_username == "1001" && c.algorithm == Algorithm::Sha256)
        .unwrap();
    assert_eq!(by_ext.username, "alice");
    assert_eq!(by_ext.ha1, ha1(Algorithm::Sha256, "1001", REALM, "s3cret"));
    let md5 = creds
        .iter()
        .find(|c| c.digest_username == "bob" && c.algorithm == Algorithm::Md5);
    assert_eq!(
        md5.unwrap().ha1,
        ha1(Algorithm::Md5, "bob", REALM, "hunter2")
    );
    assert!(creds
        .iter()
        .all(|c| !c.ha1.contains("s3cret") && !c.ha1.contains("hunter2")));
    assert!(store
        .load_credentials("other.realm")
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .users_without_credentials(REALM)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .users_without_credentials("other.realm")
            .await
            .unwrap(),
        ["alice", "bob"]
    );
}

#[tokio::test]
async fn duplicates_and_invalid_input_are_refused() {
    let store = Store::open_in_memory().await.unwrap();
    store.add_user(alice(), REALM).await.unwrap();
    let version = store.directory_version().await.unwrap();

    let err = store.add_user(alice(), REALM).await.unwrap_err();
    assert!(
        matches!(err, StoreError::UserExists(ref n) if n == "alice"),
        "{err}"
    );

    let mut carol = bob();
    carol.username = "carol".into();
    carol.extension = Some("1001".into());
    let err = store.add_user(carol, REALM).await.unwrap_err();
    assert!(matches!(err, StoreError::ExtensionTaken { ref owner, .. } if owner == "alice"));
    assert_eq!(err.to_string(), "extension 1001 is already taken by alice");

    // A user name that is someone's extension would make `find_user` ambiguous.
    let mut numeric = bob();
    numeric.username = "1001".into();
    let err = store.add_user(numeric, REALM).await.unwrap_err();
    assert!(matches!(err, StoreError::ExtensionTaken { .. }), "{err}");

    let mut bad = bob();
    bad.username = "Bob Smith".into();
    let err = store.add_user(bad, REALM).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidUsername(_)));
    assert!(err.to_string().contains("lower-case letters"), "{err}");

    let mut bad = bob();
    bad.extension = Some("12a".into());
    assert!(matches!(
        store.add_user(bad, REALM).await,
        Err(StoreError::InvalidExtension(_))
    ));

    let mut bad = bob();
    bad.password = String::new();
    assert!(matches!(
        store.add_user(bad, REALM).await,
        Err(StoreError::InvalidPassword(_))
    ));

    assert_eq!(store.user_count().await.unwrap(), 1);
    assert_eq!(
        store.directory_version().await.unwrap(),
        version,
        "failed adds change nothing"
    );
}

#[tokio::test]
async fn set_password_replaces_every_credential() {
    let store = Store::open_in_memory().await.unwrap();
    store.add_user(alice(), "old.realm").await.unwrap();
    let version = store.directory_version().await.unwrap();
    store.set_password("1001", "n3w-pass", REALM).await.unwrap();
    assert!(store.directory_version().await.unwrap() > version);
    assert!(store
        .load_credentials("old.realm")
        .await
        .unwrap()
        .is_empty());
    let creds = store.load_credentials(REALM).await.unwrap();
    assert_eq!(creds.len(), 4);
    let c = creds
        .iter()
        .find(|c| c.digest_username == "alice" && c.algorithm == Algorithm::Md5);
    assert_eq!(
        c.unwrap().ha1,
        ha1(Algorithm::Md5, "alice", REALM, "n3w-pass")
    );

    let err = store.set_password("nobody", "x", REALM).await.unwrap_err();
    assert!(matches!(err, StoreError::NoSuchUser(_)));
    assert_eq!(err.to_string(), "no such user: \"nobody\"");
}

#[tokio::test]
async fn bindings_upsert_replace_flows_and_go_with_their_user() {
    let store = Store::open_in_memory().await.unwrap();
    store.add_user(alice(), REALM).await.unwrap();
    store.add_user(bob(), REALM).await.unwrap();
    let a1 = binding("sip:alice@confab.test", "sip:alice@127.0.0.1:5099", 2_000);
    let mut a2 = binding("sip:1001@confab.test", "sip:1001@127.0.0.1:5098", 2_000);
    a2.instance = Some("<urn:uuid:00000000-0000-0000-0000-000000000001>".into());
    a2.reg_id = Some(1);
    let b1 = binding("sip:bob@confab.test", "sip:bob@127.0.0.1:6000", 1_000);
    store
        .save_bindings(&[a1.clone(), a2.clone(), b1.clone()])
        .await
        .unwrap();
    assert_eq!(
        store.load_bindings().await.unwrap(),
        [a2.clone(), a1.clone(), b1.clone()]
    );

    // Refresh: same key, new expiry and CSeq.
    let mut a1_refreshed = a1.clone();
    a1_refreshed.expires_at = 3_000;
    a1_refreshed.cseq = 8;
    store.save_bindings(&[a1_refreshed.clone()]).await.unwrap();
    // The same flow (instance + reg-id) from a new contact replaces the old one.
    let mut a2_moved = a2.clone();
    a2_moved.contact = "sip:1001@127.0.0.1:7000".into();
    store.save_bindings(&[a2_moved.clone()]).await.unwrap();
    assert_eq!(
        store.load_bindings().await.unwrap(),
        [a2_moved, a1_refreshed, b1.clone()]
    );

    assert_eq!(store.remove_expired_bindings(1_000).await.unwrap(), 1);
    store
        .save_bindings(std::slice::from_ref(&b1))
        .await
        .unwrap();
    store
        .remove_bindings(&[(b1.aor.as_str(), b1.contact.as_str())])
        .await
        .unwrap();
    assert_eq!(store.load_bindings().await.unwrap().len(), 2);

    // Removing alice removes the bindings of her user name and of her extension.
    store
        .save_bindings(std::slice::from_ref(&b1))
        .await
        .unwrap();
    let removed = store.remove_user("alice").await.unwrap();
    assert_eq!(removed.username, "alice");
    assert_eq!(store.load_bindings().await.unwrap(), [b1]);
    assert!(store.find_user("1001").await.unwrap().is_none());
    assert_eq!(store.load_credentials(REALM).await.unwrap().len(), 2);
    assert!(matches!(
        store.remove_user("alice").await,
        Err(StoreError::NoSuchUser(_))
    ));
}
