//! Reads a streamed chat completion: SSE `data:` lines, each a JSON chunk
//! with a text delta, then `data: [DONE]`. Bytes arrive cut anywhere; the
//! parser keeps the partial line until its end comes.

use serde_json::Value;

use super::{ERROR_EXCERPT, excerpt, str_field, usage_of};
use crate::core::llm::{ChatChunk, LlmError, TokenUsage};

#[derive(Default)]
pub(super) struct SseParser {
    partial: Vec<u8>,
    model: String,
    usage: Option<TokenUsage>,
    finish_reason: String,
    done: bool,
}

impl SseParser {
    /// The chunks completed by `data`; stops at `Done` or the first error.
    pub(super) fn feed(&mut self, data: &[u8]) -> Vec<Result<ChatChunk, LlmError>> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        self.partial.extend_from_slice(data);
        while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            match self.line(line.trim_end_matches(['\n', '\r'])) {
                Ok(None) => {}
                Ok(Some(chunk)) => out.push(Ok(chunk)),
                Err(e) => {
                    self.done = true;
                    out.push(Err(e));
                }
            }
            if self.done {
                break;
            }
        }
        out
    }

    /// The end of the body: `Done` if the answer had finished (some servers
    /// close without `[DONE]`), else an error.
    pub(super) fn finish(&mut self) -> Result<ChatChunk, LlmError> {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            let rest = String::from_utf8_lossy(&rest).to_string();
            if let Some(chunk) = self.line(rest.trim_end())? {
                return Ok(chunk);
            }
        }
        if self.finish_reason.is_empty() {
            return Err(LlmError::Malformed(
                "the stream ended before the answer was complete".into(),
            ));
        }
        Ok(self.done_chunk())
    }

    fn done_chunk(&mut self) -> ChatChunk {
        self.done = true;
        ChatChunk::Done {
            model: std::mem::take(&mut self.model),
            usage: self.usage.unwrap_or_default(),
            finish_reason: std::mem::take(&mut self.finish_reason),
        }
    }

    /// One line: a delta, the end, nothing (comments, `event:`, blank
    /// lines, chunks without text), or an error.
    fn line(&mut self, line: &str) -> Result<Option<ChatChunk>, LlmError> {
        let Some(data) = line.strip_prefix("data:") else {
            return Ok(None);
        };
        let data = data.trim();
        if data == "[DONE]" {
            if self.finish_reason.is_empty() {
                // llama.cpp's Python server ends a stream this way when a
                // newer request interrupts it.
                return Err(LlmError::Malformed(
                    "the stream ended without a finish reason: the server cut the answer short \
                     (llama.cpp's server does when another request comes in)"
                        .into(),
                ));
            }
            return Ok(Some(self.done_chunk()));
        }
        if data.is_empty() {
            return Ok(None);
        }
        let chunk: Value = serde_json::from_str(data).map_err(|e| {
            LlmError::Malformed(format!(
                "unreadable stream chunk ({e}): {}",
                excerpt(data, ERROR_EXCERPT)
            ))
        })?;
        if let Some(error) = chunk.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| error.to_string());
            return Err(LlmError::Malformed(format!(
                "the endpoint failed mid-answer: {}",
                excerpt(&message, ERROR_EXCERPT)
            )));
        }
        if self.model.is_empty() {
            self.model = str_field(&chunk, "model");
        }
        if let Some(usage) = usage_of(&chunk) {
            self.usage = Some(usage);
        }
        let choice = chunk.get("choices").and_then(|c| c.get(0));
        if let Some(reason) = choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
        {
            self.finish_reason = reason.to_string();
        }
        let text = choice
            .and_then(|c| c.pointer("/delta/content"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        Ok((!text.is_empty()).then(|| ChatChunk::Delta(text.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(text: &str, finish: Option<&str>) -> String {
        let delta = serde_json::json!({
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
        });
        format!("data: {delta}\n\n")
    }

    #[test]
    fn deltas_cut_anywhere_are_put_back_together() {
        let body = format!(
            ": keep-alive\n\n{}{}{}data: {}\n\ndata: [DONE]\n\n",
            chunk("Hel", None),
            chunk("lo ✓", None),
            chunk("", Some("stop")),
            r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3}}"#,
        );
        // Feed one byte at a time: lines and UTF-8 are cut everywhere.
        let mut parser = SseParser::default();
        let mut chunks = Vec::new();
        for byte in body.as_bytes() {
            chunks.extend(parser.feed(std::slice::from_ref(byte)));
        }
        let chunks: Vec<ChatChunk> = chunks.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            chunks,
            vec![
                ChatChunk::Delta("Hel".into()),
                ChatChunk::Delta("lo ✓".into()),
                ChatChunk::Done {
                    model: "m".into(),
                    usage: TokenUsage {
                        prompt_tokens: 7,
                        completion_tokens: 3
                    },
                    finish_reason: "stop".into(),
                },
            ]
        );
    }

    #[test]
    fn an_end_without_done_is_an_end_only_after_a_finish_reason() {
        let mut parser = SseParser::default();
        parser.feed(chunk("a", Some("length")).as_bytes());
        assert!(matches!(
            parser.finish(),
            Ok(ChatChunk::Done { finish_reason, .. }) if finish_reason == "length"
        ));
        let mut parser = SseParser::default();
        parser.feed(chunk("a", None).as_bytes());
        assert!(matches!(parser.finish(), Err(LlmError::Malformed(_))));
    }

    #[test]
    fn malformed_data_and_mid_stream_errors_are_errors() {
        for body in [
            "data: {\"choices\": [{\"delta\": {\"role\": \"assistant\"}}]}\n\ndata: [DONE]\n\n",
            "data: {not json\n\n",
            "data: {\"error\": {\"message\": \"out of memory\"}}\n\n",
        ] {
            let mut parser = SseParser::default();
            let out = parser.feed(body.as_bytes());
            assert!(
                matches!(out.as_slice(), [Err(LlmError::Malformed(_))]),
                "{body}: {out:?}"
            );
            // Nothing more is read after an error.
            assert!(parser.feed(chunk("x", None).as_bytes()).is_empty());
        }
    }
}
