//! Embedding vectors as the router's classifier and the semantic cache hold them: checked (dimensions,
//! finite, non-zero) and scaled to unit length once, so a cosine similarity is one dot product.
//!
//! ```
//! use chitty_core::embedding::{cosine_scores, unit_vector, EmbeddingError};
//!
//! let stored = [unit_vector(&[3.0, 4.0], 2)?, unit_vector(&[0.0, 2.0], 2)?].concat();
//! let scores = cosine_scores(&stored, 2, &[0.0, 1.0])?;
//! assert!((scores[0] - 0.8).abs() < 1e-6 && (scores[1] - 1.0).abs() < 1e-6);
//! assert_eq!(unit_vector(&[0.0, 0.0], 2), Err(EmbeddingError::Zero));
//! # Ok::<(), EmbeddingError>(())
//! ```

use ndarray::{Array1, ArrayView1, ArrayView2};

/// Why a vector cannot be indexed or searched with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddingError {
    /// The vector's length is not the index's dimension (a different embedding model or `dimensions`).
    #[error("the embedding has {found} dimensions, the index {expected}")]
    Dimensions {
        /// The index's dimension.
        expected: usize,
        /// The vector's.
        found: usize,
    },
    /// A component is NaN or infinite.
    #[error("the embedding has a component that is not a finite number")]
    NotFinite,
    /// Every component is zero: no direction to compare.
    #[error("the embedding is the zero vector")]
    Zero,
}

/// `1 / |v|` after checking that `v` has `dims` finite components, not all zero.
pub fn inverse_norm(v: &[f32], dims: usize) -> Result<f32, EmbeddingError> {
    if v.len() != dims {
        return Err(EmbeddingError::Dimensions { expected: dims, found: v.len() });
    }
    // Accumulate in f64: 1,536 squares of f32 lose digits, and an overflow must not pass as infinite norm.
    let squares: f64 = v.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    if !squares.is_finite() {
        return Err(EmbeddingError::NotFinite);
    }
    if squares == 0.0 {
        return Err(EmbeddingError::Zero);
    }
    Ok((1.0 / squares.sqrt()) as f32)
}

/// `v` scaled to unit length, after the checks of [`inverse_norm`].
pub fn unit_vector(v: &[f32], dims: usize) -> Result<Vec<f32>, EmbeddingError> {
    let scale = inverse_norm(v, dims)?;
    Ok(v.iter().map(|&x| x * scale).collect())
}

/// Cosine similarity of `query` with each row of `rows` (unit vectors of `dims` components, laid end to
/// end): one matrix-vector product.
pub fn cosine_scores(rows: &[f32], dims: usize, query: &[f32]) -> Result<Array1<f32>, EmbeddingError> {
    let scale = inverse_norm(query, dims)?;
    let n = rows.len() / dims.max(1);
    let matrix = ArrayView2::from_shape((n, dims), &rows[..n * dims])
        .map_err(|_| EmbeddingError::Dimensions { expected: dims, found: rows.len() })?;
    Ok(matrix.dot(&ArrayView1::from(query)) * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_and_scales() {
        assert_eq!(unit_vector(&[1.0, 2.0, 2.0], 2), Err(EmbeddingError::Dimensions { expected: 2, found: 3 }));
        assert_eq!(unit_vector(&[f32::NAN, 1.0], 2), Err(EmbeddingError::NotFinite));
        assert_eq!(unit_vector(&[f32::INFINITY, 1.0], 2), Err(EmbeddingError::NotFinite));
        assert_eq!(unit_vector(&[f32::MAX, f32::MAX], 2).map(|v| v.len()), Ok(2), "large but finite");
        let u = unit_vector(&[1.0, 2.0, 2.0], 3).unwrap();
        assert!((u[0] - 1.0 / 3.0).abs() < 1e-7 && (u[2] - 2.0 / 3.0).abs() < 1e-7);
    }

    #[test]
    fn scores_are_cosines_whatever_the_query_length() {
        let rows = [unit_vector(&[1.0, 0.0], 2).unwrap(), unit_vector(&[1.0, 1.0], 2).unwrap()].concat();
        let s = cosine_scores(&rows, 2, &[10.0, 0.0]).unwrap();
        assert!((s[0] - 1.0).abs() < 1e-6 && (s[1] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert_eq!(
            cosine_scores(&rows, 2, &[1.0]).map(|_| ()),
            Err(EmbeddingError::Dimensions { expected: 2, found: 1 })
        );
        assert_eq!(cosine_scores(&[], 2, &[1.0, 0.0]).map(|s| s.len()), Ok(0));
    }
}
