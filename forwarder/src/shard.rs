//! `--shard i/n`: which replica serves which tunnel.
//!
//! A fleet file can be served by `n` replicas, each started with `--shard i/n` (`i` from 0 to
//! `n - 1`, like a StatefulSet's pod ordinal). Each replica serves only the tunnels it owns,
//! and the owner of a tunnel is chosen by rendezvous (highest-random-weight) hashing of the
//! tunnel's name:
//!
//! ```text
//!  weight(name, i) = first 8 bytes, big-endian, of SHA-256(name bytes ‖ 0x00 ‖ i as 4 bytes big-endian)
//!  owner(name, n)  = the i in 0..n with the highest weight (on a tie, the lowest such i)
//! ```
//!
//! Each name depends only on itself and `n`, so every replica decides alone, with no
//! coordination, and a platform can compute where a tunnel lives without asking anyone
//! ([`Shard::owner`]). Going from `n` to `n + 1` replicas moves only the tunnels the new
//! replica wins, about `1/(n + 1)` of them; the others stay where they were. The hash is fixed
//! here and must never change: platforms compute it in their own code.

use core::fmt;
use core::str::FromStr;

use ring::digest;

/// One replica's share of a fleet: it serves the tunnels whose [owner](Shard::owner) among
/// `count` replicas is `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This replica, from 0 to `count - 1`.
    pub index: u32,
    /// How many replicas share the fleet; at least 1.
    pub count: u32,
}

impl Shard {
    /// The whole fleet in one replica (`0/1`), which is what no `--shard` means.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// `index/count`, checked: `count` at least 1 and `index` below it.
    pub fn new(index: u32, count: u32) -> Result<Shard, ShardError> {
        let text = format!("{index}/{count}");
        if count == 0 {
            return Err(ShardError::new(&text, "the count must be at least 1"));
        }
        if index >= count {
            return Err(ShardError::new(
                &text,
                &format!(
                    "the index must be below the count (0..={})",
                    count.saturating_sub(1)
                ),
            ));
        }
        Ok(Shard { index, count })
    }

    /// Whether this replica serves the tunnel named `tunnel_name`.
    pub fn serves(&self, tunnel_name: &str) -> bool {
        Self::owner(tunnel_name, self.count) == self.index
    }

    /// Which of `count` replicas (0 to `count - 1`) serves the tunnel named `name`: the index
    /// with the highest [`weight`](Shard::weight), the lowest index on a tie. A `count` of 0
    /// is taken as 1.
    ///
    /// ```
    /// use forwarder::shard::Shard;
    /// assert_eq!(Shard::owner("acme-pg", 1), 0);
    /// let owner = Shard::owner("acme-pg", 3);
    /// assert!(owner < 3);
    /// assert!(Shard { index: owner, count: 3 }.serves("acme-pg"));
    /// ```
    pub fn owner(name: &str, count: u32) -> u32 {
        let mut best = 0;
        let mut best_weight = Self::weight(name, 0);
        for index in 1..count {
            let w = Self::weight(name, index);
            // Strictly greater: on a tie the lower index keeps it.
            if w > best_weight {
                best = index;
                best_weight = w;
            }
        }
        best
    }

    /// The rendezvous weight of replica `index` for the tunnel named `name`: the first 8
    /// bytes, read big-endian, of SHA-256 over the name's UTF-8 bytes, one 0 byte, and
    /// `index` as 4 bytes big-endian.
    pub fn weight(name: &str, index: u32) -> u64 {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(name.as_bytes());
        ctx.update(&[0]);
        ctx.update(&index.to_be_bytes());
        let hash = ctx.finish();
        let mut first = [0u8; 8];
        for (dst, src) in first.iter_mut().zip(hash.as_ref()) {
            *dst = *src;
        }
        u64::from_be_bytes(first)
    }

    /// The shard of a StatefulSet pod from its host name (`forwarder-2` is index 2): the
    /// digits after the last `-`. `None` when the name does not end in `-<digits>` or the
    /// ordinal is not below `count`.
    pub fn from_hostname_ordinal(hostname: &str, count: u32) -> Option<Shard> {
        // A fully qualified name (`forwarder-2.forwarder.ns.svc...`) counts by its first label.
        let host = hostname.split('.').next().unwrap_or(hostname);
        let (_, digits) = host.rsplit_once('-')?;
        let index = parse_digits(digits)?;
        Shard::new(index, count).ok()
    }
}

impl Default for Shard {
    fn default() -> Self {
        Shard::ALL
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = ShardError;

    /// `i/n` in decimal, e.g. `0/3`.
    fn from_str(s: &str) -> Result<Shard, ShardError> {
        let Some((index, count)) = s.split_once('/') else {
            return Err(ShardError::new(
                s,
                "expected INDEX/COUNT, such as 0/3 for the first of three replicas",
            ));
        };
        let Some(count_n) = parse_digits(count) else {
            return Err(ShardError::new(
                s,
                &format!(
                    "the count `{count}` is not a whole number from 1 to {}",
                    u32::MAX
                ),
            ));
        };
        let Some(index_n) = parse_digits(index) else {
            return Err(ShardError::new(
                s,
                &format!(
                    "the index `{index}` is not a whole number from 0 to {}",
                    u32::MAX
                ),
            ));
        };
        Shard::new(index_n, count_n).map_err(|e| ShardError::new(s, &e.reason))
    }
}

/// Decimal digits only (no sign, no spaces), as a `u32`.
fn parse_digits(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A `--shard` value that is not `i/n` with `0 <= i < n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardError {
    text: String,
    reason: String,
}

impl ShardError {
    fn new(text: &str, reason: &str) -> ShardError {
        ShardError {
            text: text.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

impl fmt::Display for ShardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--shard {}: {}", self.text, self.reason)
    }
}

impl std::error::Error for ShardError {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|k| format!("{prefix}-{k}")).collect()
    }

    /// Values computed independently (Python's hashlib), so the hash can never drift: a
    /// platform computes the same function in its own code. deploy/README.md shows the same
    /// table.
    #[test]
    fn the_hash_is_fixed() {
        let table = [
            (
                "acme-pg",
                [
                    0x222f_84a6_5176_ecc6,
                    0xd2ca_16b0_7c75_a68d,
                    0xdd37_29e5_faa7_651b,
                ],
            ),
            (
                "globex-mysql",
                [
                    0xe229_ef95_7b19_7c14,
                    0x3fc1_b53f_9d7b_46c5,
                    0x09be_7fcf_bf73_c8d5,
                ],
            ),
            (
                "initech-redshift",
                [
                    0x9ade_2423_eb53_8057,
                    0x79c9_60ed_0527_a79e,
                    0x2f33_2768_f6c1_95cc,
                ],
            ),
            (
                "umbrella-alloydb",
                [
                    0x5d03_98d6_61bf_a456,
                    0xfaf6_6f8f_d2b3_1c31,
                    0xcea2_6f59_7acc_9ac1,
                ],
            ),
        ];
        for (name, weights) in table {
            for (index, want) in (0u32..).zip(weights) {
                assert_eq!(Shard::weight(name, index), want, "{name} {index}");
            }
        }
        assert_eq!(Shard::weight("", 0), 0x8855_508a_ade1_6ec5);
        let owners: Vec<u32> = [
            "acme-pg",
            "globex-mysql",
            "initech-redshift",
            "umbrella-alloydb",
        ]
        .iter()
        .map(|n| Shard::owner(n, 3))
        .collect();
        assert_eq!(owners, [2, 0, 0, 1]);
        let tenants: Vec<u32> = (0..12)
            .map(|k| Shard::owner(&format!("tenant-{k}"), 3))
            .collect();
        assert_eq!(tenants, [0, 1, 1, 0, 2, 0, 0, 2, 1, 2, 1, 0]);
    }

    #[test]
    fn every_name_has_exactly_one_owner() {
        for count in 1..=8 {
            for name in names("tenant", 500) {
                let owners: Vec<u32> = (0..count)
                    .filter(|&index| Shard { index, count }.serves(&name))
                    .collect();
                assert_eq!(owners.len(), 1, "{name} among {count}: {owners:?}");
                assert_eq!(owners[0], Shard::owner(&name, count));
            }
        }
    }

    #[test]
    fn one_replica_serves_everything() {
        for name in ["", "a", "acme-pg", "ünïcødé", &"x".repeat(1000)] {
            assert!(Shard::ALL.serves(name));
            assert_eq!(Shard::owner(name, 1), 0);
            assert_eq!(Shard::owner(name, 0), 0, "a count of 0 is taken as 1");
        }
    }

    #[test]
    fn the_split_is_about_even() {
        let all = names("customer", 10_000);
        for count in [2u32, 3, 5, 8] {
            let mut per_shard = vec![0usize; count as usize];
            for name in &all {
                per_shard[Shard::owner(name, count) as usize] += 1;
            }
            let expected = all.len() as f64 / f64::from(count);
            // Binomial: five standard deviations either way.
            let p = 1.0 / f64::from(count);
            let slack = 5.0 * (all.len() as f64 * p * (1.0 - p)).sqrt();
            for (index, &got) in per_shard.iter().enumerate() {
                assert!(
                    (got as f64 - expected).abs() <= slack,
                    "shard {index}/{count} has {got} of {}, expected {expected:.0} ± {slack:.0}",
                    all.len()
                );
            }
        }
    }

    #[test]
    fn parses_i_of_n() {
        assert_eq!("0/1".parse(), Ok(Shard { index: 0, count: 1 }));
        assert_eq!("2/3".parse(), Ok(Shard { index: 2, count: 3 }));
        assert_eq!(
            "007/10".parse(),
            Ok(Shard {
                index: 7,
                count: 10
            })
        );
        assert_eq!(Shard { index: 2, count: 3 }.to_string(), "2/3");
        assert_eq!(Shard::default(), Shard::ALL);
        assert_eq!(Shard::new(1, 2), Ok(Shard { index: 1, count: 2 }));
    }

    #[test]
    fn parse_errors_are_sentences() {
        let err = |s: &str| s.parse::<Shard>().unwrap_err().to_string();
        assert_eq!(
            err("3/3"),
            "--shard 3/3: the index must be below the count (0..=2)"
        );
        assert_eq!(err("0/0"), "--shard 0/0: the count must be at least 1");
        assert_eq!(
            err("3"),
            "--shard 3: expected INDEX/COUNT, such as 0/3 for the first of three replicas"
        );
        assert_eq!(
            err(""),
            "--shard : expected INDEX/COUNT, such as 0/3 for the first of three replicas"
        );
        assert_eq!(
            err("a/3"),
            "--shard a/3: the index `a` is not a whole number from 0 to 4294967295"
        );
        assert_eq!(
            err("-1/3"),
            "--shard -1/3: the index `-1` is not a whole number from 0 to 4294967295"
        );
        assert_eq!(
            err("1/"),
            "--shard 1/: the count `` is not a whole number from 1 to 4294967295"
        );
        assert_eq!(
            err("1/+3"),
            "--shard 1/+3: the count `+3` is not a whole number from 1 to 4294967295"
        );
        assert_eq!(
            err("1/2/3"),
            "--shard 1/2/3: the count `2/3` is not a whole number from 1 to 4294967295"
        );
        assert_eq!(
            err(" 1/3"),
            "--shard  1/3: the index ` 1` is not a whole number from 0 to 4294967295"
        );
        assert_eq!(
            err("1/99999999999"),
            "--shard 1/99999999999: the count `99999999999` is not a whole number from 1 to 4294967295"
        );
        assert_eq!(
            Shard::new(5, 2).unwrap_err().to_string(),
            "--shard 5/2: the index must be below the count (0..=1)"
        );
    }

    #[test]
    fn shard_from_a_statefulset_host_name() {
        let s = |h: &str, n| Shard::from_hostname_ordinal(h, n);
        assert_eq!(s("forwarder-0", 3), Some(Shard { index: 0, count: 3 }));
        assert_eq!(s("forwarder-2", 3), Some(Shard { index: 2, count: 3 }));
        assert_eq!(
            s("my-fwd-12", 13),
            Some(Shard {
                index: 12,
                count: 13
            })
        );
        assert_eq!(
            s("forwarder-1.forwarder.tunnels.svc.cluster.local", 3),
            Some(Shard { index: 1, count: 3 })
        );
        assert_eq!(s("forwarder-3", 3), None, "ordinal beyond the count");
        assert_eq!(s("forwarder", 3), None);
        assert_eq!(s("forwarder-", 3), None);
        assert_eq!(s("forwarder-x1", 3), None);
        assert_eq!(s("forwarder-0", 0), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Going from `count` to `count + 1` replicas moves names only to the new replica, and
        /// about `1/(count + 1)` of them.
        #[test]
        fn adding_a_replica_moves_only_its_share(prefix in "[a-z0-9-]{0,12}", count in 1u32..12) {
            let all = names(&prefix, 2_000);
            let mut moved = 0usize;
            for name in &all {
                let before = Shard::owner(name, count);
                let after = Shard::owner(name, count + 1);
                if before != after {
                    prop_assert_eq!(after, count, "{} moved from {} to {}", name, before, after);
                    moved += 1;
                }
            }
            let p = 1.0 / f64::from(count + 1);
            let expected = all.len() as f64 * p;
            let slack = 5.0 * (all.len() as f64 * p * (1.0 - p)).sqrt();
            prop_assert!(
                (moved as f64 - expected).abs() <= slack,
                "{} of {} moved going to {} replicas, expected {:.0} ± {:.0}",
                moved, all.len(), count + 1, expected, slack
            );
        }

        /// Removing the last replica moves only the names it served.
        #[test]
        fn removing_a_replica_moves_only_its_names(name in ".{0,40}", count in 2u32..16) {
            let before = Shard::owner(&name, count);
            let after = Shard::owner(&name, count - 1);
            if before != count - 1 {
                prop_assert_eq!(before, after);
            }
        }
    }
}
