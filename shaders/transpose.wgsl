// Batched 2-D transpose: y[b, c, r] = x[b, r, c], output rows padded with zeros to `ld` columns. 16×16 tiles through workgroup memory so that both
// the reads and the writes of neighbouring invocations touch neighbouring addresses.

struct Params {
    rows: u32,
    cols: u32,
    ld: u32, // row length of y, >= rows
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<ST>;
@group(0) @binding(2) var<storage, read_write> y: array<ST>;

var<workgroup> tile: array<f32, 272>; // 16 × 17: the pad column keeps column reads off one bank

@compute @workgroup_size(16, 16)
fn transpose(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let base = wid.z * p.rows * p.cols;
    let ybase = wid.z * p.cols * p.ld;
    let r = wid.y * 16u + lid.y;
    let c = wid.x * 16u + lid.x;
    if (r < p.rows && c < p.cols) {
        tile[lid.y * 17u + lid.x] = f32(x[base + r * p.cols + c]);
    }
    workgroupBarrier();
    let tr = wid.x * 16u + lid.y; // row of y = column of x
    let tc = wid.y * 16u + lid.x;
    if (tr < p.cols && tc < p.ld) {
        y[ybase + tr * p.ld + tc] = ST(select(0.0, tile[lid.x * 17u + lid.y], tc < p.rows));
    }
}
