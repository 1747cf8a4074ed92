#!/usr/bin/env python3
"""The page in headless Chromium (WebGPU on SwiftShader) against the native CLI.

Every kernel variant must compile in Chromium's WGSL compiler (`?kernels=1`). For each prompt,
the page is opened with `top_k=1&autorun=1` and its `CHUNKWISE_RESULT` line must
hold the same continuation as `chunkwise generate --top-k 1` prints for that prompt. Besides one
fixed prompt, the prompts are made up at random for each run (the seed is printed; `--seed N`
repeats a run), so they are not in the repository. A page pointed at a missing model, and one in a
browser that grants no WebGPU adapter, must log `CHUNKWISE_ERROR` saying so, not hang.

Run from the repository root after `web/build.sh` and `cargo build --release`:
    python3 web/test_chromium.py
"""
import argparse
import functools
import http.server
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIST = os.path.join(ROOT, "web", "dist")
MODEL = "models/rat-tiny-pystdlib"
LINE = re.compile(r'CHUNKWISE_(RESULT|ERROR) (.*)", source: ')
WORDS = ("import def class return self value path list yield with open for while if else try "
         "except lambda print format string number parse file read write data result error "
         "name args kwargs module object").split()


def serve():
    """Serves web/dist on a free port of 127.0.0.1; returns the server (in a daemon thread)."""
    class Quiet(http.server.SimpleHTTPRequestHandler):
        extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                          ".wasm": "application/wasm", ".js": "text/javascript"}

        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=DIST)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def page(url, timeout, webgpu=True):
    """Opens `url` in headless Chromium; returns ('RESULT', dict) or ('ERROR', message).
    Without `webgpu`, Chromium runs headless with no WebGPU adapter."""
    with tempfile.TemporaryDirectory() as profile:
        cmd = [os.environ.get("CHROMIUM", "chromium"), "--headless=new", "--no-sandbox",
               *(["--enable-unsafe-webgpu"] if webgpu else []), "--enable-logging=stderr", "--v=0",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--disable-quic", f"--user-data-dir={profile}", url]
        try:
            p = subprocess.run(cmd, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            tail = (e.stderr or b"").decode("utf-8", "replace")[-3000:]
            raise SystemExit(f"FAIL: the page gave no answer in {timeout} s: {url}\n{tail}")
    err = p.stderr.decode("utf-8", "replace")
    found = [m for m in (LINE.search(l) for l in err.splitlines()) if m]
    if len(found) != 1:
        raise SystemExit(f"FAIL: expected one CHUNKWISE_ line, found {len(found)}: {url}\n"
                         f"{err[-3000:]}")
    kind, body = found[0].group(1), found[0].group(2)
    return (kind, json.loads(body)) if kind == "RESULT" else (kind, body)


def native(exe, prompt, max_tokens):
    out = subprocess.run([exe, "generate", "--model", os.path.join(ROOT, MODEL), "--prompt",
                          prompt, "--max-tokens", str(max_tokens), "--top-k", "1"],
                         capture_output=True, check=True, timeout=600)
    return out.stdout.decode("utf-8", "replace"), out.stderr.decode("utf-8", "replace").strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--prompts", type=int, default=2, help="random prompts besides the fixed one")
    ap.add_argument("--max-tokens", type=int, default=40)
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--exe", default=os.path.join(ROOT, "target", "release", "chunkwise"))
    args = ap.parse_args()
    if not os.path.exists(os.path.join(DIST, "pkg", "chunkwise_web.js")):
        raise SystemExit("FAIL: web/dist is not built: run web/build.sh first")
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    rng = random.Random(seed)
    prompts = ["def main():\n    "]
    for _ in range(args.prompts):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
        prompts.append(f"{words}({rng.randint(0, 999)}")
    print(f"prompt seed {seed}")
    server = serve()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    failed = 0
    for prompt in prompts:
        want, speed = native(args.exe, prompt, args.max_tokens)
        query = urllib.parse.urlencode({"prompt": prompt, "max_tokens": args.max_tokens,
                                        "top_k": 1, "autorun": 1, "close": 1})
        kind, got = page(base + "?" + query, args.timeout)
        if kind != "RESULT":
            print(f"FAIL {prompt!r}: the page reported an error: {got}")
            failed += 1
            continue
        same = got["text"] == want
        failed += not same
        print(f"{'ok' if same else 'FAIL'} {prompt!r}: {got['tokens']} tokens; browser "
              f"({got['adapter']}) prefill {got['prefill_tokens_per_s']:.1f} tok/s, decode "
              f"{got['decode_tokens_per_s']:.1f} tok/s; native: {speed.splitlines()[-1]}")
        if not same:
            print(f"  native:  {want!r}\n  browser: {got['text']!r}")
    # Every kernel variant through Chromium's own WGSL compiler (Tint), not naga.
    kind, got = page(base + "?kernels=1&close=1", args.timeout)
    if kind == "RESULT" and not got["errors"] and got["pipelines"] > 100:
        print(f"ok kernels: {got['modules']} modules ({', '.join(got['dtypes'])}), "
              f"{got['pipelines']} pipelines compiled by {got['adapter']}")
    else:
        shown = "\n  ".join(got["errors"][:20]) if kind == "RESULT" else got
        print(f"FAIL kernels: {shown}")
        failed += 1
    # Bad input: a model folder that is not there is reported in the page, not a hang.
    query = urllib.parse.urlencode({"model": "models/not-there", "autorun": 1, "close": 1})
    kind, got = page(base + "?" + query, args.timeout)
    if kind == "ERROR" and "models/not-there/config.json" in got:
        print(f"ok missing model: {got}")
    else:
        print(f"FAIL missing model: expected CHUNKWISE_ERROR naming the file, got {kind} {got}")
        failed += 1
    # Bad input: a browser that grants no adapter (headless Chromium without
    # --enable-unsafe-webgpu) is reported in the page, not a hang.
    kind, got = page(base + "?autorun=1&close=1", args.timeout, webgpu=False)
    if kind == "ERROR" and "adapter" in got.lower():
        print(f"ok no adapter: {got}")
    else:
        print(f"FAIL no adapter: expected CHUNKWISE_ERROR about the adapter, got {kind} {got}")
        failed += 1
    server.shutdown()
    if failed:
        raise SystemExit(f"FAIL: {failed} check(s) failed (prompt seed {seed})")
    print("all browser checks passed")


if __name__ == "__main__":
    sys.exit(main())
