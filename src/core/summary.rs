//! The summary fallback: when an agent ends its work without a `## Summary`
//! section, the local model writes one from the tail of what the agent
//! wrote. The input is bounded; a failure leaves the summary empty and
//! never fails the task (the executor logs it).

use super::llm::{ChatMessage, ChatModel, ChatRequest, LlmError};

/// How much of the agent's text (its end) the model reads.
pub const SUMMARY_INPUT_BYTES: usize = 8 * 1024;
/// The longest summary asked for, in tokens.
pub const SUMMARY_MAX_TOKENS: u32 = 160;
/// The longest summary kept, in characters.
const SUMMARY_MAX_CHARS: usize = 1000;

/// The last `max` bytes of `text`, starting at a character boundary.
pub fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// The question put to the model.
pub fn summary_request(agent_text: &str) -> ChatRequest {
    let system = "You summarize the work of a coding agent for a person who did not watch. In \
                  at most three plain sentences, say what it changed and how it checked it. No \
                  heading, no list.";
    let user = format!(
        "The end of the agent's output:\n\n{}",
        tail(agent_text, SUMMARY_INPUT_BYTES)
    );
    let mut request = ChatRequest::new(
        vec![ChatMessage::system(system), ChatMessage::user(user)],
        SUMMARY_MAX_TOKENS,
    );
    request.temperature = Some(0.0);
    request
}

/// A summary of `agent_text` by `model`, or why there is none.
pub async fn summarize(model: &dyn ChatModel, agent_text: &str) -> Result<String, LlmError> {
    if agent_text.trim().is_empty() {
        return Err(LlmError::Malformed(
            "the agent wrote no text to summarize".into(),
        ));
    }
    let answer = model.chat(summary_request(agent_text)).await?;
    let summary = clean(&answer.content);
    if summary.is_empty() {
        return Err(LlmError::Malformed(
            "the model answered an empty summary".into(),
        ));
    }
    Ok(summary)
}

/// The answer without a heading the model may have added anyway, trimmed
/// and capped.
fn clean(answer: &str) -> String {
    let text = answer.trim();
    let text = match text.lines().next() {
        Some(first) if first.trim_start().starts_with('#') => {
            text[first.len()..].trim_start_matches(['\r', '\n'])
        }
        _ => text,
    };
    let text = text.trim();
    match text.char_indices().nth(SUMMARY_MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_is_the_tail_cut_at_a_character() {
        assert_eq!(tail("hello", 3), "llo");
        assert_eq!(tail("hi", 10), "hi");
        // "é" is two bytes: a cut inside it moves past it.
        assert_eq!(tail("aéb", 2), "b");
        let long = "x".repeat(20_000) + "THE END";
        let request = summary_request(&long);
        let question = &request.messages[1].content;
        assert!(question.ends_with("THE END"));
        assert!(question.len() < SUMMARY_INPUT_BYTES + 100);
        assert_eq!(request.max_tokens, SUMMARY_MAX_TOKENS);
    }

    #[test]
    fn headings_and_length_are_cleaned() {
        assert_eq!(clean("## Summary\nDid it.\n"), "Did it.");
        assert_eq!(clean("  Did it.  "), "Did it.");
        assert_eq!(clean("# Summary"), "");
        assert_eq!(
            clean(&"y".repeat(2000)).chars().count(),
            SUMMARY_MAX_CHARS + 1
        );
    }
}
