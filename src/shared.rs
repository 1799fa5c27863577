//! The state every client task shares: the live config and auth file, the pools keyed by
//! (database, user), the shared connection budgets, client counts and cancel keys.
//! Locks here are taken at login/logout, never per message.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::auth::hba::HbaFiles;
use crate::cancel::CancelRegistry;
use crate::config::auth_file::{AuthFile, Secret};
use crate::config::{Config, PoolSettings};
use crate::pool::{Limits, Pool, SharedLimit};
use crate::server::{Credentials, ServerConnector};
use crate::transport::TlsState;

mod reload;
pub use reload::{Files, ReloadReport};

pub type ServerPool = Pool<ServerConnector>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub db: String,
    pub user: String,
}

/// A pool plus the settings it was built from.
pub struct PoolEntry {
    pub pool: Arc<ServerPool>,
    /// Replaced by RELOAD; sessions pick up a new version at their next transaction.
    settings: Mutex<Arc<PoolSettings>>,
    settings_version: std::sync::atomic::AtomicU64,
    /// Bumped when a prepared statement's cached plan went stale (DDL): statements parsed afterwards get
    /// new server-side names, so they never meet a stale copy on any server.
    pub plan_epoch: Arc<std::sync::atomic::AtomicU64>,
    /// This (database, user)'s counters: the same ones before and after a rebuild.
    pub stats: Arc<crate::stats::PoolStats>,
    /// Set when RELOAD rebuilt this pool (its server changed): the pool that replaces it.
    pub successor: std::sync::OnceLock<Arc<PoolEntry>>,
    /// Made from the `"*"` entry: dropped after autodb_idle_timeout unused.
    pub auto: bool,
}

/// The bound on pgsluice's own statements when server_connect_timeout is 0 (off).
const NO_ANSWER: std::time::Duration = std::time::Duration::from_secs(60);

/// Why there is no pool for a (database, user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoPool {
    /// Neither an entry of its own nor a `"*"` fallback.
    NoDatabase,
    /// autodb_max_pools pools made from `"*"` exist already.
    TooManyAutoPools,
}

impl PoolEntry {
    pub fn settings(&self) -> Arc<PoolSettings> {
        self.settings.lock().map(|s| s.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Bumped by every settings change; one atomic load tells a session whether to refresh.
    pub fn settings_version(&self) -> u64 {
        self.settings_version.load(std::sync::atomic::Ordering::Acquire)
    }

    fn set_settings(&self, s: PoolSettings) {
        if let Ok(mut cur) = self.settings.lock() {
            *cur = Arc::new(s);
        }
        self.settings_version.fetch_add(1, std::sync::atomic::Ordering::Release);
    }
}

/// Connections still logging in, oldest first. When there are too many, the oldest is told to go: a flood
/// of sockets that never finish logging in (slowloris) then only ever displaces its own kind.
#[derive(Debug, Default)]
pub struct PendingLogins {
    /// Those not yet told to go, oldest first.
    queue: Mutex<std::collections::BTreeMap<u64, tokio_util::sync::CancellationToken>>,
    next: std::sync::atomic::AtomicU64,
    /// All connections not logged in yet, those told to go but not gone included.
    count: AtomicUsize,
}

/// One connection's place among the pending logins; leaves the queue when dropped.
#[derive(Debug)]
pub struct PendingLogin {
    id: u64,
    evicted: tokio_util::sync::CancellationToken,
    queue: Arc<PendingLogins>,
}

impl PendingLogins {
    /// Queues a new connection, dropping the oldest pending ones beyond `max` (0 = no limit).
    pub fn admit(self: &Arc<Self>, max: usize) -> PendingLogin {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        let evicted = tokio_util::sync::CancellationToken::new();
        if let Ok(mut q) = self.queue.lock() {
            while max > 0 && q.len() >= max {
                match q.pop_first() {
                    Some((_, oldest)) => oldest.cancel(),
                    None => break,
                }
            }
            q.insert(id, evicted.clone());
        }
        PendingLogin { id, evicted, queue: self.clone() }
    }

    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl PendingLogin {
    /// Completes when a newer connection took this one's place.
    pub async fn evicted(&self) {
        self.evicted.cancelled().await
    }
}

impl Drop for PendingLogin {
    fn drop(&mut self) {
        if let Ok(mut q) = self.queue.queue.lock() {
            q.remove(&self.id);
        }
        self.queue.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A pooled client's place in `Shared::logged_in_count`.
pub struct LoggedInGuard(Arc<AtomicUsize>);

impl Drop for LoggedInGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts clients per database or user name, for the client caps.
#[derive(Default)]
pub struct ClientCounts {
    counts: Mutex<HashMap<String, usize>>,
}

/// Decrements its name's count on drop.
pub struct ClientCountGuard {
    counts: Arc<ClientCounts>,
    name: String,
}

impl ClientCounts {
    /// Counts one more client for `name`, unless `max` (0 = unlimited) is reached.
    pub fn try_add(self: &Arc<Self>, name: &str, max: usize) -> Option<ClientCountGuard> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = c.entry(name.to_string()).or_default();
        if max != 0 && *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientCountGuard { counts: self.clone(), name: name.to_string() })
    }

    /// Clients counted for `name` now.
    pub fn count(&self, name: &str) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).get(name).copied().unwrap_or(0)
    }
}

impl Drop for ClientCountGuard {
    fn drop(&mut self) {
        let mut c = self.counts.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = c.get_mut(&self.name) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.remove(&self.name); // names come from clients: keep only those in use
            }
        }
    }
}

pub struct Shared {
    me: std::sync::Weak<Shared>,
    config: RwLock<Arc<Config>>,
    auth: RwLock<Arc<AuthFile>>,
    pools: Mutex<HashMap<PoolKey, Arc<PoolEntry>>>,
    db_limits: Mutex<HashMap<String, Arc<SharedLimit>>>,
    user_limits: Mutex<HashMap<String, Arc<SharedLimit>>>,
    /// Server credentials per server-side user, shared by that user's pools (SCRAM keys learned later).
    credentials: Mutex<HashMap<String, Arc<Mutex<Credentials>>>>,
    pub clients: AtomicUsize,
    /// Clients of pools past login (max_client_conn): counted by their session, not derived from
    /// `clients` minus those logging in, which two counters changing apart made briefly wrong.
    logged_in: Arc<AtomicUsize>,
    /// Connections accepted and not yet logged in (bounded by max_pending_logins).
    pub pending_logins: Arc<PendingLogins>,
    /// Bytes of all clients' prepared statements (bounded by max_total_prepared_bytes).
    pub held_prepared: Arc<crate::stats::HeldBytes>,
    pub db_clients: Arc<ClientCounts>,
    pub user_clients: Arc<ClientCounts>,
    pub cancel: Arc<CancelRegistry>,
    /// SCRAM salts per user name (from a per-process secret) and keys derived from plain-text passwords.
    pub scram: crate::auth::scram::ScramVerifiers,
    pub client_registry: Arc<crate::stats::clients::ClientRegistry>,
    pub server_registry: Arc<crate::stats::servers::ServerRegistry>,
    /// Counters per (database, user), kept across pool rebuilds.
    pub stats: crate::stats::StatsBook,
    /// PAUSE and DISABLE state, by client-visible database name (`None` = all databases).
    paused: Mutex<HashSet<Option<String>>>,
    disabled: Mutex<HashSet<String>>,
    suspended: std::sync::atomic::AtomicBool,
    /// The TLS configuration new connections use, both sides (replaced by RELOAD).
    pub tls: Arc<TlsState>,
    /// auth_query lookups running now (at most `MAX_AUTH_LOOKUPS`).
    pub auth_lookups: tokio::sync::Semaphore,
    /// auth_hba_file's rules and auth_ident_file's maps, when configured (replaced by RELOAD).
    hba: RwLock<Option<Arc<HbaFiles>>>,
    /// Running or draining; the supervisor acts on changes (the console's SHUTDOWN sets it).
    pub run_state: tokio::sync::watch::Sender<crate::run_state::RunState>,
}

/// auth_query lookups run at once; further logins wait their turn (within client_login_timeout).
pub const MAX_AUTH_LOOKUPS: usize = 16;

impl Shared {
    pub fn new(config: Config, files: Files) -> Arc<Self> {
        let Files { auth, tls, hba } = files;
        // One id sequence for clients and servers, as PgBouncer's socket ids.
        let ids = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let cancel = Arc::new(CancelRegistry::new(&config));
        Arc::new_cyclic(|me| Shared {
            me: me.clone(),
            tls: Arc::new(TlsState::new(tls)),
            hba: RwLock::new(hba),
            auth_lookups: tokio::sync::Semaphore::new(MAX_AUTH_LOOKUPS),
            config: RwLock::new(Arc::new(config)),
            auth: RwLock::new(Arc::new(auth)),
            pools: Mutex::default(),
            db_limits: Mutex::default(),
            user_limits: Mutex::default(),
            credentials: Mutex::default(),
            clients: AtomicUsize::new(0),
            logged_in: Arc::new(AtomicUsize::new(0)),
            pending_logins: Arc::default(),
            held_prepared: Arc::default(),
            db_clients: Arc::default(),
            user_clients: Arc::default(),
            cancel,
            scram: Default::default(),
            client_registry: Arc::new(crate::stats::registry::Registry::with_ids(ids.clone())),
            server_registry: Arc::new(crate::stats::registry::Registry::with_ids(ids)),
            stats: Default::default(),
            paused: Mutex::default(),
            disabled: Mutex::default(),
            suspended: Default::default(),
            run_state: tokio::sync::watch::Sender::new(crate::run_state::RunState::Running),
        })
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.read().map(|c| c.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    /// The HBA rules in force (auth_type = hba), with their ident maps.
    pub fn hba(&self) -> Option<Arc<HbaFiles>> {
        self.hba.read().map(|h| h.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    pub fn auth(&self) -> Arc<AuthFile> {
        self.auth.read().map(|c| c.clone()).unwrap_or_else(|e| e.into_inner().clone())
    }

    pub fn secret(&self, user: &str) -> Option<Secret> {
        self.auth().get(user).cloned()
    }

    pub fn client_count(&self) -> usize {
        self.clients.load(Ordering::Relaxed)
    }

    /// Clients past login (what max_client_conn bounds).
    pub fn logged_in_count(&self) -> usize {
        self.logged_in.load(Ordering::Relaxed)
    }

    /// Counts a pooled client as logged in until the guard is dropped (at the end of its session), or
    /// `None` when `max` (0: no limit) are in already. One atomic step: two logins racing for the last
    /// place cannot both take it.
    pub fn try_count_logged_in(&self, max: usize) -> Option<LoggedInGuard> {
        let taken = self
            .logged_in
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (max == 0 || n < max).then_some(n + 1));
        taken.ok().map(|_| LoggedInGuard(self.logged_in.clone()))
    }

    fn limit(map: &Mutex<HashMap<String, Arc<SharedLimit>>>, name: &str, max: usize) -> Arc<SharedLimit> {
        let mut m = map.lock().unwrap_or_else(|e| e.into_inner());
        let l = m.entry(name.to_string()).or_insert_with(|| Arc::new(SharedLimit::new(max)));
        l.set_max(max);
        l.clone()
    }

    /// The credential cell for a server-side user, seeded from the database entry or the auth file.
    pub fn credentials(&self, server_user: &str, settings: &PoolSettings) -> Arc<Mutex<Credentials>> {
        let mut m = self.credentials.lock().unwrap_or_else(|e| e.into_inner());
        let cell = m.entry(server_user.to_string()).or_default().clone();
        let seeded = match (&settings.server.password, self.secret(server_user)) {
            // As PgBouncer's forced-user password: plain, or an md5 hash for md5 servers (a SCRAM verifier
            // is refused by the config check: it cannot log in).
            (Some(pw), _) => match Secret::parse(pw) {
                Secret::Md5(h) => Some(Credentials::Md5Hash(h)),
                _ => Some(Credentials::Password(pw.clone())),
            },
            (None, Some(Secret::Plain(pw))) if !pw.is_empty() => Some(Credentials::Password(pw)),
            (None, Some(Secret::Md5(h))) => Some(Credentials::Md5Hash(h)),
            _ => None,
        };
        if let (Some(c), Ok(mut cur)) = (seeded, cell.lock()) {
            *cur = c;
        }
        cell
    }

    /// The pool for (db, user), created on first use. `None` when the database is not configured.
    pub fn pool(&self, db: &str, user: &str) -> Result<Arc<PoolEntry>, NoPool> {
        let key = PoolKey { db: db.to_string(), user: user.to_string() };
        if let Some(e) = self.pools.lock().map_err(|_| NoPool::NoDatabase)?.get(&key) {
            return Ok(e.clone());
        }
        let config = self.config();
        let settings = config.pool_settings(db, user).ok_or(NoPool::NoDatabase)?;
        let auto = config.is_auto_database(db);
        if auto && self.auto_pool_count() >= config.general.autodb_max_pools {
            return Err(NoPool::TooManyAutoPools);
        }
        let server_user = settings.server.user.clone().unwrap_or_else(|| user.to_string());
        let connector = ServerConnector {
            target: settings.server.clone(),
            tcp: config.general.tcp_options(),
            user: server_user.clone(),
            credentials: self.credentials(&server_user, &settings),
            check_query: crate::config::check_query_to_send(&settings.server_check_query),
            internal_timeout: Some(settings.server_connect_timeout).filter(|t| !t.is_zero()).unwrap_or(NO_ANSWER),
            welcome: Mutex::new(None),
            registry: Some((self.server_registry.clone(), db.to_string())),
            tls: self.tls.clone(),
            host_turn: Default::default(),
            log_connections: config.general.log_connections,
        };
        let db_limit = Self::limit(&self.db_limits, db, settings.max_db_connections);
        let user_limit = Self::limit(&self.user_limits, &server_user, settings.max_user_connections);
        let pool = Pool::new(connector, Limits::from_settings(&settings), db_limit, user_limit);
        let (weak, me, me_user) = (self.me.clone(), key.clone(), server_user.clone());
        pool.set_starved_hook(Box::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.evict_idle_for(&me, &me_user);
            }
        }));
        let entry = Arc::new(PoolEntry {
            pool,
            settings: Mutex::new(Arc::new(settings)),
            settings_version: Default::default(),
            // Random, so no client can aim a statement text at the server-side name of another's.
            plan_epoch: Arc::new(std::sync::atomic::AtomicU64::new(rand::random())),
            stats: self.stats.get(db, user),
            successor: Default::default(),
            auto,
        });
        let mut pools = self.pools.lock().map_err(|_| NoPool::NoDatabase)?;
        if auto && !pools.contains_key(&key) {
            tracing::info!("registered new auto-database: {db}"); // PgBouncer's words
        }
        let entry = pools.entry(key).or_insert(entry).clone();
        drop(pools);
        // Checked once listed: a PAUSE that listed the pools before this one sees the flag here.
        if self.is_paused(db) {
            entry.pool.pause();
        }
        Ok(entry)
    }

    fn auto_pool_count(&self) -> usize {
        self.pools.lock().map(|p| p.values().filter(|e| e.auto).count()).unwrap_or(0)
    }

    /// Drops the pools made from `"*"` that nobody has used for autodb_idle_timeout, with their counters
    /// and limits. `seen` is the caller's memory between calls: per pool, when it was last seen in use and
    /// its login count then (a client that came and went between two calls counts as use).
    pub fn reap_auto_pools(&self, seen: &mut HashMap<PoolKey, (std::time::Instant, u64)>) -> usize {
        let timeout = self.config().general.autodb_idle_timeout;
        let now = std::time::Instant::now();
        let mut reaped = Vec::new();
        if let Ok(mut pools) = self.pools.lock() {
            seen.retain(|k, _| pools.contains_key(k));
            pools.retain(|key, entry| {
                if !entry.auto {
                    return true;
                }
                let logins = entry.stats.client_login_count.load(Ordering::Relaxed);
                // Only the map holds it: no client, session or console view has it.
                let in_use = Arc::strong_count(entry) > 1;
                let last = seen.entry(key.clone()).or_insert((now, logins));
                if in_use || last.1 != logins {
                    *last = (now, logins);
                    return true;
                }
                if timeout.is_zero() || now.duration_since(last.0) < timeout {
                    return true;
                }
                reaped.push((key.clone(), entry.clone()));
                false
            });
            // Under the same lock: SHOW POOLS and SHOW STATS never disagree on whether the pool exists.
            for (key, _) in &reaped {
                self.stats.remove(&key.db, &key.user);
            }
        }
        for (key, entry) in &reaped {
            seen.remove(key);
            entry.pool.shut();
            self.forget_limits_of(&key.db, &entry.pool.connector().user);
            tracing::info!(db = %key.db, user = %key.user, "auto-created pool dropped after autodb_idle_timeout");
        }
        reaped.len()
    }

    /// Forgets the per-database and per-user limits no pool uses any more.
    fn forget_limits_of(&self, db: &str, server_user: &str) {
        let pools = self.all_pools();
        if !pools.iter().any(|(k, _)| k.db == db)
            && let Ok(mut m) = self.db_limits.lock()
        {
            m.remove(db);
        }
        if !pools.iter().any(|(_, e)| e.pool.connector().user == server_user)
            && let Ok(mut m) = self.user_limits.lock()
        {
            m.remove(server_user);
        }
    }

    /// Closes one idle server of another pool sharing `key`'s database or server-user budget.
    fn evict_idle_for(&self, key: &PoolKey, server_user: &str) {
        for (k, entry) in self.all_pools() {
            let same_user = entry.pool.connector().user == server_user;
            if k != *key && (k.db == key.db || same_user) && entry.pool.close_one_idle() {
                tracing::debug!(db = %k.db, user = %k.user, "closed an idle server to free a shared budget");
                return;
            }
        }
    }

    /// RECONNECT (`db` = None: every database): each server open now is closed once released (SHOW
    /// SERVERS says so until then), and new ones are made.
    pub fn reconnect(&self, db: Option<&str>) {
        let pools = self.pools_of(db);
        for s in self.server_registry.list() {
            if pools.iter().any(|(k, e)| k.db == s.db && e.pool.connector().user == s.user) {
                s.mark_close_needed();
            }
        }
        for (_, e) in pools {
            e.pool.reconnect();
        }
    }

    /// PAUSE (`db` = None: every database): pools of the database stop handing out servers.
    pub fn pause(&self, db: Option<&str>) {
        // The flag stays locked until every pool is paused, so whoever sees it (SHOW STATE)
        // can rely on no new transaction starting; a pool created meanwhile checks the flag
        // after it is listed (see `pool`).
        let mut flag = self.paused.lock().ok();
        if let Some(p) = flag.as_mut() {
            p.insert(db.map(str::to_string));
        }
        for (_, entry) in self.pools_of(db) {
            entry.pool.pause();
        }
        drop(flag);
    }

    /// SUSPEND: every pool stops handing out servers until RESUME.
    pub fn suspend(&self) {
        let mut flag = self.paused.lock().ok();
        self.suspended.store(true, Ordering::Relaxed);
        if let Some(p) = flag.as_mut() {
            p.insert(None);
        }
        for (_, entry) in self.all_pools() {
            entry.pool.pause_soft();
        }
        drop(flag);
    }

    /// (paused, suspended) for SHOW STATE.
    pub fn pause_state(&self) -> (bool, bool) {
        let suspended = self.suspended.load(Ordering::Relaxed);
        (self.paused.lock().map(|p| !p.is_empty()).unwrap_or(false) && !suspended, suspended)
    }

    /// RESUME (`db` = None: everything paused).
    pub fn resume(&self, db: Option<&str>) {
        if db.is_none() {
            self.suspended.store(false, Ordering::Relaxed);
        }
        if let Ok(mut p) = self.paused.lock() {
            match db {
                Some(d) => {
                    p.remove(&Some(d.to_string()));
                }
                None => p.clear(),
            }
        }
        for (key, entry) in self.all_pools() {
            if !self.is_paused(&key.db) {
                entry.pool.resume();
            }
        }
    }

    /// PAUSE db was given for this database (SHOW DATABASES `paused`; a global PAUSE shows in SHOW STATE).
    pub fn is_db_paused(&self, db: &str) -> bool {
        self.paused.lock().map(|p| p.contains(&Some(db.to_string()))).unwrap_or(false)
    }

    pub fn is_paused(&self, db: &str) -> bool {
        self.paused.lock().map(|p| p.contains(&None) || p.contains(&Some(db.to_string()))).unwrap_or(false)
    }

    /// DISABLE / ENABLE: new logins to the database are refused while disabled.
    pub fn set_disabled(&self, db: &str, disabled: bool) {
        if let Ok(mut d) = self.disabled.lock() {
            if disabled {
                d.insert(db.to_string());
            } else {
                d.remove(db);
            }
        }
    }

    pub fn is_disabled(&self, db: &str) -> bool {
        self.disabled.lock().map(|d| d.contains(db)).unwrap_or(false)
    }

    /// The pools of one database, or all of them.
    pub fn pools_of(&self, db: Option<&str>) -> Vec<(PoolKey, Arc<PoolEntry>)> {
        self.all_pools().into_iter().filter(|(k, _)| db.is_none_or(|d| k.db == d)).collect()
    }

    /// Every pool, for stats and shutdown.
    pub fn all_pools(&self) -> Vec<(PoolKey, Arc<PoolEntry>)> {
        self.pools.lock().map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default()
    }
}
