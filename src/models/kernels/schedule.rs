//! Thread scheduling for the kernels' parallel loops: a forward pass run
//! from a pool worker with the others polling ([`on_pool`]), and guided
//! self-scheduling of a loop's items ([`guided_splits`]).

use rayon::prelude::*;

/// Runs `f` on a worker of rayon's pool, so the kernels' parallel loops
/// split work from there instead of waking the pool and sleeping on a
/// latch for each of the hundreds of operations of a decode step. With
/// `spin`, the pool's other workers poll for work until `f` returns
/// (rayon would put them to sleep between two products, and a sleeping
/// worker joins the next product only after a wake-up of tens of µs, as
/// long as a small decode projection takes): for work made of many short
/// parallel loops.
///
/// The pollers are detached: `f` never waits for them. Every worker gets
/// one, by a broadcast (a spawned poller could be taken by `f`'s own
/// thread while it waits in a join, leaving the other worker of a 2-core
/// pool without one); the one on `f`'s own thread returns at once, and
/// every poller gives up after [`POLL_IDLE`] without finding work, so a
/// worker that picked one up while waiting for something else (another
/// caller's join) is held up for at most that long. They stop when `f`
/// returns or unwinds.
pub fn on_pool<R: Send>(spin: bool, f: impl FnOnce() -> R + Send) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    /// Sets the flag when dropped: on return and on unwinding.
    struct Done(Arc<AtomicBool>);
    impl Drop for Done {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    rayon::scope(|_| {
        let done = Done(Arc::new(AtomicBool::new(false)));
        if spin {
            let home = rayon::current_thread_index();
            let flag = Arc::clone(&done.0);
            rayon::spawn_broadcast(move |ctx| {
                if Some(ctx.index()) == home {
                    return;
                }
                let mut idle_since = std::time::Instant::now();
                while !flag.load(Ordering::Acquire) {
                    if rayon::yield_now() == Some(rayon::Yield::Executed) {
                        idle_since = std::time::Instant::now();
                    } else if idle_since.elapsed() > POLL_IDLE {
                        return;
                    } else {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        f()
    })
}

/// Guided self-scheduling of `items` over `threads`: the starts of
/// consecutive tasks (and `items` last), each task a share of what is
/// left — half of it split between the threads, at most `most` and at
/// least one item — so the first tasks are long (few claims, long
/// streams) and the last ones short: the cores finish a parallel loop
/// together to within one item instead of one task of a fixed size.
pub(crate) fn guided_splits(items: usize, threads: usize, most: usize) -> Vec<usize> {
    let (threads, most) = (threads.max(1), most.max(1));
    let mut starts = vec![0];
    let mut at = 0;
    while at < items {
        at += (items - at).div_ceil(2 * threads).clamp(1, most);
        starts.push(at);
    }
    starts
}

/// Runs `f` on every task of `splits` (from [`guided_splits`]), the
/// tasks claimed in order from a shared counter by one job per thread of
/// the pool: a core that is done takes the next task, and the short ones
/// come last. (Rayon's splitting of a range would hand one core the last,
/// short tasks while the other still had the long ones.)
pub(crate) fn for_each_guided(splits: &[usize], f: impl Fn(std::ops::Range<usize>) + Sync) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let tasks = splits.len().saturating_sub(1);
    let next = AtomicUsize::new(0);
    let jobs = rayon::current_num_threads().clamp(1, tasks.max(1));
    (0..jobs)
        .into_par_iter()
        .with_max_len(1)
        .for_each(|_| loop {
            let t = next.fetch_add(1, Ordering::Relaxed);
            if t >= tasks {
                break;
            }
            f(splits[t]..splits[t + 1]);
        });
}

/// How long an [`on_pool`] poller spins without finding work before it
/// leaves the worker to rayon (longer than any pause within a decode step).
pub const POLL_IDLE: std::time::Duration = std::time::Duration::from_millis(2);
