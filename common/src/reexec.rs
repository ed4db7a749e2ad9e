//! Starting the running binary again in place (`exec`: same binary, arguments and PID), for what
//! cannot be mended from inside the process: allocator options that are read before `main`
//! ([`crate::alloc`]), or a library call that never returns (the scorer's transaction watchdog).

/// Replaces this process with a new run of its binary, with `env` added to its environment.
/// Returns only if that fails.
pub fn exec_self(env: &[(&str, &str)]) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return e,
    };
    std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .envs(env.iter().copied())
        .exec()
}
