//! GitHub's own OpenAPI description of its REST API (`@octokit/openapi`,
//! installed by scripts/install-github-openapi, or here on first use),
//! parsed once per test binary, and the checks the scripted server runs on
//! every request: the operation found by method and path template, its
//! required path and query parameters, and the JSON body validated against
//! the operation's requestBody schema (the JSON-Schema subset GitHub uses).

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use serde_json::Value;

/// The pinned description, installed on first use.
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let file = root
            .join(".github-openapi/node_modules/@octokit/openapi/generated/api.github.com.json");
        if !file.is_file() {
            let status = std::process::Command::new("bash")
                .arg(root.join("scripts/install-github-openapi"))
                .status()
                .expect("runs scripts/install-github-openapi");
            assert!(
                status.success(),
                "scripts/install-github-openapi failed (npm and the registry are needed once)"
            );
        }
        let text = std::fs::read_to_string(&file).expect("the OpenAPI description");
        Spec::new(serde_json::from_str(&text).expect("the OpenAPI description is JSON"))
    })
}

/// One path segment of a template.
#[derive(Debug)]
enum Segment {
    Literal(String),
    /// `{name}`; `multi`: GitHub's `x-multi-segment` (a git ref such as
    /// `heads/feature/x`), which takes the rest of the path.
    Param {
        name: String,
        multi: bool,
    },
}

/// One operation of the description.
pub struct Operation {
    pub id: String,
    pub template: String,
    segments: Vec<Segment>,
    /// The operation's parameters with the path item's, `$ref`s resolved.
    parameters: Vec<Value>,
    body: Option<Value>,
}

/// The operation a request matched, with its path parameters.
pub struct Matched<'a> {
    pub op: &'a Operation,
    pub params: HashMap<String, String>,
}

pub struct Spec {
    root: Value,
    /// By upper-case method.
    operations: HashMap<String, Vec<Operation>>,
}

impl Spec {
    fn new(root: Value) -> Spec {
        let mut operations: HashMap<String, Vec<Operation>> = HashMap::new();
        let paths = root["paths"].as_object().expect("paths");
        for (template, item) in paths {
            let shared = item["parameters"].as_array().cloned().unwrap_or_default();
            for (method, op) in item.as_object().expect("path item") {
                if !matches!(
                    method.as_str(),
                    "get" | "post" | "put" | "patch" | "delete" | "head"
                ) {
                    continue;
                }
                let parameters: Vec<Value> = shared
                    .iter()
                    .chain(op["parameters"].as_array().into_iter().flatten())
                    .map(|p| resolve(&root, p).clone())
                    .collect();
                let segments = template
                    .trim_start_matches('/')
                    .split('/')
                    .map(
                        |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                            Some(name) => Segment::Param {
                                name: name.to_string(),
                                multi: parameters.iter().any(|p| {
                                    p["name"] == name && p["x-multi-segment"] == Value::Bool(true)
                                }),
                            },
                            None => Segment::Literal(s.to_string()),
                        },
                    )
                    .collect();
                let body = op["requestBody"]
                    .is_object()
                    .then(|| resolve(&root, &op["requestBody"]).clone());
                operations
                    .entry(method.to_uppercase())
                    .or_default()
                    .push(Operation {
                        id: op["operationId"].as_str().unwrap_or_default().to_string(),
                        template: template.clone(),
                        segments,
                        parameters,
                        body,
                    });
            }
        }
        Spec { root, operations }
    }

    /// The operation for `method path` (path without prefix or query); a
    /// literal segment beats a parameter, as GitHub routes.
    pub fn find(&self, method: &str, path: &str) -> Option<Matched<'_>> {
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut best: Option<(Vec<bool>, Matched<'_>)> = None;
        for op in self.operations.get(method)?.iter() {
            let Some((literals, params)) = match_segments(&op.segments, &parts) else {
                continue;
            };
            if best.as_ref().is_none_or(|(b, _)| literals > *b) {
                best = Some((literals, Matched { op, params }));
            }
        }
        best.map(|(_, m)| m)
    }

    /// What is wrong with a request to `matched`: missing required
    /// parameters, query values off their schema, a body off the schema.
    pub fn check(
        &self,
        matched: &Matched<'_>,
        query: &[(String, String)],
        body: &[u8],
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let op = matched.op;
        for p in &op.parameters {
            let name = p["name"].as_str().unwrap_or_default();
            let value = match p["in"].as_str() {
                Some("path") => matched.params.get(name).cloned(),
                Some("query") => query
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone()),
                _ => continue,
            };
            match value {
                None if p["required"] == Value::Bool(true) => {
                    problems.push(format!("{}: required parameter {name} missing", op.id))
                }
                None => {}
                Some(text) => {
                    let value = scalar(&text, &p["schema"], &self.root);
                    for e in self.validate(&p["schema"], &value, name) {
                        problems.push(format!("{}: parameter {e}", op.id));
                    }
                }
            }
        }
        match &op.body {
            None if !body.is_empty() => problems.push(format!(
                "{}: takes no body, got {} bytes",
                op.id,
                body.len()
            )),
            None => {}
            Some(request_body) => {
                if body.is_empty() {
                    if request_body["required"] == Value::Bool(true) {
                        problems.push(format!("{}: a body is required", op.id));
                    }
                } else {
                    match serde_json::from_slice::<Value>(body) {
                        Err(e) => problems.push(format!("{}: body is not JSON: {e}", op.id)),
                        Ok(value) => {
                            let schema = &request_body["content"]["application/json"]["schema"];
                            for e in self.validate(schema, &value, "body") {
                                problems.push(format!("{}: {e}", op.id));
                            }
                        }
                    }
                }
            }
        }
        problems
    }

    /// Every way `value` (at `at`) breaks `schema`; empty when it fits.
    pub fn validate(&self, schema: &Value, value: &Value, at: &str) -> Vec<String> {
        let schema = resolve(&self.root, schema);
        let mut errors = Vec::new();
        if value.is_null() && schema["nullable"] == Value::Bool(true) {
            return errors;
        }
        if let Some(types) = match &schema["type"] {
            Value::String(t) => Some(vec![t.as_str()]),
            Value::Array(list) => Some(list.iter().filter_map(Value::as_str).collect()),
            _ => None,
        } && !types.iter().any(|t| has_type(value, t))
        {
            errors.push(format!(
                "{at}: expected {}, got {}",
                types.join(" or "),
                value
            ));
            return errors;
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {}", schema["enum"]));
        }
        if let Some(n) = value.as_f64() {
            if let Some(min) = schema["minimum"].as_f64()
                && n < min
            {
                errors.push(format!("{at}: {n} is below the minimum {min}"));
            }
            if let Some(max) = schema["maximum"].as_f64()
                && n > max
            {
                errors.push(format!("{at}: {n} is above the maximum {max}"));
            }
        }
        if let Some(s) = value.as_str() {
            let len = s.chars().count() as u64;
            if schema["minLength"].as_u64().is_some_and(|min| len < min) {
                errors.push(format!(
                    "{at}: shorter than minLength {}",
                    schema["minLength"]
                ));
            }
            if schema["maxLength"].as_u64().is_some_and(|max| len > max) {
                errors.push(format!(
                    "{at}: longer than maxLength {}",
                    schema["maxLength"]
                ));
            }
        }
        if let Some(object) = value.as_object() {
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap_or_default();
                if !object.contains_key(name) {
                    errors.push(format!("{at}: required property {name} missing"));
                }
            }
            let properties = schema["properties"].as_object();
            for (key, v) in object {
                let at = format!("{at}.{key}");
                match properties.and_then(|p| p.get(key)) {
                    Some(sub) => errors.extend(self.validate(sub, v, &at)),
                    None => match &schema["additionalProperties"] {
                        Value::Bool(false) => errors.push(format!("{at}: unknown property")),
                        sub @ Value::Object(_) => errors.extend(self.validate(sub, v, &at)),
                        _ => {}
                    },
                }
            }
        }
        if let Some(items) = value.as_array() {
            let n = items.len() as u64;
            if schema["minItems"].as_u64().is_some_and(|min| n < min) {
                errors.push(format!("{at}: fewer than minItems {}", schema["minItems"]));
            }
            if schema["maxItems"].as_u64().is_some_and(|max| n > max) {
                errors.push(format!("{at}: more than maxItems {}", schema["maxItems"]));
            }
            if schema["items"].is_object() {
                for (i, item) in items.iter().enumerate() {
                    errors.extend(self.validate(&schema["items"], item, &format!("{at}[{i}]")));
                }
            }
        }
        for sub in schema["allOf"].as_array().into_iter().flatten() {
            errors.extend(self.validate(sub, value, at));
        }
        for (word, alternatives) in [("anyOf", &schema["anyOf"]), ("oneOf", &schema["oneOf"])] {
            let Some(alternatives) = alternatives.as_array() else {
                continue;
            };
            let misses: Vec<Vec<String>> = alternatives
                .iter()
                .map(|s| self.validate(s, value, at))
                .collect();
            let fits = misses.iter().filter(|m| m.is_empty()).count();
            if fits == 0 {
                let why: Vec<String> = misses.into_iter().map(|m| m.join(", ")).collect();
                errors.push(format!(
                    "{at}: matches none of {word} ({})",
                    why.join(" | ")
                ));
            } else if fits > 1 && word == "oneOf" {
                errors.push(format!("{at}: matches {fits} of oneOf, not exactly one"));
            }
        }
        errors
    }
}

/// Segment-wise match; `Some((literal flags, params))`.
fn match_segments(
    segments: &[Segment],
    parts: &[&str],
) -> Option<(Vec<bool>, HashMap<String, String>)> {
    let mut literals = Vec::new();
    let mut params = HashMap::new();
    let mut i = 0;
    for (n, segment) in segments.iter().enumerate() {
        match segment {
            Segment::Literal(text) => {
                if parts.get(i) != Some(&text.as_str()) {
                    return None;
                }
                literals.push(true);
                i += 1;
            }
            Segment::Param { name, multi } => {
                let rest = segments.len() - n - 1;
                let take = if *multi {
                    parts.len().checked_sub(i + rest)?
                } else {
                    1
                };
                if take == 0 || i + take > parts.len() {
                    return None;
                }
                let value = parts[i..i + take].join("/");
                if value.is_empty() {
                    return None;
                }
                params.insert(name.clone(), percent_decode(&value));
                literals.push(false);
                i += take;
            }
        }
    }
    (i == parts.len()).then_some((literals, params))
}

/// A `$ref` into the description followed (repeatedly); anything else as is.
fn resolve<'a>(root: &'a Value, value: &'a Value) -> &'a Value {
    let mut value = value;
    while let Some(reference) = value["$ref"].as_str() {
        let pointer = reference.strip_prefix('#').expect("local $ref");
        value = root
            .pointer(pointer)
            .unwrap_or_else(|| panic!("unresolved $ref {reference}"));
    }
    value
}

fn has_type(value: &Value, ty: &str) -> bool {
    match ty {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "null" => value.is_null(),
        _ => true,
    }
}

/// A path or query value as the JSON its schema wants (a number or a
/// boolean from its text), for the validator.
fn scalar(text: &str, schema: &Value, root: &Value) -> Value {
    let schema = resolve(root, schema);
    match schema["type"].as_str() {
        Some("integer") => text.parse::<i64>().map(Value::from).unwrap_or(text.into()),
        Some("number") => text.parse::<f64>().map(Value::from).unwrap_or(text.into()),
        Some("boolean") => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => text.into(),
        },
        _ => Value::String(text.to_string()),
    }
}

/// `%XX` escapes decoded (path segments; query values have `+` made a
/// space first).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(hex) = std::str::from_utf8(&bytes[i + 1..i + 3])
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
