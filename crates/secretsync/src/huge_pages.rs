//! Transparent huge pages off for the operator's process.
//!
//! On a node whose THP mode is `madvise` (most distributions) or `always`, mimalloc's
//! arenas can be backed by 2 MiB pages, and a 2 MiB page is resident as a whole once any
//! of it is touched. At 10,000 bindings that held 16 MiB more RSS for the same heap and
//! the same CPU (100.4 against 84.2 MiB; BENCHMARKS.md), and a pod's memory limit counts
//! RSS. The operator's heap is many small objects; huge pages buy it little TLB time.
//!
//! Two parts: mimalloc is built with `no_thp`, so it never asks for huge pages
//! (`MADV_HUGEPAGE`, which would take effect before `main` runs), and [`limit`] sets
//! `PR_SET_THP_DISABLE` so that an `always` node does not hand them out either. Setting
//! `MIMALLOC_ALLOW_THP` (any value) skips the second part and leaves the node's setting.

/// What [`limit`] did.
#[derive(Debug)]
pub enum HugePages {
    /// The process no longer gets transparent huge pages.
    Disabled,
    /// `MIMALLOC_ALLOW_THP` is set: the node's THP mode applies.
    LeftToNode,
    /// The kernel refused (an old kernel, a seccomp profile that denies `prctl`).
    Failed(std::io::Error),
    /// Not Linux: nothing to do.
    #[cfg(not(target_os = "linux"))]
    Unsupported,
}

/// Turns transparent huge pages off for this process (`PR_SET_THP_DISABLE`), unless
/// `MIMALLOC_ALLOW_THP` is set. Call it first in `main`: pages already faulted in as huge
/// ones stay so.
pub fn limit() -> HugePages {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return HugePages::LeftToNode;
    }
    disable()
}

#[cfg(target_os = "linux")]
fn disable() -> HugePages {
    match rustix::thread::disable_transparent_huge_pages(true) {
        Ok(()) => HugePages::Disabled,
        Err(e) => HugePages::Failed(e.into()),
    }
}

#[cfg(not(target_os = "linux"))]
fn disable() -> HugePages {
    HugePages::Unsupported
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn limit_turns_huge_pages_off_for_the_whole_process() {
        if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
            assert!(matches!(limit(), HugePages::LeftToNode));
            return;
        }
        // Set from another thread: the flag belongs to the process, not the thread.
        let outcome = std::thread::spawn(limit).join();
        assert!(matches!(outcome, Ok(HugePages::Disabled)), "{outcome:?}");
        assert_eq!(
            rustix::thread::transparent_huge_pages_are_disabled().ok(),
            Some(true)
        );
    }
}
