//! An ordered parallel pipeline: the calling thread produces jobs (reading input) and consumes results
//! in order (writing output); rayon workers run the jobs in between. At most `window` jobs are in
//! flight, which is what bounds memory.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use crate::error::DeltaError;

/// Runs `work` on every job `produce` yields, and passes the results to `consume` in job order.
///
/// Stops at the first error (from any of the three) and returns it; jobs still queued are skipped.
pub(crate) fn run_ordered<J, R>(
    pool: Option<&rayon::ThreadPool>,
    window: usize,
    mut produce: impl FnMut() -> Result<Option<J>, DeltaError>,
    work: impl Fn(J) -> Result<R, DeltaError> + Sync,
    mut consume: impl FnMut(R) -> Result<(), DeltaError>,
) -> Result<(), DeltaError>
where
    J: Send,
    R: Send,
{
    let window = window.max(1) as u64;
    let cancelled = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<(u64, Result<R, DeltaError>)>();
    match pool {
        Some(pool) => {
            pool.in_place_scope(|scope| drive(scope, window, &mut produce, &work, &cancelled, &tx, &rx, &mut consume))
        }
        None => {
            rayon::in_place_scope(|scope| drive(scope, window, &mut produce, &work, &cancelled, &tx, &rx, &mut consume))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn drive<'scope, J, R, W>(
    scope: &rayon::Scope<'scope>,
    window: u64,
    produce: &mut impl FnMut() -> Result<Option<J>, DeltaError>,
    work: &'scope W,
    cancelled: &'scope AtomicBool,
    tx: &mpsc::Sender<(u64, Result<R, DeltaError>)>,
    rx: &mpsc::Receiver<(u64, Result<R, DeltaError>)>,
    consume: &mut impl FnMut(R) -> Result<(), DeltaError>,
) -> Result<(), DeltaError>
where
    J: Send + 'scope,
    R: Send + 'scope,
    W: Fn(J) -> Result<R, DeltaError> + Sync,
{
    let mut spawned = 0u64;
    let mut consumed = 0u64;
    let mut exhausted = false;
    let mut ready: BTreeMap<u64, Result<R, DeltaError>> = BTreeMap::new();
    let result = (|| loop {
        while !exhausted && spawned - consumed < window {
            match produce()? {
                Some(job) => {
                    let tx = tx.clone();
                    let seq = spawned;
                    scope.spawn(move |_| {
                        if !cancelled.load(Ordering::Relaxed) {
                            // The receiver is gone only after an error; the result is moot then.
                            let outcome =
                                std::panic::catch_unwind(AssertUnwindSafe(|| work(job))).unwrap_or_else(|_| {
                                    Err(DeltaError::Internal { reason: "a worker panicked".to_owned() })
                                });
                            let _ = tx.send((seq, outcome));
                        }
                    });
                    spawned += 1;
                }
                None => exhausted = true,
            }
        }
        if consumed == spawned {
            return Ok(());
        }
        let (seq, result) =
            rx.recv().map_err(|_| DeltaError::Internal { reason: "a worker stopped without an answer".to_owned() })?;
        ready.insert(seq, result);
        while let Some(result) = ready.remove(&consumed) {
            consume(result?)?;
            consumed += 1;
        }
    })();
    if result.is_err() {
        cancelled.store(true, Ordering::Relaxed);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_arrive_in_order_and_errors_stop_the_run() {
        let mut next = 0u32;
        let mut seen = Vec::new();
        run_ordered(
            None,
            3,
            || {
                next += 1;
                Ok((next <= 50).then_some(next))
            },
            |j| {
                std::thread::sleep(std::time::Duration::from_micros(u64::from(50 - j) * 20));
                Ok(j * 2)
            },
            |r| {
                seen.push(r);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, (1..=50).map(|j| j * 2).collect::<Vec<_>>());

        let mut next = 0u32;
        let mut seen = Vec::new();
        let err = run_ordered(
            None,
            4,
            || {
                next += 1;
                Ok(Some(next))
            },
            |j| if j == 7 { Err(DeltaError::corrupt("job 7", "boom")) } else { Ok(j) },
            |r| {
                seen.push(r);
                Ok(())
            },
        )
        .unwrap_err();
        assert!(matches!(err, DeltaError::Corrupt { part, .. } if part == "job 7"));
        assert_eq!(seen, [1, 2, 3, 4, 5, 6]);
    }
}
