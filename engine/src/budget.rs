//! One memory budget shared by every model on a device: weights are charged when a model
//! loads, and each sequence's KV cache when it opens. A load that cannot fit is refused with
//! the numbers; a sequence that cannot fit yet waits for others to finish.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BudgetError {
    #[error("{what} needs {need} bytes, but the memory budget of {limit} bytes has {free} free ({weights} held by loaded weights, {kv} by KV caches)")]
    Exceeded { what: String, need: u64, free: u64, limit: u64, weights: u64, kv: u64 },
    #[error("gave up waiting for {need} bytes of KV cache")]
    GaveUp { need: u64 },
}

#[derive(Default)]
struct Used {
    weights: u64,
    kv: u64,
}

pub struct MemoryBudget {
    limit: u64,
    used: Mutex<Used>,
    freed: Condvar,
}

/// Bytes held against a budget until dropped.
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
    weights: bool,
}

impl Reservation {
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let mut u = self.budget.lock();
        let slot = if self.weights { &mut u.weights } else { &mut u.kv };
        *slot = slot.saturating_sub(self.bytes);
        drop(u);
        self.budget.freed.notify_all();
    }
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget { limit, used: Mutex::new(Used::default()), freed: Condvar::new() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Used> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// (weights, KV) bytes held now.
    pub fn used(&self) -> (u64, u64) {
        let u = self.lock();
        (u.weights, u.kv)
    }

    fn exceeded(&self, u: &Used, what: &str, need: u64) -> BudgetError {
        let free = self.limit.saturating_sub(u.weights + u.kv);
        BudgetError::Exceeded { what: what.to_string(), need, free, limit: self.limit, weights: u.weights, kv: u.kv }
    }

    /// Charges a model's weights now, or refuses with the numbers.
    pub fn reserve_weights(self: &Arc<Self>, what: &str, bytes: u64) -> Result<Reservation, BudgetError> {
        let mut u = self.lock();
        if u.weights + u.kv + bytes > self.limit {
            return Err(self.exceeded(&u, what, bytes));
        }
        u.weights += bytes;
        Ok(Reservation { budget: self.clone(), bytes, weights: true })
    }

    /// Charges a KV cache, waiting while other caches hold the room it needs. Refuses at once
    /// when even the loaded weights alone leave too little; `evict` is asked to free caches
    /// kept only for reuse before waiting, and `give_up` is polled while waiting.
    pub fn reserve_kv(
        self: &Arc<Self>,
        what: &str,
        bytes: u64,
        mut evict: impl FnMut(),
        give_up: impl Fn() -> bool,
    ) -> Result<Reservation, BudgetError> {
        let mut u = self.lock();
        let mut evicted = false;
        loop {
            if u.weights + bytes > self.limit {
                return Err(self.exceeded(&u, what, bytes));
            }
            if u.weights + u.kv + bytes <= self.limit {
                u.kv += bytes;
                return Ok(Reservation { budget: self.clone(), bytes, weights: false });
            }
            if !evicted {
                evicted = true;
                drop(u);
                evict();
                u = self.lock();
                continue;
            }
            if give_up() {
                return Err(BudgetError::GaveUp { need: bytes });
            }
            u = self.freed.wait_timeout(u, Duration::from_millis(50)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kv_reservation_waits_for_room_and_weights_are_refused_with_the_numbers() {
        let b = MemoryBudget::new(100);
        let w = b.reserve_weights("model a", 60).expect("fits");
        let err = b.reserve_weights("model b", 50).err().expect("over budget");
        assert_eq!(err, BudgetError::Exceeded { what: "model b".into(), need: 50, free: 40, limit: 100, weights: 60, kv: 0 });
        assert!(matches!(b.reserve_kv("kv", 41, || {}, || false), Err(BudgetError::Exceeded { .. })), "can never fit beside the weights");
        let first = b.reserve_kv("kv", 30, || {}, || false).expect("fits");
        let b2 = b.clone();
        let waiter = std::thread::spawn(move || b2.reserve_kv("kv", 30, || {}, || false).map(|r| r.bytes()));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!waiter.is_finished(), "the second cache must wait for the first");
        drop(first);
        assert_eq!(waiter.join().expect("thread"), Ok(30));
        let full = b.reserve_kv("kv", 40, || {}, || false).expect("fits");
        let mut evictions = 0;
        assert_eq!(b.reserve_kv("kv", 30, || evictions += 1, || true).err(), Some(BudgetError::GaveUp { need: 30 }));
        assert_eq!(evictions, 1, "reuse caches are evicted before giving up");
        drop((full, w));
        assert_eq!(b.used(), (0, 0));
    }
}
