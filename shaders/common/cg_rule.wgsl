// The two rules of the Mesa CG (ops::mesa::Solver), for every CG kernel. The including file's
// uniform `p` carries `paper` (0: the reference iteration of fla and the goldens, 1: the paper's)
// and `tol2` (ε²).
//  * reference: 1e-5 added to both denominators (and to the Jacobi start of decode), a fixed
//    iteration count;
//  * paper (MesaNet, Appendix C, Algorithm 1): no guards; a row stops once
//    sqrt(δ) ≤ ε·sqrt(δ0), δ the squared residual and δ0 that of the start; the count is a cap.
// A row that has stopped keeps x, r and p unchanged while its workgroup or subgroup goes on.

fn cg_paper() -> bool {
    return p.paper != 0u;
}

// What both denominators get added.
fn cg_guard() -> f32 {
    return select(1e-5, 0.0, cg_paper());
}

fn cg_converged(delta: f32, delta0: f32) -> bool {
    return cg_paper() && delta <= p.tol2 * delta0;
}

// α for a row still iterating; 0 for one that has stopped. A vanishing p·Ap under the paper's
// rule (p = 0: nothing left to solve) stops the row rather than dividing by zero.
fn cg_alpha(delta: f32, pa: f32, going: bool) -> f32 {
    if (!going || (cg_paper() && pa <= 0.0)) {
        return 0.0;
    }
    return delta / (pa + cg_guard());
}
