//! Cell identity: run ids and cache file names are 64-bit FNV-1a hashes of stable texts.

/// 64-bit FNV-1a: the stable hash behind run ids and cache file names (the same on every
/// platform and Rust version, unlike `std`'s hashers).
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    /// Add bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The hash so far.
    pub fn finish(self) -> u64 {
        self.0
    }

    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> u64 {
        let mut h = Self::default();
        h.write(bytes);
        h.finish()
    }
}

/// A run id: the first 12 hex digits of the FNV-1a hash of `identity`, the TOML text of a cell's
/// configuration without what does not change its numbers (resolved paths, `checkpoints`,
/// `checkpoint_every_s`, `save_model`, `tensorboard`).
pub fn run_id(identity: &str) -> String {
    format!("{:012x}", Fnv1a::of(identity.as_bytes()) >> 16)
}
