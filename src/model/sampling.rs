//! Choosing the next token from logits, on the CPU: for the vocabularies of these models the
//! download of one row is cheaper than the extra dispatches a GPU sampler would need.

/// How to sample. `temperature == 0` or `top_k == 1` is greedy and deterministic.
#[derive(Clone, Debug)]
pub struct Sampler {
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    state: u64,
}

impl Sampler {
    pub fn new(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> Sampler {
        Sampler {
            temperature,
            top_k,
            top_p,
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
        }
    }

    pub fn greedy() -> Sampler {
        Sampler::new(0.0, 1, 1.0, 0)
    }

    // splitmix64: a reproducible stream from the seed; statistical quality is ample for sampling.
    fn next_f64(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The next token for one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let argmax = || {
            logits
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                )
                .0 as u32
        };
        if self.temperature <= 0.0 || self.top_k == 1 {
            return argmax();
        }
        // An infinite logit takes all the probability mass.
        if let Some(i) = logits.iter().position(|&v| v == f32::INFINITY) {
            return i as u32;
        }
        let mut idx: Vec<usize> = (0..logits.len())
            .filter(|&i| logits[i].is_finite())
            .collect();
        if idx.is_empty() {
            return argmax();
        }
        idx.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        if self.top_k > 0 {
            idx.truncate(self.top_k);
        }
        let m = logits[idx[0]] as f64;
        let mut p: Vec<f64> = idx
            .iter()
            .map(|&i| ((logits[i] as f64 - m) / self.temperature as f64).exp())
            .collect();
        let z: f64 = p.iter().sum();
        p.iter_mut().for_each(|x| *x /= z);
        if self.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = p.iter().position(|&x| {
                acc += x;
                acc >= self.top_p as f64
            });
            let keep = keep.map_or(p.len(), |k| k + 1);
            p.truncate(keep);
            idx.truncate(keep);
            let z: f64 = p.iter().sum();
            p.iter_mut().for_each(|x| *x /= z);
        }
        let mut r = self.next_f64();
        for (i, &pi) in p.iter().enumerate() {
            if r < pi {
                return idx[i] as u32;
            }
            r -= pi;
        }
        idx[idx.len() - 1] as u32
    }
}

#[cfg(test)]
mod tests {
    use super::Sampler;

    #[test]
    fn greedy_takes_the_argmax_and_sampling_respects_top_k_and_seed() {
        let logits = [0.1f32, 3.0, 2.9, -1.0, f32::NEG_INFINITY];
        assert_eq!(Sampler::greedy().sample(&logits), 1);
        let draw = |seed| {
            let mut s = Sampler::new(1.0, 2, 1.0, seed);
            (0..200).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7), "same seed, same tokens");
        assert!(
            a.iter().all(|&t| t == 1 || t == 2),
            "top-k 2 keeps tokens 1 and 2 only"
        );
        assert!(a.contains(&1) && a.contains(&2));
        let mut nucleus = Sampler::new(1.0, 0, 0.3, 1);
        assert!(
            (0..50).all(|_| nucleus.sample(&logits) == 1),
            "top-p 0.3 keeps the top token only"
        );
    }
}
