//! What macOS hands back, as data: mirrors of the `<sys/proc_info.h>` structures tether
//! reads, and the parser of a `sysctl(3)` `KERN_PROCARGS2` buffer. No OS call lives here,
//! so this file is compiled and unit-tested on every host, not only on a Mac.
//!
//! The structures follow `bsd/sys/proc_info.h` of XNU field by field (`#[repr(C)]`, so
//! Rust lays them out as C does); a C union is written as the member tether reads,
//! padded to the size of the largest member. Their sizes are checked at compile time
//! against the header's `PROC_PID*_SIZE` values for 64-bit macOS (both Macs are LP64).

/// `PROC_PIDFDVNODEINFO`: the `proc_pidfdinfo(3)` flavor answering a [`VnodeFdInfo`].
pub const PROC_PIDFDVNODEINFO: i32 = 1;
/// `PROC_PIDFDSOCKETINFO`: the `proc_pidfdinfo(3)` flavor answering a [`SocketFdInfo`].
pub const PROC_PIDFDSOCKETINFO: i32 = 3;
/// `SOCKINFO_TCP`: a [`SocketInfo`] whose `soi_proto` is a `tcp_sockinfo`.
pub const SOCKINFO_TCP: i32 = 2;
/// `TSI_S_LISTEN`: a TCP socket listening for connections (`tcpsi_state`).
pub const TSI_S_LISTEN: i32 = 1;
/// `FWASLOCKED` (`<sys/fcntl.h>`, in `fi_openflags`): the open file has, or had, an
/// advisory lock (`flock(2)` sets it when a lock is granted; unlocking leaves it set).
pub const FWASLOCKED: u32 = 0x4000;

/// C data the kernel fills: every bit pattern, all zeros included, is a valid value.
///
/// # Safety
/// Only for `#[repr(C)]` structures of integers and arrays of integers.
pub unsafe trait Plain: Sized {
    /// The value with every byte zero, the buffer a call fills.
    fn zeroed() -> Self {
        // SAFETY: the implementor promises that all zeros is a valid value.
        unsafe { std::mem::zeroed() }
    }
}

/// `struct proc_bsdinfo` (`PROC_PIDTBSDINFO`, 136 bytes): a process's facts, for its own
/// user (or root) only.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ProcBsdInfo {
    pub pbi_flags: u32,
    pub pbi_status: u32,
    pub pbi_xstatus: u32,
    pub pbi_pid: u32,
    pub pbi_ppid: u32,
    pub pbi_uid: u32,
    pub pbi_gid: u32,
    pub pbi_ruid: u32,
    pub pbi_rgid: u32,
    pub pbi_svuid: u32,
    pub pbi_svgid: u32,
    pub rfu_1: u32,
    pub pbi_comm: [u8; 16],
    pub pbi_name: [u8; 32],
    pub pbi_nfiles: u32,
    pub pbi_pgid: u32,
    pub pbi_pjobc: u32,
    pub e_tdev: u32,
    pub e_tpgid: u32,
    pub pbi_nice: i32,
    pub pbi_start_tvsec: u64,
    pub pbi_start_tvusec: u64,
}

/// `struct proc_bsdshortinfo` (`PROC_PIDT_SHORTBSDINFO`, 64 bytes): the facts any user may
/// read of any process (no start time).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ProcBsdShortInfo {
    pub pbsi_pid: u32,
    pub pbsi_ppid: u32,
    pub pbsi_pgid: u32,
    pub pbsi_status: u32,
    pub pbsi_comm: [u8; 16],
    pub pbsi_flags: u32,
    pub pbsi_uid: u32,
    pub pbsi_gid: u32,
    pub pbsi_ruid: u32,
    pub pbsi_rgid: u32,
    pub pbsi_svuid: u32,
    pub pbsi_svgid: u32,
    pub pbsi_rfu: u32,
}

/// `struct proc_fdinfo` (`PROC_PIDLISTFDS`, 8 bytes each): one open descriptor.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ProcFdInfo {
    pub proc_fd: i32,
    pub proc_fdtype: u32,
}

/// `struct proc_fileinfo` (24 bytes): the open file behind a descriptor.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ProcFileInfo {
    pub fi_openflags: u32,
    pub fi_status: u32,
    pub fi_offset: i64,
    pub fi_type: i32,
    pub fi_guardflags: u32,
}

/// `struct vinfo_stat` (136 bytes): `stat64` with fixed-size fields.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct VinfoStat {
    pub vst_dev: u32,
    pub vst_mode: u16,
    pub vst_nlink: u16,
    pub vst_ino: u64,
    pub vst_uid: u32,
    pub vst_gid: u32,
    pub vst_atime: i64,
    pub vst_atimensec: i64,
    pub vst_mtime: i64,
    pub vst_mtimensec: i64,
    pub vst_ctime: i64,
    pub vst_ctimensec: i64,
    pub vst_birthtime: i64,
    pub vst_birthtimensec: i64,
    pub vst_size: i64,
    pub vst_blocks: i64,
    pub vst_blksize: i32,
    pub vst_flags: u32,
    pub vst_gen: u32,
    pub vst_rdev: u32,
    pub vst_qspare: [i64; 2],
}

/// `struct vnode_info`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct VnodeInfo {
    pub vi_stat: VinfoStat,
    pub vi_type: i32,
    pub vi_pad: i32,
    pub vi_fsid: [i32; 2],
}

/// `struct vnode_fdinfo` (`PROC_PIDFDVNODEINFO`, 176 bytes): a descriptor's file.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct VnodeFdInfo {
    pub pfi: ProcFileInfo,
    pub pvi: VnodeInfo,
}

/// `struct sockbuf_info` (24 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SockbufInfo {
    pub sbi_cc: u32,
    pub sbi_hiwat: u32,
    pub sbi_mbcnt: u32,
    pub sbi_mbmax: u32,
    pub sbi_lowat: u32,
    pub sbi_flags: i16,
    pub sbi_timeo: i16,
}

/// `insi_v6` of `struct in_sockinfo`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct InSockInfoV6 {
    pub in6_hlim: u8,
    pub in6_cksum: i32,
    pub in6_ifindex: u16,
    pub in6_hops: i16,
}

/// `struct in_sockinfo` (80 bytes): an IPv4 or IPv6 socket. Addresses are the unions
/// `in4in6_addr` / `in6_addr` (16 bytes, 4-aligned).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct InSockInfo {
    pub insi_fport: i32,
    /// The local port, in network byte order in the low 16 bits.
    pub insi_lport: i32,
    pub insi_gencnt: u64,
    pub insi_flags: u32,
    pub insi_flow: u32,
    pub insi_vflag: u8,
    pub insi_ip_ttl: u8,
    pub rfu_1: u32,
    pub insi_faddr: [u32; 4],
    pub insi_laddr: [u32; 4],
    pub insi_v4: u8,
    pub insi_v6: InSockInfoV6,
}

/// `struct tcp_sockinfo` (120 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TcpSockInfo {
    pub tcpsi_ini: InSockInfo,
    pub tcpsi_state: i32,
    pub tcpsi_timer: [i32; 4],
    pub tcpsi_mss: i32,
    pub tcpsi_flags: u32,
    pub rfu_1: u32,
    pub tcpsi_tp: u64,
}

/// The union `soi_proto` of `struct socket_info`, read as its `pri_tcp` member and padded
/// to its largest member, `struct un_sockinfo` (two `u64` and two 255-byte addresses: 526
/// bytes, 528 with the union's 8-byte alignment).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SocketProto {
    pub pri_tcp: TcpSockInfo,
    pub rest: [u8; 528 - 120],
}

/// `struct socket_info` (768 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SocketInfo {
    pub soi_stat: VinfoStat,
    /// An opaque (permuted) kernel handle of the socket: the same for every descriptor and
    /// every process sharing it.
    pub soi_so: u64,
    pub soi_pcb: u64,
    pub soi_type: i32,
    pub soi_protocol: i32,
    pub soi_family: i32,
    pub soi_options: i16,
    pub soi_linger: i16,
    pub soi_state: i16,
    pub soi_qlen: i16,
    pub soi_incqlen: i16,
    pub soi_qlimit: i16,
    pub soi_timeo: i16,
    pub soi_error: u16,
    pub soi_oobmark: u32,
    pub soi_rcv: SockbufInfo,
    pub soi_snd: SockbufInfo,
    pub soi_kind: i32,
    pub rfu_1: u32,
    pub soi_proto: SocketProto,
}

/// `struct socket_fdinfo` (`PROC_PIDFDSOCKETINFO`, 792 bytes): a descriptor's socket.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SocketFdInfo {
    pub pfi: ProcFileInfo,
    pub psi: SocketInfo,
}

// SAFETY: each is a #[repr(C)] structure of integers and integer arrays.
unsafe impl Plain for ProcBsdInfo {}
// SAFETY: as above.
unsafe impl Plain for ProcBsdShortInfo {}
// SAFETY: as above.
unsafe impl Plain for ProcFdInfo {}
// SAFETY: as above.
unsafe impl Plain for VnodeFdInfo {}
// SAFETY: as above.
unsafe impl Plain for SocketFdInfo {}

// The header's sizes on 64-bit macOS: the kernel refuses a smaller buffer and fills exactly this much.
const _: () = assert!(size_of::<ProcBsdInfo>() == 136);
const _: () = assert!(size_of::<ProcBsdShortInfo>() == 64);
const _: () = assert!(size_of::<ProcFdInfo>() == 8);
const _: () = assert!(size_of::<VinfoStat>() == 136);
const _: () = assert!(size_of::<VnodeFdInfo>() == 176);
const _: () = assert!(size_of::<InSockInfo>() == 80);
const _: () = assert!(size_of::<TcpSockInfo>() == 120);
const _: () = assert!(size_of::<SocketInfo>() == 768);
const _: () = assert!(size_of::<SocketFdInfo>() == 792);

/// The socket behind `info` when it is a TCP socket (IPv4 or IPv6) in LISTEN state on
/// `port`: its kernel handle (`soi_so`). A client connected to the port is never one.
pub fn tcp_listener(info: &SocketFdInfo, port: u16) -> Option<u64> {
    let s = &info.psi;
    let tcp = &s.soi_proto.pri_tcp;
    // insi_lport holds the port as the kernel keeps it, in network byte order.
    let local = u16::from_be(tcp.tcpsi_ini.insi_lport as u16);
    let inet = s.soi_family == AF_INET || s.soi_family == AF_INET6;
    (inet && s.soi_kind == SOCKINFO_TCP && tcp.tcpsi_state == TSI_S_LISTEN && local == port).then_some(s.soi_so)
}

/// `AF_INET` on macOS.
const AF_INET: i32 = 2;
/// `AF_INET6` on macOS (30, not Linux's 10).
const AF_INET6: i32 = 30;

/// A process's exec path, arguments and environment, as `sysctl(3)` `KERN_PROCARGS2`
/// hands them back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcArgs {
    /// The path the kernel executed.
    pub exec_path: Vec<u8>,
    /// `argv`, the program as invoked first.
    pub args: Vec<Vec<u8>>,
    /// The environment it started with, `KEY=VALUE` entries.
    pub env: Vec<Vec<u8>>,
}

/// Parse a `KERN_PROCARGS2` buffer: `argc` (a native-endian `int`), the exec path and its
/// NUL padding, `argc` NUL-terminated arguments, then the environment's NUL-terminated
/// entries up to the first empty one (what follows is the loader's own strings, or zeros).
///
/// Lenient as `ps` is: a buffer cut short yields the strings it holds. `None` only for a
/// buffer too short to hold `argc`, or a negative `argc`.
pub fn parse_procargs2(buf: &[u8]) -> Option<ProcArgs> {
    let argc: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    let argc = usize::try_from(i32::from_ne_bytes(argc)).ok()?;
    let mut strings = Strings(buf.get(4..).unwrap_or_default());
    let exec_path = strings.next().unwrap_or_default().to_vec();
    // The exec path is padded with NULs (to a word boundary) before argv[0].
    strings.skip_nuls();
    let args: Vec<Vec<u8>> = (&mut strings).take(argc).map(<[u8]>::to_vec).collect();
    let env = strings.take_while(|e| !e.is_empty()).map(<[u8]>::to_vec).collect();
    Some(ProcArgs { exec_path, args, env })
}

/// NUL-terminated strings one after the other; the last may end with the buffer.
struct Strings<'a>(&'a [u8]);

impl Strings<'_> {
    fn skip_nuls(&mut self) {
        let n = self.0.iter().take_while(|b| **b == 0).count();
        self.0 = self.0.get(n..).unwrap_or_default();
    }
}

impl<'a> Iterator for Strings<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.0.is_empty() {
            return None;
        }
        let end = memchr::memchr(0, self.0).unwrap_or(self.0.len());
        let (s, rest) = self.0.split_at(end);
        self.0 = rest.get(1..).unwrap_or_default();
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    fn buffer(argc: i32, strings: &[&[u8]]) -> Vec<u8> {
        let mut b = argc.to_ne_bytes().to_vec();
        for s in strings {
            b.extend_from_slice(s);
        }
        b
    }

    #[test]
    fn procargs2_splits_path_arguments_and_environment() {
        let b = buffer(
            3,
            &[
                b"/usr/bin/python3\0\0\0\0\0",
                b"python3\0-m\0a b\0",
                b"HOME=/Users/me\0TETHER_INSTANCE=x\0",
                b"\0\0\0\0",
            ],
        );
        let p = parse_procargs2(&b).expect("parses");
        assert_eq!(p.exec_path, b"/usr/bin/python3");
        assert_eq!(p.args, [b"python3".to_vec(), b"-m".to_vec(), b"a b".to_vec()]);
        assert_eq!(p.env, [b"HOME=/Users/me".to_vec(), b"TETHER_INSTANCE=x".to_vec()]);
    }

    #[test]
    fn procargs2_stops_the_environment_at_its_end() {
        // What follows the environment (the loader's strings, after an empty one) is not in it.
        let b = buffer(1, &[b"/bin/x\0", b"x\0", b"A=1\0\0", b"ptr_munge=\0main_stack=\0"]);
        let p = parse_procargs2(&b).expect("parses");
        assert_eq!(p.args, [b"x".to_vec()]);
        assert_eq!(p.env, [b"A=1".to_vec()]);
        // An empty argument is an argument; no environment at all (omitted by the kernel) is empty.
        let b = buffer(2, &[b"/bin/x\0\0\0", b"x\0\0", b"\0\0"]);
        let p = parse_procargs2(&b).expect("parses");
        assert_eq!(p.args, [b"x".to_vec(), Vec::new()]);
        assert!(p.env.is_empty());
    }

    #[test]
    fn procargs2_cut_short_or_malformed() {
        assert_eq!(parse_procargs2(b""), None);
        assert_eq!(parse_procargs2(&[1, 0]), None);
        assert_eq!(parse_procargs2(&buffer(-1, &[b"/bin/x\0"])), None);
        // argc larger than the strings present: what is there, no panic.
        let p = parse_procargs2(&buffer(5, &[b"/bin/x\0", b"x\0y"])).expect("parses");
        assert_eq!(p.args, [b"x".to_vec(), b"y".to_vec()]);
        assert!(p.env.is_empty());
        let p = parse_procargs2(&buffer(0, &[])).expect("parses");
        assert_eq!(p, ProcArgs::default());
    }

    #[test]
    fn layouts_follow_proc_info_h() {
        // Offsets as <sys/proc_info.h> lays them out on 64-bit macOS.
        assert_eq!(offset_of!(ProcBsdInfo, pbi_comm), 48);
        assert_eq!(offset_of!(ProcBsdInfo, pbi_pgid), 100);
        assert_eq!(offset_of!(ProcBsdInfo, pbi_start_tvsec), 120);
        assert_eq!(offset_of!(ProcBsdShortInfo, pbsi_uid), 36);
        assert_eq!(offset_of!(VinfoStat, vst_ino), 8);
        assert_eq!(offset_of!(VnodeFdInfo, pvi), 24);
        assert_eq!(offset_of!(SocketInfo, soi_so), 136);
        assert_eq!(offset_of!(SocketInfo, soi_family), 160);
        assert_eq!(offset_of!(SocketInfo, soi_kind), 232);
        assert_eq!(offset_of!(SocketInfo, soi_proto), 240);
        assert_eq!(offset_of!(InSockInfo, insi_laddr), 48);
        assert_eq!(offset_of!(InSockInfo, insi_v6), 68);
        assert_eq!(offset_of!(TcpSockInfo, tcpsi_state), 80);
        assert_eq!(offset_of!(TcpSockInfo, tcpsi_tp), 112);
    }

    #[test]
    fn only_a_tcp_listener_on_the_port_counts() {
        let mut info = SocketFdInfo::zeroed();
        info.psi.soi_so = 0xfeed;
        info.psi.soi_family = AF_INET6;
        info.psi.soi_kind = SOCKINFO_TCP;
        info.psi.soi_proto.pri_tcp.tcpsi_state = TSI_S_LISTEN;
        info.psi.soi_proto.pri_tcp.tcpsi_ini.insi_lport = i32::from(8080u16.to_be());
        assert_eq!(tcp_listener(&info, 8080), Some(0xfeed));
        assert_eq!(tcp_listener(&info, 8081), None);
        let mut client = info;
        client.psi.soi_proto.pri_tcp.tcpsi_state = 4; // TSI_S_ESTABLISHED
        assert_eq!(tcp_listener(&client, 8080), None);
        let mut unix = info;
        unix.psi.soi_family = 1; // AF_UNIX
        assert_eq!(tcp_listener(&unix, 8080), None);
        let mut udp = info;
        udp.psi.soi_kind = 1; // SOCKINFO_IN
        assert_eq!(tcp_listener(&udp, 8080), None);
    }
}
