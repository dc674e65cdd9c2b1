//! The generation loop and the chat session, on the fake model.

use std::ops::ControlFlow;

use qwenc_runtime::chat::{render, ChatMessage};
use qwenc_runtime::generate::{
    generate, ChatSession, GenerateError, GenerateOptions, GenerateStats, StopReason,
};
use qwenc_runtime::model::{LogitsFor, Model};
use qwenc_runtime::sampler::SamplerConfig;
use qwenc_runtime::testing::{FakeModel, ENDOFTEXT, IM_END};

fn opts(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        ..GenerateOptions::default()
    }
}

/// Runs `generate` on a fresh cache; returns the ids, the stats and the cache's tokens.
fn run(
    model: &FakeModel,
    prompt: &[u32],
    o: &GenerateOptions,
) -> Result<(Vec<u32>, GenerateStats, Vec<u32>), GenerateError> {
    let mut cache = model.new_cache(model.info().max_context);
    let mut ids = Vec::new();
    let stats = generate(model, &mut cache, prompt, o, &mut |id| {
        ids.push(id);
        ControlFlow::Continue(())
    })?;
    Ok((ids, stats, FakeModel::cached_tokens(&cache)))
}

/// The greedy continuation the fake model's table gives.
fn greedy_chain(model: &FakeModel, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut seq = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..n {
        let id = model.peak_after(&seq);
        out.push(id);
        seq.push(id);
    }
    out
}

#[test]
fn greedy_follows_the_model_and_stats_add_up() {
    let model = FakeModel::new();
    let prompt = model.tokenizer().encode("the world");
    let (ids, stats, cached) = run(&model, &prompt, &opts(12)).unwrap();
    assert_eq!(ids, greedy_chain(&model, &prompt, 12));
    assert!(!ids.contains(&ENDOFTEXT));
    assert_eq!(stats.stop, StopReason::MaxTokens);
    assert_eq!(stats.prompt_tokens, prompt.len());
    assert_eq!(stats.generated_tokens, 12);
    assert_eq!(stats.decode_tokens, 11);
    // The cache holds the prompt and every generated token but the last.
    assert_eq!(cached, [&prompt[..], &ids[..11]].concat());
    // One prefill pass, then one pass per decoded token.
    assert_eq!(model.forward_calls(), 1 + 11);
    assert_eq!(model.forwarded_tokens(), prompt.len() + 11);
    assert!(stats.prefill_seconds > 0.0 && stats.decode_seconds > 0.0);
    let rel = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs();
    assert!(rel(
        stats.prefill_tok_s,
        prompt.len() as f64 / stats.prefill_seconds
    ));
    assert!(rel(stats.decode_tok_s, 11.0 / stats.decode_seconds));
}

#[test]
fn stops_at_eos_and_ignore_eos_gives_exactly_n() {
    let model = FakeModel::new();
    let prompt = model.tokenizer().encode("in on");
    let model = model.with_eos_at(prompt.len() + 3);
    let (ids, stats, cached) = run(&model, &prompt, &opts(20)).unwrap();
    assert_eq!(ids.len(), 4);
    assert_eq!(ids[3], ENDOFTEXT);
    assert!(!ids[..3].contains(&ENDOFTEXT));
    assert_eq!(stats.stop, StopReason::Eos(ENDOFTEXT));
    assert_eq!(stats.generated_tokens, 4);
    assert_eq!(stats.decode_tokens, 3);
    assert_eq!(cached.len(), prompt.len() + 3);

    let o = GenerateOptions {
        ignore_eos: true,
        ..opts(20)
    };
    let (ids, stats, cached) = run(&model, &prompt, &o).unwrap();
    assert_eq!(ids.len(), 20);
    assert!(!ids.contains(&ENDOFTEXT));
    assert_eq!(stats.stop, StopReason::MaxTokens);
    assert_eq!(cached.len(), prompt.len() + 19);
    assert_eq!(&ids[..3], &greedy_chain(&model, &prompt, 3)[..]);

    // An extra stop id ends the generation too, and is suppressed by ignore_eos.
    let plain = FakeModel::new();
    let first = greedy_chain(&plain, &prompt, 3);
    let o = GenerateOptions {
        extra_stop_ids: vec![first[2]],
        ..opts(10)
    };
    let (ids, stats, _) = run(&plain, &prompt, &o).unwrap();
    assert_eq!(ids, first);
    assert_eq!(stats.stop, StopReason::Eos(first[2]));
    let (ids, _, _) = run(
        &plain,
        &prompt,
        &GenerateOptions {
            ignore_eos: true,
            ..o
        },
    )
    .unwrap();
    assert_eq!(ids.len(), 10);
    assert_ne!(ids[2], first[2]);
}

#[test]
fn the_callback_can_stop_the_generation() {
    let model = FakeModel::new();
    let prompt = [40, 41, 42];
    let mut cache = model.new_cache(64);
    let mut seen = Vec::new();
    let stats = generate(&model, &mut cache, &prompt, &opts(50), &mut |id| {
        seen.push(id);
        if seen.len() == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(stats.stop, StopReason::Callback);
    assert_eq!(stats.generated_tokens, 2);
    assert_eq!(cache.len, 4);
}

#[test]
fn refusals_come_before_any_forward_pass() {
    let model = FakeModel::new().with_max_context(16);
    let prompt: Vec<u32> = (100..110).collect();
    let err = run(&model, &prompt, &opts(7)).unwrap_err();
    assert_eq!(
        err,
        GenerateError::ContextOverflow {
            cached: 0,
            prompt: 10,
            max_tokens: 7,
            context: 16
        }
    );
    let msg = err.to_string();
    assert!(
        msg.contains("10") && msg.contains(" 7 ") && msg.contains("17") && msg.contains("16"),
        "{msg}"
    );
    assert_eq!(
        run(&model, &[], &opts(5)).unwrap_err(),
        GenerateError::EmptyPrompt
    );
    assert_eq!(
        run(&model, &prompt, &opts(0)).unwrap_err(),
        GenerateError::ZeroMaxTokens
    );
    assert_eq!(
        run(&model, &[1, 99_999], &opts(5)).unwrap_err(),
        GenerateError::TokenOutOfRange {
            index: 1,
            id: 99_999,
            vocab: model.info().vocab_size
        }
    );
    let bad_sampler = GenerateOptions {
        sampler: SamplerConfig {
            temperature: 1.0,
            top_p: 2.0,
            ..SamplerConfig::default()
        },
        ..opts(5)
    };
    assert!(matches!(
        run(&model, &prompt, &bad_sampler),
        Err(GenerateError::Sampler(_))
    ));
    assert_eq!(model.forward_calls(), 0);

    // Exactly full is fine.
    let (ids, _, cached) = run(&model, &prompt, &opts(6)).unwrap();
    assert_eq!(ids.len(), 6);
    assert_eq!(cached.len(), 15);

    // The cache's capacity and what it already holds count.
    let mut cache = model.new_cache(12);
    model.forward(&mut cache, &[1, 2], LogitsFor::Last).unwrap();
    let calls = model.forward_calls();
    let err = generate(&model, &mut cache, &prompt, &opts(1), &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap_err();
    assert_eq!(
        err,
        GenerateError::ContextOverflow {
            cached: 2,
            prompt: 10,
            max_tokens: 1,
            context: 12
        }
    );
    assert!(err.to_string().contains("2 tokens already in the cache"));
    assert_eq!(model.forward_calls(), calls);
    assert_eq!(cache.len, 2);
}

#[test]
fn a_filled_cache_is_continued() {
    let model = FakeModel::new();
    let prompt = model.tokenizer().encode("the world is");
    let mut cache = model.new_cache(100);
    model
        .forward(&mut cache, &prompt[..3], LogitsFor::Last)
        .unwrap();
    let mut ids = Vec::new();
    generate(&model, &mut cache, &prompt[3..], &opts(5), &mut |id| {
        ids.push(id);
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(ids, greedy_chain(&model, &prompt, 5));
}

#[test]
fn seeded_sampling_is_reproducible() {
    let model = FakeModel::new();
    let prompt = [70, 71];
    let sampled = |seed| {
        let o = GenerateOptions {
            sampler: SamplerConfig {
                temperature: 3.0,
                top_k: 50,
                top_p: 0.95,
                seed,
            },
            ..opts(30)
        };
        run(&model, &prompt, &o).unwrap().0
    };
    assert_eq!(sampled(5), sampled(5));
    assert_ne!(sampled(5), sampled(6));
    assert_ne!(sampled(5), greedy_chain(&model, &prompt, 30));
}

/// The invariant of a chat session: its cache holds exactly the re-rendered, re-encoded
/// conversation.
fn assert_cache_is_the_conversation(model: &FakeModel, session: &ChatSession<'_>) {
    let expected = model.tokenizer().encode(&render(session.messages(), false));
    let expected = if session.messages().iter().all(|m| m.role == "system") {
        Vec::new() // nothing was sent since the last reset
    } else {
        expected
    };
    assert_eq!(session.cached_tokens(), &expected[..]);
    assert_eq!(FakeModel::cached_tokens(session.cache()), expected);
}

fn send(session: &mut ChatSession<'_>, text: &str) -> qwenc_runtime::generate::ChatTurn {
    session
        .send(text, &mut |_| ControlFlow::Continue(()))
        .unwrap()
}

#[test]
fn chat_cache_equals_the_rerendered_conversation() {
    let model = FakeModel::new().with_reply_text("Hello there, the world!");
    let tok = model.tokenizer();
    let mut session = ChatSession::new(&model, 1000, None, GenerateOptions::default()).unwrap();
    assert_eq!(session.context(), 256);

    let turn = send(&mut session, "Hi");
    assert_eq!(turn.text, "Hello there, the world!");
    assert_eq!(
        turn.ids,
        [tok.encode("Hello there, the world!"), vec![IM_END]].concat()
    );
    assert_eq!(turn.stats.stop, StopReason::Eos(IM_END));
    assert!(!turn.reset_before && !turn.reset_after);
    assert_eq!(
        session.messages(),
        [
            ChatMessage::user("Hi"),
            ChatMessage::assistant("Hello there, the world!")
        ]
    );
    assert_cache_is_the_conversation(&model, &session);
    // The first prompt is the whole rendering with the generation prompt.
    let first_prompt = tok.encode(&render(&[ChatMessage::user("Hi")], true));
    assert_eq!(turn.stats.prompt_tokens, first_prompt.len());

    // The second turn runs only the new user turn and the generation prompt.
    let before = session.cached_tokens().len();
    let turn = send(&mut session, "And again?");
    let second_prompt = tok.encode(&render(session.messages(), false));
    let with_gen_prompt = tok.encode(&render(&session.messages()[..3], true));
    assert_eq!(turn.stats.prompt_tokens, with_gen_prompt.len() - before);
    assert!(second_prompt.starts_with(&with_gen_prompt));
    assert_cache_is_the_conversation(&model, &session);

    let turn = send(&mut session, "Third.");
    assert_eq!(turn.text, "Hello there, the world!");
    assert_eq!(session.messages().len(), 6);
    assert_cache_is_the_conversation(&model, &session);

    session.reset();
    assert!(session.messages().is_empty());
    assert_eq!(session.cache().len, 0);
    send(&mut session, "Hi");
    assert_cache_is_the_conversation(&model, &session);
}

#[test]
fn chat_repairs_answers_that_reencode_differently() {
    // The reply spelled byte by byte: "the" re-encodes as `t` + `he`, " world" as one token.
    let reply: Vec<u32> = "the world".bytes().map(u32::from).collect();
    let model = FakeModel::new().with_reply(reply.clone());
    let tok = model.tokenizer();
    assert_ne!(tok.encode("the world"), reply);
    let mut session = ChatSession::new(
        &model,
        256,
        Some("Be brief.".to_string()),
        GenerateOptions::default(),
    )
    .unwrap();
    assert_eq!(session.messages(), [ChatMessage::system("Be brief.")]);
    let turn = send(&mut session, "Hi");
    assert_eq!(turn.ids, [reply.clone(), vec![IM_END]].concat());
    assert_eq!(turn.text, "the world");
    assert_cache_is_the_conversation(&model, &session);
    send(&mut session, "Once more");
    assert_cache_is_the_conversation(&model, &session);
    assert_eq!(session.messages()[0], ChatMessage::system("Be brief."));
}

#[test]
fn chat_answers_cut_by_max_tokens_or_the_callback_stay_consistent() {
    let model = FakeModel::new().with_reply_text("Hello there, the world!");
    let o = opts(3);
    let mut session = ChatSession::new(&model, 256, None, o).unwrap();
    let turn = send(&mut session, "Hi");
    assert_eq!(turn.ids.len(), 3);
    assert_eq!(turn.stats.stop, StopReason::MaxTokens);
    assert!(!turn.reset_after);
    assert_cache_is_the_conversation(&model, &session);

    let mut n = 0;
    let turn = session
        .send("Go on", &mut |_| {
            n += 1;
            if n == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(turn.ids.len(), 2);
    assert_eq!(turn.stats.stop, StopReason::Callback);
    assert_cache_is_the_conversation(&model, &session);
}

#[test]
fn chat_resets_when_the_context_is_full() {
    let reply = "the world the world the world the world";
    let model = FakeModel::new().with_reply_text(reply);
    let tok = model.tokenizer();
    let one_turn = tok
        .encode(&render(
            &[ChatMessage::user("Hi"), ChatMessage::assistant(reply)],
            false,
        ))
        .len();
    let prompt = tok.encode(&render(&[ChatMessage::user("Hi")], true)).len();

    // The answer does not fit: it is cut where the context ends, then the session resets.
    let context = prompt + 5;
    let mut session = ChatSession::new(&model, context, None, GenerateOptions::default()).unwrap();
    let turn = send(&mut session, "Hi");
    assert_eq!(turn.ids.len(), 5);
    assert!(turn.reset_after);
    assert!(session.messages().is_empty());
    assert_eq!(session.cache().len, 0);
    // And the session still works.
    let turn = send(&mut session, "Hi");
    assert!(turn.reset_after);

    // One turn fits, the second does not: the conversation restarts with the new message.
    let two_prompts = tok
        .encode(&render(
            &[
                ChatMessage::user("Hi"),
                ChatMessage::assistant(reply),
                ChatMessage::user("Hi"),
            ],
            true,
        ))
        .len();
    assert!(one_turn < two_prompts);
    let context = two_prompts;
    let mut session = ChatSession::new(&model, context, None, GenerateOptions::default()).unwrap();
    let turn = send(&mut session, "Hi");
    assert!(!turn.reset_before && !turn.reset_after, "{turn:?}");
    assert_cache_is_the_conversation(&model, &session);
    let turn = send(&mut session, "Hi");
    assert!(turn.reset_before);
    assert_eq!(turn.text, reply);
    assert_eq!(session.messages().len(), 2);
    assert_cache_is_the_conversation(&model, &session);

    // A message too long on its own: refused, the conversation is kept.
    let long = "x".repeat(context);
    let err = session
        .send(&long, &mut |_| ControlFlow::Continue(()))
        .unwrap_err();
    assert!(
        matches!(err, GenerateError::ContextOverflow { .. }),
        "{err}"
    );
    assert_eq!(session.messages().len(), 2);
    assert_cache_is_the_conversation(&model, &session);
}
