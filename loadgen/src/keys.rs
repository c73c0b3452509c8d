//! Key choice: uniform, or Zipf over key ranks (rank 1 is key 0, the hottest).
//!
//! Zipf uses rejection-inversion (Hörmann and Derflinger, "Rejection-inversion to generate
//! variates from monotone discrete distributions", 1996), as Apache Commons RNG does: O(1) memory
//! and time per draw for any key count, so `--keys` can be large without a CDF table.

use crate::rng::Rng;

/// How keys are drawn from `0..count`.
#[derive(Debug, Clone)]
pub enum KeyDistribution {
    Uniform { count: u64 },
    Zipf(Zipf),
}

impl KeyDistribution {
    pub fn uniform(count: u64) -> KeyDistribution {
        assert!(count > 0, "a key space needs at least one key");
        KeyDistribution::Uniform { count }
    }

    /// # Panics
    /// `count` is 0 or `exponent` is not a positive finite number (the CLI checks both first).
    pub fn zipf(count: u64, exponent: f64) -> KeyDistribution {
        KeyDistribution::Zipf(Zipf::new(count, exponent))
    }

    /// A key index in `0..count`.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        let key = match self {
            KeyDistribution::Uniform { count } => rng.below(*count),
            KeyDistribution::Zipf(zipf) => zipf.sample_rank(rng) - 1,
        };
        debug_assert!(key < self.count());
        key
    }

    pub fn count(&self) -> u64 {
        match self {
            KeyDistribution::Uniform { count } => *count,
            KeyDistribution::Zipf(zipf) => zipf.count,
        }
    }

    /// For the summary: `uniform` or `zipf(s=0.99)`.
    pub fn describe(&self) -> String {
        match self {
            KeyDistribution::Uniform { .. } => "uniform".to_string(),
            KeyDistribution::Zipf(zipf) => format!("zipf(s={})", zipf.exponent),
        }
    }
}

/// P(rank k) ∝ 1 / k^exponent for k in 1..=count.
#[derive(Debug, Clone)]
pub struct Zipf {
    count: u64,
    exponent: f64,
    h_integral_x1: f64,
    h_integral_count: f64,
    s: f64,
}

impl Zipf {
    pub fn new(count: u64, exponent: f64) -> Zipf {
        assert!(count > 0, "a key space needs at least one key");
        assert!(
            exponent.is_finite() && exponent > 0.0,
            "zipf exponent must be > 0"
        );
        let mut zipf = Zipf {
            count,
            exponent,
            h_integral_x1: 0.0,
            h_integral_count: 0.0,
            s: 0.0,
        };
        zipf.h_integral_x1 = zipf.h_integral(1.5) - 1.0;
        zipf.h_integral_count = zipf.h_integral(count as f64 + 0.5);
        zipf.s = 2.0 - zipf.h_integral_inverse(zipf.h_integral(2.5) - zipf.h(2.0));
        zipf
    }

    /// A rank in 1..=count. The loop accepts with probability above 0.5 per try for any
    /// exponent, so it ends quickly; the bound only guards against a numeric bug.
    pub fn sample_rank(&self, rng: &mut Rng) -> u64 {
        const TRIES_MAX: u32 = 1_000;
        for _ in 0..TRIES_MAX {
            let u = self.h_integral_count
                + rng.next_f64() * (self.h_integral_x1 - self.h_integral_count);
            let x = self.h_integral_inverse(u);
            let k = ((x + 0.5) as u64).clamp(1, self.count);
            let kf = k as f64;
            if kf - x <= self.s || u >= self.h_integral(kf + 0.5) - self.h(kf) {
                return k;
            }
        }
        unreachable!("zipf rejection sampling did not accept in {TRIES_MAX} tries")
    }

    /// H(x) = ∫ h = (x^(1-s) - 1) / (1-s), written to stay accurate as s → 1.
    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.exponent) * log_x) * log_x
    }

    fn h(&self, x: f64) -> f64 {
        (-self.exponent * x.ln()).exp()
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.exponent)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// ln(1+x)/x, with its series near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// (e^x - 1)/x, with its series near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frequencies(dist: &KeyDistribution, draws: u32, seed: u64) -> Vec<f64> {
        let mut counts = vec![0u32; dist.count() as usize];
        let mut rng = Rng::new(seed, 0);
        for _ in 0..draws {
            counts[dist.sample(&mut rng) as usize] += 1;
        }
        counts
            .iter()
            .map(|&c| f64::from(c) / f64::from(draws))
            .collect()
    }

    fn zipf_expected(count: u64, exponent: f64) -> Vec<f64> {
        let weights: Vec<f64> = (1..=count).map(|k| (k as f64).powf(-exponent)).collect();
        let total: f64 = weights.iter().sum();
        weights.iter().map(|w| w / total).collect()
    }

    #[test]
    fn zipf_matches_the_exact_distribution() {
        // For several exponents, including s = 1 and s near 1, each rank's observed share of
        // 400k draws is within 0.005 of 1/k^s normalised.
        for exponent in [0.5, 0.99, 1.0, 1.2, 2.0] {
            let dist = KeyDistribution::zipf(20, exponent);
            let observed = frequencies(&dist, 400_000, 11);
            let expected = zipf_expected(20, exponent);
            for (rank, (o, e)) in observed.iter().zip(&expected).enumerate() {
                assert!(
                    (o - e).abs() < 0.005,
                    "s={exponent} rank {rank}: {o} vs {e}"
                );
            }
        }
    }

    #[test]
    fn zipf_on_a_large_key_space_is_skewed_and_in_range() {
        // With a million keys and s = 0.99 the hottest key gets its exact share (about 6.9%)
        // and no draw leaves the key space.
        let count = 1_000_000;
        let dist = KeyDistribution::zipf(count, 0.99);
        let mut rng = Rng::new(5, 0);
        let mut hottest = 0u32;
        let draws = 200_000;
        for _ in 0..draws {
            let key = dist.sample(&mut rng);
            assert!(key < count);
            hottest += u32::from(key == 0);
        }
        let harmonic: f64 = (1..=count).map(|k| (k as f64).powf(-0.99)).sum();
        let share = f64::from(hottest) / f64::from(draws);
        assert!(
            (share - 1.0 / harmonic).abs() < 0.003,
            "{share} vs {}",
            1.0 / harmonic
        );
    }

    #[test]
    fn zipf_with_one_key_always_draws_it() {
        // A one-key space is degenerate but valid.
        let dist = KeyDistribution::zipf(1, 0.99);
        let mut rng = Rng::new(1, 0);
        assert!((0..1000).all(|_| dist.sample(&mut rng) == 0));
    }

    #[test]
    fn uniform_is_flat() {
        // Every one of 10 keys gets about a tenth of the draws.
        let observed = frequencies(&KeyDistribution::uniform(10), 200_000, 3);
        assert!(
            observed.iter().all(|share| (share - 0.1).abs() < 0.005),
            "{observed:?}"
        );
    }
}
