//! `/v1/embeddings`.

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize};

use super::Extra;
use super::codec::{OneOrMany, TextOrTokens, wire_object};

/// The `input` of an embeddings request.
#[derive(Debug, Clone, PartialEq, Serialize)]
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

impl<'de> Deserialize<'de> for EmbeddingInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match TextOrTokens::deserialize(deserializer)? {
            TextOrTokens::Text(t) => EmbeddingInput::Text(t),
            TextOrTokens::Texts(t) => EmbeddingInput::Texts(t),
            TextOrTokens::Tokens(t) => EmbeddingInput::Tokens(t),
            TextOrTokens::TokenLists(t) => EmbeddingInput::TokenLists(t),
        })
    }
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
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EmbeddingRequest {
    /// Model name.
    pub model: String,
    /// What to embed.
    pub input: EmbeddingInput,
    /// Vector encoding.
    pub encoding_format: Option<EncodingFormat>,
    /// Output dimensions, for models that support shortening.
    pub dimensions: Option<u32>,
    /// End-user identifier.
    pub user: Option<String>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(EmbeddingRequest {
    model: required,
    input: required,
    encoding_format: optional,
    dimensions: optional,
    user: optional
});

/// An embedding vector, as floats or as base64.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    /// Floats.
    Float(Vec<f32>),
    /// Base64 of little-endian `f32` bytes.
    Base64(String),
}

impl<'de> Deserialize<'de> for EmbeddingVector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match OneOrMany::deserialize(deserializer, "an array of floats or a base64 string")? {
            OneOrMany::One(s) => EmbeddingVector::Base64(s),
            OneOrMany::Many(v) => EmbeddingVector::Float(v),
        })
    }
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
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// `embedding`.
    pub object: String,
    /// Index of the input.
    pub index: u32,
    /// The vector.
    pub embedding: EmbeddingVector,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(Embedding { object: required, index: required, embedding: required });

/// Token usage of an embeddings call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EmbeddingUsage {
    /// Input tokens.
    pub prompt_tokens: u64,
    /// Same as prompt tokens.
    pub total_tokens: u64,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(EmbeddingUsage { prompt_tokens: required, total_tokens: required });

/// An embeddings response.
#[derive(Debug, Clone, PartialEq)]
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
    pub extra: Extra,
}

wire_object!(EmbeddingResponse { object: required, data: required, model: required, usage: required });
