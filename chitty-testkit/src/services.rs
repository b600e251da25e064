//! Where the machine's services are, for tests that need them, and a test harness that shows a test whose
//! service is unreachable as ignored, with the reason, instead of as passed.
//!
//! Redis, NATS and PostgreSQL are looked up at `CHITTY_TEST_REDIS_URL`, `CHITTY_TEST_NATS_URL` and
//! `CHITTY_TEST_POSTGRES_URL`, or at their default local addresses when those are unset, and probed with a TCP connect. libtest cannot ignore a test at run
//! time, so a service-backed test file sets `harness = false` in its `[[test]]` entry and lists its trials:
//!
//! ```no_run
//! use chitty_testkit::services::{self, block_on};
//!
//! async fn stores_and_reads_back(url: String) {
//!     assert!(url.starts_with("redis://"));
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     let redis = services::redis_url();
//!     services::run(vec![services::trial("stores_and_reads_back", &redis, |url| {
//!         block_on(stores_and_reads_back(url))
//!     })])
//! }
//! ```
//!
//! An ignored trial's name ends with [`UNAVAILABLE_MARKER`] and the reason, so that `cargo test` and
//! `cargo nextest run` both show why it did not run, and CI can refuse a run that lost any.

use std::fmt;
use std::future::Future;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use libtest_mimic::{Arguments, Trial};

/// The variable naming the Redis server for tests.
pub const REDIS_URL_VAR: &str = "CHITTY_TEST_REDIS_URL";
/// The Redis server tests use when [`REDIS_URL_VAR`] is unset.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379";
/// The variable naming the NATS server for tests.
pub const NATS_URL_VAR: &str = "CHITTY_TEST_NATS_URL";
/// The NATS server tests use when [`NATS_URL_VAR`] is unset.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// The variable naming the PostgreSQL database for tests.
pub const POSTGRES_URL_VAR: &str = "CHITTY_TEST_POSTGRES_URL";
/// The PostgreSQL database tests use when [`POSTGRES_URL_VAR`] is unset (trust auth, database `test`).
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// What an ignored trial's name carries before the reason it did not run.
pub const UNAVAILABLE_MARKER: &str = "[not run:";

/// How long the reachability probe waits for a TCP connection.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Why a test cannot run on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    reason: String,
}

impl Unavailable {
    /// An unavailability with this reason.
    pub fn new(reason: impl Into<String>) -> Unavailable {
        Unavailable { reason: reason.into() }
    }

    /// The reason, e.g. `Redis unreachable at 127.0.0.1:1 (set CHITTY_TEST_REDIS_URL): connection refused`.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Unavailable {}

/// The Redis URL for tests ([`REDIS_URL_VAR`], else [`DEFAULT_REDIS_URL`]) when a server answers there.
pub fn redis_url() -> Result<String, Unavailable> {
    reachable("Redis", REDIS_URL_VAR, DEFAULT_REDIS_URL, 6379)
}

/// The NATS URL for tests ([`NATS_URL_VAR`], else [`DEFAULT_NATS_URL`]) when a server answers there.
pub fn nats_url() -> Result<String, Unavailable> {
    reachable("NATS", NATS_URL_VAR, DEFAULT_NATS_URL, 4222)
}

/// The PostgreSQL URL for tests ([`POSTGRES_URL_VAR`], else [`DEFAULT_POSTGRES_URL`]) when a server answers
/// there.
pub fn postgres_url() -> Result<String, Unavailable> {
    reachable("PostgreSQL", POSTGRES_URL_VAR, DEFAULT_POSTGRES_URL, 5432)
}

/// The value of environment variable `name` when it is set and not empty, e.g. a real provider's API key.
pub fn env_var(name: &str, what: &str) -> Result<String, Unavailable> {
    std::env::var(name).ok().filter(|v| !v.is_empty()).ok_or_else(|| Unavailable::new(format!("set {name} to {what}")))
}

/// The URL in `var` (or `default`), probed with a TCP connect to its first host.
fn reachable(service: &str, var: &str, default: &str, default_port: u16) -> Result<String, Unavailable> {
    let url = std::env::var(var).ok().filter(|u| !u.is_empty()).unwrap_or_else(|| default.to_owned());
    let Some(authority) = authority(&url, default_port) else {
        // A Unix socket or a form this probe does not read: the test's own connection says what is wrong.
        return Ok(url);
    };
    let unreachable =
        |why: String| Unavailable::new(format!("{service} unreachable at {authority} (set {var}): {why}"));
    let addrs: Vec<SocketAddr> = authority.to_socket_addrs().map_err(|e| unreachable(e.to_string()))?.collect();
    let mut last = String::from("no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) {
            Ok(_) => return Ok(url),
            Err(e) => last = e.to_string(),
        }
    }
    Err(unreachable(last))
}

/// `host:port` of the first server in `url`, without credentials; `None` for a Unix socket.
fn authority(url: &str, default_port: u16) -> Option<String> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    if scheme.contains("unix") {
        return None;
    }
    let first = rest.split(',').next().unwrap_or_default();
    let host_port = first.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = host_port.rsplit_once('@').map_or(host_port, |(_, h)| h);
    if host_port.is_empty() {
        return None;
    }
    let has_port = match host_port.rfind(']') {
        Some(end) => host_port[end..].contains(':'),
        None => host_port.contains(':'),
    };
    Some(if has_port { host_port.to_owned() } else { format!("{host_port}:{default_port}") })
}

/// A trial that runs `body` with `need`'s value, or is ignored with `need`'s reason in its name.
pub fn trial<T, F>(name: &str, need: &Result<T, Unavailable>, body: F) -> Trial
where
    T: Clone + Send + 'static,
    F: FnOnce(T) + Send + 'static,
{
    match need {
        Ok(value) => {
            let value = value.clone();
            Trial::test(name, move || {
                body(value);
                Ok(())
            })
        }
        Err(unavailable) => {
            Trial::test(format!("{name} {UNAVAILABLE_MARKER} {unavailable}]"), || Ok(())).with_ignored_flag(true)
        }
    }
}

/// Runs `trials` with the command line's arguments (filters, `--list`, `--ignored`, …), as libtest would.
pub fn run(trials: Vec<Trial>) -> ExitCode {
    libtest_mimic::run(&Arguments::from_args(), trials).exit_code()
}

/// [`run`], one trial at a time: for trials that load a shared service hard enough (thousands of concurrent
/// requests) to change what a neighbour measures, such as a rate limit's timing.
pub fn run_serially(trials: Vec<Trial>) -> ExitCode {
    let mut arguments = Arguments::from_args();
    arguments.test_threads = Some(1);
    libtest_mimic::run(&arguments, trials).exit_code()
}

/// Runs `future` to the end on a current-thread runtime, as `#[tokio::test]` does.
pub fn block_on<F: Future>(future: F) -> F::Output {
    runtime(&mut tokio::runtime::Builder::new_current_thread()).block_on(future)
}

/// Runs `future` to the end on a runtime with two worker threads, as
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` does.
pub fn block_on_multi_thread<F: Future>(future: F) -> F::Output {
    runtime(tokio::runtime::Builder::new_multi_thread().worker_threads(2)).block_on(future)
}

fn runtime(builder: &mut tokio::runtime::Builder) -> tokio::runtime::Runtime {
    builder.enable_all().build().expect("a test runtime builds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_drops_credentials_paths_and_adds_the_default_port() {
        assert_eq!(authority("redis://127.0.0.1:6379", 1).as_deref(), Some("127.0.0.1:6379"));
        assert_eq!(authority("redis://user:pw@cache.internal/3", 6379).as_deref(), Some("cache.internal:6379"));
        assert_eq!(authority("nats://a:4222,nats://b:4222", 1).as_deref(), Some("a:4222"));
        assert_eq!(authority("redis://[::1]/0", 6379).as_deref(), Some("[::1]:6379"));
        assert_eq!(authority("redis://[::1]:7000", 6379).as_deref(), Some("[::1]:7000"));
        assert_eq!(authority("redis+unix:///tmp/redis.sock", 6379), None);
        assert_eq!(authority("postgres://postgres:pw@db:6543/test", 5432).as_deref(), Some("db:6543"));
        assert_eq!(authority("postgres://postgres@127.0.0.1/test", 5432).as_deref(), Some("127.0.0.1:5432"));
        // A socket directory in the query: nothing to probe over TCP.
        assert_eq!(authority("postgresql:///test?host=/var/run/postgresql", 5432), None);
    }

    #[test]
    fn an_unreachable_service_names_the_address_and_the_variable() {
        let err = reachable("Redis", "CHITTY_TEST_UNSET_FOR_THIS_TEST", "redis://u:secret@127.0.0.1:1/0", 6379)
            .expect_err("nothing listens on port 1");
        assert!(err.reason().starts_with("Redis unreachable at 127.0.0.1:1 (set CHITTY_TEST_UNSET_FOR_THIS_TEST)"));
        assert!(!err.reason().contains("secret"), "{err}");
    }

    #[test]
    fn an_unavailable_need_makes_an_ignored_trial_that_says_why() {
        let need: Result<String, Unavailable> = Err(Unavailable::new("set X to test Y"));
        let t = trial("talks_to_y", &need, |_| panic!("must not run"));
        assert!(t.has_ignored_flag());
        assert_eq!(t.name(), "talks_to_y [not run: set X to test Y]");
        let t = trial("talks_to_y", &Ok::<_, Unavailable>(()), |()| {});
        assert!(!t.has_ignored_flag());
        assert_eq!(t.name(), "talks_to_y");
    }
}
