//! The Qwen2.5 ChatML chat template.
//!
//! A Rust rendering of the `chat_template` of Qwen2.5 instruct models (the Coder instruct
//! models ship the same one; it is the `tokenizer.chat_template` of the dev checkpoint's
//! GGUF), for plain messages (no tools, no tool calls):
//!
//! ```text
//! <|im_start|>system\n{system content}<|im_end|>\n      first message if it is a system one,
//!                                                         else the default system prompt
//! <|im_start|>{role}\n{content}<|im_end|>\n              each user / assistant message, and
//!                                                         each system message after the first
//! <|im_start|>user\n<tool_response>\n{content}\n</tool_response>...<|im_end|>\n
//!                                                         a run of tool messages (one turn)
//! <|im_start|>assistant\n                                 the generation prompt
//! ```
//!
//! Messages with any other role are left out, as the template does.

use serde::{Deserialize, Serialize};

pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";

/// The system prompt the Qwen2.5 template inserts when the first message is not a system
/// message.
pub const DEFAULT_SYSTEM_PROMPT: &str =
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";

/// One chat message: `role` is "system", "user", "assistant" or "tool".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }

    pub fn tool(content: impl Into<String>) -> Self {
        Self::new("tool", content)
    }
}

fn turn(out: &mut String, role: &str, content: &str) {
    out.push_str(IM_START);
    out.push_str(role);
    out.push('\n');
    out.push_str(content);
    out.push_str(IM_END);
    out.push('\n');
}

/// Renders `messages` with the Qwen2.5 template; with `add_generation_prompt` the text ends
/// with `<|im_start|>assistant\n`, ready for the model to write the answer.
///
/// An empty list renders the default system turn (the Jinja template would fail on it).
pub fn render(messages: &[ChatMessage], add_generation_prompt: bool) -> String {
    let mut out = String::with_capacity(
        128 + messages
            .iter()
            .map(|m| m.content.len() + m.role.len() + 64)
            .sum::<usize>(),
    );
    match messages.first() {
        Some(first) if first.role == "system" => turn(&mut out, "system", &first.content),
        _ => turn(&mut out, "system", DEFAULT_SYSTEM_PROMPT),
    }
    for (i, m) in messages.iter().enumerate() {
        match m.role.as_str() {
            "user" | "assistant" => turn(&mut out, &m.role, &m.content),
            "system" if i > 0 => turn(&mut out, "system", &m.content),
            "tool" => {
                if i == 0 || messages[i - 1].role != "tool" {
                    out.push_str(IM_START);
                    out.push_str("user");
                }
                out.push_str("\n<tool_response>\n");
                out.push_str(&m.content);
                out.push_str("\n</tool_response>");
                if messages.get(i + 1).is_none_or(|next| next.role != "tool") {
                    out.push_str(IM_END);
                    out.push('\n');
                }
            }
            _ => {}
        }
    }
    if add_generation_prompt {
        out.push_str(IM_START);
        out.push_str("assistant\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_and_user() {
        let msgs = [
            ChatMessage::system("You are a helpful assistant."),
            ChatMessage::user("Hi!"),
        ];
        assert_eq!(
            render(&msgs, true),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n\
             <|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            render(&msgs, false),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n\
             <|im_start|>user\nHi!<|im_end|>\n"
        );
    }

    #[test]
    fn default_system_prompt() {
        let msgs = [
            ChatMessage::user("Hi"),
            ChatMessage::assistant("Hello!"),
            ChatMessage::user("Bye"),
        ];
        assert_eq!(
            render(&msgs, true),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n\
             <|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello!<|im_end|>\n\
             <|im_start|>user\nBye<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        assert_eq!(
            render(&[], false),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        );
    }

    #[test]
    fn later_system_tools_and_unknown_roles() {
        let msgs = [
            ChatMessage::user("q"),
            ChatMessage::system("s2"),
            ChatMessage::tool("r1"),
            ChatMessage::tool("r2"),
            ChatMessage::new("narrator", "ignored"),
            ChatMessage::tool("r3"),
        ];
        assert_eq!(
            render(&msgs, false),
            format!(
                "<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>\n\
                 <|im_start|>user\nq<|im_end|>\n\
                 <|im_start|>system\ns2<|im_end|>\n\
                 <|im_start|>user\n<tool_response>\nr1\n</tool_response>\n<tool_response>\nr2\n</tool_response><|im_end|>\n\
                 <|im_start|>user\n<tool_response>\nr3\n</tool_response><|im_end|>\n"
            )
        );
    }
}
