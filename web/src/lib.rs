//! chunkwise in a web page: the page fetches a model folder's files, opens a [`Session`] on the
//! browser's WebGPU adapter, and generates with the text streamed to a callback. `web/main.js`
//! is the page that uses it; `web/build.sh` builds both into `web/dist/`.

use std::rc::Rc;

use chunkwise::model::generate::generate_async;
use chunkwise::model::sampling::Sampler;
use chunkwise::model::{Model, Tokenizer};
use chunkwise::{Context, ContextOptions};
use wasm_bindgen::prelude::*;

/// An open adapter and a loaded model.
#[wasm_bindgen]
pub struct Session {
    inner: Rc<Inner>,
}

struct Inner {
    ctx: Context,
    model: Model,
    tok: Tokenizer,
}

/// How to generate: the command line's `generate` options, with its defaults.
#[wasm_bindgen]
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub max_tokens: usize,
    pub temperature: f32,
    /// 1 is greedy; 0 means no top-k cut.
    pub top_k: usize,
    pub top_p: f32,
    pub seed: u32,
}

#[wasm_bindgen]
impl Options {
    #[wasm_bindgen(constructor)]
    pub fn new() -> Options {
        Options {
            max_tokens: 200,
            temperature: 0.8,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Self::new()
    }
}

fn js_error(e: impl std::fmt::Display) -> JsValue {
    JsError::new(&e.to_string()).into()
}

#[wasm_bindgen]
impl Session {
    /// Opens the browser's adapter (with its own limits, as natively) and loads a model from the
    /// contents of its `config.json`, `model.safetensors` and, where it has one, `tokenizer.json`.
    /// The weights are stored in the config's dtype where the adapter has f16, else f32.
    pub async fn open(
        config_json: String,
        weights: Vec<u8>,
        tokenizer_json: Option<String>,
    ) -> Result<Session, JsValue> {
        // No environment and no files in a page: the defaults, not `ContextOptions::from_env`.
        let ctx = Context::with_options(ContextOptions::default())
            .await
            .map_err(js_error)?;
        let model = Model::from_memory(&ctx, &config_json, &weights, None).map_err(js_error)?;
        let tok =
            Tokenizer::from_memory(model.config(), tokenizer_json.as_deref(), "tokenizer.json")
                .map_err(js_error)?;
        // Loading submitted uploads and compiled nothing yet; errors the browser reports late
        // (a refused buffer) surface here rather than at the first generation.
        ctx.check_alive().map_err(js_error)?;
        Ok(Session {
            inner: Rc::new(Inner { ctx, model, tok }),
        })
    }

    /// The adapter as JSON: `name`, `backend`, `features` (the ones chunkwise uses) and the
    /// limits that decide which kernels fit.
    pub fn adapter(&self) -> String {
        let ctx = &self.inner.ctx;
        let info = ctx.adapter_info();
        let limits = ctx.limits();
        let features: Vec<String> = ctx
            .features()
            .iter_names()
            .map(|(n, _)| n.to_string())
            .collect();
        serde_json::json!({
            "name": info.name,
            "backend": format!("{:?}", info.backend),
            "features": features,
            "max_storage_buffers_per_shader_stage": limits.max_storage_buffers_per_shader_stage,
            "max_storage_buffer_binding_size": limits.max_storage_buffer_binding_size,
            "max_compute_workgroup_storage_size": limits.max_compute_workgroup_storage_size,
            "dtype": format!("{:?}", self.inner.model.dtype()),
        })
        .to_string()
    }

    /// Generates up to `opts.max_tokens` tokens after `prompt`, calling `on_text(piece)` with
    /// each piece of the continuation as it is decoded (whole UTF-8 characters only). Resolves to
    /// JSON with `text` (the continuation), `tokens`, `prefill_tokens_per_s` and
    /// `decode_tokens_per_s`.
    pub fn generate(
        &self,
        prompt: String,
        opts: &Options,
        on_text: js_sys::Function,
    ) -> js_sys::Promise {
        let Options {
            max_tokens,
            temperature,
            top_k,
            top_p,
            seed,
        } = *opts;
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let Inner { ctx, model, tok } = &*inner;
            let ids = tok.encode(&prompt).map_err(js_error)?;
            let mut sampler = Sampler::new(temperature, top_k, top_p, u64::from(seed));
            let mut stream = tok.stream_after(&ids).map_err(js_error)?;
            let mut held = Vec::new();
            let mut text = String::new();
            let mut failed = None;
            let mut emit = |bytes: Vec<u8>, end: bool, text: &mut String| {
                held.extend(bytes);
                let piece = whole_chars(&mut held, end);
                if !piece.is_empty() {
                    text.push_str(&piece);
                    let _ = on_text.call1(&JsValue::NULL, &JsValue::from_str(&piece));
                }
            };
            let prompts = [ids];
            let (outs, stats) =
                generate_async(ctx, model, &prompts, max_tokens, &mut sampler, |_, id| {
                    if failed.is_none() {
                        match stream.step(id) {
                            Ok(bytes) => emit(bytes, false, &mut text),
                            Err(e) => failed = Some(e),
                        }
                    }
                })
                .await
                .map_err(js_error)?;
            if let Some(e) = failed {
                return Err(js_error(e));
            }
            let rest = stream.finish().map_err(js_error)?;
            emit(rest, true, &mut text);
            Ok(JsValue::from_str(
                &serde_json::json!({
                    "text": text,
                    "tokens": outs[0].len(),
                    "prefill_tokens_per_s": stats.prefill_tokens_per_s(),
                    "decode_tokens_per_s": stats.decode_tokens_per_s(),
                })
                .to_string(),
            ))
        })
    }
}

/// Compiles every kernel variant on the browser's adapter, as its own compiler sees them (Tint
/// in Chromium and Dawn, not naga): each kernel file's assembled WGSL in every dtype the adapter
/// has, its compilation messages, then a pipeline for each of the variant table's sample keys
/// that fits the device (tensor-core and subgroup variants only where the device has them, as
/// the selection would pick them). Resolves to JSON with `adapter`, `dtypes`, `modules`,
/// `pipelines` and `errors` (each naming file, entry, dtype, constants and the message, with
/// the line mapped back to the file under `shaders/`).
#[wasm_bindgen]
pub async fn check_kernels() -> Result<String, JsValue> {
    use chunkwise::kernels::{assemble, entry_info, kernel_files, variants};
    use chunkwise::DType;
    let ctx = Context::with_options(ContextOptions::default())
        .await
        .map_err(js_error)?;
    let device = ctx.device();
    let limits = ctx.limits();
    let dtypes: Vec<DType> = if ctx.supports_f16() {
        vec![DType::F32, DType::F16]
    } else {
        vec![DType::F32]
    };
    let (mut modules, mut pipelines, mut errors) = (0, 0, Vec::new());
    for file in kernel_files() {
        let rows: Vec<&variants::Variant> = variants::TABLE
            .iter()
            .filter(|v| v.file == file)
            .filter(|v| {
                !v.coop
                    || ctx
                        .features()
                        .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
            })
            .filter(|v| !v.subgroups || ctx.subgroups_enabled())
            .collect();
        if rows.is_empty() {
            continue;
        }
        for &dtype in &dtypes {
            let a = assemble(file, dtype).map_err(js_error)?;
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(file),
                source: wgpu::ShaderSource::Wgsl(a.source.clone().into()),
            });
            modules += 1;
            let info = module.get_compilation_info().await;
            let mut failed = false;
            for m in info.messages {
                if m.message_type != wgpu::CompilationMessageType::Error {
                    continue;
                }
                failed = true;
                let at = m.location.map_or(String::new(), |l| {
                    let (f, line) = a.origin(l.line_number);
                    format!(" at {f}:{line}")
                });
                errors.push(format!("{file} {dtype:?}{at}: {}", m.message));
            }
            if failed {
                continue;
            }
            for v in &rows {
                for key in v.sample_keys(dtype) {
                    let fits = entry_info(&key).map_err(js_error)?;
                    let storage = fits
                        .bindings
                        .iter()
                        .filter(|(_, k)| !matches!(k, chunkwise::kernels::BindingKind::Uniform))
                        .count() as u32;
                    if fits.workgroup_bytes > limits.max_compute_workgroup_storage_size as u64
                        || storage > limits.max_storage_buffers_per_shader_stage
                    {
                        continue; // the device refuses it by name; the plans pick another
                    }
                    let constants: Vec<(&str, f64)> = key
                        .constants
                        .iter()
                        .map(|(n, b)| (*n, f64::from_bits(*b)))
                        .collect();
                    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
                    let _pipeline =
                        device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                            label: Some(key.entry),
                            layout: None,
                            module: &module,
                            entry_point: Some(key.entry),
                            compilation_options: wgpu::PipelineCompilationOptions {
                                constants: &constants,
                                zero_initialize_workgroup_memory: false,
                            },
                            cache: None,
                        });
                    pipelines += 1;
                    if let Some(e) = scope.pop().await {
                        errors.push(format!(
                            "{file}::{} {dtype:?} {constants:?}: {e}",
                            key.entry
                        ));
                    }
                }
            }
        }
    }
    Ok(serde_json::json!({
        "adapter": ctx.adapter_info().name,
        "dtypes": dtypes.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>(),
        "modules": modules,
        "pipelines": pipelines,
        "errors": errors,
    })
    .to_string())
}

/// Runs the `chunkwise check` cases (`scope`: `smoke`, `quick` or `full`; `families` empty for
/// all; `schedule`: `auto`, `gpu` or `cpu`, as `CHUNKWISE_SCHEDULE`) on the browser's adapter, each against the crate's float64 reference, as the CLI does
/// natively. Resolves to JSON with `adapter`, `ran`, `skipped` and `failed` (the failed and
/// skipped cases described as in `check`'s table).
#[wasm_bindgen]
pub async fn check_cases(
    scope: String,
    families: Vec<String>,
    schedule: String,
) -> Result<String, JsValue> {
    use chunkwise::verify::{select, Scope};
    let scope = match scope.as_str() {
        "smoke" => Scope::Smoke,
        "quick" => Scope::Quick,
        "full" => Scope::Full,
        other => {
            return Err(js_error(format!(
                "scope must be smoke, quick or full, got '{other}'"
            )))
        }
    };
    let ctx = Context::with_options(ContextOptions::default())
        .await
        .map_err(js_error)?;
    ctx.set_schedule(schedule.parse().map_err(js_error)?);
    let cases = select(&families, scope).map_err(js_error)?;
    let (mut ran, mut skipped, mut failed) = (0, Vec::new(), Vec::new());
    for case in &cases {
        let out = case.run_async(&ctx).await;
        if out.failed() {
            failed.push(out.describe());
        } else if out.skipped.is_some() {
            skipped.push(out.describe());
        } else {
            ran += 1;
        }
    }
    Ok(serde_json::json!({
        "adapter": ctx.adapter_info().name,
        "schedule": if ctx.cpu_schedules() { "cpu" } else { "gpu" },
        "ran": ran,
        "skipped": skipped,
        "failed": failed,
    })
    .to_string())
}

/// Runs one golden case (`shared/golden`: the JSON's text, named `file` in errors, and the bytes
/// of the safetensors file it names) as `chunkwise run --check` does, on the `schedule` given
/// (`auto`, `gpu` or `cpu`). Resolves to JSON with `checks` (name, max_abs, rel_rms, tol, ok per
/// compared output) and `ok` (every check passed, and there was at least one).
#[wasm_bindgen]
pub async fn run_golden(
    file: String,
    json: String,
    safetensors: Vec<u8>,
    schedule: String,
) -> Result<String, JsValue> {
    let ctx = Context::with_options(ContextOptions::default())
        .await
        .map_err(js_error)?;
    ctx.set_schedule(schedule.parse().map_err(js_error)?);
    let run = chunkwise::golden::run_case_in_memory(
        &ctx,
        &file,
        &json,
        &safetensors,
        chunkwise::golden::RunOptions::default(),
    )
    .await
    .map_err(js_error)?;
    let ok = !run.checks.is_empty() && run.checks.iter().all(|c| c.ok);
    Ok(serde_json::json!({ "checks": run.checks, "ok": ok }).to_string())
}

/// Takes the whole UTF-8 characters from the front of `held`, leaving an unfinished one for the
/// next token; bytes that can never be UTF-8 become U+FFFD, as `String::from_utf8_lossy` would.
/// At `end` nothing is held back.
pub fn whole_chars(held: &mut Vec<u8>, end: bool) -> String {
    let mut out = String::new();
    loop {
        match std::str::from_utf8(held) {
            Ok(s) => {
                out.push_str(s);
                held.clear();
                return out;
            }
            Err(e) => {
                let ok = e.valid_up_to();
                out.push_str(std::str::from_utf8(&held[..ok]).unwrap_or_default());
                match e.error_len() {
                    Some(bad) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        held.drain(..ok + bad);
                    }
                    None if end => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        held.clear();
                        return out;
                    }
                    None => {
                        held.drain(..ok);
                        return out;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::whole_chars;

    #[test]
    fn pieces_hold_unfinished_characters_and_match_lossy_decoding() {
        let text = "a→ü😀b".as_bytes();
        let mut held = Vec::new();
        let mut out = String::new();
        for &b in text {
            held.push(b);
            let piece = whole_chars(&mut held, false);
            // Nothing is emitted in the middle of a character.
            assert!(piece.is_empty() || text.starts_with((out.clone() + &piece).as_bytes()));
            out.push_str(&piece);
        }
        assert_eq!(out, "a→ü😀b");
        let bad = [b'x', 0xff, b'y', 0xe2, 0x86];
        let mut held = bad.to_vec();
        assert_eq!(whole_chars(&mut held, true), String::from_utf8_lossy(&bad));
    }
}
