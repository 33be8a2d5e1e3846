//! The command line and environment of another process, from its process parameters:
//! `NtQueryInformationProcess(ProcessBasicInformation)` gives the address of its PEB,
//! whose `ProcessParameters` (an `RTL_USER_PROCESS_PARAMETERS`) hold `CommandLine` (a
//! `UNICODE_STRING`) and `Environment` (a block of NUL-terminated UTF-16 `KEY=VALUE`
//! strings ended by an empty one), each read by `ReadProcessMemory`. The offsets are the
//! x64 layout of `winternl.h` (and of Wine's, which is the same): `PEB.ProcessParameters`
//! at 0x20, `CommandLine` at 0x70, `Environment` at 0x80, `EnvironmentSize` at 0x3F0.
//! A 32-bit process under WOW64 has 64-bit process parameters too, read the same way.

use windows_sys::Wdk::System::Threading::{NtQueryInformationProcess, ProcessBasicInformation};
use windows_sys::Win32::Foundation::HANDLE;
use windows_sys::Win32::System::Diagnostics::Debug::ReadProcessMemory;
use windows_sys::Win32::System::Threading::{
    PROCESS_BASIC_INFORMATION, PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_VM_READ,
};

/// The access a handle needs for these reads.
pub const ACCESS: u32 = PROCESS_QUERY_LIMITED_INFORMATION | PROCESS_VM_READ;

const PEB_PROCESS_PARAMETERS: usize = 0x20;
const PARAMS_COMMAND_LINE: usize = 0x70;
const PARAMS_ENVIRONMENT: usize = 0x80;
const PARAMS_ENVIRONMENT_SIZE: usize = 0x3F0;
/// An environment block larger than this is taken for garbage.
const MAX_ENVIRONMENT: usize = 16 << 20;

/// Read `buf.len()` bytes at `addr` of the process; how many were read.
fn read(process: HANDLE, addr: usize, buf: &mut [u8]) -> usize {
    let mut got = 0usize;
    // SAFETY: the handle is open with PROCESS_VM_READ; the call writes at most
    // `buf.len()` bytes into `buf` and reports how many.
    let ok = unsafe { ReadProcessMemory(process, addr as *const _, buf.as_mut_ptr().cast(), buf.len(), &mut got) };
    if ok == 0 { got.min(buf.len()) } else { buf.len() }
}

fn read_usize(process: HANDLE, addr: usize) -> Option<usize> {
    let mut b = [0u8; 8];
    (read(process, addr, &mut b) == 8).then(|| usize::from_ne_bytes(b))
}

/// The address of the process's `RTL_USER_PROCESS_PARAMETERS`.
fn parameters(process: HANDLE) -> Option<usize> {
    // SAFETY: the struct is plain data; the call writes at most its size.
    let peb = unsafe {
        let mut info: PROCESS_BASIC_INFORMATION = std::mem::zeroed();
        let status = NtQueryInformationProcess(
            process,
            ProcessBasicInformation,
            (&raw mut info).cast(),
            size_of::<PROCESS_BASIC_INFORMATION>() as u32,
            std::ptr::null_mut(),
        );
        if status < 0 {
            return None;
        }
        info.PebBaseAddress as usize
    };
    if peb == 0 {
        return None;
    }
    read_usize(process, peb + PEB_PROCESS_PARAMETERS).filter(|&p| p != 0)
}

/// UTF-16 units from bytes (native order).
fn units(bytes: &[u8]) -> Vec<u16> {
    bytes.chunks_exact(2).map(|c| u16::from_ne_bytes([c[0], c[1]])).collect()
}

/// The process's command line, as one string.
pub fn command_line(process: HANDLE) -> Option<String> {
    let params = parameters(process)?;
    let mut head = [0u8; 16];
    if read(process, params + PARAMS_COMMAND_LINE, &mut head) != 16 {
        return None;
    }
    let len = usize::from(u16::from_ne_bytes([head[0], head[1]]));
    let buffer = usize::from_ne_bytes(head[8..16].try_into().ok()?);
    let mut text = vec![0u8; len];
    if buffer == 0 || read(process, buffer, &mut text) != len {
        return None;
    }
    Some(String::from_utf16_lossy(&units(&text)))
}

/// The process's environment block, as `KEY=VALUE` entries (UTF-8).
pub fn environment(process: HANDLE) -> Option<Vec<Vec<u8>>> {
    let params = parameters(process)?;
    let block = read_usize(process, params + PARAMS_ENVIRONMENT).filter(|&b| b != 0)?;
    let size = read_usize(process, params + PARAMS_ENVIRONMENT_SIZE).unwrap_or(0);
    let raw = if size > 0 && size <= MAX_ENVIRONMENT {
        let mut buf = vec![0u8; size];
        let got = read(process, block, &mut buf);
        buf.truncate(got);
        buf
    } else {
        // No size recorded: page by page up to the terminating empty string.
        let mut buf = Vec::new();
        let mut page = vec![0u8; 4096];
        loop {
            let got = read(process, block + buf.len(), &mut page);
            buf.extend_from_slice(page.get(..got & !1).unwrap_or_default());
            if got < page.len() || ends_block(&buf) || buf.len() >= MAX_ENVIRONMENT {
                break;
            }
        }
        buf
    };
    Some(split_block(&units(&raw)))
}

/// Whether the UTF-16 bytes hold the block's end (two NUL units in a row).
fn ends_block(bytes: &[u8]) -> bool {
    units(bytes).windows(2).any(|w| w == [0, 0])
}

/// The entries of an environment block, up to its empty terminating string.
pub fn split_block(units: &[u16]) -> Vec<Vec<u8>> {
    units
        .split(|&u| u == 0)
        .take_while(|s| !s.is_empty())
        // `=C:=C:\dir` entries (a drive's current directory) are no variables.
        .filter(|s| s.first() != Some(&u16::from(b'=')))
        .map(|s| String::from_utf16_lossy(s).into_bytes())
        .collect()
}

/// A command line split into arguments by the Microsoft C runtime's rules (what
/// `CommandLineToArgvW` does): whitespace separates, `"` quotes, `2n` backslashes before a
/// quote are `n` backslashes, `2n+1` are `n` and a literal quote.
pub fn split_command_line(line: &str) -> Vec<Vec<u8>> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_arg = false;
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let mut n = 1;
                while chars.peek() == Some(&'\\') {
                    chars.next();
                    n += 1;
                }
                in_arg = true;
                if chars.peek() == Some(&'"') {
                    cur.extend(std::iter::repeat_n('\\', n / 2));
                    if n % 2 == 1 {
                        chars.next();
                        cur.push('"');
                    }
                } else {
                    cur.extend(std::iter::repeat_n('\\', n));
                }
            }
            '"' => {
                in_arg = true;
                if quoted && chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    quoted = !quoted;
                }
            }
            ' ' | '\t' if !quoted => {
                if in_arg {
                    args.push(std::mem::take(&mut cur).into_bytes());
                    in_arg = false;
                }
            }
            c => {
                in_arg = true;
                cur.push(c);
            }
        }
    }
    if in_arg {
        args.push(cur.into_bytes());
    }
    args
}

// Pure parsing: these run on every host.
#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<String> {
        split_command_line(s).into_iter().map(|a| String::from_utf8(a).expect("utf-8")).collect()
    }

    #[test]
    fn command_lines_split_as_the_c_runtime_does() {
        assert_eq!(split(r#"prog.exe a "b c" d"#), ["prog.exe", "a", "b c", "d"]);
        assert_eq!(split(r#""C:\Program Files\x.exe" --flag"#), [r"C:\Program Files\x.exe", "--flag"]);
        assert_eq!(split(r#"a\\\"b c\\"d e" f"#), [r#"a\"b"#, r"c\d e", "f"]);
        assert_eq!(split(r#"x "" y"#), ["x", "", "y"]);
        assert_eq!(split(r"a\b  c"), [r"a\b", "c"]);
    }

    #[test]
    fn an_environment_block_ends_at_its_empty_string() {
        let block: Vec<u16> = "=C:=C:\\x\0A=1\0TETHER_INSTANCE=web\0\0junk\0".encode_utf16().collect();
        assert_eq!(split_block(&block), [b"A=1".to_vec(), b"TETHER_INSTANCE=web".to_vec()]);
        let bytes: Vec<u8> = block.iter().flat_map(|u| u.to_ne_bytes()).collect();
        assert!(ends_block(&bytes));
    }
}
