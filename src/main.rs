//! The `lifeboat` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    lifeboat::main()
}
