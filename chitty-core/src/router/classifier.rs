//! The smart router's second stage: a k-nearest-neighbour classifier over embeddings of labelled example
//! prompts. Each class names the candidate model that serves it; a request goes to the class whose examples
//! are closest (the top `k` neighbours vote, each with its cosine similarity).
//!
//! ```
//! use chitty_core::router::ExampleIndex;
//!
//! let mut index = ExampleIndex::new(3);
//! index.add("chit-chat", "small-model", &[1.0, 0.1, 0.0])?;
//! index.add("chit-chat", "small-model", &[0.9, 0.0, 0.1])?;
//! index.add("proofs", "large-model", &[0.0, 1.0, 0.2])?;
//! let nearest = index.classify(&[0.95, 0.05, 0.05], 3)?.expect("a non-empty index answers");
//! assert_eq!((&*nearest.class, &*nearest.model), ("chit-chat", "small-model"));
//! assert!(nearest.similarity > 0.99);
//! # Ok::<(), chitty_core::embedding::EmbeddingError>(())
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use crate::embedding::{EmbeddingError, cosine_scores, unit_vector};

/// A class of example prompts and the candidate model that serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Class {
    name: Arc<str>,
    model: Arc<str>,
}

/// Labelled example embeddings of one tenant (or the router's shared set), as unit vectors laid end to end.
#[derive(Debug, Clone)]
pub struct ExampleIndex {
    dims: usize,
    vectors: Vec<f32>,
    /// Row → class index.
    labels: Vec<usize>,
    classes: Vec<Class>,
}

/// The class a query belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct NearestClass {
    /// The class's name (from the router's examples).
    pub class: Arc<str>,
    /// The candidate model serving the class.
    pub model: Arc<str>,
    /// Cosine similarity of the class's closest example to the query.
    pub similarity: f32,
    /// How many of the `k` nearest examples belong to the class.
    pub votes: usize,
}

impl ExampleIndex {
    /// An empty index of `dims`-dimensional embeddings.
    pub fn new(dims: usize) -> ExampleIndex {
        ExampleIndex { dims, vectors: Vec::new(), labels: Vec::new(), classes: Vec::new() }
    }

    /// The embeddings' dimension.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Examples held.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the index holds no example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Adds an example of `class`, served by `model`. A class keeps the model it was first added with.
    pub fn add(&mut self, class: &str, model: &str, embedding: &[f32]) -> Result<(), EmbeddingError> {
        let unit = unit_vector(embedding, self.dims)?;
        let label = match self.classes.iter().position(|c| &*c.name == class) {
            Some(i) => i,
            None => {
                self.classes.push(Class { name: class.into(), model: model.into() });
                self.classes.len() - 1
            }
        };
        self.vectors.extend_from_slice(&unit);
        self.labels.push(label);
        Ok(())
    }

    /// The class whose examples are closest to `query`: among the `k` most similar examples, the class
    /// with the highest sum of similarities (negative similarities count as zero); ties go to the class with
    /// the closest example. `None` when the index is empty.
    pub fn classify(&self, query: &[f32], k: usize) -> Result<Option<NearestClass>, EmbeddingError> {
        let scores = cosine_scores(&self.vectors, self.dims, query)?;
        let k = k.clamp(1, self.labels.len().max(1));
        let mut ranked: Vec<(f32, usize)> = scores.iter().copied().zip(0..).collect();
        if ranked.is_empty() {
            return Ok(None);
        }
        // Only the top k need ordering: a selection, not a sort (O(n)).
        let by_similarity = |a: &(f32, usize), b: &(f32, usize)| b.0.total_cmp(&a.0);
        if k < ranked.len() {
            ranked.select_nth_unstable_by(k - 1, by_similarity);
            ranked.truncate(k);
        }
        // Per class: (summed similarity, best similarity, votes).
        let mut tally: Vec<(f32, f32, usize)> = vec![(0.0, f32::NEG_INFINITY, 0); self.classes.len()];
        for &(similarity, row) in &ranked {
            let entry = &mut tally[self.labels[row]];
            entry.0 += similarity.max(0.0);
            entry.1 = entry.1.max(similarity);
            entry.2 += 1;
        }
        let winner = tally
            .iter()
            .enumerate()
            .filter(|(_, t)| t.2 > 0)
            .max_by(|(_, a), (_, b)| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)))
            .map(|(class, &(_, similarity, votes))| (class, similarity, votes));
        Ok(winner.map(|(class, similarity, votes)| NearestClass {
            class: self.classes[class].name.clone(),
            model: self.classes[class].model.clone(),
            similarity,
            votes,
        }))
    }
}

/// The example indexes of a router: one shared by every tenant, and per-tenant ones for tenants that label
/// their own prompts.
#[derive(Debug, Clone)]
pub struct ExampleIndexes {
    shared: Arc<ExampleIndex>,
    tenants: HashMap<String, Arc<ExampleIndex>>,
}

impl ExampleIndexes {
    /// Indexes where every tenant uses `shared`.
    pub fn new(shared: Arc<ExampleIndex>) -> ExampleIndexes {
        ExampleIndexes { shared, tenants: HashMap::new() }
    }

    /// Gives `tenant` its own index (replacing any earlier one).
    pub fn set_tenant(&mut self, tenant: impl Into<String>, index: Arc<ExampleIndex>) {
        self.tenants.insert(tenant.into(), index);
    }

    /// The index `tenant` classifies with: its own, else the shared one.
    pub fn for_tenant(&self, tenant: &str) -> &ExampleIndex {
        self.tenants.get(tenant).unwrap_or(&self.shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{RandomSource, SeededRandom};

    /// A random unit-ish vector near `centre` (noise of `spread` per component).
    fn near(centre: &[f32], spread: f32, random: &SeededRandom) -> Vec<f32> {
        centre.iter().map(|&c| c + spread * ((random.next_u64() % 2_001) as f32 / 1_000.0 - 1.0)).collect()
    }

    #[test]
    fn clusters_are_told_apart() {
        let random = SeededRandom::new(11);
        let dims = 64;
        let centres: Vec<Vec<f32>> = (0..3).map(|_| near(&vec![0.0; dims], 1.0, &random)).collect();
        let mut index = ExampleIndex::new(dims);
        for (c, centre) in centres.iter().enumerate() {
            for _ in 0..20 {
                index.add(&format!("class-{c}"), &format!("model-{c}"), &near(centre, 0.3, &random)).unwrap();
            }
        }
        assert_eq!(index.len(), 60);
        for (c, centre) in centres.iter().enumerate() {
            for _ in 0..20 {
                let found = index.classify(&near(centre, 0.3, &random), 7).unwrap().unwrap();
                assert_eq!(&*found.model, format!("model-{c}"));
                assert!(found.votes >= 4, "{found:?}");
            }
        }
    }

    #[test]
    fn the_closest_class_wins_a_vote_by_similarity_not_by_count() {
        let mut index = ExampleIndex::new(2);
        // One very close example of `near` against two farther ones of `far`.
        index.add("near", "m-near", &[1.0, 0.0]).unwrap();
        index.add("far", "m-far", &[0.2, 1.0]).unwrap();
        index.add("far", "m-far", &[0.25, 1.0]).unwrap();
        let found = index.classify(&[1.0, 0.05], 3).unwrap().unwrap();
        assert_eq!(&*found.class, "near");
        assert_eq!(found.votes, 1);
        // With k = 1 only the nearest votes.
        assert_eq!(&*index.classify(&[0.2, 1.0], 1).unwrap().unwrap().class, "far");
        // Opposite directions count as no support at all.
        assert!(index.classify(&[-1.0, 0.0], 3).unwrap().unwrap().similarity < 0.0);
    }

    #[test]
    fn bad_vectors_are_refused_and_an_empty_index_has_no_answer() {
        let mut index = ExampleIndex::new(2);
        assert_eq!(index.classify(&[1.0, 0.0], 5), Ok(None));
        assert!(index.add("a", "m", &[0.0, 0.0]).is_err());
        assert!(index.add("a", "m", &[1.0]).is_err());
        assert!(index.is_empty());
        index.add("a", "m", &[1.0, 0.0]).unwrap();
        assert_eq!(index.classify(&[f32::NAN, 0.0], 5), Err(EmbeddingError::NotFinite));
        assert_eq!(index.classify(&[1.0, 0.0, 0.0], 5), Err(EmbeddingError::Dimensions { expected: 2, found: 3 }));
        assert_eq!(index.classify(&[1.0, 0.0], 0).unwrap().unwrap().votes, 1, "k = 0 is read as 1");
    }

    #[test]
    fn tenants_classify_with_their_own_examples() {
        let mut shared = ExampleIndex::new(2);
        shared.add("general", "small", &[1.0, 0.0]).unwrap();
        let mut own = ExampleIndex::new(2);
        own.add("legal", "large", &[1.0, 0.0]).unwrap();
        let mut indexes = ExampleIndexes::new(Arc::new(shared));
        indexes.set_tenant("acme", Arc::new(own));
        let model = |t: &str| indexes.for_tenant(t).classify(&[1.0, 0.0], 3).unwrap().unwrap().model;
        assert_eq!(&*model("acme"), "large");
        assert_eq!(&*model("globex"), "small");
    }
}
