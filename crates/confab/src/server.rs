//! Wires transports, the protocol core and storage into a running server.
//!
//! The shape follows quinn's driver: `confab-core` holds every protocol decision and never reads
//! the clock; this module feeds it bytes with the time they arrived, sends what it returns, wakes
//! it for its timers and persists what it reports. Nothing here interprets SIP.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use confab_core::call::CallState;
use confab_core::registrar::{Binding, LocationChange, RegistrarConfig};
use confab_core::{
    CallConfig, CallRecord, CoreConfig, DirectoryUser, Endpoint, UserCredential, UserDirectory,
};
use confab_media::{MediaConfig, MediaEngine};
use confab_net::{Handler, NetConfig, TransportHandle, Transports};
use confab_sip::auth::Algorithm;
use confab_sip::transaction::Timers;
use confab_sip::{ConnectionId, Source, Transmit, TransportKind};
use confab_store::{BindingRecord, CallRecordRow, Store};
use parking_lot::RwLock;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Config;
use crate::media::RelayAdapter;

/// The process's allocator (see the `tikv-jemallocator` entry of Cargo.toml): under a REGISTER
/// load it costs less CPU per allocation than glibc's, and memory freed when transactions end
/// goes back to the OS instead of staying fragmented between long-lived bindings.
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// How often the user cache checks the store for changes made by `confab user ...`.
const DIRECTORY_POLL: Duration = Duration::from_secs(1);
/// How often location changes are written behind to the store.
const LOCATION_FLUSH: Duration = Duration::from_secs(1);
/// The timer driver's fixed tick: it wakes once per tick, not once per deadline, so a timer fires
/// up to this late. RFC 3261 timers are multiples of T1 (500 ms), so 20 ms is well within what
/// they tolerate; call timers (no-answer, session, media) are seconds long.
const TIMER_TICK: Duration = Duration::from_millis(20);
/// How often the timer driver calls the core even when `poll_timeout` reports nothing due: the
/// core also arms the NAT keep-alive schedule and sweeps the INVITE flood limiter from
/// `handle_timeout`, and neither shows in `poll_timeout`.
const TIMER_HOUSEKEEPING: Duration = Duration::from_secs(1);
/// How often memory freed through glibc's `malloc` (SQLite, other C code) is handed back to the
/// OS; jemalloc returns the Rust side's by itself.
const MEMORY_TRIM: Duration = Duration::from_secs(30);

/// Runs the server until SIGINT or SIGTERM.
pub(crate) async fn run(config: Config, store: Store) -> anyhow::Result<()> {
    let realm = config.server.domain.clone();
    let directory = Arc::new(CachedDirectory::default());
    directory.reload(&store, &realm).await?;

    // Calls left ringing or active by a crash can never finish now.
    let orphaned = store.mark_unfinished_calls_failed(unix_ms()).await?;
    if orphaned > 0 {
        warn!(
            count = orphaned,
            "calls left unfinished by the previous run marked failed"
        );
    }

    let relay_ip = relay_address(&config);
    let engine = MediaEngine::start(MediaConfig {
        bind_ip: config.media.bind,
        advertise_ip: relay_ip,
        port_min: config.media.port_min,
        port_max: config.media.port_max,
        workers: config.media.workers as usize,
        park_cooling: Duration::from_millis(config.media.park_cooling_ms),
        park_max_pairs: config.media.park_max_pairs as usize,
        ..MediaConfig::default()
    })
    .context("starting the media relay")?;
    info!(advertised = %relay_ip, port_min = config.media.port_min, port_max = config.media.port_max, "media relay started");
    let media = Arc::new(RelayAdapter::new(engine, relay_ip));

    let transports = Transports::bind(net_config(&config))
        .await
        .context("binding SIP transports")?;
    let epoch = Instant::now();
    let endpoint = Arc::new(Endpoint::new(
        core_config(&config, &transports.local_addrs())?,
        directory.clone(),
        media,
        epoch,
    ));

    // Bindings persisted by an earlier run come back (their connections do not).
    let restored = restore_bindings(&store, epoch, &realm).await?;
    if !restored.is_empty() {
        info!(count = restored.len(), "restored registrations");
        endpoint
            .registrar()
            .restore(Instant::now(), unix_now(), restored);
    }

    for (kind, addr) in transports.local_addrs() {
        info!(transport = %kind, %addr, "listening");
    }
    let handler = Arc::new(Dispatch {
        endpoint: endpoint.clone(),
        out: transports.handle(),
    });
    transports.start(handler.clone());

    let (stop_tx, stop_rx) = watch::channel(false);
    let timers = tokio::spawn(drive_timers(
        endpoint.clone(),
        transports.handle(),
        stop_rx.clone(),
    ));
    let persist = tokio::spawn(write_behind(
        endpoint.clone(),
        store.clone(),
        realm.clone(),
        stop_rx.clone(),
    ));
    let reload = tokio::spawn(watch_directory(directory, store.clone(), realm, stop_rx));

    info!(domain = %config.server.domain, "confab is running");
    shutdown_signal().await;
    info!("shutting down");
    let _ = stop_tx.send(true);
    transports.shutdown().await;
    let _ = timers.await;
    let _ = reload.await;
    // Last: flush every location change the run made, so a restart finds them.
    let _ = persist.await;
    info!("stopped");
    Ok(())
}

/// The transports' handler: runs on the receiving thread or task, synchronously.
struct Dispatch {
    endpoint: Arc<Endpoint>,
    out: TransportHandle,
}

thread_local! {
    // Reused per thread so answering a message allocates no output vector.
    static OUTBOX: RefCell<Vec<Transmit>> = const { RefCell::new(Vec::new()) };
}

impl Handler for Dispatch {
    fn on_message(&self, bytes: Bytes, source: Source) {
        OUTBOX.with(|outbox| {
            let mut outbox = outbox.borrow_mut();
            self.endpoint.handle_message(
                source.received_at,
                unix_now(),
                &bytes,
                &source,
                &mut outbox,
            );
            send_all(&self.out, outbox.drain(..));
        });
    }

    fn on_connection_closed(&self, id: ConnectionId) {
        self.endpoint.connection_closed(id, Instant::now());
    }
}

fn send_all(out: &TransportHandle, transmits: impl Iterator<Item = Transmit>) {
    for transmit in transmits {
        let destination = transmit.destination;
        if let Err(error) = out.send(transmit) {
            tracing::debug!(?destination, %error, "send failed");
        }
    }
}

/// Fires the core's timers (transactions, calls, nonces, bans, binding expiry) on a fixed
/// coarse tick.
///
/// Waking at every distinct deadline cost a wake-up per deadline (~1,800/s at 300 calls/s);
/// a `TIMER_TICK` interval costs at most 50/s whatever the load, and the core is only called
/// when its earliest deadline has passed. Timers are therefore up to one tick late (see
/// `TIMER_TICK`). The tick keeps running when nothing is pending, since another thread can arm
/// a deadline at any moment.
async fn drive_timers(
    endpoint: Arc<Endpoint>,
    out: TransportHandle,
    mut stop: watch::Receiver<bool>,
) {
    let mut outbox = Vec::new();
    let mut tick = tokio::time::interval(TIMER_TICK);
    // After a stall, resume one tick from now instead of firing the missed ticks back to back.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = Instant::now();
    let mut next_trim = start + MEMORY_TRIM;
    // The first tick completes at once: run the core's housekeeping then.
    let mut next_housekeeping = start;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = Instant::now();
        let due = endpoint.poll_timeout().is_some_and(|at| at <= now);
        if due || now >= next_housekeeping {
            next_housekeeping = now + TIMER_HOUSEKEEPING;
            endpoint.handle_timeout(now, &mut outbox);
            send_all(&out, outbox.drain(..));
        }
        if now >= next_trim {
            next_trim = now + MEMORY_TRIM;
            confab_net::release_free_memory();
        }
    }
}

/// Persists location changes in batches, so `confab registrations` and a restart see them
/// without a database write on the REGISTER hot path.
async fn write_behind(
    endpoint: Arc<Endpoint>,
    store: Store,
    domain: String,
    mut stop: watch::Receiver<bool>,
) {
    let mut changes = Vec::new();
    let mut calls: Vec<CallRecord> = Vec::new();
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(LOCATION_FLUSH) => false,
            _ = stop.changed() => true,
        };
        endpoint.registrar().drain_changes(&mut changes);
        if !changes.is_empty() {
            if let Err(error) = persist(&store, endpoint.registrar(), &domain, &mut changes).await {
                warn!(%error, "could not persist registrations; will retry");
            }
        }
        endpoint.drain_call_records(&mut calls);
        if !calls.is_empty() {
            // Most calls ring, answer and end within one flush: write one row per call, not one
            // per snapshot (and keep the retry buffer as small after a failed write).
            keep_newest_per_call(&mut calls);
            let rows: Vec<CallRecordRow> = calls.iter().map(call_row).collect();
            match store.save_calls(&rows).await {
                Ok(()) => calls.clear(),
                Err(error) => warn!(%error, "could not persist call records; will retry"),
            }
        }
        if stopping {
            return;
        }
    }
}

/// Keeps one record per call id: the newest (records of a call are drained in order), except
/// that a record of a call not ended never replaces one of it ended, as the store would not let
/// it either. The records kept stay in their order.
fn keep_newest_per_call(calls: &mut Vec<CallRecord>) {
    if calls.len() < 2 {
        return;
    }
    let keep = {
        let mut chosen: HashMap<&str, usize> = HashMap::with_capacity(calls.len());
        for (i, c) in calls.iter().enumerate() {
            chosen
                .entry(c.id.as_str())
                .and_modify(|kept| {
                    if calls[*kept].state != CallState::Ended || c.state == CallState::Ended {
                        *kept = i;
                    }
                })
                .or_insert(i);
        }
        let mut keep = vec![false; calls.len()];
        for i in chosen.into_values() {
            keep[i] = true;
        }
        keep
    };
    let mut i = 0;
    calls.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}

async fn persist(
    store: &Store,
    registrar: &confab_core::Registrar,
    domain: &str,
    changes: &mut Vec<LocationChange>,
) -> anyhow::Result<()> {
    let now_unix = unix_now();
    // Collapse to the last change per binding, then write upserts and removals. Each entry
    // remembers when it last changed, so the upserts reach the store in the order they happened
    // (where that matters: two bindings of one RFC 5626 flow, the later wins).
    let mut last: HashMap<(String, String), (usize, Option<BindingRecord>)> = HashMap::new();
    let mut seq = 0;
    for change in changes.iter() {
        seq += 1;
        match change {
            LocationChange::Upserted(b) => {
                let r = binding_record(b, domain, now_unix);
                last.insert((r.aor.clone(), r.contact.clone()), (seq, Some(r)));
            }
            LocationChange::Removed { binding, .. } => {
                last.insert(
                    (aor_uri(&binding.aor, domain), binding.contact.to_string()),
                    (seq, None),
                );
            }
            LocationChange::Resync => {
                // Changes were lost while nobody drained them: rewrite everything we know.
                for b in registrar.snapshot() {
                    let r = binding_record(&b, domain, now_unix);
                    last.insert((r.aor.clone(), r.contact.clone()), (seq, Some(r)));
                }
                store.remove_expired_bindings(i64::MAX).await?;
            }
            _ => {}
        }
    }
    let mut upserts = Vec::new();
    let mut removals = Vec::new();
    for (key, (seq, record)) in last {
        match record {
            Some(r) => upserts.push((seq, r)),
            None => removals.push(key),
        }
    }
    upserts.sort_unstable_by_key(|(seq, _)| *seq);
    let upserts: Vec<BindingRecord> = upserts.into_iter().map(|(_, r)| r).collect();
    if !removals.is_empty() {
        store.remove_bindings(&removals).await?;
    }
    if !upserts.is_empty() {
        store.save_bindings(&upserts).await?;
    }
    changes.clear();
    Ok(())
}

fn call_row(c: &CallRecord) -> CallRecordRow {
    let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    CallRecordRow {
        call_id: c.id.clone(),
        caller: c.caller.clone(),
        caller_device: Some(c.caller_device.clone()),
        callee: c.callee_dialled.clone(),
        callee_user: c.callee.clone(),
        devices_tried: c.devices_tried.clone(),
        answered_by: c.answered_by.clone(),
        started_at: ms(c.start_unix_ms),
        answered_at: c.answer_unix_ms.map(ms),
        ended_at: c.end_unix_ms.map(ms),
        state: c.state.as_str().to_owned(),
        disposition: c.disposition.map(|d| d.as_str().to_owned()),
        final_status: c.final_status,
        end_reason: c.end_reason.map(|r| r.as_str().to_owned()),
        media: c.media.as_ref().map(|m| {
            let leg = |l: &confab_core::call::LegMediaStats| {
                serde_json::json!({
                    "packets": l.packets,
                    "bytes": l.bytes,
                    "lost": l.lost,
                    "jitter_ms": l.jitter.map(|j| j.as_secs_f64() * 1000.0),
                })
            };
            serde_json::json!({ "from_caller": leg(&m.a), "from_callee": leg(&m.b) }).to_string()
        }),
    }
}

fn aor_uri(user: &str, domain: &str) -> String {
    format!("sip:{user}@{domain}")
}

fn binding_record(b: &Binding, domain: &str, now_unix: u64) -> BindingRecord {
    BindingRecord {
        aor: aor_uri(&b.aor, domain),
        contact: b.contact.to_string(),
        expires_at: i64::try_from(b.expires_unix).unwrap_or(i64::MAX),
        q_milli: b.q_milli,
        call_id: b.call_id.to_string(),
        cseq: b.cseq,
        instance: b.instance.as_deref().map(str::to_owned),
        reg_id: b.reg_id,
        transport: b.source.transport.via_token().to_owned(),
        source: b.source.peer.to_string(),
        local: b.source.local.to_string(),
        user_agent: b.user_agent.as_deref().map(str::to_owned),
        updated_at: i64::try_from(now_unix).unwrap_or(i64::MAX),
    }
}

async fn restore_bindings(
    store: &Store,
    epoch: Instant,
    domain: &str,
) -> anyhow::Result<Vec<Binding>> {
    let now = Instant::now();
    let now_unix = unix_now();
    let mut out = Vec::new();
    for r in store.load_bindings().await? {
        let expires_unix = u64::try_from(r.expires_at).unwrap_or(0);
        let remaining = expires_unix.saturating_sub(now_unix);
        let user = r.aor_user();
        if remaining == 0 || user.is_empty() || !r.aor.ends_with(&format!("@{domain}")) {
            continue;
        }
        let (Some(transport), Ok(peer), Ok(local)) = (
            TransportKind::from_token(&r.transport),
            r.source.parse::<SocketAddr>(),
            r.local.parse::<SocketAddr>(),
        ) else {
            continue;
        };
        out.push(Binding {
            aor: user.into(),
            contact: r.contact.into_boxed_str(),
            expires_at: now + Duration::from_secs(remaining),
            expires_unix,
            q_milli: r.q_milli.min(1000),
            call_id: r.call_id.into_boxed_str(),
            cseq: r.cseq,
            instance: r.instance.map(String::into_boxed_str),
            reg_id: r.reg_id,
            source: Source {
                transport,
                peer,
                local,
                connection: None,
                received_at: epoch,
            },
            user_agent: r.user_agent.map(String::into_boxed_str),
        });
    }
    Ok(out)
}

/// The user directory the core reads on every authentication: an in-memory copy of the store's
/// credentials, swapped whole when `confab user ...` changes the store.
#[derive(Default)]
struct CachedDirectory {
    inner: RwLock<DirectoryState>,
}

#[derive(Default)]
struct DirectoryState {
    version: u64,
    /// Digest user name → its credential per algorithm (looked up by `&str`, no allocation).
    by_name: HashMap<String, Vec<(Algorithm, UserCredential)>>,
    /// User name and extension → user, for call routing.
    users: HashMap<String, DirectoryUser>,
}

impl CachedDirectory {
    async fn reload(&self, store: &Store, realm: &str) -> anyhow::Result<()> {
        let version = store.directory_version().await?;
        let mut by_name = HashMap::new();
        let mut users = HashMap::new();
        for c in store.load_credentials(realm).await? {
            let user = DirectoryUser {
                user: c.username.clone(),
                extension: c.extension.clone(),
                display_name: c.display_name.clone(),
            };
            if let Some(ext) = &c.extension {
                users.insert(ext.clone(), user.clone());
            }
            users.insert(c.username.clone(), user);
            let entry: &mut Vec<(Algorithm, UserCredential)> =
                by_name.entry(c.digest_username.clone()).or_default();
            entry.retain(|(a, _)| *a != c.algorithm);
            entry.push((
                c.algorithm,
                UserCredential {
                    user: c.username.clone(),
                    extension: c.extension.clone(),
                    ha1: c.ha1.clone(),
                },
            ));
        }
        let mut state = self.inner.write();
        state.version = version;
        state.by_name = by_name;
        state.users = users;
        Ok(())
    }

    fn version(&self) -> u64 {
        self.inner.read().version
    }
}

impl UserDirectory for CachedDirectory {
    fn credentials(&self, digest_username: &str, algorithm: Algorithm) -> Option<UserCredential> {
        // Digest user names are case-sensitive strings (RFC 7616 §3.4); no folding.
        self.inner
            .read()
            .by_name
            .get(digest_username)?
            .iter()
            .find(|(a, _)| *a == algorithm)
            .map(|(_, c)| c.clone())
    }
}

async fn watch_directory(
    directory: Arc<CachedDirectory>,
    store: Store,
    realm: String,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(DIRECTORY_POLL) => {}
            _ = stop.changed() => return,
        }
        match store.directory_version().await {
            Ok(v) if v != directory.version() => {
                if let Err(error) = directory.reload(&store, &realm).await {
                    warn!(%error, "could not reload users");
                } else {
                    info!("user directory reloaded");
                }
            }
            Ok(_) => {}
            Err(error) => warn!(%error, "could not read the user directory version"),
        }
    }
}

/// The address the relay puts in SDP: configured, else the SIP advertised address, else the
/// bind address, else this host's first non-loopback address.
fn relay_address(config: &Config) -> IpAddr {
    if let Some(ip) = config.media.advertised_address {
        return ip;
    }
    if let Some(ip) = config
        .sip
        .advertised_address
        .as_deref()
        .and_then(|a| a.parse::<IpAddr>().ok())
    {
        return ip;
    }
    if !config.media.bind.is_unspecified() {
        return config.media.bind;
    }
    if_addrs::get_if_addrs()
        .ok()
        .and_then(|ifaces| {
            ifaces
                .into_iter()
                .map(|i| i.ip())
                .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        })
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

fn core_config(
    config: &Config,
    bound: &[(TransportKind, SocketAddr)],
) -> anyhow::Result<CoreConfig> {
    let mut local_ips: Vec<IpAddr> = Vec::new();
    let mut local_hosts: Vec<String> = config.server.aliases.clone();
    if let Some(adv) = &config.sip.advertised_address {
        match adv.parse::<IpAddr>() {
            Ok(ip) => local_ips.push(ip),
            Err(_) => local_hosts.push(adv.clone()),
        }
    }
    let listen = config
        .sip
        .udp
        .iter()
        .chain(&config.sip.tcp)
        .chain(&config.sip.tls)
        .chain(&config.sip.ws)
        .chain(&config.sip.wss);
    for addr in listen {
        if addr.ip().is_unspecified() {
            // Bound to every address: every address of this host is ours.
            if let Ok(ifaces) = if_addrs::get_if_addrs() {
                local_ips.extend(ifaces.into_iter().map(|i| i.ip()));
            }
        } else {
            local_ips.push(addr.ip());
        }
    }
    local_ips.sort();
    local_ips.dedup();
    Ok(CoreConfig {
        domain: config.server.domain.clone(),
        local_hosts,
        local_ips,
        registrar: RegistrarConfig {
            min_expires: config.registrar.min_expires,
            max_expires: config.registrar.max_expires,
            default_expires: config.registrar.default_expires,
            max_contacts_per_aor: config.registrar.max_contacts_per_aor as usize,
            domain: config.server.domain.clone(),
        },
        timers: Timers {
            t1: Duration::from_millis(config.sip.t1_ms),
            t2: Duration::from_millis(config.sip.t2_ms),
            t4: Duration::from_millis(config.sip.t4_ms),
        },
        nonce_lifetime: Duration::from_secs(config.auth.nonce_lifetime_secs),
        max_auth_failures: config.auth.max_failures,
        failure_window: Duration::from_secs(config.auth.failure_window_secs),
        ban_duration: Duration::from_secs(config.auth.ban_secs),
        digest_algorithms: config.digest_algorithms(),
        max_message_size: config.sip.max_message_size,
        advertised: advertised(config, bound),
        nat_keepalive_interval: (config.sip.nat_keepalive_secs > 0)
            .then(|| Duration::from_secs(config.sip.nat_keepalive_secs)),
        calls: CallConfig {
            no_answer_timeout: Duration::from_secs(config.calls.no_answer_timeout_secs),
            session_expires: Duration::from_secs(config.calls.session_expires_secs),
            min_se: Duration::from_secs(config.calls.min_se_secs),
            media_timeout: (config.calls.media_timeout_secs > 0)
                .then(|| Duration::from_secs(config.calls.media_timeout_secs)),
            max_calls: config.calls.max_calls as usize,
            max_ringing_per_source: config.calls.max_ringing_per_source,
            invites_per_second_per_source: config.calls.invites_per_second_per_source,
            invite_burst_per_source: config.calls.invite_burst_per_source,
            ..CallConfig::default()
        },
        rng_seed: None,
    })
}

/// The address:port per transport that goes into our Via and Contact: the advertised IP with
/// each bound port, or the bound address itself when it is specific.
fn advertised(
    config: &Config,
    bound: &[(TransportKind, SocketAddr)],
) -> Vec<(TransportKind, SocketAddr)> {
    let adv_ip = config
        .sip
        .advertised_address
        .as_deref()
        .and_then(|a| a.parse::<IpAddr>().ok());
    bound
        .iter()
        .filter_map(|&(kind, addr)| match adv_ip {
            Some(ip) => Some((kind, SocketAddr::new(ip, addr.port()))),
            None if !addr.ip().is_unspecified() => Some((kind, addr)),
            None => None,
        })
        .collect()
}

fn net_config(config: &Config) -> NetConfig {
    let mut tls_names = vec![config.server.domain.clone(), "localhost".to_owned()];
    tls_names.extend(config.server.aliases.iter().cloned());
    if let Some(adv) = &config.sip.advertised_address {
        tls_names.push(adv.clone());
    }
    NetConfig {
        udp: config.sip.udp.clone(),
        tcp: config.sip.tcp.clone(),
        tls: config.sip.tls.clone(),
        ws: config.sip.ws.clone(),
        wss: config.sip.wss.clone(),
        tls_cert: config.tls.cert.clone(),
        tls_key: config.tls.key.clone(),
        tls_dir: config.server.data_dir.join("tls"),
        tls_names,
        max_message_size: config.sip.max_message_size,
        max_connections_per_ip: config.sip.max_connections_per_ip as usize,
        idle_timeout: Duration::from_secs(config.sip.connection_idle_timeout_secs),
        udp_batch_window: Duration::from_micros(config.sip.udp_batch_window_us),
        ..NetConfig::default()
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
