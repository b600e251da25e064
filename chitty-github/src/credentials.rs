//! The App's own credentials, as the manifest flow hands them out: App id, private key, webhook
//! secret and OAuth client credentials, kept by a [`CredentialsStore`].
//!
//! [`FileCredentialsStore`] writes one JSON file, readable by its owner only (mode 0600 on Unix),
//! atomically (a temporary file in the same directory, synced, then renamed over the old one), and
//! refuses to read a file others can read. [`MemoryCredentialsStore`] is for tests. Secrets are
//! [`SecretText`]: `Debug` redacts them, and no error or log line quotes them.
//!
//! ```
//! use chitty_github::credentials::{AppRegistration, CredentialsStore, MemoryCredentialsStore, SecretText};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = MemoryCredentialsStore::new();
//! assert!(store.load().await?.is_none());
//! let registration = AppRegistration {
//!     app_id: 7,
//!     slug: Some("my-bot".into()),
//!     name: Some("my-bot".into()),
//!     owner: Some("octo-org".into()),
//!     html_url: Some("https://github.com/apps/my-bot".into()),
//!     client_id: "Iv23liExample".into(),
//!     client_secret: SecretText::new("client-secret"),
//!     webhook_secret: Some(SecretText::new("webhook-secret")),
//!     private_key_pem: SecretText::new("-----BEGIN RSA PRIVATE KEY-----..."),
//! };
//! store.save(&registration).await?;
//! assert_eq!(store.load().await?.map(|r| r.app_id), Some(7));
//! assert!(!format!("{registration:?}").contains("webhook-secret"));
//! # Ok::<(), chitty_github::Error>(())
//! # }).unwrap();
//! ```

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::signature::WebhookSecret;

/// Text that must not be shown: `Debug` prints `<redacted>`; [`SecretText::expose_secret`] reads it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(String);

impl SecretText {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> Self {
        SecretText(text.into())
    }

    /// The text. Do not log it.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A registered App: what GitHub's manifest conversion returns, and what the App needs to run.
// Not `#[non_exhaustive]`: an App registered by hand is described with a struct literal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppRegistration {
    /// The App's numeric id (a JWT issuer).
    pub app_id: u64,
    /// The App's slug (`my-bot`), as in `https://github.com/apps/my-bot`.
    pub slug: Option<String>,
    /// The App's name.
    pub name: Option<String>,
    /// The account that owns the App.
    pub owner: Option<String>,
    /// The App's page on GitHub.
    pub html_url: Option<String>,
    /// The OAuth client id (`Iv23…`; also a JWT issuer, preferred by GitHub).
    pub client_id: String,
    /// The OAuth client secret.
    pub client_secret: SecretText,
    /// The webhook secret GitHub signs deliveries with.
    pub webhook_secret: Option<SecretText>,
    /// The App's RSA private key, PEM.
    pub private_key_pem: SecretText,
}

impl AppRegistration {
    /// The webhook secret, for the intake.
    pub fn webhook_secret(&self) -> Option<WebhookSecret> {
        self.webhook_secret.as_ref().map(|s| WebhookSecret::new(s.expose_secret()))
    }

    /// Where an account installs the App (`{html_url}/installations/new`), when GitHub gave its page.
    pub fn install_url(&self) -> Option<String> {
        self.html_url.as_ref().map(|url| format!("{}/installations/new", url.trim_end_matches('/')))
    }

    /// The credentials the App client signs its JWTs with (the client id as issuer).
    #[cfg(feature = "client")]
    pub fn app_credentials(&self) -> std::result::Result<crate::client::AppCredentials, crate::client::ClientError> {
        crate::client::AppCredentials::from_pem(self.client_id.clone(), self.private_key_pem.expose_secret().as_bytes())
    }
}

/// Keeps the App's registration. One registration per store.
#[async_trait]
pub trait CredentialsStore: Send + Sync + fmt::Debug + 'static {
    /// The registration, if one was saved.
    async fn load(&self) -> Result<Option<AppRegistration>>;

    /// Saves `registration`, replacing any earlier one.
    async fn save(&self, registration: &AppRegistration) -> Result<()>;
}

/// A registration in memory, for tests.
#[derive(Debug, Default)]
pub struct MemoryCredentialsStore {
    registration: Mutex<Option<AppRegistration>>,
}

impl MemoryCredentialsStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl CredentialsStore for MemoryCredentialsStore {
    async fn load(&self) -> Result<Option<AppRegistration>> {
        // The value is replaced whole, so a poisoned lock still holds a consistent one.
        Ok(self.registration.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    async fn save(&self, registration: &AppRegistration) -> Result<()> {
        *self.registration.lock().unwrap_or_else(|p| p.into_inner()) = Some(registration.clone());
        Ok(())
    }
}

/// Name under which the file store reports errors.
const FILE_STORE: &str = "credentials-file";

/// A registration in one JSON file, owner-only, replaced atomically.
#[derive(Debug, Clone)]
pub struct FileCredentialsStore {
    path: PathBuf,
}

impl FileCredentialsStore {
    /// A store at `path`; its directory must exist.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileCredentialsStore { path: path.into() }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn file_error(path: &Path, what: &str, error: impl fmt::Display) -> Error {
    Error::backend(FILE_STORE, format!("{what} {}: {error}", path.display()))
}

fn read_file(path: &Path) -> Result<Option<AppRegistration>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(file_error(path, "reading", error)),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(|e| file_error(path, "reading", e))?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(file_error(
                path,
                "refusing to read",
                format_args!("it holds secrets and others can read it (mode {:o}); chmod 600 it", mode & 0o777),
            ));
        }
    }
    // serde's messages can quote the text they choke on, which may be a secret: say only where.
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        file_error(
            path,
            "parsing",
            format_args!("not a registration ({:?} at line {}, column {})", e.classify(), e.line(), e.column()),
        )
    })
}

fn write_file(path: &Path, registration: &AppRegistration) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let json = serde_json::to_vec_pretty(registration)
        .map_err(|e| file_error(path, "encoding", format_args!("{:?}", e.classify())))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".chitty-credentials-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o600));
    }
    // In the same directory, so that the rename is atomic.
    let mut file = builder.tempfile_in(dir).map_err(|e| file_error(path, "creating a temporary file for", e))?;
    file.write_all(&json).map_err(|e| file_error(path, "writing", e))?;
    file.as_file().sync_all().map_err(|e| file_error(path, "syncing", e))?;
    file.persist(path).map_err(|e| file_error(path, "replacing", e.error))?;
    // The rename is durable once the directory is synced (not possible on every platform).
    if let Ok(dir) = std::fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[async_trait]
impl CredentialsStore for FileCredentialsStore {
    async fn load(&self) -> Result<Option<AppRegistration>> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || read_file(&path)).await.map_err(|e| Error::backend(FILE_STORE, e))?
    }

    async fn save(&self, registration: &AppRegistration) -> Result<()> {
        let (path, registration) = (self.path.clone(), registration.clone());
        tokio::task::spawn_blocking(move || write_file(&path, &registration))
            .await
            .map_err(|e| Error::backend(FILE_STORE, e))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(secret: &str) -> AppRegistration {
        AppRegistration {
            app_id: 1,
            slug: None,
            name: None,
            owner: None,
            html_url: Some("https://github.com/apps/x/".into()),
            client_id: "Iv1".into(),
            client_secret: SecretText::new(format!("client-{secret}")),
            webhook_secret: Some(SecretText::new(format!("hook-{secret}"))),
            private_key_pem: SecretText::new(format!("pem-{secret}")),
        }
    }

    #[tokio::test]
    async fn the_file_is_owner_only_replaced_whole_and_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCredentialsStore::new(dir.path().join("app.json"));
        assert_eq!(store.load().await.unwrap(), None);
        store.save(&registration("one")).await.unwrap();
        store.save(&registration("two")).await.unwrap();
        let loaded = store.load().await.unwrap().unwrap();
        assert_eq!(loaded.private_key_pem.expose_secret(), "pem-two");
        assert_eq!(loaded.install_url().as_deref(), Some("https://github.com/apps/x/installations/new"));
        assert!(!format!("{loaded:?}").contains("two"), "{loaded:?}");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, ["app.json"], "no temporary file is left behind");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(store.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o644)).unwrap();
            let error = store.load().await.unwrap_err().to_string();
            assert!(error.contains("chmod 600"), "{error}");
            std::fs::set_permissions(store.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        // A damaged file is an error that does not quote what it holds.
        std::fs::write(store.path(), br#"{"app_id": "pem-leak", "client_id": 1}"#).unwrap();
        let error = store.load().await.unwrap_err().to_string();
        assert!(error.contains("line 1") && !error.contains("pem-leak"), "{error}");
    }

    #[tokio::test]
    async fn a_missing_directory_is_a_clear_error() {
        let store = FileCredentialsStore::new("/nonexistent-chitty-dir/app.json");
        let error = store.save(&registration("x")).await.unwrap_err();
        assert!(matches!(error, Error::Backend { backend: FILE_STORE, .. }), "{error}");
        assert!(!error.to_string().contains("hook-x"));
    }
}
