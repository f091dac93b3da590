//! The soak's one source of randomness: SplitMix64, seeded by `--seed`, so a seed replays the
//! same fault schedule and the same load.

/// A small deterministic PRNG (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`; `stream` separates independent sequences of one seed.
    pub fn new(seed: u64, stream: u64) -> Rng {
        Rng(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// True `num` times in `den`.
    pub fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_its_sequence_and_streams_differ() {
        let take = |mut r: Rng| (0..8).map(|_| r.below(1000)).collect::<Vec<_>>();
        assert_eq!(take(Rng::new(7, 1)), take(Rng::new(7, 1)));
        assert_ne!(take(Rng::new(7, 1)), take(Rng::new(7, 2)));
        assert_ne!(take(Rng::new(7, 1)), take(Rng::new(8, 1)));
        assert!(take(Rng::new(3, 0)).iter().all(|n| *n < 1000));
    }
}
