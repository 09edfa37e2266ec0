fn main() -> std::process::ExitCode {
    claudomator::cli::main()
}
