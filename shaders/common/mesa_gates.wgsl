// A Mesa kernel's log decays g, input gates β and regularisers λ, all f32, in one storage buffer
// that the including file declares as `gates`: [g (n) | β (n) | λ (H·D)], n = gate_count()
// (B·T·H for the chunkwise kernels, B·H at decode). One binding instead of three keeps every Mesa
// kernel within WebGPU's default of 8 storage buffers per stage (ops::mesa::pack_gates fills it).

fn gate_g(i: u32) -> f32 {
    return gates[i];
}

fn gate_beta(i: u32) -> f32 {
    return gates[gate_count() + i];
}

fn lambda_at(i: u32) -> f32 {
    return gates[2u * gate_count() + i];
}

// λ[4i .. 4i + 4): λ starts at any word, so four scalar loads.
fn lambda4_at(i: u32) -> vec4<f32> {
    let o = 2u * gate_count() + 4u * i;
    return vec4<f32>(gates[o], gates[o + 1u], gates[o + 2u], gates[o + 3u]);
}
