// RAT's inter-chunk attention (spec/rat.md §2.6), flash-style. Token t in chunk c = t / L attends,
// in one softmax, to the final states of chunks 0 … c−1 (key: scanned key at token jL+L−1, rotated
// at chunk position j; value: scanned value there) and to its own running state (score q·k̃_t,
// value ṽ_t). The own state seeds the online softmax; chunk keys stream in tiles of BK chunks
// (common/flash.wgsl); a workgroup takes 64·QL tokens, invocation `lid` tokens t0 + lid + 64·qi.
// No T×C score matrix is formed.
// qr: queries rotated at chunk positions, [B, T, G·dh] (head h uses group h mod G);
// kr: scanned keys rotated at chunk positions, [B, T, D]; sv: scanned values, [B, T, D];
// kc, vc: their chunk finals gathered per head (ops::rat::chunk_gather), [B, H, chunks, dh].
#include "common/flash_tiles.wgsl"
#include "common/rat_attention_body.wgsl"

@compute @workgroup_size(64)
fn rat_attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    rat_attention_main(wid, lid);
}
