//! # chitty-delta
//!
//! Delta compressors for fine-tuned model weights against a base.
//! (Filled in by the delta issue.)
