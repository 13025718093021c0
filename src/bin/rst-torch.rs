//! `rst-torch`: the libtorch side of rst. `rst-torch probe` prints what libtorch sees on
//! this machine (version, CUDA devices) as JSON; `rst-torch worker JOB` runs `train` and
//! `evaluate` stages; `rst-torch selftest` runs the checks against PyTorch's numbers on
//! every device (CPU, and each GPU libtorch sees).
#[path = "../ml/mod.rs"]
mod ml;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("probe") => {
            let auto = ml::device::resolve("auto")
                .map(ml::device::key_name)
                .unwrap_or_else(|e| e);
            println!(
                "{}",
                serde_json::json!({
                    "libtorch": rst::exec::plan::LIBTORCH_VERSION.unwrap_or("unknown"),
                    "cuda_available": tch::Cuda::is_available(),
                    "cuda_devices": tch::Cuda::device_count(),
                    "auto_device": auto,
                })
            );
        }
        Some("worker") if args.len() == 2 => {
            // The worker for torch stages (train, evaluate): same protocol as `rst worker`.
            rst::exec::local::guard_worker_group();
            rst::exec::local::exit_worker(rst::exec::worker::run(
                std::path::Path::new(&args[1]),
                &ml::kinds(),
            ));
        }
        Some("selftest") => std::process::exit(ml::selftest::command()),
        Some("bench-epoch") => {
            if let Err(e) = ml::bench::bench_epoch(&args[1..]) {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
        Some("bench-loader") => {
            if let Err(e) = ml::bench::bench_loader(&args[1..]) {
                eprintln!("error: {e}");
                std::process::exit(2);
            }
        }
        _ => {
            eprintln!("usage: rst-torch probe | rst-torch selftest | rst-torch worker JOB | rst-torch bench-epoch [--n N] [--batch B] [--epochs E] [--threads T] | rst-torch bench-loader [--n N] [--height H] [--width W] [--size S] [--batch B] [--threads T]");
            std::process::exit(2);
        }
    }
}
