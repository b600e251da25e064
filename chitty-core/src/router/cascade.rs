//! The smart router's optional third stage, a cascade (as in FrugalGPT): the cheap candidate answers first,
//! and the answer is checked; when a check fails the request escalates to the next candidate.
//!
//! **Cascades are for non-streamed requests only.** A streamed answer has reached the client before it can
//! be checked, so a streamed request is routed by rules and classifier alone. The checks, each switchable
//! in [`CascadeConfig::checks`]:
//!
//! - `empty`: no choice, or a choice with neither text nor tool calls;
//! - `refusal`: the `refusal` field is set, `finish_reason` is `content_filter`, or a short answer opens
//!   with a stock refusal ("I'm sorry, but I can't …"; see [`REFUSAL_OPENINGS`]);
//! - `json`: JSON mode (`json_object` or `json_schema`) was asked for and the text does not parse;
//! - `schema`: the text does not satisfy the `json_schema` given, checked over the subset of JSON Schema
//!   that structured outputs use (see [`schema_violation`]);
//! - `tool_call`: `tool_choice` was `required` or named a function, and the answer calls no tool (or not
//!   that function).
//!
//! ```
//! use chitty_core::router::{AnswerExpectations, CascadeConfig, Escalation};
//! use chitty_core::wire::{ChatCompletionRequest, ChatCompletionResponse};
//!
//! let request: ChatCompletionRequest = serde_json::from_str(
//!     r#"{"model": "auto", "messages": [{"role": "user", "content": "Give me a JSON colour"}],
//!         "response_format": {"type": "json_object"}}"#,
//! )?;
//! let answer: ChatCompletionResponse = serde_json::from_str(
//!     r#"{"id": "1", "object": "chat.completion", "created": 0, "model": "small",
//!         "choices": [{"index": 0, "message": {"role": "assistant", "content": "Sure! {\"colour\": "},
//!                      "finish_reason": "stop"}]}"#,
//! )?;
//! let expect = AnswerExpectations::of(&request);
//! let verdict = CascadeConfig::default().check(&expect, &answer);
//! assert_eq!(verdict, Err(Escalation::InvalidJson));
//! assert_eq!(Escalation::InvalidJson.label(), "invalid_json");
//! # Ok::<(), serde_json::Error>(())
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::wire::{ChatCompletionRequest, ChatCompletionResponse, ChatMessage};

/// Openings of stock refusals, compared case-insensitively with the start of a short answer.
pub const REFUSAL_OPENINGS: &[&str] = &[
    "i'm sorry, but i can't",
    "i'm sorry, but i cannot",
    "i’m sorry, but i can’t",
    "i am sorry, but i cannot",
    "i can't help with",
    "i can’t help with",
    "i cannot help with",
    "i can't assist with",
    "i can’t assist with",
    "i cannot assist with",
    "i'm unable to help",
    "i am unable to help",
    "sorry, i can't",
    "sorry, i cannot",
];

/// Answers longer than this are not read as stock refusals: a long answer that opens with an apology is
/// usually answering.
const REFUSAL_MAX_BYTES: usize = 400;

/// Deepest schema nesting (or `$ref` chain) followed; deeper parts are accepted unchecked.
const MAX_SCHEMA_DEPTH: usize = 32;

/// One check of the cascade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CascadeCheck {
    /// No text and no tool call.
    Empty,
    /// The model declined.
    Refusal,
    /// JSON mode asked, text not JSON.
    Json,
    /// JSON schema given, text does not satisfy it.
    Schema,
    /// A tool call required, none made.
    ToolCall,
}

/// `[routers.cascade]`: which checks escalate, and how far.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CascadeConfig {
    /// The checks that escalate (all of them by default).
    pub checks: Vec<CascadeCheck>,
    /// Most escalations per request (each one is another upstream call, charged).
    pub max_escalations: u32,
}

impl Default for CascadeConfig {
    fn default() -> Self {
        CascadeConfig {
            checks: vec![
                CascadeCheck::Empty,
                CascadeCheck::Refusal,
                CascadeCheck::Json,
                CascadeCheck::Schema,
                CascadeCheck::ToolCall,
            ],
            max_escalations: 1,
        }
    }
}

/// Why an answer escalates.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Escalation {
    /// No choice had text or a tool call.
    Empty,
    /// The model refused.
    Refusal,
    /// JSON mode was asked for and the text is not JSON.
    InvalidJson,
    /// The JSON does not satisfy the schema.
    SchemaViolation {
        /// Where, as a JSON pointer into the answer (`/items/2/name`).
        at: String,
        /// What is wrong.
        reason: String,
    },
    /// A tool call was required and none (or not the required function) was made.
    ToolCallMissing,
}

impl Escalation {
    /// A short machine-readable label (for the router's reason and the request event).
    pub fn label(&self) -> &'static str {
        match self {
            Escalation::Empty => "empty",
            Escalation::Refusal => "refusal",
            Escalation::InvalidJson => "invalid_json",
            Escalation::SchemaViolation { .. } => "schema",
            Escalation::ToolCallMissing => "tool_call_missing",
        }
    }
}

/// What the request asked of its answer: read once, before the first candidate is called.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AnswerExpectations {
    /// JSON mode (`json_object` or `json_schema`).
    pub json: bool,
    /// The `json_schema.schema` given, if any.
    pub schema: Option<Value>,
    /// `tool_choice` was `required` (any tool) or named a function (`Some(Some(name))`).
    pub tool_call: Option<Option<String>>,
}

impl AnswerExpectations {
    /// What `request` expects of its answer.
    pub fn of(request: &ChatCompletionRequest) -> AnswerExpectations {
        let format = request.response_format.as_ref();
        let kind = format.and_then(|f| f.get("type")).and_then(Value::as_str);
        let schema = match kind {
            Some("json_schema") => format.and_then(|f| f.pointer("/json_schema/schema")).cloned(),
            _ => None,
        };
        let tool_call = match &request.tool_choice {
            Some(Value::String(s)) if s == "required" => Some(None),
            Some(choice @ Value::Object(_)) => {
                choice.pointer("/function/name").and_then(Value::as_str).map(|n| Some(n.to_owned()))
            }
            _ => None,
        };
        AnswerExpectations { json: matches!(kind, Some("json_object" | "json_schema")), schema, tool_call }
    }
}

impl CascadeConfig {
    /// Checks `answer` against what the request expected: `Err` with the first failing check when the
    /// request should go to the next candidate. Every choice is checked (`n > 1`: all must pass).
    pub fn check(&self, expect: &AnswerExpectations, answer: &ChatCompletionResponse) -> Result<(), Escalation> {
        let on = |c: CascadeCheck| self.checks.contains(&c);
        if answer.choices.is_empty() {
            return if on(CascadeCheck::Empty) { Err(Escalation::Empty) } else { Ok(()) };
        }
        for choice in &answer.choices {
            let message = &choice.message;
            let text = message.text_content();
            let calls = message.tool_calls.as_deref().unwrap_or_default();
            if on(CascadeCheck::Refusal) && is_refusal(message, choice.finish_reason.as_deref(), &text) {
                return Err(Escalation::Refusal);
            }
            if on(CascadeCheck::Empty) && text.trim().is_empty() && calls.is_empty() {
                return Err(Escalation::Empty);
            }
            if on(CascadeCheck::ToolCall)
                && let Some(required) = &expect.tool_call
            {
                let made = match required {
                    None => !calls.is_empty(),
                    Some(name) => calls.iter().any(|c| &c.function.name == name),
                };
                if !made {
                    return Err(Escalation::ToolCallMissing);
                }
            }
            // A tool call answers instead of text: JSON checks apply to text answers only.
            if expect.json && calls.is_empty() && (on(CascadeCheck::Json) || on(CascadeCheck::Schema)) {
                let Ok(value) = serde_json::from_str::<Value>(&text) else {
                    if on(CascadeCheck::Json) {
                        return Err(Escalation::InvalidJson);
                    }
                    continue;
                };
                if on(CascadeCheck::Schema)
                    && let Some(schema) = &expect.schema
                    && let Some((at, reason)) = schema_violation(schema, &value)
                {
                    return Err(Escalation::SchemaViolation { at, reason });
                }
            }
        }
        Ok(())
    }
}

/// Whether the message declines: the structured `refusal`, a content filter, or a short stock refusal.
fn is_refusal(message: &ChatMessage, finish_reason: Option<&str>, text: &str) -> bool {
    if message.refusal.as_deref().is_some_and(|r| !r.trim().is_empty()) || finish_reason == Some("content_filter") {
        return true;
    }
    let text = text.trim_start();
    text.len() <= REFUSAL_MAX_BYTES
        && REFUSAL_OPENINGS
            .iter()
            .any(|opening| text.get(..opening.len()).is_some_and(|head| head.eq_ignore_ascii_case(opening)))
}

/// The first place where `value` fails `schema`, as `(JSON pointer, reason)`; `None` when it satisfies it.
///
/// The subset checked is what structured outputs use: `type` (one or a list), `enum`, `const`,
/// `properties`, `required`, `additionalProperties` (boolean or schema), `items` (one schema),
/// `prefixItems`, `minItems`, `maxItems`, `minLength`, `maxLength` (in characters), `minimum`, `maximum`,
/// `exclusiveMinimum`, `exclusiveMaximum`, `anyOf`, `oneOf`, `allOf`, `not`, and `$ref` to
/// `#`, `#/$defs/…` or `#/definitions/…`. Other keywords (`pattern`, `format`, remote `$ref`, …) are not
/// checked: an answer is never escalated for a keyword this checker does not know. Nesting deeper than 32
/// levels is accepted unchecked.
pub fn schema_violation(schema: &Value, value: &Value) -> Option<(String, String)> {
    let mut at = String::new();
    check_schema(schema, schema, value, &mut at, 0).map(|reason| (at, reason))
}

/// Checks `value` against `schema` (`root` resolves `$ref`); on failure `at` holds the pointer.
fn check_schema(root: &Value, schema: &Value, value: &Value, at: &mut String, depth: usize) -> Option<String> {
    if depth > MAX_SCHEMA_DEPTH {
        return None;
    }
    let schema = match schema {
        Value::Bool(true) => return None,
        Value::Bool(false) => return Some("no value is allowed here".to_owned()),
        Value::Object(map) => map,
        _ => return None,
    };
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str)
        && let Some(target) = resolve_ref(root, reference)
        && let Some(reason) = check_schema(root, target, value, at, depth + 1)
    {
        return Some(reason);
    }
    if let Some(types) = schema.get("type")
        && !type_matches(types, value)
    {
        return Some(format!("expected type {types}, found {}", type_name(value)));
    }
    if let Some(Value::Array(allowed)) = schema.get("enum")
        && !allowed.iter().any(|a| json_equal(a, value))
    {
        return Some("not one of the enumerated values".to_owned());
    }
    if let Some(constant) = schema.get("const")
        && !json_equal(constant, value)
    {
        return Some(format!("expected the constant {constant}"));
    }
    if let Some(reason) = check_combinators(root, schema, value, at, depth) {
        return Some(reason);
    }
    match value {
        Value::Object(object) => check_object(root, schema, object, at, depth),
        Value::Array(items) => check_array(root, schema, items, at, depth),
        Value::String(s) => {
            let chars = s.chars().count() as u64;
            bound(schema, "minLength", |n| chars >= n, "shorter than minLength")
                .or_else(|| bound(schema, "maxLength", |n| chars <= n, "longer than maxLength"))
        }
        Value::Number(n) => n.as_f64().and_then(|x| check_number(schema, x)),
        _ => None,
    }
}

/// `anyOf`, `oneOf`, `allOf` and `not` (a failing branch's pointer is not kept: the reason names the keyword).
fn check_combinators(
    root: &Value,
    schema: &serde_json::Map<String, Value>,
    value: &Value,
    at: &mut String,
    depth: usize,
) -> Option<String> {
    let passes = |branch: &Value| check_schema(root, branch, value, &mut String::new(), depth + 1).is_none();
    if let Some(Value::Array(all)) = schema.get("allOf") {
        for branch in all {
            if let Some(reason) = check_schema(root, branch, value, at, depth + 1) {
                return Some(reason);
            }
        }
    }
    if let Some(Value::Array(any)) = schema.get("anyOf")
        && !any.iter().any(passes)
    {
        return Some("matches none of anyOf".to_owned());
    }
    if let Some(Value::Array(one)) = schema.get("oneOf")
        && one.iter().filter(|b| passes(b)).count() != 1
    {
        return Some("does not match exactly one of oneOf".to_owned());
    }
    if let Some(not) = schema.get("not")
        && passes(not)
    {
        return Some("matches the schema under not".to_owned());
    }
    None
}

fn check_object(
    root: &Value,
    schema: &serde_json::Map<String, Value>,
    object: &serde_json::Map<String, Value>,
    at: &mut String,
    depth: usize,
) -> Option<String> {
    if let Some(Value::Array(required)) = schema.get("required")
        && let Some(missing) = required.iter().filter_map(Value::as_str).find(|k| !object.contains_key(*k))
    {
        return Some(format!("missing required property `{missing}`"));
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    for (key, item) in object {
        let sub = match properties.and_then(|p| p.get(key)) {
            Some(sub) => sub,
            None => match additional {
                Some(Value::Bool(false)) => return Some(format!("property `{key}` is not allowed")),
                Some(sub @ Value::Object(_)) => sub,
                _ => continue,
            },
        };
        let len = at.len();
        at.push('/');
        push_pointer_token(at, key);
        if let Some(reason) = check_schema(root, sub, item, at, depth + 1) {
            return Some(reason);
        }
        at.truncate(len);
    }
    None
}

fn check_array(
    root: &Value,
    schema: &serde_json::Map<String, Value>,
    items: &[Value],
    at: &mut String,
    depth: usize,
) -> Option<String> {
    let count = items.len() as u64;
    if let Some(reason) = bound(schema, "minItems", |n| count >= n, "fewer items than minItems")
        .or_else(|| bound(schema, "maxItems", |n| count <= n, "more items than maxItems"))
    {
        return Some(reason);
    }
    let prefix = schema.get("prefixItems").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let rest = schema.get("items").filter(|s| s.is_object() || s.is_boolean());
    for (i, item) in items.iter().enumerate() {
        let Some(sub) = prefix.get(i).or(rest) else { continue };
        let len = at.len();
        at.push('/');
        at.push_str(&i.to_string());
        if let Some(reason) = check_schema(root, sub, item, at, depth + 1) {
            return Some(reason);
        }
        at.truncate(len);
    }
    None
}

fn check_number(schema: &serde_json::Map<String, Value>, x: f64) -> Option<String> {
    let limit = |key: &str| schema.get(key).and_then(Value::as_f64);
    if limit("minimum").is_some_and(|m| x < m) {
        return Some("below minimum".to_owned());
    }
    if limit("maximum").is_some_and(|m| x > m) {
        return Some("above maximum".to_owned());
    }
    if limit("exclusiveMinimum").is_some_and(|m| x <= m) {
        return Some("not above exclusiveMinimum".to_owned());
    }
    if limit("exclusiveMaximum").is_some_and(|m| x >= m) {
        return Some("not below exclusiveMaximum".to_owned());
    }
    None
}

/// `Some(reason)` when `schema[key]` is a count that `holds` rejects.
fn bound(
    schema: &serde_json::Map<String, Value>,
    key: &str,
    holds: impl Fn(u64) -> bool,
    reason: &str,
) -> Option<String> {
    let n = schema.get(key).and_then(Value::as_u64)?;
    (!holds(n)).then(|| reason.to_owned())
}

/// `#`, `#/$defs/name` or `#/definitions/name` (with JSON pointer escapes); other references are not followed.
fn resolve_ref<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    root.pointer(pointer)
}

fn push_pointer_token(at: &mut String, key: &str) {
    for c in key.chars() {
        match c {
            '~' => at.push_str("~0"),
            '/' => at.push_str("~1"),
            c => at.push(c),
        }
    }
}

fn type_matches(types: &Value, value: &Value) -> bool {
    let one = |t: &Value| match t.as_str() {
        Some("null") => value.is_null(),
        Some("boolean") => value.is_boolean(),
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("number") => value.is_number(),
        Some("integer") => {
            value.as_i64().is_some() || value.as_u64().is_some() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        // An unknown type name is not checked.
        _ => true,
    };
    match types {
        Value::Array(list) => list.iter().any(one),
        t => one(t),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// JSON equality where `1` and `1.0` are the same number, as JSON Schema compares them.
fn json_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64().zip(y.as_f64()).is_some_and(|(x, y)| x == y),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request(format: Value, tool_choice: Option<Value>) -> ChatCompletionRequest {
        let mut r: ChatCompletionRequest =
            serde_json::from_value(json!({"model": "auto", "messages": [{"role": "user", "content": "x"}]})).unwrap();
        r.response_format = (!format.is_null()).then_some(format);
        r.tool_choice = tool_choice;
        r
    }

    fn answer(message: Value, finish: &str) -> ChatCompletionResponse {
        serde_json::from_value(json!({"id": "a", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}]}))
        .unwrap()
    }

    fn text(t: &str) -> ChatCompletionResponse {
        answer(json!({"role": "assistant", "content": t}), "stop")
    }

    fn check(expect: &AnswerExpectations, a: &ChatCompletionResponse) -> Result<(), Escalation> {
        CascadeConfig::default().check(expect, a)
    }

    #[test]
    fn plain_answers_pass_and_empty_ones_escalate() {
        let expect = AnswerExpectations::of(&request(Value::Null, None));
        assert_eq!(check(&expect, &text("Paris.")), Ok(()));
        assert_eq!(check(&expect, &text("  \n")), Err(Escalation::Empty));
        assert_eq!(
            check(&expect, &answer(json!({"role": "assistant", "content": null}), "stop")),
            Err(Escalation::Empty)
        );
        let mut none = text("x");
        none.choices.clear();
        assert_eq!(check(&expect, &none), Err(Escalation::Empty));
        let off = CascadeConfig { checks: vec![CascadeCheck::Refusal], max_escalations: 1 };
        assert_eq!(off.check(&expect, &text("")), Ok(()), "a check that is off never escalates");
    }

    #[test]
    fn refusals_escalate() {
        let expect = AnswerExpectations::of(&request(Value::Null, None));
        assert_eq!(check(&expect, &text("I'm sorry, but I can't help with that.")), Err(Escalation::Refusal));
        assert_eq!(check(&expect, &text("i can’t assist with this request")), Err(Escalation::Refusal));
        let structured = answer(json!({"role": "assistant", "content": null, "refusal": "No."}), "stop");
        assert_eq!(check(&expect, &structured), Err(Escalation::Refusal));
        assert_eq!(check(&expect, &text("partial")), Ok(()));
        assert_eq!(
            check(&expect, &answer(json!({"role": "assistant", "content": "partial"}), "content_filter")),
            Err(Escalation::Refusal)
        );
        let long = format!("I'm sorry, but I can't be brief: {}", "here is the answer. ".repeat(40));
        assert_eq!(check(&expect, &text(&long)), Ok(()), "a long answer opening with an apology is an answer");
        assert_eq!(check(&expect, &text("Sorry for the wait: 42.")), Ok(()));
    }

    #[test]
    fn json_mode_needs_json() {
        let expect = AnswerExpectations::of(&request(json!({"type": "json_object"}), None));
        assert!(expect.json && expect.schema.is_none());
        assert_eq!(check(&expect, &text(r#"{"a": 1}"#)), Ok(()));
        assert_eq!(check(&expect, &text("```json\n{\"a\": 1}\n```")), Err(Escalation::InvalidJson));
        assert_eq!(check(&expect, &text(r#"{"a": 1"#)), Err(Escalation::InvalidJson));
        let plain = AnswerExpectations::of(&request(json!({"type": "text"}), None));
        assert_eq!(check(&plain, &text("not json")), Ok(()));
    }

    #[test]
    fn schemas_are_checked() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}, "maxItems": 2},
                "score": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                "kind": {"enum": ["a", "b"]}
            },
            "required": ["name", "tags"],
            "additionalProperties": false,
            "$defs": {"tag": {"type": "string", "maxLength": 3}}
        });
        let expect = AnswerExpectations::of(&request(
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": true}}),
            None,
        ));
        assert!(expect.schema.is_some());
        let verdict = |t: &str| {
            check(&expect, &text(t)).map_err(|e| match e {
                Escalation::SchemaViolation { at, .. } => at,
                other => other.label().to_owned(),
            })
        };
        assert_eq!(verdict(r#"{"name": "n", "tags": ["ab"], "score": null, "kind": "a"}"#), Ok(()));
        assert_eq!(verdict(r#"{"name": "n", "tags": [], "score": 0.5}"#), Ok(()));
        assert_eq!(verdict(r#"{"tags": []}"#), Err(String::new()), "missing name, at the root");
        assert_eq!(verdict(r#"{"name": "", "tags": []}"#), Err("/name".into()));
        assert_eq!(verdict(r#"{"name": "n", "tags": ["ok", "long"]}"#), Err("/tags/1".into()));
        assert_eq!(verdict(r#"{"name": "n", "tags": ["a", "b", "c"]}"#), Err("/tags".into()));
        assert_eq!(verdict(r#"{"name": "n", "tags": [], "score": 2}"#), Err("/score".into()));
        assert_eq!(verdict(r#"{"name": "n", "tags": [], "kind": "c"}"#), Err("/kind".into()));
        assert_eq!(verdict(r#"{"name": "n", "tags": [], "extra": 1}"#), Err(String::new()));
        assert_eq!(verdict(r#"[1]"#), Err(String::new()));
        assert_eq!(verdict("nope"), Err("invalid_json".into()));
    }

    #[test]
    fn schema_combinators_and_edge_cases() {
        let v = |s: Value, x: Value| schema_violation(&s, &x).map(|(at, _)| at);
        assert_eq!(v(json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}), json!(3)), None);
        assert_eq!(v(json!({"anyOf": [{"type": "string"}, {"type": "integer"}]}), json!(3.5)), Some(String::new()));
        assert_eq!(v(json!({"oneOf": [{"type": "number"}, {"type": "integer"}]}), json!(3)), Some(String::new()));
        assert_eq!(v(json!({"allOf": [{"type": "object"}, {"required": ["a"]}]}), json!({})), Some(String::new()));
        assert_eq!(v(json!({"not": {"type": "null"}}), json!(null)), Some(String::new()));
        assert_eq!(v(json!({"const": 1}), json!(1.0)), None, "1 and 1.0 are the same number");
        assert_eq!(v(json!({"type": "integer"}), json!(2.0)), None);
        assert_eq!(v(json!({"pattern": "^a$", "format": "email"}), json!("b")), None, "unknown keywords pass");
        assert_eq!(v(json!({"$ref": "https://example.invalid/s.json"}), json!(1)), None);
        assert_eq!(v(json!({"properties": {"a/b": {"type": "string"}}}), json!({"a/b": 1})), Some("/a~1b".into()));
        assert_eq!(
            v(json!({"prefixItems": [{"type": "string"}], "items": {"type": "integer"}}), json!(["x", 1, "y"])),
            Some("/2".into())
        );
        assert_eq!(v(json!(false), json!(1)), Some(String::new()));
        // A schema that refers to itself terminates.
        let recursive = json!({"type": "object", "properties": {"child": {"$ref": "#"}}});
        let mut deep = json!({});
        for _ in 0..100 {
            deep = json!({"child": deep});
        }
        assert_eq!(v(recursive.clone(), deep), None, "nesting past the depth bound is accepted");
        assert_eq!(v(recursive, json!({"child": {"child": 1}})), Some("/child/child".into()));
        assert_eq!(v(json!({"$ref": "#"}), json!(1)), None, "a reference loop stops at the depth bound");
    }

    #[test]
    fn required_tool_calls() {
        let call = json!({"role": "assistant", "content": null,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]});
        let any = AnswerExpectations::of(&request(Value::Null, Some(json!("required"))));
        assert_eq!(any.tool_call, Some(None));
        assert_eq!(check(&any, &answer(call.clone(), "tool_calls")), Ok(()));
        assert_eq!(check(&any, &text("I would call lookup")), Err(Escalation::ToolCallMissing));
        let named = AnswerExpectations::of(&request(
            Value::Null,
            Some(json!({"type": "function", "function": {"name": "other"}})),
        ));
        assert_eq!(check(&named, &answer(call.clone(), "tool_calls")), Err(Escalation::ToolCallMissing));
        let auto = AnswerExpectations::of(&request(Value::Null, Some(json!("auto"))));
        assert_eq!(auto.tool_call, None);
        assert_eq!(check(&auto, &text("no call needed")), Ok(()));
        // A tool call under JSON mode is not checked as JSON text.
        let json_any = AnswerExpectations::of(&request(json!({"type": "json_object"}), Some(json!("required"))));
        assert_eq!(check(&json_any, &answer(call, "tool_calls")), Ok(()));
    }
}
