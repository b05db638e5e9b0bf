//! `POST /maintain/v1/memory/free` returns memory to the OS: with jemalloc as the allocator (as
//! both binaries have it), a burst of small allocations is freed, and the resident set size
//! (the kernel's `/proc/self/statm`, not the allocator's own view) drops once the arenas are
//! purged. The figures are printed (`--nocapture`) for the note.

use tikv_jemallocator::Jemalloc;

#[global_allocator]
static GLOBAL: Jemalloc = Jemalloc;

/// Resident bytes of this process, from the kernel.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn purging_after_a_burst_returns_the_freed_memory_to_the_os() {
    const BURST: usize = 256 * 1024 * 1024;
    // Warm up jemalloc's metadata so the baseline includes it.
    opsplane_serve::maintain::purge_memory().unwrap();
    let baseline = rss();
    // Small allocations, as a burst of connections and requests makes: 256 MiB in 4 KiB
    // pieces, each written so its pages are really resident.
    let mut pieces: Vec<Vec<u8>> = Vec::with_capacity(BURST / 4096);
    for i in 0..BURST / 4096 {
        pieces.push(vec![(i % 251) as u8; 4096]);
    }
    let peak = rss();
    assert!(
        peak > baseline + (BURST as u64) * 9 / 10,
        "the burst was not resident: {baseline} → {peak}"
    );
    drop(pieces);
    let freed_only = rss();
    let purged = opsplane_serve::maintain::purge_memory().unwrap();
    let after = rss();
    println!(
        "RSS: baseline {} MiB, after a {} MiB burst {} MiB, after free() {} MiB, after purge {} MiB (jemalloc resident {} → {} MiB)",
        baseline >> 20,
        BURST >> 20,
        peak >> 20,
        freed_only >> 20,
        after >> 20,
        purged.resident_before >> 20,
        purged.resident_after >> 20,
    );
    // Tolerance: everything above the baseline may stay up to 10 % of the burst.
    assert!(
        after < baseline + (BURST as u64) / 10,
        "purge left {} MiB of a {} MiB burst resident",
        (after.saturating_sub(baseline)) >> 20,
        BURST >> 20
    );
}
