//! Prefill with the parallel kernels, then decode token by token with the per-layer caches.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::sampling::Sampler;
use crate::model::Model;
use crate::tensor::Tensor;

/// Timings of one generation.
#[derive(Clone, Debug, Default)]
pub struct GenStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_s: f64,
    pub decode_s: f64,
}

impl GenStats {
    pub fn prefill_tokens_per_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_s.max(1e-12)
    }
    pub fn decode_tokens_per_s(&self) -> f64 {
        self.generated_tokens as f64 / self.decode_s.max(1e-12)
    }
}

/// Generates `max_tokens` tokens after each prompt. Prompts of equal length run as one batch
/// (`B` sequences per step); `on_token(prompt index, token)` is called as tokens are produced.
/// Blocks the calling thread while the GPU works; [`generate_async`] is the same without blocking.
#[cfg(not(target_arch = "wasm32"))]
pub fn generate(
    ctx: &Context,
    model: &Model,
    prompts: &[Vec<u32>],
    max_tokens: usize,
    sampler: &mut Sampler,
    on_token: impl FnMut(usize, u32),
) -> Result<(Vec<Vec<u32>>, GenStats)> {
    // Every read-back is a blocking download, so each await below is ready at once.
    let read = |t: &Tensor| std::future::ready(ctx.download(t));
    pollster::block_on(run(
        ctx, model, prompts, max_tokens, sampler, on_token, read,
    ))
}

/// [`generate`] for an async caller (a web page): read-backs are awaited, never blocked on.
/// `on_token` runs between the steps, so a page can show each token as it comes.
pub async fn generate_async(
    ctx: &Context,
    model: &Model,
    prompts: &[Vec<u32>],
    max_tokens: usize,
    sampler: &mut Sampler,
    on_token: impl FnMut(usize, u32),
) -> Result<(Vec<Vec<u32>>, GenStats)> {
    let read = |t: &Tensor| ctx.download_async(t);
    run(ctx, model, prompts, max_tokens, sampler, on_token, read).await
}

/// The generation loop, given how to read logits back.
async fn run<F: std::future::Future<Output = Result<Vec<f32>>>>(
    ctx: &Context,
    model: &Model,
    prompts: &[Vec<u32>],
    max_tokens: usize,
    sampler: &mut Sampler,
    mut on_token: impl FnMut(usize, u32),
    read: impl Fn(&Tensor) -> F,
) -> Result<(Vec<Vec<u32>>, GenStats)> {
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        return Err(Error::invalid(
            "generate",
            "every prompt needs at least one token",
        ));
    }
    let mut out = vec![Vec::new(); prompts.len()];
    let mut stats = GenStats::default();
    let mut lengths: Vec<usize> = prompts.iter().map(Vec::len).collect();
    lengths.sort_unstable();
    lengths.dedup();
    for len in lengths {
        let group: Vec<usize> = (0..prompts.len())
            .filter(|&i| prompts[i].len() == len)
            .collect();
        let b = group.len();
        if len + max_tokens > model.config().max_seq_len {
            return Err(Error::invalid(
                "generate",
                format!(
                    "prompt of {len} tokens plus {max_tokens} new ones exceeds max_seq_len {}",
                    model.config().max_seq_len
                ),
            ));
        }
        let ids: Vec<u32> = group.iter().flat_map(|&i| prompts[i].clone()).collect();
        let t0 = web_time::Instant::now();
        let tokens = model.tokens(ctx, &ids, b)?;
        let v = model.config().vocab_size;
        // Only the last position's logits are needed: the head runs on those rows alone.
        let (last, mut cache) = ctx.run(|rec| model.prefill_last(rec, &tokens))?;
        let mut rows = read(&last).await?;
        stats.prefill_s += t0.elapsed().as_secs_f64();
        stats.prompt_tokens += ids.len();
        let t1 = web_time::Instant::now();
        for step in 0..max_tokens {
            let next: Vec<u32> = rows.chunks(v).map(|r| sampler.sample(r)).collect();
            for (k, &i) in group.iter().enumerate() {
                out[i].push(next[k]);
                on_token(i, next[k]);
            }
            if step + 1 == max_tokens {
                break;
            }
            let tok = model.tokens(ctx, &next, b)?;
            let l = ctx.run(|rec| model.step(rec, &mut cache, &tok))?;
            rows = read(&l).await?;
        }
        stats.decode_s += t1.elapsed().as_secs_f64();
        stats.generated_tokens += b * max_tokens;
    }
    Ok((out, stats))
}
