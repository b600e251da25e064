//! The GitHub App manifest: what the App asks for when it is registered, by the manifest flow
//! (`setup`, features `server` and `client`) or by hand from `chitty-github/app-manifest.json`.
//!
//! The paths of the install flow are a contract with the host's reverse proxy and with GitHub's
//! App settings, so they are constants: [`SETUP_PATH`], [`SETUP_CALLBACK_PATH`] and
//! [`INSTALL_CALLBACK_PATH`].
//!
//! ```
//! use chitty_github::manifest::AppManifest;
//!
//! let manifest = AppManifest::new("my-review-bot", "https://bot.example.com/");
//! assert_eq!(manifest.hook_attributes.url, "https://bot.example.com/api/github/webhooks");
//! assert_eq!(manifest.redirect_url, "https://bot.example.com/github/setup/callback");
//! assert_eq!(manifest.default_permissions["pull_requests"], "write");
//! assert!(manifest.default_events.iter().any(|e| e == "pull_request"));
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The page that starts the manifest flow.
pub const SETUP_PATH: &str = "/github/setup";
/// Where GitHub sends the browser back with the manifest `code` (the manifest's `redirect_url`).
pub const SETUP_CALLBACK_PATH: &str = "/github/setup/callback";
/// Where GitHub sends the browser after an installation (the manifest's `setup_url`).
pub const INSTALL_CALLBACK_PATH: &str = "/github/callback";
/// Where the App's webhook deliveries go unless configured otherwise.
pub const DEFAULT_WEBHOOK_PATH: &str = "/api/github/webhooks";

/// The permissions the App asks for: read code, review pull requests, triage issues, report checks.
pub const DEFAULT_PERMISSIONS: [(&str, &str); 5] =
    [("checks", "write"), ("contents", "read"), ("issues", "write"), ("metadata", "read"), ("pull_requests", "write")];

/// The events the App subscribes to.
pub const DEFAULT_EVENTS: [&str; 4] = ["issue_comment", "issues", "pull_request", "push"];

/// Events GitHub delivers to every App without a subscription; a manifest that lists them in
/// `default_events` is refused by GitHub ("Default events unsupported: installation").
pub const AUTOMATIC_EVENTS: [&str; 2] = ["installation", "installation_repositories"];

/// The App's webhook, in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookAttributes {
    /// Where GitHub posts deliveries.
    pub url: String,
    /// Whether deliveries are sent.
    pub active: bool,
}

/// A GitHub App manifest, as GitHub's manifest flow reads it
/// (<https://docs.github.com/apps/sharing-github-apps/registering-a-github-app-from-a-manifest>).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AppManifest {
    /// The App's name (unique on GitHub, at most 34 characters).
    pub name: String,
    /// The App's home page.
    pub url: String,
    /// What the App does, shown on its page.
    pub description: String,
    /// The webhook.
    pub hook_attributes: HookAttributes,
    /// Where GitHub sends the browser with the `code` once the App is created.
    pub redirect_url: String,
    /// Where GitHub sends the browser after an installation, with `installation_id` and `setup_action`.
    pub setup_url: String,
    /// Whether GitHub also redirects to `setup_url` after an installation is updated.
    pub setup_on_update: bool,
    /// Whether any account may install the App (`false`: only its owner).
    pub public: bool,
    /// Permissions by name (`pull_requests` → `write`).
    pub default_permissions: BTreeMap<String, String>,
    /// Subscribed events.
    pub default_events: Vec<String>,
    /// Whether installing also asks the user to authorise the App (OAuth); the flow here does not need it.
    pub request_oauth_on_install: bool,
}

impl AppManifest {
    /// The manifest of an App named `name` served at `public_url` (the address GitHub reaches it
    /// at, e.g. `https://bot.example.com`), with the webhook at [`DEFAULT_WEBHOOK_PATH`].
    pub fn new(name: impl Into<String>, public_url: &str) -> Self {
        let root = public_url.trim_end_matches('/');
        AppManifest {
            name: name.into(),
            url: root.to_owned(),
            description: "Reviews pull requests, triages issues and checks pushes (chitty).".to_owned(),
            hook_attributes: HookAttributes { url: format!("{root}{DEFAULT_WEBHOOK_PATH}"), active: true },
            redirect_url: format!("{root}{SETUP_CALLBACK_PATH}"),
            setup_url: format!("{root}{INSTALL_CALLBACK_PATH}"),
            setup_on_update: true,
            public: false,
            default_permissions: DEFAULT_PERMISSIONS.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            default_events: DEFAULT_EVENTS.iter().map(|e| (*e).to_owned()).collect(),
            request_oauth_on_install: false,
        }
    }

    /// Sets the webhook URL (for a webhook path other than [`DEFAULT_WEBHOOK_PATH`]).
    pub fn with_webhook_url(mut self, url: impl Into<String>) -> Self {
        self.hook_attributes.url = url.into();
        self
    }

    /// Sets the description.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// The events the App receives: those subscribed and those GitHub sends every App.
    pub fn received_events(&self) -> Vec<String> {
        let mut events = self.default_events.clone();
        events.extend(AUTOMATIC_EVENTS.iter().map(|e| (*e).to_owned()));
        events.sort();
        events.dedup();
        events
    }

    /// The manifest as the JSON GitHub reads.
    pub fn to_json(&self) -> String {
        // A struct of strings, bools and string maps always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_file_for_registering_by_hand_is_the_one_the_code_posts() {
        let file: serde_json::Value = serde_json::from_str(include_str!("../app-manifest.json")).unwrap();
        let code = serde_json::to_value(AppManifest::new("chitty", "https://chitty.example.com")).unwrap();
        assert_eq!(file, code, "update chitty-github/app-manifest.json with the manifest's changes");
    }

    #[test]
    fn the_automatic_events_are_never_subscribed() {
        let manifest = AppManifest::new("x", "https://x.example.com");
        for event in AUTOMATIC_EVENTS {
            assert!(!manifest.default_events.iter().any(|e| e == event), "{event}");
            assert!(manifest.received_events().iter().any(|e| e == event), "{event}");
        }
        let json: serde_json::Value = serde_json::from_str(&manifest.to_json()).unwrap();
        assert_eq!(json["hook_attributes"]["url"], "https://x.example.com/api/github/webhooks");
        assert_eq!(json["default_permissions"]["metadata"], "read");
    }
}
