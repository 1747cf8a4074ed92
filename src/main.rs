//! The `chunkwise` command line: `info`, `check`, `run`, `generate`, `bench`.

use std::process::ExitCode;

use chunkwise::ops::gemm::GemmSchedule;
use chunkwise::{bench, AdapterSummary, Context, DType};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "chunkwise",
    version,
    about = "RAT, Mesa and softmax-attention layers as WGSL compute shaders on wgpu"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List every adapter wgpu finds, and the features and limits of the selected one.
    Info {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run a golden case (shared/golden/README.md): build the layer from the case's weights, run it,
    /// optionally write the outputs and compare them with the expected tensors.
    Run {
        /// The case's JSON file (its safetensors file lies beside it).
        case: std::path::PathBuf,
        /// Write every computed output, as float32, under the expected tensor's name.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// Compare with the expected tensors; exit non-zero if any fails.
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        solver: SolverArgs,
    },
    /// Generate text with a model folder (model.safetensors + config.json): the continuation goes
    /// to stdout as it is produced (raw bytes for byte-level models), tokens/s to stderr.
    Generate {
        #[arg(long)]
        model: std::path::PathBuf,
        /// Prompt text; repeat the flag to generate for several prompts at once.
        #[arg(long, required = true)]
        prompt: Vec<String>,
        #[arg(long, default_value_t = 200)]
        max_tokens: usize,
        /// 0 is greedy.
        #[arg(long, default_value_t = 0.8)]
        temperature: f32,
        /// Keep the K most likely tokens (0 keeps all; 1 is greedy).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Storage dtype of the weights (f32 or f16); default: the config's `dtype`, else f32.
        #[arg(long)]
        dtype: Option<DType>,
        #[command(flatten)]
        solver: SolverArgs,
    },
    /// Verify every kernel family on the selected adapter against the float64 reference (and
    /// golden cases with --golden): a table of family, schedule, variant, shape, dtype, error,
    /// bound, result and time; exits non-zero if any case fails. Runs the kernels of
    /// CHUNKWISE_SCHEDULE (auto, gpu or cpu), with and without subgroup kernels.
    Check {
        /// Also write JSON Lines, one object per case, to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Leave out the long cases (one per family, sized to reach loop and tile limits).
        #[arg(long, conflicts_with = "smoke")]
        quick: bool,
        /// Only the first case of each family in each dtype (for drivers that compile slowly).
        #[arg(long)]
        smoke: bool,
        /// Only these families (repeat the flag or separate with commas); see --list.
        #[arg(long, value_delimiter = ',')]
        family: Vec<String>,
        /// Also run every golden case (*.json) under this folder through `chunkwise run`'s path.
        #[arg(long)]
        golden: Option<std::path::PathBuf>,
        /// A case that takes longer than this many seconds fails (and the run stops).
        #[arg(long, default_value_t = 300)]
        timeout_s: u64,
        /// List the families and their case counts, and exit.
        #[arg(long)]
        list: bool,
    },
    /// Tune the selected adapter: check every candidate variant (the GPU GEMM's tile shapes, the
    /// GPU flash forward's kernels, the GPU Mesa CG's chunk plans) against the float64
    /// reference, time those that pass at the benchmarked layers' shapes, and write the fastest
    /// per shape class to the tune cache, which later runs on this adapter read (table headers
    /// name it).
    Tune {
        /// The cache file (default: CHUNKWISE_TUNE_CACHE, else the user's cache directory).
        #[arg(long)]
        cache: Option<std::path::PathBuf>,
        /// f32 only: GEMMs at D = 256 and two sequence lengths, attention at 1024 tokens, Mesa
        /// at 512.
        #[arg(long)]
        quick: bool,
        /// Timed runs per candidate and shape (median taken, after one warm-up).
        #[arg(long, default_value_t = 3)]
        samples: usize,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
}

/// Mesa's CG rule on the command line (`ops::mesa::Solver`).
#[derive(clap::Args, Clone, Copy)]
struct SolverArgs {
    /// Mesa's CG rule: `reference` (fla's fixed iteration, as the goldens) or `paper` (Jacobi
    /// start, stop at a relative residual of --mesa-tol, the step count a cap).
    #[arg(long, value_enum)]
    mesa_solver: Option<SolverName>,
    /// The paper rule's tolerance ε (stop once sqrt(δ) ≤ ε·sqrt(δ0)); default 1e-6.
    #[arg(long)]
    mesa_tol: Option<f64>,
}

#[derive(Clone, Copy, ValueEnum)]
enum SolverName {
    Reference,
    Paper,
}

impl SolverArgs {
    /// The rule asked for, if any (`--mesa-tol` alone means the paper rule).
    fn solver(self) -> Result<Option<chunkwise::ops::mesa::Solver>, Box<dyn std::error::Error>> {
        let name = match (self.mesa_solver, self.mesa_tol) {
            (Some(SolverName::Reference), Some(_)) => {
                return Err("--mesa-tol applies to --mesa-solver paper only".into())
            }
            (Some(SolverName::Reference), None) => "reference",
            (Some(SolverName::Paper), _) | (None, Some(_)) => "paper",
            (None, None) => return Ok(None),
        };
        Ok(Some(chunkwise::ops::mesa::Solver::parse(
            name,
            self.mesa_tol,
        )?))
    }
}

#[derive(clap::Args)]
struct LayersArgs {
    #[arg(long, default_value = "attention,rat,mesa")]
    layers: String,
    #[arg(long, default_value = "1024,4096")]
    seq: String,
    /// Batch sizes (forward and decode).
    #[arg(long, default_value = "1")]
    batch: String,
    #[arg(long, default_value_t = 256)]
    d_model: usize,
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// RAT chunk size L.
    #[arg(long, default_value_t = 16)]
    chunk: usize,
    /// RAT query/key groups.
    #[arg(long, default_value_t = 2)]
    groups: usize,
    /// Sliding window of the local attention layer.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// CG iterations of the Mesa layer (the count, or the paper rule's cap).
    #[arg(long, default_value_t = 30)]
    cg_steps: usize,
    #[command(flatten)]
    solver: SolverArgs,
    #[arg(long, default_value = "f32")]
    dtype: DType,
    #[arg(long, value_enum, default_value = "both")]
    mode: Mode,
    /// Decode position (the cache holds this many earlier tokens).
    #[arg(long, default_value_t = 4096)]
    position: usize,
    /// Timed samples per layer and size, after a checked warm-up. The layers of a size take
    /// their samples in turn (attention, RAT, Mesa, attention, ...), so that their ratios hold
    /// on a machine whose speed drifts.
    #[arg(long, default_value_t = 3)]
    samples: usize,
    /// Also write JSON Lines, one object per measurement, to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Also draw forward latency against T (log–log, one line per layer) into this SVG file.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// A prepared set of sizes, replacing the size flags: `quick` finishes in a few minutes on a
    /// CPU driver such as lavapipe; `paper` is the RAT paper's setup (D = 2048, 16 heads of 128,
    /// L = 16, batch × T = 262,144 tokens for T = 4096 … 131072; decode at positions 4096 and
    /// 16384, batch 1 and 16; f16 storage; 2 samples) for real GPUs.
    #[arg(long, value_enum)]
    preset: Option<Preset>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Preset {
    Quick,
    Paper,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Forward,
    Decode,
    Both,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Schedule {
    Auto,
    Tiled,
    Gemv,
    Direct,
    DirectSubgroup,
}

#[derive(clap::Args)]
struct ModelArgs {
    /// Model folders to run (repeat the flag); none runs the random-weight models of `--kinds`.
    #[arg(long)]
    model: Vec<std::path::PathBuf>,
    /// Random-weight models to build (rat, hybrid, attention, mesanet), when no --model is given.
    #[arg(long, default_value = "rat,hybrid,attention,mesanet")]
    kinds: String,
    #[arg(long, default_value_t = 8)]
    layers: usize,
    #[arg(long, default_value_t = 512)]
    d_model: usize,
    #[arg(long, default_value_t = 8)]
    heads: usize,
    #[arg(long, default_value_t = 256)]
    vocab: usize,
    /// Prompt length in tokens (default 1024; 512 with --preset).
    #[arg(long)]
    prompt: Option<usize>,
    /// Tokens to generate (default 64; 16 with --preset).
    #[arg(long)]
    new_tokens: Option<usize>,
    #[arg(long, default_value = "1,16")]
    batch: String,
    /// Storage dtype of the weights; default: a model folder's config `dtype`, else f32.
    #[arg(long)]
    dtype: Option<DType>,
    /// Also write JSON Lines, one object per measurement, to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    #[command(flatten)]
    solver: SolverArgs,
    /// Random-weight models at the published sizes (comma-separated), replacing --kinds and the
    /// size flags: rat-1.3b (the RAT paper's RAT-XL), attention-1.3b (the same stack with
    /// attention), mesanet-1.3b (fla's MesaNet of that width and depth). They prefill 512 tokens
    /// and generate 16 unless --prompt / --new-tokens are given, and time a decode step at
    /// position 4096 unless --position is.
    #[arg(long, value_delimiter = ',')]
    preset: Vec<String>,
    /// Also time one decode step with the cache at this position (filled without a prompt).
    #[arg(long)]
    position: Option<usize>,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Whole models: prefill and decode tokens/s of greedy generation (shipped or random-weight
    /// models), and the cost of picking a token on the CPU and on the GPU.
    Model(ModelArgs),
    /// Whole layers (projections included): forward latency over a sequence and decode latency
    /// at a position, with GFLOP/s, tokens/s, cache bytes and the ratio to attention in the same run.
    Layers(LayersArgs),
    /// Attention kernels: causal forward at several lengths and decode at a position, next to GEMM GFLOP/s.
    Attention {
        #[arg(long, default_value = "1024,4096")]
        seq: String,
        #[arg(long, default_value_t = 256)]
        d_model: usize,
        #[arg(long, default_value_t = 4)]
        heads: usize,
        /// Sliding window (keys t−W … t); full causal when absent.
        #[arg(long)]
        window: Option<usize>,
        #[arg(long, default_value_t = 4096)]
        position: usize,
        /// Batch sizes for decode.
        #[arg(long, default_value = "1,16")]
        decode_batch: String,
        #[arg(long, default_value_t = 3)]
        samples: usize,
        #[arg(long)]
        json: bool,
    },
    /// GEMM y = x·Wᵀ GFLOP/s at several sizes (1024³ among them).
    Gemm {
        /// Sizes as MxNxK, comma separated.
        #[arg(
            long,
            default_value = "256x256x256,1024x1024x1024,4096x256x256,4096x768x256,1x4096x4096,16x4096x4096"
        )]
        sizes: String,
        #[arg(long, default_value = "f32")]
        dtype: DType,
        #[arg(long, value_enum, default_value = "auto")]
        schedule: Schedule,
        /// The GPU GEMM's tile (64x64, 128x64, 128x128, or the tensor-core coop16 / coop8) for
        /// `--schedule tiled`; default: the tuned choice, else the size rule (`chunkwise tune`).
        #[arg(long)]
        tile: Option<String>,
        /// Timed samples per size (after one warm-up).
        #[arg(long, default_value_t = 5)]
        samples: usize,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.cmd {
        Cmd::Info { json } => info(json),
        Cmd::Tune {
            cache,
            quick,
            samples,
        } => tune(cache, quick, samples),
        Cmd::Generate {
            model,
            prompt,
            max_tokens,
            temperature,
            top_k,
            top_p,
            seed,
            dtype,
            solver,
        } => {
            use std::io::Write;
            let ctx = Context::new_blocking()?;
            let solver = solver.solver()?;
            let m = chunkwise::model::Model::open_as(&ctx, &model, dtype, |cfg| {
                if let Some(s) = solver {
                    cfg.solver = s;
                }
            })?;
            let tok = chunkwise::model::Tokenizer::open(&model, m.config())?;
            let prompts: Vec<Vec<u32>> = prompt
                .iter()
                .map(|p| tok.encode(p))
                .collect::<Result<_, _>>()?;
            let mut sampler =
                chunkwise::model::sampling::Sampler::new(temperature, top_k, top_p, seed);
            let single = prompts.len() == 1;
            let stdout = std::io::stdout();
            // The continuation decoded after its prompt: tokenizers that strip a leading space
            // (LLaMA's) would otherwise drop the one before the first new word.
            let mut stream = tok.stream_after(&prompts[0])?;
            let mut stream_err = None;
            let (outs, stats) = chunkwise::model::generate::generate(
                &ctx,
                &m,
                &prompts,
                max_tokens,
                &mut sampler,
                |_, id| {
                    if single && stream_err.is_none() {
                        match stream.step(id) {
                            Ok(bytes) => {
                                let mut o = stdout.lock();
                                let _ = o.write_all(&bytes);
                                let _ = o.flush();
                            }
                            Err(e) => stream_err = Some(e),
                        }
                    }
                },
            )?;
            if let Some(e) = stream_err {
                return Err(e.into());
            }
            if single {
                let mut o = stdout.lock();
                o.write_all(&stream.finish()?)?;
                o.flush()?;
            }
            if !single {
                let mut o = stdout.lock();
                for (i, ids) in outs.iter().enumerate() {
                    writeln!(o, "=== prompt {i} ===")?;
                    o.write_all(&tok.decode_after(&prompts[i], ids)?)?;
                    writeln!(o)?;
                }
            }
            eprintln!(
                "\nprefill: {} tokens, {:.1} tokens/s; decode: {} tokens, {:.1} tokens/s ({})",
                stats.prompt_tokens,
                stats.prefill_tokens_per_s(),
                stats.generated_tokens,
                stats.decode_tokens_per_s(),
                ctx.adapter_info().name
            );
            Ok(())
        }
        Cmd::Check {
            json,
            quick,
            smoke,
            family,
            golden,
            timeout_s,
            list,
        } => {
            let scope = match (quick, smoke) {
                (_, true) => chunkwise::verify::Scope::Smoke,
                (true, _) => chunkwise::verify::Scope::Quick,
                _ => chunkwise::verify::Scope::Full,
            };
            check(json, scope, &family, golden, timeout_s, list)
        }
        Cmd::Run {
            case,
            out,
            check,
            solver,
        } => {
            let ctx = Context::new_blocking()?;
            let opts = chunkwise::golden::RunOptions {
                solver: solver.solver()?,
            };
            let run = chunkwise::golden::run_case_with(&ctx, &case, opts)?;
            if let Some((solver, steps)) = run.cg {
                eprintln!(
                    "CG ({}): {} steps at most, {:.2} on average per solve",
                    solver.name(),
                    steps.max,
                    steps.mean
                );
            }
            if let Some(path) = out {
                chunkwise::model::checkpoint::save_f32(&path, &run.outputs)?;
            }
            for (name, shape, _) in &run.outputs {
                if !check {
                    println!("{name} {shape:?}");
                }
            }
            if check {
                for c in &run.checks {
                    println!("{c}");
                }
                if run.checks.iter().any(|c| !c.ok) {
                    return Err("some outputs are outside tolerance".into());
                }
                if run.checks.is_empty() {
                    return Err("the case holds no expected tensor to check against".into());
                }
            }
            Ok(())
        }
        Cmd::Bench {
            what: BenchCmd::Layers(a),
        } => bench_layers(a),
        Cmd::Bench {
            what: BenchCmd::Model(a),
        } => bench_model(a),
        Cmd::Bench {
            what:
                BenchCmd::Attention {
                    seq,
                    d_model,
                    heads,
                    window,
                    position,
                    decode_batch,
                    samples,
                    json,
                },
        } => {
            let ctx = Context::new_blocking()?;
            let list = |s: &str| -> Result<Vec<usize>, String> {
                s.split(',')
                    .map(|v| {
                        v.trim()
                            .parse()
                            .map_err(|_| format!("bad number '{v}' in '{s}'"))
                    })
                    .collect()
            };
            let gemm = bench::gemm(&ctx, 1024, 1024, 1024, DType::F32, GemmSchedule::Auto, 3)?;
            let info = ctx.adapter_info();
            if !json {
                println!(
                    "# attention on {} ({:?}, {}); schedule {}; GEMM 1024³: {:.2} GFLOP/s",
                    info.name,
                    info.backend,
                    info.driver_info,
                    ctx.schedule_summary(),
                    gemm.gflops
                );
                println!("| mode | batch | T / cache | D | heads | window | median ms | min ms | max ms | GFLOP/s |");
                println!("|---|---|---|---|---|---|---|---|---|---|");
            }
            let mut results = Vec::new();
            for t in list(&seq)? {
                results.push(bench::attention_forward(
                    &ctx, 1, t, d_model, heads, window, samples,
                )?);
            }
            for b in list(&decode_batch)? {
                results.push(bench::attention_decode(
                    &ctx, b, position, d_model, heads, samples,
                )?);
            }
            for r in results {
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    let w = r.window.map_or("-".to_string(), |w| w.to_string());
                    println!(
                        "| {} | {} | {} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.2} |",
                        r.mode,
                        r.batch,
                        r.seq_len,
                        r.d_model,
                        r.heads,
                        w,
                        r.time.median_ms,
                        r.time.min_ms,
                        r.time.max_ms,
                        r.gflops
                    );
                }
            }
            Ok(())
        }
        Cmd::Bench {
            what:
                BenchCmd::Gemm {
                    sizes,
                    dtype,
                    schedule,
                    tile,
                    samples,
                    json,
                },
        } => {
            let ctx = Context::new_blocking()?;
            let tile = tile
                .map(|t| {
                    let names: Vec<&str> = chunkwise::ops::gemm::Tile::ALL
                        .iter()
                        .map(|t| t.name())
                        .collect();
                    chunkwise::ops::gemm::Tile::parse(&t)
                        .ok_or(format!("--tile {t}: not one of {}", names.join(", ")))
                })
                .transpose()?;
            if tile.is_some() && schedule != Schedule::Tiled {
                return Err("--tile needs --schedule tiled".into());
            }
            let schedule = match schedule {
                Schedule::Auto => GemmSchedule::Auto,
                Schedule::Tiled => tile.map_or(GemmSchedule::Tiled, GemmSchedule::TiledAs),
                Schedule::Gemv => GemmSchedule::Gemv,
                Schedule::Direct => GemmSchedule::Direct,
                Schedule::DirectSubgroup => GemmSchedule::DirectSubgroup,
            };
            let info = ctx.adapter_info();
            if !json {
                println!(
                    "# GEMM y = x·Wᵀ on {} ({:?}, {}); schedule {}",
                    info.name,
                    info.backend,
                    info.driver_info,
                    ctx.schedule_summary()
                );
                println!(
                    "| M | N | K | dtype | schedule | median ms | min ms | max ms | GFLOP/s |"
                );
                println!("|---|---|---|---|---|---|---|---|---|");
            }
            for size in sizes.split(',') {
                let dims: Vec<usize> = size
                    .split('x')
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()
                    .map_err(|_| format!("bad size '{size}': use MxNxK, e.g. 1024x1024x1024"))?;
                let [m, n, k] = dims[..] else {
                    return Err(format!("bad size '{size}': use MxNxK").into());
                };
                let r = bench::gemm(&ctx, m, n, k, dtype, schedule, samples)?;
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    println!(
                        "| {} | {} | {} | {:?} | {} | {:.3} | {:.3} | {:.3} | {:.2} |",
                        r.m,
                        r.n,
                        r.k,
                        r.dtype,
                        r.schedule,
                        r.time.median_ms,
                        r.time.min_ms,
                        r.time.max_ms,
                        r.gflops
                    );
                }
            }
            Ok(())
        }
    }
}

/// Which kernel variants an adapter runs (the variant table against its backend, device type,
/// features and the schedule setting), as JSON: `runs`, `other_schedule`, `needs_subgroups`,
/// `not_on_backend` (with the reason), plus the schedule and whether f16 storage is available.
fn adapter_variants(a: &wgpu::Adapter, schedule: chunkwise::Schedule) -> serde_json::Value {
    use chunkwise::kernels::variants::{availability, Availability, TABLE};
    let info = a.get_info();
    let features = a.features();
    let cpu = match schedule {
        chunkwise::Schedule::Auto => info.device_type == wgpu::DeviceType::Cpu,
        chunkwise::Schedule::Gpu => false,
        chunkwise::Schedule::Cpu => true,
    };
    let subgroups = features.contains(wgpu::Features::SUBGROUP);
    let coop = features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX);
    let (mut runs, mut other, mut needs_sg, mut not_here) = (vec![], vec![], vec![], vec![]);
    let mut needs_coop = vec![];
    for v in TABLE {
        match availability(v, info.backend, cpu, subgroups, coop) {
            Availability::Runs => runs.push(v.name()),
            Availability::OtherSchedule => other.push(v.name()),
            Availability::NeedsSubgroups => needs_sg.push(v.name()),
            Availability::NeedsCoopMatrix => needs_coop.push(v.name()),
            Availability::NotOnBackend(why) => {
                not_here.push(serde_json::json!({ "variant": v.name(), "why": why }))
            }
        }
    }
    serde_json::json!({
        "schedule": format!("{} → {} kernels", schedule.name(), if cpu { "cpu" } else { "gpu" }),
        "f16": features.contains(wgpu::Features::SHADER_F16),
        "subgroups": subgroups,
        "runs": runs,
        "other_schedule": other,
        "needs_subgroups": needs_sg,
        "needs_cooperative_matrix": needs_coop,
        "cooperative_matrix_sizes": a.cooperative_matrix_properties().iter().map(|p| {
            format!("{}x{}x{} {:?}·{:?}→{:?}", p.m_size, p.n_size, p.k_size, p.ab_type, p.ab_type, p.cr_type)
        }).collect::<Vec<_>>(),
        "not_on_backend": not_here,
    })
}

fn info(json: bool) -> Result<(), Box<dyn std::error::Error>> {
    let found = chunkwise::context::enumerate_adapters();
    let schedule = chunkwise::Schedule::from_env()?;
    let adapters: Vec<AdapterSummary> = found.iter().map(|a| (&a.get_info()).into()).collect();
    let variants: Vec<serde_json::Value> = found
        .iter()
        .map(|a| adapter_variants(a, schedule))
        .collect();
    let selected = Context::new_blocking();
    if json {
        let sel = match &selected {
            Ok(ctx) => selected_json(ctx),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        let adapters: Vec<serde_json::Value> = adapters
            .iter()
            .zip(&variants)
            .map(|(a, v)| {
                let mut a = serde_json::to_value(a).unwrap_or_default();
                a["kernels"] = v.clone();
                a
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "adapters": adapters, "selected": sel })
            )?
        );
    } else {
        println!("adapters ({}):", adapters.len());
        for (a, v) in adapters.iter().zip(&variants) {
            println!(
                "  - {:<7} {} [{}] driver: {} {}",
                a.backend, a.name, a.device_type, a.driver, a.driver_info
            );
            let names = |key: &str| -> Vec<String> {
                v[key]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|n| n.as_str().unwrap_or("?").to_string())
                    .collect()
            };
            println!(
                "    kernels: schedule {}, f16 {}, subgroups {}",
                v["schedule"].as_str().unwrap_or("?"),
                if v["f16"] == true {
                    "yes"
                } else {
                    "no (f32 storage)"
                },
                if v["subgroups"] == true { "yes" } else { "no" },
            );
            println!(
                "    runs ({}): {}",
                names("runs").len(),
                names("runs").join(" ")
            );
            for (key, what) in [
                ("other_schedule", "the other schedule's"),
                ("needs_subgroups", "need subgroups"),
                ("needs_cooperative_matrix", "need cooperative matrices"),
            ] {
                let n = names(key);
                if !n.is_empty() {
                    println!("    not run, {what} ({}): {}", n.len(), n.join(" "));
                }
            }
            for n in v["not_on_backend"].as_array().into_iter().flatten() {
                println!(
                    "    not on {}: {} ({})",
                    a.backend,
                    n["variant"].as_str().unwrap_or("?"),
                    n["why"].as_str().unwrap_or("?")
                );
            }
        }
        match &selected {
            Ok(ctx) => {
                let v = selected_json(ctx);
                println!("selected: {}", v["adapter"]["name"].as_str().unwrap_or("?"));
                println!("  schedule: {}", ctx.schedule_summary());
                println!("  gemm: {}", chunkwise::tune::gemm_rule(ctx));
                println!(
                    "  flash forward: {}",
                    chunkwise::ops::attention::forward_rule(ctx)
                );
                println!("  mesa cg: {}", chunkwise::ops::mesa::cg_rule(ctx));
                println!("  features used: {}", v["features"]);
                for (k, val) in v["limits"].as_object().into_iter().flatten() {
                    println!("  {k}: {val}");
                }
            }
            Err(e) => println!("selected: none ({e})"),
        }
    }
    selected.map(|_| ()).map_err(Into::into)
}

fn tune(
    cache: Option<std::path::PathBuf>,
    quick: bool,
    samples: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    use chunkwise::tune;
    let path = cache
        .or_else(tune::cache_path_from_env)
        .ok_or("no cache directory known here: pass --cache FILE")?;
    let ctx = Context::new_blocking()?;
    // Tune what the GPU schedule runs, whatever this adapter's default schedule.
    let info = ctx.adapter_info().clone();
    println!(
        "# tuning {} ({:?}, {} {}) into {}",
        info.name,
        info.backend,
        info.driver,
        info.driver_info,
        path.display()
    );
    println!("| family | shape class | timed at | candidates (median ms) | choice |");
    println!("|---|---|---|---|---|");
    let gemm_shapes = tune::gemm_shapes(&ctx, quick);
    let attention_shapes = tune::attention_shapes(&ctx, quick);
    let rat_shapes = tune::rat_shapes(&ctx, quick);
    let cg_shapes = tune::cg_shapes(&ctx, quick);
    let bar = indicatif::ProgressBar::new(
        (gemm_shapes.len() + attention_shapes.len() + rat_shapes.len() + cg_shapes.len()) as u64,
    );
    let mut reasons = std::collections::BTreeMap::new();
    let mut report = |family: &str, class: &str, c: &tune::Choice| {
        let mut cands: Vec<String> = c.ms.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
        cands.extend(c.rejected.keys().map(|k| format!("{k} rejected")));
        for (name, why) in &c.rejected {
            reasons.insert(format!("{family} {name}"), why.clone());
        }
        bar.suspend(|| {
            println!(
                "| {family} | {class} | {} | {} | {} |",
                c.shape,
                cands.join(", "),
                c.choice
            )
        });
        bar.inc(1);
    };
    // Saved after each family: a tune cut short keeps what it finished.
    let mut tuning = tune::tune_gemm(&ctx, &gemm_shapes, samples, |class, c| {
        report("gemm", class, c)
    })?;
    tuning.save(&path, &info)?;
    tuning.extend(tune::tune_attention(
        &ctx,
        &attention_shapes,
        samples,
        |class, c| report("attention", class, c),
    )?);
    tuning.save(&path, &info)?;
    tuning.extend(tune::tune_rat(&ctx, &rat_shapes, samples, |class, c| {
        report("rat_attention", class, c)
    })?);
    tuning.save(&path, &info)?;
    tuning.extend(tune::tune_mesa(&ctx, &cg_shapes, samples, |class, c| {
        report("mesa_cg", class, c)
    })?);
    bar.finish_and_clear();
    for (what, why) in &reasons {
        println!("rejected {what}: {why}");
    }
    tuning.save(&path, &info)?;
    println!(
        "wrote {} shape classes for this adapter to {}",
        tuning.len(),
        path.display()
    );
    Ok(())
}

fn check(
    json: Option<std::path::PathBuf>,
    scope: chunkwise::verify::Scope,
    families: &[String],
    golden: Option<std::path::PathBuf>,
    timeout_s: u64,
    list: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    use chunkwise::verify;
    let cases = verify::select(families, scope)?;
    if list {
        for f in verify::families() {
            let n = cases.iter().filter(|c| c.family == f).count();
            let long = cases.iter().filter(|c| c.family == f && c.long).count();
            println!("{f:<18} {n} cases ({long} long)");
        }
        return Ok(());
    }
    let golden = golden
        .map(|d| verify::golden_cases(&d).map(|c| (d, c)))
        .transpose()?;
    let ctx = Context::new_blocking()?;
    let info = ctx.adapter_info().clone();
    let env = std::env::var(chunkwise::Schedule::ENV).unwrap_or_default();
    println!(
        "# check on {} ({:?}, {} {}), chunkwise {}; schedule {} ({}={})",
        info.name,
        info.backend,
        info.driver,
        info.driver_info,
        env!("CARGO_PKG_VERSION"),
        ctx.schedule_summary(),
        chunkwise::Schedule::ENV,
        if env.is_empty() { "unset" } else { &env }
    );
    println!("| family | schedule | variant | shape | dtype | error | bound | result | ms |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut json = json_file(json.as_deref())?;
    let timeout = std::time::Duration::from_secs(timeout_s.max(1));
    let mut outcomes = Vec::new();
    let mut write = |o: &verify::Outcome| -> Result<(), Box<dyn std::error::Error>> {
        let err = o.error_value().map_or("-".to_string(), |e| {
            format!(
                "{} {e:.2e}",
                if o.metric == "max_abs" { "abs" } else { "rel" }
            )
        });
        // One line per row: a multi-line message (a shader diagnostic) keeps its first line here
        // and all of it in the JSON.
        let first = |m: &str| m.lines().next().unwrap_or("").replace('|', "/");
        let result = match (&o.error, &o.skipped) {
            (Some(e), _) => format!("FAIL: {}", first(e)),
            (_, Some(s)) => format!("skipped ({})", first(s)),
            _ => o.status().to_string(),
        };
        println!(
            "| {} | {} | {} | {} | {:?} | {err} | {:.0e} | {result} | {:.0} |",
            o.family, o.schedule, o.variant, o.shape, o.dtype, o.bound, o.ms
        );
        if let Some(f) = json.as_mut() {
            use std::io::Write;
            let mut v = serde_json::to_value(o)?;
            v["status"] = o.status().into();
            v["adapter"] = info.name.clone().into();
            v["backend"] = format!("{:?}", info.backend).into();
            writeln!(f, "{v}")?;
        }
        Ok(())
    };
    let mut io_err = None;
    outcomes.extend(verify::run_cases(&ctx, &cases, timeout, |o| {
        if let Err(e) = write(o) {
            io_err.get_or_insert(e);
        }
    }));
    let hung = outcomes.iter().any(|o| {
        o.error
            .as_deref()
            .is_some_and(|e| e.starts_with("did not finish"))
    });
    if let (Some((root, paths)), false) = (&golden, hung) {
        for p in paths {
            let (o, hung) = verify::run_golden(&ctx, p, root, timeout);
            write(&o)?;
            outcomes.push(o);
            if hung {
                break;
            }
        }
    }
    if let Some(e) = io_err {
        return Err(e);
    }
    let failed = outcomes.iter().filter(|o| o.failed()).count();
    let skipped = outcomes.iter().filter(|o| o.skipped.is_some()).count();
    let passed = outcomes.len() - failed - skipped;
    println!();
    println!("{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        return Err(format!("{failed} of {} cases failed", outcomes.len()).into());
    }
    if passed == 0 {
        return Err("no case ran on this adapter".into());
    }
    Ok(())
}

fn selected_json(ctx: &Context) -> serde_json::Value {
    let l = ctx.limits();
    let features: Vec<String> = ctx
        .features()
        .iter_names()
        .map(|(n, _)| n.to_string())
        .filter(|n| {
            chunkwise::context::WANTED_FEATURES
                .iter_names()
                .any(|(w, _)| w == n)
        })
        .collect();
    serde_json::json!({
        "adapter": AdapterSummary::from(ctx.adapter_info()),
        "schedule": ctx.schedule().name(),
        "schedule_summary": ctx.schedule_summary(),
        "gemm": chunkwise::tune::gemm_rule(ctx),
        "flash_forward": chunkwise::ops::attention::forward_rule(ctx),
        "mesa_cg": chunkwise::ops::mesa::cg_rule(ctx),
        "features": features,
        "limits": {
            "max_buffer_size": l.max_buffer_size,
            "max_storage_buffer_binding_size": l.max_storage_buffer_binding_size,
            "max_compute_workgroup_storage_size": l.max_compute_workgroup_storage_size,
            "max_compute_invocations_per_workgroup": l.max_compute_invocations_per_workgroup,
            "max_compute_workgroups_per_dimension": l.max_compute_workgroups_per_dimension,
            "max_storage_buffers_per_shader_stage": l.max_storage_buffers_per_shader_stage,
            "min_uniform_buffer_offset_alignment": l.min_uniform_buffer_offset_alignment,
            "subgroup_min_size": ctx.adapter_info().subgroup_min_size,
            "subgroup_max_size": ctx.adapter_info().subgroup_max_size,
        }
    })
}

fn list(s: &str) -> Result<Vec<usize>, String> {
    s.split(',')
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| format!("bad number '{v}' in '{s}'"))
        })
        .collect()
}

/// The `--json` output file, if one was asked for.
fn json_file(path: Option<&std::path::Path>) -> Result<Option<std::fs::File>, String> {
    path.map(|p| std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display())))
        .transpose()
}

/// The progress bar of a long benchmark (stderr, so tables on stdout stay clean).
fn progress_bar(len: usize) -> Result<indicatif::ProgressBar, String> {
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed}]")
            .map_err(|e| e.to_string())?,
    );
    Ok(bar)
}

fn bench_model(a: ModelArgs) -> Result<(), Box<dyn std::error::Error>> {
    use chunkwise::model::{Model, ModelConfig};
    let presets = !a.preset.is_empty();
    let prompt = a.prompt.unwrap_or(if presets { 512 } else { 1024 });
    let new_tokens = a.new_tokens.unwrap_or(if presets { 16 } else { 64 });
    // Presets time a step at 4096 unless told otherwise; model folders only when asked (their
    // max_seq_len may not reach it).
    let preset_position = a.position.or(Some(4096).filter(|_| presets));
    let ctx = Context::new_blocking()?;
    let info = ctx.adapter_info().clone();
    let batches = list(&a.batch)?;
    let solver = a.solver.solver()?;
    // (name, model) pairs, built lazily so that one model's weights are on the GPU at a time.
    type Build = Box<dyn Fn() -> chunkwise::Result<Model>>;
    // (name, build, decode position to time a step at)
    let mut specs: Vec<(String, Build, Option<usize>)> = Vec::new();
    for dir in &a.model {
        let (ctx, dir, dtype) = (ctx.clone(), dir.clone(), a.dtype);
        let name = dir
            .file_name()
            .map_or("model".into(), |n| n.to_string_lossy().into_owned());
        specs.push((
            name,
            Box::new(move || {
                Model::open_as(&ctx, &dir, dtype, |cfg| {
                    if let Some(s) = solver {
                        cfg.solver = s;
                    }
                })
            }),
            a.position,
        ));
    }
    for name in &a.preset {
        let max_seq_len = (prompt + new_tokens).max(preset_position.unwrap_or(0) + 8);
        let json = chunkwise::model::random::preset(name, max_seq_len).ok_or_else(|| {
            format!(
                "unknown preset '{name}' (one of {})",
                chunkwise::model::random::PRESETS.join(", ")
            )
        })?;
        let mut cfg = ModelConfig::from_json("<preset>", &json, None)?;
        if let Some(s) = solver {
            cfg.solver = s;
        }
        let (ctx, dtype) = (ctx.clone(), a.dtype.unwrap_or(DType::F32));
        specs.push((
            name.clone(),
            Box::new(move || {
                let ck = chunkwise::model::random::random_checkpoint(&cfg, 1);
                Model::load(&ctx, cfg.clone(), &ck, dtype)
            }),
            preset_position,
        ));
    }
    if a.model.is_empty() && !presets {
        for kind in a.kinds.split(',') {
            let dh = a.d_model / a.heads.max(1);
            let json = serde_json::json!({
                "model_kind": kind, "vocab_size": a.vocab, "d_model": a.d_model,
                "num_layers": a.layers, "num_head": a.heads, "d_head": dh, "ngroups": 2,
                "chunk_size": 16, "window_size": 256, "interleave_step": 2,
                "max_seq_len": (prompt + new_tokens).max(a.position.unwrap_or(0) + 8),
            });
            let mut cfg = ModelConfig::from_json("<bench model>", &json, None)?;
            if let Some(s) = solver {
                cfg.solver = s;
            }
            let (ctx, dtype) = (ctx.clone(), a.dtype.unwrap_or(DType::F32));
            let name = format!("random {kind} {}L D{}", a.layers, a.d_model);
            specs.push((
                name,
                Box::new(move || {
                    let ck = chunkwise::model::random::random_checkpoint(&cfg, 1);
                    Model::load(&ctx, cfg.clone(), &ck, dtype)
                }),
                a.position,
            ));
        }
    }
    println!(
        "# models on {} ({:?}, {}), chunkwise {}; schedule {}",
        info.name,
        info.backend,
        info.driver_info,
        env!("CARGO_PKG_VERSION"),
        ctx.schedule_summary()
    );
    println!(
        "prompt {prompt} tokens, {new_tokens} new tokens (greedy), {}{}",
        a.dtype
            .map_or("dtype from each config, else F32".into(), |d| format!(
                "{d:?}"
            )),
        preset_position
            .map(|p| format!("; step at position {p} from a cache placed there"))
            .unwrap_or_default()
    );
    println!();
    println!("| model | dtype | batch | load s | weights MB | cache MB | peak host MB | prefill ms | prefill tokens/s | decode ms/step | decode tokens/s | step + pick on CPU ms | step + pick on GPU ms | step at position ms | first call ms | dispatches/step |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut json = json_file(a.json.as_deref())?;
    let bar = progress_bar(specs.len() * batches.len())?;
    let mb = |b: u64| b as f64 / 1e6;
    for (name, build, position) in &specs {
        bar.set_message(format!("{name}: loading"));
        // Each model's own peak, not the process's so far.
        chunkwise::model::checkpoint::reset_peak_host_bytes();
        let t0 = std::time::Instant::now();
        let model = build()?;
        let load_s = t0.elapsed().as_secs_f64();
        let peak = chunkwise::model::checkpoint::peak_host_bytes();
        for &b in &batches {
            bar.set_message(format!("{name}, batch {b}"));
            let r = bench::model_generation(&ctx, &model, name, b, prompt, new_tokens, *position);
            bar.inc(1);
            let r = match r {
                Ok(mut r) => {
                    r.load_s = Some(load_s);
                    r.peak_host_bytes = peak;
                    r
                }
                Err(
                    e @ (chunkwise::Error::LimitExceeded { .. }
                    | chunkwise::Error::OutOfMemory { .. }),
                ) => {
                    bar.suspend(|| {
                        println!(
                            "| {name} | {:?} | {b} | skipped: {e} | | | | | | | | | | | | |",
                            model.dtype()
                        )
                    });
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            bar.suspend(|| {
                println!(
                    "| {} | {:?} | {} | {:.1} | {:.0} | {:.1} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.3} | {:.3} | {} | {:.0} | {} |",
                    r.model,
                    r.dtype,
                    r.batch,
                    load_s,
                    mb(r.weight_bytes),
                    mb(r.cache_bytes),
                    peak.map_or("-".into(), |p| format!("{:.0}", mb(p))),
                    r.prefill_ms,
                    r.prefill_tokens_per_s,
                    r.decode_ms_per_step,
                    r.decode_tokens_per_s,
                    r.step_cpu_pick_ms,
                    r.step_gpu_pick_ms,
                    r.step_at_position_ms
                        .map_or("-".into(), |m| format!("{m:.1}")),
                    r.first_call_ms,
                    r.decode_dispatches
                )
            });
            if let Some(f) = json.as_mut() {
                use std::io::Write;
                writeln!(f, "{}", serde_json::to_value(&r)?)?;
            }
        }
    }
    bar.finish_and_clear();
    Ok(())
}

fn bench_layers(mut a: LayersArgs) -> Result<(), Box<dyn std::error::Error>> {
    use chunkwise::bench::{LayerKind, LayerShape};
    // (mode, batch, T or position) for every case of the run.
    let mut cases: Vec<(&'static str, usize, usize)> = Vec::new();
    match a.preset {
        Some(Preset::Quick) => {
            (a.d_model, a.heads, a.chunk, a.groups, a.window, a.samples) = (256, 4, 16, 2, 256, 2);
            a.layers = "attention,local,rat,mesa".into();
            cases.extend([256, 1024, 4096].map(|t| ("forward", 1, t)));
            cases.extend([1, 16].map(|b| ("decode", b, 1024)));
        }
        Some(Preset::Paper) => {
            // Two samples after the warm-up: with the FLOP model in BENCHMARKS.md ("GPU-run
            // checklist") the preset then fits about 5 of its 8 minutes on an H100-class GPU.
            // f16 storage, as the paper's bf16 runs: in f32 a [B, T, 2048] activation of 262,144
            // tokens is 2 GiB, one byte over what wgpu lets any adapter allocate or bind.
            (
                a.d_model, a.heads, a.chunk, a.groups, a.window, a.samples, a.dtype,
            ) = (2048, 16, 16, 2, 1024, 2, DType::F16);
            cases.extend(
                [4096, 8192, 16384, 32768, 65536, 131072].map(|t| ("forward", 262_144 / t, t)),
            );
            for pos in [4096, 16384] {
                cases.extend([1, 16].map(|b| ("decode", b, pos)));
            }
        }
        None => {
            for b in list(&a.batch)? {
                if a.mode != Mode::Decode {
                    cases.extend(list(&a.seq)?.into_iter().map(|t| ("forward", b, t)));
                }
                if a.mode != Mode::Forward {
                    cases.push(("decode", b, a.position));
                }
            }
        }
    }
    let kinds: Vec<LayerKind> = a
        .layers
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let shape = LayerShape {
        d_model: a.d_model,
        heads: a.heads,
        groups: a.groups,
        chunk: a.chunk,
        window: a.window,
        cg_iters: a.cg_steps,
        solver: a.solver.solver()?.unwrap_or_default(),
        dtype: a.dtype,
    };
    let ctx = Context::new_blocking()?;
    let info = ctx.adapter_info().clone();
    let gemm = bench::gemm(&ctx, 1024, 1024, 1024, DType::F32, GemmSchedule::Auto, 3)?;
    let title = format!(
        "layers on {} ({:?}, {}), chunkwise {}; schedule {}; GEMM 1024³ f32: {:.2} GFLOP/s",
        info.name,
        info.backend,
        info.driver_info,
        env!("CARGO_PKG_VERSION"),
        ctx.schedule_summary(),
        gemm.gflops
    );
    println!("# {title}");
    let solver = match shape.solver {
        chunkwise::ops::mesa::Solver::Reference => "reference CG".to_string(),
        chunkwise::ops::mesa::Solver::Paper { tol } => format!("paper CG, ε = {tol:e}, at most"),
    };
    println!(
        "D = {}, {} heads, RAT L = {} (groups {}), local window {}, Mesa {solver} {} CG steps, {:?}",
        a.d_model, a.heads, a.chunk, a.groups, a.window, a.cg_steps, a.dtype
    );
    println!();
    println!("| layer | mode | batch | T / position | median ms | min ms | max ms | GFLOP/s | tokens/s | cache bytes/seq | × vs attention | first call ms | dispatches | min workgroups | CG steps max / mean |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut json = json_file(a.json.as_deref())?;
    let samples = a.samples.max(1);
    let bar = progress_bar(cases.len() * kinds.len() * (samples + 1))?;
    let mut all = Vec::new();
    for (mode, b, n) in cases {
        // Every layer of the case is built and warmed up first, then the layers take their timed
        // samples in turn: a slow phase of the machine then hits all of them, and the ratios
        // between layers hold even where absolute times drift.
        let mut benches = Vec::new();
        // One input for all layers of the size (held once, not once per layer).
        let x = match bench::layer_input(&ctx, b, if mode == "forward" { n } else { 1 }, &shape) {
            Ok(x) => x,
            Err(
                e @ (chunkwise::Error::LimitExceeded { .. } | chunkwise::Error::OutOfMemory { .. }),
            ) => {
                bar.inc((kinds.len() * (samples + 1)) as u64);
                bar.suspend(|| {
                    println!("| all | {mode} | {b} | {n} | skipped: {e} | | | | | | | | | | |")
                });
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        for &kind in &kinds {
            bar.set_message(format!("{kind:?} {mode} batch {b} at {n}: warm-up"));
            let m = if mode == "forward" {
                bench::LayerBench::forward(&ctx, kind, &shape, &x)
            } else {
                bench::LayerBench::decode(&ctx, kind, &shape, &x, n, samples)
            };
            bar.inc(1);
            benches.push(match m {
                Ok(m) => Ok(m),
                // Too large for this adapter: reported as skipped, as the RAT paper marks OOM.
                Err(
                    e @ (chunkwise::Error::LimitExceeded { .. }
                    | chunkwise::Error::OutOfMemory { .. }),
                ) => {
                    bar.inc(samples as u64);
                    Err((kind, e))
                }
                Err(e) => return Err(e.into()),
            });
        }
        for i in 0..samples {
            for slot in benches.iter_mut() {
                let Ok(m) = slot else { continue };
                let kind = m.kind();
                bar.set_message(format!(
                    "{kind:?} {mode} batch {b} at {n}: sample {} of {samples}",
                    i + 1
                ));
                match m.sample() {
                    Ok(()) => bar.inc(1),
                    // A sample can run out of memory where the warm-up did not (every layer of
                    // the size is alive at once): that layer is skipped, the others go on.
                    Err(
                        e @ (chunkwise::Error::LimitExceeded { .. }
                        | chunkwise::Error::OutOfMemory { .. }),
                    ) => {
                        bar.inc((samples - i) as u64);
                        *slot = Err((kind, e));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let mut attention_ms = None;
        for m in benches {
            let r = match m {
                Ok(m) => m.result(),
                Err((kind, e)) => {
                    bar.suspend(|| {
                        println!(
                            "| {kind:?} | {mode} | {b} | {n} | skipped: {e} | | | | | | | | | |"
                        )
                    });
                    continue;
                }
            };
            let kind = r.layer;
            if kind == LayerKind::Attention {
                attention_ms = Some(r.time.median_ms);
            }
            let ratio =
                attention_ms.map_or("-".to_string(), |m| format!("{:.2}", m / r.time.median_ms));
            bar.suspend(|| {
                let cg = match (r.cg_iterations_max, r.cg_iterations_mean) {
                    (Some(m), Some(a)) => format!("{m} / {a:.1}"),
                    _ => "-".into(),
                };
                println!(
                    "| {:?} | {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.2} | {:.0} | {} | {} | {:.0} | {} | {} | {cg} |",
                    r.layer,
                    r.mode,
                    r.batch,
                    n,
                    r.time.median_ms,
                    r.time.min_ms,
                    r.time.max_ms,
                    r.gflops,
                    r.tokens_per_s,
                    r.cache_bytes,
                    ratio,
                    r.first_call_ms,
                    r.dispatches,
                    r.min_workgroups
                )
            });
            if let Some(f) = json.as_mut() {
                use std::io::Write;
                let mut v = serde_json::to_value(&r)?;
                v["adapter"] = info.name.clone().into();
                v["backend"] = format!("{:?}", info.backend).into();
                v["ratio_vs_attention"] = attention_ms.map(|m| m / r.time.median_ms).into();
                writeln!(f, "{v}")?;
            }
            all.push(r);
        }
    }
    bar.finish_and_clear();
    if let Some(p) = &a.plot {
        let caption = format!(
            "layer forward latency, {} ({:?}), D = {}",
            info.name, info.backend, a.d_model
        );
        bench::plot_forward(p, &caption, &all)?;
    }
    Ok(())
}
