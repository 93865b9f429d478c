//! The `lifeboat` binary: parses arguments, wires the crates together,
//! renders output and maps outcomes to exit codes (0 ok, 1 findings, 2 usage
//! or I/O error).

fn main() {
    println!("lifeboat {}", env!("CARGO_PKG_VERSION"));
}
