//! `/v1/models`.

use super::Extra;
use super::codec::wire_object;

/// One model in the model list.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelObject {
    /// Model name.
    pub id: String,
    /// `model`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// Owner.
    pub owned_by: String,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(ModelObject { id: required, object: required, created: required, owned_by: required });

/// `GET /v1/models`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelList {
    /// `list`.
    pub object: String,
    /// The models.
    pub data: Vec<ModelObject>,
    /// Fields not modelled here.
    pub extra: Extra,
}

wire_object!(ModelList { object: required, data: required });
