//! The floor for online prediction: the same TorchScript model called in-process through tch,
//! one instance per call, one intra-op thread, including building the input tensor from floats
//! and reading the output back (what any server must do), without HTTP or JSON.
//!
//! With IDLE_US, the thread sleeps that long before each call, as a server's thread idles between
//! the requests of one client: on a virtual machine an idle vCPU halts, and the call after it
//! shows what waking on a cold core costs (the latency still times the call alone).
//!
//! Usage: cargo run --release -p server --example predict_floor -- MODEL_DIR INPUT_SIZE [CALLS [IDLE_US]]
//! Prints one JSON line: p50/p99 latency in µs and calls per second.

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = args.get(1).expect("MODEL_DIR");
    let size: usize = args.get(2).and_then(|s| s.parse().ok()).expect("INPUT_SIZE");
    let calls: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(5000);
    let idle = std::time::Duration::from_micros(args.get(4).and_then(|s| s.parse().ok()).unwrap_or(0));
    tch::set_num_threads(1);
    let _guard = tch::no_grad_guard();
    let mut model = tch::CModule::load(format!("{dir}/model.pt")).expect("load model.pt");
    model.set_eval();
    let input: Vec<f32> = (0..size).map(|i| (i % 97) as f32 / 97.0).collect();
    let run = || {
        let x = tch::Tensor::from_slice(&input).reshape([1, size as i64]);
        let y = model.forward_ts(&[x]).expect("forward");
        Vec::<f32>::try_from(y.view([-1])).expect("output")
    };
    for _ in 0..200 {
        run();
    }
    let mut micros = Vec::with_capacity(calls);
    let started = Instant::now();
    for _ in 0..calls {
        if !idle.is_zero() {
            std::thread::sleep(idle);
        }
        let t = Instant::now();
        std::hint::black_box(run());
        micros.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let total = started.elapsed().as_secs_f64();
    micros.sort_by(f64::total_cmp);
    let pct = |p: f64| micros[((micros.len() as f64 * p) as usize).min(micros.len() - 1)];
    println!(
        "{{\"calls\": {calls}, \"p50_us\": {:.1}, \"p99_us\": {:.1}, \"rps\": {:.1}}}",
        pct(0.50),
        pct(0.99),
        calls as f64 / total
    );
}
