// The page: fetches the model folder, opens a chunkwise Session on the browser's WebGPU adapter,
// and generates. URL parameters (prompt, max_tokens, top_k, top_p, temperature, seed, model,
// autorun=1, close=1) fill the form; each run ends with exactly one console line,
// `CHUNKWISE_RESULT {json}` or `CHUNKWISE_ERROR message`, which the headless tests read.
// `?kernels=1` instead compiles every kernel variant with the browser's own WGSL compiler and
// logs the outcome the same way (its `errors` list must be empty).
import init, { Options, Session, check_kernels } from "./pkg/chunkwise_web.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const fields = ["prompt", "max_tokens", "temperature", "top_k", "top_p", "seed"];
for (const f of fields) {
  if (params.has(f)) $(f).value = params.get(f);
}
const modelDir = params.get("model") || "models/rat-tiny-pystdlib";
let session = null;
let adapterName = "";
let busy = false;

function fail(err) {
  const msg = err && err.message ? err.message : String(err);
  $("error").textContent = msg;
  $("error").hidden = false;
  console.log("CHUNKWISE_ERROR " + msg.replace(/\s+/g, " "));
  finish();
}

function finish() {
  busy = false;
  $("run").disabled = session === null;
  if (params.get("close") === "1") setTimeout(() => window.close(), 50);
}

async function fetchOk(url, kind) {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`cannot load ${url}: HTTP ${r.status}`);
  return kind === "bytes" ? new Uint8Array(await r.arrayBuffer()) : r.text();
}

async function describeAdapter() {
  const adapter = await navigator.gpu.requestAdapter();
  const info = adapter && adapter.info;
  if (!info) return "unnamed adapter";
  const parts = [info.vendor, info.architecture, info.device, info.description].filter((s) => s);
  const name = parts.length ? parts.join(" ") : "unnamed adapter";
  return info.isFallbackAdapter ? `${name} (fallback adapter)` : name;
}

async function load() {
  if (!navigator.gpu) {
    throw new Error("this browser has no WebGPU (navigator.gpu is missing); use a recent Chrome " +
      "or Edge, or start Chromium with --enable-unsafe-webgpu");
  }
  await init();
  const config = await fetchOk(`${modelDir}/config.json`);
  const weights = await fetchOk(`${modelDir}/model.safetensors`, "bytes");
  // A byte-level model has no tokenizer.json; any other answer than 404 is an error.
  let tokenizer = null;
  const t = await fetch(`${modelDir}/tokenizer.json`);
  if (t.ok) tokenizer = await t.text();
  else if (t.status !== 404) throw new Error(`cannot load ${modelDir}/tokenizer.json: HTTP ${t.status}`);
  session = await Session.open(config, weights, tokenizer);
  const a = JSON.parse(session.adapter());
  // Browsers may leave the description empty (Chromium does): name it from what they tell.
  adapterName = a.name || await describeAdapter();
  $("adapter").textContent = `Adapter: ${a.name} (${a.backend}); features: ` +
    `${a.features.length ? a.features.join(", ") : "none that chunkwise uses"}; weights ${a.dtype}; ` +
    `${a.max_storage_buffers_per_shader_stage} storage buffers per stage, ` +
    `${(a.max_storage_buffer_binding_size / 2 ** 20).toFixed(0)} MiB per binding.`;
  $("run").disabled = false;
}

async function generate() {
  if (busy || session === null) return;
  busy = true;
  $("run").disabled = true;
  $("error").hidden = true;
  $("continuation").textContent = "";
  $("shown-prompt").textContent = $("prompt").value;
  $("speed").textContent = "";
  const num = (id, parse) => {
    const v = parse($(id).value);
    if (!Number.isFinite(v) || v < 0) throw new Error(`${id} must be a number ≥ 0, got '${$(id).value}'`);
    return v;
  };
  try {
    const opts = new Options();
    opts.max_tokens = num("max_tokens", parseInt);
    if (opts.max_tokens < 1) throw new Error("max_tokens must be at least 1");
    opts.temperature = num("temperature", parseFloat);
    opts.top_k = num("top_k", parseInt);
    opts.top_p = num("top_p", parseFloat);
    opts.seed = num("seed", parseInt);
    const json = await session.generate($("prompt").value, opts,
      (piece) => { $("continuation").textContent += piece; });
    opts.free();
    const r = JSON.parse(json);
    $("speed").textContent = `${r.tokens} tokens; prefill ${r.prefill_tokens_per_s.toFixed(1)} ` +
      `tokens/s, decode ${r.decode_tokens_per_s.toFixed(1)} tokens/s on ${adapterName}`;
    console.log("CHUNKWISE_RESULT " + JSON.stringify({
      text: r.text,
      tokens: r.tokens,
      adapter: adapterName,
      prefill_tokens_per_s: r.prefill_tokens_per_s,
      decode_tokens_per_s: r.decode_tokens_per_s,
    }));
    finish();
  } catch (e) {
    fail(e);
  }
}

$("form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  generate();
});

async function checkKernels() {
  if (!navigator.gpu) throw new Error("this browser has no WebGPU (navigator.gpu is missing)");
  await init();
  $("adapter").textContent = "Compiling every kernel variant with this browser's WGSL compiler…";
  const r = JSON.parse(await check_kernels());
  r.adapter = r.adapter || await describeAdapter();
  $("adapter").textContent = `${r.adapter}: ${r.modules} shader modules (${r.dtypes.join(", ")}), ` +
    `${r.pipelines} pipelines, ${r.errors.length} errors.`;
  $("output").textContent = r.errors.join("\n");
  console.log("CHUNKWISE_RESULT " + JSON.stringify(r));
  if (params.get("close") === "1") setTimeout(() => window.close(), 50);
}

if (params.get("kernels") === "1") {
  checkKernels().catch(fail);
} else {
  load().then(() => {
    if (params.get("autorun") === "1") generate();
  }, fail);
}
