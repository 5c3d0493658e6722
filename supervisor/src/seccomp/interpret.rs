//! A classic-BPF interpreter for the instructions our filter uses, so tests
//! can check the program's answers call by call without a kernel.

use seccompiler::sock_filter;

/// Runs `program` on one call (`seccomp_data` with a zero instruction
/// pointer) and returns the filter's answer. Panics on an instruction the
/// filter never emits, on a jump out of the program, or on falling off
/// its end (the kernel's verifier rejects those too).
pub fn run(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    run_counted(program, arch, nr, args).0
}

/// [`run`], also returning how many instructions the answer took: the
/// kernel emulates the program this way for every syscall number when it
/// builds its allow cache, on every filter it installs.
pub fn run_counted(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 6]) -> (u32, usize) {
    let mut steps = 0;
    let mut data = Vec::with_capacity(64);
    data.extend_from_slice(&nr.to_ne_bytes());
    data.extend_from_slice(&arch.to_ne_bytes());
    data.extend_from_slice(&0u64.to_ne_bytes());
    for a in args {
        data.extend_from_slice(&a.to_ne_bytes());
    }
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    loop {
        let i = &program[pc];
        pc += 1;
        steps += 1;
        match i.code {
            0x20 => {
                let at = i.k as usize;
                acc = u32::from_ne_bytes(data[at..at + 4].try_into().expect("4 bytes"));
            }
            0x54 => acc &= i.k,
            0x05 => pc += i.k as usize,
            0x15 | 0x35 | 0x45 => {
                let taken = match i.code {
                    0x15 => acc == i.k,
                    0x35 => acc >= i.k,
                    _ => acc & i.k != 0,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            0x06 => return (i.k, steps),
            code => panic!("instruction {code:#x} at {} is not interpreted", pc - 1),
        }
        assert!(pc < program.len(), "jumped or fell off the end");
    }
}
