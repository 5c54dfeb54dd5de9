//! What each attempt of a crowd sends, decided before the first is sent: the [`Mix`] the
//! operator asked for, the [`CrowdPlan`] that fixes every [`Attempt`] as a pure function of
//! its index, and the JSON body of an order. Choices come from a deterministic hash, so the
//! same arguments always plan the same crowd.

/// The shape of the crowd.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    pub users: u64,
    /// How many skus there are to choose from.
    pub skus: usize,
    pub replay_fraction: f64,
    pub multi_fraction: f64,
}

/// One planned attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The user number (`load-<user>`).
    pub user: u64,
    /// The attempt whose key and body this one sends: itself when fresh, an earlier attempt of
    /// the same user when a replay.
    pub key_of: u64,
    /// Indexes into the sku list, distinct (from `key_of`).
    pub skus: Vec<usize>,
}

/// Every attempt of a run, decided before the first is sent.
#[derive(Clone, Debug)]
pub struct CrowdPlan {
    mix: Mix,
    /// `key_of` per attempt (a replay of a replay resolves to the fresh attempt behind it).
    key_of: Vec<u64>,
}

const SALT_REPLAY: u64 = 1;
const SALT_MULTI: u64 = 2;
const SALT_SKU: u64 = 3;

/// SplitMix64: a well-mixed 64-bit hash; enough for reproducible choices (not for secrets).
fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn hash(i: u64, salt: u64) -> u64 {
    mix64(mix64(i) ^ salt)
}

/// A number in [0, 1) for attempt `i` and purpose `salt`.
fn unit(i: u64, salt: u64) -> f64 {
    (hash(i, salt) >> 11) as f64 / (1u64 << 53) as f64
}

impl CrowdPlan {
    pub fn new(requests: u64, mix: Mix) -> CrowdPlan {
        let users = mix.users.max(1);
        let mut key_of = Vec::with_capacity(requests as usize);
        for i in 0..requests {
            let replay = i >= users && unit(i, SALT_REPLAY) < mix.replay_fraction;
            let k = if replay {
                key_of[(i - users) as usize]
            } else {
                i
            };
            key_of.push(k);
        }
        CrowdPlan { mix, key_of }
    }

    pub fn len(&self) -> u64 {
        self.key_of.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.key_of.is_empty()
    }

    /// Attempt `i` (< [`CrowdPlan::len`]).
    pub fn attempt(&self, i: u64) -> Attempt {
        let users = self.mix.users.max(1);
        let j = self.key_of[i as usize];
        let n = self.mix.skus.max(1) as u64;
        let h = hash(j, SALT_SKU);
        let first = h % n;
        let mut skus = vec![first as usize];
        if n >= 2 && unit(j, SALT_MULTI) < self.mix.multi_fraction {
            skus.push(((first + 1 + (h >> 32) % (n - 1)) % n) as usize);
        }
        Attempt {
            user: i % users,
            key_of: j,
            skus,
        }
    }
}

/// The purchase body for these skus.
pub fn order_body(skus: &[String], pick: &[usize], qty: u32) -> String {
    let items: Vec<_> = pick
        .iter()
        .map(|&i| serde_json::json!({ "sku": skus[i], "qty": qty }))
        .collect();
    serde_json::json!({ "items": items }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_cycle_users_and_replay_exactly() {
        let mix = Mix {
            users: 10,
            skus: 3,
            replay_fraction: 0.5,
            multi_fraction: 0.5,
        };
        let p = CrowdPlan::new(1000, mix.clone());
        let mut replays = 0;
        let mut multi = 0;
        for i in 0..1000 {
            let a = p.attempt(i);
            assert_eq!(a.user, i % 10);
            assert!(a.key_of <= i);
            assert_eq!(
                a.key_of % 10,
                a.user,
                "a replay resends the same user's key"
            );
            assert_eq!(
                p.attempt(a.key_of),
                Attempt {
                    user: a.user,
                    key_of: a.key_of,
                    skus: a.skus.clone()
                },
                "and the same body"
            );
            if a.key_of != i {
                replays += 1;
            }
            if a.skus.len() == 2 {
                assert_ne!(a.skus[0], a.skus[1]);
                multi += 1;
            }
            assert!(a.skus.iter().all(|&s| s < 3));
        }
        assert!(
            (450..=545).contains(&replays),
            "about half of the 990 eligible: {replays}"
        );
        assert!((400..=600).contains(&multi), "{multi}");
        for i in 0..10 {
            assert_eq!(p.attempt(i).key_of, i, "a user's first attempt is fresh");
        }
        let fresh = CrowdPlan::new(
            100,
            Mix {
                replay_fraction: 0.0,
                multi_fraction: 0.0,
                ..mix
            },
        );
        assert!((0..100).all(|i| fresh.attempt(i).key_of == i && fresh.attempt(i).skus.len() == 1));
        let one_sku = CrowdPlan::new(
            50,
            Mix {
                users: 5,
                skus: 1,
                replay_fraction: 1.0,
                multi_fraction: 1.0,
            },
        );
        assert!(
            (0..50).all(|i| one_sku.attempt(i).skus == [0] && one_sku.attempt(i).key_of == i % 5)
        );
    }

    #[test]
    fn golden_order_body() {
        let skus = vec!["A".to_string(), "B".to_string()];
        assert_eq!(
            order_body(&skus, &[1, 0], 2),
            r#"{"items":[{"qty":2,"sku":"B"},{"qty":2,"sku":"A"}]}"#
        );
    }
}
