//! The reference's side of `qwen kl`: the f32 logits over chunks of a text, kept as the
//! records of a reference-logits file ([`qwenc_runtime::reference_logits`], which has the
//! format and the windows) for `qwenc reference-logits`.

use qwenc_runtime::reference_logits::{ReferenceError, ReferenceHeader, ReferenceRecord};

use super::{KvCache, ReferenceWeights};
use qwenc_runtime::model::{ForwardError, LogitsFor};

/// Rows of logits asked for per forward call (bounds memory: rows × vocabulary × 4 bytes).
const SCORE_ROWS: usize = 64;

/// Why the reference logits of a header cannot be computed.
#[derive(Debug, thiserror::Error)]
pub enum KlReferenceError {
    #[error(transparent)]
    File(#[from] ReferenceError),
    #[error("a chunk of {context} tokens exceeds the model's context of {max}")]
    ContextTooLarge { context: usize, max: usize },
    #[error(transparent)]
    Forward(#[from] ForwardError),
}

/// The record of every scored position of `header`'s chunks (`header.top_k` logits each), in
/// file order; `progress(done, total)` is called after each chunk.
pub fn reference_records(
    weights: &ReferenceWeights,
    header: &ReferenceHeader,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<ReferenceRecord>, KlReferenceError> {
    let plan = header.plan()?;
    let context = plan.context;
    let max = weights.config.max_position_embeddings;
    if context > max {
        return Err(KlReferenceError::ContextTooLarge { context, max });
    }
    let mut records = Vec::with_capacity(plan.positions());
    for c in 0..plan.chunks {
        let chunk = &header.tokens[c * context..][..context];
        let mut cache = KvCache::new(weights.config.num_hidden_layers);
        weights.forward(&chunk[..plan.first], &mut cache, LogitsFor::Last)?;
        // Positions first .. context-1, in pieces to bound the logits' memory.
        let mut pos = plan.first;
        while pos < context - 1 {
            let upto = (pos + SCORE_ROWS).min(context - 1);
            let rows = weights.forward(&chunk[pos..upto], &mut cache, LogitsFor::All)?;
            for (i, row) in rows.iter().enumerate() {
                records.push(ReferenceRecord::from_logits(
                    row,
                    chunk[pos + i + 1],
                    header.top_k,
                ));
            }
            pos = upto;
        }
        progress(c + 1, plan.chunks);
    }
    Ok(records)
}
