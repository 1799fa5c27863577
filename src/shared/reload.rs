//! Reading the config and its files again (RELOAD, SIGHUP, the console's SET) and making them the
//! running ones: pools whose server changed are rebuilt, the rest take the new settings.

use std::sync::Arc;

use super::Shared;
use crate::auth::hba::HbaFiles;
use crate::config::Config;
use crate::config::auth_file::AuthFile;
use crate::pool::Limits;
use crate::transport::TlsSetup;

/// What RELOAD changed.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Settings that changed but only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
    /// Pools rebuilt because their server changed (or removed with their database entry).
    pub rebuilt: usize,
}

/// What the config's files hold, read together: the auth file, the TLS keys and certificates, and
/// the HBA and ident files. Loaded whole or not at all (startup, RELOAD, SET).
pub struct Files {
    pub auth: AuthFile,
    pub tls: TlsSetup,
    pub hba: Option<Arc<HbaFiles>>,
}

impl Files {
    pub fn load(config: &Config) -> Result<Files, String> {
        let g = &config.general;
        let auth = config.load_auth_file().map_err(|e| e.to_string())?;
        let tls = TlsSetup::load(g).map_err(|e| e.to_string())?;
        let hba = match &g.auth_hba_file {
            Some(p) => Some(Arc::new(HbaFiles::load(p, g.auth_ident_file.as_deref())?)),
            None => None,
        };
        Ok(Files { auth, tls, hba })
    }
}

impl Shared {
    /// RELOAD / SIGHUP: re-reads the config file and the auth file. An invalid new config is rejected
    /// and the running one stays. Pools whose server changed are rebuilt (idle servers closed now, busy
    /// ones when released); the others keep their connections and take new limits at once.
    /// Returns the changed settings that only a restart applies; a bad file is logged and returned.
    pub fn reload(&self) -> Result<Vec<&'static str>, String> {
        match self.read_config_files() {
            Ok(report) => {
                for key in &report.needs_restart {
                    tracing::warn!(setting = key, "changed setting needs a restart to take effect");
                }
                tracing::info!(rebuilt_pools = report.rebuilt, "configuration reloaded");
                Ok(report.needs_restart)
            }
            Err(e) => {
                tracing::error!(error = %e, "reload failed, keeping the running configuration");
                Err(e.to_string())
            }
        }
    }

    /// The config and every file it names read again; all or nothing.
    fn read_config_files(&self) -> Result<ReloadReport, String> {
        let old = self.config();
        let new = if old.from_pgbouncer_ini {
            Config::load_pgbouncer_ini(&old.path).map(|(c, _)| c)
        } else {
            Config::load(&old.path)
        };
        let new = new.map_err(|e| e.to_string())?;
        for warning in new.warnings() {
            tracing::warn!(%warning, "configuration");
        }
        let files = Files::load(&new)?;
        Ok(self.apply(new, files))
    }

    /// Makes `new` the running config (RELOAD, SET): see `reload`.
    pub fn apply(&self, mut new: Config, files: Files) -> ReloadReport {
        let Files { auth, tls, hba } = files;
        let old = self.config();
        // Settings read only at startup keep their running values (so SHOW CONFIG shows what is in
        // effect); the change is reported as needing a restart.
        let mut report =
            ReloadReport { needs_restart: old.general.keep_restart_only(&mut new.general), ..Default::default() };
        let new = Arc::new(new);
        if let Ok(mut c) = self.config.write() {
            *c = new.clone();
        }
        // Cancels forwarded from now on go to the new `[peers]`.
        self.cancel.update_peers(&new);
        // New handshakes use the new files; open connections keep theirs. A changed server-side TLS
        // setting closes every server once released, as PgBouncer does, so none stays on the old terms.
        self.tls.replace(tls);
        if let Ok(mut h) = self.hba.write() {
            *h = hba;
        }
        if old.general.server_tls_settings() != new.general.server_tls_settings() {
            tracing::info!("server TLS settings changed: reconnecting every server");
            self.reconnect(None);
        }
        if let Ok(mut a) = self.auth.write() {
            *a = Arc::new(auth);
        }
        if let Ok(mut c) = self.credentials.lock() {
            c.clear(); // passwords may have changed; pools being kept hold their own cells
        }
        for (key, entry) in self.all_pools() {
            match new.pool_settings(&key.db, &key.user) {
                Some(s) if s.server == entry.settings().server => {
                    let server_user = s.server.user.clone().unwrap_or_else(|| key.user.clone());
                    Self::limit(&self.db_limits, &key.db, s.max_db_connections);
                    Self::limit(&self.user_limits, &server_user, s.max_user_connections);
                    entry.pool.set_limits(Limits::from_settings(&s));
                    entry.set_settings(s);
                }
                _ => {
                    if let Ok(mut pools) = self.pools.lock() {
                        pools.remove(&key);
                    }
                    // Its clients move to the new pool at their next transaction.
                    if let Ok(next) = self.pool(&key.db, &key.user) {
                        let _ = entry.successor.set(next);
                    }
                    entry.pool.shut();
                    // Its servers still open are closed as soon as their transactions end.
                    let server_user = entry.pool.connector().user.clone();
                    for s in self.server_registry.list() {
                        if s.db == key.db && s.user == server_user {
                            s.mark_close_needed();
                        }
                    }
                    report.rebuilt += 1;
                }
            }
        }
        report
    }
}
