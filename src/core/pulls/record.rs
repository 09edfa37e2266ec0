//! What the store keeps of a task's pull request: where it is, where it
//! stands, the head claudomator last pushed, and how many times feedback on
//! it resumed the agent by itself.

use serde::{Deserialize, Serialize};

use crate::core::codehost::PullState;
use crate::core::model::{Id, UnixMillis};

/// A task's pull request. While `number` is 0 a server is opening it (the
/// row is that server's claim, so exactly one opens it in a cluster).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRecord {
    pub task_id: Id,
    /// `owner/name`.
    pub repository: String,
    pub number: u64,
    pub url: String,
    #[serde(with = "state_name")]
    pub state: PullState,
    /// The branch with the work (`claudomator/<task-id>`).
    pub head_ref: String,
    /// The commit claudomator last pushed (or GitHub last reported) on it:
    /// events about an older head are stale.
    pub head_sha: String,
    pub base_ref: String,
    /// Feedback that resumed the agent without a person in between.
    pub resumes: u32,
    pub opened_at: UnixMillis,
    pub updated_at: UnixMillis,
}

impl PullRecord {
    /// Still being opened (the claim of a server).
    pub fn is_opening(&self) -> bool {
        self.number == 0
    }
}

mod state_name {
    use super::PullState;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(state: &PullState, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(state.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PullState, D::Error> {
        let text = String::deserialize(d)?;
        PullState::parse(&text).ok_or_else(|| serde::de::Error::custom("unknown pull state"))
    }
}
