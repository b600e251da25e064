//! The semantic cache's index: on an exact-cache miss, the nearest earlier prompt of the same tenant and
//! the same [`PartitionKey`] (model, parameters, tools, and the conversation before the last user message),
//! by cosine similarity of their embeddings, answers when it is at least the model's threshold.
//!
//! In process. Each (tenant, partition) shard keeps its unit vectors end to end. A shard of at most
//! [`SemanticIndexConfig::approximate_above`] rows is searched flat: one matrix-vector product (ndarray), about
//! 1 ms per 1,000 rows of 1,536 dimensions. A bigger one (with the `hnsw` feature, which chitty-providers turns on) is searched
//! through an HNSW graph (the `fast-hnsw` crate) started when the shard crosses the bound and grown with every
//! insert: the graph navigates by a 128-component random projection of the rows, and its 16 nearest candidates
//! are re-ranked by exact cosine, so a hit's similarity is exact and only its recall is approximate (≥ 99 % in
//! the tests). Entries expire (TTL from a `now` the caller passes) and memory is bounded by a cap on entries
//! per tenant and overall, evicting the least recently used; a graph keeps removed rows as tombstones, skipped
//! by lookups, and is rebuilt from the live rows when they are fewer than the dead ones.
//!
//! **Graph work per call is bounded**: a graph is filled incrementally, at most 32 rows
//! (`GRAPH_ROWS_PER_CALL`) per call of [`SemanticIndex::insert`], [`SemanticIndex::lookup`] or
//! [`SemanticIndex::purge_expired`] (the shard of the call first, then others whose graph lacks rows), and
//! none in [`SemanticIndex::remove_tenant`]; at 0.15–0.2 ms per row at 1,536 dimensions in a graph of a few
//! thousand rows and ~1 ms at 100,000, that is at most ~5–35 ms of graph work per call, under the caller's lock. Until its graph holds every row a shard is scanned flat
//! (correct, ~1 ms per 1,000 rows) and new rows queue for the graph. A rebuild after compaction works the same
//! way, flat meanwhile: the old graph's nodes are the old row numbers, so keeping it serving would mean keeping
//! the dead rows too, and the live rows being fewer than half the shard, the flat scan is short. Memory is about
//! `entries × dims × 4` bytes plus ~150 bytes of bookkeeping per entry (10,000 entries of 1,536 dimensions:
//! 62 MB; 100,000: 614 MB), and for graph shards ~1 KB more per row (the projection and the links) and a
//! 0.8 MB projection matrix. Not synchronised: hold it behind a lock.
//!
//! Which requests may use it is [`semantic_refusal`]'s call: never with tools, `n > 1`, a temperature
//! above the configured bound, or `Cache-Control: no-store`.
//!
//! ```
//! use std::time::Duration;
//! use chitty_core::semantic::{DEFAULT_APPROXIMATE_ABOVE, PartitionKey, SemanticIndex, SemanticIndexConfig};
//! use chitty_core::Timestamp;
//!
//! let mut index = SemanticIndex::new(SemanticIndexConfig {
//!     dims: 3,
//!     max_entries: 1_000,
//!     max_entries_per_tenant: 100,
//!     approximate_above: DEFAULT_APPROXIMATE_ABOVE,
//! });
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
use crate::keys::{CacheDirective, CacheScope, chat_key_skipping};
use crate::time::Timestamp;
use crate::wire::{ChatCompletionRequest, Role};

#[cfg(feature = "hnsw")]
mod graph;

/// What else a cached answer depends on besides the embedded prompt: entries are only compared within one
/// partition. Opaque 16 bytes; [`PartitionKey::of_chat`] derives it from a chat request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionKey(pub [u8; 16]);

impl PartitionKey {
    /// The partition of a chat request: its model, every parameter the exact cache keys on (tools, response
    /// format, sampling …), and every message except the last user message, which is the text embedded.
    /// So a paraphrased question matches only under the same system prompt and the same earlier turns.
    pub fn of_chat(request: &ChatCompletionRequest) -> PartitionKey {
        let last_user = request.messages.iter().rposition(|m| m.role == Role::User);
        // The exact cache's canonical encoding, under a scope no tenant can name (tenants have their own maps).
        let key = chat_key_skipping(CacheScope::Shared("\u{0}semantic-partition"), request, last_user);
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
    /// Shards (one tenant's partition) holding more rows than this are searched through an approximate graph
    /// instead of a flat scan; `usize::MAX` keeps every shard flat, as does building without the `hnsw`
    /// feature. [`DEFAULT_APPROXIMATE_ABOVE`] is the usual choice.
    pub approximate_above: usize,
}

/// Rows above which a shard is searched through its graph: a flat scan of 1,536-dimension rows takes
/// 0.25–0.94 ms per 1,000 rows (quiet to loaded machine), a graph lookup 0.1–0.7 ms from 10k to 100k rows
/// (`benches/routing.rs`, docs/benchmarks.md), and below ~2,000 rows building a graph is not worth its inserts.
pub const DEFAULT_APPROXIMATE_ABOVE: usize = 2_000;

/// The best match of a lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct SemanticHit<V> {
    /// What was stored with the matching prompt.
    pub value: V,
    /// Cosine similarity of the two prompts' embeddings (for `x-chitty-cache-similarity`).
    pub similarity: f32,
}

type EntryId = u64;

/// The id of a removed row that a graph still holds; ids count up from 0 and never reach it.
const DEAD: EntryId = EntryId::MAX;

/// Rows inserted into graphs by one call of a public method, at most: graph work is spread over calls so none
/// holds the caller's lock for long. 0.15–0.2 ms per row at 1,536 dimensions in graphs of a few thousand rows,
/// ~1 ms at 100,000 (`benches/routing.rs`, `semantic_graph_step`): at most ~5–35 ms of graph work per call.
#[cfg(feature = "hnsw")]
pub(crate) const GRAPH_ROWS_PER_CALL: usize = 32;

/// One partition's vectors, end to end, with the entry of each row. Flat shards remove a row by moving the
/// last one into its place; graph shards (node `i` is row `i`) mark it [`DEAD`] until the next rebuild.
#[derive(Debug, Default)]
struct Shard {
    vectors: Vec<f32>,
    ids: Vec<EntryId>,
    expires: Vec<Timestamp>,
    /// Rows marked [`DEAD`].
    dead: usize,
    /// Present once the shard has crossed `approximate_above` (rows then become tombstones when removed); its
    /// node `i` is row `i`, and it answers lookups only once it holds every row: until then a flat scan does.
    #[cfg(feature = "hnsw")]
    graph: Option<graph::Graph>,
}

impl Shard {
    fn live(&self) -> usize {
        self.ids.len() - self.dead
    }

    #[cfg(feature = "hnsw")]
    fn row(&self, row: usize, dims: usize) -> &[f32] {
        &self.vectors[row * dims..(row + 1) * dims]
    }

    /// Appends a row; a flat shard that now holds more than `approximate_above` rows gets an empty graph, which
    /// [`Shard::extend_graph`] fills. Whether the graph now lacks rows.
    fn push(&mut self, unit: &[f32], id: EntryId, expires_at: Timestamp, config: &SemanticIndexConfig) -> bool {
        self.vectors.extend_from_slice(unit);
        self.ids.push(id);
        self.expires.push(expires_at);
        #[cfg(feature = "hnsw")]
        if self.graph.is_none() && self.ids.len() > config.approximate_above {
            self.graph = Some(graph::Graph::new(config.dims));
        }
        #[cfg(not(feature = "hnsw"))]
        let _ = config;
        self.graph_behind()
    }

    /// Whether removed rows are tombstones (a graph, complete or not, numbers its nodes by row).
    fn has_graph(&self) -> bool {
        #[cfg(feature = "hnsw")]
        return self.graph.is_some();
        #[cfg(not(feature = "hnsw"))]
        false
    }

    /// Whether the shard has a graph that lacks some of its rows.
    fn graph_behind(&self) -> bool {
        #[cfg(feature = "hnsw")]
        return self.graph.as_ref().is_some_and(|g| g.len() < self.ids.len());
        #[cfg(not(feature = "hnsw"))]
        false
    }

    /// Inserts up to `budget` of the rows the graph lacks, in row order: how many it inserted.
    #[cfg(feature = "hnsw")]
    fn extend_graph(&mut self, dims: usize, budget: usize) -> usize {
        let Some(graph) = &mut self.graph else { return 0 };
        let (from, to) = (graph.len(), self.ids.len().min(graph.len() + budget));
        for row in from..to {
            // Dead rows too: node `i` must be row `i`, and they still route searches.
            graph.insert(&self.vectors[row * dims..(row + 1) * dims]);
        }
        to.saturating_sub(from)
    }

    /// The row most similar to `query` among those alive and unexpired at `now`, and its cosine similarity
    /// (at most 1: rounding can push the cosine of a vector with itself just past it).
    fn best(&self, query: &[f32], dims: usize, now: Timestamp) -> Result<Option<(usize, f32)>, EmbeddingError> {
        Ok(self.best_unclamped(query, dims, now)?.map(|(row, similarity)| (row, similarity.min(1.0))))
    }

    fn best_unclamped(
        &self,
        query: &[f32],
        dims: usize,
        now: Timestamp,
    ) -> Result<Option<(usize, f32)>, EmbeddingError> {
        let alive = |row: usize| self.ids[row] != DEAD && self.expires[row] > now;
        #[cfg(feature = "hnsw")]
        if let Some(graph) = self.graph.as_ref().filter(|g| g.len() == self.ids.len()) {
            let query = &unit_vector(query, dims)?;
            // Dead rows still route the search; ask for more candidates while all of them are dead.
            let mut wanted = graph::CANDIDATES;
            loop {
                let rows = graph.nearest(query, wanted);
                let best = rows
                    .iter()
                    .copied()
                    .filter(|&row| row < self.ids.len() && alive(row))
                    .map(|row| (row, graph::dot(query, self.row(row, dims))))
                    .max_by(|a, b| a.1.total_cmp(&b.1));
                if best.is_some() || rows.len() < wanted || wanted >= graph.len() {
                    return Ok(best);
                }
                wanted = wanted.saturating_mul(4);
            }
        }
        let scores = cosine_scores(&self.vectors, dims, query)?;
        Ok(scores
            .iter()
            .enumerate()
            .filter(|&(row, _)| alive(row))
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(row, &similarity)| (row, similarity)))
    }
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
    /// Shards whose graph lacks rows: each public call inserts up to `GRAPH_ROWS_PER_CALL` of them.
    behind: BTreeSet<(Arc<str>, PartitionKey)>,
    next_id: EntryId,
    clock: u64,
    /// Rows inserted into graphs so far, for the tests of the per-call bound.
    #[cfg(all(test, feature = "hnsw"))]
    graph_rows_inserted: usize,
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
            behind: BTreeSet::new(),
            next_id: 0,
            clock: 0,
            #[cfg(all(test, feature = "hnsw"))]
            graph_rows_inserted: 0,
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
        self.drop_expired(now);
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
        if shard.push(&unit, id, expires_at, &self.config) {
            self.behind.insert((tenant.clone(), partition));
        }
        self.recency.insert(tick, id);
        self.expiry.insert((expires_at, id));
        self.entries.insert(id, Entry { tenant: tenant.clone(), partition, row, expires_at, last_used: tick, value });
        // This shard first, so a graph that has caught up stays so.
        self.advance_graphs(Some((tenant, partition)));
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
        self.drop_expired(now);
        let key = self.tenants.get_key_value(tenant).map(|(name, _)| (name.clone(), partition));
        self.advance_graphs(key);
        let Some(shard) = self.tenants.get(tenant).and_then(|t| t.shards.get(&partition)) else {
            // Still check the query, so a caller learns of a dimension mismatch on an empty index too.
            unit_vector(query, self.config.dims)?;
            return Ok(None);
        };
        let best = shard.best(query, self.config.dims, now)?.map(|(row, similarity)| (shard.ids[row], similarity));
        let Some((id, similarity)) = best.filter(|&(_, s)| s >= threshold) else { return Ok(None) };
        self.touch(id);
        Ok(self.entries.get(&id).map(|e| SemanticHit { value: e.value.clone(), similarity }))
    }

    /// Removes every entry that has expired by `now` (and advances graphs under construction).
    pub fn purge_expired(&mut self, now: Timestamp) {
        self.drop_expired(now);
        self.advance_graphs(None);
    }

    /// Removes every entry that has expired by `now`.
    fn drop_expired(&mut self, now: Timestamp) {
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

    /// Inserts up to `GRAPH_ROWS_PER_CALL` rows into graphs that lack them, `first`'s shard first.
    fn advance_graphs(&mut self, first: Option<(Arc<str>, PartitionKey)>) {
        #[cfg(feature = "hnsw")]
        {
            let mut budget = GRAPH_ROWS_PER_CALL;
            let mut next = first.filter(|key| self.behind.contains(key));
            while budget > 0 {
                let Some(key) = next.take().or_else(|| self.behind.first().cloned()) else { break };
                let shard = self.tenants.get_mut(&key.0).and_then(|t| t.shards.get_mut(&key.1));
                let (inserted, behind) = match shard {
                    Some(shard) => {
                        let inserted = shard.extend_graph(self.config.dims, budget);
                        (inserted, shard.graph_behind())
                    }
                    // The shard is gone (emptied): nothing to build.
                    None => (0, false),
                };
                budget -= inserted;
                #[cfg(test)]
                {
                    self.graph_rows_inserted += inserted;
                }
                if !behind {
                    self.behind.remove(&key);
                }
            }
        }
        #[cfg(not(feature = "hnsw"))]
        let _ = first;
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

    /// Removes entry `id` from every structure: in a flat shard the last row moves into its place, in a graph
    /// shard the row is marked dead and the shard compacted once most of its rows are.
    fn remove(&mut self, id: EntryId) {
        let Some(entry) = self.entries.remove(&id) else { return };
        self.recency.remove(&entry.last_used);
        self.expiry.remove(&(entry.expires_at, id));
        let Some(tenant) = self.tenants.get_mut(&entry.tenant) else { return };
        tenant.recency.remove(&entry.last_used);
        if let Some(shard) = tenant.shards.get_mut(&entry.partition) {
            let dims = self.config.dims;
            if shard.has_graph() {
                shard.ids[entry.row] = DEAD;
                shard.dead += 1;
                if shard.dead > shard.live() && compact(shard, &mut self.entries, &self.config) {
                    self.behind.insert((entry.tenant.clone(), entry.partition));
                }
            } else {
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
            }
            if shard.live() == 0 {
                tenant.shards.remove(&entry.partition);
            }
        }
        if tenant.recency.is_empty() {
            self.tenants.remove(&entry.tenant);
        }
    }
}

/// Drops a graph shard's dead rows, renumbering the live ones (and their entries) in order, and starts a new,
/// empty graph for them (filled over the next calls, the shard scanned flat meanwhile), or leaves the shard flat
/// when they are no more than `approximate_above`. Whether it started a graph.
#[cfg(feature = "hnsw")]
fn compact<V>(shard: &mut Shard, entries: &mut HashMap<EntryId, Entry<V>>, config: &SemanticIndexConfig) -> bool {
    let dims = config.dims;
    let old = std::mem::take(shard);
    for (row, &id) in old.ids.iter().enumerate() {
        if id == DEAD {
            continue;
        }
        if let Some(e) = entries.get_mut(&id) {
            e.row = shard.ids.len();
        }
        shard.vectors.extend_from_slice(old.row(row, dims));
        shard.ids.push(id);
        shard.expires.push(old.expires[row]);
    }
    if shard.ids.len() > config.approximate_above {
        shard.graph = Some(graph::Graph::new(dims));
    }
    shard.graph_behind()
}

#[cfg(not(feature = "hnsw"))]
fn compact<V>(_: &mut Shard, _: &mut HashMap<EntryId, Entry<V>>, _: &SemanticIndexConfig) -> bool {
    false
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

    /// Shard sizes above which the tests search a graph: never (flat), and from the first row.
    #[cfg(feature = "hnsw")]
    const PATHS: [usize; 2] = [usize::MAX, 0];
    #[cfg(not(feature = "hnsw"))]
    const PATHS: [usize; 1] = [usize::MAX];

    fn index(max_entries: usize, per_tenant: usize, approximate_above: usize) -> SemanticIndex<u32> {
        SemanticIndex::new(SemanticIndexConfig {
            dims: 2,
            max_entries,
            max_entries_per_tenant: per_tenant,
            approximate_above,
        })
    }

    /// Whether some shard of `i` is searched through a graph.
    fn has_graph(i: &SemanticIndex<u32>) -> bool {
        #[cfg(feature = "hnsw")]
        return i.tenants.values().flat_map(|t| t.shards.values()).any(|s| s.graph.is_some());
        #[cfg(not(feature = "hnsw"))]
        return {
            let _ = i;
            false
        };
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
        for above in PATHS {
            let mut i = index(100, 100, above);
            i.insert("acme", P, &at(0.0), 1, T0, HOUR).unwrap();
            i.insert("globex", Q, &at(0.0), 2, T0, HOUR).unwrap();
            assert_eq!(value(&mut i, "acme", P, at(1.0), T0), Some(1));
            assert_eq!(value(&mut i, "acme", Q, at(0.0), T0), None, "same tenant, other model or parameters");
            assert_eq!(value(&mut i, "globex", P, at(0.0), T0), None, "same partition, other tenant");
            assert_eq!(value(&mut i, "globex", Q, at(0.0), T0), Some(2));
            assert_eq!(value(&mut i, "initech", P, at(0.0), T0), None);
            assert_eq!(has_graph(&i), above == 0);
        }
    }

    #[test]
    fn the_threshold_decides_and_the_best_match_wins() {
        for above in PATHS {
            let mut i = index(100, 100, above);
            i.insert("acme", P, &at(0.0), 1, T0, HOUR).unwrap();
            i.insert("acme", P, &at(30.0), 2, T0, HOUR).unwrap();
            let hit = i.lookup("acme", P, &at(25.0), 0.9, T0).unwrap().unwrap();
            assert_eq!(hit.value, 2);
            assert!((hit.similarity - 5f32.to_radians().cos()).abs() < 1e-5, "{}", hit.similarity);
            let same = i.lookup("acme", P, &[at(30.0)[0] * 3.0, at(30.0)[1] * 3.0], 0.9, T0).unwrap().unwrap();
            assert!(same.similarity <= 1.0 && same.similarity > 0.9999, "{}", same.similarity);
            assert!(i.lookup("acme", P, &at(15.0), 0.97, T0).unwrap().is_none(), "cos 15° = 0.966 < 0.97");
            assert!(i.lookup("acme", P, &at(15.0), 0.96, T0).unwrap().is_some());
            let scaled = [at(29.0)[0] * 40.0, at(29.0)[1] * 40.0];
            assert_eq!(i.lookup("acme", P, &scaled, 0.99, T0).unwrap().map(|h| h.value), Some(2), "length is ignored");
            assert_eq!(
                i.lookup("acme", P, &[1.0, 0.0, 0.0], 0.9, T0),
                Err(EmbeddingError::Dimensions { expected: 2, found: 3 })
            );
            assert_eq!(
                i.lookup("nobody", P, &[1.0], 0.9, T0),
                Err(EmbeddingError::Dimensions { expected: 2, found: 1 })
            );
            assert_eq!(i.insert("acme", P, &[0.0, 0.0], 3, T0, HOUR), Err(EmbeddingError::Zero));
            assert_eq!(i.len(), 2);
        }
    }

    #[test]
    fn entries_expire() {
        for above in PATHS {
            let mut i = index(100, 100, above);
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
    }

    #[test]
    fn a_tenant_at_its_cap_evicts_its_own_least_recently_used() {
        for above in PATHS {
            let mut i = index(100, 3, above);
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
    }

    #[test]
    fn the_overall_cap_evicts_across_tenants() {
        for above in PATHS {
            let mut i = index(3, 10, above);
            i.insert("a", P, &at(0.0), 1, T0, HOUR).unwrap();
            i.insert("b", P, &at(0.0), 2, T0, HOUR).unwrap();
            i.insert("c", P, &at(0.0), 3, T0, HOUR).unwrap();
            assert_eq!(value(&mut i, "a", P, at(0.0), T0), Some(1));
            i.insert("d", P, &at(0.0), 4, T0, HOUR).unwrap();
            assert_eq!(i.len(), 3);
            assert_eq!(value(&mut i, "b", P, at(0.0), T0), None, "b was the least recently used overall");
            assert_eq!(i.tenant_len("b"), 0);
            assert_eq!(value(&mut i, "a", P, at(0.0), T0), Some(1));
            let mut none = index(0, 10, above);
            none.insert("a", P, &at(0.0), 1, T0, HOUR).unwrap();
            assert!(none.is_empty(), "a cap of zero stores nothing");
        }
    }

    #[test]
    fn many_inserts_and_removals_keep_rows_consistent() {
        for above in PATHS {
            // Random inserts, lookups and expiries against a plain list as the model of what must be found.
            let random = SeededRandom::new(99);
            let mut i: SemanticIndex<u32> = SemanticIndex::new(SemanticIndexConfig {
                dims: 8,
                max_entries: 50,
                max_entries_per_tenant: 30,
                approximate_above: above,
            });
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
                let shards = || i.tenants.values().flat_map(|t| t.shards.values());
                assert_eq!(shards().map(Shard::live).sum::<usize>(), i.len());
                assert!(shards().all(|s| s.dead <= s.live()), "compacted once most rows are dead");
                assert_eq!(has_graph(&i), above == 0 && !i.is_empty());
                for (id, e) in &i.entries {
                    assert_eq!(i.tenants[&e.tenant].shards[&e.partition].ids[e.row], *id);
                }
            }
        }
    }

    /// `n` seeded random unit vectors of `dims` components.
    #[cfg(feature = "hnsw")]
    fn random_units(random: &SeededRandom, n: usize, dims: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| {
                let v: Vec<f32> = (0..dims).map(|_| (random.next_u64() % 20_001) as f32 / 10_000.0 - 1.0).collect();
                unit_vector(&v, dims).unwrap()
            })
            .collect()
    }

    /// A copy of `v` with noise of about a third of its length mixed in (cosine ~0.95 with `v`).
    #[cfg(feature = "hnsw")]
    fn noisy(random: &SeededRandom, v: &[f32]) -> Vec<f32> {
        let scale = 0.55 / (v.len() as f32).sqrt();
        v.iter().map(|x| x + scale * ((random.next_u64() % 20_001) as f32 / 10_000.0 - 1.0)).collect()
    }

    /// Stores `rows` for "acme" in `P`, then looks up noisy copies of 500 of them: the share found.
    #[cfg(feature = "hnsw")]
    fn recall(rows: &[Vec<f32>], approximate_above: usize) -> f64 {
        let dims = rows[0].len();
        let random = SeededRandom::new(11);
        let mut i: SemanticIndex<u32> = SemanticIndex::new(SemanticIndexConfig {
            dims,
            max_entries: rows.len(),
            max_entries_per_tenant: rows.len(),
            approximate_above,
        });
        for (n, row) in rows.iter().enumerate() {
            i.insert("acme", P, row, n as u32, T0, HOUR).unwrap();
        }
        assert!(has_graph(&i));
        assert!(i.behind.is_empty(), "the graph has caught up");
        let queries = 500;
        let found = (0..queries)
            .filter(|_| {
                let n = (random.next_u64() % rows.len() as u64) as usize;
                let hit = i.lookup("acme", P, &noisy(&random, &rows[n]), 0.8, T0).unwrap();
                hit.is_some_and(|h| h.value == n as u32 && h.similarity < 1.0)
            })
            .count();
        found as f64 / queries as f64
    }

    #[cfg(feature = "hnsw")]
    #[test]
    fn the_graph_finds_noisy_copies_among_4k_random_vectors() {
        // Flat up to the default bound, then the graph: the switch, the catch-up and the later inserts. (4,000
        // rows: the graph code is generic over chitty-core's distance, so a debug build runs it unoptimised.)
        let rows = random_units(&SeededRandom::new(20_000), 4_000, 32);
        let share = recall(&rows, DEFAULT_APPROXIMATE_ABOVE);
        assert!(share >= 0.99, "recall {share}");
    }

    #[cfg(feature = "hnsw")]
    #[test]
    fn the_graph_finds_noisy_copies_through_the_projection() {
        // Wider than the graph's 128 components, so it navigates by projections and re-ranks exactly.
        let rows = random_units(&SeededRandom::new(768), 2_000, 768);
        let share = recall(&rows, 0);
        assert!(share >= 0.99, "recall {share}");
    }

    /// An index of 16-component vectors whose shards use a graph above 50 rows.
    #[cfg(feature = "hnsw")]
    fn graph_index(per_tenant: usize) -> SemanticIndex<u32> {
        SemanticIndex::new(SemanticIndexConfig {
            dims: 16,
            max_entries: 10_000,
            max_entries_per_tenant: per_tenant,
            approximate_above: 50,
        })
    }

    #[cfg(feature = "hnsw")]
    #[test]
    fn graph_shards_never_answer_with_expired_evicted_or_foreign_entries() {
        let random = SeededRandom::new(5);
        let rows = random_units(&random, 300, 16);
        let mut i = graph_index(200);
        let t = |s: u64| T0.plus(Duration::from_secs(s));
        for (n, row) in rows.iter().enumerate() {
            // Even rows live a minute, odd ones an hour.
            let ttl = if n % 2 == 0 { Duration::from_secs(60) } else { HOUR };
            i.insert("acme", P, row, n as u32, t(n as u64 / 10), ttl).unwrap();
        }
        assert!(has_graph(&i));
        assert_eq!(i.tenant_len("acme"), 200, "the first 100 were evicted");
        let look = |i: &mut SemanticIndex<u32>, tenant: &str, p: PartitionKey, n: usize, now: Timestamp| {
            i.lookup(tenant, p, &rows[n], 0.99, now).unwrap().map(|h| h.value)
        };
        assert_eq!(look(&mut i, "acme", P, 150, t(29)), Some(150));
        assert_eq!(look(&mut i, "acme", P, 40, t(29)), None, "evicted");
        assert_eq!(look(&mut i, "acme", P, 41, t(29)), None, "evicted");
        assert_eq!(look(&mut i, "globex", P, 150, t(29)), None, "another tenant");
        assert_eq!(look(&mut i, "acme", Q, 150, t(29)), None, "another partition");
        // Rows 100..=159 were stored by t(15): the even ones have expired by t(75).
        assert_eq!(look(&mut i, "acme", P, 150, t(75)), None, "expired");
        assert_eq!(look(&mut i, "acme", P, 151, t(75)), Some(151));
        for n in 100..300 {
            let found = look(&mut i, "acme", P, n, t(75));
            let alive = n % 2 == 1 || n / 10 + 60 > 75;
            assert_eq!(found, alive.then_some(n as u32), "row {n}");
        }
        // A near duplicate of an evicted row (unexpired) answers for it: the tombstone, nearer still, is skipped.
        let twin: Vec<f32> =
            rows[41].iter().enumerate().map(|(k, x)| x + if k % 2 == 0 { 0.02 } else { -0.02 }).collect();
        i.insert("acme", P, &twin, 1_041, t(75), HOUR).unwrap();
        assert_eq!(i.tenants["acme"].shards[&P].dead, 130, "still tombstones, not compacted");
        let hit = i.lookup("acme", P, &rows[41], 0.9, t(75)).unwrap().unwrap();
        assert_eq!(hit.value, 1_041);
        assert!(hit.similarity < 1.0);
    }

    #[cfg(feature = "hnsw")]
    #[test]
    fn graph_shards_are_rebuilt_after_many_removals_and_go_flat_when_small() {
        let random = SeededRandom::new(6);
        let rows = random_units(&random, 400, 16);
        let mut i = graph_index(1_000);
        let t = |s: u64| T0.plus(Duration::from_secs(s));
        for (n, row) in rows.iter().enumerate() {
            // Three waves of 100 expiring at 10, 20 and 30 seconds, then one row a second from 40 seconds on.
            let secs = if n < 300 { 10 * (n as u64 / 100 + 1) } else { 40 + (n as u64 - 300) };
            i.insert("acme", P, row, n as u32, T0, Duration::from_secs(secs)).unwrap();
        }
        let shard = |i: &SemanticIndex<u32>| {
            let s = &i.tenants["acme"].shards[&P];
            (s.ids.len(), s.dead, s.graph.as_ref().map(graph::Graph::len))
        };
        let found = |i: &mut SemanticIndex<u32>, n: usize, now: Timestamp| {
            i.lookup("acme", P, &rows[n], 0.999, now).unwrap().map(|h| h.value)
        };
        assert_eq!(shard(&i), (400, 0, Some(400)));
        i.purge_expired(t(10));
        assert_eq!(shard(&i), (400, 100, Some(400)), "a quarter dead: kept as tombstones");
        i.purge_expired(t(20));
        assert_eq!(shard(&i), (400, 200, Some(400)), "half dead: not yet more than the live rows");
        i.purge_expired(t(30));
        let step = GRAPH_ROWS_PER_CALL;
        assert_eq!(shard(&i), (199, 99, Some(step)), "rebuilding from the 199 rows live at the 201st removal");
        for n in 0..400 {
            // The first calls scan flat while the graph fills, the later ones search it: the same answers.
            assert_eq!(found(&mut i, n, t(30)), (n >= 300).then_some(n as u32), "row {n}");
        }
        assert_eq!(shard(&i), (199, 99, Some(199)), "rebuilt, a step per call");
        i.purge_expired(t(40));
        assert_eq!(shard(&i), (99, 0, Some(step)), "rebuilding again at the next removal");
        i.purge_expired(t(89));
        assert_eq!(shard(&i), (99, 49, Some(2 * step)));
        i.purge_expired(t(90));
        assert_eq!(shard(&i), (49, 0, None), "49 live rows, not above 50: flat");
        for n in 290..400 {
            assert_eq!(found(&mut i, n, t(90)), (n > 350).then_some(n as u32), "row {n}");
        }
        i.insert("acme", P, &rows[0], 1_000, t(90), HOUR).unwrap();
        assert_eq!(shard(&i), (50, 0, None));
        i.insert("acme", P, &rows[1], 1_001, t(90), HOUR).unwrap();
        assert_eq!(shard(&i), (51, 0, Some(step)), "past 50 rows: a graph again");
        i.purge_expired(t(90));
        assert_eq!(shard(&i), (51, 0, Some(51)));
        assert_eq!(found(&mut i, 1, t(90)), Some(1_001));
        assert_eq!(found(&mut i, 399, t(90)), Some(399));
        i.purge_expired(t(7_200));
        assert!(i.is_empty() && i.tenants.is_empty(), "all expired, shard dropped");
    }

    #[cfg(feature = "hnsw")]
    #[test]
    fn a_shard_crossing_the_bound_moves_to_its_graph_a_step_per_call() {
        let rows = random_units(&SeededRandom::new(8), 301, 16);
        let config = |approximate_above| SemanticIndexConfig {
            dims: 16,
            max_entries: 1_000,
            max_entries_per_tenant: 1_000,
            approximate_above,
        };
        let mut i: SemanticIndex<u32> = SemanticIndex::new(config(300));
        let mut flat: SemanticIndex<u32> = SemanticIndex::new(config(usize::MAX));
        for (n, row) in rows.iter().enumerate() {
            i.insert("acme", P, row, n as u32, T0, HOUR).unwrap();
            flat.insert("acme", P, row, n as u32, T0, HOUR).unwrap();
        }
        let graph_len = |i: &SemanticIndex<u32>| i.tenants["acme"].shards[&P].graph.as_ref().map(graph::Graph::len);
        assert_eq!(graph_len(&i), Some(GRAPH_ROWS_PER_CALL), "the 301st insert started the graph: one step");
        let random = SeededRandom::new(9);
        let mut calls = 1;
        while !i.behind.is_empty() {
            // Noisy queries, so the flat answer is not trivially the row itself: the same answer from both.
            let query = noisy(&random, &rows[(random.next_u64() % 301) as usize]);
            let before = i.graph_rows_inserted;
            let hit = i.lookup("acme", P, &query, 0.5, T0).unwrap();
            assert!(i.graph_rows_inserted - before <= GRAPH_ROWS_PER_CALL);
            if !i.behind.is_empty() {
                assert_eq!(hit, flat.lookup("acme", P, &query, 0.5, T0).unwrap(), "flat while the graph fills");
            }
            calls += 1;
        }
        assert_eq!(calls, 301usize.div_ceil(GRAPH_ROWS_PER_CALL));
        assert_eq!(graph_len(&i), Some(301));
        for (n, row) in rows.iter().enumerate() {
            assert_eq!(i.lookup("acme", P, row, 0.999, T0).unwrap().map(|h| h.value), Some(n as u32), "row {n}");
        }
    }

    #[cfg(feature = "hnsw")]
    #[test]
    fn no_call_inserts_more_than_the_bound_and_answers_match_a_flat_index() {
        // Random inserts, lookups, purges and tenant removals on two indexes, one with graphs above 40 rows: every
        // call stays within the bound, and each lookup answers as the flat index does (exact-duplicate queries,
        // which a graph finds as surely as a scan; any query while a graph fills).
        let random = SeededRandom::new(77);
        let rows = random_units(&random, 1_000, 16);
        let config = |approximate_above| SemanticIndexConfig {
            dims: 16,
            max_entries: 2_000,
            max_entries_per_tenant: 1_000,
            approximate_above,
        };
        let mut i: SemanticIndex<u32> = SemanticIndex::new(config(40));
        let mut flat: SemanticIndex<u32> = SemanticIndex::new(config(usize::MAX));
        let (mut now, mut filling, mut rebuilds) = (T0, 0, 0);
        for n in 0..6_000u32 {
            now = now.plus(Duration::from_millis(random.next_u64() % 20));
            let tenant = ["a", "b"][(random.next_u64() % 2) as usize];
            let partition = PartitionKey([(random.next_u64() % 2) as u8; 16]);
            let row = &rows[(random.next_u64() % rows.len() as u64) as usize];
            let before = (i.graph_rows_inserted, i.behind.len());
            match random.next_u64() % 100 {
                0..45 => {
                    // Waves of expiry: most rows live 30 s, a few an hour.
                    let ttl = Duration::from_millis(if n % 10 == 0 { 3_600_000 } else { 30_000 });
                    i.insert(tenant, partition, row, n, now, ttl).unwrap();
                    flat.insert(tenant, partition, row, n, now, ttl).unwrap();
                }
                45..95 => {
                    // A shard whose graph is filling, if there is one.
                    let (tenant, partition) = match i.behind.first() {
                        Some((t, p)) => (if &**t == "a" { "a" } else { "b" }, *p),
                        None => (tenant, partition),
                    };
                    let building = before.1 > 0;
                    let query = if building { noisy(&random, row) } else { row.clone() };
                    filling += usize::from(building);
                    let a = i.lookup(tenant, partition, &query, 0.5, now).unwrap().map(|h| h.similarity);
                    let b = flat.lookup(tenant, partition, &query, 0.5, now).unwrap().map(|h| h.similarity);
                    // Rows sit in another order in the two indexes, so a similarity may differ in its last bit.
                    assert_eq!(a.is_some(), b.is_some(), "call {n}");
                    assert!((a.unwrap_or(0.0) - b.unwrap_or(0.0)).abs() < 1e-5, "call {n}: {a:?} {b:?}");
                }
                95..99 => {
                    i.purge_expired(now);
                    flat.purge_expired(now);
                }
                _ => {
                    i.remove_tenant(tenant);
                    flat.remove_tenant(tenant);
                }
            }
            assert!(i.graph_rows_inserted - before.0 <= GRAPH_ROWS_PER_CALL, "call {n}");
            rebuilds += usize::from(i.behind.len() > before.1);
            assert_eq!(i.len(), flat.len());
        }
        assert!(filling > 5 && rebuilds > 5, "graphs were built while looked up: {filling}, {rebuilds}");
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
