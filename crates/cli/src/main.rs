//! The `adit` binary: everything lives in the `adit_cli` library.

fn main() -> std::process::ExitCode {
    adit_cli::main()
}
