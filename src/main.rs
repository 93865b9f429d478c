//! The `lifeboat` binary; everything lives in the library.

// mimalloc instead of glibc's malloc: listing and decoding many small
// objects (backups, restores, the sandbox's API server) spent most of its
// time in glibc's free-list consolidation; see docs/performance.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    lifeboat::main()
}
