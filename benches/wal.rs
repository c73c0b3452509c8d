//! Criterion benchmark of the write-ahead log's group commit: `append_batch` + `flush_and_sync`
//! (one O_DIRECT write and one fdatasync) for batches of 1, 10 and 100 txns of 100 payload
//! bytes each, into a temp dir on the data disk, with the default 64 MiB segments (so the
//! occasional roll, which zero-fills a new segment, is part of the cost). Also the cost of
//! creating one 64 MiB segment on its own.
//!
//! Besides criterion's estimates it prints p50/p99 per batch size from every timed flush.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use hdrhistogram::Histogram;
use keel::log::{self, LogConfig, RecoverOptions};
use keel::proto::op;
use keel::tree::{Txn, TxnHeader};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A setData whose encoded payload (TxnHeader 32 + path 20 + data 44 + version 4) is 100 bytes.
fn txn(zxid: i64) -> (TxnHeader, Txn) {
    let header = TxnHeader {
        session_id: 0x1_0000_0001,
        cxid: 1,
        zxid,
        time_ms: 1_700_000_000_000,
        op: op::SET_DATA,
    };
    let txn = Txn::SetData {
        path: "/bench/node-0000001".to_string(),
        data: Some(Arc::from(vec![7u8; 40])),
        version: 1,
    };
    (header, txn)
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("keel-wal-bench-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn append_and_sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_append_sync");
    for batch_txns in [1usize, 10, 100] {
        let temp = TempDir::new(&format!("batch{batch_txns}"));
        let (mut writer, _) =
            log::open(&temp.0, LogConfig::default(), &RecoverOptions::default()).expect("open");
        let mut batch: Vec<(TxnHeader, Txn)> = (1..=batch_txns as i64).map(txn).collect();
        let mut histogram = Histogram::<u64>::new(3).expect("histogram");
        group.throughput(Throughput::Elements(batch_txns as u64));
        group.bench_function(BenchmarkId::from_parameter(batch_txns), |b| {
            b.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let next_zxid = writer.appended_zxid() + 1;
                    for (index, (header, _)) in batch.iter_mut().enumerate() {
                        header.zxid = next_zxid + index as i64;
                    }
                    let start = Instant::now();
                    writer.append_batch(&batch).expect("append");
                    writer.flush_and_sync().expect("flush");
                    let elapsed = start.elapsed();
                    total += elapsed;
                    let _ = histogram.record(elapsed.as_micros() as u64);
                }
                total
            })
        });
        eprintln!(
            "wal_append_sync/{batch_txns}: flushes {} p50 {} us p99 {} us max {} us",
            histogram.len(),
            histogram.value_at_quantile(0.5),
            histogram.value_at_quantile(0.99),
            histogram.max()
        );
    }
    group.finish();
}

fn segment_create(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_segment_create");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    let mut run = 0u32;
    // A fresh log per iteration: its first flush creates, zero-fills, syncs and publishes a
    // 64 MiB segment, then writes and syncs one 4 KiB block.
    group.bench_function("64MiB_then_first_flush", |b| {
        b.iter_batched(
            || {
                run += 1;
                let temp = TempDir::new(&format!("create{run}"));
                let options = RecoverOptions::default();
                let (writer, _) = log::open(&temp.0, LogConfig::default(), &options).expect("open");
                (temp, writer)
            },
            |(temp, mut writer)| {
                writer.append_batch(&[txn(1)]).expect("append");
                writer.flush_and_sync().expect("flush");
                (temp, writer)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, append_and_sync, segment_create);
criterion_main!(benches);
