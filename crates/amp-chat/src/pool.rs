//! Bounded concurrency on scoped threads: a counting semaphore and an order-preserving map.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};

/// A counting semaphore (Mutex + Condvar).
#[derive(Debug)]
pub struct Semaphore {
    permits: Mutex<usize>,
    cv: Condvar,
}

/// A held permit; released on drop.
#[derive(Debug)]
pub struct Permit<'a>(&'a Semaphore);

impl Semaphore {
    /// A semaphore with `n` permits (at least 1).
    pub fn new(n: usize) -> Self {
        Semaphore { permits: Mutex::new(n.max(1)), cv: Condvar::new() }
    }
    /// Blocks until a permit is free.
    pub fn acquire(&self) -> Permit<'_> {
        let mut p = self.permits.lock().unwrap_or_else(|e| e.into_inner());
        while *p == 0 {
            p = self.cv.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        *p -= 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.permits.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.cv.notify_one();
    }
}

/// Applies `f` to every item on at most `concurrency` scoped threads and returns the results in
/// input order. `on_done(i, &result)` runs on the worker as soon as item `i` finishes (use it to
/// persist results as they come, or to tick a progress bar).
pub fn map_bounded<T, R, F, D>(items: &[T], concurrency: usize, f: F, on_done: D) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(usize, &T) -> R + Sync,
    D: Fn(usize, &R) + Sync,
{
    let workers = concurrency.max(1).min(items.len());
    if workers <= 1 {
        return items
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let r = f(i, t);
                on_done(i, &r);
                r
            })
            .collect();
    }
    let next = AtomicUsize::new(0);
    let slots: Vec<Mutex<Option<R>>> = (0..items.len()).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= items.len() {
                    break;
                }
                let r = f(i, &items[i]);
                on_done(i, &r);
                *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            });
        }
    });
    slots
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()).expect("every slot is filled"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn preserves_order_and_bounds_concurrency() {
        let live = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let items: Vec<usize> = (0..20).collect();
        let done = AtomicUsize::new(0);
        let out = map_bounded(
            &items,
            3,
            |i, x| {
                let l = live.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(l, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2 * (20 - i as u64) % 7));
                live.fetch_sub(1, Ordering::SeqCst);
                x * 10
            },
            |_, _| {
                done.fetch_add(1, Ordering::SeqCst);
            },
        );
        assert_eq!(out, (0..20).map(|x| x * 10).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert_eq!(done.load(Ordering::SeqCst), 20);
    }
}
