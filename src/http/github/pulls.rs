//! Reading pull request deliveries into `core::pulls::PullEvent`:
//! `pull_request` (closed, merged or not; synchronize: a new head),
//! `pull_request_review` (submitted), `pull_request_review_comment`
//! (created) and `issue_comment` (created, on a pull request). Anything
//! else of these events is ignored, saying why. Pure: what it means for a
//! task is the core's to decide.

use axum::http::StatusCode;
use serde_json::Value;

use super::{Delivery, repository_of, text};
use crate::core::pulls::{PullEvent, PullEventKind};
use crate::http::Reply;

/// One of the four pull request events, read.
pub(super) fn read_pull_event(event: &str, payload: &Value) -> Result<Delivery, Reply> {
    let action = text(payload, &["action"]);
    let wanted = match event {
        "pull_request" => matches!(action, "closed" | "synchronize"),
        "pull_request_review" => action == "submitted",
        _ => action == "created",
    };
    if !wanted {
        return Ok(Delivery::Ignored(format!(
            "{event} action `{action}` does not concern claudomator"
        )));
    }
    let repository = repository_of(payload).ok_or_else(|| {
        Reply::error(
            StatusCode::BAD_REQUEST,
            "the delivery names no repository (repository.full_name)",
        )
    })?;
    let pull = if event == "issue_comment" {
        let issue = &payload["issue"];
        if !issue["pull_request"].is_object() {
            return Ok(Delivery::Ignored(
                "a comment on an issue, not on a pull request".into(),
            ));
        }
        issue
    } else {
        &payload["pull_request"]
    };
    let Some(number) = pull["number"].as_u64() else {
        return Err(Reply::error(
            StatusCode::BAD_REQUEST,
            format!("a {event} event without a pull request number"),
        ));
    };
    let head_sha = text(pull, &["head", "sha"]).to_string();
    let sender = text(payload, &["sender", "login"]).to_string();
    let sender_is_bot = text(payload, &["sender", "type"]) == "Bot";
    let kind = match event {
        "pull_request" if action == "synchronize" => PullEventKind::Pushed,
        "pull_request" => PullEventKind::Closed {
            merged: pull["merged"].as_bool().unwrap_or(false),
        },
        "pull_request_review" => {
            let review = &payload["review"];
            PullEventKind::Review {
                state: text(review, &["state"]).to_lowercase(),
                body: text(review, &["body"]).to_string(),
            }
        }
        "pull_request_review_comment" => {
            let comment = &payload["comment"];
            PullEventKind::ReviewComment {
                body: text(comment, &["body"]).to_string(),
                path: text(comment, &["path"]).to_string(),
                line: comment["line"].as_u64(),
            }
        }
        _ => PullEventKind::Comment {
            body: text(&payload["comment"], &["body"]).to_string(),
        },
    };
    // A review is about the commit it reviewed; a review comment about
    // its commit: both may be older than the head.
    let head_sha = match event {
        "pull_request_review" => first(text(&payload["review"], &["commit_id"]), &head_sha),
        "pull_request_review_comment" => {
            first(text(&payload["comment"], &["commit_id"]), &head_sha)
        }
        _ => head_sha,
    };
    Ok(Delivery::Pull(Box::new(PullEvent {
        delivery: String::new(),
        repository,
        number,
        head_sha,
        sender,
        sender_is_bot,
        kind,
    })))
}

fn first(preferred: &str, otherwise: &str) -> String {
    if preferred.is_empty() {
        otherwise.to_string()
    } else {
        preferred.to_string()
    }
}
