//! `/v1/embeddings`.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::Extra;

/// The `input` of an embeddings request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    /// One text.
    Text(String),
    /// Several texts.
    Texts(Vec<String>),
    /// One token list.
    Tokens(Vec<u32>),
    /// Several token lists.
    TokenLists(Vec<Vec<u32>>),
}

impl Default for EmbeddingInput {
    fn default() -> Self {
        EmbeddingInput::Text(String::new())
    }
}

impl EmbeddingInput {
    /// Number of inputs (one embedding each).
    pub fn len(&self) -> usize {
        match self {
            EmbeddingInput::Text(_) | EmbeddingInput::Tokens(_) => 1,
            EmbeddingInput::Texts(v) => v.len(),
            EmbeddingInput::TokenLists(v) => v.len(),
        }
    }

    /// Whether there is no input at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `encoding_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// JSON arrays of floats.
    #[default]
    Float,
    /// Base64 of little-endian `f32` bytes.
    Base64,
}

/// An embeddings request.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    /// Model name.
    pub model: String,
    /// What to embed.
    pub input: EmbeddingInput,
    /// Vector encoding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_format: Option<EncodingFormat>,
    /// Output dimensions, for models that support shortening.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// End-user identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An embedding vector, as floats or as base64.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// Floats.
    Float(Vec<f32>),
    /// Base64 of little-endian `f32` bytes.
    Base64(String),
}

impl EmbeddingVector {
    /// The vector as floats, decoding base64 if needed.
    pub fn to_floats(&self) -> Result<Vec<f32>, crate::Error> {
        match self {
            EmbeddingVector::Float(v) => Ok(v.clone()),
            EmbeddingVector::Base64(s) => {
                let bytes = base64::engine::general_purpose::STANDARD.decode(s).map_err(|e| {
                    crate::Error::InvalidInput { what: "base64 embedding".into(), reason: e.to_string() }
                })?;
                if bytes.len() % 4 != 0 {
                    return Err(crate::Error::InvalidInput {
                        what: "base64 embedding".into(),
                        reason: format!("{} bytes is not a whole number of f32", bytes.len()),
                    });
                }
                Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
            }
        }
    }

    /// The vector in `format`.
    pub fn encode(&self, format: EncodingFormat) -> Result<EmbeddingVector, crate::Error> {
        match (self, format) {
            (EmbeddingVector::Float(_), EncodingFormat::Float)
            | (EmbeddingVector::Base64(_), EncodingFormat::Base64) => Ok(self.clone()),
            (EmbeddingVector::Base64(_), EncodingFormat::Float) => Ok(EmbeddingVector::Float(self.to_floats()?)),
            (EmbeddingVector::Float(v), EncodingFormat::Base64) => {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                Ok(EmbeddingVector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes)))
            }
        }
    }
}

/// One embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// `embedding`.
    pub object: String,
    /// Index of the input.
    pub index: u32,
    /// The vector.
    pub embedding: EmbeddingVector,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Extra,
}

/// Token usage of an embeddings call.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    /// Input tokens.
    pub prompt_tokens: u64,
    /// Same as prompt tokens.
    pub total_tokens: u64,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Extra,
}

/// An embeddings response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    /// `list`.
    pub object: String,
    /// One embedding per input.
    pub data: Vec<Embedding>,
    /// Model that answered.
    pub model: String,
    /// Token usage.
    pub usage: EmbeddingUsage,
    /// Fields not modelled here.
    #[serde(flatten)]
    pub extra: Extra,
}
