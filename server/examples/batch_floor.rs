//! The floor for batch prediction: the same TorchScript model's batched forward passes through
//! tch over instances already in memory as one float tensor, with no reading, parsing or writing.
//!
//! Usage: cargo run --release -p server --example batch_floor -- MODEL_DIR INPUT_SIZE INSTANCES [BATCH] [THREADS]
//! Prints one JSON line: instances, seconds, instances per second.

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).expect("MODEL_DIR");
    let size: i64 = args.get(2).and_then(|s| s.parse().ok()).expect("INPUT_SIZE");
    let instances: i64 = args.get(3).and_then(|s| s.parse().ok()).expect("INSTANCES");
    let batch: i64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(64);
    let threads: i32 = args
        .get(5)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i32));
    tch::set_num_threads(threads);
    let _guard = tch::no_grad_guard();
    let mut model = tch::CModule::load(format!("{dir}/model.pt")).expect("load model.pt");
    model.set_eval();
    let x = tch::Tensor::rand([batch, size], (tch::Kind::Float, tch::Device::Cpu));
    for _ in 0..20 {
        let _ = model.forward_ts(&[&x]).expect("forward");
    }
    let started = Instant::now();
    let mut done = 0;
    while done < instances {
        let rows = batch.min(instances - done);
        let input = if rows == batch { x.shallow_clone() } else { x.narrow(0, 0, rows) };
        let y = model.forward_ts(&[input]).expect("forward");
        let _ = Vec::<f32>::try_from(y.view([-1])).expect("output");
        done += rows;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"instances\": {instances}, \"batch\": {batch}, \"threads\": {threads}, \"seconds\": {seconds:.3}, \"instances_per_second\": {:.0}}}",
        instances as f64 / seconds
    );
}
