//! The `qconv` command line (built with the default `cli` feature).
//!
//! Exit status: 0 on success, 1 when the work failed (one `error: …` line on stderr), 2 for a
//! usage error (clap's message, or one `error: …` line for a fault the arguments alone show). A
//! closed stdout or stderr ends the program quietly (SIGPIPE, as Unix tools do); it never panics
//! on user input. Paths are taken as the OS gives them (any bytes, UTF-8 or not).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

mod args;
mod commands;
mod files;
#[cfg(feature = "cuda")]
mod gpu;

use args::{ArchList, Batch, DeviceArg, MinTime, OutputSize};

/// PyTorch-exact reference quantized convolutions: run a module stored by
/// scripts/export_pytorch.py, inspect model files, benchmark, and warm the CUDA kernel cache.
#[derive(Parser, Debug)]
#[command(name = "qconv", version, long_version = LONG_VERSION, propagate_version = true)]
#[command(after_help = "Logging: RUST_LOG=debug (or info, warn, error, off); warnings are shown by default.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `qconv --version`: the version and how this copy was built.
const LONG_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("QCONV_BUILD_INFO"), ")");

#[derive(Subcommand, Debug)]
enum Command {
    /// Devices found, the CUDA driver / NVRTC probe, and why CUDA is unusable.
    Info,
    /// Run one module of a model file on the tensor of an input file; write `output`.
    Run(RunArgs),
    /// Write a module's fake-quantized weight (`weight_fq`) and integer codes (`weight_q`).
    Weights(WeightsArgs),
    /// List every module of a model file: prefix, type, shapes, qscheme, dtype.
    Inspect(InspectArgs),
    /// The benchmark suites of docs/benchmarks.md, one JSON line per case and op.
    Bench(BenchArgs),
    /// Compile every CUDA kernel with NVRTC into the disk kernel cache (needs libnvrtc, no GPU).
    Warmup(WarmupArgs),
}

/// Which module of a model file.
#[derive(Args, Debug)]
struct ModelArgs {
    /// Model file (safetensors, as written by scripts/export_pytorch.py).
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// The module's prefix, with or without the trailing dot (`layer1.0.conv1`); default: the
    /// file's only module. `qconv inspect FILE` lists them.
    #[arg(long, value_name = "PREFIX")]
    prefix: Option<String>,
}

/// Where compiled CUDA kernels are kept.
#[derive(Args, Debug, Default)]
struct CacheArgs {
    /// Kernel cache directory [default: $QCONV_KERNEL_CACHE_DIR, else $XDG_CACHE_HOME/qconv, else
    /// ~/.cache/qconv].
    #[arg(long, value_name = "DIR", conflicts_with = "no_disk_cache")]
    cache_dir: Option<PathBuf>,
    /// Keep compiled kernels in memory only.
    #[arg(long)]
    no_disk_cache: bool,
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Input file: a tensor named `input` (or the file's only tensor), `(N, C, *spatial)` or
    /// unbatched. For a lowered int8 module: U8 codes `input` (batched) with scalars
    /// `input_scale` and `input_zero_point` beside it (they win over the model's stored input
    /// qparams), or a float32 `input` quantized with the model's stored input qparams.
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Output file; receives the tensor `output` (lowered int8 modules: U8 codes with scalars
    /// `output_scale` (F64) and `output_zero_point` (I64), or F32 values with --dequantize).
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
    /// Lowered int8 modules: write the dequantized output (F32) instead of the u8 codes.
    #[arg(long)]
    dequantize: bool,
    /// Where to compute: auto (CUDA when usable, else the CPU), cpu, cuda or cuda:N (N < 1024).
    #[arg(long, value_name = "DEVICE", default_value = "auto")]
    device: DeviceArg,
    /// Output size of a transposed convolution: 1 to 5 comma-separated integers, each at most
    /// 2^31 − 1 (spatial, or with the leading batch and channel entries).
    #[arg(long, value_name = "A,B,..")]
    output_size: Option<OutputSize>,
    #[command(flatten)]
    cache: CacheArgs,
}

#[derive(Args, Debug)]
struct WeightsArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Output file; receives `weight_fq` (f32) and `weight_q` (i32 codes, where defined).
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
}

#[derive(Args, Debug)]
struct InspectArgs {
    /// Model file (safetensors).
    #[arg(value_name = "MODEL")]
    model: PathBuf,
    /// One JSON document instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// cpu (the CPU suite) or cuda[:N] (the GPU suite: CUDA-event timing).
    #[arg(long, value_name = "DEVICE", default_value = "cpu")]
    device: DeviceArg,
    /// Run one case (CPU: c2d_3x3 …; GPU: g_3x3_64 …, g_fq for the weight fake-quant alone).
    #[arg(long, value_name = "NAME", value_parser = args::bench_case)]
    case: Option<String>,
    /// Batch size, 1 to 1024 [default: 1 on the CPU, the suite's on CUDA].
    #[arg(long, value_name = "N")]
    batch: Option<Batch>,
    /// Minimum time per measurement in seconds, 0 to 3600 (CPU suite).
    #[arg(long, value_name = "SECONDS", default_value = "1")]
    min_time: MinTime,
    #[command(flatten)]
    cache: CacheArgs,
}

#[derive(Args, Debug)]
struct WarmupArgs {
    /// Architectures, comma-separated, sm_80 or newer (sm_80, sm_86, sm_89, sm_90, sm_100,
    /// sm_120 …), and sm_90a for Hopper's wgmma/TMA program [default: those of the devices
    /// present, with sm_90a for compute capability 9.0].
    #[arg(long, value_name = "LIST")]
    arch: Option<ArchList>,
    #[command(flatten)]
    cache: CacheArgs,
}

/// A failure: a usage error (exit status 2) or a run-time error (exit status 1).
#[derive(Debug)]
enum CliError {
    Usage(String),
    Run(String),
}

impl From<qconv::Error> for CliError {
    fn from(e: qconv::Error) -> Self {
        CliError::Run(e.to_string())
    }
}

type CliResult<T = ()> = std::result::Result<T, CliError>;

fn main() -> ExitCode {
    restore_sigpipe();
    install_panic_hook();
    install_logger();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and --version exit 0, usage errors 2; a closed stdout is no error of ours.
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Info => commands::info(),
        Command::Run(a) => commands::run(&a),
        Command::Weights(a) => commands::weights(&a),
        Command::Inspect(a) => commands::inspect(&a),
        Command::Bench(a) => commands::bench(&a),
        Command::Warmup(a) => warmup(&a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Usage(msg)) => {
            eprintln!("error: {msg}\n\nFor more information, try '--help'.");
            ExitCode::from(2)
        }
        Err(CliError::Run(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

#[cfg(feature = "cuda")]
fn warmup(a: &WarmupArgs) -> CliResult {
    gpu::warmup(a)
}

#[cfg(not(feature = "cuda"))]
fn warmup(_: &WarmupArgs) -> CliResult {
    Err(CliError::Run(format!("warmup needs CUDA: this qconv was {}", qconv::cuda::NOT_BUILT)))
}

/// Dies of SIGPIPE on a closed pipe, quietly, like other Unix tools (Rust ignores the signal and
/// turns the write error into a panic in `println!`).
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: resetting a signal's disposition to the default has no preconditions; no handler
    // of ours is replaced.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A bug must still end in one clear line, not a backtrace.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: internal error{at}: {msg} (please report this as a qconv bug)");
    }));
}

/// The library reports through the `log` crate: warnings are shown as `qconv: warning: …`;
/// `RUST_LOG` chooses another level.
fn install_logger() {
    use std::io::Write;
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format(|buf, record| {
            let level = record.level().as_str().to_ascii_lowercase();
            writeln!(buf, "qconv: {level}: {}", record.args())
        })
        .init();
}
