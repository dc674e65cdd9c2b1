//! `qwen serve`'s request handling without a socket: parsing and validation of completion
//! and chat bodies, tokenization and the context checks, on arbitrary bytes. Never a panic;
//! every refusal is a 4xx with a message; every accepted request fits the context.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use qwenc_runtime::model::Model;
use qwenc_runtime::serve::output::TextAssembler;
use qwenc_runtime::serve::request::{
    parse_chat, parse_completion, prepare_chat, prepare_completion,
};
use qwenc_runtime::testing::FakeModel;

fn model() -> &'static FakeModel {
    static M: OnceLock<FakeModel> = OnceLock::new();
    M.get_or_init(|| FakeModel::new().with_max_context(64))
}

fuzz_target!(|data: &[u8]| {
    let m = model();
    let (tok, info) = (m.tokenizer(), m.info());
    match parse_completion(data) {
        Ok(req) => match prepare_completion(&req, tok, info) {
            Ok(prompts) => {
                for p in &prompts {
                    assert!(!p.ids.is_empty() && p.ids.len() + p.max_tokens <= info.max_context);
                }
                // The stop strings on the prompt text as if it were generated.
                let mut asm = TextAssembler::new(req.stop.clone(), info.eos_token_ids.clone());
                let mut text = String::new();
                for &id in prompts[0].ids.iter().take(64) {
                    text += &asm.push(tok, id).text;
                }
                text += &asm.finish().text;
                for s in &req.stop {
                    assert!(!text.contains(s.as_str()), "stop {s:?} left in {text:?}");
                }
            }
            Err(e) => assert!(e.status == 400 && !e.message.is_empty()),
        },
        Err(e) => assert!(e.status == 400 && !e.message.is_empty()),
    }
    match parse_chat(data) {
        Ok(req) => match prepare_chat(&req, tok, info) {
            Ok(p) => assert!(p.max_tokens >= 1 && p.ids.len() + p.max_tokens <= info.max_context),
            Err(e) => assert!(e.status == 400 && !e.message.is_empty()),
        },
        Err(e) => assert!(e.status == 400 && !e.message.is_empty()),
    }
});
