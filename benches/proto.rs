//! Criterion benchmarks of the jute codec's hot paths.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use keel::proto::jute::{Reader, Writer};
use keel::proto::Stat;

fn stat_round_trip(c: &mut Criterion) {
    let stat = Stat {
        czxid: 1,
        mzxid: 2,
        pzxid: 3,
        ..Stat::default()
    };
    let mut out = Vec::with_capacity(128);
    c.bench_function("stat_encode_decode", |b| {
        b.iter(|| {
            out.clear();
            stat.write(&mut Writer::new(&mut out));
            black_box(Stat::read(&mut Reader::new(&out)).ok())
        })
    });
}

criterion_group!(benches, stat_round_trip);
criterion_main!(benches);
