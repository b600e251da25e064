//! A verified webhook delivery as it travels through a queue, and its de-duplication key.
//!
//! A [`Delivery`] becomes a [`Message`] (subject `github.<event>`, the JSON payload,
//! the GitHub headers) for any [`crate::queue::DeliveryQueue`], and comes back with
//! [`Delivery::from_message`] on the consumer side.
//!
//! ```
//! use bytes::Bytes;
//! use chitty_core::Timestamp;
//! use chitty_github::delivery::Delivery;
//!
//! let delivery = Delivery {
//!     id: "72d3162e-cc78-11e3-81ab-4c9367dc0958".into(),
//!     event: "ping".into(),
//!     action: None,
//!     hook_id: Some("12345678".into()),
//!     target_type: Some("repository".into()),
//!     target_id: Some("35129377".into()),
//!     payload: Bytes::from_static(br#"{"zen":"Design for failure."}"#),
//!     received_at: Timestamp(1_700_000_000_000),
//! };
//! assert_eq!(delivery.dedup_key(), "72d3162e-cc78-11e3-81ab-4c9367dc0958:hook:12345678");
//! let back = Delivery::from_message(&delivery.clone().into_message())?;
//! assert_eq!(back, delivery);
//! # Ok::<(), chitty_github::Error>(())
//! ```

use bytes::Bytes;
use chitty_core::Timestamp;

use crate::error::{Error, Result};
use crate::queue::Message;

/// `X-GitHub-Event`: the event name (`push`, `pull_request`, …).
pub const HEADER_EVENT: &str = "x-github-event";
/// `X-GitHub-Delivery`: the delivery GUID, kept on redelivery.
pub const HEADER_DELIVERY: &str = "x-github-delivery";
/// `X-GitHub-Hook-ID`: the webhook's id.
pub const HEADER_HOOK_ID: &str = "x-github-hook-id";
/// `X-GitHub-Hook-Installation-Target-Type`: `repository`, `organization`, `integration` (an App), ….
pub const HEADER_TARGET_TYPE: &str = "x-github-hook-installation-target-type";
/// `X-GitHub-Hook-Installation-Target-ID`: the id of the repository, organization or App.
pub const HEADER_TARGET_ID: &str = "x-github-hook-installation-target-id";
/// `X-Hub-Signature-256`: `sha256=` and the HMAC-SHA256 of the body.
pub const HEADER_SIGNATURE: &str = "x-hub-signature-256";
/// The payload's `action`, carried along so consumers can route without parsing the body.
pub const HEADER_ACTION: &str = "x-chitty-action";

/// Subject prefix of delivery messages (`github.push`, `github.pull_request`, …).
pub const SUBJECT_PREFIX: &str = "github.";

/// One verified webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// `X-GitHub-Delivery`: the GUID; GitHub keeps it on redelivery and reuses it across hooks.
    pub id: String,
    /// `X-GitHub-Event`.
    pub event: String,
    /// The payload's `action` field, when it has one.
    pub action: Option<String>,
    /// `X-GitHub-Hook-ID`.
    pub hook_id: Option<String>,
    /// `X-GitHub-Hook-Installation-Target-Type`.
    pub target_type: Option<String>,
    /// `X-GitHub-Hook-Installation-Target-ID`.
    pub target_id: Option<String>,
    /// The JSON payload (already extracted from the form body when GitHub sent a form).
    pub payload: Bytes,
    /// When the intake accepted it.
    pub received_at: Timestamp,
}

impl Delivery {
    /// The de-duplication key: the GUID with the hook id, else the installation target, since
    /// GitHub reuses one GUID for the same event sent to several hooks.
    pub fn dedup_key(&self) -> String {
        dedup_key(&self.id, self.hook_id.as_deref(), self.target_type.as_deref(), self.target_id.as_deref())
    }

    /// `event.action` when the payload has an action, else the event name.
    pub fn route(&self) -> String {
        match &self.action {
            Some(action) => format!("{}.{}", self.event, action),
            None => self.event.clone(),
        }
    }

    /// The queue message for this delivery.
    pub fn into_message(self) -> Message {
        let id = self.dedup_key();
        let mut headers = Vec::with_capacity(6);
        headers.push((HEADER_EVENT.to_owned(), self.event.clone()));
        headers.push((HEADER_DELIVERY.to_owned(), self.id));
        let optional = [
            (HEADER_ACTION, self.action),
            (HEADER_HOOK_ID, self.hook_id),
            (HEADER_TARGET_TYPE, self.target_type),
            (HEADER_TARGET_ID, self.target_id),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                headers.push((name.to_owned(), value));
            }
        }
        Message {
            subject: format!("{SUBJECT_PREFIX}{}", self.event),
            id,
            headers,
            payload: self.payload,
            received_at: self.received_at,
        }
    }

    /// The delivery a queue message carries. Fails when the GitHub headers are missing.
    pub fn from_message(message: &Message) -> Result<Self> {
        let header = |name: &str| message_header(message, name).map(str::to_owned);
        Ok(Delivery {
            id: header(HEADER_DELIVERY).ok_or(Error::MissingHeader { name: "X-GitHub-Delivery" })?,
            event: header(HEADER_EVENT).ok_or(Error::MissingHeader { name: "X-GitHub-Event" })?,
            action: header(HEADER_ACTION),
            hook_id: header(HEADER_HOOK_ID),
            target_type: header(HEADER_TARGET_TYPE),
            target_id: header(HEADER_TARGET_ID),
            payload: message.payload.clone(),
            received_at: message.received_at,
        })
    }
}

/// The value of header `name` (any case) on a queue message.
pub(crate) fn message_header<'m>(message: &'m Message, name: &str) -> Option<&'m str> {
    message.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
}

/// The de-duplication key for a delivery GUID and the hook (or installation target) that sent it.
pub fn dedup_key(delivery: &str, hook_id: Option<&str>, target_type: Option<&str>, target_id: Option<&str>) -> String {
    match (hook_id, target_type, target_id) {
        (Some(hook), _, _) => format!("{delivery}:hook:{hook}"),
        (None, Some(kind), Some(id)) => format!("{delivery}:{kind}:{id}"),
        (None, None, Some(id)) => format!("{delivery}:target:{id}"),
        _ => delivery.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_guid_on_two_hooks_gives_two_keys() {
        let a = dedup_key("guid", Some("1"), None, None);
        let b = dedup_key("guid", Some("2"), None, None);
        assert_ne!(a, b);
        assert_eq!(dedup_key("guid", None, Some("integration"), Some("42")), "guid:integration:42");
        assert_eq!(dedup_key("guid", None, None, None), "guid");
    }

    #[test]
    fn message_without_github_headers_is_an_error() {
        let message = Message {
            subject: "github.push".into(),
            id: "x".into(),
            headers: vec![],
            payload: Bytes::new(),
            received_at: Timestamp(0),
        };
        assert!(matches!(Delivery::from_message(&message), Err(Error::MissingHeader { .. })));
    }
}
