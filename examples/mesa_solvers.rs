//! How far each Mesa CG rule lands from the exact solve, and in how many steps, on the golden
//! cases that store one (`*_exact_f64`): the source of the accuracy table in BENCHMARKS.md.
//!
//!     cargo run --release --example mesa_solvers -- ../shared/golden/mesa [30]
//!
//! The reference rule (fla's, fixed steps, 1e-5 guards) is run at the case's own step count;
//! the paper's at ε = 1e-6 and ε = 1e-4 with the step count (default 30) as a cap.

use chunkwise::golden::{run_case_with, RunOptions};
use chunkwise::model::Checkpoint;
use chunkwise::ops::mesa::Solver;
use chunkwise::reference::max_abs;
use chunkwise::Context;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args()
        .nth(1)
        .ok_or("usage: mesa_solvers GOLDEN_MESA_DIR")?;
    let ctx = Context::new_blocking()?;
    let mut cases: Vec<_> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    cases.sort();
    println!("| case | rule | max abs vs exact | max abs exact | steps max / mean |");
    println!("|---|---|---|---|---|");
    for case in cases {
        let ck = Checkpoint::open(&case.with_extension("safetensors"))?;
        let Some(exact_name) = ck
            .names()
            .find(|n| n.ends_with("_exact_f64"))
            .map(str::to_string)
        else {
            continue;
        };
        let (exact, _) = ck.f64(&exact_name)?;
        let scale = exact.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for solver in [
            Solver::Reference,
            Solver::Paper { tol: 1e-6 },
            Solver::Paper { tol: 1e-4 },
        ] {
            let opts = RunOptions {
                solver: Some(solver),
            };
            let run = run_case_with(&ctx, &case, opts)?;
            // The output over all positions: the exact solve's own name under the paper's rule;
            // the reference rule's decode cases write only the decoded positions, so they are
            // compared where the exact solve has the same shape.
            let Some((_, _, got)) = run
                .outputs
                .iter()
                .find(|(n, s, _)| {
                    (n.starts_with("o_") || n.starts_with("y_"))
                        && s.iter().product::<usize>() == exact.len()
                })
                .cloned()
            else {
                continue;
            };
            let rule = match solver {
                Solver::Reference => "reference".to_string(),
                Solver::Paper { tol } => format!("paper ε = {tol:e}"),
            };
            let steps = run
                .cg
                .map_or("-".into(), |(_, s)| format!("{} / {:.1}", s.max, s.mean));
            println!(
                "| {} | {rule} | {:.2e} | {scale:.3} | {steps} |",
                case.file_stem().unwrap_or_default().to_string_lossy(),
                max_abs(&got, &exact)
            );
        }
    }
    Ok(())
}
