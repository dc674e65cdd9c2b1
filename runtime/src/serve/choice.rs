//! One choice of a response: reads the worker's events for one sequence and turns them into
//! text pieces (with logprobs), for a streamed or a whole response alike.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

use super::error::ApiError;
use super::output::{ChatLogprobsBuilder, Logprobs, LogprobsBuilder, TextAssembler};
use super::worker::{Event, Finish, TokenLogprob};
use super::AppState;

/// A piece of a choice: new text, its logprobs entries, and the end if it came.
#[derive(Clone, Debug, Default)]
pub struct Piece {
    pub text: String,
    pub logprobs: Option<Value>,
    pub finish: Option<Finish>,
}

/// Which endpoint's logprobs a choice reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogprobsShape {
    Completion,
    Chat,
}

pub struct ChoiceRun {
    pub index: usize,
    st: Arc<AppState>,
    rx: UnboundedReceiver<Event>,
    asm: TextAssembler,
    lp: Option<Logprobs>,
    /// The prompt ids to echo in front of the text, until they are.
    echo: Option<Vec<u32>>,
    prompt_logprobs: Vec<TokenLogprob>,
    /// Streamed: each piece carries its own logprobs entries.
    streamed: bool,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    finished: bool,
}

impl ChoiceRun {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: usize,
        st: Arc<AppState>,
        rx: UnboundedReceiver<Event>,
        stops: Vec<String>,
        hidden: Vec<u32>,
        logprobs: Option<LogprobsShape>,
        echo: Option<Vec<u32>>,
        streamed: bool,
    ) -> Self {
        let prompt_tokens = echo.as_ref().map_or(0, Vec::len);
        ChoiceRun {
            index,
            st,
            rx,
            asm: TextAssembler::new(stops, hidden),
            lp: logprobs.map(|shape| match shape {
                LogprobsShape::Completion => Logprobs::Completion(LogprobsBuilder::new()),
                LogprobsShape::Chat => Logprobs::Chat(ChatLogprobsBuilder::default()),
            }),
            echo,
            prompt_logprobs: Vec::new(),
            streamed,
            prompt_tokens,
            completion_tokens: 0,
            finished: false,
        }
    }

    /// The echoed prompt text (once), with its logprobs entries.
    fn take_echo(&mut self) -> String {
        let Some(ids) = self.echo.take() else {
            return String::new();
        };
        let text = self.st.tokenizer.decode(&ids);
        if let Some(Logprobs::Completion(lp)) = &mut self.lp {
            lp.prompt(&self.st.tokenizer, &ids, &self.prompt_logprobs);
        }
        text
    }

    fn logprobs_now(&mut self) -> Option<Value> {
        if self.streamed {
            self.lp
                .as_mut()
                .filter(|l| !l.is_empty())
                .map(Logprobs::take)
        } else {
            None
        }
    }

    /// The next piece; `None` after the end.
    pub async fn next(&mut self) -> Option<Result<Piece, ApiError>> {
        if self.finished {
            return None;
        }
        loop {
            let Some(event) = self.rx.recv().await else {
                self.finished = true;
                return Some(Err(ApiError::internal(
                    "the model worker dropped the request",
                )));
            };
            match event {
                Event::PromptLogprobs(lps) => self.prompt_logprobs = lps,
                Event::Token { id, logprob } => {
                    self.completion_tokens += 1;
                    let mut text = self.take_echo();
                    let tokenizer = &self.st.tokenizer;
                    let delta = self.asm.push(tokenizer, id);
                    if let Some(lp) = &mut self.lp {
                        let in_text = !self.asm.is_hidden(id) && !tokenizer.is_special(id);
                        lp.push(tokenizer, id, logprob.as_ref(), in_text);
                    }
                    text.push_str(&delta.text);
                    let finish = if delta.stopped {
                        // The text ended at a stop string: the worker sees the closed channel.
                        self.finished = true;
                        self.rx.close();
                        Some(Finish::Stop)
                    } else {
                        None
                    };
                    return Some(Ok(Piece {
                        text,
                        logprobs: self.logprobs_now(),
                        finish,
                    }));
                }
                Event::Done {
                    finish,
                    prompt_tokens,
                    completion_tokens,
                } => {
                    self.finished = true;
                    self.prompt_tokens = prompt_tokens;
                    self.completion_tokens = completion_tokens;
                    let mut text = self.take_echo();
                    let rest = self.asm.finish();
                    text.push_str(&rest.text);
                    return Some(Ok(Piece {
                        text,
                        logprobs: self.logprobs_now(),
                        finish: Some(if rest.stopped { Finish::Stop } else { finish }),
                    }));
                }
                Event::Error(e) => {
                    self.finished = true;
                    return Some(Err(e));
                }
            }
        }
    }

    /// Runs to the end: `(text, logprobs, finish)`.
    pub async fn collect(&mut self) -> Result<(String, Option<Value>, Finish), ApiError> {
        let mut text = String::new();
        let mut finish = Finish::Length;
        while let Some(piece) = self.next().await {
            let piece = piece?;
            text.push_str(&piece.text);
            if let Some(f) = piece.finish {
                finish = f;
            }
        }
        let logprobs = self.lp.as_mut().map(Logprobs::take);
        Ok((text, logprobs, finish))
    }
}
