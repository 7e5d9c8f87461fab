//! Pinning: every benchmark process runs on one chosen CPU (the server on core 0, the load on
//! core 1), so the figures do not depend on where the scheduler happens to put threads.

use std::io;

/// Pin the calling thread to `cpu`. Threads it starts afterwards inherit the mask, so calling
/// this first in `main` pins a whole runtime (tokio's workers, monoio's thread, ours).
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    crate::sys::set_thread_affinity(cpu)
}
