//! The semantic cache's index: on an exact-cache miss, the nearest earlier prompt of the same tenant and
//! the same [`PartitionKey`] (model, parameters, tools, and the conversation before the last user message),
//! by cosine similarity of their embeddings, answers when it is at least the model's threshold.
//!
//! In process and flat: each (tenant, partition) keeps its unit vectors end to end and a lookup is one
//! matrix-vector product over them (ndarray). Entries expire (TTL from a `now` the caller passes) and memory
//! is bounded by a cap on entries per tenant and overall, evicting the least recently used. Memory is about
//! `entries × dims × 4` bytes plus ~150 bytes of bookkeeping per entry (10,000 entries of 1,536 dimensions:
//! 62 MB). Not synchronised: hold it behind a lock.
//!
//! Which requests may use it is [`semantic_refusal`]'s call: never with tools, `n > 1`, a temperature
//! above the configured bound, or `Cache-Control: no-store`.
//!
//! ```
//! use std::time::Duration;
//! use chitty_core::semantic::{PartitionKey, SemanticIndex, SemanticIndexConfig};
//! use chitty_core::Timestamp;
//!
//! let mut index = SemanticIndex::new(SemanticIndexConfig { dims: 3, max_entries: 1_000, max_entries_per_tenant: 100 });
//! let partition = PartitionKey([7; 16]);
//! let now = Timestamp(1_000);
//! // The value is whatever finds the stored answer again, e.g. the exact cache's key.
//! index.insert("acme", partition, &[0.9, 0.1, 0.0], "answer-1", now, Duration::from_secs(60))?;
//!
//! let hit = index.lookup("acme", partition, &[0.88, 0.12, 0.01], 0.95, now)?.expect("a paraphrase");
//! assert_eq!(hit.value, "answer-1");
//! assert!(hit.similarity > 0.99);
//! assert!(index.lookup("globex", partition, &[0.9, 0.1, 0.0], 0.95, now)?.is_none(), "tenants never share");
//! # Ok::<(), chitty_core::embedding::EmbeddingError>(())
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::embedding::{EmbeddingError, cosine_scores, unit_vector};
use crate::keys::{CacheDirective, CacheScope, chat_key};
use crate::time::Timestamp;
use crate::wire::{ChatCompletionRequest, Role};

/// What else a cached answer depends on besides the embedded prompt: entries are only compared within one
/// partition. Opaque 16 bytes; [`PartitionKey::of_chat`] derives it from a chat request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey(pub [u8; 16]);

impl PartitionKey {
    /// The partition of a chat request: its model, every parameter the exact cache keys on (tools, response
    /// format, sampling …), and every message except the last user message, which is the text embedded.
    /// So a paraphrased question matches only under the same system prompt and the same earlier turns.
    pub fn of_chat(request: &ChatCompletionRequest) -> PartitionKey {
        let mut context = request.clone();
        if let Some(last) = context.messages.iter().rposition(|m| m.role == Role::User) {
            context.messages.remove(last);
        }
        // The exact cache's canonical encoding, under a scope no tenant can name (tenants have their own maps).
        let key = chat_key(CacheScope::Shared("\u{0}semantic-partition"), &context);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&key.0[..16]);
        PartitionKey(bytes)
    }
}

/// Why a request does not use the semantic cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SemanticRefusal {
    /// The request offers tools: a near match could call a different tool with different arguments.
    Tools,
    /// More than one choice asked for.
    SeveralChoices,
    /// Sampling temperature above the configured bound: the client wants variety.
    Temperature,
    /// `Cache-Control: no-store` (or `no-cache`): the client asked for a fresh answer.
    ClientDirective,
    /// No user message to embed.
    NoUserMessage,
}

impl SemanticRefusal {
    /// A short machine-readable label.
    pub fn label(self) -> &'static str {
        match self {
            SemanticRefusal::Tools => "tools",
            SemanticRefusal::SeveralChoices => "n",
            SemanticRefusal::Temperature => "temperature",
            SemanticRefusal::ClientDirective => "cache_control",
            SemanticRefusal::NoUserMessage => "no_user_message",
        }
    }
}

/// Why `request` must not be answered from (or stored in) the semantic cache, if it must not. A missing
/// temperature counts as 1 (the OpenAI default).
pub fn semantic_refusal(
    request: &ChatCompletionRequest,
    max_temperature: f64,
    directive: CacheDirective,
) -> Option<SemanticRefusal> {
    if directive != CacheDirective::Default {
        return Some(SemanticRefusal::ClientDirective);
    }
    if request.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Some(SemanticRefusal::Tools);
    }
    if request.n.unwrap_or(1) > 1 {
        return Some(SemanticRefusal::SeveralChoices);
    }
    if request.temperature.unwrap_or(1.0) > max_temperature {
        return Some(SemanticRefusal::Temperature);
    }
    if !request.messages.iter().any(|m| m.role == Role::User) {
        return Some(SemanticRefusal::NoUserMessage);
    }
    None
}

/// Bounds of a [`SemanticIndex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SemanticIndexConfig {
    /// The embedding model's dimensions.
    pub dims: usize,
    /// Most entries in all.
    pub max_entries: usize,
    /// Most entries of one tenant.
    pub max_entries_per_tenant: usize,
}

/// The best match of a lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticHit<V> {
    /// What was stored with the matching prompt.
    pub value: V,
    /// Cosine similarity of the two prompts' embeddings (for `x-chitty-cache-similarity`).
    pub similarity: f32,
}

type EntryId = u64;

/// One partition's vectors, end to end, with the entry of each row.
#[derive(Debug, Default)]
struct Shard {
    vectors: Vec<f32>,
    ids: Vec<EntryId>,
    expires: Vec<Timestamp>,
}

#[derive(Debug, Default)]
struct TenantEntries {
    shards: HashMap<PartitionKey, Shard>,
    /// Last use → entry, oldest first.
    recency: BTreeMap<u64, EntryId>,
}

#[derive(Debug)]
struct Entry<V> {
    tenant: Arc<str>,
    partition: PartitionKey,
    row: usize,
    expires_at: Timestamp,
    last_used: u64,
    value: V,
}

/// An in-process, per-tenant, partitioned nearest-neighbour index with TTLs and LRU bounds.
#[derive(Debug)]
pub struct SemanticIndex<V> {
    config: SemanticIndexConfig,
    tenants: HashMap<Arc<str>, TenantEntries>,
    entries: HashMap<EntryId, Entry<V>>,
    /// Last use → entry, oldest first, across tenants.
    recency: BTreeMap<u64, EntryId>,
    expiry: BTreeSet<(Timestamp, EntryId)>,
    next_id: EntryId,
    clock: u64,
}

impl<V: Clone> SemanticIndex<V> {
    /// An empty index.
    pub fn new(config: SemanticIndexConfig) -> SemanticIndex<V> {
        SemanticIndex {
            config,
            tenants: HashMap::new(),
            entries: HashMap::new(),
            recency: BTreeMap::new(),
            expiry: BTreeSet::new(),
            next_id: 0,
            clock: 0,
        }
    }

    /// The bounds.
    pub fn config(&self) -> SemanticIndexConfig {
        self.config
    }

    /// Entries held (expired ones included until the next insert or lookup removes them).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries held for `tenant`.
    pub fn tenant_len(&self, tenant: &str) -> usize {
        self.tenants.get(tenant).map_or(0, |t| t.recency.len())
    }

    /// Stores `embedding` with `value` for `tenant` in `partition`, until `now + ttl`. Makes room first:
    /// expired entries go, then the tenant's least recently used entry if the tenant is at its cap, then the
    /// least recently used entry overall if the index is. With a cap of zero nothing is stored.
    pub fn insert(
        &mut self,
        tenant: &str,
        partition: PartitionKey,
        embedding: &[f32],
        value: V,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<(), EmbeddingError> {
        let unit = unit_vector(embedding, self.config.dims)?;
        if self.config.max_entries == 0 || self.config.max_entries_per_tenant == 0 {
            return Ok(());
        }
        self.purge_expired(now);
        while self.tenant_len(tenant) >= self.config.max_entries_per_tenant {
            let Some(&oldest) = self.tenants.get(tenant).and_then(|t| t.recency.values().next()) else { break };
            self.remove(oldest);
        }
        while self.entries.len() >= self.config.max_entries {
            let Some(&oldest) = self.recency.values().next() else { break };
            self.remove(oldest);
        }
        let (id, tick) = (self.next_id, self.tick());
        self.next_id += 1;
        let expires_at = now.plus(ttl);
        let tenant: Arc<str> = match self.tenants.get_key_value(tenant) {
            Some((name, _)) => name.clone(),
            None => tenant.into(),
        };
        let entries = self.tenants.entry(tenant.clone()).or_default();
        entries.recency.insert(tick, id);
        let shard = entries.shards.entry(partition).or_default();
        let row = shard.ids.len();
        shard.vectors.extend_from_slice(&unit);
        shard.ids.push(id);
        shard.expires.push(expires_at);
        self.recency.insert(tick, id);
        self.expiry.insert((expires_at, id));
        self.entries.insert(id, Entry { tenant, partition, row, expires_at, last_used: tick, value });
        Ok(())
    }

    /// The most similar unexpired entry of `tenant` in `partition`, if its similarity is at least
    /// `threshold`; a hit counts as a use for the LRU order.
    pub fn lookup(
        &mut self,
        tenant: &str,
        partition: PartitionKey,
        query: &[f32],
        threshold: f32,
        now: Timestamp,
    ) -> Result<Option<SemanticHit<V>>, EmbeddingError> {
        self.purge_expired(now);
        let Some(shard) = self.tenants.get(tenant).and_then(|t| t.shards.get(&partition)) else {
            // Still check the query, so a caller learns of a dimension mismatch on an empty index too.
            unit_vector(query, self.config.dims)?;
            return Ok(None);
        };
        let scores = cosine_scores(&shard.vectors, self.config.dims, query)?;
        let best = scores
            .iter()
            .enumerate()
            .filter(|&(row, _)| shard.expires[row] > now)
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(row, &similarity)| (shard.ids[row], similarity));
        let Some((id, similarity)) = best.filter(|&(_, s)| s >= threshold) else { return Ok(None) };
        self.touch(id);
        Ok(self.entries.get(&id).map(|e| SemanticHit { value: e.value.clone(), similarity }))
    }

    /// Removes every entry that has expired by `now`.
    pub fn purge_expired(&mut self, now: Timestamp) {
        while let Some(&(expires_at, id)) = self.expiry.first() {
            if expires_at > now {
                break;
            }
            self.remove(id);
        }
    }

    /// Removes every entry of `tenant` (a tenant deleted, or its cache cleared).
    pub fn remove_tenant(&mut self, tenant: &str) {
        let ids: Vec<EntryId> =
            self.tenants.get(tenant).map(|t| t.recency.values().copied().collect()).unwrap_or_default();
        for id in ids {
            self.remove(id);
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Marks entry `id` as just used.
    fn touch(&mut self, id: EntryId) {
        let tick = self.tick();
        let Some(entry) = self.entries.get_mut(&id) else { return };
        let before = std::mem::replace(&mut entry.last_used, tick);
        self.recency.remove(&before);
        self.recency.insert(tick, id);
        if let Some(t) = self.tenants.get_mut(&entry.tenant) {
            t.recency.remove(&before);
            t.recency.insert(tick, id);
        }
    }

    /// Removes entry `id` from every structure; the shard's last row moves into its place.
    fn remove(&mut self, id: EntryId) {
        let Some(entry) = self.entries.remove(&id) else { return };
        self.recency.remove(&entry.last_used);
        self.expiry.remove(&(entry.expires_at, id));
        let Some(tenant) = self.tenants.get_mut(&entry.tenant) else { return };
        tenant.recency.remove(&entry.last_used);
        if let Some(shard) = tenant.shards.get_mut(&entry.partition) {
            let dims = self.config.dims;
            // The entry's row is in this shard, so it is not empty; a miss would be a bookkeeping bug.
            let Some(last) = shard.ids.len().checked_sub(1) else { return };
            if entry.row != last {
                shard.vectors.copy_within(last * dims..(last + 1) * dims, entry.row * dims);
                let moved = shard.ids[last];
                if let Some(m) = self.entries.get_mut(&moved) {
                    m.row = entry.row;
                }
            }
            shard.vectors.truncate(last * dims);
            shard.ids.swap_remove(entry.row);
            shard.expires.swap_remove(entry.row);
            if shard.ids.is_empty() {
                tenant.shards.remove(&entry.partition);
            }
        }
        if tenant.recency.is_empty() {
            self.tenants.remove(&entry.tenant);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::time::{RandomSource, SeededRandom};

    const T0: Timestamp = Timestamp(1_700_000_000_000);
    const HOUR: Duration = Duration::from_secs(3_600);
    const P: PartitionKey = PartitionKey([1; 16]);
    const Q: PartitionKey = PartitionKey([2; 16]);

    fn index(max_entries: usize, per_tenant: usize) -> SemanticIndex<u32> {
        SemanticIndex::new(SemanticIndexConfig { dims: 2, max_entries, max_entries_per_tenant: per_tenant })
    }

    /// A unit vector at `degrees` in the plane.
    fn at(degrees: f32) -> [f32; 2] {
        let r = degrees.to_radians();
        [r.cos(), r.sin()]
    }

    fn value(i: &mut SemanticIndex<u32>, tenant: &str, p: PartitionKey, q: [f32; 2], now: Timestamp) -> Option<u32> {
        i.lookup(tenant, p, &q, 0.95, now).unwrap().map(|h| h.value)
    }

    #[test]
    fn tenants_and_partitions_are_isolated() {
        let mut i = index(100, 100);
        i.insert("acme", P, &at(0.0), 1, T0, HOUR).unwrap();
        i.insert("globex", Q, &at(0.0), 2, T0, HOUR).unwrap();
        assert_eq!(value(&mut i, "acme", P, at(1.0), T0), Some(1));
        assert_eq!(value(&mut i, "acme", Q, at(0.0), T0), None, "same tenant, other model or parameters");
        assert_eq!(value(&mut i, "globex", P, at(0.0), T0), None, "same partition, other tenant");
        assert_eq!(value(&mut i, "globex", Q, at(0.0), T0), Some(2));
        assert_eq!(value(&mut i, "initech", P, at(0.0), T0), None);
    }

    #[test]
    fn the_threshold_decides_and_the_best_match_wins() {
        let mut i = index(100, 100);
        i.insert("acme", P, &at(0.0), 1, T0, HOUR).unwrap();
        i.insert("acme", P, &at(30.0), 2, T0, HOUR).unwrap();
        let hit = i.lookup("acme", P, &at(25.0), 0.9, T0).unwrap().unwrap();
        assert_eq!(hit.value, 2);
        assert!((hit.similarity - 5f32.to_radians().cos()).abs() < 1e-5, "{}", hit.similarity);
        assert!(i.lookup("acme", P, &at(15.0), 0.97, T0).unwrap().is_none(), "cos 15° = 0.966 < 0.97");
        assert!(i.lookup("acme", P, &at(15.0), 0.96, T0).unwrap().is_some());
        let scaled = [at(29.0)[0] * 40.0, at(29.0)[1] * 40.0];
        assert_eq!(i.lookup("acme", P, &scaled, 0.99, T0).unwrap().map(|h| h.value), Some(2), "length is ignored");
        assert_eq!(
            i.lookup("acme", P, &[1.0, 0.0, 0.0], 0.9, T0),
            Err(EmbeddingError::Dimensions { expected: 2, found: 3 })
        );
        assert_eq!(i.lookup("nobody", P, &[1.0], 0.9, T0), Err(EmbeddingError::Dimensions { expected: 2, found: 1 }));
        assert_eq!(i.insert("acme", P, &[0.0, 0.0], 3, T0, HOUR), Err(EmbeddingError::Zero));
        assert_eq!(i.len(), 2);
    }

    #[test]
    fn entries_expire() {
        let mut i = index(100, 100);
        i.insert("acme", P, &at(0.0), 1, T0, Duration::from_secs(60)).unwrap();
        i.insert("acme", P, &at(90.0), 2, T0, HOUR).unwrap();
        let t = |s: u64| T0.plus(Duration::from_secs(s));
        assert_eq!(value(&mut i, "acme", P, at(0.0), t(59)), Some(1));
        assert_eq!(value(&mut i, "acme", P, at(0.0), t(60)), None, "expired at its TTL");
        assert_eq!(i.len(), 1, "and removed");
        assert_eq!(value(&mut i, "acme", P, at(90.0), t(60)), Some(2), "the moved row is still found");
        i.purge_expired(t(3_600));
        assert!(i.is_empty());
        assert_eq!(i.tenant_len("acme"), 0);
    }

    #[test]
    fn a_tenant_at_its_cap_evicts_its_own_least_recently_used() {
        let mut i = index(100, 3);
        for (n, deg) in [(1, 0.0), (2, 30.0), (3, 60.0)] {
            i.insert("acme", P, &at(deg), n, T0, HOUR).unwrap();
        }
        i.insert("globex", P, &at(0.0), 9, T0, HOUR).unwrap();
        assert_eq!(value(&mut i, "acme", P, at(0.0), T0), Some(1), "entry 1 is now the most recently used");
        i.insert("acme", Q, &at(90.0), 4, T0, HOUR).unwrap();
        assert_eq!(i.tenant_len("acme"), 3);
        assert_eq!(value(&mut i, "acme", P, at(30.0), T0), None, "entry 2 was the least recently used");
        assert_eq!(value(&mut i, "acme", P, at(60.0), T0), Some(3));
        assert_eq!(value(&mut i, "acme", P, at(0.0), T0), Some(1));
        assert_eq!(value(&mut i, "acme", Q, at(90.0), T0), Some(4));
        assert_eq!(value(&mut i, "globex", P, at(0.0), T0), Some(9), "another tenant's entries are untouched");
    }

    #[test]
    fn the_overall_cap_evicts_across_tenants() {
        let mut i = index(3, 10);
        i.insert("a", P, &at(0.0), 1, T0, HOUR).unwrap();
        i.insert("b", P, &at(0.0), 2, T0, HOUR).unwrap();
        i.insert("c", P, &at(0.0), 3, T0, HOUR).unwrap();
        assert_eq!(value(&mut i, "a", P, at(0.0), T0), Some(1));
        i.insert("d", P, &at(0.0), 4, T0, HOUR).unwrap();
        assert_eq!(i.len(), 3);
        assert_eq!(value(&mut i, "b", P, at(0.0), T0), None, "b was the least recently used overall");
        assert_eq!(i.tenant_len("b"), 0);
        assert_eq!(value(&mut i, "a", P, at(0.0), T0), Some(1));
        let mut none = index(0, 10);
        none.insert("a", P, &at(0.0), 1, T0, HOUR).unwrap();
        assert!(none.is_empty(), "a cap of zero stores nothing");
    }

    #[test]
    fn many_inserts_and_removals_keep_rows_consistent() {
        // Random inserts, lookups and expiries against a plain list as the model of what must be found.
        let random = SeededRandom::new(99);
        let mut i: SemanticIndex<u32> =
            SemanticIndex::new(SemanticIndexConfig { dims: 8, max_entries: 50, max_entries_per_tenant: 30 });
        let mut now = T0;
        for n in 0..2_000u32 {
            now = now.plus(Duration::from_millis(random.next_u64() % 50));
            let tenant = ["a", "b", "c"][(random.next_u64() % 3) as usize];
            let partition = PartitionKey([(random.next_u64() % 2) as u8; 16]);
            let v: Vec<f32> = (0..8).map(|_| (random.next_u64() % 1_000) as f32 / 500.0 - 1.0).collect();
            let ttl = Duration::from_millis(500 + random.next_u64() % 5_000);
            if i.insert(tenant, partition, &v, n, now, ttl).is_err() {
                continue;
            }
            // The vector just stored is its own best match.
            let hit = i.lookup(tenant, partition, &v, 0.9999, now).unwrap().unwrap();
            assert_eq!(hit.value, n);
            assert!(i.len() <= 50 && i.tenant_len(tenant) <= 30);
            let rows: usize = i.tenants.values().flat_map(|t| t.shards.values()).map(|s| s.ids.len()).sum();
            assert_eq!(rows, i.len());
            for (id, e) in &i.entries {
                assert_eq!(i.tenants[&e.tenant].shards[&e.partition].ids[e.row], *id);
            }
        }
    }

    fn chat(v: serde_json::Value) -> ChatCompletionRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn partitions_follow_the_context_but_not_the_last_question() {
        let base = json!({"model": "m", "temperature": 0, "messages": [
            {"role": "system", "content": "be brief"}, {"role": "user", "content": "capital of France?"}]});
        let p = PartitionKey::of_chat(&chat(base.clone()));
        let mut paraphrase = base.clone();
        paraphrase["messages"][1]["content"] = json!("What's France's capital city?");
        assert_eq!(PartitionKey::of_chat(&chat(paraphrase)), p, "the embedded question is not in the partition");
        for (field, v) in [
            ("model", json!("other")),
            ("temperature", json!(0.2)),
            ("max_tokens", json!(5)),
            ("response_format", json!({"type": "json_object"})),
        ] {
            let mut changed = base.clone();
            changed[field] = v;
            assert_ne!(PartitionKey::of_chat(&chat(changed)), p, "{field} changes the partition");
        }
        let mut system = base.clone();
        system["messages"][0]["content"] = json!("be verbose");
        assert_ne!(PartitionKey::of_chat(&chat(system)), p, "the system prompt is context");
        let mut streamed = base;
        streamed["stream"] = json!(true);
        assert_eq!(PartitionKey::of_chat(&chat(streamed)), p, "streaming does not change the answer");
    }

    #[test]
    fn refusal_cases() {
        let ok = chat(json!({"model": "m", "temperature": 0.2, "messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(semantic_refusal(&ok, 0.5, CacheDirective::Default), None);
        assert_eq!(semantic_refusal(&ok, 0.1, CacheDirective::Default), Some(SemanticRefusal::Temperature));
        assert_eq!(semantic_refusal(&ok, 0.5, CacheDirective::NoStore), Some(SemanticRefusal::ClientDirective));
        assert_eq!(semantic_refusal(&ok, 0.5, CacheDirective::NoCache), Some(SemanticRefusal::ClientDirective));
        let unset = chat(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(semantic_refusal(&unset, 0.5, CacheDirective::Default), Some(SemanticRefusal::Temperature));
        let tools = chat(json!({"model": "m", "temperature": 0, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f"}}]}));
        assert_eq!(semantic_refusal(&tools, 0.5, CacheDirective::Default), Some(SemanticRefusal::Tools));
        let n = chat(json!({"model": "m", "temperature": 0, "n": 2, "messages": [{"role": "user", "content": "hi"}]}));
        assert_eq!(semantic_refusal(&n, 0.5, CacheDirective::Default), Some(SemanticRefusal::SeveralChoices));
        let system = chat(json!({"model": "m", "temperature": 0, "messages": [{"role": "system", "content": "x"}]}));
        assert_eq!(
            semantic_refusal(&system, 0.5, CacheDirective::Default).map(SemanticRefusal::label),
            Some("no_user_message")
        );
    }
}
