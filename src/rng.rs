//! One small deterministic random generator (xorshift64*): token sampling
//! with a seed, random weights of test models, HNSW levels, and the data of
//! tests and benchmarks. Reproducible from its seed; never for secrets.

/// xorshift64* (Vigna): 64 bits of state, fast, good enough for sampling.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0, which xorshift cannot leave, becomes 1).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Advances a bare `u64` state as [`Rng::next_u64`] does, for code
    /// (tests) that keeps its seed as a number.
    pub fn step(state: &mut u64) -> u64 {
        let mut r = Rng::new(*state);
        let v = r.next_u64();
        *state = r.0;
        v
    }

    /// Uniform in `[0, 1)`, 24 bits.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `(0, 1]`, 53 bits (never 0, so its logarithm is finite).
    pub fn open_unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A Zipf-like rank in `0..n` (density ~ 1/rank).
    pub fn zipf(&mut self, n: u64) -> u64 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64).powf(u) - 1.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_in_range() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut state = 7;
        assert_eq!(Rng::step(&mut state), Rng::new(7).next_u64());
        for _ in 0..1000 {
            let u = a.uniform();
            assert!((0.0..1.0).contains(&u));
            let o = a.open_unit();
            assert!(o > 0.0 && o <= 1.0);
            assert!(a.below(10) < 10);
            assert!(a.zipf(100) < 100);
        }
        assert_ne!(Rng::new(0).next_u64(), 0);
        let mean = (0..10_000).map(|_| a.uniform() as f64).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
