// The wasm build under Node with Dawn (npm `webgpu`, dawn.node): Chrome's WebGPU implementation
// and WGSL compiler (Tint) on whatever Vulkan driver the machine has (CI: lavapipe from Mesa 25;
// Dawn refuses older ones). Checks, exiting non-zero on any failure:
//  1. every kernel variant compiles in Tint, f32 and f16 (check_kernels);
//  2. the `chunkwise check` cases pass through the wasm build against the float64 reference,
//     on the adapter's own schedule and on the GPU kernels (check_cases);
//  3. the golden cases (`../shared/golden`, or CHUNKWISE_GOLDEN) reproduce the upstream reference
//     code's outputs through the wasm build, as `chunkwise check --golden` does natively.
// Run from the repository root after web/build.sh and `npm ci --prefix web`:
//     node web/test_node.mjs [smoke|quick|full]      (default smoke: quick takes > 15 min on lavapipe 25)
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { create, globals } from 'webgpu';

// wgpu's web backend looks for a window (or worker) before it reads navigator.gpu.
Object.assign(globalThis, globals);
globalThis.navigator = { gpu: create([]) };
globalThis.Window = class Window {};

const pkg = new URL('./dist/pkg/', import.meta.url);
const web = await import(new URL('chunkwise_web.js', pkg));
web.initSync({ module: readFileSync(new URL('chunkwise_web_bg.wasm', pkg)) });

const scope = process.argv[2] || 'smoke';
let failures = 0;
const fail = (msg) => { failures += 1; console.log(`FAIL ${msg}`); };
const secs = (t0) => ((Date.now() - t0) / 1000).toFixed(1);

const adapter = await navigator.gpu.requestAdapter();
if (!adapter) {
  console.log('FAIL no WebGPU adapter in Dawn (it needs Vulkan with Mesa >= 25 on lavapipe)');
  process.exit(1);
}
console.log(`adapter: ${adapter.info.description || adapter.info.vendor}; ` +
  `shader-f16: ${adapter.features.has('shader-f16')}`);
if (!adapter.features.has('shader-f16')) fail('the adapter has no shader-f16: the f16 checks would not run');

let t0 = Date.now();
const k = JSON.parse(await web.check_kernels());
if (k.errors.length) fail(`kernels:\n  ${k.errors.join('\n  ')}`);
else console.log(`ok kernels: ${k.modules} modules (${k.dtypes.join(', ')}), ${k.pipelines} pipelines (${secs(t0)} s)`);
if (!k.dtypes.includes('F16')) fail('kernels: no f16 modules were compiled');

for (const schedule of ['auto', 'gpu']) {
  t0 = Date.now();
  const r = JSON.parse(await web.check_cases(scope, [], schedule));
  // Skips allowed: tensor-core tiles (no cooperative matrices on the web).
  const badSkips = r.skipped.filter((s) => !s.includes('COOPERATIVE_MATRIX'));
  for (const f of r.failed) fail(`${r.schedule}: ${f}`);
  for (const s of badSkips) fail(`${r.schedule} (skipped): ${s}`);
  console.log(`${r.failed.length || badSkips.length ? 'FAIL' : 'ok'} check ${scope}, ${r.schedule} ` +
    `schedule: ${r.ran} passed, ${r.failed.length} failed, ${r.skipped.length} skipped (${secs(t0)} s)`);
}
// Golden cases: every *.json under the folder that names a `layer` or `kind`.
const root = dirname(dirname(fileURLToPath(import.meta.url)));
const goldenDir = process.env.CHUNKWISE_GOLDEN || join(root, '..', 'shared', 'golden');
const cases = [];
const walk = (d) => {
  for (const e of readdirSync(d, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
    const p = join(d, e.name);
    if (e.isDirectory()) walk(p);
    else if (e.name.endsWith('.json')) {
      const j = JSON.parse(readFileSync(p, 'utf8'));
      if (typeof j.layer === 'string' || typeof j.kind === 'string') cases.push([p, j]);
    }
  }
};
if (existsSync(goldenDir)) {
  walk(goldenDir);
  for (const schedule of ['auto', 'gpu']) {
    t0 = Date.now();
    let passed = 0;
    for (const [path, json] of cases) {
      const name = relative(goldenDir, path);
      const weights = join(dirname(path), json.file || path.replace(/\.json$/, '.safetensors').split('/').pop());
      try {
        const r = JSON.parse(await web.run_golden(name, readFileSync(path, 'utf8'),
          readFileSync(weights), schedule));
        if (r.ok) passed += 1;
        else fail(`golden ${name} (${schedule}): ` + r.checks.filter((c) => !c.ok)
          .map((c) => `${c.name} max_abs ${c.max_abs.toExponential(3)} > ${c.tol}`).join('; '));
      } catch (e) {
        fail(`golden ${name} (${schedule}): ${e.message || e}`);
      }
    }
    console.log(`${passed === cases.length ? 'ok' : 'FAIL'} golden, ${schedule} schedule: ` +
      `${passed} of ${cases.length} cases match the reference (${secs(t0)} s)`);
  }
  if (cases.length === 0) fail(`no golden cases under ${goldenDir}`);
} else {
  console.log(`no golden folder at ${goldenDir} (set CHUNKWISE_GOLDEN): golden cases not run`);
}
console.log(failures ? `${failures} failure(s)` : 'all Node + Dawn checks passed');
process.exit(failures ? 1 : 0);
