fn main() -> std::process::ExitCode {
    rollout_controller::cli::main()
}
