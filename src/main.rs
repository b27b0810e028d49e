/// mimalloc: the hot path allocates a few small buffers per request (hyper's, axum's and the
/// answer's); glibc's malloc/free took ~20% of a request's instructions (callgrind), mimalloc's
/// thread-local free lists take a fraction of that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    rollout_controller::cli::main()
}
