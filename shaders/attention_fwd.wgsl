// Flash-style causal softmax attention, optionally with a sliding window, never holding a T×T matrix.
// q, o are [B, T, H, dh] (the [B, T, D] projection layout); k, v are [B, H, T, dh], each head's
// keys contiguous (ops::transpose::split_heads).
// A workgroup takes BQ = 64·QL consecutive queries of one (batch, head); invocation `lid` owns
// queries t0 + lid + 64·qi for its QL slots. K and V stream in tiles of BK keys shared by the
// workgroup's queries (common/flash.wgsl). With a window W, query t sees keys t−W … t; key tiles
// wholly outside every query's window are skipped, so the cost is O(T·W). Without one
// (W = 0xffffffff) it is plain causal attention.
#include "common/flash_tiles.wgsl"
#include "common/attention_fwd_body.wgsl"

@compute @workgroup_size(64)
fn attention_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    attention_fwd_main(wid, lid);
}
