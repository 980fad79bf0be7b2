//! Checks that run before a sequence or image reaches libtorch (docs/reliability.md, "Sequence
//! bounds and shapes"): input decides these sizes, so they are validated up front and refused
//! with a typed [`MllmError`] naming the example, instead of a libtorch allocation failure, an
//! out-of-range embedding lookup or a shape mismatch deep inside a forward pass.
//!
//! * **Length**: an encoded sequence may not be longer than the model's context
//!   (`text_config.max_position_embeddings`): LLaMA was trained on no longer sequences, and the
//!   context bounds the attention and logit memory of every row. A longer conversation is refused
//!   with a hint to truncate it (`--max-len`).
//! * **Memory** (optional): with a budget, a micro-batch whose estimated activation memory
//!   ([`activation_bytes`]) exceeds it is refused before it is built.
//! * **Token ids** must index the embedding table (`0..vocab_size`).
//! * **Pixel values** must be `[N, num_channels, image_size, image_size]`.
use crate::config::LlavaConfig;
use crate::error::{MllmError, Result};
use tch::{Kind, Tensor};

/// The model's context: the longest sequence accepted (`text_config.max_position_embeddings`).
pub fn context(cfg: &LlavaConfig) -> usize {
    cfg.text.max_position_embeddings.max(1) as usize
}

/// An upper-bound estimate of the activation memory, in bytes, of a training forward (and the
/// activations kept for its backward) over `rows` sequences of `tokens` tokens: per decoder layer
/// the hidden states, the q/k/v/o projections and the SwiGLU intermediates
/// (`tokens · (4·hidden + 3·intermediate)` elements) and the attention scores
/// (`heads · tokens²`, as if materialised: libtorch's fused kernels may need less), kept for every
/// layer unless `grad_checkpoint` (then one layer's, plus each layer's input); plus the f32
/// logits and their log-softmax (`2 · tokens · vocab · 4` bytes). `elem_bytes` is the weights'
/// element size (4 for f32, 2 for bf16/f16).
pub fn activation_bytes(cfg: &LlavaConfig, elem_bytes: u64, rows: usize, tokens: usize, grad_checkpoint: bool) -> u64 {
    let t = &cfg.text;
    let (n, l) = (tokens as u64, t.num_hidden_layers as u64);
    let per_layer = n * (4 * t.hidden_size as u64 + 3 * t.intermediate_size as u64) + t.num_attention_heads as u64 * n * n;
    let kept = if grad_checkpoint { per_layer + l * n * t.hidden_size as u64 } else { l * per_layer };
    let logits = 2 * n * t.vocab_size as u64 * 4;
    (rows as u64).saturating_mul(kept.saturating_mul(elem_bytes).saturating_add(logits))
}

/// Bytes as GiB with two decimals, for messages.
pub fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Size in bytes of one element of `kind` (4 for anything unusual).
pub fn elem_bytes(kind: Kind) -> u64 {
    match kind {
        Kind::BFloat16 | Kind::Half => 2,
        Kind::Double => 8,
        _ => 4,
    }
}

/// Refuses a sequence of `tokens` tokens longer than the model's context. `what` names it;
/// `max_len` is the truncation in force (for the hint).
pub fn check_length(cfg: &LlavaConfig, what: impl FnOnce() -> String, tokens: usize, max_len: Option<usize>) -> Result<()> {
    let ctx = context(cfg);
    if tokens <= ctx {
        return Ok(());
    }
    let hint = match max_len {
        Some(m) => format!("--max-len {m} is above it: pass --max-len N with N ≤ {ctx}"),
        None => format!(
            "pass --max-len N (N ≤ {ctx}) to truncate each conversation's tail (never inside the image span), or shorten it"
        ),
    };
    Err(MllmError::SequenceTooLong {
        what: what(),
        tokens,
        bound: format!("the model's context of {ctx} tokens (text_config.max_position_embeddings)"),
        hint,
    })
}

/// Refuses `rows` sequences of `tokens` tokens whose [`activation_bytes`] exceed `budget`.
pub fn check_memory(
    cfg: &LlavaConfig,
    elem: u64,
    grad_checkpoint: bool,
    budget: Option<u64>,
    what: impl FnOnce() -> String,
    rows: usize,
    tokens: usize,
) -> Result<()> {
    let Some(budget) = budget else { return Ok(()) };
    let need = activation_bytes(cfg, elem, rows, tokens, grad_checkpoint);
    if need <= budget {
        return Ok(());
    }
    Err(MllmError::SequenceTooLong {
        what: what(),
        tokens,
        bound: format!(
            "the memory budget of {} (--max-batch-memory): {rows} row(s) of {tokens} tokens need an estimated {}",
            gib(budget),
            gib(need)
        ),
        hint: "pass --max-len N to truncate each conversation's tail, or lower --batch-size / --level-chunk".into(),
    })
}

/// Refuses token ids outside `0..vocab_size`; `what` names the sequence.
pub fn check_ids(cfg: &LlavaConfig, what: impl FnOnce() -> String, ids: &[i64]) -> Result<()> {
    let vocab = cfg.text.vocab_size;
    match ids.iter().find(|&&i| i != cfg.image_token_id && !(0..vocab).contains(&i)) {
        None => Ok(()),
        Some(&id) => Err(MllmError::TokenOutOfVocab { what: what(), id, vocab }),
    }
}

/// [`check_ids`] for a tensor of ids (one device sync); reports the largest offending id.
pub fn check_id_tensor(cfg: &LlavaConfig, what: impl FnOnce() -> String, ids: &Tensor) -> Result<()> {
    let vocab = cfg.text.vocab_size;
    let real = ids.masked_fill(&ids.eq(cfg.image_token_id), 0);
    if real.numel() == 0 {
        return Ok(());
    }
    // one device sync for both ends
    let ends = Vec::<i64>::try_from(Tensor::f_stack(&[real.f_min()?, real.f_max()?], 0)?.to_kind(Kind::Int64).to_device(tch::Device::Cpu))?;
    let (lo, hi) = (ends[0], ends[1]);
    let bad = if lo < 0 { lo } else { hi };
    if (0..vocab).contains(&lo) && (0..vocab).contains(&hi) {
        Ok(())
    } else {
        Err(MllmError::TokenOutOfVocab { what: what(), id: bad, vocab })
    }
}

/// Refuses pixel values that are not `[N, num_channels, image_size, image_size]`.
pub fn check_pixels(cfg: &LlavaConfig, what: impl FnOnce() -> String, px: &Tensor) -> Result<()> {
    let (c, s) = (cfg.vision.num_channels, cfg.vision.image_size);
    let size = px.size();
    if size.len() == 4 && size[1] == c && size[2] == s && size[3] == s {
        return Ok(());
    }
    Err(MllmError::PixelShape { what: what(), actual: size, channels: c, size: s })
}
