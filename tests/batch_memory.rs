//! Four jobs of 64 MiB each, written to an output directory: exact byte
//! counts, and our memory stays bounded. Alone in its binary so no other
//! test moves the peak.

#[path = "common/mod.rs"]
mod common;

use common::*;
use procession::batch::{Batch, BatchOptions, Job, Output};

#[actix_rt::test]
async fn four_64_mib_outputs_to_files_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let before = peak_rss_kib();
    let jobs: Vec<Job> = (0..4)
        .map(|i| Job::new(format!("flood{i}"), [fixture(), "flood", "64"]))
        .collect();
    let results = Batch::start(
        jobs,
        BatchOptions {
            concurrency: 4,
            output_dir: Some(dir.path().to_path_buf()),
            ..BatchOptions::default()
        },
    )
    .unwrap()
    .collect()
    .await;
    for i in 0..4 {
        let r = &results[&format!("flood{i}")];
        assert!(r.success());
        assert!(matches!(r.stdout, Output::File { len, .. } if len == 64 << 20));
        let on_disk = std::fs::metadata(dir.path().join(format!("flood{i}.stdout")))
            .unwrap()
            .len();
        assert_eq!(on_disk, 64 << 20);
        assert_eq!(
            std::fs::metadata(dir.path().join(format!("flood{i}.stderr")))
                .unwrap()
                .len(),
            0
        );
    }
    let grown_mib = (peak_rss_kib() - before) / 1024;
    eprintln!("peak memory grew by {grown_mib} MiB for 256 MiB of output");
    assert!(grown_mib < 32, "peak memory grew by {grown_mib} MiB");
}
