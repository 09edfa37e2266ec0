//! The core's error: what went wrong, in terms a client can act on.
//! `crate::error` maps each kind to a gRPC code (and its structured
//! details); nothing else does.

use std::fmt;

use super::model::TaskState;
use super::state::IllegalTransition;

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// Request fields are wrong: every one a check found, each named as the
    /// request's proto names it (`spec.timeout`, `page_size`).
    #[error("{0}")]
    InvalidArgument(Violations),

    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },

    #[error("{0}")]
    AlreadyExists(String),

    #[error(transparent)]
    IllegalTransition(#[from] IllegalTransition),

    /// The request does not fit the task's current state.
    #[error("{0}")]
    FailedPrecondition(String),

    /// A request made of a task in a state that does not allow it: which
    /// task, the state it is in and the states it would have to be in.
    #[error("{0}")]
    WrongState(WrongState),

    /// A position (a watch cursor) outside what the server still holds.
    #[error("{0}")]
    OutOfRange(String),

    /// The server is shutting down or a dependency is away; retry later.
    #[error("{0}")]
    Unavailable(String),

    /// A fault of ours (the store failed); details are logged.
    #[error("internal error: {0}")]
    Internal(String),
}

impl CoreError {
    /// One bad field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        CoreError::InvalidArgument(Violations::one(field, message))
    }

    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        CoreError::NotFound {
            what,
            id: id.to_string(),
        }
    }
}

impl From<Violations> for CoreError {
    fn from(violations: Violations) -> Self {
        CoreError::InvalidArgument(violations)
    }
}

pub type CoreResult<T> = Result<T, CoreError>;

/// The result of a check that reads only the request: every bad field.
pub type Checked<T = ()> = Result<T, Violations>;

/// One bad field of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    /// The field's path as the proto names it: `spec.agent.max_budget_usd`,
    /// `task_ids[2]`.
    pub field: String,
    /// Why it is refused, a sentence fragment that follows the field name.
    pub description: String,
}

/// The bad fields of a request, in the order they were checked. Reads as
/// the first one, `field: why`, followed by how many more there are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn one(field: impl Into<String>, description: impl Into<String>) -> Self {
        let mut v = Violations::default();
        v.add(field, description);
        v
    }

    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    pub fn extend(&mut self, more: Violations) {
        self.0.extend(more.0);
    }

    /// Keeps what a check found and gives back its value, if it had one.
    pub fn take<T>(&mut self, checked: Checked<T>) -> Option<T> {
        match checked {
            Ok(value) => Some(value),
            Err(found) => {
                self.extend(found);
                None
            }
        }
    }

    /// Err with every violation found, Ok when there are none.
    pub fn into_result(self) -> Checked {
        if self.0.is_empty() { Ok(()) } else { Err(self) }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, FieldViolation> {
        self.0.iter()
    }

    /// The first violation's field (empty when there are none).
    pub fn first_field(&self) -> &str {
        self.0.first().map_or("", |v| v.field.as_str())
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some((first, rest)) = self.0.split_first() else {
            return f.write_str("the request is invalid");
        };
        write!(f, "{}: {}", first.field, first.description)?;
        if !rest.is_empty() {
            let mut fields: Vec<&str> = Vec::new();
            for v in rest {
                if !fields.contains(&v.field.as_str()) {
                    fields.push(&v.field);
                }
            }
            write!(f, "; and {} more ({})", rest.len(), fields.join(", "))?;
        }
        Ok(())
    }
}

impl<'a> IntoIterator for &'a Violations {
    type Item = &'a FieldViolation;
    type IntoIter = std::slice::Iter<'a, FieldViolation>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A task that is not in a state the request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrongState {
    pub task_id: String,
    pub current: TaskState,
    /// The states the request would be accepted in.
    pub wanted: Vec<TaskState>,
    /// What the status message says.
    pub message: String,
}

impl WrongState {
    /// `current COMPLETED; wanted READY` (`wanted one of A, B` for several):
    /// the details' description.
    pub fn description(&self) -> String {
        let wanted: Vec<String> = self.wanted.iter().map(|s| upper(*s)).collect();
        let one_of = if wanted.len() > 1 { "one of " } else { "" };
        format!(
            "current {}; wanted {one_of}{}",
            upper(self.current),
            wanted.join(", ")
        )
    }
}

fn upper(state: TaskState) -> String {
    state.as_str().to_uppercase()
}

impl fmt::Display for WrongState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Two checks of one request: both values, or the violations of either.
pub fn both<A, B>(a: Checked<A>, b: Checked<B>) -> Checked<(A, B)> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => {
            let mut found = Violations::default();
            found.take(a);
            found.take(b);
            Err(found)
        }
    }
}
